"""The tiny base classes every pipeline stage implements, so any stage can be swapped or skipped.

Style follows scikit-learn and BERTopic: parameters go in the constructor, `__init__` does no work,
learned state ends in an underscore, and a "no-op" implementation of a stage means "skip it".
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pandas as pd

from persona_llm.schema.frames import empty_rejects


@dataclass
class StageResult:
    """What a row-level stage (ingest, clean) hands on: kept rows, rejected rows, and action counts."""

    texts: pd.DataFrame
    rejects: pd.DataFrame = field(default_factory=empty_rejects)
    counts: dict[str, int] = field(default_factory=dict)


class BaseCleaner(ABC):
    """Turns raw texts into texts safe and useful to embed (markup, quotes, PII, duplicates...)."""

    @abstractmethod
    def transform(self, texts: pd.DataFrame) -> StageResult:
        """Return cleaned texts (with a `language` column), rejected rows, and counts of each action."""


class BaseEmbedder(ABC):
    """Maps texts to L2-normalised float32 vectors (n, dimension)."""

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


class BaseReducer(ABC):
    """Optional dimensionality reduction before clustering."""

    @abstractmethod
    def fit_transform(self, vectors: np.ndarray) -> np.ndarray: ...


class NoReducer(BaseReducer):
    """Skip reduction: cluster the embeddings as they are."""

    def fit_transform(self, vectors: np.ndarray) -> np.ndarray:
        return vectors


class BaseClusterer(ABC):
    """Assigns each user vector a segment id (-1: left unassigned) and a membership probability."""

    labels_: np.ndarray
    probabilities_: np.ndarray

    @abstractmethod
    def fit(self, vectors: np.ndarray) -> BaseClusterer: ...
