"""Evaluate a run directory: load it, call the metric functions, write `eval.json`, check thresholds.

    report = evaluate_run("runs/x", labels="age_group")            # every group whose inputs exist
    report = evaluate_run("runs/x", None, load_suite("evals/suites/ci.toml"), embedder=emb)
    failures = check_thresholds(report, suite)                      # [] means the suite passed

`run_suite` builds runs from the shared data with a pipeline callable (so it does not depend on the
pipeline's internals) and evaluates each; `write_bench_report` writes the dated benchmark record.
"""

from __future__ import annotations

import datetime as dt
import html
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, Field

from persona_llm import __version__
from persona_llm.errors import ConfigError, InputError, PersonaLLMError
from persona_llm.evaluation import brief_eval
from persona_llm.evaluation import claims as claims_mod
from persona_llm.evaluation import metrics as m
from persona_llm.evaluation.judge import JudgeRecord, LLMJudge, judge_metrics, planted_claims
from persona_llm.evaluation.narrative import LexicalSupport, narrative_metrics
from persona_llm.evaluation.stability import SegmentFn, not_measurable_reason, stability
from persona_llm.evaluation.suite import GROUPS, Options, Suite, load_dataset, load_suite, shared_data_dir
from persona_llm.runs.rundir import EVAL, MANIFEST, TEXT_EMBEDDINGS, TEXTS, USER_EMBEDDINGS, RunDir

if TYPE_CHECKING:
    from persona_llm.schema.personas import Persona

EVAL_SCHEMA_VERSION = "1"

Pipeline = Callable[..., Any]
"""Builds a run directory (segments and personas) from a texts frame: pipeline(texts, run_dir, seed), and
pipeline(texts, run_dir, seed, max_personas=N) for a data set that sets its own `max_personas`."""


class Failure(BaseModel):
    """A missed threshold (or a thresholded metric that could not be computed)."""

    metric: str
    bound: Literal["min", "max"]
    threshold: float
    value: float | None
    message: str


class EvalReport(BaseModel):
    """Everything one evaluation measured; `eval.json` in the run directory."""

    schema_version: str = EVAL_SCHEMA_VERSION
    run_id: str
    run_dir: str
    dataset: str | None = None
    suite: str | None = None
    labels: str | None = None
    created_at: str
    version: str
    metrics: dict[str, float | None] = Field(default_factory=dict)
    details: dict[str, Any] = Field(default_factory=dict)
    skipped: dict[str, str] = Field(default_factory=dict, description="metric group -> why it did not run")
    notes: list[str] = Field(default_factory=list)
    failures: list[Failure] = Field(default_factory=list)
    seconds: dict[str, float] = Field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return not self.failures


class SuiteResult(BaseModel):
    suite: str
    created_at: str
    reports: list[EvalReport]
    #: the CPU model and vector extensions the suite ran on: int8 embeddings, and so segments, differ by
    #: CPU, and a floor calibrated from this record names the machine it holds on
    machine: str = ""

    @property
    def failures(self) -> list[tuple[str, Failure]]:
        return [(r.dataset or r.run_id, f) for r in self.reports for f in r.failures]

    @property
    def passed(self) -> bool:
        return not self.failures


def run_embedder(run_dir: str | Path | RunDir) -> Any:
    """The embedding model a run was built with (from its manifest), for persona metrics that compare
    persona vectors with the run's text vectors."""
    from persona_llm.segment.embed import embedder_from_model_id

    run = run_dir if isinstance(run_dir, RunDir) else RunDir.open(run_dir)
    manifest = run.file(MANIFEST)
    if not run.has(MANIFEST):
        raise InputError(f"{manifest}: missing; cannot tell which embedding model the run used")
    model_id = run.load_manifest().models.get("embedder")
    if not model_id:
        raise InputError(f"{manifest}: field 'models.embedder' is missing")
    return embedder_from_model_id(str(model_id))


def _suite_embedder(embedder: Any, suite: Suite, run_dir: Path) -> Any:
    """Resolve run_suite's `embedder`: "run" loads the run's model, only when a group needs vectors."""
    if not (isinstance(embedder, str) and embedder == "run"):
        return embedder
    needs_vectors = suite.enabled("distinctness") or suite.enabled("representativeness")
    return run_embedder(run_dir) if needs_vectors else None


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


# ---------------------------------------------------------------------------------------------------
# Loading a run directory
# ---------------------------------------------------------------------------------------------------


class EvalInputs:
    """The parts of a run evaluation reads, loaded once through RunDir; optional parts are None when absent."""

    def __init__(self, run_dir: str | Path | RunDir) -> None:
        self.rundir = run_dir if isinstance(run_dir, RunDir) else RunDir.open(run_dir)
        self.run_dir = self.rundir.path
        run = self.rundir
        self.segments = run.load_segments()
        self.assignments = run.load_assignments()
        self.texts: pd.DataFrame | None = run.load_texts() if run.has(TEXTS) else None
        self.user_embeddings: np.ndarray | None = run.load_user_embeddings() if run.has(USER_EMBEDDINGS) else None
        self.text_embeddings: np.ndarray | None = (
            run.load_text_embeddings() if self.texts is not None and run.has(TEXT_EMBEDDINGS) else None
        )
        self.personas: list[Any] | None = run.load_personas() if run.has_personas() else None
        self.manifest: dict[str, Any] = run.load_manifest().model_dump() if run.has(MANIFEST) else {}

    def user_segments(self) -> pd.Series:
        return self.assignments.drop_duplicates("user_id").set_index("user_id")["segment_id"]

    def user_column(self, column: str) -> pd.Series:
        """One value per user for `column`, from assignments.csv or else the majority over texts.parquet."""
        if column in self.assignments.columns:
            return (
                self.assignments.drop_duplicates("user_id").set_index("user_id")[column].dropna().astype(str)
            )
        if self.texts is not None and column in self.texts.columns:
            return claims_mod.user_attribute(self.texts, column)
        available = sorted(
            set(self.assignments.columns) | set(self.texts.columns if self.texts is not None else [])
        )
        raise ConfigError(
            f"column {column!r} is in neither assignments.csv nor texts.parquet; columns: {available}"
        )


# ---------------------------------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------------------------------


@dataclass
class GroupResult:
    """What one metric group adds to the report; `evaluate_run` merges these in group order."""

    metrics: dict[str, float | None] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    """metric group -> why it (or part of it) did not run"""
    notes: list[str] = field(default_factory=list)
    timed: bool = True
    """False when the group was skipped for a missing input before any work: no entry in `seconds`."""

    @classmethod
    def skip(cls, group: str, why: str, *, timed: bool = False) -> GroupResult:
        return cls(skipped={group: why}, timed=timed)

    def merge_into(self, report: EvalReport) -> None:
        report.metrics.update(self.metrics)
        report.details.update(self.details)
        report.skipped.update(self.skipped)
        report.notes.extend(self.notes)


def _sources(run: EvalInputs) -> dict[str, m.SourceText]:
    assert run.texts is not None
    seg_of = run.user_segments()
    segs = run.texts["user_id"].map(seg_of)
    if "segment_id" in run.texts.columns:
        segs = segs.fillna(run.texts["segment_id"])
    segs = segs.fillna(m.NOISE).astype(int)
    return {
        tid: m.SourceText(text=str(text), user_id=uid, segment_id=int(seg))
        for tid, text, uid, seg in zip(
            run.texts["text_id"], run.texts["text"], run.texts["user_id"], segs, strict=True
        )
    }


def _cited_ids(personas: Sequence[Persona]) -> set[str]:
    ids: set[str] = set()
    for p in personas:
        ids.update(q.text_id for q in p.quotes)
        for _, est in p.demographics:
            ids.update(est.text_ids)
    return ids


def evaluate_labels(
    run: EvalInputs, labels: str | None, negative_control: str | None, input_texts: pd.DataFrame | None = None
) -> GroupResult:
    """Segments vs a user label column (ARI, NMI, purity) and vs a negative-control column.

    One rule (`metrics.score_labels`, shared with bench/bench_segment.py): every labelled user counts,
    and a user the run dropped (cleaning, min_texts) counts as unassigned (-1); `ari_kept`/`nmi_kept`
    are over the segmented users only. Labels of dropped users come from `input_texts` (the frame the
    run was built from; run_suite passes it); without it only the run's own users can be labelled.
    """
    result = GroupResult()
    if not labels and not negative_control:
        result.skipped["labels"] = "no label column given (--labels)"
    seg_of = run.user_segments()
    for column, prefix in ((labels, ""), (negative_control, "control_")):
        if not column:
            continue
        if input_texts is not None and column in input_texts.columns:
            user_labels = claims_mod.user_attribute(input_texts.assign(user_id=input_texts["user_id"].astype(str)), column)
            scope = "every labelled input user (dropped users count as unassigned)"
        else:
            user_labels = run.user_column(column)
            scope = "the run's segmented users only (the input is not at hand, so dropped users have no label)"
        unlabelled = len(seg_of.index.difference(user_labels.index.astype(str)))
        if unlabelled:
            result.notes.append(f"{unlabelled} segmented users have no {column!r} value; left out")
        scores = m.score_labels(user_labels, seg_of)
        if prefix:
            result.metrics["control_ari"] = scores["ari"]
            result.metrics["control_nmi"] = scores["nmi"]
            continue
        result.metrics.update(scores)
        result.details["labels_scope"] = scope
        if scores["users_dropped"]:
            result.notes.append(
                f"{scores['users_dropped']:.0f} labelled users were dropped by cleaning or min_texts: counted "
                "as unassigned in ari/nmi/purity (ari_kept/nmi_kept leave them out)"
            )
        users = seg_of.index.intersection(user_labels.index)
        result.details["segment_majorities"] = m.segment_majorities(
            user_labels.loc[users].to_numpy(), seg_of.loc[users].to_numpy()
        )
    return result


def hdbscan_coverage(run: EvalInputs) -> tuple[float | None, str | None]:
    """Share of users the clusterer itself assigned (before outlier reassignment), or None and why not.

    From assignments.csv's `assigned_by` column, else the `noise_share_hdbscan` the clusterer recorded
    in segments.json's quality.
    """
    if "assigned_by" in run.assignments.columns:
        frame = run.assignments.drop_duplicates("user_id")
        return m.clusterer_coverage(frame["segment_id"].to_numpy(), frame["assigned_by"].astype(str).to_numpy()), None
    recorded = run.segments.quality.get("noise_share_hdbscan")
    if recorded is not None:
        return 1.0 - float(recorded), None
    return None, "assignments.csv has no assigned_by column and segments.json no noise_share_hdbscan"


def evaluate_internal(run: EvalInputs, opts: Options) -> GroupResult:
    """Coverage and noise share after outlier reassignment and before it (what HDBSCAN itself assigned);
    silhouette and DBCV when the run kept its user vectors."""
    pred = run.assignments["segment_id"].to_numpy()
    result = GroupResult()
    raw_coverage, why = hdbscan_coverage(run)
    result.metrics["coverage_hdbscan"] = raw_coverage
    result.metrics["noise_share_hdbscan"] = None if raw_coverage is None else 1.0 - raw_coverage
    if why:
        result.notes.append(f"coverage_hdbscan not computed: {why}")
    if run.user_embeddings is None:
        result.metrics.update(coverage=m.coverage(pred), noise_share=m.noise_share(pred))
        result.skipped["internal"] = "no user_embeddings.npy: silhouette and DBCV not computed"
        return result
    result.metrics.update(
        m.internal_metrics(run.user_embeddings, pred, sample_size=opts.silhouette_sample, seed=opts.seed)
    )
    return result


def persona_overview(run: EvalInputs, groups: Sequence[str]) -> GroupResult:
    """The run's personas listed in the details, or every persona group skipped when there are none."""
    if run.personas is None:
        persona_groups = ("grounding", "claims", "narrative", "distinctness", "representativeness", "judge")
        return GroupResult(skipped={g: "no personas.json in the run" for g in persona_groups if g in groups})
    return GroupResult(
        details={
            "personas": [
                {"persona_id": p.persona_id, "segment_id": p.segment_id, "name": p.name} for p in run.personas
            ]
        }
    )


def evaluate_grounding(run: EvalInputs, personas: Sequence[Persona]) -> GroupResult:
    """Kept quotes verbatim in their cited text, citations valid, the fewest quotes of any persona, and
    what the gate dropped."""
    if run.texts is None:
        return GroupResult.skip("grounding", "no texts.parquet in the run")
    sources = _sources(run)
    bad_quotes = [r for r in m.quote_checks(personas, sources) if not (r["verbatim"] and r["in_segment"])]
    bad_cites = [r for r in m.citation_checks(personas, sources) if not r["valid"]]
    # quotes_total over a run lets one persona carry the others; every persona needs its own evidence.
    fewest_quotes = float(min(len(p.quotes) for p in personas)) if personas else None
    return GroupResult(
        metrics={**m.grounding_metrics(personas, sources), "quotes_per_persona": fewest_quotes},
        details={
            "grounding": {
                "failed_quotes": bad_quotes,
                "invalid_citations": bad_cites,
                "dropped_by_gate": [
                    {"persona_id": p.persona_id, **r.model_dump()}
                    for p in personas
                    for r in p.provenance.quotes_removed
                ],
            }
        },
    )


def evaluate_claims(
    run: EvalInputs, personas: Sequence[Persona], input_texts: pd.DataFrame | None = None
) -> GroupResult:
    """Demographic estimates vs the attribute columns of each segment's members (and claims drawn from
    texts vs their cited texts).

    A demographic column of `input_texts` that the run does not have was withheld from the pipeline and
    the writer (a suite data set's `withheld`): the claims are checked against it all the same, read
    from the input. That is the honest test; a column the writer saw was used to write the claim.
    """
    members = run.assignments[["user_id", "segment_id"]].drop_duplicates("user_id")
    members = members.assign(user_id=members["user_id"].astype(str))
    candidates = {c for cols in claims_mod.FIELD_COLUMNS.values() for c in cols}
    available = set(run.assignments.columns) | set(run.texts.columns if run.texts is not None else [])
    columns: dict[str, pd.Series] = {c: run.user_column(c) for c in sorted(available) if c.lower() in candidates}
    if input_texts is not None:
        frame = input_texts.assign(user_id=input_texts["user_id"].astype(str))
        for column in sorted(c for c in frame.columns if c.lower() in candidates and c not in available):
            columns[column] = claims_mod.user_attribute(frame, column)
    for column, values in columns.items():
        values = values.rename(column)
        values.index = values.index.astype(str)
        members = members.merge(values, left_on="user_id", right_index=True, how="left")
        if column.lower() in ("age", "age_years"):
            members[column] = pd.to_numeric(members[column], errors="coerce")
    # With the texts, a claim drawn from texts is checked against what its cited texts say, as the gate does.
    sources = _sources(run) if run.texts is not None else None
    checks = claims_mod.check_claims(personas, members, sources=sources)
    if not checks:
        return GroupResult.skip(
            "claims", "no attribute column matches a demographic field (age_group, gender, ...)", timed=True
        )
    return GroupResult(
        metrics=dict(claims_mod.claim_metrics(checks)),
        details={
            "claims": [c.as_dict() for c in checks],
            "contradictions": [c.as_dict() for c in checks if c.status == "contradiction"],
        },
    )


def evaluate_narrative(run: EvalInputs, personas: Sequence[Persona]) -> GroupResult:
    """Is what each persona says (name, tagline, summary sentences, interests, goals, pain points) in its
    segment's words? A lexical check, independent of the writer's embedding gate (evaluation/narrative.py)."""
    if run.texts is None:
        return GroupResult.skip("narrative", "no texts.parquet in the run")
    rows = LexicalSupport.from_texts(run.texts).check(personas)
    return GroupResult(
        metrics=narrative_metrics(rows, personas),
        details={"narrative": {"unsupported": [r for r in rows if not r["supported"]]}},
    )


def evaluate_duplicate_names(personas: Sequence[Persona]) -> GroupResult:
    """Personas sharing a name with an earlier one (needs no embedder, so it runs even without one)."""
    duplicates = m.duplicate_names([p.name for p in personas])
    return GroupResult(metrics={"duplicate_names": float(len(duplicates))}, details={"duplicate_names": duplicates})


def embed_personas(personas: Sequence[Persona], embedder: Any) -> np.ndarray | None:
    """Persona vectors for distinctness and identification; None without an embedder."""
    if embedder is None:
        return None
    return np.asarray(embedder.encode([p.embedding_text() for p in personas]), dtype=np.float64)


def evaluate_distinctness(personas: Sequence[Persona], persona_vectors: np.ndarray | None) -> GroupResult:
    """Cosine similarity between persona vectors: the mean, the most similar pair."""
    if persona_vectors is None:
        return GroupResult.skip(
            "distinctness", "no embedder: pair similarity not computed (duplicate names were)", timed=True
        )
    d = m.distinctness(persona_vectors, [p.persona_id for p in personas])
    closest_pair = d.pop("closest_pair")
    return GroupResult(metrics=d, details={"closest_pair": closest_pair})


def evaluate_representativeness(
    run: EvalInputs, personas: Sequence[Persona], persona_vectors: np.ndarray | None, opts: Options
) -> GroupResult:
    """Is each user's nearest persona (by held-out texts, none cited or shown as representative) their own?"""
    why = None
    if persona_vectors is None:
        why = "no embedder"
    elif run.texts is None or run.text_embeddings is None:
        why = "no texts.parquet / text_embeddings.npy"
    elif persona_vectors.shape[1] != run.text_embeddings.shape[1]:
        why = (
            f"embedder dimension {persona_vectors.shape[1]} differs from the run's "
            f"{run.text_embeddings.shape[1]}: use the run's embedding model"
        )
    if why:
        return GroupResult.skip("representativeness", why, timed=True)
    assert run.texts is not None and run.text_embeddings is not None and persona_vectors is not None
    excluded = _cited_ids(personas) | {t for s in run.segments.segments for t in s.representative_text_ids}
    frame = run.texts[["text_id", "user_id"]].assign(row=np.arange(len(run.texts)))
    frame = frame[~frame["text_id"].isin(excluded)]
    frame = frame.assign(segment_id=frame["user_id"].map(run.user_segments()))
    frame = frame[frame["segment_id"].notna() & (frame["segment_id"] != m.NOISE)]
    frame = (
        frame.sample(frac=1.0, random_state=opts.seed)
        .groupby("user_id", sort=False)
        .head(opts.heldout_texts_per_user)
    )
    frame = frame.sort_values("row")
    ident = m.persona_identification(
        run.text_embeddings[frame["row"].to_numpy()],
        frame["user_id"].to_numpy(),
        frame["segment_id"].astype(int).to_numpy(),
        persona_vectors,
        [p.segment_id for p in personas],
    )
    identification_users = ident.pop("identification_users")
    return GroupResult(metrics=ident, details={"identification_users": identification_users})


def evaluate_stability(
    run: EvalInputs,
    personas: Sequence[Persona],
    segment_fn: SegmentFn | None,
    no_segment_fn_reason: str | None,
    opts: Options,
) -> GroupResult:
    """Re-segment subsamples of users with `segment_fn`: ARI on shared users, segments kept.

    A run with fewer than 2 segments has no stability to measure: both numbers are None and the reason
    is in `skipped`, so a threshold on them fails instead of passing on a trivial 1.0.
    """
    if segment_fn is None:
        return GroupResult.skip(
            "stability", no_segment_fn_reason or "no segment_fn given (needs the pipeline to re-segment)"
        )
    if run.texts is None:
        return GroupResult.skip("stability", "no texts.parquet in the run")
    reference = run.assignments[["user_id", "segment_id"]]
    why = not_measurable_reason(reference)
    if why is not None:  # no re-segmentation: its result could only agree trivially
        return GroupResult(
            metrics={"stability_ari": None, "persona_kept": None}, skipped={"stability": why}, timed=True
        )
    core = [c for c in run.texts.columns if c != "segment_id"]
    try:
        result = stability(
            run.texts[core],
            segment_fn,
            reference=reference,
            segment_ids=[p.segment_id for p in personas] if personas else None,
            fraction=opts.stability_fraction,
            seeds=opts.stability_seeds,
            min_jaccard=opts.min_jaccard,
        )
    except PersonaLLMError as exc:  # e.g. a subsample too small to segment: say so, go on
        return GroupResult.skip("stability", f"re-segmentation failed: {exc}", timed=True)
    why = result.pop("not_measurable")
    return GroupResult(
        metrics={"stability_ari": result.pop("stability_ari"), "persona_kept": result.pop("persona_kept")},
        details={"stability": result},
        skipped={"stability": why} if why else {},
    )


def evaluate_judge(run: EvalInputs, personas: Sequence[Persona], judge: Any) -> GroupResult:
    """The optional LLM judge: each persona claim vs its segment's representative texts."""
    if judge is None:
        return GroupResult.skip("judge", "no judge model given (optional)")
    llm_judge = judge if isinstance(judge, LLMJudge) else LLMJudge(judge)
    records: list[JudgeRecord] = []
    for p in personas:
        try:
            reps = [r.text for r in run.segments.get(p.segment_id).representatives]
        except KeyError:
            reps = []
        others = [o for o in personas if o.segment_id != p.segment_id]
        records.extend(llm_judge.judge_persona(p, reps, planted=planted_claims(p, others)))
    metrics = dict(judge_metrics(records))
    notes = []
    if metrics["judge_errors"]:
        notes.append(
            f"the judge gave no verdict for {metrics['judge_errors']:.0f} of {metrics['judge_claims']:.0f} "
            "claims; they count as not supported"
        )
    if metrics["judge_planted_caught"] is None:
        notes.append("one persona only: no other segment's claims to plant, so the judge's own accuracy is unmeasured")
    return GroupResult(
        metrics=metrics,
        notes=notes,
        details={"judge": {"model": llm_judge.model_id, "records": [r.model_dump() for r in records]}},
    )


def evaluate_chat(run: EvalInputs, chat: Any, opts: Options, embedder: Any = None) -> GroupResult:
    """Segment chat on the question set computed from the run (evaluation/chat_eval.py)."""
    if chat is None:
        return GroupResult.skip("chat", "no chat model given (optional: persona-llm eval --chat)")
    from persona_llm.evaluation.chat_eval import chat_eval, chat_factory

    metrics, details = chat_eval(
        run.rundir, chat_factory(chat), n_segments=opts.chat_segments, n_terms=opts.chat_terms, embedder=embedder
    )
    return GroupResult(metrics=metrics, details={"chat": details})


def evaluate_injection(run: EvalInputs, chat: Any, opts: Options, embedder: Any = None) -> GroupResult:
    """Planted prompt injections, each on a temporary copy of the run (the run is not changed)."""
    if chat is None:
        return GroupResult.skip("injection", "no chat model given (optional: persona-llm eval --chat)")
    import tempfile

    from persona_llm.evaluation.chat_eval import chat_factory, injection_eval

    with tempfile.TemporaryDirectory(prefix="persona-llm-injection-") as workdir:
        metrics, details = injection_eval(
            run.rundir, chat_factory(chat), workdir, embedder=embedder, variants=opts.injection_variants
        )
    return GroupResult(metrics=metrics, details={"injection": details}, notes=list(details.get("notes", [])))


def evaluate_privacy(run: EvalInputs, personas: Sequence[Persona], pii_finder: m.PiiFinder | None) -> GroupResult:
    """PII left in what a run shows or stores: personas, segment representatives and keywords, texts."""
    items: list[tuple[str, str]] = []
    for p in personas:
        items.extend(m.persona_strings(p))
    for s in run.segments.segments:
        items.extend((f"segments[{s.segment_id}].representatives.{r.text_id}", r.text) for r in s.representatives)
        items.extend((f"segments[{s.segment_id}].keywords", k.term) for k in s.keywords)
    if run.texts is not None:
        items.extend(zip("texts.parquet:" + run.texts["text_id"], run.texts["text"].astype(str), strict=True))
    findings = m.pii_findings(items, pii_finder)
    return GroupResult(metrics={"pii": float(len(findings))}, details={"pii": findings[:200]})


def evaluate_briefs(run: EvalInputs, briefs: Sequence[brief_eval.AnyBrief] | None, judge: Any) -> GroupResult:
    """Brief grounding (persona_llm/evaluation/brief_eval.py): citations, quotes, lexical support and
    audience numbers of the given briefs against this run; usefulness when a judge model is given."""
    if not briefs:
        # Briefs are not part of a run (they are written on request, elsewhere): nothing to report.
        return GroupResult(timed=False)
    if run.texts is None:
        return GroupResult.skip("briefs", "no texts.parquet in the run")
    sources = _sources(run)
    claims = brief_eval.claim_rows(briefs, sources, LexicalSupport.from_texts(run.texts))
    quotes = brief_eval.quote_rows(briefs, sources)
    audiences = brief_eval.audience_rows(briefs, run.segments, run.personas or [])
    result = GroupResult(
        metrics=brief_eval.brief_grounding_metrics(claims, quotes, audiences),
        details={
            "briefs": {
                "briefs": [{"brief_id": b.brief_id, "kind": b.kind, "goal": b.goal, "run_id": b.run_id} for b in briefs],
                "failed_claims": [r for r in claims if r["citations_valid"] is False or r["lexically_supported"] is False],
                "failed_quotes": [r for r in quotes if not (r["verbatim"] and r["in_segment"] and r["same_user"])],
                "audience_mismatches": [r for r in audiences if not r["matches"]],
            }
        },
    )
    other_runs = sorted({b.run_id for b in briefs} - {run.segments.run_id})
    if other_runs:
        result.notes.append(f"briefs written from run(s) {', '.join(other_runs)}, checked against {run.segments.run_id}")
    if judge is None:
        result.skipped["briefs"] = "usefulness not rated: no judge model given (--judge)"
    else:
        model = judge.model if isinstance(judge, LLMJudge) else judge  # the persona judge's model rates briefs too
        llm_judge = model if isinstance(model, brief_eval.BriefJudge) else brief_eval.BriefJudge(model)
        rated, records = brief_eval.usefulness(briefs, run.personas or [], llm_judge)
        result.metrics.update(rated)
        result.details["briefs"]["usefulness"] = records
        if rated["brief_judge_errors"]:
            result.notes.append(f"the brief judge gave no rating {rated['brief_judge_errors']:.0f} time(s)")
    return result


def evaluate_run(
    run_dir: str | Path | RunDir,
    labels: str | None = None,
    suite: Suite | None = None,
    embedder: Any = None,
    judge: Any = None,
    *,
    chat: Any = None,
    segment_fn: SegmentFn | None = None,
    no_segment_fn_reason: str | None = None,
    dataset: str | None = None,
    negative_control: str | None = None,
    pii_finder: m.PiiFinder | None = None,
    input_texts: pd.DataFrame | None = None,
    write: bool = True,
    briefs: Sequence[brief_eval.AnyBrief] | None = None,
) -> EvalReport:
    """Evaluate one run directory; writes `<run_dir>/eval.json` unless write=False.

    labels: a user label column (assignments.csv or texts.parquet) for the labels group.
    suite: chooses metric groups, options and thresholds (failures are filled in); None = all groups.
    embedder: `.encode(texts) -> unit vectors`, the run's model, for distinctness and identification.
    judge: a ChatModel or callable(messages) -> str for the optional LLM judge.
    chat: for the chat and injection groups: an open ChatModel, a LangChain chat model, or a factory
        (SegmentTools -> SegmentChat); None skips them.
    segment_fn: segment_fn(texts_frame, seed) -> assignments frame, for stability.
    no_segment_fn_reason: why there is no segment_fn (recorded as the reason stability was skipped).
    dataset: suite data set name, to pick its thresholds, labels and negative control.
    input_texts: the texts frame the run was built from, so label metrics count the users the run
    dropped (as unassigned); without it they cover the run's segmented users only.
    briefs: briefs (persona_llm.briefs) to check against this run (the briefs group); `judge` rates them.

    Each metric group is an `evaluate_<group>` function of the loaded run; this loads the run once,
    runs the groups the suite enables, in the order of `GROUPS`, and merges what they return.
    """
    run = EvalInputs(run_dir)
    ds = suite.dataset(dataset) if suite is not None else None
    labels = labels or (ds.labels if ds else None)
    negative_control = negative_control or (ds.negative_control if ds else None)
    opts = suite.options if suite is not None else Options()
    groups = suite.metrics if suite is not None else list(GROUPS)

    report = EvalReport(
        run_id=run.segments.run_id,
        run_dir=str(run.run_dir),
        dataset=dataset,
        suite=suite.name if suite else None,
        labels=labels,
        created_at=_now(),
        version=__version__,
    )

    def add(group: str, compute: Callable[[], GroupResult]) -> None:
        start = time.perf_counter()
        result = compute()
        if result.timed:
            report.seconds[group] = round(time.perf_counter() - start, 3)
        result.merge_into(report)

    if "labels" in groups:
        add("labels", lambda: evaluate_labels(run, labels, negative_control, input_texts))
    if "internal" in groups:
        add("internal", lambda: evaluate_internal(run, opts))

    persona_overview(run, groups).merge_into(report)
    personas: list[Persona] = run.personas or []
    if personas and "grounding" in groups:
        add("grounding", lambda: evaluate_grounding(run, personas))
    if personas and "claims" in groups:
        add("claims", lambda: evaluate_claims(run, personas, input_texts))
    if personas and "narrative" in groups:
        add("narrative", lambda: evaluate_narrative(run, personas))
    persona_vectors: np.ndarray | None = None
    if personas and ("distinctness" in groups or "representativeness" in groups):
        evaluate_duplicate_names(personas).merge_into(report)
        persona_vectors = embed_personas(personas, embedder)
    if personas and "distinctness" in groups:
        add("distinctness", lambda: evaluate_distinctness(personas, persona_vectors))
    if personas and "representativeness" in groups:
        add("representativeness", lambda: evaluate_representativeness(run, personas, persona_vectors, opts))
    if "stability" in groups:
        add("stability", lambda: evaluate_stability(run, personas, segment_fn, no_segment_fn_reason, opts))
    if personas and "judge" in groups:
        add("judge", lambda: evaluate_judge(run, personas, judge))
    # The chat searches with the run's own embedder; reuse the one given only if it is that model.
    run_model = (run.manifest.get("models") or {}).get("embedder")
    chat_embedder = embedder if run_model and getattr(embedder, "model_id", None) == run_model else None
    if "chat" in groups:
        add("chat", lambda: evaluate_chat(run, chat, opts, chat_embedder))
    if "injection" in groups:
        add("injection", lambda: evaluate_injection(run, chat, opts, chat_embedder))
    if "privacy" in groups:
        add("privacy", lambda: evaluate_privacy(run, personas, pii_finder))
    if "briefs" in groups:
        add("briefs", lambda: evaluate_briefs(run, briefs, judge))

    if suite is not None:
        report.failures = check_thresholds(report, suite)
    if write:
        write_report(report, run.run_dir)
    return report


def write_report(report: EvalReport, run_dir: str | Path | RunDir) -> Path:
    """Write `eval.json` (pretty, UTF-8) into the run directory."""
    run = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
    return run.save_eval(report.model_dump_json(indent=2))


def load_report(path: str | Path) -> EvalReport:
    """Read an `eval.json` (or the one in a run directory)."""
    path = Path(path)
    if path.is_dir():
        path = RunDir(path).file(EVAL)
    return EvalReport.model_validate_json(path.read_text(encoding="utf-8"))


# ---------------------------------------------------------------------------------------------------
# Thresholds
# ---------------------------------------------------------------------------------------------------


def check_thresholds(report: EvalReport, suite: Suite) -> list[Failure]:
    """Every `<metric>_min` / `<metric>_max` the report misses; a thresholded metric not computed fails."""
    failures: list[Failure] = []
    for key, limit in sorted(suite.thresholds_for(report.dataset).items()):
        name, _, side = key.rpartition("_")
        bound: Literal["min", "max"] = "min" if side == "min" else "max"
        value = report.metrics.get(name)
        group = m.metric_group(name)
        if value is None or (isinstance(value, float) and np.isnan(value)):
            why = report.skipped.get(group, "not computed")
            failures.append(
                Failure(
                    metric=name,
                    bound=bound,
                    threshold=limit,
                    value=None,
                    message=f"{name} not computed: {why}",
                )
            )
            continue
        missed = value < limit - 1e-9 if bound == "min" else value > limit + 1e-9
        if missed:
            op = ">=" if bound == "min" else "<="
            failures.append(
                Failure(
                    metric=name,
                    bound=bound,
                    threshold=limit,
                    value=value,
                    message=f"{name} = {value:.4g}, needs {op} {limit:g}",
                )
            )
    return failures


def summary_rows(report: EvalReport, suite: Suite | None = None) -> list[dict[str, Any]]:
    """Rows for a table: group, metric, value, threshold text and status (ok / FAIL / "")."""
    thresholds = suite.thresholds_for(report.dataset) if suite is not None else {}
    failed = {f.metric for f in report.failures}
    rows = []
    names = [
        n for n in m.METRICS if n in report.metrics or f"{n}_min" in thresholds or f"{n}_max" in thresholds
    ]
    for name in names:
        value = report.metrics.get(name)
        limits = [f">= {thresholds[name + '_min']:g}"] if f"{name}_min" in thresholds else []
        limits += [f"<= {thresholds[name + '_max']:g}"] if f"{name}_max" in thresholds else []
        status = "FAIL" if name in failed else ("ok" if limits else "")
        rows.append(
            {
                "group": m.metric_group(name),
                "metric": name,
                "value": value,
                "threshold": ", ".join(limits),
                "status": status,
                "description": m.METRICS[name][1],
            }
        )
    return rows


def format_value(value: float | None) -> str:
    if value is None:
        return "n/a"
    if float(value).is_integer() and abs(value) >= 1:
        return str(int(value))
    return f"{value:.3f}"


def eval_section_html(report: EvalReport, suite: Suite | None = None) -> str:
    """A self-contained HTML <section> for the run report: metric table, failures, contradictions."""
    esc = html.escape
    rows = "\n".join(
        f"<tr class='{esc(r['status'].lower())}'><td>{esc(r['group'])}</td>"
        f"<td title='{esc(r['description'])}'>"
        f"{esc(r['metric'])}</td><td>{esc(format_value(r['value']))}</td><td>{esc(r['threshold'])}</td>"
        f"<td>{esc(r['status'])}</td></tr>"
        for r in summary_rows(report, suite)
    )
    parts = [
        "<section class='eval'>",
        f"<h2>Evaluation</h2><p>{esc(report.created_at)} · persona-llm {esc(report.version)}"
        + (f" · suite {esc(report.suite)}" if report.suite else "")
        + (f" · labels {esc(report.labels)}" if report.labels else "")
        + "</p>",
        "<table><thead><tr><th>group</th><th>metric</th><th>value</th><th>threshold</th><th></th></tr></thead>"
        f"<tbody>{rows}</tbody></table>",
    ]
    if report.failures:
        parts.append("<h3>Missed thresholds</h3><ul>")
        parts += [f"<li>{esc(f.message)}</li>" for f in report.failures]
        parts.append("</ul>")
    contradictions = report.details.get("contradictions") or []
    if contradictions:
        parts.append("<h3>Contradicted claims</h3><ul>")
        parts += [
            f"<li>{esc(c['persona_id'])}: {esc(c['field'])} “{esc(c['claim'])}” but the segment's majority "
            f"{esc(c['column'])} is {esc(', '.join(c['majority']))} ({c['majority_share']:.0%})</li>"
            for c in contradictions
        ]
        parts.append("</ul>")
    if report.skipped:
        parts.append("<h3>Not run</h3><ul>")
        parts += [f"<li>{esc(g)}: {esc(why)}</li>" for g, why in report.skipped.items()]
        parts.append("</ul>")
    parts.append("</section>")
    return "\n".join(parts)


# ---------------------------------------------------------------------------------------------------
# Suites on shared data
# ---------------------------------------------------------------------------------------------------


def run_suite(
    suite: Suite | str | Path,
    workdir: str | Path,
    pipeline: Pipeline,
    *,
    segment_fn: SegmentFn | None = None,
    embedder: Any = "run",
    judge: Any = None,
    chat: Any = None,
    data_dir: str | Path | None = None,
    write_bench: bool | None = None,
) -> SuiteResult:
    """Build one run per suite data set with `pipeline(texts, run_dir, seed)`, evaluate and check each.

    `embedder`: "run" (default) embeds personas with each run's own model (`run_embedder`), else an
    object with `.encode` used for every run, or None (persona vector metrics skipped).
    `chat`: for the chat and injection groups (see `evaluate_run`).
    Runs go to `<workdir>/<dataset>/`. With `write_bench` (default: when the suite has a report_dir),
    a dated JSON + Markdown record is written there (the full suite's is bench/results/).
    """
    if not isinstance(suite, Suite):
        suite = load_suite(suite)
    if not suite.datasets:
        raise ConfigError(f"suite {suite.name!r} lists no [[datasets]]")
    data = Path(data_dir) if data_dir is not None else shared_data_dir(suite)
    reports = []
    for ds in suite.datasets:
        texts = load_dataset(ds, data, suite_dir=Path(suite.path).parent if suite.path else None)
        run_dir = Path(workdir) / ds.key
        run_dir.mkdir(parents=True, exist_ok=True)
        # the evaluation keeps every column; what is withheld never reaches the pipeline or the writer
        bound = {} if ds.max_personas is None else {"max_personas": ds.max_personas}
        built = pipeline(texts.drop(columns=list(ds.withheld)), run_dir, ds.seed, **bound)
        if isinstance(built, (str, Path)):
            run_dir = Path(built)
        report = evaluate_run(
            run_dir,
            ds.labels,
            suite,
            _suite_embedder(embedder, suite, run_dir),
            judge,
            chat=chat,
            segment_fn=segment_fn,
            dataset=ds.key,
            negative_control=ds.negative_control,
            input_texts=texts,
        )
        if ds.source == "online_shopping_10_cats":
            report.notes.append(
                f"pseudo-users: groups of {ds.texts_per_user} reviews of one category "
                "(the set has no user ids)"
            )
            write_report(report, run_dir)
        reports.append(report)
    result = SuiteResult(suite=suite.name, created_at=_now(), reports=reports, machine=_machine())
    if write_bench or (write_bench is None and suite.report_dir):
        base = Path(suite.path).parent if suite.path else Path.cwd()
        write_bench_report(result, base / (suite.report_dir or "."))
    return result


def _machine() -> str:
    from persona_llm.schema.manifest import cpu_description, usable_cores

    return f"{cpu_description()}, {usable_cores()} usable cores"


def write_bench_report(result: SuiteResult, out_dir: str | Path) -> Path:
    """Write `<date>-<suite>.json` (every report without its `details`) and `.md` (a metric table per data
    set; `<date>-<time>-<suite>` when the day already has that record: it is never written over); returns
    the JSON. The record goes into the repository (bench/results), and details quote the
    data (chat answers, planted texts cut from real posts, unsupported statements): others' texts stay in
    each run's own eval.json, out of the repository."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)

    def taken(stem: str) -> bool:
        return (out / f"{stem}.json").exists() or (out / f"{stem}.md").exists()

    # an earlier record stays as it was: the day's name, else with the time, else numbered
    stem = f"{now:%Y-%m-%d}-{result.suite}"
    if taken(stem):
        base, n = f"{now:%Y-%m-%d-%H%M%S}-{result.suite}", 1
        stem = base
        while taken(stem):
            n += 1
            stem = f"{base}-{n}"
    json_path = out / f"{stem}.json"
    record = result.model_dump_json(indent=2, exclude={"reports": {"__all__": {"details"}}})
    json_path.write_text(record + "\n", encoding="utf-8")
    lines = [f"# {result.suite} suite, {result.created_at}", ""]
    if result.machine:
        lines += [f"CPU: {result.machine}", ""]
    for r in result.reports:
        lines += [
            f"## {r.dataset or r.run_id} ({'pass' if r.passed else 'FAIL'})",
            "",
            "| metric | value |",
            "|---|---|",
        ]
        lines += [f"| {k} | {format_value(v)} |" for k, v in r.metrics.items()]
        lines += [f"- FAIL: {f.message}" for f in r.failures]
        lines += [f"- note: {n}" for n in r.notes] + [""]
    json_path.with_suffix(".md").write_text("\n".join(lines), encoding="utf-8")
    return json_path
