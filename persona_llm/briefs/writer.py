"""Write a strategist brief on request: prompt -> LLM -> schema -> the persona gates -> a validated brief.

Three kinds, each run by its own agent definition (agents/*.toml: role, prompt version, output model):
    campaign   (brief_writer)      objective, audience insights citing texts, key message, proof points
                                   (verbatim quotes), offers, channel plan, tone, do/don't, objections with
                                   answers, what to measure, confidence
    narrative  (narrative_writer)  a day-in-the-life story whose every sentence cites the texts it tells
    messaging  (messaging_writer)  one message per persona for one goal: one call per persona, each with
                                   its own segment's texts and gates

A brief reads a run (a workspace's published run, or a run directory) and changes nothing in it: it is
returned (and the CLI prints or writes it to --out), so asking for one never needs a new run.

`write_many` writes one campaign or narrative brief per persona for one goal, on `concurrency` threads of
this process or on a BriefExecutor (persona_llm.scale.RayExecutor: Ray actors over one or more endpoints);
each brief is `write_brief_outcome`, the same parts, gates and assembly as `write`, and a failed brief is
an outcome with its reason while the others are written.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Protocol, cast

import numpy as np
from pydantic import BaseModel

from persona_llm.briefs.gates import (
    ClaimVerdicts,
    RunNumbers,
    audience_number_problems,
    check_claims,
    draft_claims,
    support_feedback,
)
from persona_llm.briefs.prompting import brief_response_model, build_brief_prompt
from persona_llm.errors import BackendError, ConfigError, InputError
from persona_llm.llm.client import CallRecord, ChatModel, LLMSettings, StructuredOutputError, open_chat_model
from persona_llm.personas.gates import TextIndex, ground_quotes
from persona_llm.personas.prompting import AgentPrompt, RenderedPrompt
from persona_llm.personas.quoting import QuoteMode
from persona_llm.personas.support import evidence_confidence, run_support_index, support_share
from persona_llm.runs.rundir import RunDir
from persona_llm.runs.workspace import resolve_run
from persona_llm.schema.briefs import (
    BRIEF_KINDS,
    CHANNEL_MAX_CHARS,
    DRAFT_FOR_KIND,
    GOAL_MAX_CHARS,
    Audience,
    Brief,
    BriefDraft,
    BriefKind,
    BriefProvenance,
    CampaignDraft,
    CitedStatement,
    MessageDraft,
    MessageRow,
    MessagingMatrix,
    NarrativeBrief,
    NarrativeDraft,
    Objection,
)
from persona_llm.schema.personas import Confidence, DraftQuote, Persona, Quote
from persona_llm.schema.segments import Segment

log = logging.getLogger(__name__)

#: The agent definition that writes each kind (agents/<name>.toml).
KIND_AGENTS: dict[str, str] = {"campaign": "brief_writer", "narrative": "narrative_writer", "messaging": "messaging_writer"}
_ORDER: dict[str, int] = {"low": 0, "medium": 1, "high": 2}
#: Kinds whose brief addresses one persona (`write_many` writes one per persona); messaging covers several.
SINGLE_AUDIENCE_KINDS: tuple[str, ...] = ("campaign", "narrative")

AnyBriefModel = Brief | NarrativeBrief | MessagingMatrix


def select_personas(personas: Sequence[Persona], persona_id: str, kind: str, where: str) -> list[Persona]:
    """The personas `persona_id` names: a persona id, a segment id, a comma-separated list of them, or
    "all" (messaging only: campaign and narrative briefs address one persona)."""
    wanted = [p.strip() for p in str(persona_id).split(",") if p.strip()]
    if not wanted:
        raise ConfigError("--persona is empty: give a persona id (see `persona-llm personas RUN`), a segment id, or all")
    if wanted in (["all"], ["*"]):
        if kind != "messaging":
            raise ConfigError(f"--persona all is for --kind messaging; a {kind} brief addresses one persona")
        return list(personas)
    chosen: list[Persona] = []
    for token in wanted:
        match = [p for p in personas if p.persona_id == token]
        if not match and token.lstrip("-").isdigit():
            match = [p for p in personas if p.segment_id == int(token)]
        if not match:
            known = ", ".join(f"{p.persona_id} (segment {p.segment_id})" for p in personas)
            raise ConfigError(f"no persona {token!r} in {where}; personas: {known}")
        if match[0] not in chosen:
            chosen.append(match[0])
    if kind != "messaging" and len(chosen) != 1:
        raise ConfigError(f"a {kind} brief addresses one persona, not {len(chosen)}; use --kind messaging for several")
    return chosen


def select_each(personas: Sequence[Persona], persona_ids: Sequence[str] | str, kind: str, where: str) -> list[Persona]:
    """The personas `persona_ids` name, one brief each (`write_many`): "all", or ids of personas or
    segments (each may be a comma-separated list), in the order given, repeats once. A name that is not
    in the run fails here, before any model call."""
    if kind not in SINGLE_AUDIENCE_KINDS:
        raise ConfigError(
            f"one brief per persona is for --kind {' or '.join(SINGLE_AUDIENCE_KINDS)}; a {kind} brief already "
            "covers several personas (--persona all)"
        )
    ids = [persona_ids] if isinstance(persona_ids, str) else list(persona_ids)
    tokens = [t.strip() for value in ids for t in str(value).split(",") if t.strip()]
    if tokens in (["all"], ["*"]):
        return list(personas)
    if not tokens:
        raise ConfigError("no persona given: name personas (--persona ID, repeatable) or ask for all (--all-personas)")
    chosen: list[Persona] = []
    for token in tokens:
        persona = select_personas(personas, token, kind, where)[0]
        if persona not in chosen:
            chosen.append(persona)
    return chosen


def brief_id(run_id: str, kind: str, personas: Sequence[Persona], goal: str, channel: str | None) -> str:
    key = "|".join([run_id, kind, ",".join(p.persona_id for p in personas), goal.strip(), channel or ""])
    return "b-" + hashlib.sha256(key.encode("utf-8")).hexdigest()[:12]


@dataclass
class _Part:
    """One audience's gated draft: what a brief or a messaging row is assembled from."""

    draft: BriefDraft
    audience: Audience
    verdicts: ClaimVerdicts
    quotes: list[Quote]
    confidence: Confidence
    provenance: BriefProvenance
    records: list[CallRecord] = field(default_factory=list)

    def kept_claims(self, name: str) -> list[CitedStatement]:
        value = getattr(self.draft, name)
        items = value if isinstance(value, list) else [value]
        return [
            CitedStatement(text=item.text, text_ids=self.verdicts.kept[(name, k)])
            for k, item in enumerate(items)
            if self.verdicts.keeps(name, k)
        ]


@dataclass
class BriefOutcome:
    """What writing one persona's brief gave, wherever it ran: the brief, or why there is none (a model or
    backend failure), with the model calls made either way. Picklable, so a worker process can send it back."""

    persona_id: str
    segment_id: int
    brief: Brief | NarrativeBrief | None
    records: list[CallRecord]
    seconds: float
    error: str = ""


@dataclass
class BriefBatch:
    """The briefs of one `write_many`: one outcome per persona, in the order asked."""

    kind: str
    goal: str
    channel: str | None
    outcomes: list[BriefOutcome]

    @property
    def briefs(self) -> dict[str, Brief | NarrativeBrief]:
        """persona id -> brief, for the personas whose brief was written."""
        return {o.persona_id: o.brief for o in self.outcomes if o.brief is not None}

    @property
    def failures(self) -> dict[str, str]:
        """persona id -> why its brief was not written."""
        return {o.persona_id: o.error for o in self.outcomes if o.brief is None}


class BriefExecutor(Protocol):
    """Writes the briefs of a `write_many` somewhere other than this process's threads
    (persona_llm.scale.RayExecutor: Ray actors, each with its own connection to an OpenAI-compatible
    endpoint). Each brief goes through `write_brief_outcome`, exactly as the local threads do."""

    def write_briefs(
        self,
        writer: BriefWriter,
        chat: ChatModel,
        run: RunDir,
        personas: Sequence[Persona],
        segments: Sequence[Segment],
        request: BriefRequest,
        settings: LLMSettings,
    ) -> Iterator[BriefOutcome]:
        """One outcome per persona, as each finishes (any order)."""
        ...


@dataclass(frozen=True)
class BriefRequest:
    """What every brief of a `write_many` is asked for (checked and normalised by the writer)."""

    goal: str
    kind: Literal["campaign", "narrative"]
    channel: str | None = None


def write_brief_outcome(
    writer: BriefWriter,
    chat: ChatModel,
    run: RunDir,
    persona: Persona,
    segment: Segment,
    request: BriefRequest,
    settings: LLMSettings,
) -> BriefOutcome:
    """One persona's brief with a prepared writer (`BriefWriter.prepare`): the one unit of work that both
    the local threads and a cluster executor run, through the same parts, gates and assembly as `write`.
    A model or backend failure is an outcome (the other briefs go on); anything else is a bug and raises."""
    t0 = time.perf_counter()
    try:
        part = writer._write_part(chat, run, persona, segment, request.goal, request.channel, settings)
        brief = writer._assemble(request.kind, run, [persona], [part], request.goal, request.channel)
    except BackendError as exc:  # StructuredOutputError too: the model never gave a valid draft
        log.error("brief for %s: %s", persona.persona_id, exc)
        records = list(exc.records) if isinstance(exc, StructuredOutputError) else []
        return BriefOutcome(persona.persona_id, segment.segment_id, None, records, time.perf_counter() - t0, str(exc)[:500])
    single = cast(Brief | NarrativeBrief, brief)
    return BriefOutcome(persona.persona_id, segment.segment_id, single, part.records, time.perf_counter() - t0)


class BriefWriter:
    """Writes campaign briefs, narratives and messaging matrices for the personas of a run.

    Parameters (scikit-learn style: stored as given; nothing happens until `write` or `write_many`)
    ----------
    settings: which backend and how to call it (ignored for the model if `chat` is given).
    chat: an already-open ChatModel; else one is opened (and closed) per write.
    agents: kind -> agent definition (a name in agents/ or a .toml path), over `KIND_AGENTS`.
    language: "auto" (the persona's language), "en", "zh", ...
    text_token_budget / max_text_tokens / max_texts: how much of the segment goes into the prompt.
    min_quotes: verified quotes (proof points) a brief needs for high confidence (a messaging row: 1).
    quote_mode: "reference" (quotes chosen by sentence id, text ids from an enum), "verbatim" (copied
        as text, gated), or "auto" (reference where the backend enforces JSON schemas).
    check_support: check every claim against the segment's texts with the run's embedder (as personas);
        off, or impossible without text vectors: claims are not checked and confidence is "low".
    support_embedder: the embedder of the run's text vectors (None: rebuilt from the run manifest).
    min_citation_similarity: a cited text must be at least this close to its claim on the support
        check's chance-rescaled scale (0: closer than random texts of the run are to each other).
    max_support_reasks / support_reask_below: re-ask when under this share of a draft's claims passes.
    progress: called in the calling thread with each brief's outcome as it finishes (`write_many`): a run
        of many briefs says what it is doing.
    """

    def __init__(
        self,
        settings: LLMSettings | None = None,
        *,
        chat: ChatModel | None = None,
        agents: Mapping[str, str | Path] | None = None,
        language: str = "auto",
        text_token_budget: int = 1200,
        max_text_tokens: int = 120,
        max_texts: int = 16,
        min_quotes: int = 2,
        quote_mode: str = "auto",
        check_support: bool = True,
        support_embedder: Any = None,
        min_citation_similarity: float = 0.0,
        max_support_reasks: int = 1,
        support_reask_below: float = 0.5,
        seed: int = 0,
        progress: Callable[[BriefOutcome], None] | None = None,
    ) -> None:
        self.settings = settings
        self.chat = chat
        self.agents = agents
        self.language = language
        self.text_token_budget = text_token_budget
        self.max_text_tokens = max_text_tokens
        self.max_texts = max_texts
        self.min_quotes = min_quotes
        self.quote_mode = quote_mode
        self.check_support = check_support
        self.support_embedder = support_embedder
        self.min_citation_similarity = min_citation_similarity
        self.max_support_reasks = max_support_reasks
        self.support_reask_below = support_reask_below
        self.seed = seed
        self.progress = progress

    # -- public -------------------------------------------------------------------------------------

    def write(
        self,
        run: RunDir | str | Path,
        *,
        persona_id: str,
        goal: str,
        kind: BriefKind | str = "campaign",
        channel: str | None = None,
    ) -> Brief | NarrativeBrief | MessagingMatrix:
        """A validated, gated brief of `kind` for `persona_id` (messaging: "all" or a list) and `goal`.
        Reads the run (a workspace: its published run); writes nothing into it."""
        settings = self.settings or LLMSettings()
        rundir, goal, channel = self._checked_request(run, goal, kind, channel)
        chosen = select_personas(self._personas(rundir), persona_id, kind, str(rundir.path))
        segments = self._segments_of(rundir, chosen)
        self.prepare(rundir, kind)
        self.records_: list[CallRecord] = []
        started = time.perf_counter()
        with self._open_chat(settings) as chat:
            parts = self._write_parts(chat, rundir, chosen, segments, goal, channel, settings)
        self.seconds_ = time.perf_counter() - started
        return self._assemble(kind, rundir, chosen, parts, goal, channel)

    def write_many(
        self,
        run: RunDir | str | Path,
        persona_ids: Sequence[str] | str = "all",
        *,
        goal: str,
        kind: BriefKind | str = "campaign",
        channel: str | None = None,
        executor: BriefExecutor | None = None,
    ) -> BriefBatch:
        """One brief of `kind` (campaign or narrative) per persona of `persona_ids` ("all", or persona or
        segment ids) for one `goal`. Each is exactly what `write` gives for that persona; they are written
        on `settings.concurrency` threads of this process, or by `executor` (a RayExecutor: Ray actors
        over the endpoints of its `llm_urls`). A brief whose model calls fail is a failure in the batch
        (persona id and reason); the others are still written. Reads the run; writes nothing into it."""
        settings = self.settings or LLMSettings()
        rundir, goal, channel = self._checked_request(run, goal, kind, channel)
        chosen = select_each(self._personas(rundir), persona_ids, kind, str(rundir.path))
        segments = self._segments_of(rundir, chosen)
        request = BriefRequest(goal=goal, kind=cast(Literal["campaign", "narrative"], kind), channel=channel)
        self.prepare(rundir, kind)
        self.records_ = []
        started = time.perf_counter()
        outcomes: dict[str, BriefOutcome] = {}

        def finish(outcome: BriefOutcome) -> None:
            outcomes[outcome.persona_id] = outcome
            self.records_.extend(outcome.records)
            how = f"confidence {outcome.brief.confidence}" if outcome.brief is not None else f"failed: {outcome.error}"
            log.info("brief %d/%d for %s (segment %d): %s, %.1f s", len(outcomes), len(chosen), outcome.persona_id,
                     outcome.segment_id, how, outcome.seconds)  # fmt: skip
            if self.progress is not None:
                self.progress(outcome)

        with self._open_chat(settings) as chat:
            self.model_id_ = chat.model_id
            if executor is not None:
                for outcome in executor.write_briefs(self, chat, rundir, chosen, segments, request, settings):
                    finish(outcome)
            else:
                workers = max(1, min(settings.concurrency, len(chosen)))

                def one(persona: Persona, segment: Segment) -> BriefOutcome:
                    if workers == 1:
                        chat.prepare_for_task()  # e.g. the embedded server takes cores that have come free
                    return write_brief_outcome(self, chat, rundir, persona, segment, request, settings)

                with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="brief") as pool:
                    futures = [pool.submit(one, p, s) for p, s in zip(chosen, segments, strict=True)]
                    for future in as_completed(futures):
                        finish(future.result())
        self.seconds_ = time.perf_counter() - started
        if set(outcomes) != {p.persona_id for p in chosen}:
            raise BackendError(f"the executor returned briefs for {sorted(outcomes)}, not {[p.persona_id for p in chosen]}")
        return BriefBatch(kind, goal, channel, [outcomes[p.persona_id] for p in chosen])

    def prepare(self, run: RunDir, kind: str) -> BriefWriter:
        """Read what every brief of `kind` on `run` is checked against: the kind's agent, the run's texts
        (quote and citation gates), its text vectors and their embedder (support), the median cohesion
        (confidence)."""
        self.agent_ = self.load_agent(kind)
        self.index_ = TextIndex.from_frame(run.load_texts())
        if self.check_support:
            self.support_index_, self.support_embedder_, self.support_note_ = run_support_index(
                run, embedder=self.support_embedder, seed=self.seed
            )
        else:
            self.support_index_, self.support_embedder_, self.support_note_ = None, None, "off"
        cohesions = sorted(s.quality.cohesion for s in run.load_segments().segments)
        self.median_cohesion_ = cohesions[len(cohesions) // 2] if cohesions else None
        return self

    def load_agent(self, kind: str) -> AgentPrompt:
        """The agent definition that writes `kind` (its role, templates and output model)."""
        return AgentPrompt.load((self.agents or {}).get(kind) or KIND_AGENTS[kind], expects=DRAFT_FOR_KIND[kind])

    def for_worker(self) -> BriefWriter:
        """A copy of this prepared writer to send to a worker process: parameters and prepared state (its
        embedders pickle as parameters and load again there), without the open chat model, the progress
        callback or the agent, whose templates the worker loads itself (`load_agent`, checked by hash)."""
        clone = copy.copy(self)
        clone.chat = clone.progress = None
        del clone.agent_
        clone.records_ = []
        return clone

    # -- the request ----------------------------------------------------------------------------------

    def _checked_request(
        self, run: RunDir | str | Path, goal: str, kind: str, channel: str | None
    ) -> tuple[RunDir, str, str | None]:
        rundir = run if isinstance(run, RunDir) else resolve_run(run)
        goal = " ".join(str(goal).split())
        channel = " ".join(channel.split()) if channel else None
        if kind not in BRIEF_KINDS:
            raise ConfigError(f"--kind must be one of {', '.join(BRIEF_KINDS)}, not {kind!r}")
        if not goal or len(goal) > GOAL_MAX_CHARS:
            raise ConfigError(f"--goal must be 1 to {GOAL_MAX_CHARS} characters, not {len(goal)}")
        if channel is not None and len(channel) > CHANNEL_MAX_CHARS:
            raise ConfigError(f"--channel must be at most {CHANNEL_MAX_CHARS} characters")
        return rundir, goal, channel

    @staticmethod
    def _personas(run: RunDir) -> list[Persona]:
        personas = run.load_personas()
        if not personas:
            raise ConfigError(f"{run.path}: no personas yet; write them with `persona-llm build` or `write-personas`")
        return personas

    @staticmethod
    def _segments_of(run: RunDir, personas: Sequence[Persona]) -> list[Segment]:
        segment_set = run.load_segments()
        segments: list[Segment] = []
        for p in personas:
            try:
                segments.append(segment_set.get(p.segment_id))
            except KeyError as exc:
                raise InputError(f"persona {p.persona_id} names segment {p.segment_id}, which the run lacks", path=str(run.path)) from exc
        return segments

    @contextlib.contextmanager
    def _open_chat(self, settings: LLMSettings) -> Iterator[ChatModel]:
        """The writer's chat model, or one opened (and closed) for this write."""
        if self.chat is not None:
            yield self.chat
        else:
            with open_chat_model(settings) as chat:
                yield chat

    # -- generation ---------------------------------------------------------------------------------

    def _write_parts(
        self,
        chat: ChatModel,
        run: RunDir,
        personas: Sequence[Persona],
        segments: Sequence[Segment],
        goal: str,
        channel: str | None,
        settings: LLMSettings,
    ) -> list[_Part]:
        self.model_id_ = chat.model_id
        parts = []
        for persona, segment in zip(personas, segments, strict=True):
            chat.prepare_for_task()  # e.g. the embedded server takes cores that have come free
            try:
                part = self._write_part(chat, run, persona, segment, goal, channel, settings)
            except StructuredOutputError as exc:
                self.records_.extend(exc.records)  # the failed calls count in stats() too
                raise
            self.records_.extend(part.records)
            parts.append(part)
        return parts

    def _quote_mode(self, chat: ChatModel) -> QuoteMode:
        if self.quote_mode == "auto":
            structured = chat.capabilities.structured_mode(chat.structured)
            return "reference" if structured == "json_schema" else "verbatim"
        if self.quote_mode not in ("reference", "verbatim"):
            raise ConfigError(f"quote_mode must be auto, reference or verbatim, not {self.quote_mode!r}")
        return cast(QuoteMode, self.quote_mode)

    def _write_part(
        self,
        chat: ChatModel,
        run: RunDir,
        persona: Persona,
        segment: Segment,
        goal: str,
        channel: str | None,
        settings: LLMSettings,
    ) -> _Part:
        agent = self.agent_
        core = cast(type[BriefDraft], agent.output_model)
        quote_mode = self._quote_mode(chat)
        n_segments = len(run.load_segments().segments)
        schema_in_prompt = chat.capabilities.structured_mode(chat.structured) != "json_schema"
        prompt = build_brief_prompt(
            agent, persona=persona, segment=segment, segment_texts=run.segment_texts(segment.segment_id),
            count_tokens=chat.count_tokens, goal=goal, channel=channel, n_segments=n_segments,
            language=self.language, max_context=chat.capabilities.max_context, completion_tokens=chat.max_tokens,
            text_token_budget=self.text_token_budget, max_text_tokens=self.max_text_tokens, max_texts=self.max_texts,
            quote_mode=quote_mode, seed=self.seed,
        )  # fmt: skip
        if not prompt.texts:
            raise BackendError(f"segment {segment.segment_id} has no usable texts for a prompt")
        response_model = brief_response_model(core, prompt)
        if schema_in_prompt:  # the backend cannot enforce the schema: show it (same texts, same budget)
            prompt = build_brief_prompt(
                agent, persona=persona, segment=segment, segment_texts=run.segment_texts(segment.segment_id),
                count_tokens=chat.count_tokens, goal=goal, channel=channel, n_segments=n_segments,
                language=self.language, max_context=chat.capabilities.max_context,
                completion_tokens=chat.max_tokens, text_token_budget=self.text_token_budget,
                max_text_tokens=self.max_text_tokens, max_texts=self.max_texts, quote_mode=quote_mode,
                response_schema=response_model.model_json_schema(), seed=self.seed,
            )  # fmt: skip
            # The schema took room from the texts: validate against what this prompt shows (an id shown in
            # the schema but not among the texts is re-asked, never taken).
            response_model = brief_response_model(core, prompt)
        numbers = RunNumbers.of(segment, n_segments)
        tag = f"brief {segment.segment_id}"
        records: list[CallRecord] = []

        def generate(messages: list[dict[str, str]]) -> tuple[BriefDraft, list[DraftQuote], list[dict[str, str]], int]:
            try:
                result = chat.generate_structured(
                    messages, response_model, max_reasks=settings.max_reasks, tag=tag,
                    check=lambda value: audience_number_problems(value, numbers),
                )  # fmt: skip
            except StructuredOutputError as exc:
                # Kept in this part's records (a failed support re-ask) or, raised, in the error's: the
                # caller records them (a write_many runs parts on threads, so never on self here).
                records.extend(exc.records)
                exc.records = list(records)
                raise
            records.extend(result.records)
            draft, quotes = _as_draft(result.value, core, prompt)
            return draft, quotes, result.messages, result.attempts

        draft, draft_quotes, convo, attempts = generate(prompt.messages)
        verdicts = self._check(draft, prompt, segment, numbers)
        for _ in range(self.max_support_reasks):
            share = _pass_share(verdicts)
            if share is None or share >= self.support_reask_below:
                break
            log.info("%s: %d of %d claims passed the gates; re-asking", tag, len(verdicts.kept), len(verdicts.kept) + len(verdicts.removed))
            try:
                new_draft, new_quotes, _, more = generate([*convo, {"role": "user", "content": support_feedback(verdicts)}])
            except StructuredOutputError:
                break
            attempts += more
            new_verdicts = self._check(new_draft, prompt, segment, numbers)
            if (_pass_share(new_verdicts) or 0.0) > (share or 0.0):
                draft, draft_quotes, verdicts = new_draft, new_quotes, new_verdicts
        grounding = ground_quotes(
            draft_quotes, segment.segment_id, self.index_, attempt=attempts, max_quotes=core.MAX_QUOTES
        )
        warnings = []
        if self.support_index_ is None:
            warnings.append(f"claims not checked against the texts ({self.support_note_})")
        min_quotes = min(self.min_quotes, core.MAX_QUOTES)
        cohesion_ratio = segment.quality.cohesion / self.median_cohesion_ if self.median_cohesion_ else None
        confidence, basis = evidence_confidence(
            verdicts.checks if verdicts.support_checked else [],
            quotes_kept=len(grounding.kept),
            quotes_proposed=len(draft_quotes),
            min_quotes=min_quotes,
            cohesion_ratio=cohesion_ratio,
            named=False,
        )
        n_cited = sum(1 for f, _ in verdicts.kept if f in core.CITED)
        basis += f"; {n_cited} cited claim(s) kept, {len(verdicts.removed)} removed"
        if n_cited == 0:
            confidence = "low"
        if _ORDER[confidence] > _ORDER[persona.confidence]:
            basis += f"; capped at the persona's confidence ({persona.confidence})"
            confidence = persona.confidence
        share = support_share(verdicts.checks) if verdicts.support_checked else None
        provenance = BriefProvenance(
            run_id=run.run_id,
            data_sha256=run.input_sha256,
            agent=agent.spec.name,
            backend=chat.backend,
            model=chat.model,
            prompt_version=prompt.prompt_version,
            prompt_sha256=prompt.template_sha256,
            quote_mode=quote_mode,
            language=prompt.language_code,
            generated_at=datetime.now(UTC).isoformat(timespec="seconds"),
            attempts=attempts,
            from_cache=all(r.cached for r in records),
            prompt_tokens=sum(r.prompt_tokens for r in records),
            completion_tokens=sum(r.completion_tokens for r in records),
            seconds=round(sum(r.seconds for r in records), 3),
            quotes_proposed=len(draft_quotes),
            quotes_removed=grounding.removed,
            statements=verdicts.checks,
            statements_removed=verdicts.removed,
            citations_removed=verdicts.citations_removed,
            numbers_checked=verdicts.numbers_checked,
            support_share=None if share is None else round(share, 4),
            confidence_basis=basis,
            warnings=warnings,
        )
        audience = Audience(
            persona_id=persona.persona_id,
            persona_name=persona.name,
            segment_id=segment.segment_id,
            user_count=segment.size,
            share=segment.share,
            n_texts=segment.n_texts,
            persona_confidence=persona.confidence,
        )
        return _Part(draft, audience, verdicts, grounding.kept, confidence, provenance, records)

    def _check(self, draft: BriefDraft, prompt: RenderedPrompt, segment: Segment, numbers: RunNumbers) -> ClaimVerdicts:
        claims = draft_claims(draft, prompt.text_id_for)
        vectors = None
        if self.support_index_ is not None and claims:
            vectors = np.asarray(self.support_embedder_.encode([c.text for c in claims]), dtype=np.float32)
        return check_claims(
            claims,
            segment_id=segment.segment_id,
            index=self.index_,
            numbers=numbers,
            support=self.support_index_,
            vectors=vectors,
            min_citation_similarity=self.min_citation_similarity,
        )

    # -- output -------------------------------------------------------------------------------------

    def _assemble(
        self,
        kind: str,
        run: RunDir,
        personas: Sequence[Persona],
        parts: Sequence[_Part],
        goal: str,
        channel: str | None,
    ) -> AnyBriefModel:
        head: dict[str, Any] = {
            "brief_id": brief_id(run.run_id, kind, personas, goal, channel),
            "run_id": run.run_id,
            "goal": goal,
            "channel": channel,
            "language": parts[0].provenance.language,
        }
        if kind == "messaging":
            rows = []
            for part in parts:
                row = cast(MessageDraft, part.draft)
                kept = part.kept_claims("insight")
                rows.append(
                    MessageRow(
                        audience=part.audience, insight=kept[0] if kept else None, message=row.message,
                        channel=row.channel, call_to_action=row.call_to_action,
                        proof_point=part.quotes[0] if part.quotes else None, confidence=part.confidence,
                        provenance=part.provenance,
                    )
                )  # fmt: skip
            lowest = min((r.confidence for r in rows), key=lambda c: _ORDER[c])
            return MessagingMatrix(**head, rows=rows, confidence=lowest)
        part = parts[0]
        dropped: list[int] = []
        if kind == "narrative":
            story = cast(NarrativeDraft, part.draft)
            takeaways = _distinct(story.takeaways, dropped)
            sentences = _distinct(part.kept_claims("story"), dropped)
            _note_repeats(part, dropped)
            return NarrativeBrief(
                **head, audience=part.audience, title=story.title, story=sentences,
                quotes=part.quotes, takeaways=takeaways, confidence=part.confidence,
                provenance=part.provenance,
            )  # fmt: skip
        brief = cast(CampaignDraft, part.draft)
        objections = [
            Objection(objection=o.objection, answer=o.answer)
            for k, o in enumerate(brief.objections)
            if part.verdicts.keeps("objections", k)
        ]
        lists: dict[str, Any] = {
            "audience_insights": _distinct(part.kept_claims("insights"), dropped),
            "offers": _distinct(brief.offers, dropped),
            "channel_plan": _distinct(brief.channel_plan, dropped),
            "do": _distinct(brief.do, dropped),
            "dont": _distinct(brief.dont, dropped),
            "objections": _distinct(objections, dropped),
            "measure": _distinct(brief.measure, dropped),
        }
        _note_repeats(part, dropped)
        return Brief.model_validate(
            {**head, "audience": part.audience, "objective": brief.objective, "key_message": brief.key_message,
             "proof_points": part.quotes, "tone": brief.tone, "confidence": part.confidence,
             "provenance": part.provenance, **lists}
        )  # fmt: skip

    def stats(self) -> dict[str, Any]:
        """What the last write did: calls, tokens, seconds (the bench reads these)."""
        calls = [r for r in getattr(self, "records_", []) if not r.cached]
        return {
            "model": getattr(self, "model_id_", ""),
            "calls": len(getattr(self, "records_", [])),
            "cached_calls": len(getattr(self, "records_", [])) - len(calls),
            "invalid_outputs": sum(1 for r in getattr(self, "records_", []) if r.outcome == "invalid"),
            "prompt_tokens": sum(r.prompt_tokens for r in calls),
            "completion_tokens": sum(r.completion_tokens for r in calls),
            "llm_seconds": round(sum(r.seconds for r in calls), 2),
            "wall_seconds": round(getattr(self, "seconds_", 0.0), 2),
        }


def _distinct(items: Sequence[Any], dropped: list[int]) -> list[Any]:
    """`items` without repeats (case and spacing ignored): a small model repeats list items word for word.
    Adds the number dropped to `dropped`."""
    seen: set[str] = set()
    out = []
    for item in items:
        key = " ".join(str(item.model_dump() if isinstance(item, BaseModel) else item).casefold().split())
        if key not in seen:
            seen.add(key)
            out.append(item)
    dropped.append(len(items) - len(out))
    return out


def _note_repeats(part: _Part, dropped: list[int]) -> None:
    if sum(dropped):
        part.provenance.warnings.append(f"{sum(dropped)} repeated item(s) dropped")


def _pass_share(verdicts: ClaimVerdicts) -> float | None:
    total = len(verdicts.kept) + len(verdicts.removed)
    return len(verdicts.kept) / total if total else None


def _as_draft(value: BaseModel, core: type[BriefDraft], prompt: RenderedPrompt) -> tuple[BriefDraft, list[DraftQuote]]:
    """A reply as the core draft (short text ids kept; the gates map them) and its quotes as DraftQuotes
    with real text ids: ids chosen by reference become that sentence, copied from the prompt's text."""
    quotes: list[DraftQuote] = []
    for ref in getattr(value, "quote_ids", None) or []:
        unit = prompt.unit(ref)
        if unit is not None:  # the schema allows only shown ids; a backend that ignored it is gated
            quotes.append(DraftQuote(text_id=unit.text_id, text=unit.text))
    for q in getattr(value, "quotes", None) or []:
        quotes.append(DraftQuote(text_id=prompt.text_id_for(q.text_id), text=q.text))
    data = value.model_dump(exclude={"quote_ids", "quotes"})
    return core.model_validate(data), quotes

