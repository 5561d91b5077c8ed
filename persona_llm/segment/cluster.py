"""Cluster stage: HDBSCAN over user vectors, with optional reassignment of noise points.

`GivenLabels` instead keeps a segmentation made elsewhere (refresh keeps a run's segments with it).

Two engines by the same author: `fast_hdbscan` (numba, multicore, fastest on raw high-dimensional
vectors) and `hdbscan` (reference implementation; has prediction data). Labels are renumbered by
segment size so segment 0 is always the largest, which keeps ids readable and stable across engines.
"""

from __future__ import annotations

import math
import warnings
from typing import Literal

import numpy as np

from persona_llm.common.vectors import cosine_silhouette, normalize_rows, segment_centroids
from persona_llm.errors import ConfigError
from persona_llm.segment.base import BaseClusterer

Engine = Literal["auto", "fast_hdbscan", "hdbscan"]
AUTO_FAST_HDBSCAN_ABOVE = 4000  # users; see bench/bench_segment.py --engines


def default_min_cluster_size(n_users: int) -> int:
    """Scale the smallest segment with the data: ~1% of users, at least 5 and at most 500.

    Marketing segments under 1% of a customer base are rarely actionable, and a fixed size either
    shatters large data sets into hundreds of micro-segments or swallows small ones into noise.
    """
    return int(min(500, max(5, round(0.01 * n_users))))


def default_min_samples(min_cluster_size: int) -> int:
    # A much smaller min_samples than min_cluster_size makes HDBSCAN less conservative about noise,
    # which text embeddings (diffuse, high-dimensional) need. On 20NG authors min_samples=1 gave
    # ARI 0.62 vs 0.58 for 2 and 0.50 for 3 (leaf selection, bench notes in the README).
    return max(1, int(math.floor(min_cluster_size / 5)))


class HDBSCANClusterer(BaseClusterer):
    """HDBSCAN with size-scaled defaults and nearest-segment outlier reassignment.

    Parameters
    ----------
    min_cluster_size, min_samples:
        None scales them with the number of users (`default_min_cluster_size`).
    engine:
        "auto" uses the reference hdbscan up to AUTO_FAST_HDBSCAN_ABOVE users (no JIT start-up) and
        fast_hdbscan above (multicore, faster on large data at equal accuracy).
    cluster_selection_method:
        "leaf" (default: the finest stable segments; on 20NG authors ARI 0.62 vs 0.48 for eom, which
        merged related newsgroups into a few broad segments) or "eom" (excess of mass).
    reassign_outliers:
        Give each noise user the segment whose centroid is most similar, when that cosine similarity is
        at least `reassign_threshold`. BERTopic users' first complaint is half the data in noise.
    reassign_threshold:
        Minimum cosine similarity to a centroid for reassignment; users below stay -1 on purpose.
    """

    def __init__(
        self,
        min_cluster_size: int | None = None,
        min_samples: int | None = None,
        engine: Engine = "auto",
        cluster_selection_method: Literal["eom", "leaf"] = "leaf",
        reassign_outliers: bool = True,
        reassign_threshold: float = 0.3,
        random_state: int = 0,
    ) -> None:
        self.min_cluster_size = min_cluster_size
        self.min_samples = min_samples
        self.engine = engine
        self.cluster_selection_method = cluster_selection_method
        self.reassign_outliers = reassign_outliers
        self.reassign_threshold = reassign_threshold
        self.random_state = random_state

    def fit(self, vectors: np.ndarray, y: np.ndarray | None = None) -> HDBSCANClusterer:
        """Cluster `vectors`; `y` must be None: HDBSCAN is unsupervised (use GivenLabels to keep labels)."""
        if y is not None:
            raise ConfigError("HDBSCANClusterer does not take labels; pass clusterer=GivenLabels() to keep given ones")
        n = len(vectors)
        if n < 3:
            raise ConfigError(f"need at least 3 users to segment, got {n}")
        mcs = self.min_cluster_size or default_min_cluster_size(n)
        mcs = max(2, min(mcs, n))
        ms = self.min_samples or default_min_samples(mcs)
        self.min_cluster_size_ = mcs
        self.min_samples_ = ms
        engine = self.engine
        if engine == "auto":
            # fast_hdbscan compiles with numba on first use (~30-70 s per process on 2 cores), which
            # dwarfs the reference hdbscan's run time on small data; it wins on large data.
            engine = "hdbscan" if n <= AUTO_FAST_HDBSCAN_ABOVE else "fast_hdbscan"
        self.engine_ = engine
        x = np.ascontiguousarray(vectors, dtype=np.float64 if engine == "hdbscan" else np.float32)

        if engine == "fast_hdbscan":
            import fast_hdbscan

            model = fast_hdbscan.HDBSCAN(
                min_cluster_size=mcs,
                min_samples=ms,
                cluster_selection_method=self.cluster_selection_method,
                reproducible=True,
            )
        elif engine == "hdbscan":
            import hdbscan

            model = hdbscan.HDBSCAN(
                min_cluster_size=mcs,
                min_samples=ms,
                cluster_selection_method=self.cluster_selection_method,
                core_dist_n_jobs=1,
            )
        else:
            raise ConfigError(f"unknown clustering engine {self.engine!r}; use auto, fast_hdbscan or hdbscan")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.fit(x)
        raw = np.asarray(model.labels_, dtype=np.int64)
        self.model_ = model
        self.raw_labels_ = _renumber_by_size(raw)
        probs = np.asarray(model.probabilities_, dtype=np.float64)
        probs[self.raw_labels_ < 0] = 0.0

        labels = self.raw_labels_.copy()
        assigned_by = np.where(labels >= 0, "cluster", "noise").astype(object)
        unit = normalize_rows(vectors).astype(np.float32, copy=False)
        self.centroids_ = segment_centroids(unit, labels)
        if self.reassign_outliers and (labels < 0).any() and len(self.centroids_):
            noise = np.flatnonzero(labels < 0)
            sims = unit[noise] @ self.centroids_.T
            best = sims.argmax(axis=1)
            best_sim = sims[np.arange(len(noise)), best]
            ok = best_sim >= self.reassign_threshold
            labels[noise[ok]] = best[ok]
            # A reassigned user's probability is its similarity to the centroid, scaled to the
            # members' own: a weaker claim than HDBSCAN membership, and recorded as such.
            probs[noise[ok]] = np.clip(best_sim[ok], 0.0, 1.0)
            assigned_by[noise[ok]] = "reassigned"
            self.centroids_ = segment_centroids(unit, labels)
        self.labels_ = labels
        self.probabilities_ = probs
        self.assigned_by_ = assigned_by.astype(str)
        self.n_segments_ = int(labels.max() + 1) if (labels >= 0).any() else 0
        return self

    def quality(self, vectors: np.ndarray, sample_size: int = 2000) -> dict[str, float | None]:
        """Noise share before/after reassignment, coverage, relative validity and silhouette."""
        labels = self.labels_
        out: dict[str, float | None] = {
            "noise_share_hdbscan": float(np.mean(self.raw_labels_ < 0)),
            "noise_share": float(np.mean(labels < 0)),
            "coverage": float(np.mean(labels >= 0)),
            "reassigned_share": float(np.mean(self.assigned_by_ == "reassigned")),
            "n_segments": float(self.n_segments_),
            "relative_validity": None,
            "silhouette": None,
        }
        rv = getattr(self.model_, "relative_validity_", None)
        if rv is not None:
            try:
                out["relative_validity"] = float(rv)
            except (TypeError, ValueError):
                out["relative_validity"] = None
        out["silhouette"] = cosine_silhouette(vectors, labels, sample_size=sample_size, seed=self.random_state)
        return out


class GivenLabels(BaseClusterer):
    """Keep labels made elsewhere instead of clustering (BERTopic's `BaseCluster`): `fit(X, y)` stores `labels_ = y`.

    Segment ids are kept as given (they need not be contiguous); -1 leaves a user unassigned.
    Probabilities are 1.0 for a labelled user and 0.0 for -1. Through `SegmentPipeline`, pass the
    labels as `fit(..., y=)`, keyed by user id.
    """

    def fit(self, vectors: np.ndarray, y: np.ndarray | None = None) -> GivenLabels:
        if y is None:
            raise ConfigError("GivenLabels needs the labels: fit(vectors, y) (SegmentPipeline: fit(..., y=))")
        labels = np.asarray(y)
        if labels.shape != (len(vectors),):
            raise ConfigError(f"GivenLabels: labels of shape {labels.shape} for {len(vectors)} users; need one per user")
        if not np.issubdtype(labels.dtype, np.integer) or (labels < -1).any():
            raise ConfigError("GivenLabels: labels must be integer segment ids >= 0, or -1 for unassigned")
        self.labels_ = labels.astype(np.int64)
        self.probabilities_ = (self.labels_ >= 0).astype(np.float64)
        self.assigned_by_ = np.where(self.labels_ >= 0, "given", "noise")
        return self


def _renumber_by_size(labels: np.ndarray) -> np.ndarray:
    out = np.full_like(labels, -1)
    ids, counts = np.unique(labels[labels >= 0], return_counts=True)
    # Ties broken by the original label, which the engines make deterministic.
    order = sorted(zip(ids.tolist(), counts.tolist(), strict=True), key=lambda t: (-t[1], t[0]))
    for new, (old, _) in enumerate(order):
        out[labels == old] = new
    return out
