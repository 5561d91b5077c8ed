"""The segment stages, one file each, and the pipeline that chains them.

    base.py      the tiny base class of every stage, and the no-op objects that skip one
    ingest.py    read CSV/JSONL/Parquet into a texts frame; bad rows go to rejects
    clean.py     markup, quoted replies, signatures, PII (pii.py), duplicates, language (language.py)
    embed.py     sentence-transformers / e5 embedders with a content-hash cache
    users.py     one vector per user (+ a TF-IDF/SVD word view)
    reduce.py    optional UMAP/PCA
    cluster.py   HDBSCAN, or labels given by the caller
    assign.py    put new users into fitted segments (guarded hdbscan prediction, nearest centroid, a pool)
    describe.py  keywords, attribute summaries, representative texts
    store.py     the Chroma store of representatives, centroids and personas
    pipeline.py  SegmentPipeline: fit -> save a run directory
"""
