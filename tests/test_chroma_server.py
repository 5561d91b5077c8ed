"""A `chroma run` server as the store: a segment run written there holds exactly what the embedded
(persistent) store holds, collection by collection; every write is split under the server's maximum
batch size (or a smaller one given), so a run of any size can be stored."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from persona_llm import workflows
from persona_llm.runs.rundir import RunDir
from persona_llm.segment.base import PERSONAS, SEGMENTS, TEXTS
from persona_llm.segment.pipeline import SegmentPipeline
from persona_llm.segment.store import ChromaStore, store_for_run
from tests.chroma_server import ChromaServer
from tests.run_store_data import customer_texts


@pytest.fixture(scope="module")
def chroma_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChromaServer]:
    with ChromaServer(tmp_path_factory.mktemp("chroma-server") / "store") as server:
        yield server


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory) -> SegmentPipeline:
    cache = tmp_path_factory.mktemp("embedding-cache")
    return SegmentPipeline(cache_dir=cache).fit(customer_texts(), user_column="user_id", text_column="text")


def _records(store: ChromaStore, kind: str, run_id: str) -> dict[str, Any]:
    got = store.collection(kind, run_id).get(include=["documents", "metadatas", "embeddings"])
    order = np.argsort(got["ids"])
    return {
        "ids": [got["ids"][i] for i in order],
        "documents": [got["documents"][i] for i in order],
        "metadatas": [got["metadatas"][i] for i in order],
        "embeddings": np.asarray(got["embeddings"], dtype=np.float32)[order],
    }


def test_a_run_on_the_server_equals_the_embedded_store(
    fitted: SegmentPipeline, chroma_server: ChromaServer, tmp_path: Path
) -> None:
    embedded_run = Path(fitted.save(tmp_path / "embedded"))
    server_store = ChromaStore(url=chroma_server.url, prefix="equal_")
    server_run = Path(fitted.save(tmp_path / "server", store=server_store))
    run_id = fitted.run_id_

    # each run says where its store is, and the reader opens that one
    on_server = store_for_run(RunDir.open(server_run))
    embedded = store_for_run(RunDir.open(embedded_run))
    assert isinstance(on_server, ChromaStore) and on_server.url == chroma_server.url and on_server.prefix == "equal_"
    assert isinstance(embedded, ChromaStore) and embedded.url is None

    for kind in (TEXTS, SEGMENTS):
        assert on_server.collection_name(kind, run_id).removeprefix("equal_") == embedded.collection_name(
            kind, run_id
        ).removeprefix("persona_llm_")
        a, b = _records(embedded, kind, run_id), _records(on_server, kind, run_id)
        assert len(a["ids"]) > 0
        assert a["ids"] == b["ids"] and a["documents"] == b["documents"] and a["metadatas"] == b["metadatas"]
        assert np.allclose(a["embeddings"], b["embeddings"], atol=1e-6)
    # queries answer the same
    query = fitted.centroids_[0]
    assert [r["text_id"] for r in on_server.query_texts(query, run_id, n_results=5)] == [
        r["text_id"] for r in embedded.query_texts(query, run_id, n_results=5)
    ]
    embedded.close()


def test_writes_are_split_under_the_batch_limit(
    fitted: SegmentPipeline, chroma_server: ChromaServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = ChromaStore(url=chroma_server.url, prefix="batch_", max_batch_size=4)
    assert store.batch_size() == 4
    calls: list[tuple[str, int]] = []
    real_collection = ChromaStore.collection

    class Counting:
        def __init__(self, inner: Any) -> None:
            self.inner = inner

        def add(self, **kw: Any) -> None:
            calls.append(("add", len(kw["ids"])))
            self.inner.add(**kw)

        def upsert(self, **kw: Any) -> None:
            calls.append(("upsert", len(kw["ids"])))
            self.inner.upsert(**kw)

    monkeypatch.setattr(ChromaStore, "collection", lambda self, kind, run_id: Counting(real_collection(self, kind, run_id)))
    counts = store.write_segments(fitted.segments_, fitted.centroids_, fitted._representative_vectors())
    adds = [n for op, n in calls if op == "add"]
    assert sum(adds) == counts["texts"] + counts["segments"] and max(adds) == 4 and len(adds) > 2
    personas = [{"id": f"p{i}", "segment_id": i, "name": f"P {i}"} for i in range(5)]
    store.upsert_personas("batch-run", personas, np.eye(5, 8, dtype=np.float32))
    assert [n for op, n in calls if op == "upsert"] == [4, 1]
    monkeypatch.undo()
    assert store.count(TEXTS, fitted.run_id_) == counts["texts"]
    assert store.count(PERSONAS, "batch-run") == 5


def test_more_records_than_the_server_takes_at_once(chroma_server: ChromaServer) -> None:
    store = ChromaStore(url=chroma_server.url, prefix="big_")
    limit = store.batch_size()
    n = limit + 7
    ids = [f"r{i}" for i in range(n)]
    rng = np.random.default_rng(0)
    vectors = [v for v in rng.normal(size=(n, 4)).astype(np.float32)]
    raw = store.client.get_or_create_collection("big_raw", embedding_function=None)
    with pytest.raises(Exception, match="(?i)batch size"):  # what an unsplit write would meet
        raw.add(ids=ids, embeddings=np.asarray(vectors), documents=ids)
    coll = store.collection(TEXTS, "big")
    store._add(coll, ids, ids, [{"i": i} for i in range(n)], vectors)
    assert coll.count() == n


def test_a_segment_workflow_writes_to_the_server_from_the_config(
    chroma_server: ChromaServer, tmp_path: Path
) -> None:
    data = tmp_path / "texts.csv"
    customer_texts(users_per_topic=8).to_csv(data, index=False)
    config = tmp_path / "config.toml"
    config.write_text(
        f'[columns]\nuser = "user_id"\ntext = "text"\n[store]\nurl = "{chroma_server.url}"\n'
        f'[pipeline]\ncache_dir = "{tmp_path / "cache"}"\n'
    )
    cfg = workflows.load_config(config)
    result = workflows.segment(data, tmp_path / "ws", columns=workflows.column_map(cfg), config=cfg)
    store = store_for_run(result.run)
    assert isinstance(store, ChromaStore) and store.url == chroma_server.url
    assert store.count(TEXTS, result.run.run_id) == result.run.load_manifest().store["texts"] > 0
