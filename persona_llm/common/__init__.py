"""Helpers that must give the same answer wherever they are used, so each exists exactly once.

    textmatch     text normalisation and quote-vs-source matching (the quote gate and the grounding eval)
    demographics  reading ages and genders out of free text (the estimate gate and the claims eval)
    vectors       unit rows, cosine, pairwise similarity, centroids, silhouette (segmenting, gates, eval)

Nothing here reads files, calls a model or imports the rest of the package.
"""
