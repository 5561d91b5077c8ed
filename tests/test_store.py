"""The Chroma store: our own vectors in, queries by meaning and by segment out, no network."""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import pytest

from persona_llm.schema.segments import Keyword, Representative, Segment, SegmentQuality, SegmentSet
from persona_llm.segment.store import PERSONAS, SEGMENTS, TEXTS, ChromaStore


def _segment_set(run_id: str = "run-1") -> tuple[SegmentSet, np.ndarray, dict[str, np.ndarray]]:
    eye = np.eye(4, dtype=np.float32)
    segs, vecs = [], {}
    for s in range(2):
        reps = []
        for j in range(3):
            tid = f"t{s}{j}"
            v = eye[s] + 0.1 * eye[2 + j % 2]
            vecs[tid] = v / np.linalg.norm(v)
            reps.append(Representative(text_id=tid, user_id=f"u{s}{j}", text=f"text {tid}", language="en",
                                       similarity=0.9))
        segs.append(Segment(segment_id=s, size=3, share=0.5, n_texts=3, keywords=[Keyword(term=f"kw{s}", score=1.0)],
                            representative_text_ids=[r.text_id for r in reps], representatives=reps,
                            quality=SegmentQuality(mean_probability=1.0, cohesion=0.9)))
    ss = SegmentSet(run_id=run_id, n_users=6, n_assigned=6, coverage=1.0, noise_share=0.0, segments=segs)
    return ss, eye[:2].copy(), vecs


@pytest.fixture()
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    real = socket.socket.connect

    def guarded(self: socket.socket, addr: object) -> object:
        host = addr[0] if isinstance(addr, tuple) else str(addr)
        if isinstance(host, str) and not (host.startswith("127.") or host in ("localhost", "::1") or "/" in host):
            raise OSError(f"network access attempted to {host}")
        return real(self, addr)  # type: ignore[arg-type]

    monkeypatch.setattr(socket.socket, "connect", guarded)


def test_write_query_filter_and_rewrite(tmp_path: Path, no_network: None) -> None:
    store = ChromaStore(path=tmp_path / "chroma")
    ss, cents, vecs = _segment_set()
    counts = store.write_segments(ss, cents, vecs)
    assert counts == {"texts": 6, "segments": 2}
    hits = store.query_texts(np.array([1, 0, 0, 0], np.float32), run_id="run-1", n_results=3)
    assert {h["segment_id"] for h in hits} == {0}
    assert hits[0]["score"] == pytest.approx(0.995, abs=1e-3) and hits[0]["text"].startswith("text t0")
    only1 = store.query_texts(np.array([1, 0, 0, 0], np.float32), run_id="run-1", segment_id=1, n_results=2)
    assert {h["segment_id"] for h in only1} == {1}
    rows = store.segment_texts("run-1", 0)
    assert [r["rank"] for r in rows] == [0, 1, 2] and rows[0]["user_id"] == "u00"
    # a second write of the same run replaces, a different run is kept apart
    store.write_segments(ss, cents, vecs)
    ss2, _, _ = _segment_set("run-2")
    store.write_segments(ss2, cents, vecs)
    assert store.count(TEXTS, "run-1") == 6 and store.count(TEXTS, "run-2") == 6
    assert store.count(SEGMENTS) == 4
    n = store.upsert_personas("run-1", [{"id": "p0", "segment_id": 0, "name": "Ana", "summary": "likes tea"}],
                              np.array([[1, 0, 0, 0]], np.float32))
    assert n == 1 and store.count(PERSONAS, "run-1") == 1
    store.delete_run("run-1")
    assert store.count(TEXTS, "run-1") == 0 and store.count(TEXTS, "run-2") == 6


def test_persistent_store_survives_reopen(tmp_path: Path) -> None:
    ss, cents, vecs = _segment_set()
    ChromaStore(path=tmp_path / "c").write_segments(ss, cents, vecs)
    from chromadb.api.client import SharedSystemClient

    SharedSystemClient.clear_system_cache()
    assert ChromaStore(path=tmp_path / "c").count(TEXTS, "run-1") == 6
