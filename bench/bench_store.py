"""How readers see only the published run in Chroma: one collection shared by all runs with a `run_id`
filter, or a collection (here: a store) per run. Prints a table; the ratio is what decides.

    python bench/bench_store.py [--runs 6] [--per-run 5000] [--queries 200]

Both layouts hold the same records (random unit vectors, 384-d like MiniLM, metadata as the store
writes it); queries ask for the 5 nearest texts of the published run, with and without a segment filter.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from persona_llm.schema.manifest import cpu_description  # noqa: E402


def cpu_line() -> str:
    return cpu_description()


def records(run: int, n: int, rng: np.random.Generator) -> tuple[list[str], np.ndarray, list[dict[str, object]]]:
    vecs = rng.normal(size=(n, 384)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    ids = [f"run{run}:t{i}" for i in range(n)]
    metas: list[dict[str, object]] = [{"run_id": f"run{run}", "segment_id": int(i % 20), "rank": i} for i in range(n)]
    return ids, vecs, metas


def add(coll: object, ids: list[str], vecs: np.ndarray, metas: list[dict[str, object]]) -> None:
    for i in range(0, len(ids), 5000):
        coll.add(ids=ids[i : i + 5000], embeddings=vecs[i : i + 5000], metadatas=metas[i : i + 5000])  # type: ignore[attr-defined]


def timed_queries(coll: object, queries: np.ndarray, where: dict[str, object] | None) -> list[float]:
    out = []
    for q in queries:
        t0 = time.perf_counter()
        coll.query(query_embeddings=q.reshape(1, -1), n_results=5, where=where)  # type: ignore[attr-defined]
        out.append((time.perf_counter() - t0) * 1000)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=6)
    ap.add_argument("--per-run", type=int, default=5000)
    ap.add_argument("--queries", type=int, default=200)
    args = ap.parse_args()

    import chromadb
    from chromadb.config import Settings

    console = Console()
    console.print(f"CPU: {cpu_line()} · chromadb {chromadb.__version__}")
    rng = np.random.default_rng(0)
    data = [records(r, args.per_run, rng) for r in range(args.runs)]
    queries = rng.normal(size=(args.queries, 384)).astype(np.float32)
    published = f"run{args.runs - 1}"
    config = {"hnsw": {"space": "cosine", "ef_construction": 200, "ef_search": 100}}
    rows = []
    tmp = Path(tempfile.mkdtemp(prefix="bench-store-"))
    try:
        client = chromadb.PersistentClient(path=str(tmp / "shared"), settings=Settings(anonymized_telemetry=False))
        shared = client.get_or_create_collection("texts", embedding_function=None, configuration=config)  # type: ignore[arg-type]
        t0 = time.perf_counter()
        for ids, vecs, metas in data:
            add(shared, ids, vecs, metas)
        shared_add = time.perf_counter() - t0
        run_only = timed_queries(shared, queries, {"run_id": published})
        run_segment = timed_queries(shared, queries, {"$and": [{"run_id": published}, {"segment_id": 3}]})
        rows.append(("one collection, run_id filter", shared_add, run_only, run_segment))

        per_run_add = 0.0
        colls = []
        for r, (ids, vecs, metas) in enumerate(data):
            c = chromadb.PersistentClient(path=str(tmp / f"run{r}"), settings=Settings(anonymized_telemetry=False))
            coll = c.get_or_create_collection("texts", embedding_function=None, configuration=config)  # type: ignore[arg-type]
            t0 = time.perf_counter()
            add(coll, ids, vecs, metas)
            per_run_add += time.perf_counter() - t0
            colls.append(coll)
        own = colls[-1]
        run_only = timed_queries(own, queries, None)
        run_segment = timed_queries(own, queries, {"segment_id": 3})
        rows.append(("a store per run (no run filter)", per_run_add, run_only, run_segment))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    table = Table(title=f"{args.runs} runs x {args.per_run} texts; query: 5 nearest of the published run")
    for col in ("layout", "add s", "query p50 ms", "p95", "+segment filter p50 ms", "p95"):
        table.add_column(col, justify="left" if col == "layout" else "right")
    for name, add_s, a, b in rows:
        table.add_row(
            name, f"{add_s:.1f}", f"{statistics.median(a):.1f}", f"{np.percentile(a, 95):.1f}",
            f"{statistics.median(b):.1f}", f"{np.percentile(b, 95):.1f}",
        )  # fmt: skip
    console.print(table)
    shared_p50, own_p50 = statistics.median(rows[0][2]), statistics.median(rows[1][2])
    console.print(f"filtered shared collection / own store, query p50: {shared_p50 / max(own_p50, 1e-9):.1f}x")


if __name__ == "__main__":
    main()
