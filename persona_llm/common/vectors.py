"""Vector helpers shared by segmenting, the persona gates and the eval: unit rows, cosine, pairwise
similarity, centroids and the cosine silhouette, each defined once so "similar" means one thing.

Labels follow the segment convention: 0..k-1 are segments, -1 (`NOISE`) is "no segment".
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

NOISE = -1


def normalize_rows(vectors: npt.ArrayLike, dtype: npt.DTypeLike | None = None) -> np.ndarray:
    """Each row scaled to unit length; an all-zero row stays zero.

    dtype: the dtype to compute in (and return); None keeps the input's (integers become float64).
    """
    v = np.asarray(vectors, dtype=dtype)
    if not np.issubdtype(v.dtype, np.floating):
        v = v.astype(np.float64)
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    return v / np.where(norms == 0, 1, norms)


def cosine(a: npt.ArrayLike, b: npt.ArrayLike) -> float:
    """Cosine similarity of two vectors; 0 when either is all zeros."""
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(x @ y / max(float(np.linalg.norm(x) * np.linalg.norm(y)), 1e-12))


def pairwise_cosine(vectors: npt.ArrayLike) -> np.ndarray:
    """n x n cosine similarity matrix of the rows (re-normalised, float64); the diagonal is 1."""
    unit = normalize_rows(vectors, dtype=np.float64)
    return unit @ unit.T


def segment_centroids(unit_vectors: np.ndarray, labels: npt.ArrayLike, *, chunk_size: int | None = None) -> np.ndarray:
    """One unit-length centroid per segment 0..max(labels) (float32): the members' mean, re-normalised.

    `unit_vectors` should already be unit rows, so that each member weighs the same and the centroid's
    cosine to a member is what the segment stages compare. Noise (-1) is ignored; a segment number with
    no member gets a zero row. `chunk_size`: sum the rows that many at a time, in one pass (for a
    memory-mapped array of millions of users: memory O(chunk_size x dimension), never a copy of a segment).
    """
    labels = np.asarray(labels)
    k = int(labels.max() + 1) if (labels >= 0).any() else 0
    if chunk_size is not None:
        from scipy import sparse

        step = max(1, int(chunk_size))
        sums = np.zeros((k, unit_vectors.shape[1]), dtype=np.float64)
        for start in range(0, len(labels), step):
            lab = labels[start : start + step]
            keep = np.flatnonzero(lab >= 0)
            if len(keep):
                # members x rows as a sparse 0/1 matrix: one pass of the chunk, whatever the segment count
                onehot = sparse.csr_matrix((np.ones(len(keep)), (lab[keep], keep)), shape=(k, len(lab)))
                sums += onehot @ np.asarray(unit_vectors[start : start + step], dtype=np.float32)
        return normalize_rows(sums).astype(np.float32)
    cents = np.zeros((k, unit_vectors.shape[1]), dtype=np.float32)
    for c in range(k):
        members = labels == c
        if members.any():
            cents[c] = unit_vectors[members].mean(axis=0)
    return normalize_rows(cents)


def sample_assigned(
    vectors: npt.ArrayLike, labels: npt.ArrayLike, sample_size: int | None, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """The rows (float64) and labels of users in a segment, at most `sample_size` of them drawn with
    `seed` and kept in their original order; None keeps all."""
    p = np.asarray(labels, dtype=int)
    idx = np.flatnonzero(p != NOISE)
    if sample_size is not None and len(idx) > sample_size:
        idx = np.sort(np.random.default_rng(seed).choice(idx, size=sample_size, replace=False))
    return np.asarray(vectors, dtype=np.float64)[idx], p[idx]


def cosine_silhouette(
    vectors: npt.ArrayLike, labels: npt.ArrayLike, *, sample_size: int | None = 2000, seed: int = 0
) -> float | None:
    """Cosine silhouette of the users in a segment (noise left out), on a seeded sample for speed;
    -1..1, >0.1 is usual for text. None when the sample has fewer than 2 segments, or no segment with
    two members (every user its own segment), where the silhouette is undefined."""
    from sklearn.metrics import silhouette_score

    x, p = sample_assigned(vectors, labels, sample_size, seed)
    n_labels = len(set(p.tolist()))
    if n_labels < 2 or n_labels >= len(p):
        return None
    return float(silhouette_score(x, p, metric="cosine"))
