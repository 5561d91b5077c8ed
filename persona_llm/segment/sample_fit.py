"""Segments for millions of users on one machine: fit on a seeded sample, assign everyone else in chunks.

UMAP and HDBSCAN cost grows faster than the number of users (UMAP's neighbour graph, HDBSCAN's spanning
tree and its memory), so above some size a full fit stops fitting in minutes or in memory. A
`SampleFitClusterer` fits the reducer and the clusterer on `sample_size` users drawn with a seed, then
puts every other user into the segments found with `persona_llm.segment.assign.SegmentAssigner` (nearest
centroid above a per-segment threshold, read `chunk_size` rows at a time). The vectors may be a
memory-mapped array (``np.load(path, mmap_mode="r")``): only the sample and one chunk are ever in memory,
plus one label, score and code per user.

The sample's segments are kept at the full population's granularity: with `min_cluster_size` unset, the
sample gets the population's default size scaled to the sample (a segment of 500 in a million users is one
of 10 in a sample of 20,000), so a sample fit and a full fit look for segments of the same share.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from persona_llm.common.vectors import NOISE, cosine_silhouette, normalize_rows
from persona_llm.errors import ConfigError
from persona_llm.segment.assign import BY_CENTROID, BY_PREDICTION, SegmentAssigner
from persona_llm.segment.base import BaseClusterer, BaseReducer
from persona_llm.segment.cluster import HDBSCANClusterer, default_min_cluster_size, default_min_samples
from persona_llm.segment.reduce import get_reducer, reducer_label

#: SegmentPipeline(fit_sample="auto") fits on a sample from this many users up...
AUTO_FIT_SAMPLE_ABOVE = 50_000
#: ... of this size. bench/bench_scale.py: at 100k users, a fit on 20k agrees with the full fit at ARI
#: 0.8+ for a fifth of the time; HDBSCAN's and UMAP's cost on 20k users is ~1 minute on 2 cores.
DEFAULT_FIT_SAMPLE = 20_000
#: Smallest sample that can hold segments of the default minimum size (5) at 1% granularity.
MIN_FIT_SAMPLE = 500

#: The default rule for users outside the sample (SegmentAssigner "auto"): a user joins the nearest
#: segment when at least as close to its centroid as the 1% least similar of the members the sample fit
#: put there, and never below cosine 0.1. Measured on 10k 20NG users (bench_scale data, a 5k sample):
#: ARI to the full fit 0.542 at 99% coverage, the same as assigning everyone (0.542, 100%); the refresh
#: default (5%, at least 0.3) pooled 11% of the users and scored 0.444. A second full fit with another
#: seed agrees with the first at 0.754, and the sample's own segments with the full fit's on the same
#: users at 0.57-0.61: the sample fit, not the assignment, is what costs agreement.
ASSIGN_QUANTILE = 0.01
ASSIGN_MIN_THRESHOLD = 0.1

#: `assigned_by` of users outside the sample (the sample's own users keep the clusterer's words:
#: "cluster", "reassigned", "noise").
ASSIGNED_CENTROID = "assigned"
ASSIGNED_PREDICTION = "predicted"


def scaled_min_cluster_size(n_users: int, sample_size: int) -> int:
    """The population's default min_cluster_size (cluster.default_min_cluster_size) scaled to a sample,
    at least 5: segments of the same share of users in the sample as in the population."""
    return int(max(5, round(default_min_cluster_size(n_users) * sample_size / max(1, n_users))))


def check_fit_sample(fit_sample: object) -> None:
    """Raise ConfigError unless `fit_sample` is None, "auto" or an integer >= MIN_FIT_SAMPLE."""
    if fit_sample is None or fit_sample == "auto":
        return
    if isinstance(fit_sample, bool) or not isinstance(fit_sample, (int, np.integer)):
        raise ConfigError(f"fit_sample must be None, 'auto' or a number of users, not {fit_sample!r}")
    if int(fit_sample) < MIN_FIT_SAMPLE:
        raise ConfigError(f"fit_sample must be at least {MIN_FIT_SAMPLE} users (or None for a full fit), not {fit_sample}")


def sample_size_for(fit_sample: int | str | None, n_users: int) -> int | None:
    """How many users to fit on for `fit_sample` and `n_users`; None means fit everyone."""
    check_fit_sample(fit_sample)
    if fit_sample is None:
        return None
    if fit_sample == "auto":
        return DEFAULT_FIT_SAMPLE if n_users > AUTO_FIT_SAMPLE_ABOVE else None
    size = int(fit_sample)  # type: ignore[arg-type]
    return size if n_users > size else None


class SampleFitClusterer(BaseClusterer):
    """Fit `reducer` + `clusterer` on a seeded sample of users; assign the rest with a SegmentAssigner.

    Parameters (stored as given; `fit` does the work)
    ----------
    sample_size: users the reducer and the clusterer see (all of them when there are fewer).
    reducer: a get_reducer name ("auto" chooses by the sample's size) or a BaseReducer, fitted on the sample.
    clusterer: a BaseClusterer fitted on the reduced sample; None: HDBSCANClusterer with
        `min_cluster_size` (None: the population's default scaled to the sample, see the module doc).
    min_cluster_size: see clusterer.
    assigner: a SegmentAssigner (unfitted) for everyone else; None: SegmentAssigner("auto",
        quantile=ASSIGN_QUANTILE, min_threshold=ASSIGN_MIN_THRESHOLD, chunk_size=chunk_size).
        Its centroids and thresholds are learnt in the input space (the vectors given to `fit`), from
        the sample's labels.
    chunk_size: rows read at a time when assigning.
    random_state: seeds the sample (and a default reducer / clusterer).
    stage_hook: called as hook(stage, "start" | "end", seconds) around "sample", "reduce", "cluster" and
        "assign" (SegmentPipeline's StageHook), e.g. to attribute time or memory to each.

    After `fit`: labels_, probabilities_ (sample: the clusterer's; the rest: cosine to the centroid),
    assigned_by_, sample_index_ (sorted row numbers of the sample), reducer_, clusterer_, assigner_,
    n_segments_, timings_ (seconds by stage), and the inner clusterer's min_cluster_size_ /
    min_samples_ / engine_.
    """

    def __init__(
        self,
        sample_size: int = DEFAULT_FIT_SAMPLE,
        *,
        reducer: str | BaseReducer = "auto",
        clusterer: BaseClusterer | None = None,
        min_cluster_size: int | None = None,
        assigner: SegmentAssigner | None = None,
        chunk_size: int = 65_536,
        random_state: int = 0,
        stage_hook: Callable[[str, Literal["start", "end"], float], None] | None = None,
    ) -> None:
        self.sample_size = sample_size
        self.reducer = reducer
        self.clusterer = clusterer
        self.min_cluster_size = min_cluster_size
        self.assigner = assigner
        self.chunk_size = chunk_size
        self.random_state = random_state
        self.stage_hook = stage_hook

    @contextlib.contextmanager
    def _stage(self, name: str) -> Iterator[None]:
        if self.stage_hook:
            self.stage_hook(name, "start", 0.0)
        t0 = time.perf_counter()
        yield
        self.timings_[name] = time.perf_counter() - t0
        if self.stage_hook:
            self.stage_hook(name, "end", self.timings_[name])

    def fit(self, vectors: npt.ArrayLike, y: np.ndarray | None = None) -> SampleFitClusterer:
        """Segment the rows of `vectors` (an array or a memory-mapped one); `y` must be None."""
        if y is not None:
            raise ConfigError("SampleFitClusterer does not take labels (GivenLabels keeps given segments)")
        check_fit_sample(self.sample_size)
        if int(self.chunk_size) < 1:
            raise ConfigError(f"chunk_size must be at least 1, not {self.chunk_size}")
        x = vectors if isinstance(vectors, np.ndarray) else np.asarray(vectors)
        if x.ndim != 2:
            raise ConfigError(f"SampleFitClusterer.fit: vectors must be 2-d (users x dimensions), got shape {x.shape}")
        n = len(x)
        size = min(int(self.sample_size), n)
        self.timings_: dict[str, float] = {}
        with self._stage("sample"):
            rng = np.random.default_rng(self.random_state)
            index = np.sort(rng.choice(n, size=size, replace=False)) if size < n else np.arange(n)
            sample = np.ascontiguousarray(x[index], dtype=np.float32)  # the one copy: sample_size x dimensions
        with self._stage("reduce"):
            reducer = (
                self.reducer
                if isinstance(self.reducer, BaseReducer)
                else get_reducer(self.reducer, random_state=self.random_state, n_users=size)
            )
            reduced = reducer.fit_transform(sample)
        with self._stage("cluster"):
            clusterer = self.clusterer if self.clusterer is not None else self._default_clusterer(n, size)
            clusterer.fit(reduced)
            sample_labels = np.asarray(clusterer.labels_, dtype=np.int64)

        labels = np.full(n, NOISE, dtype=np.int64)
        probabilities = np.zeros(n, dtype=np.float32)
        # one byte per user: 0 noise, 1 cluster, 2 reassigned, 3 assigned by centroid, 4 predicted
        codes = np.zeros(n, dtype=np.uint8)
        labels[index] = sample_labels
        probabilities[index] = np.asarray(clusterer.probabilities_, dtype=np.float32)
        codes[index] = _encode(np.asarray(clusterer.assigned_by_))

        assigner = self.assigner if self.assigner is not None else SegmentAssigner(
            "auto", quantile=ASSIGN_QUANTILE, min_threshold=ASSIGN_MIN_THRESHOLD, chunk_size=int(self.chunk_size)
        )
        with self._stage("assign"):
            if (sample_labels >= 0).any() and size < n:
                assigner.fit(sample, sample_labels)
                in_sample = np.zeros(n, dtype=bool)
                in_sample[index] = True
                step = int(self.chunk_size)
                for start in range(0, n, step):
                    stop = min(n, start + step)
                    rest = np.flatnonzero(~in_sample[start:stop]) + start
                    if not len(rest):
                        continue
                    # a contiguous read of the (memory-mapped) block, then the rows outside the sample
                    block = np.asarray(x[start:stop], dtype=np.float32)[rest - start]
                    got = assigner.assign(block)
                    labels[rest] = got.labels
                    probabilities[rest] = np.clip(got.scores, 0.0, 1.0)
                    codes[rest] = np.where(
                        got.assigned_by == BY_PREDICTION, 4, np.where(got.assigned_by == BY_CENTROID, 3, 0)
                    )
        self.sample_index_ = index
        self.reducer_ = reducer
        self.clusterer_ = clusterer
        self.assigner_ = assigner
        self.labels_ = labels
        self.probabilities_ = probabilities.astype(np.float64)
        self.assigned_by_ = _DECODE[codes]
        self.n_segments_ = int(labels.max() + 1) if (labels >= 0).any() else 0
        self.min_cluster_size_ = clusterer.min_cluster_size_
        self.min_samples_ = clusterer.min_samples_
        self.engine_ = clusterer.engine_
        self._sample_ = sample
        self._reduced_ = reduced
        return self

    def _default_clusterer(self, n_users: int, sample_size: int) -> HDBSCANClusterer:
        mcs = self.min_cluster_size
        if mcs is None:
            mcs = scaled_min_cluster_size(n_users, sample_size)
        return HDBSCANClusterer(
            min_cluster_size=mcs, min_samples=default_min_samples(mcs), random_state=self.random_state
        )

    def reducer_label(self) -> str:
        """What reduced the sample, in get_reducer's terms (for the manifest)."""
        return reducer_label(self.reducer_)

    def quality(self, vectors: np.ndarray) -> dict[str, float | None]:
        """The clusterer's own quality on the sample (its reduced vectors), then coverage over everyone,
        the share assigned outside the sample and the silhouette of a seeded part of the sample (the
        vectors are never read whole here)."""
        out = dict(self.clusterer_.quality(self._reduced_))
        labels = self.labels_
        sample_labels = labels[self.sample_index_]
        out.update(
            {
                "noise_share": float(np.mean(labels < 0)),
                "coverage": float(np.mean(labels >= 0)),
                "n_segments": float(self.n_segments_),
                "fit_sample": float(len(self.sample_index_)),
                "assigned_outside_sample": float(np.mean(np.isin(self.assigned_by_, (ASSIGNED_CENTROID, ASSIGNED_PREDICTION)))),
                "silhouette": cosine_silhouette(normalize_rows(self._sample_), sample_labels, seed=self.random_state),
            }
        )
        return out

    def get_params(self) -> dict[str, Any]:
        return {
            "sample_size": self.sample_size,
            "reducer": self.reducer if isinstance(self.reducer, str) else type(self.reducer).__name__,
            "min_cluster_size": self.min_cluster_size,
            "chunk_size": self.chunk_size,
            "random_state": self.random_state,
        }


_CODES = {"noise": 0, "cluster": 1, "reassigned": 2, ASSIGNED_CENTROID: 3, ASSIGNED_PREDICTION: 4}
_DECODE = np.array(["noise", "cluster", "reassigned", ASSIGNED_CENTROID, ASSIGNED_PREDICTION])


def _encode(assigned_by: np.ndarray) -> np.ndarray:
    """The clusterer's `assigned_by` words as codes; a word of another clusterer counts as "cluster"."""
    return np.array([_CODES.get(str(a), 1) for a in assigned_by], dtype=np.uint8)
