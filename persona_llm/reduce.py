"""Reduce stage (optional): lower the dimension of user vectors before clustering.

The default is no reduction: on 384-d MiniLM user vectors fast_hdbscan on the raw vectors was both
faster and more accurate than UMAP->5d (see bench/bench_segment.py and the README's table).
"""

from __future__ import annotations

import numpy as np

from persona_llm.base import BaseReducer, NoReducer
from persona_llm.errors import ConfigError


class PCAReducer(BaseReducer):
    """Linear projection; cheap, but at very low dimension it can merge segments."""

    def __init__(self, n_components: int = 50, random_state: int = 0) -> None:
        self.n_components = n_components
        self.random_state = random_state

    def fit_transform(self, vectors: np.ndarray) -> np.ndarray:
        from sklearn.decomposition import PCA

        n = min(self.n_components, vectors.shape[0], vectors.shape[1])
        self.pca_ = PCA(n_components=n, random_state=self.random_state)
        out = self.pca_.fit_transform(vectors).astype(np.float32)
        return out


class UMAPReducer(BaseReducer):
    """Non-linear manifold projection, as BERTopic does; slow on CPU and absorbs noise points."""

    def __init__(
        self, n_components: int = 5, n_neighbors: int = 15, min_dist: float = 0.0, random_state: int = 0
    ) -> None:
        self.n_components = n_components
        self.n_neighbors = n_neighbors
        self.min_dist = min_dist
        self.random_state = random_state

    def fit_transform(self, vectors: np.ndarray) -> np.ndarray:
        import umap

        self.umap_ = umap.UMAP(
            n_components=self.n_components,
            n_neighbors=min(self.n_neighbors, max(2, len(vectors) - 1)),
            min_dist=self.min_dist,
            metric="cosine",
            random_state=self.random_state,
        )
        return np.asarray(self.umap_.fit_transform(vectors), dtype=np.float32)


def get_reducer(name: str, random_state: int = 0) -> BaseReducer:
    """`none`, `pca`, `pca:N`, `umap` or `umap:N` (N = output dimensions)."""
    kind, _, dims = name.partition(":")
    kind = kind.lower()
    if kind in ("none", "", "skip"):
        return NoReducer()
    try:
        n = int(dims) if dims else None
    except ValueError as exc:
        raise ConfigError(f"reducer {name!r}: dimensions must be an integer") from exc
    if kind == "pca":
        return PCAReducer(n_components=n or 50, random_state=random_state)
    if kind == "umap":
        return UMAPReducer(n_components=n or 5, random_state=random_state)
    raise ConfigError(f"unknown reducer {name!r}; use none, pca[:N] or umap[:N]")
