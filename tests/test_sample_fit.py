"""Sample fit and assign (persona_llm/segment/sample_fit.py): segments found on a seeded sample, everyone
else assigned in chunks, from an array or a memory-mapped one; the pipeline's fit_sample parameter.

Synthetic data only (blobs on the unit sphere, and topic texts through a hashing embedder): no model.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import adjusted_rand_score

from persona_llm.common.vectors import segment_centroids
from persona_llm.errors import ConfigError
from persona_llm.segment.assign import BY_CENTROID, Assignment, SegmentAssigner
from persona_llm.segment.base import NoCleaner
from persona_llm.segment.cluster import GivenLabels
from persona_llm.segment.pipeline import SegmentPipeline
from persona_llm.segment.sample_fit import (
    AUTO_FIT_SAMPLE_ABOVE,
    DEFAULT_FIT_SAMPLE,
    SampleFitClusterer,
    sample_size_for,
    scaled_min_cluster_size,
)
from tests.test_stage_swaps import TOPICS, HashEmbedder

#: Calibrated on the blobs below (seeds 0-3): a sample of 1,000 of 3,000 users agrees with the full fit at
#: ARI 0.89-0.96 (a sample of 600, min_cluster_size 6, splits segments: 0.76-0.89); random labels for the
#: users outside the sample score 0.03-0.04.
ARI_FLOOR = 0.85


def blobs(n: int = 3000, k: int = 6, dim: int = 24, spread: float = 0.35, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """`k` groups of unit vectors around random centres, plus 5% scattered users; float32, truth labels."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((k, dim))
    truth = rng.integers(0, k, n)
    x = centres[truth] / np.linalg.norm(centres[truth], axis=1, keepdims=True)
    x = x + spread * rng.standard_normal((n, dim)) / np.sqrt(dim)
    scattered = rng.random(n) < 0.05
    x[scattered] = rng.standard_normal((int(scattered.sum()), dim))
    truth[scattered] = -1
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), truth


class RandomAssigner(SegmentAssigner):
    """A broken assignment: every user outside the sample gets a random segment."""

    def assign(self, vectors: object, clusterer_vectors: object = None) -> Assignment:
        n = len(vectors)  # type: ignore[arg-type]
        labels = np.random.default_rng(1).choice(self.segment_ids_, size=n)
        return Assignment(labels=labels, scores=np.ones(n, np.float32), assigned_by=np.full(n, BY_CENTROID),
                          nearest=labels)


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    return blobs()


@pytest.fixture(scope="module")
def full_labels(data: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    x, _ = data
    return SampleFitClusterer(len(x), reducer="none").fit(x).labels_


@pytest.mark.parametrize("sample_size", [1000, 1500])
def test_sample_fit_agrees_with_full_fit(data: tuple[np.ndarray, np.ndarray], full_labels: np.ndarray, sample_size: int) -> None:
    x, truth = data
    fit = SampleFitClusterer(sample_size, reducer="none", chunk_size=700).fit(x)
    assert len(fit.sample_index_) == sample_size and (np.diff(fit.sample_index_) > 0).all()
    assert abs(fit.n_segments_ - len(np.unique(full_labels[full_labels >= 0]))) <= 1
    assert adjusted_rand_score(full_labels, fit.labels_) >= ARI_FLOOR
    assert adjusted_rand_score(truth, fit.labels_) >= ARI_FLOOR
    outside = np.setdiff1d(np.arange(len(x)), fit.sample_index_)
    assert set(np.unique(fit.assigned_by_[outside])) <= {"assigned", "noise"}
    assert set(np.unique(fit.assigned_by_[fit.sample_index_])) <= {"cluster", "reassigned", "noise"}
    assert fit.probabilities_.shape == (len(x),) and fit.probabilities_.min() >= 0 and fit.probabilities_.max() <= 1
    assert set(fit.timings_) == {"sample", "reduce", "cluster", "assign"}
    quality = fit.quality(x)
    assert quality["fit_sample"] == sample_size and quality["coverage"] == pytest.approx(np.mean(fit.labels_ >= 0))


def test_the_floor_catches_a_broken_assignment(data: tuple[np.ndarray, np.ndarray], full_labels: np.ndarray) -> None:
    x, _ = data
    broken = SampleFitClusterer(1000, reducer="none", assigner=RandomAssigner()).fit(x)
    assert adjusted_rand_score(full_labels, broken.labels_) < ARI_FLOOR - 0.3


def test_sample_keeps_the_population_granularity() -> None:
    assert scaled_min_cluster_size(1_000_000, 20_000) == 10  # 500 (the cap) of a million -> 10 of 20k
    assert scaled_min_cluster_size(100_000, 20_000) == 100
    assert scaled_min_cluster_size(3_000, 600) == 6
    assert scaled_min_cluster_size(1_000, 100) == 5  # never below the smallest default
    fit = SampleFitClusterer(600, reducer="none").fit(blobs(n=3000)[0])
    assert fit.min_cluster_size_ == 6


class ReadSpy(np.ndarray):
    """An array that records how many rows each read asked for."""

    reads: list[int]

    def __getitem__(self, key: object) -> np.ndarray:
        out = np.asarray(super().__getitem__(key))
        self.reads.append(len(out) if out.ndim else 1)
        return out


def test_memmap_is_read_in_chunks_and_matches_in_memory(tmp_path: Path, data: tuple[np.ndarray, np.ndarray]) -> None:
    x, _ = data
    np.save(tmp_path / "users.npy", x)
    mapped = np.load(tmp_path / "users.npy", mmap_mode="r")
    assert isinstance(mapped, np.memmap)
    from_disk = SampleFitClusterer(800, reducer="none", chunk_size=256).fit(mapped)
    in_memory = SampleFitClusterer(800, reducer="none", chunk_size=1024).fit(x)
    np.testing.assert_array_equal(from_disk.labels_, in_memory.labels_)
    np.testing.assert_allclose(from_disk.probabilities_, in_memory.probabilities_, atol=1e-6)

    spy = np.load(tmp_path / "users.npy", mmap_mode="r").view(ReadSpy)
    spy.reads = []
    fit = SampleFitClusterer(800, reducer="none", chunk_size=256).fit(spy)
    assert max(spy.reads) == 800 and sorted(spy.reads)[-2] <= 256  # the sample once, then chunks
    spy.reads = []
    chunked = segment_centroids(spy, fit.labels_, chunk_size=256)
    assert max(spy.reads) <= 256
    np.testing.assert_allclose(chunked, segment_centroids(x, fit.labels_), atol=1e-5)


def test_fit_sample_sizes() -> None:
    assert sample_size_for("auto", AUTO_FIT_SAMPLE_ABOVE) is None
    assert sample_size_for("auto", AUTO_FIT_SAMPLE_ABOVE + 1) == DEFAULT_FIT_SAMPLE
    assert sample_size_for(None, 10**7) is None
    assert sample_size_for(800, 800) is None and sample_size_for(800, 801) == 800


def topic_texts(users_per_topic: int, seed: int = 0) -> pd.DataFrame:
    rng = random.Random(seed)
    rows = []
    for topic, words in TOPICS.items():
        pool = words.split()
        for u in range(users_per_topic):
            for k in range(2):
                rows.append({"user_id": f"{topic}-{u:04d}", "text": " ".join(rng.choices(pool, k=8)) + f" note {k}",
                             "topic": topic})
    return pd.DataFrame(rows)


def test_pipeline_fit_sample_end_to_end() -> None:
    df = topic_texts(250)  # 750 users, fit on 500
    # min_cluster_size applies to the sample as given (unset, 750 users' default scaled to 500 is 5: too fine here)
    pipe = SegmentPipeline(embedder=HashEmbedder(), cleaner=NoCleaner(), cache_dir="none", fit_sample=500,
                           min_cluster_size=40)
    pipe.fit(df, user_column="user_id", text_column="text", attribute_columns=[])
    assert pipe.manifest_.parameters["fit_sample_used"] == 500 and pipe.get_params()["fit_sample"] == 500
    assert pipe.manifest_.users["assigned_outside_sample"] + int((pipe.assigned_by_ == "noise").sum()) >= 250
    truth = df.groupby("user_id")["topic"].first().reindex(pipe.user_ids_)
    assert adjusted_rand_score(truth, pipe.labels_) >= ARI_FLOOR
    assert len(pipe.segments_.segments) == 3 and pipe.assignments()["assigned_by"].isin(["assigned", "cluster", "reassigned", "noise"]).all()
    small = SegmentPipeline(embedder=HashEmbedder(), cleaner=NoCleaner(), cache_dir="none", min_cluster_size=40)  # "auto": no sample
    small.fit(df, user_column="user_id", text_column="text", attribute_columns=[])
    assert small.manifest_.parameters["fit_sample_used"] is None and "assigned" not in set(small.assigned_by_)


@pytest.mark.parametrize("bad", [10, 0, "lots", 2.5, True])
def test_pipeline_fit_sample_config_errors(bad: object) -> None:
    pipe = SegmentPipeline(embedder=HashEmbedder(), cleaner=NoCleaner(), cache_dir="none", fit_sample=bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="fit_sample"):
        pipe.fit(topic_texts(5), user_column="user_id", text_column="text", attribute_columns=[])
    assert not hasattr(pipe, "cleaner_")  # refused before any stage ran


def test_pipeline_fit_sample_refuses_given_labels() -> None:
    df = topic_texts(250)
    y = {u: i % 3 for i, u in enumerate(sorted(df["user_id"].unique()))}
    with pytest.raises(ConfigError, match="fit_sample=500 does not apply to given labels"):
        SegmentPipeline(embedder=HashEmbedder(), cleaner=NoCleaner(), cache_dir="none", clusterer=GivenLabels(),
                        fit_sample=500).fit(df, user_column="user_id", text_column="text", attribute_columns=[], y=y)
    given = SegmentPipeline(embedder=HashEmbedder(), cleaner=NoCleaner(), cache_dir="none", clusterer=GivenLabels())
    given.fit(df, user_column="user_id", text_column="text", attribute_columns=[], y=y)  # "auto" (750 users: no sample)
    assert given.manifest_.parameters["fit_sample_used"] is None
    with pytest.raises(ConfigError, match="labels"):
        SampleFitClusterer(500).fit(blobs(n=600)[0], y=np.zeros(600, dtype=int))
