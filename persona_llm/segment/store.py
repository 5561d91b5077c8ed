"""Store stage: each segment's representative texts, centroids and personas in Chroma.

One layout that every later stage reads (personas, chat, refresh): three collections per run,
    {prefix}texts-{run_id}     id "{run_id}:{text_id}"    document = redacted text, embedding = text
                               vector, metadata run_id, segment_id, user_id, text_id, language, rank,
                               similarity
    {prefix}segments-{run_id}  id "{run_id}:{segment_id}" document = top keywords, embedding = centroid,
                               metadata run_id, segment_id, size, share, keywords (JSON)
    {prefix}personas-{run_id}  id "{run_id}:{persona_id}" document = persona text, embedding = its
                               vector, metadata run_id, segment_id, persona_id, name, persona (JSON)

A collection per run, not one shared collection filtered by run_id, was measured (bench/bench_store.py,
6 runs x 5,000 texts): nearest-text queries of one run took 2.0 ms p50 in the run's own collection
against 31 ms with a run_id filter on a shared one (15x), and adds were 2.6x faster. It also makes
dropping a run (gc) dropping its collections. The persistent default goes one step further: each run
has its own store folder inside its run directory, so a workspace reader opens the published run's
store and cannot see another run's records. Records still carry run_id, for provenance.

We always pass our own embeddings: Chroma's default embedding function downloads a model, which
cannot work offline, so collections are opened with `embedding_function=None` and queried with
`query_embeddings`, never `query_texts`.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np

from persona_llm.errors import BackendError
from persona_llm.runs.rundir import MANIFEST, STORE, RunDir
from persona_llm.schema.segments import SegmentSet
from persona_llm.segment.base import PERSONAS, SEGMENTS, TEXTS, BaseStore, NoStore

__all__ = ["PERSONAS", "SEGMENTS", "TEXTS", "ChromaStore", "persona_document", "read_copy", "store_for_run", "zero_unused_space"]


class ChromaStore(BaseStore):
    """Chroma `PersistentClient` at `path` by default; `HttpClient` when `url` is given.

    Parameters
    ----------
    path: directory of the persistent store (ignored when url is set).
    url: e.g. "http://127.0.0.1:8000" for a `chroma run` server.
    prefix: collection name prefix, so several projects can share one server.
    max_batch_size: most records per add or upsert call; None: the client's own maximum
        (`get_max_batch_size()`: 5461 for chromadb 1.5, persistent or server), which a larger call
        would fail on. Every write is split under it.
    """

    def __init__(
        self,
        path: str | Path | None = None,
        url: str | None = None,
        prefix: str = "persona_llm_",
        max_batch_size: int | None = None,
    ) -> None:
        self.path = path
        self.url = url
        self.prefix = prefix
        self.max_batch_size = max_batch_size

    @property
    def client(self) -> Any:
        if getattr(self, "client_", None) is None:
            import chromadb
            from chromadb.config import Settings

            settings = Settings(anonymized_telemetry=False)
            try:
                if self.url:
                    parsed = urlparse(self.url)
                    self.client_ = chromadb.HttpClient(
                        host=parsed.hostname or "localhost",
                        port=parsed.port or (443 if parsed.scheme == "https" else 8000),
                        ssl=parsed.scheme == "https",
                        settings=settings,
                    )
                else:
                    if self.path is None:
                        raise BackendError("ChromaStore needs a path or a url")
                    Path(self.path).mkdir(parents=True, exist_ok=True)
                    self.client_ = chromadb.PersistentClient(path=str(self.path), settings=settings)
            except BackendError:
                raise
            except Exception as exc:  # chroma raises many kinds; the user needs one clear line
                where = self.url or self.path
                raise BackendError(f"cannot open the Chroma store at {where}: {exc}") from exc
        return self.client_

    def manifest_record(self) -> dict[str, Any]:
        # A persistent store lives inside its run ("chroma/"), wherever the run folder is moved.
        return {
            "kind": "http" if self.url else "persistent",
            "location": self.url or STORE,
            "collections_prefix": self.prefix,
        }

    def close(self) -> None:
        """Release a persistent store's files (Chroma caches one open system per path), so its folder
        can be renamed or removed; a server connection needs nothing."""
        client = getattr(self, "client_", None)
        if client is None:
            return
        if not self.url:
            with contextlib.suppress(Exception):
                from chromadb.api.client import SharedSystemClient

                SharedSystemClient.clear_system_cache()
        self.client_ = None  # type: ignore[assignment]

    @property
    def location(self) -> str:
        return str(self.url or self.path)

    def collection_name(self, kind: str, run_id: str) -> str:
        # Chroma names: 3-512 characters of [a-zA-Z0-9._-], starting and ending alphanumeric.
        safe = re.sub(r"[^A-Za-z0-9._-]", "_", run_id).strip("._-") or "run"
        return f"{self.prefix}{kind}-{safe}"

    def collection(self, kind: str, run_id: str) -> Any:
        return self.client.get_or_create_collection(
            name=self.collection_name(kind, run_id),
            embedding_function=None,
            configuration={"hnsw": {"space": "cosine", "ef_construction": 200, "ef_search": 100}},
        )

    # --- writing -------------------------------------------------------------------------------
    def write_segments(
        self,
        segment_set: SegmentSet,
        centroids: np.ndarray,
        representative_vectors: dict[str, np.ndarray],
    ) -> dict[str, int]:
        """Replace this run's segments and representative texts; returns record counts."""
        run_id = segment_set.run_id
        self.delete_run(run_id, kinds=(TEXTS, SEGMENTS))
        texts = self.collection(TEXTS, run_id)
        ids: list[str] = []
        docs: list[str] = []
        metas: list[dict[str, Any]] = []
        vecs: list[np.ndarray] = []
        for seg in segment_set.segments:
            for rank, rep in enumerate(seg.representatives):
                ids.append(f"{run_id}:{rep.text_id}")
                docs.append(rep.text)
                metas.append(
                    {
                        "run_id": run_id,
                        "segment_id": seg.segment_id,
                        "user_id": rep.user_id,
                        "text_id": rep.text_id,
                        "language": rep.language,
                        "rank": rank,
                        "similarity": rep.similarity,
                    }
                )
                vecs.append(representative_vectors[rep.text_id])
        self._add(texts, ids, docs, metas, vecs)

        segs = self.collection(SEGMENTS, run_id)
        seg_ids, seg_docs, seg_metas, seg_vecs = [], [], [], []
        for seg in segment_set.segments:
            seg_ids.append(f"{run_id}:{seg.segment_id}")
            seg_docs.append(", ".join(k.term for k in seg.keywords))
            seg_metas.append(
                {
                    "run_id": run_id,
                    "segment_id": seg.segment_id,
                    "size": seg.size,
                    "share": seg.share,
                    "keywords": json.dumps([k.term for k in seg.keywords], ensure_ascii=False),
                }
            )
            seg_vecs.append(centroids[seg.segment_id])
        self._add(segs, seg_ids, seg_docs, seg_metas, seg_vecs)
        return {"texts": len(ids), "segments": len(seg_ids)}

    def upsert_personas(self, run_id: str, personas: Sequence[dict[str, Any]], embeddings: np.ndarray) -> int:
        """Store personas (JSON-able dicts with `id`, `segment_id`, `name`) with their vectors."""
        coll = self.collection(PERSONAS, run_id)
        ids, docs, metas = [], [], []
        for p in personas:
            ids.append(f"{run_id}:{p['id']}")
            docs.append(persona_document(p))
            metas.append(
                {
                    "run_id": run_id,
                    "segment_id": int(p["segment_id"]),
                    "persona_id": str(p["id"]),
                    "name": str(p.get("name", "")),
                    "persona": json.dumps(p, ensure_ascii=False, default=str),
                }
            )
        vecs = np.asarray(embeddings, np.float32)
        for i, j in self._batches(len(ids)):
            coll.upsert(ids=ids[i:j], documents=docs[i:j], metadatas=metas[i:j], embeddings=vecs[i:j])
        return len(ids)

    def records(self, kind: str, run_id: str) -> dict[str, list[Any]] | None:
        """Every record of one of the run's collections (ids, documents, metadatas, embeddings), or None
        when the collection does not exist (reading must not create it)."""
        name = self.collection_name(kind, run_id)
        if name not in self._collection_names():
            return None
        got = self.client.get_collection(name).get(include=["documents", "metadatas", "embeddings"])
        return {k: list(got[k]) for k in ("ids", "documents", "metadatas", "embeddings")}

    def add_records(self, kind: str, run_id: str, records: dict[str, list[Any]]) -> int:
        """Add records as `records` returns them (into this store's collection of that kind and run)."""
        self._add(
            self.collection(kind, run_id), list(records["ids"]), list(records["documents"]),
            list(records["metadatas"]), list(records["embeddings"]),
        )  # fmt: skip
        return len(records["ids"])

    def delete_run(self, run_id: str, kinds: Sequence[str] = (TEXTS, SEGMENTS, PERSONAS)) -> None:
        for kind in kinds:
            with contextlib.suppress(Exception):  # chroma raises its own NotFoundError when absent
                self.client.delete_collection(self.collection_name(kind, run_id))

    def batch_size(self) -> int:
        """Records per write call: the client's maximum, or `max_batch_size` when that is smaller."""
        cached = getattr(self, "batch_size_", None)
        if cached is None:
            client = self.client  # a store that cannot be opened says so itself
            try:
                limit = int(client.get_max_batch_size())
            except Exception as exc:
                raise BackendError(f"the Chroma store at {self.location} did not give its batch size: {exc}") from exc
            if self.max_batch_size is not None:
                if int(self.max_batch_size) < 1:
                    raise BackendError(f"max_batch_size must be >= 1, not {self.max_batch_size}")
                limit = min(limit, int(self.max_batch_size))
            cached = self.batch_size_ = limit
        return int(cached)

    def _batches(self, n: int) -> list[tuple[int, int]]:
        step = self.batch_size() if n else 1
        return [(i, min(i + step, n)) for i in range(0, n, step)]

    def _add(self, coll: Any, ids: list[str], docs: list[str], metas: list[dict[str, Any]], vecs: list[np.ndarray]) -> None:
        arr = np.asarray(vecs, dtype=np.float32)
        for i, j in self._batches(len(ids)):
            coll.add(ids=ids[i:j], documents=docs[i:j], metadatas=metas[i:j], embeddings=arr[i:j])

    # --- reading -------------------------------------------------------------------------------
    def query_texts(
        self, query_vector: np.ndarray, run_id: str, segment_id: int | None = None, n_results: int = 5
    ) -> list[dict[str, Any]]:
        """Representative texts nearest in meaning to `query_vector`, optionally within one segment."""
        where = {"segment_id": int(segment_id)} if segment_id is not None else None
        res = self.collection(TEXTS, run_id).query(
            query_embeddings=np.asarray(query_vector, np.float32).reshape(1, -1),
            n_results=n_results,
            where=where,
            include=["documents", "metadatas", "distances"],
        )
        out = []
        for doc, meta, dist in zip(res["documents"][0], res["metadatas"][0], res["distances"][0], strict=True):
            # `score` is the query's cosine similarity; metadata `similarity` is to the segment centroid.
            out.append({**dict(meta), "text": doc, "score": 1.0 - float(dist)})
        return out

    def segment_texts(self, run_id: str, segment_id: int) -> list[dict[str, Any]]:
        res = self.collection(TEXTS, run_id).get(
            where={"segment_id": int(segment_id)}, include=["documents", "metadatas"]
        )
        rows = [{"text": d, **dict(m)} for d, m in zip(res["documents"], res["metadatas"], strict=True)]
        return sorted(rows, key=lambda r: r["rank"])

    def count(self, kind: str, run_id: str | None = None) -> int:
        prefix = f"{self.prefix}{kind}-"
        names = [n for n in self._collection_names() if n.startswith(prefix)]
        if run_id is not None:
            wanted = self.collection_name(kind, run_id)
            names = [n for n in names if n == wanted]  # counting must not create an empty collection
        return sum(int(self.client.get_collection(n).count()) for n in names)

    def _collection_names(self) -> list[str]:
        # chromadb 1.x lists names; older versions listed collection objects
        return [c if isinstance(c, str) else c.name for c in self.client.list_collections()]


@contextlib.contextmanager
def read_copy(store: ChromaStore, scratch: Path) -> Iterator[ChromaStore | None]:
    """The store to read a run's records from without changing the run: Chroma writes to a persistent
    store's files even when only reading, so a persistent store is read through a copy at `scratch`
    (removed afterwards; None when the run has no store folder). A server store is read as it is."""
    if store.url:
        try:
            yield store
        finally:
            store.close()
        return
    if store.path is None or not Path(store.path).is_dir():
        yield None
        return
    shutil.copytree(store.path, scratch)
    copy = ChromaStore(path=scratch, prefix=store.prefix)
    try:
        yield copy
    finally:
        copy.close()
        shutil.rmtree(scratch, ignore_errors=True)


def zero_unused_space(store_path: str | Path) -> int:
    """Overwrite the bytes of a closed persistent store that hold no record, so no copy of anything that
    was in the writing process's memory stays on disk (`persona-llm forget` relies on this).

    Chroma writes each HNSW index file (`<segment>/data_level0.bin`) at its full capacity, and the slots
    no element uses carry whatever memory the process held there: seen holding another run's record of a
    forgotten user, text included. The header gives the used part (format 1: int32 version, then
    offsetLevel0, max_elements, cur_element_count, size_data_per_element as uint64); the rest is zeroed.
    SQLite may leave stale bytes in free page space too: the database is vacuumed with secure_delete on
    (Chroma's own `chroma utils vacuum` does the VACUUM). Returns the index bytes zeroed."""
    import sqlite3
    import struct

    root = Path(store_path)
    zeroed = 0
    for header in root.glob("*/header.bin"):
        data = header.with_name("data_level0.bin")
        raw = header.read_bytes()
        if len(raw) < 36 or not data.is_file():
            continue
        version, _offset, capacity, count, per_element = struct.unpack_from("<iQQQQ", raw, 0)
        size = data.stat().st_size
        if version != 1 or per_element <= 0 or capacity * per_element != size or count > capacity:
            raise BackendError(f"{data}: not the HNSW index layout this version knows; cannot clear its unused space")
        used = count * per_element
        with open(data, "r+b") as fh:
            fh.seek(used)
            remaining = size - used
            while remaining > 0:
                step = min(remaining, 1 << 20)
                fh.write(bytes(step))
                remaining -= step
            fh.flush()
            os.fsync(fh.fileno())
        zeroed += size - used
    database = root / "chroma.sqlite3"
    if database.is_file():
        conn = sqlite3.connect(database)
        try:
            conn.execute("PRAGMA secure_delete = ON")
            conn.execute("VACUUM")
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            conn.close()
    return zeroed


def store_for_run(run: RunDir) -> BaseStore:
    """The store a run was written to, as its manifest records: none, its own persistent folder, or a
    server."""
    info = run.load_manifest().store if run.has(MANIFEST) else {}
    prefix = str(info.get("collections_prefix", "persona_llm_"))
    if info.get("kind") == "none":
        return NoStore()
    if info.get("kind") == "http":
        return ChromaStore(url=str(info.get("location")), prefix=prefix)
    return ChromaStore(path=run.store_path, prefix=prefix)


def persona_document(p: dict[str, Any]) -> str:
    """The text a persona is embedded and searched by: who they are and what they want."""
    parts = [str(p.get("name", "")), str(p.get("tagline", "")), str(p.get("summary", ""))]
    for key in ("goals", "pain_points", "interests"):
        val = p.get(key)
        if isinstance(val, list):
            parts.append("; ".join(str(v if not isinstance(v, dict) else v.get("text", v)) for v in val))
    return "\n".join(x for x in parts if x)
