"""SegmentAssigner: nearest centroid above a threshold, guarded hdbscan prediction, chunked and bounded.

Synthetic blobs on the unit sphere stand in for user vectors: fast, and the truth is known.
"""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from persona_llm.errors import ConfigError
from persona_llm.segment import assign as assign_module
from persona_llm.segment.assign import SegmentAssigner


def blobs(n_per: int, centres: np.ndarray, spread: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = np.vstack([c + spread * rng.standard_normal((n_per, centres.shape[1])) for c in centres])
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32), np.repeat(np.arange(len(centres)), n_per)


@pytest.fixture(scope="module")
def centres() -> np.ndarray:
    rng = np.random.default_rng(7)
    c = rng.standard_normal((3, 16))
    return c / np.linalg.norm(c, axis=1, keepdims=True)


def test_new_users_go_to_their_segment_and_strangers_to_the_pool(centres: np.ndarray) -> None:
    x, y = blobs(60, centres, 0.08, seed=1)
    labels = np.where(y == 2, 7, y)  # ids need not be contiguous
    fitted = SegmentAssigner().fit(x, labels)
    new, truth = blobs(20, centres, 0.08, seed=2)
    rng = np.random.default_rng(3)
    strangers = rng.standard_normal((10, 16)).astype(np.float32)  # near no centroid
    got, scores = fitted.predict(np.vstack([new, strangers]))
    expected = np.where(truth == 2, 7, truth)
    placed = got[:60] >= 0
    assert (got[:60][placed] == expected[placed]).all()  # never a wrong segment
    assert placed.mean() >= 0.9  # the 5% quantile threshold pools about the 5% least typical
    assert (got[60:] == -1).all()
    assert (scores[:60] > 0.9).all() and (scores[60:] < 0.6).all()
    result = fitted.assign(strangers)
    assert set(result.assigned_by) == {"pool"} and set(result.nearest) <= {0, 1, 7}


def test_auto_threshold_is_a_low_quantile_of_the_members_and_a_number_overrides_it(centres: np.ndarray) -> None:
    x, y = blobs(100, centres, 0.3, seed=4)
    fitted = SegmentAssigner(quantile=0.1, min_threshold=0.0).fit(x, y)
    for s in range(3):
        sims = (x[y == s] / np.linalg.norm(x[y == s], axis=1, keepdims=True)) @ fitted.centroids_[s]
        assert fitted.threshold_for(s) == pytest.approx(np.quantile(sims, 0.1), abs=1e-5)
    assert SegmentAssigner(quantile=0.1, min_threshold=0.99).fit(x, y).threshold_for(0) == 0.99  # the floor
    fixed = SegmentAssigner(threshold=0.5).fit(x, y)
    assert fixed.thresholds_.tolist() == [0.5, 0.5, 0.5]
    with pytest.raises(KeyError):
        fixed.threshold_for(4)


def test_chunk_size_does_not_change_the_result(centres: np.ndarray) -> None:
    x, y = blobs(50, centres, 0.3, seed=5)
    new, _ = blobs(30, centres, 0.4, seed=6)
    whole = SegmentAssigner(chunk_size=100_000).fit(x, y).predict(new)
    chunked = SegmentAssigner(chunk_size=7).fit(x, y).predict(new)
    assert whole[0].tolist() == chunked[0].tolist()
    np.testing.assert_allclose(whole[1], chunked[1], atol=1e-6)


def test_predict_on_a_memory_mapped_array_stays_within_its_chunks(tmp_path: Path, centres: np.ndarray) -> None:
    x, y = blobs(40, centres, 0.2, seed=8)
    fitted = SegmentAssigner(chunk_size=1000).fit(x, y)
    rng = np.random.default_rng(9)
    n, d = 40_000, 16
    path = tmp_path / "users.f32"
    big = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, d))
    for start in range(0, n, 10_000):
        big[start : start + 10_000] = rng.standard_normal((10_000, d))
    big.flush()
    mapped = np.load(path, mmap_mode="r")
    tracemalloc.start()
    labels, scores = fitted.predict(mapped)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert len(labels) == n and len(scores) == n
    outputs = n * (8 + 4 + 8 + 4 * len("prediction"))  # labels, scores, nearest, assigned_by
    # One chunk is 64 kB; a whole float32 copy of the input alone would add 2.6 MB.
    assert peak < outputs + 1e6, (peak, outputs)


def test_bad_input_is_refused_with_what_is_wrong(centres: np.ndarray) -> None:
    x, y = blobs(10, centres, 0.1, seed=10)
    with pytest.raises(ConfigError, match="one per user"):
        SegmentAssigner().fit(x, y[:-1])
    with pytest.raises(ConfigError, match="no user is in a segment"):
        SegmentAssigner().fit(x, np.full(len(x), -1))
    with pytest.raises(ConfigError, match="integer"):
        SegmentAssigner().fit(x, y.astype(float))
    with pytest.raises(ConfigError, match="threshold"):
        SegmentAssigner(threshold="high").fit(x, y)  # type: ignore[arg-type]
    fitted = SegmentAssigner().fit(x, y)
    with pytest.raises(ConfigError, match="dimensions"):
        fitted.predict(x[:, :4])
    with pytest.raises(RuntimeError, match="not fitted"):
        SegmentAssigner().predict(x)


# -- density prediction and its guards ---------------------------------------------------------------


@pytest.fixture(scope="module")
def hdbscan_fit(centres: np.ndarray) -> tuple[np.ndarray, np.ndarray, object]:
    import hdbscan

    x, _ = blobs(80, centres, 0.1, seed=11)
    model = hdbscan.HDBSCAN(min_cluster_size=20).fit(x.astype(np.float64))
    raw = np.asarray(model.labels_)
    # our labels: the raw ones renumbered (as HDBSCANClusterer renumbers by size), noise kept as noise
    labels = np.where(raw >= 0, 10 + raw, -1)
    return x, labels, model


def test_hdbscan_prediction_is_used_when_it_reproduces_the_fit(hdbscan_fit: tuple[np.ndarray, np.ndarray, object], centres: np.ndarray) -> None:
    x, labels, model = hdbscan_fit
    fitted = SegmentAssigner().fit(x, labels, clusterer=model)
    assert fitted.prediction_, fitted.prediction_note_
    new, truth = blobs(15, centres, 0.1, seed=12)
    result = fitted.assign(new)
    assert (result.assigned_by == "prediction").mean() > 0.8
    # each blob's new points all go to one segment, the one its training points went to
    for s in range(3):
        assert len(set(result.labels[truth == s].tolist()) - {-1}) == 1
    assert set(result.labels.tolist()) <= set(labels.tolist())


def test_epsilon_or_max_size_switches_the_prediction_off(centres: np.ndarray) -> None:
    import hdbscan

    x, _ = blobs(80, centres, 0.1, seed=13)
    for kw in ({"cluster_selection_epsilon": 0.2}, {"max_cluster_size": 60}):
        model = hdbscan.HDBSCAN(min_cluster_size=20, **kw).fit(x.astype(np.float64))
        labels = np.asarray(model.labels_)
        if not (labels >= 0).any():
            continue
        fitted = SegmentAssigner().fit(x, labels, clusterer=model)
        assert not fitted.prediction_ and "#375" in fitted.prediction_note_
        assert set(fitted.assign(x).assigned_by) <= {"centroid", "pool"}


def test_an_invented_label_is_ignored_and_the_centroid_rule_decides(
    hdbscan_fit: tuple[np.ndarray, np.ndarray, object], monkeypatch: pytest.MonkeyPatch
) -> None:
    x, labels, model = hdbscan_fit
    fitted = SegmentAssigner().fit(x, labels, clusterer=model)
    assert fitted.prediction_
    # What #375/#445 look like: a label the fit never selected, with full strength.
    monkeypatch.setattr(assign_module, "_approximate_predict", lambda m, p: (np.full(len(p), 99), np.ones(len(p))))
    result = fitted.assign(x[:30])
    assert result.invented_labels == 30
    assert 99 not in result.labels and set(result.assigned_by) <= {"centroid", "pool"}
    assert set(result.labels.tolist()) - {-1} <= set(labels.tolist())


def test_a_prediction_that_fails_its_self_check_is_not_trusted(
    hdbscan_fit: tuple[np.ndarray, np.ndarray, object], monkeypatch: pytest.MonkeyPatch
) -> None:
    x, labels, model = hdbscan_fit
    monkeypatch.setattr(assign_module, "_approximate_predict", lambda m, p: (np.zeros(len(p), dtype=int), np.ones(len(p))))
    fitted = SegmentAssigner().fit(x, labels, clusterer=model)
    assert not fitted.prediction_ and "reproduced" in fitted.prediction_note_


def test_a_model_without_prediction_falls_back_to_centroids(centres: np.ndarray) -> None:
    from persona_llm.segment.cluster import HDBSCANClusterer

    x, _ = blobs(60, centres, 0.1, seed=14)
    fast = HDBSCANClusterer(min_cluster_size=15, engine="hdbscan", reassign_outliers=False).fit(x)
    fitted = SegmentAssigner().fit(x, fast.labels_, clusterer=fast)  # our wrapper: its hdbscan model is used
    assert fitted.prediction_, fitted.prediction_note_
    assert SegmentAssigner(use_prediction=False).fit(x, fast.labels_, clusterer=fast).prediction_ is False
    other = SegmentAssigner().fit(x, fast.labels_, clusterer=object())
    assert not other.prediction_ and "no approximate_predict" in other.prediction_note_
