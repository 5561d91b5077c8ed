"""`refresh`: bring a workspace's published run up to date with new data, keeping what is still true.

    1. read      new rows are read and cleaned like a build's and merged with the published texts
                 (persona_llm.refresh.data): added, changed, removed, duplicates dropped
    2. embed     only new texts, with the run's model, through the content-hash cache
    3. assign    new and changed users go to the published segments (persona_llm.segment.assign);
                 users that fit nowhere are pooled, and a dense group in the pool is an emerging segment
    4. drift     unassigned share, centroid movement, membership churn; `auto` re-clusters past a threshold
    5. recluster (when chosen) a fresh clustering of everyone, matched to the published segments
                 (persona_llm.refresh.matching): matched segments keep their ids, splits and merges recorded
    6. personas  kept (churn under `persona_threshold`, quotes re-verified), regenerated under the same id
                 as a new version, added or retired (persona_llm.refresh.lineage); model calls only for
                 regenerated and added ones
    7. report    refresh.json, refresh.md and a section of report.html (RefreshDiff)
    8. publish   through the workspace's atomic pointer, only when every gate passes; otherwise the run
                 stays unpublished beside the published one and the report says why

Everything happens under the workspace's writer lock in a staging run: a refresh killed at any point
(SIGKILL included) leaves the published run exactly as it was, and the next refresh starts over.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from persona_llm.common.vectors import normalize_rows
from persona_llm.errors import ConfigError, InputError
from persona_llm.refresh.data import MergedData, cached_embedder, embed_texts, merge_new_data, run_cleaner
from persona_llm.refresh.lineage import (
    PersonaPlan,
    carry_persona,
    history_after,
    persona_changes,
    plan_personas,
    verify_quotes,
)
from persona_llm.refresh.matching import (
    MatchResult,
    centroids_of,
    cosine,
    emerging_groups,
    match_segments,
    members_of,
    membership_churn,
)
from persona_llm.refresh.stages import CarriedLabels, KnownUsers, KnownVectors, NoDescription, PreparedTexts
from persona_llm.runs.rundir import PERSONAS_MARKDOWN, REFRESH_MARKDOWN, REPORT, RunDir
from persona_llm.runs.workspace import Workspace
from persona_llm.schema.columns import ColumnMap
from persona_llm.schema.frames import TEXT, USER_ID, concat_rejects
from persona_llm.schema.manifest import RowCounts
from persona_llm.schema.personas import Persona
from persona_llm.schema.refresh import (
    DriftFigures,
    GateResult,
    LineageEntry,
    QuoteChange,
    RefreshDiff,
    RefreshMode,
    RefreshStatus,
    SegmentChange,
)
from persona_llm.segment.assign import SegmentAssigner

log = logging.getLogger(__name__)

#: Exit codes a scheduler can act on (the CLI exits with them; 2 is bad input, as for every command).
EXIT_CODES: dict[str, int] = {"published": 0, "dry_run": 0, "unchanged": 3, "gate_failed": 4}
EXIT_BAD_INPUT = 2
EXIT_LOCKED = 5

#: SegmentPipeline parameters a re-clustering takes from the run (the stage objects are the refresh's own).
_NOT_RECLUSTER_PARAMS = {"cleaner", "embedder", "embedding_backend", "cache_dir", "ingester", "user_aggregator",
                         "clusterer", "describer"}  # fmt: skip

Progress = Callable[[str], None]


@dataclass
class DriftThresholds:
    """`auto` re-clusters when any is exceeded (each figure is defined in `DriftFigures`)."""

    unassigned_share: float = 0.2
    centroid_shift: float = 0.05
    membership_churn: float = 0.3
    emerging_groups: int = 1

    def as_dict(self) -> dict[str, float]:
        return {
            "unassigned_share": self.unassigned_share, "centroid_shift_max": self.centroid_shift,
            "membership_churn": self.membership_churn, "emerging_groups": float(self.emerging_groups),
        }  # fmt: skip


@dataclass
class RefreshResult:
    """What `refresh` did: `status` (published, unchanged, gate_failed, dry_run), the diff, and the run it
    wrote (None when nothing was written)."""

    status: RefreshStatus
    diff: RefreshDiff
    run: RunDir | None = None
    writer: Any = None

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.status]

    def summary(self) -> dict[str, Any]:
        """The one-line JSON summary a scheduler logs."""
        d = self.diff
        count = lambda items, key: {k: sum(1 for x in items if getattr(x, key) == k) for k in {getattr(x, key) for x in items}}  # noqa: E731
        return {
            "status": self.status, "exit_code": self.exit_code, "reason": d.reason, "previous_run": d.previous_run,
            "run": d.run, "mode": d.mode_used, "texts_added": d.data.texts_added, "texts_removed": d.data.texts_removed,
            "users_added": d.data.users_added, "segments": count(d.segments, "status"),
            "personas": count(d.personas, "action"), "llm_calls": d.llm_calls, "seconds": d.seconds,
            "gates_failed": [g.name for g in d.gates_failed()],
        }  # fmt: skip


@dataclass
class _Timer:
    timings: dict[str, float] = field(default_factory=dict)

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = round(self.timings.get(name, 0.0) + time.perf_counter() - t0, 3)


@dataclass
class _Users:
    """The refreshed users (sorted ids, as the pipeline orders them) with their labels."""

    ids: np.ndarray
    vectors: np.ndarray
    labels: np.ndarray
    probabilities: np.ndarray
    assigned_by: np.ndarray


def refresh(
    workspace: str | Path,
    new_data: str | Path,
    *,
    columns: ColumnMap,
    mode: RefreshMode = "auto",
    snapshot: bool = False,
    dry_run: bool = False,
    settings: Any = None,
    chat: Any = None,
    persona_threshold: float = 0.2,
    drift: DriftThresholds | None = None,
    max_unassigned: float = 0.5,
    max_coverage_drop: float = 0.1,
    language: str = "auto",
    progress: Progress | None = None,
    persona_progress: Callable[[Any], None] | None = None,
    **writer_params: Any,
) -> RefreshResult:
    """Refresh the published run of `workspace` with `new_data` (see the module docstring).

    columns: how to read `new_data` (a ColumnMap, as for build). snapshot: `new_data` is the full data
    (users and texts it lacks are removed); else its rows are appended. mode: "assign" (new users into the
    published segments), "recluster" (a fresh clustering matched to them) or "auto" (assign, and
    re-cluster when drift passes `drift`). persona_threshold: segments whose membership churn is below
    it keep their persona. max_unassigned: the gate on the share of new or changed users an assign may
    leave in no segment; max_coverage_drop: the gate on coverage lost. settings/chat/language/writer_params:
    for the persona writer (PersonaWriter), only used when a persona must be written. progress: called with
    one line per step; persona_progress: the writer's per-persona progress (PersonaProgress).
    Raises WorkspaceLockedError when another process writes the workspace, InputError/ConfigError on bad
    input; every other outcome is a RefreshResult.
    """
    if mode not in ("auto", "assign", "recluster"):
        raise ConfigError(f"mode must be auto, assign or recluster, not {mode!r}")
    if not 0.0 < persona_threshold <= 1.0:
        raise ConfigError(f"persona_threshold must be in (0, 1], not {persona_threshold}")
    say = progress or (lambda line: log.info("%s", line))
    if persona_progress is not None:
        writer_params = {**writer_params, "progress": persona_progress}
    thresholds = drift or DriftThresholds()
    started = time.perf_counter()
    timer = _Timer()
    ws = Workspace.open(workspace)
    if not Path(new_data).is_file():
        raise InputError("new data file not found", path=str(new_data))
    with ws.lock():
        parent = ws.current()
        manifest = parent.load_manifest()
        params = dict(manifest.parameters)
        model_id = manifest.models.get("embedder")
        if not model_id:
            raise InputError("the published run's manifest names no embedding model (models.embedder)", path=str(parent.path))
        with timer.stage("read"):
            say(f"refresh: reading {new_data}")
            merged = merge_new_data(
                parent, new_data, columns, snapshot=snapshot, cleaner=run_cleaner(parent), forgotten=ws.forgotten_users()
            )
        base = dict(previous_run=parent.path.name, mode_asked=mode, persona_threshold=persona_threshold)
        if merged.unchanged and mode != "recluster":
            reason = "the new data holds no text the published run does not already have"
            diff = RefreshDiff(status="unchanged", reason=reason, mode_used="none", data=merged.change, **base)  # type: ignore[arg-type]
            return _finish(RefreshResult("unchanged", diff), started, timer)
        with timer.stage("embed"):
            fresh = int((merged.parent_row < 0).sum())
            say(f"refresh: embedding {fresh} new texts (the published run's {len(merged.texts) - fresh} are reused)")
            embed_texts(merged, parent, cached_embedder(model_id, _cache_dir(params)))
        with timer.stage("assign"):
            texts, users, rejects = _aggregate(merged, params)
            say(f"refresh: assigning {len(merged.users_added | merged.users_changed)} new or changed users")
            old = _old_users(parent)
            assigned, figures, assigner_note = _assign(old, users, merged, params, texts, thresholds)
        recluster = mode == "recluster" or (mode == "auto" and bool(figures.exceeded))
        match: MatchResult | None = None
        next_segment_id = max(parent.load_persona_lineage().next_segment_id, max(old.members, default=-1) + 1)
        if recluster:
            with timer.stage("recluster"):
                say(f"refresh: re-clustering {len(users.user_ids)} users" + (f" ({', '.join(figures.exceeded)})" if figures.exceeded else ""))
                assigned, match = _recluster(texts, merged, users, old, params, model_id, next_segment_id)
            next_segment_id = match.next_segment_id
        figures.assigner = assigner_note
        new_members = members_of(assigned.ids, assigned.labels)
        parent_personas = parent.load_personas()
        plan = plan_personas(
            parent_personas, old.members, new_members, threshold=persona_threshold, next_segment_id=next_segment_id
        )
        segment_changes = _segment_changes(parent, old, assigned, plan, match, persona_threshold)
        mode_used: Literal["assign", "recluster"] = "recluster" if recluster else "assign"
        if merged.unchanged and old.members == new_members:
            reason = "re-clustering the same data found the same segments, which keep their ids"
            diff = RefreshDiff(
                status="unchanged", reason=reason, mode_used="recluster", data=merged.change, drift=figures,
                segments=segment_changes, personas=_planned_personas(plan), **base,  # type: ignore[arg-type]
            )  # fmt: skip
            return _finish(RefreshResult("unchanged", diff), started, timer)
        if dry_run:
            diff = RefreshDiff(
                status="dry_run", reason="dry run: nothing was written or published", mode_used=mode_used,
                data=merged.change, drift=figures, segments=segment_changes,
                splits=match.splits if match else [], merges=match.merges if match else [],
                personas=_planned_personas(plan), **base,  # type: ignore[arg-type]
            )  # fmt: skip
            return _finish(RefreshResult("dry_run", diff), started, timer)

        writer = None
        with ws.new_run() as run:
            with timer.stage("write"):
                say("refresh: writing the refreshed run")
                pipe = _write_segments(run, parent, texts, merged, users, assigned, params, model_id)
                run.save_rejects(concat_rejects([parent.load_rejects(), rejects]))
                _save_manifest(run, pipe, params, merged, rejects, parent, mode_used, timer)
                plan.lineage.next_segment_id = max(plan.lineage.next_segment_id, next_segment_id)
                run.save_persona_lineage(plan.lineage)
                dropped = _carry_personas(run, parent, plan)
            failures: dict[int, str] = {}
            if plan.to_write:
                with timer.stage("personas"):
                    say(f"refresh: writing personas for segments {', '.join(map(str, plan.to_write))}")
                    options = {"agent": _parent_agent(parent_personas), **writer_params}
                    writer, failures = _write_personas(run, plan, settings, chat, language, options)
            final = {p.segment_id: p for p in run.load_personas()}
            for sid in plan.add:  # new segments' personas got ids minted from the data: the lineage names them
                if sid in final:
                    plan.lineage.segments[sid] = LineageEntry(persona_id=final[sid].persona_id, version=final[sid].version)
            run.save_persona_lineage(plan.lineage)
            run.save_persona_history(history_after(parent.load_persona_history(), plan, final, run.run_id))
            index = _text_index(run)
            gates = _gates(
                run, parent, list(final.values()), failures, figures, mode_used, index,
                max_unassigned=max_unassigned, max_coverage_drop=max_coverage_drop,
            )  # fmt: skip
            failed = [g for g in gates if not g.passed]
            status: RefreshStatus = "gate_failed" if failed else "published"
            reason = "; ".join(f"{g.name}: {g.detail}" for g in failed)
            diff = RefreshDiff(
                status=status, reason=reason, run=run.run_id, mode_used=mode_used, data=merged.change, drift=figures,
                segments=segment_changes, splits=match.splits if match else [], merges=match.merges if match else [],
                personas=persona_changes(plan, final, dropped, failures), gates=gates,
                llm_calls=sum(1 for r in getattr(writer, "records_", []) if not r.cached), **base,  # type: ignore[arg-type]
            )  # fmt: skip
            _finish(RefreshResult(status, diff), started, timer)  # the time until now, written into the run
            _save_reports(run, diff, list(final.values()))
            if run.store_path.is_dir():
                # This process read every row of the new data, forgotten users' included: none of its memory
                # may reach the disk in the slack space of the store's files.
                from persona_llm.segment.store import zero_unused_space

                zero_unused_space(run.store_path)
        result = RefreshResult(status, diff, run, writer)
        if status == "published":
            say(f"refresh: publishing run {run.path.name}")
            ws.publish(run.path.name, action="refresh")
        else:
            say(f"refresh: NOT published ({reason}); the published run is still {parent.path.name}")
        return result


def _finish(result: RefreshResult, started: float, timer: _Timer) -> RefreshResult:
    result.diff.seconds = round(time.perf_counter() - started, 3)
    result.diff.timings_s = dict(timer.timings)
    return result


def _cache_dir(params: dict[str, Any]) -> Any:
    """The run's embedding cache (its recorded cache_dir, unless that temporary folder is gone)."""
    cache_dir = params.get("cache_dir")
    if cache_dir not in (None, "none") and not Path(str(cache_dir)).exists():
        return None
    return cache_dir


# -- users and assignment ------------------------------------------------------------------------------


@dataclass
class _OldUsers:
    ids: np.ndarray
    vectors: np.ndarray
    labels: np.ndarray
    probabilities: np.ndarray
    assigned_by: np.ndarray
    members: dict[int, set[str]]
    centroids: dict[int, np.ndarray]
    label_of: dict[str, int]
    min_cohesion: float  # the loosest segment's mean member cosine to its centroid


def _old_users(parent: RunDir) -> _OldUsers:
    frame = parent.load_assignments()
    vectors = parent.load_user_embeddings()
    ids = frame[USER_ID].astype(str).to_numpy()
    labels = frame["segment_id"].to_numpy(dtype=np.int64)
    probs = frame["probability"].to_numpy(dtype=np.float64) if "probability" in frame else (labels >= 0).astype(float)
    by = frame["assigned_by"].astype(str).to_numpy() if "assigned_by" in frame else np.where(labels >= 0, "cluster", "noise")
    centroids = centroids_of(vectors, labels)
    unit = normalize_rows(vectors, dtype=np.float32)
    cohesion = [float((unit[labels == s] @ c).mean()) for s, c in centroids.items()]
    return _OldUsers(
        ids=ids, vectors=vectors, labels=labels, probabilities=probs, assigned_by=by,
        members=members_of(ids, labels), centroids=centroids,
        label_of=dict(zip(ids.tolist(), labels.tolist(), strict=True)), min_cohesion=min(cohesion, default=0.0),
    )  # fmt: skip


def _aggregate(merged: MergedData, params: dict[str, Any]) -> tuple[Any, Any, Any]:
    """User vectors as the pipeline makes them; texts of users dropped for too few texts go to rejects."""
    from persona_llm.segment.users import UserAggregator

    assert merged.vectors is not None
    users = UserAggregator(
        min_texts=int(params.get("min_texts", 1)), weighting=params.get("weighting", "length")
    ).fit_transform(merged.texts, merged.vectors)
    texts = merged.texts.loc[users.text_mask].reset_index(drop=True)
    merged.vectors = merged.vectors[users.text_mask]
    if len(users.user_ids) < 3:
        raise InputError(f"only {len(users.user_ids)} user(s) would be left to segment; segmenting needs at least 3")
    return texts, users, concat_rejects([merged.rejects, users.rejects])


def _assign(
    old: _OldUsers, users: Any, merged: MergedData, params: dict[str, Any], texts: Any, thresholds: DriftThresholds
) -> tuple[_Users, DriftFigures, str]:
    """Unchanged users keep their segment; new and changed ones are assigned (a changed user stays in
    their segment while they still fit it); then the drift figures."""
    ids = np.asarray(users.user_ids, dtype=str)
    labels = np.full(len(ids), -1, dtype=np.int64)
    probs = np.zeros(len(ids))
    by = np.full(len(ids), "noise", dtype=object)
    old_row = {u: i for i, u in enumerate(old.ids.tolist())}
    touched = merged.users_added | merged.users_changed
    redo = np.array([u in touched or u not in old_row for u in ids.tolist()], dtype=bool)
    for k in np.flatnonzero(~redo):
        i = old_row[str(ids[k])]
        labels[k], probs[k], by[k] = old.labels[i], old.probabilities[i], old.assigned_by[i]
    assigner = SegmentAssigner(min_threshold=float(params.get("reassign_threshold", 0.3))).fit(old.vectors, old.labels)
    rows = np.flatnonzero(redo)
    unassigned = 0
    if len(rows):
        result = assigner.assign(users.vectors[rows])
        for n, k in enumerate(rows):
            label = int(result.labels[n])
            before = old.label_of.get(str(ids[k]), -1)
            if before >= 0 and label != before and before in old.centroids:
                # A changed user who still fits their segment stays: a new post is no reason to move.
                sim = float(users.vectors[k] @ old.centroids[before] / max(np.linalg.norm(users.vectors[k]), 1e-12))
                if sim >= assigner.threshold_for(before):
                    label, result.scores[n], result.assigned_by[n] = before, sim, "centroid"
            labels[k], probs[k] = label, float(np.clip(result.scores[n], 0.0, 1.0)) if label >= 0 else 0.0
            by[k] = result.assigned_by[n] if label >= 0 else "noise"
        unassigned = int((labels[rows] < 0).sum())
    assigned = _Users(ids=ids, vectors=users.vectors, labels=labels, probabilities=probs, assigned_by=by.astype(str))

    new_centroids = centroids_of(users.vectors, labels)
    sizes = {s: len(m) for s, m in members_of(ids, labels).items()}
    shifts = {s: 1.0 - cosine(c, new_centroids[s]) for s, c in old.centroids.items() if s in new_centroids}
    total = sum(sizes.get(s, 0) for s in shifts) or 1
    pool = rows[labels[rows] < 0]
    emerging = []
    if len(pool):
        from persona_llm.segment.cluster import default_min_cluster_size

        mcs = int(params.get("min_cluster_size_used") or default_min_cluster_size(len(ids)))
        assert merged.vectors is not None
        emerging = emerging_groups(
            users.vectors[pool], ids[pool].tolist(), old.centroids, texts, merged.vectors,
            min_cluster_size=mcs, min_cohesion=old.min_cohesion,
        )  # fmt: skip
    figures = DriftFigures(
        users_before=len(old.ids),
        users_after=len(ids),
        new_or_changed_users=int(len(rows)),
        unassigned_new_users=unassigned,
        unassigned_share=round(unassigned / len(rows), 4) if len(rows) else 0.0,
        centroid_shift_max=round(max(0.0, *shifts.values()), 5),
        centroid_shift_mean=round(max(0.0, sum(v * sizes.get(s, 0) for s, v in shifts.items()) / total), 5),
        membership_churn=round(membership_churn(old.label_of, dict(zip(ids.tolist(), labels.tolist(), strict=True))), 4),
        emerging=emerging,
        thresholds=thresholds.as_dict(),
    )
    exceeded = []
    if figures.unassigned_share > thresholds.unassigned_share:
        exceeded.append(f"unassigned share {figures.unassigned_share:.2f} > {thresholds.unassigned_share}")
    if figures.centroid_shift_max > thresholds.centroid_shift:
        exceeded.append(f"centroid shift {figures.centroid_shift_max:.3f} > {thresholds.centroid_shift}")
    if figures.membership_churn > thresholds.membership_churn:
        exceeded.append(f"membership churn {figures.membership_churn:.2f} > {thresholds.membership_churn}")
    if len(emerging) >= thresholds.emerging_groups:
        exceeded.append(f"{len(emerging)} emerging segment(s)")
    figures.exceeded = exceeded
    return assigned, figures, assigner.prediction_note_


def _recluster(
    texts: Any, merged: MergedData, users: Any, old: _OldUsers, params: dict[str, Any], model_id: str, next_id: int
) -> tuple[_Users, MatchResult]:
    """A fresh clustering of every user with the run's own parameters, matched to the published segments."""
    from persona_llm.segment.base import NoCleaner
    from persona_llm.segment.pipeline import SegmentPipeline

    assert merged.vectors is not None
    names = set(SegmentPipeline().get_params()) - _NOT_RECLUSTER_PARAMS
    kept = {k: params[k] for k in names if k in params}
    pipe = SegmentPipeline(
        **kept, ingester=PreparedTexts(merged.input_sha256), cleaner=NoCleaner(), cache_dir="none",
        embedder=KnownVectors(model_id, texts[TEXT].astype(str).tolist(), merged.vectors),
        user_aggregator=KnownUsers(users), describer=NoDescription(),
    ).fit(texts, id_column="text_id", attribute_columns=[])  # fmt: skip
    _same_users(pipe.user_ids_, users.user_ids)
    fresh = np.asarray(pipe.labels_, dtype=np.int64)
    match = match_segments(
        old.members, old.centroids, members_of(pipe.user_ids_, fresh), centroids_of(users.vectors, fresh),
        next_segment_id=next_id,
    )  # fmt: skip
    labels = np.array([match.mapping.get(int(v), -1) if v >= 0 else -1 for v in fresh], dtype=np.int64)
    reclustered = _Users(
        ids=np.asarray(users.user_ids, dtype=str), vectors=users.vectors, labels=labels,
        probabilities=np.asarray(pipe.probabilities_, dtype=np.float64), assigned_by=np.asarray(pipe.assigned_by_, dtype=str),
    )  # fmt: skip
    return reclustered, match


def _same_users(got: Any, expected: Any) -> None:
    if list(map(str, got)) != list(map(str, expected)):
        raise RuntimeError("the pipeline ordered the users differently from the refresh's own aggregation")


# -- writing the run -----------------------------------------------------------------------------------


def _write_segments(
    run: RunDir, parent: RunDir, texts: Any, merged: MergedData, users: Any, assigned: _Users, params: dict[str, Any], model_id: str
) -> Any:
    """The refreshed run's segment files and store, by the build's own pipeline with the refresh's labels."""
    from persona_llm.segment.base import NoCleaner
    from persona_llm.segment.pipeline import SegmentPipeline
    from persona_llm.segment.store import ChromaStore

    assert merged.vectors is not None
    pipe = SegmentPipeline(
        ingester=PreparedTexts(merged.input_sha256), cleaner=NoCleaner(), cache_dir="none",
        embedder=KnownVectors(model_id, texts[TEXT].astype(str).tolist(), merged.vectors),
        user_aggregator=KnownUsers(users), lexical_weight=0.0,
        reducer="none", clusterer=CarriedLabels(assigned.probabilities, assigned.assigned_by),
        n_keywords=int(params.get("n_keywords", 10)), n_representatives=int(params.get("n_representatives", 8)),
        mmr_diversity=float(params.get("mmr_diversity", 0.3)), random_state=int(params.get("random_state", 0)),
    )  # fmt: skip
    attributes = [c for c in texts.columns if c not in ("text_id", "user_id", "text", "source_row", "language")]
    labels = dict(zip(assigned.ids.tolist(), assigned.labels.tolist(), strict=True))
    pipe.fit(texts, id_column="text_id", attribute_columns=attributes, y=labels)
    _same_users(pipe.user_ids_, users.user_ids)
    info = parent.load_manifest().store
    store = None
    if info.get("kind") == "http":
        store = ChromaStore(url=str(info.get("location")), prefix=str(info.get("collections_prefix", "persona_llm_")))
    pipe.write(run, store=store)
    return pipe


def _save_manifest(
    run: RunDir, pipe: Any, params: dict[str, Any], merged: MergedData, rejects: Any, parent: RunDir, mode: str, timer: _Timer
) -> None:
    """The manifest of a refreshed run: the segmentation parameters of the runs it descends from (so a
    stability eval or the next re-clustering uses them), what this refresh read, and its timings."""
    manifest = pipe.manifest_
    manifest.parameters = {
        **{k: v for k, v in params.items() if k != "refresh"},
        "refresh": {"mode": mode, "parent_run": parent.path.name, "parent_run_id": parent.run_id, "snapshot": merged.change.snapshot},
    }
    manifest.input_path = merged.change.source
    manifest.input_format = merged.input_format
    by_stage = rejects["stage"].value_counts().to_dict() if len(rejects) else {}
    manifest.rows = RowCounts(
        read=merged.change.rows_read, rejected=len(rejects), kept=len(pipe.texts_),
        rejected_by_stage={str(k): int(v) for k, v in by_stage.items()},
        of_forgotten_users=merged.change.rows_of_forgotten_users,
    )  # fmt: skip
    manifest.embedding_cache = {"hits": merged.change.texts_from_cache, "misses": merged.change.texts_embedded}
    manifest.timings_s = {**timer.timings, **{f"write_{k}": v for k, v in manifest.timings_s.items()}}
    run.save_manifest(manifest)


def _carry_personas(run: RunDir, parent: RunDir, plan: PersonaPlan) -> dict[int, list[QuoteChange]]:
    """Kept personas into the new run (counts updated, quotes re-verified) and into its store; returns the
    quotes dropped, by segment."""
    if not plan.keep:
        return {}
    segment_set = run.load_segments()
    index = _text_index(run)
    cohesions = sorted(s.quality.cohesion for s in segment_set.segments)
    median = cohesions[len(cohesions) // 2] if cohesions else None
    carried: list[Persona] = []
    dropped: dict[int, list[QuoteChange]] = {}
    for sid, persona in sorted(plan.keep.items()):
        new, gone = carry_persona(persona, segment_set, index, run_id=run.run_id, median_cohesion=median)
        carried.append(new)
        if gone:
            dropped[sid] = gone
    run.save_personas(carried)
    _store_personas(run, parent, carried)
    return dropped


def _store_personas(run: RunDir, parent: RunDir, personas: list[Persona]) -> None:
    """Kept personas into the new run's store, with the vectors the parent's store holds for them (the
    persona text they were embedded from is unchanged); re-embedded only if the parent has none."""
    from persona_llm.segment.store import PERSONAS, ChromaStore, read_copy, store_for_run

    target = store_for_run(run)
    if not isinstance(target, ChromaStore):
        return
    source = store_for_run(parent)
    vectors: dict[str, np.ndarray] = {}
    if isinstance(source, ChromaStore):
        wanted = {f"{parent.run_id}:{p.persona_id}" for p in personas}
        with read_copy(source, run.path / ".parent-store") as readable, contextlib.suppress(Exception):
            records = (readable.records(PERSONAS, parent.run_id) if readable else None) or {"ids": [], "embeddings": []}
            vectors = {
                i.split(":", 1)[1]: np.asarray(e) for i, e in zip(records["ids"], records["embeddings"], strict=True) if i in wanted
            }  # a store without these records: re-embedded below
    missing = [p for p in personas if p.persona_id not in vectors]
    if missing:
        from persona_llm.segment.embed import choose_embedder_for_languages, get_embedder

        shares = {p.language: 1.0 for p in missing}
        embedder = get_embedder(choose_embedder_for_languages(shares))
        for p, v in zip(missing, embedder.encode([p.embedding_text() for p in missing]), strict=True):
            vectors[p.persona_id] = np.asarray(v)
    rows = [{**p.model_dump(mode="json"), "id": p.persona_id} for p in personas]
    target.upsert_personas(run.run_id, rows, np.stack([vectors[p.persona_id] for p in personas]))
    target.close()


def _parent_agent(personas: Sequence[Any]) -> str:
    """The agent definition most of the parent run's personas were written with: a refresh regenerates
    changed segments the way their neighbours were written (the default agent for a run without personas)."""
    from persona_llm.personas.writer import WRITER_AGENT

    counts = Counter(p.provenance.agent for p in personas)
    return counts.most_common(1)[0][0] if counts else WRITER_AGENT


def _write_personas(
    run: RunDir, plan: PersonaPlan, settings: Any, chat: Any, language: str, writer_params: dict[str, Any]
) -> tuple[Any, dict[int, str]]:
    from persona_llm.personas.writer import PersonaWriteError, PersonaWriter

    writer = PersonaWriter(settings, chat=chat, language=language, **writer_params)
    try:
        writer.write(run, plan.to_write)
    except PersonaWriteError as exc:
        return writer, dict(exc.failures)
    return writer, {}


def _text_index(run: RunDir) -> Any:
    from persona_llm.personas.gates import TextIndex

    return TextIndex.from_frame(run.load_texts(["text_id", "user_id", "segment_id", "text"]))


# -- the report ----------------------------------------------------------------------------------------


def _segment_changes(
    parent: RunDir, old: _OldUsers, new: _Users, plan: PersonaPlan, match: MatchResult | None, threshold: float
) -> list[SegmentChange]:
    before = {s.segment_id: s for s in parent.load_segments().segments}
    after_members = members_of(new.ids, new.labels)
    after_centroids = centroids_of(new.vectors, new.labels)
    n_after = len(new.ids)
    out = []
    for sid in sorted(set(old.members) | set(after_members)):
        was, now = old.members.get(sid, set()), after_members.get(sid, set())
        seg = before.get(sid)
        if not now:
            status = "retired"
        elif not was:
            status = "added"
        else:
            status = "kept" if plan.churn.get(sid, 0.0) < threshold else "changed"
        shift = None
        if sid in old.centroids and sid in after_centroids:
            shift = round(1.0 - cosine(old.centroids[sid], after_centroids[sid]), 5)
        out.append(
            SegmentChange(
                segment_id=sid, status=status,  # type: ignore[arg-type]
                size_before=seg.size if seg else (len(was) or None), size_after=len(now) or None,
                share_before=seg.share if seg else None, share_after=round(len(now) / n_after, 4) if now else None,
                joined=len(now - was), left=len(was - now), churn=round(plan.churn.get(sid, 1.0 if not (was and now) else 0.0), 4),
                centroid_shift=shift,
                split_from=match.split_from.get(sid) if match else None,
                merged_from=match.merged_from.get(sid, []) if match else [],
                merged_into=match.merged_into.get(sid) if match else None,
                match_score=match.scores.get(sid) if match else None,
            )  # fmt: skip
        )
    return out


def _planned_personas(plan: PersonaPlan) -> list[Any]:
    """A dry run's persona section: what would happen (nothing is generated)."""
    from persona_llm.schema.refresh import PersonaChange

    out = [
        PersonaChange(persona_id=p.persona_id, segment_id=s, name=p.name, action="kept", version_before=p.version,
                      version_after=p.version, churn=plan.churn.get(s))
        for s, p in sorted(plan.keep.items())
    ]  # fmt: skip
    out += [
        PersonaChange(persona_id=p.persona_id, segment_id=s, name=p.name, action="regenerated", version_before=p.version,
                      version_after=p.version + 1, churn=plan.churn.get(s), flags=["would be regenerated"])
        for s, p in sorted(plan.regenerate.items())
    ]  # fmt: skip
    out += [PersonaChange(persona_id="", segment_id=s, name="", action="added", flags=["would be written"]) for s in plan.add]
    out += [
        PersonaChange(persona_id=p.persona_id, segment_id=s, name=p.name, action="retired", version_before=p.version)
        for s, p in sorted(plan.retire.items())
    ]
    return out


def _gates(
    run: RunDir,
    parent: RunDir,
    personas: list[Persona],
    failures: dict[int, str],
    figures: DriftFigures,
    mode_used: str,
    index: Any,
    *,
    max_unassigned: float,
    max_coverage_drop: float,
) -> list[GateResult]:
    """What must hold before a refreshed run may replace the published one."""
    before, after = parent.load_segments(), run.load_segments()
    bad_quotes = verify_quotes(personas, index)
    gates = [
        GateResult(
            name="personas_written", passed=not failures,
            detail="every persona to (re)write was written" if not failures
            else "; ".join(f"segment {s}: {why[:160]}" for s, why in sorted(failures.items())),
        ),
        GateResult(
            name="quotes_verified", passed=not bad_quotes,
            detail=f"all {sum(len(p.quotes) for p in personas)} quotes are verbatim in a text of their segment"
            if not bad_quotes else f"{len(bad_quotes)} quote(s) not found: {'; '.join(bad_quotes[:5])}",
        ),
        GateResult(
            name="coverage", passed=after.coverage >= before.coverage - max_coverage_drop,
            detail=f"{after.coverage:.1%} of users in a segment (published: {before.coverage:.1%}; "
            f"may drop by {max_coverage_drop:.0%})",
        ),
    ]  # fmt: skip
    if mode_used == "assign":
        ok = figures.unassigned_share <= max_unassigned
        gates.append(
            GateResult(
                name="new_users_placed", passed=ok,
                detail=f"{figures.unassigned_new_users} of {figures.new_or_changed_users} new or changed users fit no "
                f"segment ({figures.unassigned_share:.0%}; at most {max_unassigned:.0%}" + ("" if ok else "; try --mode recluster") + ")",
            )  # fmt: skip
        )
    return gates


def _save_reports(run: RunDir, diff: RefreshDiff, personas: list[Persona]) -> None:
    from persona_llm.personas.report import html_report, markdown_report, refresh_markdown

    ordered = sorted(personas, key=lambda p: p.segment_id)
    run.save_refresh_diff(diff)
    run.save_text(REFRESH_MARKDOWN, refresh_markdown(diff))
    run.save_text(PERSONAS_MARKDOWN, markdown_report(ordered, run_id=run.run_id))
    run.save_text(REPORT, html_report(run, ordered))


