"""Assign users to the segments of a segmentation fitted earlier, in chunks of bounded memory.

Two callers: a refresh puts new and changed users into the published run's segments, and a large
segmentation fits on a sample of users and assigns everyone else. Both need the same rule, so it lives
here once:

1. Density prediction, where the fitted model allows it: `hdbscan.approximate_predict` on an `hdbscan`
   model (fast_hdbscan has none). It is guarded, because it can return labels the fit never made:
   with `cluster_selection_epsilon` or `max_cluster_size` set (scikit-learn-contrib/hdbscan #375, #445)
   it is not used at all, a label it predicts that the fit did not select is ignored, and a self-check
   on the model's own training points must reproduce their labels before it is trusted.
2. Nearest centroid above a threshold, for everyone the prediction leaves out (or for all users when
   there is no usable model): a user whose cosine similarity to the nearest segment centroid is below
   that segment's threshold fits nowhere and goes to the pool (label -1), never to a segment by force.
   The "auto" threshold of a segment is a low quantile of its own members' similarities (a new user
   must be about as close as the members already are), floored at `min_threshold`.

    assigner = SegmentAssigner(threshold="auto", chunk_size=8192).fit(user_vectors, labels)
    labels, scores = assigner.predict(new_user_vectors)      # -1: pooled (fits no segment)

`predict` reads `chunk_size` rows at a time (a memory-mapped array is never loaded whole): its memory
is O(chunk_size x (dimension + segments)) plus the outputs, one label and one score per row.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from persona_llm.common.vectors import NOISE
from persona_llm.errors import ConfigError

#: `assigned_by` values of an assignment, per user.
BY_PREDICTION = "prediction"
BY_CENTROID = "centroid"
BY_POOL = "pool"


@dataclass
class Assignment:
    """What `SegmentAssigner.assign` decided for each row.

    labels: segment id, or -1 when the user fits no segment (pooled).
    scores: cosine similarity to the assigned segment's centroid (pooled users: to the nearest one).
    assigned_by: "prediction" (hdbscan approximate_predict), "centroid" or "pool".
    nearest: the nearest segment id by centroid, assigned or not (what a pooled user came closest to).
    invented_labels: how many rows the density prediction gave a label the fit never selected (ignored).
    """

    labels: np.ndarray
    scores: np.ndarray
    assigned_by: np.ndarray
    nearest: np.ndarray
    invented_labels: int = 0


def _approximate_predict(model: Any, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """hdbscan's own prediction (one indirection, so the guards can be tested against a bad one)."""
    import hdbscan

    labels, strengths = hdbscan.approximate_predict(model, points)
    return np.asarray(labels, dtype=np.int64), np.asarray(strengths, dtype=np.float64)


class SegmentAssigner:
    """Put users into fitted segments: guarded density prediction, else nearest centroid above a threshold.

    Parameters (stored as given; `fit` does the work)
    ----------
    threshold: "auto" (per segment: the `quantile` of its members' cosine similarity to its centroid,
        at least `min_threshold`) or one cosine similarity for every segment.
    quantile: see threshold; 0.05 accepts a new user about as close as the 95% closest members.
    min_threshold: the floor of an "auto" threshold (the pipeline's outlier reassignment uses 0.3).
    chunk_size: rows per step of `fit` and `predict`; bounds their working memory.
    use_prediction: use `hdbscan.approximate_predict` when `fit` gets a usable hdbscan model.
    min_strength: a density prediction weaker than this counts as noise (then the centroid rule decides).
    check_size / min_agreement: the self-check of the density prediction: on up to `check_size` of the
        model's clustered training points it must reproduce at least `min_agreement` of their labels.
    random_state: seeds the self-check sample.
    """

    def __init__(
        self,
        threshold: float | Literal["auto"] = "auto",
        *,
        quantile: float = 0.05,
        min_threshold: float = 0.3,
        chunk_size: int = 8192,
        use_prediction: bool = True,
        min_strength: float = 0.0,
        check_size: int = 500,
        min_agreement: float = 0.95,
        random_state: int = 0,
    ) -> None:
        self.threshold = threshold
        self.quantile = quantile
        self.min_threshold = min_threshold
        self.chunk_size = chunk_size
        self.use_prediction = use_prediction
        self.min_strength = min_strength
        self.check_size = check_size
        self.min_agreement = min_agreement
        self.random_state = random_state

    # -- fitting ------------------------------------------------------------------------------------

    def fit(self, vectors: npt.ArrayLike, labels: npt.ArrayLike, clusterer: Any = None) -> SegmentAssigner:
        """Learn each segment's centroid and threshold from users already assigned.

        vectors: (n, d) user vectors (a memory-mapped array is read in chunks); labels: (n,) segment ids,
        -1 for users in no segment (ignored). Ids need not be contiguous.
        clusterer: optionally the fitted model behind `labels` (an `HDBSCANClusterer` or an
        `hdbscan.HDBSCAN`), for density prediction; `predict` then needs the points in that model's
        feature space (`clusterer_vectors`), which may differ from `vectors` (e.g. after UMAP).
        """
        self._check_params()
        x = vectors if isinstance(vectors, np.ndarray) else np.asarray(vectors)
        y = np.asarray(labels)
        if x.ndim != 2:
            raise ConfigError(f"SegmentAssigner.fit: vectors must be 2-d (users x dimensions), got shape {x.shape}")
        if y.shape != (len(x),):
            raise ConfigError(f"SegmentAssigner.fit: {len(y)} labels for {len(x)} vectors; need one per user")
        if not np.issubdtype(y.dtype, np.integer):
            raise ConfigError("SegmentAssigner.fit: labels must be integer segment ids (-1: no segment)")
        ids = np.unique(y[y >= 0])
        if not len(ids):
            raise ConfigError("SegmentAssigner.fit: no user is in a segment; there is nothing to assign to")
        self.segment_ids_ = ids.astype(np.int64)
        self.n_features_in_ = int(x.shape[1])
        self.centroids_ = self._centroids(x, y)
        self.thresholds_ = self._thresholds(x, y)
        self.prediction_, self.prediction_note_ = False, "no model given: nearest centroid only"
        self.label_map_: dict[int, int] = {}
        self.model_: Any = None
        if clusterer is not None:
            self._fit_prediction(clusterer, y)
        return self

    def _check_params(self) -> None:
        if self.threshold != "auto" and not isinstance(self.threshold, (int, float)):
            raise ConfigError(f"threshold must be 'auto' or a number, not {self.threshold!r}")
        if not 0.0 <= self.quantile < 1.0:
            raise ConfigError(f"quantile must be in [0, 1), not {self.quantile}")
        if int(self.chunk_size) < 1:
            raise ConfigError(f"chunk_size must be at least 1, not {self.chunk_size}")

    def _chunks(self, n: int) -> range:
        return range(0, n, max(1, int(self.chunk_size)))

    def _unit(self, chunk: np.ndarray) -> np.ndarray:
        rows = np.asarray(chunk, dtype=np.float32)
        norms = np.linalg.norm(rows, axis=1, keepdims=True)
        return rows / np.where(norms == 0, 1, norms)

    def _centroids(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Members' mean of unit rows, re-normalised, summed a chunk at a time."""
        index = {int(s): i for i, s in enumerate(self.segment_ids_)}
        sums = np.zeros((len(index), x.shape[1]), dtype=np.float64)
        for start in self._chunks(len(x)):
            lab = y[start : start + self.chunk_size]
            keep = lab >= 0
            if not keep.any():
                continue
            rows = np.array([index[int(v)] for v in lab[keep]], dtype=np.int64)
            np.add.at(sums, rows, self._unit(x[start : start + self.chunk_size][keep]))
        norms = np.linalg.norm(sums, axis=1, keepdims=True)
        return (sums / np.where(norms == 0, 1, norms)).astype(np.float32)

    def _thresholds(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        if self.threshold != "auto":
            return np.full(len(self.segment_ids_), float(self.threshold), dtype=np.float64)
        index = {int(s): i for i, s in enumerate(self.segment_ids_)}
        # One float per member: a million users cost 4 MB here, never a users x dimensions copy.
        sims = np.empty(int((y >= 0).sum()), dtype=np.float32)
        owner = np.empty(len(sims), dtype=np.int64)
        pos = 0
        for start in self._chunks(len(x)):
            lab = y[start : start + self.chunk_size]
            keep = lab >= 0
            if not keep.any():
                continue
            rows = np.array([index[int(v)] for v in lab[keep]], dtype=np.int64)
            unit = self._unit(x[start : start + self.chunk_size][keep])
            sims[pos : pos + len(rows)] = np.einsum("ij,ij->i", unit, self.centroids_[rows])
            owner[pos : pos + len(rows)] = rows
            pos += len(rows)
        out = np.empty(len(self.segment_ids_), dtype=np.float64)
        for i in range(len(out)):
            out[i] = max(self.min_threshold, float(np.quantile(sims[owner == i], self.quantile)))
        return out

    def _fit_prediction(self, clusterer: Any, labels: np.ndarray) -> None:
        """Decide whether hdbscan's approximate_predict can be trusted for this model, and map its raw
        labels to the segment ids of `labels`."""
        if not self.use_prediction:
            self.prediction_note_ = "density prediction switched off (use_prediction=False)"
            return
        model = getattr(clusterer, "model_", clusterer)
        if type(model).__module__.split(".")[0] != "hdbscan" or not hasattr(model, "labels_"):
            self.prediction_note_ = f"{type(model).__name__} has no approximate_predict: nearest centroid only"
            return
        epsilon = float(getattr(model, "cluster_selection_epsilon", 0.0) or 0.0)
        max_size = int(getattr(model, "max_cluster_size", 0) or 0)
        if epsilon > 0 or max_size > 0:
            self.prediction_note_ = (
                f"approximate_predict not used: cluster_selection_epsilon={epsilon}, max_cluster_size={max_size} "
                "make it return labels the fit never selected (scikit-learn-contrib/hdbscan #375, #445)"
            )
            return
        raw = np.asarray(model.labels_, dtype=np.int64)
        if raw.shape != labels.shape:
            self.prediction_note_ = f"the model was fitted on {len(raw)} points, not these {len(labels)} users"
            return
        # Raw hdbscan labels -> our segment ids (renumbered by size, noise maybe reassigned): by majority of
        # the raw cluster's members, and only where that majority is clear.
        mapping: dict[int, int] = {}
        for r in np.unique(raw[raw >= 0]):
            ours = labels[raw == r]
            ours = ours[ours >= 0]
            if not len(ours):
                continue
            values, counts = np.unique(ours, return_counts=True)
            if counts.max() >= 0.9 * len(ours):
                mapping[int(r)] = int(values[counts.argmax()])
        if not mapping:
            self.prediction_note_ = "the model's clusters do not correspond to the given segments"
            return
        try:
            if getattr(model, "prediction_data_", None) is None:
                model.generate_prediction_data()
            points = np.asarray(model._raw_data)
            clustered = np.flatnonzero(raw >= 0)
            rng = np.random.default_rng(self.random_state)
            sample = np.sort(rng.choice(clustered, size=min(self.check_size, len(clustered)), replace=False))
            predicted, _ = _approximate_predict(model, points[sample])
        except Exception as exc:  # noqa: BLE001 - any failure of the optional path means: centroids only
            self.prediction_note_ = f"approximate_predict failed its self-check ({type(exc).__name__}: {exc})"
            return
        agreement = float(np.mean(predicted == raw[sample])) if len(sample) else 0.0
        if agreement < self.min_agreement:
            self.prediction_note_ = (
                f"approximate_predict reproduced {agreement:.0%} of the model's own labels "
                f"(needs {self.min_agreement:.0%}): nearest centroid only"
            )
            return
        self.model_, self.label_map_, self.prediction_ = model, mapping, True
        self.prediction_note_ = f"approximate_predict (self-check {agreement:.0%}), nearest centroid for the rest"

    # -- predicting ---------------------------------------------------------------------------------

    def predict(self, vectors: npt.ArrayLike, clusterer_vectors: npt.ArrayLike | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(labels, scores) for each row: a segment id or -1 (fits nowhere), and the cosine similarity to
        that segment's centroid (for -1: to the nearest one). See `assign` for how each was decided."""
        result = self.assign(vectors, clusterer_vectors)
        return result.labels, result.scores

    def assign(self, vectors: npt.ArrayLike, clusterer_vectors: npt.ArrayLike | None = None) -> Assignment:
        """Assign each row of `vectors` (user vectors in the space `fit` saw), `chunk_size` rows at a time.

        clusterer_vectors: the same users in the fitted model's feature space, for density prediction
        (default: `vectors`); ignored when the prediction is not in use.
        """
        if not hasattr(self, "centroids_"):
            raise RuntimeError("SegmentAssigner is not fitted yet: call fit() first")
        x = vectors if isinstance(vectors, np.ndarray) else np.asarray(vectors)
        if x.ndim != 2 or x.shape[1] != self.n_features_in_:
            raise ConfigError(
                f"SegmentAssigner.predict: vectors of shape {x.shape}; the fit saw {self.n_features_in_} dimensions"
            )
        cx: Any = None
        if self.prediction_:
            cx = x if clusterer_vectors is None else clusterer_vectors
            cx = cx if isinstance(cx, np.ndarray) else np.asarray(cx)
            if len(cx) != len(x):
                raise ConfigError(f"clusterer_vectors has {len(cx)} rows for {len(x)} users")
        n = len(x)
        labels = np.full(n, NOISE, dtype=np.int64)
        scores = np.zeros(n, dtype=np.float32)
        nearest = np.full(n, NOISE, dtype=np.int64)
        by = np.full(n, BY_POOL, dtype=f"<U{len(BY_PREDICTION)}")
        invented = 0
        for start in self._chunks(n):
            stop = min(n, start + int(self.chunk_size))
            sims = self._unit(x[start:stop]) @ self.centroids_.T
            best = sims.argmax(axis=1)
            best_sim = sims[np.arange(len(best)), best]
            nearest[start:stop] = self.segment_ids_[best]
            scores[start:stop] = best_sim
            fits = best_sim >= self.thresholds_[best]
            labels[start:stop][fits] = self.segment_ids_[best[fits]]
            by[start:stop][fits] = BY_CENTROID
            if cx is None:
                continue
            raw, strength = _approximate_predict(self.model_, np.asarray(cx[start:stop], dtype=np.float64))
            mapped = np.array([self.label_map_.get(int(r), NOISE) for r in raw], dtype=np.int64)
            invented += int(((raw >= 0) & (mapped < 0)).sum())  # a label the fit never selected: ignored
            use = (mapped >= 0) & (strength >= self.min_strength)
            if use.any():
                column = np.searchsorted(self.segment_ids_, mapped[use])
                labels[start:stop][use] = mapped[use]
                scores[start:stop][use] = sims[np.flatnonzero(use), column]
                by[start:stop][use] = BY_PREDICTION
        return Assignment(labels=labels, scores=scores, assigned_by=by, nearest=nearest, invented_labels=invented)

    def threshold_for(self, segment_id: int) -> float:
        """The cosine similarity a user needs to join `segment_id` by the centroid rule."""
        column = int(np.searchsorted(self.segment_ids_, segment_id))
        if column >= len(self.segment_ids_) or self.segment_ids_[column] != segment_id:
            raise KeyError(f"no segment {segment_id} in this assigner")
        return float(self.thresholds_[column])
