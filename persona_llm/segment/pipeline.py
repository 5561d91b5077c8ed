"""The segment pipeline: ingest -> clean -> embed -> users -> reduce -> cluster -> describe -> store.

`SegmentPipeline` is a scikit-learn-style object: parameters in the constructor, `fit` on a texts
frame (or `fit_file` on a file), learned state in attributes with a trailing underscore, and `save`
to write a run directory (layout in `persona_llm/schema/segments.py`). Every stage is an object with
a tiny interface (`persona_llm/segment/base.py`), so any of them can be swapped, or skipped with a no-op.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, TypeVar, cast

import numpy as np
import pandas as pd

from persona_llm import __version__
from persona_llm.common.vectors import segment_centroids
from persona_llm.errors import ConfigError, NoSegmentsError, TooFewRowsError
from persona_llm.runs.rundir import RunDir
from persona_llm.runs.workspace import drop_forgotten_users
from persona_llm.schema.frames import (
    LANGUAGE,
    TEXT,
    TEXT_ID,
    USER_ID,
    concat_rejects,
)
from persona_llm.schema.manifest import RowCounts, RunManifest, package_versions, peak_rss_mb
from persona_llm.schema.segments import Segment, SegmentQuality, SegmentSet
from persona_llm.segment.base import (
    BaseCleaner,
    BaseClusterer,
    BaseDescriber,
    BaseEmbedder,
    BaseIngester,
    BaseReducer,
    BaseStore,
    BaseUserAggregator,
    EmbedExecutor,
    NoReducer,
    SegmentDescription,
)
from persona_llm.segment.cluster import GivenLabels, HDBSCANClusterer
from persona_llm.segment.describe import SegmentDescriber
from persona_llm.segment.ingest import ColumnMap, IngestResult, TableIngester
from persona_llm.segment.reduce import get_reducer, reducer_label
from persona_llm.segment.sample_fit import (
    ASSIGNED_CENTROID,
    SampleFitClusterer,
    check_fit_sample,
    sample_size_for,
    scaled_min_cluster_size,
)
from persona_llm.segment.store import ChromaStore
from persona_llm.segment.users import LexicalUserFeatures, UserAggregator, combine_views

StageHook = Callable[[str, Literal["start", "end"], float], None]
STAGES = ("ingest", "clean", "embed", "users", "reduce", "cluster", "describe", "store")
#: Segment ids given to `fit(..., y=)`, by user id (a user it does not name stays unassigned, -1).
UserLabels = Mapping[str, int] | pd.Series
#: HDBSCAN needs at least this many users.
MIN_USERS = 3
_Stage = TypeVar("_Stage")


class SegmentPipeline:
    """Segments users by what they write.

    Stages: each is an object behind a base class in `persona_llm/segment/base.py`. None (the default)
    builds the default object from the settings further down; an object replaces it, and that stage's
    settings below are then ignored (the object has its own).

    ingester: a BaseIngester; None: TableIngester (CSV/TSV/JSONL/JSON/Parquet, gzip too, and DataFrames).
    cleaner: a BaseCleaner; None: TextCleaner. NoCleaner() skips cleaning.
    embedder: "minilm" (bundled all-MiniLM-L6-v2), "minilm-static" (the fast tier: MiniLM distilled into a
        static model2vec table, ~100x faster, some ARI lost: bench/bench_embed_tiers.py), "e5-multilingual"
        (bundled multilingual-e5-small), "auto" (e5 when most texts are not English), any
        sentence-transformers path, or a BaseEmbedder.
    user_aggregator: a BaseUserAggregator; None: UserAggregator(min_texts, weighting).
    reducer: "auto" (UMAP to 5-d from 2000 users up, else none; see persona_llm.segment.reduce), "none",
        "pca[:N]", "umap[:N]" or a BaseReducer. NoReducer() (or "none") skips reduction.
    clusterer: a BaseClusterer; None: HDBSCANClusterer with the settings below. GivenLabels() keeps the
        segment ids passed as `fit(..., y=)` instead of clustering.
    describer: a BaseDescriber; None: SegmentDescriber(n_keywords, n_representatives, mmr_diversity).
    The store is chosen when saving: `save(out_dir, store=...)`.

    Settings (all optional; defaults were chosen by measurement, see bench/bench_segment.py)
    --------
    embedding_backend: "torch", "onnx" or "onnx-int8" for sentence-transformers models (None: default).
    long_texts: "truncate" (the model keeps its first max_seq_length tokens) or "chunk" (a longer text is
        the token-weighted mean of window-sized pieces: ChunkedEmbedder). Sentence-transformers models only;
        the e5 engine windows long texts itself and the static tier reads 512 tokens a text either way.
    cache_dir: embedding cache directory (None: the user cache; "none" disables caching).
    min_texts: users with fewer cleaned texts are not segmented (their rows go to rejects).
    weighting: "length" or "uniform" weights of a user's texts in their vector.
    lexical_weight: share of a TF-IDF/SVD word view in the vectors HDBSCAN clusters (0: embeddings only);
        centroids, representatives and the store always use the semantic embeddings.
    min_cluster_size, min_samples, engine, cluster_selection_method, reassign_outliers,
    reassign_threshold: HDBSCAN settings (see HDBSCANClusterer).
    fit_sample: "auto" (default: above AUTO_FIT_SAMPLE_ABOVE users, 50,000, fit on a seeded sample of
        DEFAULT_FIT_SAMPLE, 20,000), a number of users (fit on a sample of that many when there are more),
        or None ("none" in a TOML config: always fit everyone). With a sample, the reducer and the clusterer see only the sample
        and every other user is assigned to the segments found, in chunks, by nearest centroid above a
        per-segment threshold (SampleFitClusterer, persona_llm/segment/sample_fit.py; assigned_by
        "assigned", or "noise" when the user fits no segment); min_cluster_size, when unset, is the
        population's default scaled to the sample. Ignored with given labels (y).
    n_keywords, n_representatives, mmr_diversity: describe-stage settings.
    random_state: seeds every stochastic step.
    executor: where the embedding model runs: None (this process, the default) or an EmbedExecutor such
        as persona_llm.scale.RayExecutor (Ray Data actors). The same model gives the same vectors, so it
        changes neither the segments nor the cache; the manifest records it.
    forgotten_users: hashes (`persona_llm.runs.workspace.user_hash`) of users whose rows are skipped as
        they are read (`drop_forgotten_users`): not cleaned, embedded, cached, stored, nor written to the
        rejects; the manifest counts them (rows.of_forgotten_users). The workflows pass a workspace's
        `Workspace.forgotten_users()`; not a segmentation setting, so neither the manifest nor the run id
        records it.
    """

    def __init__(
        self,
        *,
        ingester: BaseIngester | None = None,
        cleaner: BaseCleaner | None = None,
        embedder: str | BaseEmbedder = "auto",
        embedding_backend: str | None = None,
        long_texts: Literal["truncate", "chunk"] = "truncate",
        cache_dir: str | Path | None = None,
        user_aggregator: BaseUserAggregator | None = None,
        min_texts: int = 1,
        weighting: Literal["length", "uniform"] = "length",
        lexical_weight: float = 0.3,
        lexical_components: int = 50,
        reducer: str | BaseReducer = "auto",
        clusterer: BaseClusterer | None = None,
        min_cluster_size: int | None = None,
        min_samples: int | None = None,
        engine: Literal["auto", "fast_hdbscan", "hdbscan"] = "auto",
        cluster_selection_method: Literal["eom", "leaf"] = "leaf",
        reassign_outliers: bool = True,
        reassign_threshold: float = 0.3,
        fit_sample: int | Literal["auto"] | None = "auto",
        describer: BaseDescriber | None = None,
        n_keywords: int = 10,
        n_representatives: int = 8,
        mmr_diversity: float = 0.3,
        random_state: int = 0,
        show_progress: bool = False,
        stage_hook: StageHook | None = None,
        executor: EmbedExecutor | None = None,
        forgotten_users: frozenset[str] = frozenset(),
    ) -> None:
        self.ingester = ingester
        self.cleaner = cleaner
        self.embedder = embedder
        self.embedding_backend = embedding_backend
        self.long_texts = long_texts
        self.cache_dir = cache_dir
        self.user_aggregator = user_aggregator
        self.min_texts = min_texts
        self.weighting = weighting
        self.lexical_weight = lexical_weight
        self.lexical_components = lexical_components
        self.reducer = reducer
        self.clusterer = clusterer
        self.min_cluster_size = min_cluster_size
        self.min_samples = min_samples
        self.engine = engine
        self.cluster_selection_method = cluster_selection_method
        self.reassign_outliers = reassign_outliers
        self.reassign_threshold = reassign_threshold
        self.fit_sample = fit_sample
        self.describer = describer
        self.n_keywords = n_keywords
        self.n_representatives = n_representatives
        self.mmr_diversity = mmr_diversity
        self.random_state = random_state
        self.show_progress = show_progress
        self.stage_hook = stage_hook
        self.executor = executor
        self.forgotten_users = forgotten_users

    # --- parameters ----------------------------------------------------------------------------
    def get_params(self) -> dict[str, Any]:
        """Constructor parameters as JSON-able values (for the manifest and the run id).

        A stage object given in place of a default is recorded by class and parameters; a default
        one is not recorded (its settings are), except the cleaner, recorded as "default".
        """
        out: dict[str, Any] = {}
        for key in (
            "embedder", "embedding_backend", "long_texts", "cache_dir", "min_texts", "weighting", "lexical_weight",
            "lexical_components", "reducer", "min_cluster_size",
            "min_samples", "engine", "cluster_selection_method", "reassign_outliers", "reassign_threshold",
            "fit_sample",
            "n_keywords", "n_representatives", "mmr_diversity", "random_state",
        ):
            val = getattr(self, key)
            out[key] = val if isinstance(val, (str, int, float, bool, type(None))) else type(val).__name__
        out["cleaner"] = "default" if self.cleaner is None else _describe_object(self.cleaner)
        for key in ("ingester", "user_aggregator", "clusterer", "describer"):
            stage = getattr(self, key)
            if stage is not None:
                out[key] = _describe_object(stage)
        return out

    # --- fitting -------------------------------------------------------------------------------
    def fit_file(
        self, path: str | Path, columns: ColumnMap, *, max_rows: int | None = None, y: UserLabels | None = None
    ) -> SegmentPipeline:
        """Read `path` (CSV, JSONL, Parquet, gzip too) with a `ColumnMap`, then segment its users.

        `y`: segment id by user id, for a clusterer that takes labels (GivenLabels).
        Raises TooFewRowsError, whose `rejects` gives each rejected row's reason, when too few rows or
        users are left to segment.
        """
        check_fit_sample(self.fit_sample)
        self.timings_: dict[str, float] = {}
        self.ingester_: BaseIngester = self._stage_object("ingester", BaseIngester, TableIngester)
        with self._stage("ingest"):
            result = self._without_forgotten(self.ingester_.read_file(path, columns, max_rows=max_rows))
            _require_texts_read(result, str(path), self.rows_of_forgotten_users_)
        return self._fit(result, input_path=str(path), y=y)

    def fit(
        self,
        data: pd.DataFrame,
        user_column: str = USER_ID,
        text_column: str = TEXT,
        id_column: str | None = None,
        attribute_columns: list[str] | None = None,
        y: UserLabels | None = None,
    ) -> SegmentPipeline:
        """Segment the users of a DataFrame with one row per text.

        `y`: segment id by user id, for a clusterer that takes labels (GivenLabels).
        """
        check_fit_sample(self.fit_sample)
        self.timings_ = {}
        columns = ColumnMap(
            user_column=user_column, text_column=text_column, id_column=id_column, attribute_columns=attribute_columns
        )
        self.ingester_ = self._stage_object("ingester", BaseIngester, TableIngester)
        with self._stage("ingest"):
            result = self._without_forgotten(self.ingester_.read_frame(data, columns))
            _require_texts_read(result, "<dataframe>", self.rows_of_forgotten_users_)
        return self._fit(result, input_path="<dataframe>", y=y)

    def _fit(self, ingested: IngestResult, *, input_path: str, y: UserLabels | None) -> SegmentPipeline:
        started = datetime.now(UTC)
        rejects = [ingested.rejects]
        texts = ingested.texts

        # Clean (the checks sit inside each stage: a stage that leaves nothing to segment has failed)
        self.cleaner_: BaseCleaner = self._stage_object("cleaner", BaseCleaner, _default_cleaner)
        with self._stage("clean"):
            cleaned = self.cleaner_.transform(texts)
            rejects.append(cleaned.rejects)
            texts = cleaned.texts.reset_index(drop=True)
            if texts.empty:
                all_rejects = concat_rejects(rejects)
                raise TooFewRowsError(
                    f"every row was rejected ({ingested.rows_read} read: {_reason_summary(all_rejects)})",
                    path=input_path,
                    rejects=all_rejects,
                )

        # Embed
        with self._stage("embed"):
            embedder = self._embedder(texts)
            vectors = embedder.encode(texts[TEXT].tolist(), kind="passage", show_progress=self.show_progress)
        self.embedder_ = embedder

        # Users
        self.user_aggregator_: BaseUserAggregator = self._stage_object(
            "user_aggregator", BaseUserAggregator, lambda: UserAggregator(min_texts=self.min_texts, weighting=self.weighting)
        )
        with self._stage("users"):
            users = self.user_aggregator_.fit_transform(texts, vectors)
            rejects.append(users.rejects)
            texts = texts.loc[users.text_mask].reset_index(drop=True)
            vectors = vectors[users.text_mask]
            if len(users.user_ids) < MIN_USERS:
                raise self._too_few_users(len(users.user_ids), users.rejects, concat_rejects(rejects), input_path)

        # Reduce + cluster (on a sample of users when there are many: SampleFitClusterer)
        n_users = len(users.user_ids)
        sample_size = sample_size_for(self.fit_sample, n_users)
        if sample_size is not None and (y is not None or isinstance(self.clusterer, GivenLabels)):
            if self.fit_sample != "auto":
                raise ConfigError(
                    f"fit_sample={self.fit_sample} does not apply to given labels (GivenLabels keeps the segments it is "
                    "given): leave fit_sample at 'auto' or set it to None"
                )
            sample_size = None
        with self._stage("reduce"):
            features = users.vectors
            if self.lexical_weight > 0:
                lexical = LexicalUserFeatures(
                    n_components=self.lexical_components, random_state=self.random_state
                ).fit_transform(texts, users.user_ids)
                features = combine_views(users.vectors, lexical, self.lexical_weight)
            if sample_size is None:
                reducer = self.reducer if isinstance(self.reducer, BaseReducer) else get_reducer(
                    self.reducer, random_state=self.random_state, n_users=n_users
                )
            else:  # the sample clusterer fits the reducer on its sample, inside the cluster stage
                reducer = NoReducer()
            reduced = reducer.fit_transform(features)
        clusterer: BaseClusterer = self._stage_object("clusterer", BaseClusterer, self._default_clusterer)
        if sample_size is not None:
            if self.clusterer is None and self.min_cluster_size is None:
                clusterer = self._default_clusterer(scaled_min_cluster_size(n_users, sample_size))
            clusterer = SampleFitClusterer(
                sample_size, reducer=self.reducer, clusterer=clusterer, random_state=self.random_state
            )
        with self._stage("cluster"):
            if y is None:  # a clusterer written as fit(vectors) still works
                clusterer.fit(reduced)
            else:
                clusterer.fit(reduced, y=_labels_by_user(y, users.user_ids))
            labels = np.asarray(clusterer.labels_, dtype=np.int64)
            probabilities = np.asarray(clusterer.probabilities_, dtype=np.float64)
            quality = clusterer.quality(reduced)
        self.clusterer_ = clusterer
        self.reducer_ = clusterer.reducer_ if isinstance(clusterer, SampleFitClusterer) else reducer

        # Describe
        self.describer_: BaseDescriber = self._stage_object(
            "describer",
            BaseDescriber,
            lambda: SegmentDescriber(
                n_keywords=self.n_keywords, n_representatives=self.n_representatives, mmr_diversity=self.mmr_diversity
            ),
        )
        with self._stage("describe"):
            user_index = {u: i for i, u in enumerate(users.user_ids)}
            text_user_rows = np.array([user_index[u] for u in texts[USER_ID].astype(str)], dtype=np.int64)
            text_labels = labels[text_user_rows]
            texts["segment_id"] = text_labels
            centroids = segment_centroids(users.vectors, labels)
            run_id = self._run_id(ingested.file_sha256, started, y)
            descriptions = self.describer_.describe(texts, vectors, users.user_ids, labels, centroids)
            segment_set = _segment_set(
                run_id, texts, text_labels, users.vectors, labels, probabilities, centroids, quality, descriptions
            )

        all_rejects = concat_rejects(rejects)
        self.run_id_ = run_id
        self.texts_ = texts
        self.text_embeddings_ = vectors.astype(np.float32)
        self.user_ids_ = users.user_ids
        self.user_embeddings_ = users.vectors
        self.user_n_texts_ = users.n_texts
        self.labels_ = labels
        self.probabilities_ = probabilities
        self.assigned_by_ = np.asarray(clusterer.assigned_by_)
        self.centroids_ = centroids
        self.segments_ = segment_set
        self.rejects_ = all_rejects
        self.clean_counts_ = dict(cleaned.counts)
        by_stage = all_rejects["stage"].value_counts().to_dict() if len(all_rejects) else {}
        self.manifest_ = RunManifest(
            run_id=run_id,
            created_at=started.isoformat(timespec="seconds"),
            package_version=__version__,
            input_path=input_path,
            input_sha256=ingested.file_sha256,
            input_format=ingested.format,
            rows=RowCounts(
                read=ingested.rows_read,
                rejected=len(all_rejects),
                kept=len(texts),
                rejected_by_stage={str(k): int(v) for k, v in by_stage.items()},
                of_forgotten_users=self.rows_of_forgotten_users_,
            ),
            users={
                "segmented": int(len(users.user_ids)),
                "assigned": int((labels >= 0).sum()),
                "unassigned": int((labels < 0).sum()),
                "reassigned": int((self.assigned_by_ == "reassigned").sum()),
                "assigned_outside_sample": int((self.assigned_by_ == ASSIGNED_CENTROID).sum()),
                "segments": int(segment_set.segments.__len__()),
            },
            clean_counts={str(k): int(v) for k, v in cleaned.counts.items()},
            parameters={
                **self.get_params(),
                "min_cluster_size_used": clusterer.min_cluster_size_,
                "min_samples_used": clusterer.min_samples_,
                "engine_used": clusterer.engine_,
                "reducer_used": reducer_label(self.reducer_),
                "fit_sample_used": sample_size,
                **({"executor": repr(self.executor)} if self.executor is not None else {}),
            },
            models={"embedder": embedder.model_id},
            versions=package_versions(),
            timings_s={k: round(v, 3) for k, v in self.timings_.items()},
            peak_rss_mb=peak_rss_mb(),
            embedding_cache={"hits": int(embedder.hits_), "misses": int(embedder.misses_)},
        )
        return self

    def require_segments(self) -> SegmentPipeline:
        """Raise NoSegmentsError, saying which minimum was not met and what to change, when the fit found
        no segment (every user unassigned): a run without segments has nothing to describe or write
        personas for. `fit` itself allows it (a subsample in a stability check may find none)."""
        self._check_fitted()
        if self.segments_.segments:
            return self
        n_users = len(self.user_ids_)
        clusterer = self.clusterer_
        if not isinstance(clusterer, HDBSCANClusterer) or clusterer.min_cluster_size_ is None:
            raise NoSegmentsError(
                f"{type(clusterer).__name__} put none of the {n_users} users in a segment",
                path=self.manifest_.input_path,
            )
        used = clusterer.min_cluster_size_
        asked = clusterer.min_cluster_size
        capped = f" (asked {asked}, capped at the number of users)" if asked and asked != used else ""
        smaller = max(2, used // 2)
        change = (
            f"try --min-cluster-size {smaller} (or min_cluster_size = {smaller} under [pipeline] in --config), "
            "or more users"
            if smaller < used
            else "add users"
        )
        raise NoSegmentsError(
            f"HDBSCAN found no segment among {n_users} users: min_cluster_size={used}{capped} needs at least "
            f"{used} users who write alike and unlike the others (one group of everyone is not a segment); "
            f"{change} who write about different things",
            path=self.manifest_.input_path,
        )

    # --- stages --------------------------------------------------------------------------------
    def _without_forgotten(self, ingested: IngestResult) -> IngestResult:
        """The rows read, less those of forgotten users (first thing after reading: see forgotten_users)."""
        texts, rejects, dropped = drop_forgotten_users(ingested.texts, ingested.rejects, self.forgotten_users)
        self.rows_of_forgotten_users_ = dropped
        return dataclasses.replace(ingested, texts=texts, rejects=rejects) if dropped else ingested

    def _too_few_users(
        self, n_users: int, user_rejects: pd.DataFrame, all_rejects: pd.DataFrame, input_path: str
    ) -> TooFewRowsError:
        dropped = user_rejects[USER_ID].nunique() if len(user_rejects) else 0
        if self.user_aggregator is None and dropped:
            why = f"{dropped} more had fewer than min_texts={self.min_texts} texts"
            change = "lower --min-texts or add users"
        else:
            why = f"{len(all_rejects)} row(s) rejected" if len(all_rejects) else "no row rejected"
            change = "add users"
        return TooFewRowsError(
            f"only {n_users} user(s) left to segment ({why}); segmenting needs at least {MIN_USERS}: {change}",
            path=input_path,
            rejects=all_rejects,
        )

    def _stage_object(self, name: str, base: type, default: Callable[[], _Stage]) -> _Stage:
        """The stage object given as parameter `name` (an instance of `base`), or `default()` when None."""
        # `base` is not type[_Stage]: mypy accepts only concrete classes there, and the bases are abstract.
        given = getattr(self, name)
        if given is None:
            return default()
        if not isinstance(given, base):
            raise ConfigError(
                f"{name} must be a {base.__name__} or None (the default), got {given!r}; "
                "see persona_llm/segment/base.py for the no-op objects that skip a stage"
            )
        return cast(_Stage, given)

    def _default_clusterer(self, min_cluster_size: int | None = None) -> BaseClusterer:
        return HDBSCANClusterer(
            min_cluster_size=min_cluster_size or self.min_cluster_size,
            min_samples=self.min_samples,
            engine=self.engine,
            cluster_selection_method=self.cluster_selection_method,
            reassign_outliers=self.reassign_outliers,
            reassign_threshold=self.reassign_threshold,
            random_state=self.random_state,
        )

    def _embedder(self, texts: pd.DataFrame) -> BaseEmbedder:
        from persona_llm.segment import embed

        if isinstance(self.embedder, BaseEmbedder):
            base: BaseEmbedder = self.embedder
        else:
            name = self.embedder
            if name == "auto":
                shares = texts[LANGUAGE].value_counts(normalize=True).to_dict() if LANGUAGE in texts else {}
                name = embed.choose_embedder_for_languages({str(k): float(v) for k, v in shares.items()})
            params: dict[str, Any] = {}
            # The backend choice is a sentence-transformers option; e5 and the static tier have their own runtimes.
            if self.embedding_backend and name.strip().lower() not in embed.E5_NAMES | embed.STATIC_NAMES:
                params["backend"] = self.embedding_backend
            base = embed.get_embedder(name, **params)
        if self.long_texts not in ("truncate", "chunk"):
            raise ConfigError(f"long_texts must be 'truncate' or 'chunk', not {self.long_texts!r}")
        chunked = base if isinstance(base, embed.ChunkedEmbedder) else None
        core = chunked.embedder if chunked is not None else base
        if self.executor is not None:  # the model runs elsewhere; the cache and chunking stay here
            if isinstance(core, embed.CachedEmbedder):
                core = embed.CachedEmbedder(self.executor.embedder(core.embedder), core.cache, core.chunk_size)
            else:
                core = self.executor.embedder(core)
        if self.cache_dir != "none" and not isinstance(core, embed.CachedEmbedder):
            cache = embed.EmbeddingCache(path=self.cache_dir) if self.cache_dir else embed.EmbeddingCache()
            core = embed.CachedEmbedder(core, cache)
        # pieces go through the cache: a text that fits shares its vector with truncating runs
        if chunked is not None:
            return embed.ChunkedEmbedder(
                core, window=chunked.window, max_pieces=chunked.max_pieces, token_offsets=chunked.token_offsets
            )
        model = core.embedder if isinstance(core, embed.CachedEmbedder) else core
        if self.executor is not None:
            model = embed.innermost(model)  # under the executor's wrapper
        if self.long_texts == "chunk" and isinstance(model, embed.SentenceTransformerEmbedder):
            return embed.ChunkedEmbedder(core)
        return core

    # --- output --------------------------------------------------------------------------------
    def assignments(self) -> pd.DataFrame:
        """One row per segmented user: user_id, segment_id (-1 unassigned), probability, assigned_by."""
        self._check_fitted()
        return pd.DataFrame(
            {
                USER_ID: self.user_ids_,
                "segment_id": self.labels_,
                "probability": np.round(self.probabilities_, 4),
                "assigned_by": self.assigned_by_,
                "n_texts": self.user_n_texts_,
            }
        )

    def save(self, out_dir: str | Path, store: BaseStore | None = None, *, overwrite: bool = False) -> Path:
        """Write the run directory `out_dir` atomically: it is written beside and moved into place when
        complete, so a failed save leaves what was there. `out_dir` must be new, empty, or (with
        `overwrite`) an existing run; any other folder is refused untouched.

        `store`: None writes the default persistent Chroma store into the run; pass a
        `ChromaStore(url=...)` for a server.
        """
        self._check_fitted()
        with RunDir.staged(out_dir, overwrite=overwrite) as run:
            self.write(run, store)
        return run.path

    def write(self, run: RunDir, store: BaseStore | None = None) -> RunDir:
        """Write every artifact of the fitted run into `run` (a new or staging run directory) and the store."""
        self._check_fitted()
        t0 = time.perf_counter()
        run.save_assignments(self.assignments())
        run.save_rejects(self.rejects_)
        run.save_segments(self.segments_)
        run.save_texts(self.texts_)
        run.save_text_embeddings(self.text_embeddings_)
        run.save_user_embeddings(self.user_embeddings_)
        with self._stage("store"):
            target = store or ChromaStore(path=run.store_path)
            counts = target.write_segments(self.segments_, self.centroids_, self._representative_vectors())
            target.close()  # the run folder may be renamed next (staging -> runs/)
        self.manifest_.store = {**target.manifest_record(), **counts}
        self.manifest_.timings_s["store"] = round(self.timings_.get("store", 0.0), 3)
        self.manifest_.timings_s["save"] = round(time.perf_counter() - t0, 3)
        self.manifest_.peak_rss_mb = peak_rss_mb()
        run.save_manifest(self.manifest_)  # last: a run with a manifest has all its files
        return run

    def _representative_vectors(self) -> dict[str, np.ndarray]:
        index = {tid: i for i, tid in enumerate(self.texts_[TEXT_ID].astype(str))}
        out = {}
        for seg in self.segments_.segments:
            for rep in seg.representatives:
                out[rep.text_id] = self.text_embeddings_[index[rep.text_id]]
        return out

    # --- helpers -------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _stage(self, name: str) -> Iterator[None]:
        """Time a stage; the hook hears "end" only when it succeeds, so no progress line claims a stage
        that failed."""
        if self.stage_hook:
            self.stage_hook(name, "start", 0.0)
        t0 = time.perf_counter()
        try:
            yield
        finally:
            elapsed = time.perf_counter() - t0
            self.timings_[name] = self.timings_.get(name, 0.0) + elapsed
        if self.stage_hook:
            self.stage_hook(name, "end", elapsed)

    def _run_id(self, input_sha256: str, started: datetime, y: UserLabels | None = None) -> str:
        params = json.dumps(self.get_params(), sort_keys=True, default=str)
        key = f"{input_sha256}\0{params}"
        if y is not None:  # given labels change the segments as much as the input does
            key += "\0" + json.dumps(sorted((str(k), str(v)) for k, v in dict(y).items()))
        digest = hashlib.sha256(key.encode()).hexdigest()[:8]
        return f"{started:%Y%m%dT%H%M%S}-{digest}"

    def _check_fitted(self) -> None:
        if not hasattr(self, "segments_"):
            raise RuntimeError("SegmentPipeline is not fitted yet: call fit() or fit_file() first")


def _require_texts_read(ingested: IngestResult, input_path: str, forgotten_rows: int = 0) -> None:
    """Raise TooFewRowsError, with the rejects and a summary of their reasons, when reading kept no row."""
    if ingested.texts.empty:
        skipped = f", {forgotten_rows} of forgotten users skipped" if forgotten_rows else ""
        raise TooFewRowsError(
            f"every row was rejected while reading ({ingested.rows_read} read{skipped}: "
            f"{_reason_summary(ingested.rejects)})",
            path=input_path,
            rejects=ingested.rejects,
        )


def _reason_summary(rejects: pd.DataFrame, shown: int = 3, width: int = 70) -> str:
    """The commonest reasons with their counts, e.g. "3 empty text, 1 missing user id", in one line."""
    if not len(rejects):
        return "no rejects recorded"
    counts = rejects["reason"].astype(str).value_counts(sort=True)
    parts = []
    for reason, count in counts.head(shown).items():
        text = " ".join(str(reason).split())  # one line, whatever the reason held
        parts.append(f"{count} {text[: width - 1] + '…' if len(text) > width else text}")
    if len(counts) > shown:
        parts.append(f"{int(counts.iloc[shown:].sum())} other")
    return ", ".join(parts)


def _default_cleaner() -> BaseCleaner:
    from persona_llm.segment.clean import TextCleaner

    return TextCleaner()


def _labels_by_user(y: UserLabels, user_ids: np.ndarray) -> np.ndarray:
    """`y` (segment id by user id) in the order of `user_ids`; a user it does not name gets -1."""
    given = y.copy() if isinstance(y, pd.Series) else pd.Series(dict(y), dtype=object)
    given.index = given.index.astype(str)
    if not given.index.is_unique:
        raise ConfigError("y gives some user more than one segment id")
    try:
        values = pd.to_numeric(given.reindex(user_ids)).fillna(-1).to_numpy(dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"y: segment ids must be integers ({exc})") from None
    if (values != np.round(values)).any():
        raise ConfigError("y: segment ids must be integers")
    return values.astype(np.int64)


def _segment_set(
    run_id: str,
    texts: pd.DataFrame,
    text_labels: np.ndarray,
    user_vectors: np.ndarray,
    labels: np.ndarray,
    probabilities: np.ndarray,
    centroids: np.ndarray,
    quality: dict[str, float | None],
    descriptions: dict[int, SegmentDescription],
) -> SegmentSet:
    """The segments with their sizes, languages and quality, plus what the describer said of each."""
    n_users = len(labels)
    segments = []
    for s in sorted({int(label) for label in labels if label >= 0}):
        members = labels == s
        in_segment = text_labels == s
        seg_texts = texts.loc[in_segment]
        langs = seg_texts[LANGUAGE].value_counts(normalize=True).head(5) if LANGUAGE in seg_texts else {}
        cohesion = float((user_vectors[members] @ centroids[s]).mean())
        description = descriptions.get(s, SegmentDescription())
        segments.append(
            Segment(
                segment_id=s,
                size=int(members.sum()),
                share=round(float(members.sum()) / n_users, 4),
                n_texts=int(in_segment.sum()),
                keywords=description.keywords,
                representative_text_ids=[r.text_id for r in description.representatives],
                representatives=description.representatives,
                attributes=description.attributes,
                languages={str(k): round(float(v), 4) for k, v in dict(langs).items()},
                quality=SegmentQuality(
                    mean_probability=round(float(probabilities[members].mean()), 4),
                    cohesion=round(cohesion, 4),
                ),
            )
        )
    return SegmentSet(
        run_id=run_id,
        n_users=n_users,
        n_assigned=int((labels >= 0).sum()),
        coverage=round(float((labels >= 0).mean()), 4),
        noise_share=round(float((labels < 0).mean()), 4),
        # the clusterer's own noise, before reassignment (clusterers that do not reassign record none)
        coverage_hdbscan=_raw_share(quality, complement=True),
        noise_share_hdbscan=_raw_share(quality, complement=False),
        segments=segments,
        quality={k: (round(v, 4) if isinstance(v, float) else v) for k, v in quality.items()},
    )


def _raw_share(quality: dict[str, float | None], *, complement: bool) -> float | None:
    """The clusterer's `noise_share_hdbscan` (or 1 minus it), rounded; None when it recorded none."""
    raw = quality.get("noise_share_hdbscan")
    if raw is None:
        return None
    return round(1.0 - float(raw), 4) if complement else round(float(raw), 4)


def _describe_object(obj: object) -> str:
    params = {k: v for k, v in vars(obj).items() if not k.endswith("_") and not k.startswith("_")}
    return f"{type(obj).__name__}({', '.join(f'{k}={v!r}' for k, v in sorted(params.items()))})"
