"""The segment pipeline: ingest -> clean -> embed -> users -> reduce -> cluster -> describe -> store.

`SegmentPipeline` is a scikit-learn-style object: parameters in the constructor, `fit` on a texts
frame (or `fit_file` on a file), learned state in attributes with a trailing underscore, and `save`
to write a run directory (layout in `persona_llm/segments.py`). Every stage is an object with a
tiny interface (`persona_llm/base.py`), so any of them can be swapped, or skipped with a no-op.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from persona_llm import __version__
from persona_llm.common.vectors import segment_centroids
from persona_llm.errors import ConfigError, InputError
from persona_llm.runs.rundir import STORE, RunDir
from persona_llm.schema.frames import (
    LANGUAGE,
    SOURCE_ROW,
    TEXT,
    TEXT_ID,
    USER_ID,
    attribute_columns,
    concat_rejects,
)
from persona_llm.schema.manifest import RowCounts, RunManifest, package_versions, peak_rss_mb
from persona_llm.schema.segments import Segment, SegmentQuality, SegmentSet
from persona_llm.segment.base import BaseCleaner, BaseClusterer, BaseEmbedder, BaseReducer, StageResult
from persona_llm.segment.cluster import HDBSCANClusterer
from persona_llm.segment.describe import (
    KeywordExtractor,
    representatives_for,
    summarizable_columns,
    summarize_attributes,
    user_attribute_table,
)
from persona_llm.segment.reduce import get_reducer, reducer_label
from persona_llm.segment.store import ChromaStore
from persona_llm.segment.users import LexicalUserFeatures, UserAggregator, combine_views

StageHook = Callable[[str, Literal["start", "end"], float], None]
STAGES = ("ingest", "clean", "embed", "users", "reduce", "cluster", "describe", "store")


class SegmentPipeline:
    """Segments users by what they write.

    Parameters (all optional; defaults were chosen by measurement, see bench/bench_segment.py)
    ----------
    cleaner: a BaseCleaner, None for the default TextCleaner, or "skip".
    embedder: "minilm" (bundled all-MiniLM-L6-v2), "e5-multilingual" (bundled multilingual-e5-small),
        "auto" (e5 when most texts are not English), any sentence-transformers path, or a BaseEmbedder.
    embedding_backend: "torch", "onnx" or "onnx-int8" for sentence-transformers models (None: default).
    cache_dir: embedding cache directory (None: the user cache; "none" disables caching).
    min_texts: users with fewer cleaned texts are not segmented (their rows go to rejects).
    lexical_weight: share of a TF-IDF/SVD word view in the vectors HDBSCAN clusters (0: embeddings only);
        centroids, representatives and the store always use the semantic embeddings.
    reducer: "auto" (UMAP to 5-d from 2000 users up, else none; see persona_llm.segment.reduce), "none",
        "pca[:N]", "umap[:N]" or a BaseReducer.
    min_cluster_size, min_samples, engine, cluster_selection_method, reassign_outliers,
    reassign_threshold: HDBSCAN settings (see HDBSCANClusterer); or pass `clusterer` to replace it.
    n_keywords, n_representatives, mmr_diversity: describe-stage settings.
    random_state: seeds every stochastic step.
    """

    def __init__(
        self,
        *,
        cleaner: BaseCleaner | Literal["skip"] | None = None,
        embedder: str | BaseEmbedder = "auto",
        embedding_backend: str | None = None,
        cache_dir: str | Path | None = None,
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
        n_keywords: int = 10,
        n_representatives: int = 8,
        mmr_diversity: float = 0.3,
        random_state: int = 0,
        show_progress: bool = False,
        stage_hook: StageHook | None = None,
    ) -> None:
        self.cleaner = cleaner
        self.embedder = embedder
        self.embedding_backend = embedding_backend
        self.cache_dir = cache_dir
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
        self.n_keywords = n_keywords
        self.n_representatives = n_representatives
        self.mmr_diversity = mmr_diversity
        self.random_state = random_state
        self.show_progress = show_progress
        self.stage_hook = stage_hook

    # --- parameters ----------------------------------------------------------------------------
    def get_params(self) -> dict[str, Any]:
        """Constructor parameters as JSON-able values (for the manifest and the run id)."""
        out: dict[str, Any] = {}
        for key in (
            "embedder", "embedding_backend", "cache_dir", "min_texts", "weighting", "lexical_weight",
            "lexical_components", "reducer", "min_cluster_size",
            "min_samples", "engine", "cluster_selection_method", "reassign_outliers", "reassign_threshold",
            "n_keywords", "n_representatives", "mmr_diversity", "random_state",
        ):
            val = getattr(self, key)
            out[key] = val if isinstance(val, (str, int, float, bool, type(None))) else type(val).__name__
        out["cleaner"] = "default" if self.cleaner is None else (
            self.cleaner if isinstance(self.cleaner, str) else _describe_object(self.cleaner)
        )
        if self.clusterer is not None:
            out["clusterer"] = _describe_object(self.clusterer)
        return out

    # --- fitting -------------------------------------------------------------------------------
    def fit_file(self, path: str | Path, columns: Any, *, max_rows: int | None = None) -> SegmentPipeline:
        """Read `path` (CSV, JSONL, Parquet, gzip too) with a `ColumnMap`, then `fit`."""
        from persona_llm.segment.ingest import read_texts

        self.timings_: dict[str, float] = {}
        with self._stage("ingest"):
            result = read_texts(path, columns, max_rows=max_rows)
        return self._fit(
            result.texts, result.rejects, rows_read=result.rows_read, input_path=str(path),
            input_sha256=result.file_sha256, input_format=result.format,
        )

    def fit(
        self,
        data: pd.DataFrame,
        user_column: str = USER_ID,
        text_column: str = TEXT,
        id_column: str | None = None,
        attribute_columns: list[str] | None = None,
    ) -> SegmentPipeline:
        """Segment the users of a DataFrame with one row per text."""
        from persona_llm.segment.ingest import ColumnMap, texts_from_frame

        self.timings_ = {}
        columns = ColumnMap(
            user_column=user_column, text_column=text_column, id_column=id_column, attribute_columns=attribute_columns
        )
        with self._stage("ingest"):
            result = texts_from_frame(data, columns)
        return self._fit(
            result.texts, result.rejects, rows_read=result.rows_read, input_path="<dataframe>",
            input_sha256=result.file_sha256, input_format="dataframe",
        )

    def _fit(
        self,
        texts: pd.DataFrame,
        ingest_rejects: pd.DataFrame,
        *,
        rows_read: int,
        input_path: str,
        input_sha256: str,
        input_format: str,
    ) -> SegmentPipeline:
        started = datetime.now(UTC)
        rejects = [ingest_rejects]
        if texts.empty:
            raise InputError("no usable rows after reading", path=input_path)

        # Clean
        with self._stage("clean"):
            cleaned = self._clean(texts)
        rejects.append(cleaned.rejects)
        texts = cleaned.texts.reset_index(drop=True)
        if texts.empty:
            raise InputError("every row was rejected while cleaning; see rejects for reasons", path=input_path)

        # Embed
        with self._stage("embed"):
            embedder = self._embedder(texts)
            vectors = embedder.encode(texts[TEXT].tolist(), kind="passage", show_progress=self.show_progress)
        self.embedder_ = embedder

        # Users
        with self._stage("users"):
            users = UserAggregator(min_texts=self.min_texts, weighting=self.weighting).fit_transform(texts, vectors)
        rejects.append(users.rejects)
        texts = texts.loc[users.text_mask].reset_index(drop=True)
        vectors = vectors[users.text_mask]
        if len(users.user_ids) < 3:
            raise InputError(
                f"only {len(users.user_ids)} user(s) left with at least min_texts={self.min_texts} texts; "
                "need at least 3 to segment",
                path=input_path,
            )

        # Reduce + cluster
        with self._stage("reduce"):
            features = users.vectors
            if self.lexical_weight > 0:
                lexical = LexicalUserFeatures(
                    n_components=self.lexical_components, random_state=self.random_state
                ).fit_transform(texts, users.user_ids)
                features = combine_views(users.vectors, lexical, self.lexical_weight)
            reducer = self.reducer if isinstance(self.reducer, BaseReducer) else get_reducer(
                self.reducer, random_state=self.random_state, n_users=len(users.user_ids)
            )
            reduced = reducer.fit_transform(features)
        with self._stage("cluster"):
            clusterer = self.clusterer or HDBSCANClusterer(
                min_cluster_size=self.min_cluster_size,
                min_samples=self.min_samples,
                engine=self.engine,
                cluster_selection_method=self.cluster_selection_method,
                reassign_outliers=self.reassign_outliers,
                reassign_threshold=self.reassign_threshold,
                random_state=self.random_state,
            )
            clusterer.fit(reduced)
            labels = np.asarray(clusterer.labels_, dtype=np.int64)
            probabilities = np.asarray(clusterer.probabilities_, dtype=np.float64)
            quality_fn = getattr(clusterer, "quality", None)
            quality = quality_fn(reduced) if callable(quality_fn) else {}
        self.clusterer_ = clusterer
        self.reducer_ = reducer

        # Describe
        with self._stage("describe"):
            user_index = {u: i for i, u in enumerate(users.user_ids)}
            text_user_rows = np.array([user_index[u] for u in texts[USER_ID].astype(str)], dtype=np.int64)
            text_labels = labels[text_user_rows]
            texts["segment_id"] = text_labels
            centroids = segment_centroids(users.vectors, labels)
            run_id = self._run_id(input_sha256, started)
            segment_set = self._describe(
                run_id, texts, vectors, text_labels, users.user_ids, users.n_texts, users.vectors, labels,
                probabilities, centroids, quality,
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
        self.assigned_by_ = np.asarray(getattr(clusterer, "assigned_by_", np.where(labels >= 0, "cluster", "noise")))
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
            input_sha256=input_sha256,
            input_format=input_format,
            rows=RowCounts(
                read=rows_read,
                rejected=len(all_rejects),
                kept=len(texts),
                rejected_by_stage={str(k): int(v) for k, v in by_stage.items()},
            ),
            users={
                "segmented": int(len(users.user_ids)),
                "assigned": int((labels >= 0).sum()),
                "unassigned": int((labels < 0).sum()),
                "reassigned": int((self.assigned_by_ == "reassigned").sum()),
                "segments": int(segment_set.segments.__len__()),
            },
            clean_counts={str(k): int(v) for k, v in cleaned.counts.items()},
            parameters={
                **self.get_params(),
                "min_cluster_size_used": getattr(clusterer, "min_cluster_size_", None),
                "min_samples_used": getattr(clusterer, "min_samples_", None),
                "engine_used": getattr(clusterer, "engine_", None),
                "reducer_used": reducer_label(reducer),
            },
            models={"embedder": embedder.model_id},
            versions=package_versions(),
            timings_s={k: round(v, 3) for k, v in self.timings_.items()},
            peak_rss_mb=peak_rss_mb(),
            embedding_cache={
                "hits": int(getattr(embedder, "hits_", 0)),
                "misses": int(getattr(embedder, "misses_", 0)),
            },
        )
        return self

    # --- stages --------------------------------------------------------------------------------
    def _clean(self, texts: pd.DataFrame) -> StageResult:
        if self.cleaner == "skip":
            from persona_llm.segment.language import detect_language

            out = texts.copy()
            if LANGUAGE not in out.columns:
                out[LANGUAGE] = [detect_language(t) for t in out[TEXT].astype(str)]
            return StageResult(texts=out, counts={"kept": len(out)})
        if self.cleaner is None:
            from persona_llm.segment.clean import TextCleaner

            return TextCleaner().transform(texts)
        if isinstance(self.cleaner, BaseCleaner):
            return self.cleaner.transform(texts)
        raise ConfigError(f"cleaner must be a BaseCleaner, None or 'skip', got {self.cleaner!r}")

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
            # The backend choice is a sentence-transformers option; the e5 model has its own runtime.
            if self.embedding_backend and name.strip().lower() not in embed.E5_NAMES:
                params["backend"] = self.embedding_backend
            base = embed.get_embedder(name, **params)
        if self.cache_dir == "none" or isinstance(base, embed.CachedEmbedder):
            return base
        cache = embed.EmbeddingCache(path=self.cache_dir) if self.cache_dir else embed.EmbeddingCache()
        return embed.CachedEmbedder(base, cache)

    def _describe(
        self,
        run_id: str,
        texts: pd.DataFrame,
        vectors: np.ndarray,
        text_labels: np.ndarray,
        user_ids: np.ndarray,
        user_n_texts: np.ndarray,
        user_vectors: np.ndarray,
        labels: np.ndarray,
        probabilities: np.ndarray,
        centroids: np.ndarray,
        quality: dict[str, float | None],
    ) -> SegmentSet:
        keywords = KeywordExtractor(top_n=self.n_keywords).fit_transform(
            texts[TEXT].tolist(), text_labels, user_ids=texts[USER_ID].astype(str).tolist()
        )
        attrs = attribute_columns(texts.drop(columns=["segment_id"], errors="ignore"))
        attrs = summarizable_columns(texts, [a for a in attrs if a != SOURCE_ROW])
        user_table = user_attribute_table(texts, user_ids, attrs)
        summaries = summarize_attributes(user_table.reset_index(drop=True), labels, attrs)
        n_users = len(user_ids)
        segments = []
        for s in range(len(centroids)):
            members = labels == s
            t_mask = text_labels == s
            seg_texts = texts.loc[t_mask].reset_index(drop=True)
            reps = representatives_for(
                seg_texts, vectors[t_mask], centroids[s], k=self.n_representatives, diversity=self.mmr_diversity
            )
            langs = seg_texts[LANGUAGE].value_counts(normalize=True).head(5) if LANGUAGE in seg_texts else {}
            cohesion = float((user_vectors[members] @ centroids[s]).mean())
            segments.append(
                Segment(
                    segment_id=s,
                    size=int(members.sum()),
                    share=round(float(members.sum()) / n_users, 4),
                    n_texts=int(t_mask.sum()),
                    keywords=keywords.get(s, []),
                    representative_text_ids=[r.text_id for r in reps],
                    representatives=reps,
                    attributes=summaries.get(s, {}),
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
            segments=segments,
            quality={k: (round(v, 4) if isinstance(v, float) else v) for k, v in quality.items()},
        )

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

    def save(self, out_dir: str | Path, store: ChromaStore | None = None, *, overwrite: bool = False) -> Path:
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

    def write(self, run: RunDir, store: ChromaStore | None = None) -> RunDir:
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
        self.manifest_.store = {
            "kind": "http" if target.url else "persistent",
            "location": target.url or STORE,
            "collections_prefix": target.prefix,
            **counts,
        }
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

    def _run_id(self, input_sha256: str, started: datetime) -> str:
        params = json.dumps(self.get_params(), sort_keys=True, default=str)
        digest = hashlib.sha256(f"{input_sha256}\0{params}".encode()).hexdigest()[:8]
        return f"{started:%Y%m%dT%H%M%S}-{digest}"

    def _check_fitted(self) -> None:
        if not hasattr(self, "segments_"):
            raise RuntimeError("SegmentPipeline is not fitted yet: call fit() or fit_file() first")


def _describe_object(obj: object) -> str:
    params = {k: v for k, v in vars(obj).items() if not k.endswith("_") and not k.startswith("_")}
    return f"{type(obj).__name__}({', '.join(f'{k}={v!r}' for k, v in sorted(params.items()))})"
