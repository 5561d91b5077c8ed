"""`RayEmbedder`: an embedder's `encode` run by Ray Data `map_batches` over actors that load the model once.

The driver keeps the content-hash cache (the pipeline wraps this embedder in `CachedEmbedder`, which
looks every text up first and sends only misses here) and hands the misses to Ray as Arrow blocks of
`embed_block_rows` texts. Vectors stream back block by block as actors finish them, each with its row
positions, and go into the cache at once: a run stopped half-way keeps what was embedded.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Literal

import numpy as np

from persona_llm.errors import BackendError, ConfigError
from persona_llm.scale.session import RaySession
from persona_llm.segment.base import BaseEmbedder


class EmbedBatches:
    """The Ray Data actor class: loads the model on its first batch and keeps it for every later one."""

    def __init__(self, embedder: BaseEmbedder, kind: Literal["passage", "query"], threads: int, gpu: bool) -> None:
        # `embedder` arrives as its parameters (embedders pickle without their loaded model).
        if gpu and getattr(embedder, "device", None) == "cpu":
            embedder.device = "cuda"  # type: ignore[attr-defined]
        if getattr(embedder, "num_threads", "absent") is None:
            embedder.num_threads = threads  # type: ignore[attr-defined]  # one actor, its own cores
        self.embedder = embedder
        self.kind = kind

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        vectors = self.embedder.encode([str(t) for t in batch["text"]], kind=self.kind)
        return {"row": np.asarray(batch["row"], dtype=np.int64), "vector": np.asarray(vectors, dtype=np.float32)}


class RayEmbedder(BaseEmbedder):
    """Runs `embedder` on Ray: same `model_id` (and so the same cache keys) as `embedder` itself.

    Parameters
    ----------
    embedder: the model (a SentenceTransformerEmbedder, E5Embedder...); its loaded weights never travel.
    executor: the RaySession whose settings size the actors (embed_actors, embed_cpus, embed_gpus,
        embed_batch_size, embed_block_rows).
    """

    def __init__(self, embedder: BaseEmbedder, executor: RaySession) -> None:
        self.embedder = embedder
        self.executor = executor

    def __repr__(self) -> str:
        return f"RayEmbedder({self.embedder!r})"

    @property
    def model_id(self) -> str:
        return self.embedder.model_id

    @property
    def dimension(self) -> int:
        return int(getattr(self.embedder, "dimension"))  # noqa: B009 - not part of BaseEmbedder

    def encode(
        self,
        texts: Sequence[str],
        *,
        kind: Literal["passage", "query"] = "passage",
        show_progress: bool = False,
    ) -> np.ndarray:
        """Embed `texts` on the cluster; rows in input order."""
        if isinstance(texts, str):
            raise TypeError("encode() takes a sequence of texts, not a single string")
        items = list(texts)
        if not items:
            return self.embedder.encode([], kind=kind)
        out: np.ndarray | None = None
        seen = 0
        for rows, vectors in self.encode_stream(items, kind=kind):
            if out is None:
                out = np.empty((len(items), vectors.shape[1]), dtype=np.float32)
            out[rows] = vectors
            seen += len(rows)
        if out is None or seen != len(items):
            raise BackendError(f"Ray returned {seen} vectors for {len(items)} texts")
        return out

    def encode_stream(
        self,
        texts: Sequence[str],
        *,
        kind: Literal["passage", "query"] = "passage",
        batch_rows: int = 2048,
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(row positions, vectors) per block as the actors finish them. `batch_rows` is the local
        embedders' piece size; here the executor's `embed_block_rows` sets the blocks."""
        if kind not in ("passage", "query"):
            raise ConfigError(f"embedding kind must be 'passage' or 'query', not {kind!r}")
        n = len(texts)
        if n == 0:
            return
        import pyarrow as pa

        ray = self.executor.start()
        s = self.executor.settings
        step = int(s.embed_block_rows)
        blocks = [
            pa.table(
                {
                    "row": pa.array(np.arange(i, min(i + step, n), dtype=np.int64)),
                    "text": pa.array([str(t) for t in texts[i : i + step]], type=pa.large_string()),
                }
            )
            for i in range(0, n, step)
        ]
        actors = self._actor_count(len(blocks))
        remote: dict[str, Any] = {"num_cpus": s.embed_cpus}
        if s.embed_gpus > 0:
            remote["num_gpus"] = s.embed_gpus
        dataset = ray.data.from_arrow(blocks).map_batches(
            EmbedBatches,
            fn_constructor_kwargs={
                "embedder": self.embedder,
                "kind": kind,
                "threads": max(1, int(s.embed_cpus)),
                "gpu": s.embed_gpus > 0,
            },
            batch_size=int(s.embed_batch_size),
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=actors),
            **remote,
        )
        for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
            rows = np.asarray(batch["row"], dtype=np.int64)
            vectors = np.asarray(batch["vector"], dtype=np.float32).reshape(len(rows), -1)
            yield rows, vectors

    def _actor_count(self, n_blocks: int) -> int:
        """The configured count, else as many as the cluster's CPUs (or GPUs) hold; never more than blocks."""
        s = self.executor.settings
        if s.embed_actors is not None:
            wanted = int(s.embed_actors)
        else:
            resources = self.executor.cluster_resources()
            if s.embed_gpus > 0:
                wanted = int(resources.get("GPU", 0.0) // s.embed_gpus)
                if wanted < 1:
                    raise ConfigError(f"embed_gpus={s.embed_gpus}, but the Ray cluster has no GPU")
            else:
                wanted = int(resources.get("CPU", 1.0) // s.embed_cpus)
        return max(1, min(wanted, n_blocks))
