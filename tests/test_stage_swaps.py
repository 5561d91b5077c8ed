"""Every pipeline stage can be swapped through its base class (persona_llm/segment/base.py), and the
skippable ones skipped with a no-op; the pipeline then uses what it was given.

A fake hashing embedder keeps these fits to a second or two: no model is loaded.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import pytest
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score

from persona_llm.errors import ConfigError
from persona_llm.schema.frames import TEXT, USER_ID, make_rejects
from persona_llm.schema.segments import Keyword, SegmentSet
from persona_llm.segment.base import (
    BaseClusterer,
    BaseDescriber,
    BaseEmbedder,
    BaseIngester,
    BaseStore,
    BaseUserAggregator,
    NoCleaner,
    SegmentDescription,
)
from persona_llm.segment.cluster import GivenLabels, HDBSCANClusterer
from persona_llm.segment.ingest import ColumnMap, IngestResult, TableIngester
from persona_llm.segment.pipeline import SegmentPipeline
from persona_llm.segment.store import ChromaStore
from persona_llm.segment.users import UserVectors

TOPICS = {
    "pizza": "pizza cheese oven dough tomato basil crust flour yeast sauce",
    "cars": "engine gearbox tyre brake clutch filter spark plug motor exhaust",
    "football": "goal striker keeper match league referee penalty offside club stadium",
}


class HashEmbedder(BaseEmbedder):
    """Bag of words hashed into 64 dimensions: texts sharing words are similar, and nothing is downloaded."""

    @property
    def model_id(self) -> str:
        return "test-hash-64"

    def encode(
        self, texts: Sequence[str], *, kind: Literal["passage", "query"] = "passage", show_progress: bool = False
    ) -> np.ndarray:
        out = np.zeros((len(texts), 64), dtype=np.float32)
        for i, text in enumerate(texts):
            for word in text.lower().split():
                out[i, int(hashlib.md5(word.encode()).hexdigest(), 16) % 64] += 1.0
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        norms[norms == 0] = 1.0
        return out / norms


def topic_frame(users_per_topic: int = 10, texts_per_user: int = 3) -> pd.DataFrame:
    """Users who each write about one topic, in English sentences (so language detection says "en")."""
    rng = np.random.default_rng(0)
    rows = []
    for topic, vocab in TOPICS.items():
        words = vocab.split()
        for u in range(users_per_topic):
            for j in range(texts_per_user):
                a, b, c = rng.choice(words, 3, replace=False)
                rows.append(
                    {
                        "user": f"{topic}-{u}",
                        "body": f"I think that the {a} and the {b} are what we need for the {c} this time ({j})",
                        "topic": topic,
                        "plan": ["free", "pro"][u % 2],
                    }
                )
    return pd.DataFrame(rows)


def pipeline(**params: Any) -> SegmentPipeline:
    return SegmentPipeline(embedder=HashEmbedder(), cache_dir="none", min_cluster_size=5, **params)


def fit(pipe: SegmentPipeline, data: pd.DataFrame | None = None, **kwargs: Any) -> SegmentPipeline:
    data = topic_frame() if data is None else data
    return pipe.fit(data, user_column="user", text_column="body", attribute_columns=["topic", "plan"], **kwargs)


def user_topics(pipe: SegmentPipeline) -> pd.Series:
    return pd.Series(pipe.user_ids_).str.split("-").str[0]


def test_default_stages_find_the_topics() -> None:
    pipe = fit(pipeline())
    assert adjusted_rand_score(user_topics(pipe), pipe.labels_) == 1.0
    assert {type(pipe.ingester_).__name__, type(pipe.cleaner_).__name__, type(pipe.user_aggregator_).__name__,
            type(pipe.clusterer_).__name__, type(pipe.describer_).__name__} == {
        "TableIngester", "TextCleaner", "UserAggregator", "HDBSCANClusterer", "SegmentDescriber"}  # fmt: skip
    # the default describer's keywords are the topic's own words
    for seg in pipe.segments_.segments:
        topic = pipe.texts_.loc[pipe.texts_["segment_id"] == seg.segment_id, "topic"].iloc[0]
        assert seg.keywords and all(k.term.split()[0] in TOPICS[topic].split() for k in seg.keywords[:3])
    # the default stage objects are not recorded by class (their settings are), so a manifest rebuilds them
    params = pipe.get_params()
    assert params["cleaner"] == "default"
    assert not {"ingester", "user_aggregator", "clusterer", "describer"} & set(params)
    assert pipe.manifest_.parameters["engine_used"] == "hdbscan"


# --- ingest --------------------------------------------------------------------------------------
class PipeSeparatedIngester(BaseIngester):
    """Reads "user|text" lines, a format the default ingester does not know."""

    def read_file(self, path: str | Path, columns: ColumnMap, *, max_rows: int | None = None) -> IngestResult:
        lines = Path(path).read_text(encoding="utf-8").splitlines()[:max_rows]
        frame = pd.DataFrame(
            [line.split("|", 1) for line in lines], columns=[columns.user_column, columns.text_column]
        )
        result = self.read_frame(frame, columns)
        result.format = "pipe-separated"
        return result

    def read_frame(self, data: pd.DataFrame, columns: ColumnMap) -> IngestResult:
        return TableIngester().read_frame(data, columns)


def test_custom_ingester_reads_the_file(tmp_path: Path) -> None:
    data = topic_frame()
    path = tmp_path / "texts.txt"
    path.write_text("\n".join(f"{u}|{t}" for u, t in zip(data["user"], data["body"], strict=True)), encoding="utf-8")
    pipe = pipeline(ingester=PipeSeparatedIngester()).fit_file(
        path, ColumnMap(user_column="user", text_column="body", attribute_columns=[])
    )
    assert pipe.manifest_.input_format == "pipe-separated"
    assert pipe.manifest_.rows.read == len(data)
    assert sorted(pipe.user_ids_) == sorted(data["user"].unique())
    assert pipe.get_params()["ingester"] == "PipeSeparatedIngester()"


# --- clean ---------------------------------------------------------------------------------------
def test_no_cleaner_keeps_texts_as_they_are_and_detects_language() -> None:
    data = topic_frame()
    data.loc[0, "body"] = "<b>Write to me at ana@example.com</b>: I think that the pizza and the cheese are what we need"
    skipped = fit(pipeline(cleaner=NoCleaner()), data)
    cleaned = fit(pipeline(), data)
    assert sorted(skipped.texts_[TEXT]) == sorted(data["body"])  # nothing changed, nothing dropped
    assert "ana@example.com" in " ".join(skipped.texts_[TEXT]) and "ana@example.com" not in " ".join(cleaned.texts_[TEXT])
    assert set(skipped.texts_["language"]) == {"en"}
    assert skipped.clean_counts_ == {"kept": len(data)}
    assert skipped.get_params()["cleaner"] == "NoCleaner()"


def test_no_cleaner_keeps_a_language_column_it_is_given() -> None:
    texts = pd.DataFrame({USER_ID: ["a"], TEXT: ["I think that the pizza and the cheese are what we need"],
                          "language": ["de"]})  # fmt: skip
    assert NoCleaner().transform(texts).texts["language"].tolist() == ["de"]


def test_cleaner_must_be_an_object() -> None:
    # the old string "skip" is gone: NoCleaner() says the same, as NoReducer() does for reduction
    with pytest.raises(ConfigError, match=r"cleaner must be a BaseCleaner.*no-op objects"):
        fit(pipeline(cleaner="skip"))


# --- users ---------------------------------------------------------------------------------------
class FirstTextAggregator(BaseUserAggregator):
    """A user is the vector of their first text; their other texts go to rejects."""

    def fit_transform(self, texts: pd.DataFrame, vectors: np.ndarray) -> UserVectors:
        users = texts[USER_ID].astype(str)
        first = ~users.duplicated().to_numpy()
        order = np.argsort(users[first].to_numpy())
        rejects = make_rejects(texts.loc[~first], stage="users", reason="not the user's first text", field=USER_ID)
        return UserVectors(
            user_ids=users[first].to_numpy()[order],
            vectors=vectors[first][order],
            n_texts=np.ones(int(first.sum()), dtype=np.int64),
            text_mask=first,
            rejects=rejects,
        )


def test_custom_user_aggregator_is_used() -> None:
    data = topic_frame(texts_per_user=3)
    # NoCleaner: every row reaches the users stage, so the rejects can be counted exactly
    pipe = fit(pipeline(cleaner=NoCleaner(), user_aggregator=FirstTextAggregator()), data)
    n_users = data["user"].nunique()
    assert len(pipe.texts_) == n_users and (pipe.user_n_texts_ == 1).all()
    dropped = pipe.rejects_[pipe.rejects_["stage"] == "users"]
    assert len(dropped) == len(data) - n_users and set(dropped["reason"]) == {"not the user's first text"}
    first_texts = pipe.texts_.set_index(USER_ID).loc[pipe.user_ids_, TEXT].tolist()
    np.testing.assert_allclose(pipe.user_embeddings_, HashEmbedder().encode(first_texts), atol=1e-6)


# --- cluster -------------------------------------------------------------------------------------
def test_given_labels_reproduce_the_segmentation_exactly() -> None:
    data = topic_frame()
    users = sorted(data["user"].unique())
    # labels that cut across the topics (a clusterer would never find them), with gaps in the ids,
    # one user unassigned on purpose and one the labels do not name
    given = {u: [0, 2, 5][i % 3] for i, u in enumerate(users)}
    given[users[0]] = -1
    del given[users[1]]
    pipe = fit(pipeline(clusterer=GivenLabels()), data, y=given)

    out = pipe.assignments().set_index(USER_ID)
    expected = pd.Series({u: given.get(u, -1) for u in users})
    assert out["segment_id"].to_dict() == expected.to_dict()
    assert (out["probability"] == np.where(out["segment_id"] >= 0, 1.0, 0.0)).all()
    assert (out["assigned_by"] == np.where(out["segment_id"] >= 0, "given", "noise")).all()
    assert [s.segment_id for s in pipe.segments_.segments] == [0, 2, 5]
    assert {s.segment_id: s.size for s in pipe.segments_.segments} == expected[expected >= 0].value_counts().to_dict()
    assert not pipe.centroids_[[1, 3, 4]].any()  # ids nobody has keep an empty (zero) centroid
    assert pipe.get_params()["clusterer"] == "GivenLabels()"
    assert pipe.manifest_.users["unassigned"] == 2


def test_given_labels_also_take_a_series_and_change_the_run_id() -> None:
    data = topic_frame()
    users = sorted(data["user"].unique())
    one = fit(pipeline(clusterer=GivenLabels()), data, y=pd.Series(0, index=users))
    two = fit(pipeline(clusterer=GivenLabels()), data, y=pd.Series(1, index=users))
    assert set(one.labels_) == {0} and set(two.labels_) == {1}
    assert one.run_id_.split("-")[1] != two.run_id_.split("-")[1]


def test_given_labels_checks_its_input() -> None:
    x = np.eye(4, dtype=np.float32)
    with pytest.raises(ConfigError, match="needs the labels"):
        GivenLabels().fit(x)
    with pytest.raises(ConfigError, match="one per user"):
        GivenLabels().fit(x, np.array([0, 1]))
    with pytest.raises(ConfigError, match="integer"):
        GivenLabels().fit(x, np.array([0.5, 1, 1, 0]))
    with pytest.raises(ConfigError, match="-1 for unassigned"):
        GivenLabels().fit(x, np.array([0, 1, -2, 0]))
    # labels given to a clusterer that does not take them are an error, not silently ignored
    with pytest.raises(ConfigError, match="GivenLabels"):
        HDBSCANClusterer().fit(x, np.array([0, 0, 1, 1]))
    with pytest.raises(ConfigError, match="integers"):
        fit(pipeline(clusterer=GivenLabels()), y={"pizza-0": "big"})


class PlainKMeans(BaseClusterer):
    """Sets only labels_ and probabilities_, and is written as fit(vectors): the old signature."""

    def __init__(self, k: int = 3) -> None:
        self.k = k

    def fit(self, vectors: np.ndarray) -> PlainKMeans:  # type: ignore[override]
        self.labels_ = KMeans(self.k, n_init=10, random_state=0).fit_predict(vectors)
        self.probabilities_ = np.ones(len(vectors))
        return self


def test_clusterer_without_the_optional_outputs_works() -> None:
    pipe = fit(pipeline(clusterer=PlainKMeans()))
    assert adjusted_rand_score(user_topics(pipe), pipe.labels_) == 1.0
    assert set(pipe.assignments()["assigned_by"]) == {"cluster"}
    used = pipe.manifest_.parameters
    assert used["min_cluster_size_used"] is None and used["engine_used"] is None
    quality = pipe.segments_.quality
    assert quality["coverage"] == 1.0 and quality["n_segments"] == 3 and (quality["silhouette"] or 0.0) > 0.5
    # an embedder without a cache reports no hits and no misses
    assert pipe.manifest_.embedding_cache == {"hits": 0, "misses": 0}


# --- describe ------------------------------------------------------------------------------------
class SizeDescriber(BaseDescriber):
    """Names each segment by its id and user count; says nothing about the last segment."""

    def describe(
        self, texts: pd.DataFrame, text_vectors: np.ndarray, user_ids: np.ndarray, labels: np.ndarray,
        centroids: np.ndarray,
    ) -> dict[int, SegmentDescription]:  # fmt: skip
        ids = sorted(int(s) for s in set(labels) if s >= 0)
        return {s: SegmentDescription(keywords=[Keyword(term=f"segment {s} of {(labels == s).sum()}", score=1.0)])
                for s in ids[:-1]}  # fmt: skip


def test_custom_describer_is_used() -> None:
    pipe = fit(pipeline(describer=SizeDescriber()))
    *described, last = pipe.segments_.segments
    for seg in described:
        assert [k.term for k in seg.keywords] == [f"segment {seg.segment_id} of {seg.size}"]
        assert seg.representatives == [] and seg.attributes == {}
    assert last.keywords == [] and last.size > 0  # a segment the describer skipped is still there
    assert pipe.get_params()["describer"] == "SizeDescriber()"


def test_a_stage_of_the_wrong_kind_is_an_error() -> None:
    with pytest.raises(ConfigError, match="describer must be a BaseDescriber"):
        fit(pipeline(describer=SizeDescriber))  # the class, not an object


# --- store ---------------------------------------------------------------------------------------
class MemoryStore(BaseStore):
    """Keeps records in dicts."""

    def __init__(self) -> None:
        self.records: dict[str, dict[str, dict[str, Any]]] = {"texts": {}, "segments": {}, "personas": {}}

    def write_segments(
        self, segment_set: SegmentSet, centroids: np.ndarray, representative_vectors: dict[str, np.ndarray]
    ) -> dict[str, int]:
        self.delete_run(segment_set.run_id, kinds=("texts", "segments"))
        for seg in segment_set.segments:
            self.records["segments"][f"{segment_set.run_id}:{seg.segment_id}"] = {
                "run_id": segment_set.run_id, "segment_id": seg.segment_id, "vector": centroids[seg.segment_id]}  # fmt: skip
            for rank, rep in enumerate(seg.representatives):
                self.records["texts"][f"{segment_set.run_id}:{rep.text_id}"] = {
                    "run_id": segment_set.run_id, "segment_id": seg.segment_id, "rank": rank, "text": rep.text,
                    "vector": representative_vectors[rep.text_id]}  # fmt: skip
        return {"texts": self.count("texts", segment_set.run_id), "segments": self.count("segments", segment_set.run_id)}

    def upsert_personas(self, run_id: str, personas: Sequence[dict[str, Any]], embeddings: np.ndarray) -> int:
        for p, v in zip(personas, embeddings, strict=True):
            self.records["personas"][f"{run_id}:{p['id']}"] = {"run_id": run_id, **p, "vector": v}
        return len(personas)

    def query_texts(
        self, query_vector: np.ndarray, run_id: str, segment_id: int | None = None, n_results: int = 5
    ) -> list[dict[str, Any]]:
        rows = [r for r in self.records["texts"].values()
                if r["run_id"] == run_id and segment_id in (None, r["segment_id"])]  # fmt: skip
        scored = [{**r, "score": float(r["vector"] @ query_vector)} for r in rows]
        return sorted(scored, key=lambda r: -r["score"])[:n_results]

    def segment_texts(self, run_id: str, segment_id: int) -> list[dict[str, Any]]:
        return sorted(self.query_texts(np.zeros(64), run_id, segment_id, n_results=10**6), key=lambda r: r["rank"])

    def count(self, kind: str, run_id: str | None = None) -> int:
        return sum(run_id in (None, r["run_id"]) for r in self.records[kind].values())

    def delete_run(self, run_id: str, kinds: Sequence[str] = ("texts", "segments", "personas")) -> None:
        for kind in kinds:
            self.records[kind] = {k: r for k, r in self.records[kind].items() if r["run_id"] != run_id}


def test_custom_store_receives_the_run(tmp_path: Path) -> None:
    assert issubclass(ChromaStore, BaseStore)
    pipe = fit(pipeline())
    store = MemoryStore()
    out = pipe.save(tmp_path / "run", store=store)  # type: ignore[arg-type]
    n_reps = sum(len(s.representatives) for s in pipe.segments_.segments)
    assert store.count("texts", pipe.run_id_) == n_reps > 0
    assert store.count("segments", pipe.run_id_) == len(pipe.segments_.segments)
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert (manifest["store"]["texts"], manifest["store"]["segments"]) == (n_reps, len(pipe.segments_.segments))
    # what later stages ask of a store: a query lands in the segment whose words it uses
    pizza = pipe.labels_[list(pipe.user_ids_).index("pizza-0")]
    hits = store.query_texts(HashEmbedder().encode(["pizza cheese oven dough"])[0], pipe.run_id_, n_results=1)
    assert hits[0]["segment_id"] == pizza
    assert [r["rank"] for r in store.segment_texts(pipe.run_id_, int(pizza))] == list(range(8))


def test_no_store_skips_the_store_and_readers_know_it(tmp_path: Path) -> None:
    from persona_llm.runs.rundir import RunDir
    from persona_llm.segment.base import NoStore
    from persona_llm.segment.store import store_for_run

    pipe = fit(pipeline())
    out = pipe.save(tmp_path / "run", store=NoStore())
    run = RunDir.open(out)
    assert not (out / "chroma").exists()
    assert run.load_manifest().store["kind"] == "none"
    assert isinstance(store_for_run(run), NoStore)  # the persona writer will not create a store either
    default = pipe.save(tmp_path / "run2")
    assert (default / "chroma").is_dir() and isinstance(store_for_run(RunDir(default)), ChromaStore)
