"""Embed one text column of a file too large to hold as Python strings: read in chunks, vectors to disk.

The input is read `chunk_rows` at a time through a pyarrow dataset (Parquet, CSV or JSON lines, gzip too,
or a folder of such files); each chunk goes through the content-hash cache first and only its misses reach
the model, here or on Ray (`executor`); vectors land in an `.npy` file in file order, written through a
memory map (so neither the texts nor the vectors of the whole file are ever in memory) and moved into
place only when complete.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from persona_llm.errors import ConfigError, InputError
from persona_llm.segment.base import BaseEmbedder, EmbedExecutor
from persona_llm.segment.embed import CachedEmbedder, EmbeddingCache, get_embedder

_FORMATS = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".jsonl": "json", ".ndjson": "json", ".json": "json"}


@dataclass(frozen=True)
class EmbedFileResult:
    """Where the vectors went and what it took: rows, the model, cache hits and misses (texts)."""

    path: Path
    rows: int
    dimension: int
    model_id: str
    hits: int
    misses: int


def _format(source: Path) -> str:
    files = sorted(p for p in source.rglob("*") if p.is_file()) if source.is_dir() else [source]
    kinds = set()
    for f in files:
        suffixes = [s.lower() for s in f.suffixes if s.lower() != ".gz"]
        if suffixes and suffixes[-1] in _FORMATS:
            kinds.add(_FORMATS[suffixes[-1]])
    if len(kinds) != 1:
        raise InputError("give Parquet, CSV or JSON-lines files (one format; gzip too)", path=str(source))
    return kinds.pop()


def embed_file(
    source: str | Path,
    text_column: str,
    out: str | Path,
    *,
    embedder: BaseEmbedder | str = "minilm",
    executor: EmbedExecutor | None = None,
    cache_dir: str | Path | None = None,
    chunk_rows: int = 100_000,
    kind: Literal["passage", "query"] = "passage",
) -> EmbedFileResult:
    """Embed `text_column` of `source` into the float32 `.npy` file `out` (row i = the file's row i).

    `embedder`: a name for `get_embedder` or an object; `executor`: where the model runs (None: here; a
    RayExecutor: Ray Data actors); `cache_dir`: the embedding cache (None: the user's; "none": no cache);
    `chunk_rows`: texts read, looked up and embedded at a time. A missing or empty text is an error that
    names the file and the row.
    """
    import pyarrow.dataset as ds

    source, out = Path(source), Path(out)
    if chunk_rows < 1:
        raise ConfigError(f"chunk_rows must be >= 1, not {chunk_rows}")
    if not source.exists():
        raise InputError("input not found", path=str(source))
    dataset = ds.dataset(str(source), format=_format(source))
    if text_column not in dataset.schema.names:
        raise InputError(f"no column {text_column!r} (columns: {', '.join(dataset.schema.names)})", path=str(source))
    model = get_embedder(embedder) if isinstance(embedder, str) else embedder
    if executor is not None:
        model = executor.embedder(model)
    if cache_dir != "none":
        model = CachedEmbedder(model, EmbeddingCache(cache_dir) if cache_dir else EmbeddingCache())
    n = int(dataset.count_rows())
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    vectors: Any = None
    row = 0
    try:
        for batch in dataset.to_batches(columns=[text_column], batch_size=int(chunk_rows)):
            texts = batch.column(0).to_pylist()
            for i, text in enumerate(texts):
                if not isinstance(text, str) or not text.strip():
                    raise InputError(f"row {row + i + 1}: column {text_column!r} is empty", path=str(source))
            chunk = model.encode(texts, kind=kind)
            if vectors is None:
                vectors = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(n, chunk.shape[1]))
            vectors[row : row + len(texts)] = chunk
            row += len(texts)
        if vectors is None:
            raise InputError("no rows to embed", path=str(source))
        vectors.flush()
        dimension = int(vectors.shape[1])
        del vectors
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return EmbedFileResult(out, row, dimension, model.model_id, int(model.hits_), int(model.misses_))
