"""The tiny base classes every pipeline stage implements, so any stage can be swapped or skipped.

Style follows scikit-learn and BERTopic: parameters go in the constructor, `__init__` does no work,
learned state ends in an underscore, and a "no-op" implementation of a stage means "skip it".

    stage     base class           default (module)            no-op
    ingest    BaseIngester         TableIngester (ingest)      -
    clean     BaseCleaner          TextCleaner (clean)         NoCleaner
    embed     BaseEmbedder         get_embedder(...) (embed)   - (clustering needs vectors)
    users     BaseUserAggregator   UserAggregator (users)      -
    reduce    BaseReducer          get_reducer("auto")         NoReducer
    cluster   BaseClusterer        HDBSCANClusterer (cluster)  - (GivenLabels keeps a segmentation)
    describe  BaseDescriber        SegmentDescriber (describe) -
    store     BaseStore            ChromaStore (store)         -
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import pandas as pd

from persona_llm.common.vectors import cosine_silhouette
from persona_llm.schema.columns import ColumnMap
from persona_llm.schema.frames import LANGUAGE, TEXT, empty_rejects
from persona_llm.schema.segments import CategoricalSummary, Keyword, NumericSummary, Representative, SegmentSet
from persona_llm.segment.language import detect_language

# The store's three collections (see store.py for their records).
TEXTS = "texts"
SEGMENTS = "segments"
PERSONAS = "personas"


@dataclass
class StageResult:
    """What a row-level stage (ingest, clean) hands on: kept rows, rejected rows, and action counts."""

    texts: pd.DataFrame
    rejects: pd.DataFrame = field(default_factory=empty_rejects)
    counts: dict[str, int] = field(default_factory=dict)


# --- ingest ------------------------------------------------------------------------------------


@dataclass
class IngestResult:
    """Rows read from one file: kept texts, rejected rows (stage "ingest"), and provenance."""

    texts: pd.DataFrame
    rejects: pd.DataFrame
    rows_read: int
    file_sha256: str
    format: str


class BaseIngester(ABC):
    """Reads customer texts into a texts frame (one row per text) plus the rows it rejected, with reasons.

    The texts frame has the columns of `persona_llm.schema.frames` (user_id, text_id, text,
    source_row) and one column per user attribute; `IngestResult` also carries the row count and a
    content hash, which the run id and the manifest record.
    """

    @abstractmethod
    def read_file(self, path: str | Path, columns: ColumnMap, *, max_rows: int | None = None) -> IngestResult:
        """Read the file at `path`, taking user, text, id and attribute columns from `columns`."""

    @abstractmethod
    def read_frame(self, data: pd.DataFrame, columns: ColumnMap) -> IngestResult:
        """Read an in-memory frame with one row per text."""


# --- clean -------------------------------------------------------------------------------------
class BaseCleaner(ABC):
    """Turns raw texts into texts safe and useful to embed (markup, quotes, PII, duplicates...)."""

    @abstractmethod
    def transform(self, texts: pd.DataFrame) -> StageResult:
        """Return cleaned texts (with a `language` column), rejected rows, and counts of each action."""


class NoCleaner(BaseCleaner):
    """Skip cleaning: texts go on unchanged (no redaction, no de-duplication, nothing rejected).

    Only a missing `language` column is filled in: the "auto" embedder choice and the segment
    descriptions read it.
    """

    def transform(self, texts: pd.DataFrame) -> StageResult:
        out = texts.copy()
        if LANGUAGE not in out.columns:
            out[LANGUAGE] = [detect_language(t) for t in out[TEXT].astype(str)]
        return StageResult(texts=out, counts={"kept": len(out)})


# --- embed -------------------------------------------------------------------------------------
class BaseEmbedder(ABC):
    """Maps texts to L2-normalised float32 vectors (n, dimension)."""

    # Cache counts for the manifest, summed over calls: texts served without the model and texts
    # sent to it. An embedder without a cache keeps no count and reports 0 for both.
    hits_: int = 0
    misses_: int = 0

    @property
    @abstractmethod
    def model_id(self) -> str:
        """Identifies the exact model and backend: part of every cache key and of the manifest."""

    @abstractmethod
    def encode(
        self,
        texts: Sequence[str],
        *,
        kind: Literal["passage", "query"] = "passage",
        show_progress: bool = False,
    ) -> np.ndarray:
        """Embed `texts`; `kind` matters for asymmetric models (e5) and is ignored by symmetric ones."""

    def encode_stream(
        self,
        texts: Sequence[str],
        *,
        kind: Literal["passage", "query"] = "passage",
        batch_rows: int = 2048,
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Embed `texts` piece by piece: yields (row positions in `texts`, their vectors) as each piece is
        done, so a caller can keep what was embedded before a failure (the cache does). Here pieces of
        `batch_rows` in order; an embedder spread over workers (persona_llm.scale.RayEmbedder) yields
        them as the workers finish, in any order."""
        step = max(1, int(batch_rows))
        for start in range(0, len(texts), step):
            chunk = list(texts[start : start + step])
            yield np.arange(start, start + len(chunk)), self.encode(chunk, kind=kind)


class EmbedExecutor(Protocol):
    """Where the embedding model runs when not in this process (persona_llm.scale: a Ray cluster)."""

    def embedder(self, embedder: BaseEmbedder) -> BaseEmbedder:
        """`embedder` run there: the same model (same `model_id`, the same vectors)."""
        ...


# --- users -------------------------------------------------------------------------------------
@dataclass
class UserVectors:
    user_ids: np.ndarray  # (n_users,) str, sorted so results do not depend on input order
    vectors: np.ndarray  # (n_users, dim) float32, L2-normalised
    n_texts: np.ndarray  # (n_users,) int
    text_mask: np.ndarray  # (n_texts,) bool: texts whose user was kept
    rejects: pd.DataFrame


class BaseUserAggregator(ABC):
    """Turns text vectors into one vector per user; users it does not keep go to rejects."""

    @abstractmethod
    def fit_transform(self, texts: pd.DataFrame, vectors: np.ndarray) -> UserVectors:
        """`vectors` is row-aligned with `texts`; returns user ids, their unit vectors and text counts."""


# --- reduce ------------------------------------------------------------------------------------
class BaseReducer(ABC):
    """Optional dimensionality reduction before clustering."""

    @abstractmethod
    def fit_transform(self, vectors: np.ndarray) -> np.ndarray: ...


class NoReducer(BaseReducer):
    """Skip reduction: cluster the embeddings as they are."""

    def fit_transform(self, vectors: np.ndarray) -> np.ndarray:
        return vectors


# --- cluster -----------------------------------------------------------------------------------
class BaseClusterer(ABC):
    """Assigns each user vector a segment id (-1: left unassigned) and a membership probability.

    `fit` must set `labels_` and `probabilities_`. The other outputs are optional: the defaults below
    say "not known" (None), derive from `labels_`, or compute what any labelling allows.
    """

    labels_: np.ndarray
    probabilities_: np.ndarray
    # The sizes and the engine a density clusterer actually used, for the manifest.
    min_cluster_size_: int | None = None
    min_samples_: int | None = None
    engine_: str | None = None
    _assigned_by: np.ndarray | None = None

    @abstractmethod
    def fit(self, vectors: np.ndarray, y: np.ndarray | None = None) -> BaseClusterer:
        """Cluster `vectors` (one row per user); `y`: one segment id per user, for clusterers that take labels."""

    @property
    def assigned_by_(self) -> np.ndarray:
        """How each user got its label: "cluster", "noise" (-1), or what the clusterer set ("reassigned"...)."""
        if self._assigned_by is not None:
            return self._assigned_by
        return np.where(np.asarray(self.labels_) >= 0, "cluster", "noise")

    @assigned_by_.setter
    def assigned_by_(self, value: np.ndarray) -> None:
        self._assigned_by = np.asarray(value, dtype=str)

    def quality(self, vectors: np.ndarray) -> dict[str, float | None]:
        """Quality numbers for the segment set: here coverage, noise share, segment count and silhouette."""
        labels = np.asarray(self.labels_)
        return {
            "noise_share": float(np.mean(labels < 0)),
            "coverage": float(np.mean(labels >= 0)),
            "n_segments": float(len(np.unique(labels[labels >= 0]))),
            "silhouette": cosine_silhouette(vectors, labels),
        }


# --- describe ----------------------------------------------------------------------------------
@dataclass
class SegmentDescription:
    """What a describer says about one segment; the pipeline adds sizes, languages and quality."""

    keywords: list[Keyword] = field(default_factory=list)
    representatives: list[Representative] = field(default_factory=list)
    attributes: dict[str, NumericSummary | CategoricalSummary] = field(default_factory=dict)


class BaseDescriber(ABC):
    """Says what each segment is about (keywords), who is in it (attributes), and which texts stand for it."""

    @abstractmethod
    def describe(
        self,
        texts: pd.DataFrame,
        text_vectors: np.ndarray,
        user_ids: np.ndarray,
        labels: np.ndarray,
        centroids: np.ndarray,
    ) -> dict[int, SegmentDescription]:
        """Describe each segment id >= 0 in `labels`.

        `texts` (one row per text, with a `segment_id` column) is row-aligned with `text_vectors`;
        `labels[i]` is the segment of `user_ids[i]` (-1: none); `centroids[s]` is segment s's unit
        centroid of user vectors. A segment missing from the result gets an empty description.
        """


# --- store -------------------------------------------------------------------------------------
class BaseStore(ABC):
    """Where later stages (personas, chat, refresh) find a run's representatives, centroids and personas.

    Every record carries its run id; `kind` is one of TEXTS, SEGMENTS, PERSONAS.
    """

    @abstractmethod
    def write_segments(
        self, segment_set: SegmentSet, centroids: np.ndarray, representative_vectors: dict[str, np.ndarray]
    ) -> dict[str, int]:
        """Replace this run's segments and representative texts; returns record counts by kind."""

    @abstractmethod
    def upsert_personas(self, run_id: str, personas: Sequence[dict[str, Any]], embeddings: np.ndarray) -> int:
        """Store personas (JSON-able dicts with `id`, `segment_id`, `name`) with their vectors; returns how many."""

    @abstractmethod
    def query_texts(
        self, query_vector: np.ndarray, run_id: str, segment_id: int | None = None, n_results: int = 5
    ) -> list[dict[str, Any]]:
        """Representative texts nearest to `query_vector` (record metadata, `text` and `score`), best first."""

    @abstractmethod
    def segment_texts(self, run_id: str, segment_id: int) -> list[dict[str, Any]]:
        """One segment's representative texts, by rank."""

    @abstractmethod
    def count(self, kind: str, run_id: str | None = None) -> int:
        """Records of one kind, of one run or (None) of all runs."""

    @abstractmethod
    def delete_run(self, run_id: str, kinds: Sequence[str] = (TEXTS, SEGMENTS, PERSONAS)) -> None:
        """Remove a run's records of the given kinds."""

    def manifest_record(self) -> dict[str, Any]:
        """What the run's manifest records about this store, so later readers can reopen it."""
        return {"kind": type(self).__name__}

    def close(self) -> None:
        """Release files and connections (a run folder may be renamed right after). Default: nothing to do."""
        return None


class NoStore(BaseStore):
    """Skip the store: the run directory's files only (nothing to query by meaning). The manifest records
    kind "none", so the persona writer and later readers do not open a store either."""

    def write_segments(
        self, segment_set: SegmentSet, centroids: np.ndarray, representative_vectors: dict[str, np.ndarray]
    ) -> dict[str, int]:
        return {TEXTS: 0, SEGMENTS: 0}

    def upsert_personas(self, run_id: str, personas: Sequence[dict[str, Any]], embeddings: np.ndarray) -> int:
        return 0

    def query_texts(
        self, query_vector: np.ndarray, run_id: str, segment_id: int | None = None, n_results: int = 5
    ) -> list[dict[str, Any]]:
        return []

    def segment_texts(self, run_id: str, segment_id: int) -> list[dict[str, Any]]:
        return []

    def count(self, kind: str, run_id: str | None = None) -> int:
        return 0

    def delete_run(self, run_id: str, kinds: Sequence[str] = (TEXTS, SEGMENTS, PERSONAS)) -> None:
        return None

    def manifest_record(self) -> dict[str, Any]:
        return {"kind": "none"}
