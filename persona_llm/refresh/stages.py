"""Stage objects that let `SegmentPipeline` write a refreshed run without redoing finished work.

A refreshed run is written by the same pipeline as a build (same describer, store and files), fed with
what the refresh already has: texts that are cleaned (`PreparedTexts` + `NoCleaner`), vectors that are
computed (`KnownVectors`, `KnownUsers`), and segment labels decided by assignment or by matching a
re-clustering (`CarriedLabels`). `NoDescription` skips describing a clustering that is only matched, never written.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from persona_llm.errors import BackendError, ConfigError
from persona_llm.schema.frames import USER_ID, empty_rejects
from persona_llm.segment.base import (
    BaseClusterer,
    BaseDescriber,
    BaseEmbedder,
    BaseIngester,
    BaseUserAggregator,
    IngestResult,
    SegmentDescription,
    UserVectors,
)
from persona_llm.segment.ingest import ColumnMap


class PreparedTexts(BaseIngester):
    """Hands over a texts frame that is already read and cleaned (a refresh's merged texts) as it is."""

    def __init__(self, input_sha256: str, format: str = "refresh") -> None:
        self.input_sha256 = input_sha256
        self.format = format

    def read_file(self, path: Any, columns: ColumnMap, *, max_rows: int | None = None) -> IngestResult:
        raise ConfigError("PreparedTexts only takes a texts frame (SegmentPipeline.fit), not a file")

    def read_frame(self, data: pd.DataFrame, columns: ColumnMap) -> IngestResult:
        return IngestResult(
            texts=data.reset_index(drop=True).copy(), rejects=empty_rejects(), rows_read=len(data),
            file_sha256=self.input_sha256, format=self.format,
        )  # fmt: skip


class KnownVectors(BaseEmbedder):
    """Vectors already computed by the run's model (`model_id`), looked up by text; a text it was not
    given is an error, never silently embedded by something else."""

    def __init__(self, model_id: str, texts: Sequence[str], vectors: np.ndarray) -> None:
        self.model_id_ = model_id
        self.texts = texts
        self.vectors = vectors

    @property
    def model_id(self) -> str:
        return self.model_id_

    def encode(self, texts: Sequence[str], *, kind: str = "passage", show_progress: bool = False) -> np.ndarray:
        index = getattr(self, "index_", None)
        if index is None:
            index = self.index_ = {t: i for i, t in enumerate(self.texts)}
        try:
            rows = [index[t] for t in texts]
        except KeyError as exc:
            raise BackendError(f"no vector known for a text ({str(exc)[:60]}...)") from None
        return np.asarray(self.vectors[rows], dtype=np.float32).reshape(len(rows), self.vectors.shape[1])


class KnownUsers(BaseUserAggregator):
    """User vectors the refresh already aggregated (with the run's own aggregator) from these texts."""

    def __init__(self, users: UserVectors) -> None:
        self.users = users

    def fit_transform(self, texts: pd.DataFrame, vectors: np.ndarray) -> UserVectors:
        ids = np.unique(texts[USER_ID].astype(str).to_numpy())
        if not np.array_equal(ids, np.asarray(self.users.user_ids, dtype=str)):
            raise ConfigError("KnownUsers: the texts are not those the user vectors were aggregated from")
        u = self.users
        return UserVectors(u.user_ids, u.vectors, u.n_texts, np.ones(len(texts), dtype=bool), empty_rejects())


class CarriedLabels(BaseClusterer):
    """The labels a refresh decided (`fit(vectors, y)` keeps `y`), with each user's probability and how
    they got their segment ("cluster", "reassigned", "centroid", "prediction", "noise"...), row-aligned
    with the users the pipeline aggregates (sorted user ids)."""

    def __init__(self, probabilities: np.ndarray, assigned_by: np.ndarray) -> None:
        self.probabilities = probabilities
        self.assigned_by = assigned_by

    def fit(self, vectors: np.ndarray, y: np.ndarray | None = None) -> CarriedLabels:
        if y is None or len(y) != len(vectors) or len(self.probabilities) != len(vectors):
            raise ConfigError(f"CarriedLabels: labels for {len(vectors)} users needed, got {None if y is None else len(y)}")
        self.labels_ = np.asarray(y, dtype=np.int64)
        self.probabilities_ = np.asarray(self.probabilities, dtype=np.float64)
        self.assigned_by_ = np.asarray(self.assigned_by, dtype=str)
        return self


class NoDescription(BaseDescriber):
    """Describes nothing: for a clustering that is matched to the published segments, not written."""

    def describe(
        self, texts: pd.DataFrame, text_vectors: np.ndarray, user_ids: np.ndarray, labels: np.ndarray, centroids: np.ndarray
    ) -> dict[int, SegmentDescription]:
        return {}
