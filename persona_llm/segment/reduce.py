"""Reduce stage (optional): lower the dimension of user vectors before clustering.

The default, "auto", depends on the number of users. Measured on 20 Newsgroups users (MiniLM + word
view, HDBSCAN leaf, ARI against each user's main newsgroup; bench/bench_segment.py --reducers):

    users (posts each)   no reduction          UMAP -> 5d
    398   (>= 5)         0.71 (99% covered)    0.50 (100%)
    1209  (>= 3)         0.56 (96%)            0.54 (100%)
    2568  (>= 2)         0.31 (85%)            0.51 (100%)
    8112  (all)          0.15 (62%)            0.43 (99%)

With few, text-rich users HDBSCAN finds the segments in the raw 384-d space and UMAP only splits them;
with many users of one or two short texts the raw space is too diffuse for density to show and HDBSCAN
leaves half the users in noise, while UMAP's neighbour graph recovers the topics.
"""

from __future__ import annotations

import warnings

import numpy as np

from persona_llm.errors import ConfigError
from persona_llm.segment.base import BaseReducer, NoReducer


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
            n_jobs=1,  # a seed makes UMAP single-threaded anyway; saying so keeps its warning off the console
        )
        with warnings.catch_warnings():
            # "Graph is not fully connected" on tiny inputs is UMAP's own business; the result is still used.
            warnings.filterwarnings("ignore", message=".*fully connected.*")
            return np.asarray(self.umap_.fit_transform(vectors), dtype=np.float32)


AUTO_UMAP_FROM_USERS = 2000  # crossover in the table above: even at ~1200 users, UMAP far ahead at ~2500


def get_reducer(name: str, random_state: int = 0, n_users: int | None = None) -> BaseReducer:
    """`auto`, `none`, `pca`, `pca:N`, `umap` or `umap:N` (N = output dimensions).

    `auto` is UMAP to 5 dimensions from AUTO_UMAP_FROM_USERS users up (`n_users`), else no reduction.
    """
    kind, _, dims = name.partition(":")
    kind = kind.lower()
    if kind == "auto":
        if dims:
            raise ConfigError(f"reducer {name!r}: auto takes no dimensions; use umap:N or pca:N")
        if n_users is not None and n_users >= AUTO_UMAP_FROM_USERS:
            return UMAPReducer(random_state=random_state)
        return NoReducer()
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
    raise ConfigError(f"unknown reducer {name!r}; use auto, none, pca[:N] or umap[:N]")


def reducer_label(reducer: BaseReducer) -> str:
    """What ran, in get_reducer's own terms (for the manifest): "none", "umap:5", "pca:50" or a class name."""
    if isinstance(reducer, NoReducer):
        return "none"
    if isinstance(reducer, UMAPReducer):
        return f"umap:{reducer.n_components}"
    if isinstance(reducer, PCAReducer):
        return f"pca:{reducer.n_components}"
    return type(reducer).__name__
