"""Write one persona per segment of a run: prompt -> LLM -> schema -> grounding gate -> distinctness gate.

Outputs in the run directory:
    personas.json         list of Persona (schema: persona.schema.json next to it)
    persona.schema.json   JSON Schema of personas.json
    personas.md           the personas as Markdown
    report.html           self-contained report: user map, segment sizes, persona cards with evidence
    personas_stats.json   what the writer did: calls, tokens, seconds, gate counts, similarities
    llm_calls.jsonl       one line per model call: prompt hash, tokens, seconds, outcome
and the personas are upserted into the run's Chroma store (collection "personas").
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

from persona_llm.common.textmatch import name_key
from persona_llm.common.vectors import cosine, pairwise_cosine
from persona_llm.errors import BackendError, ConfigError, InputError
from persona_llm.llm.client import CallRecord, ChatModel, LLMSettings, StructuredOutputError, open_chat_model
from persona_llm.personas.gates import (
    Embedder,
    TextIndex,
    cap_quotes,
    check_estimates,
    choose_to_regenerate,
    estimates_from_hints,
    fill_from_attributes,
    max_pairwise_similarity,
    similar_pairs,
)
from persona_llm.personas.gates import (
    ground_quotes as ground_quotes_gate,
)
from persona_llm.personas.prompting import AgentPrompt, PromptTemplates, RenderedPrompt, build_prompt
from persona_llm.personas.quoting import reference_draft_model, verbatim_draft_model
from persona_llm.personas.support import (
    DROPPABLE_FIELDS,
    SupportIndex,
    accusations,
    chance_level,
    chance_rows,
    draft_statements,
    evidence_confidence,
    name_supported,
    run_support_index,
    support_feedback,
    support_share,
)
from persona_llm.runs.rundir import (
    LLM_CALLS,
    MANIFEST,
    PERSONA_STATS,
    PERSONAS_MARKDOWN,
    REPORT,
    TEXT_EMBEDDINGS,
    RunDir,
)
from persona_llm.schema.frames import TEXT
from persona_llm.schema.personas import (
    MAX_QUOTES,
    MIN_QUOTES,
    NAME_MAX_CHARS,
    DistinctnessCheck,
    DraftCore,
    DraftQuote,
    Persona,
    PersonaDraft,
    Provenance,
    Quote,
    QuoteRemoval,
    StatementCheck,
)
from persona_llm.schema.segments import Keyword, Segment

log = logging.getLogger(__name__)

#: Agent definition (agents/<name>.toml) the writer runs by default: its role opens the system message,
#: its prompt version chooses the templates, its output_schema is the response model.
WRITER_AGENT = "persona_writer"


@dataclass(frozen=True)
class PersonaProgress:
    """One persona finished (or failed): what a person watching a build sees, one line each."""

    done: int
    total: int
    segment_id: int
    name: str
    seconds: float
    quotes_kept: int
    confidence: str
    eta_seconds: float | None
    error: str = ""
    regenerated: bool = False

    def line(self) -> str:
        head = f"persona {self.done}/{self.total} · segment {self.segment_id}"
        if self.error:
            return f"{head} · failed after {self.seconds:.0f} s: {self.error[:160]}"
        eta = f" · ETA {self.eta_seconds:.0f} s" if self.eta_seconds is not None and self.done < self.total else ""
        again = " (regenerated for distinctness)" if self.regenerated else ""
        return (
            f"{head} · {self.name!r}{again} · {self.seconds:.0f} s · {self.quotes_kept} quotes kept · "
            f"confidence {self.confidence}{eta}"
        )


class PersonaWriteError(BackendError):
    """Some segments got no persona (the others were written); `failures` maps segment id to why."""

    def __init__(self, failures: dict[int, str]) -> None:
        self.failures = failures
        detail = "; ".join(f"segment {k}: {v}" for k, v in sorted(failures.items()))
        super().__init__(f"{len(failures)} segment(s) got no persona: {detail}")


def _with_real_text_ids(draft: PersonaDraft, prompt: RenderedPrompt) -> PersonaDraft:
    """The draft with the short ids the model cited ("t3") replaced by the real text ids, before any gate."""
    quotes = [q.model_copy(update={"text_id": prompt.text_id_for(q.text_id)}) for q in draft.quotes]
    demographics = draft.demographics.model_copy(
        update={
            name: est.model_copy(update={"text_ids": [prompt.text_id_for(t) for t in est.text_ids]})
            for name, est in draft.demographics
        }
    )
    return draft.model_copy(update={"quotes": quotes, "demographics": demographics})


def _as_draft(value: DraftCore, prompt: RenderedPrompt) -> PersonaDraft:
    """A reply as a PersonaDraft with real text ids: quotes chosen by sentence id ("t3.2") become that
    sentence, copied from the prompt's text; quotes written out are taken as written (the gate checks both)."""
    if isinstance(value, PersonaDraft):
        return _with_real_text_ids(value, prompt)
    quotes = list(getattr(value, "quotes", None) or [])  # copied as text by a custom output_schema's model
    for ref in getattr(value, "quote_ids", []):
        unit = prompt.unit(ref)
        if unit is not None:  # the schema allows only shown ids; a backend that ignored it is gated below
            quotes.append(DraftQuote(text_id=unit.text_id, text=unit.text))
    fields = {name: getattr(value, name) for name in DraftCore.model_fields}
    hints = getattr(value, "demographic_hints", None)
    if hints is not None:  # HintsDraftCore: the estimates are built here, from what the model says the texts say
        fields["demographics"] = estimates_from_hints(hints)
    # Built without validation: fewer than MIN_QUOTES ids is allowed when fewer sentences were shown.
    return _with_real_text_ids(PersonaDraft.model_construct(**fields, quotes=quotes), prompt)


def _writes_hints(output_model: type[DraftCore]) -> bool:
    """True for a response model that lists demographic hints instead of writing the four estimates
    (HintsDraftCore): its prompt asks for hints, and attribute estimates are computed, not generated."""
    return "demographic_hints" in output_model.model_fields


def _unquoted_refs(prompt: RenderedPrompt, kept: Sequence[Quote], draft: PersonaDraft) -> list[str]:
    """Short ids of the prompt's texts that neither a kept quote nor the last draft cited."""
    cited = {q.text_id for q in kept} | {q.text_id for q in draft.quotes}
    return [t.ref for t in prompt.texts if t.ref and t.text_id not in cited]


def _keywords(run: RunDir, segment_id: int) -> list[Keyword]:
    try:
        return run.load_segments().get(segment_id).keywords
    except KeyError:  # a published persona whose segment is gone from this run
        return []


@dataclass
class _Generated:
    persona: Persona
    records: list[CallRecord] = field(default_factory=list)


@dataclass
class SegmentOutcome:
    """What writing one segment's persona gave, wherever it ran: the persona, or why there is none (a
    model or backend failure), with the model calls made either way. Picklable, so a worker process can
    send it back."""

    segment_id: int
    persona: Persona | None
    records: list[CallRecord]
    seconds: float
    error: str = ""


class SegmentExecutor(Protocol):
    """Runs the per-segment work of a write somewhere other than this process's threads
    (persona_llm.scale.RayExecutor: Ray actors, each with its own connection to an OpenAI-compatible
    endpoint). Each segment goes through `write_segment_outcome`, exactly as the local threads do."""

    def write_segments(
        self,
        writer: PersonaWriter,
        chat: ChatModel,
        templates: PromptTemplates,
        run: RunDir,
        segments: Sequence[Segment],
        settings: LLMSettings,
        different_from: dict[int, list[dict[str, Any]]],
    ) -> Iterator[SegmentOutcome]:
        """One outcome per segment, as each finishes (any order)."""
        ...


def write_segment_outcome(
    writer: PersonaWriter,
    chat: ChatModel,
    templates: PromptTemplates,
    run: RunDir,
    segment: Segment,
    settings: LLMSettings,
    different_from: list[dict[str, Any]],
) -> SegmentOutcome:
    """Write one segment's persona with a prepared writer (`PersonaWriter.prepare`): the one unit of work
    that both the local threads and a cluster executor run. A model or backend failure is an outcome (the
    other segments go on); anything else is a bug and raises."""
    t0 = time.perf_counter()
    try:
        generated = writer.write_segment(chat, templates, run, segment, settings, different_from)
    except (StructuredOutputError, BackendError) as exc:
        log.error("segment %d: %s", segment.segment_id, exc)
        records = list(exc.records) if isinstance(exc, StructuredOutputError) else []
        return SegmentOutcome(segment.segment_id, None, records, time.perf_counter() - t0, str(exc)[:500])
    return SegmentOutcome(segment.segment_id, generated.persona, generated.records, time.perf_counter() - t0)


def _quote_feedback(
    removed: Sequence[QuoteRemoval],
    n_kept: int,
    needed: int,
    shown_id: Callable[[str], str] = str,
    unquoted: Sequence[str] = (),
) -> str:
    reasons = {
        "not_verbatim": "not found word for word in any text",
        "cuts_word": "starts or ends inside a word (in Chinese: inside a clause); quote whole words or clauses",
        "drops_negation": "leaves out the negation right before it (not, never, 不, 没有...), so it says the opposite",
        "wrong_text_id": "found, but not in the text it cites",
        "not_in_segment": "cites a text that is not in this segment",
        "duplicate": "repeats another quote",
        "too_short": "too short to be evidence",
    }
    # Each distinct rejected quote once: a small model that repeats one quote five times needs one line.
    lines: list[str] = []
    for r in removed:
        if r.reason not in reasons:
            continue  # over_limit: a valid quote there was no room for, nothing to correct
        line = f'- "{r.text[:120]}" (text_id {shown_id(r.text_id)}): {reasons[r.reason]}'
        if line not in lines and len(lines) < 8:
            lines.append(line)
    # Naming texts not yet quoted is what gets a small model off the quote it keeps repeating.
    hint = (
        f"Take each new quote from a different one of these texts, which you have not quoted yet: {', '.join(unquoted[:8])}.\n"
        if unquoted
        else ""
    )
    return (
        f"Only {n_kept} of the quotes are copied exactly from the texts; at least {needed} are needed.\n"
        "Rejected quotes:\n" + "\n".join(lines) + "\n" + hint + "Copy each quote character for character "
        "(one or two sentences, at most 40 words) from one text between <texts> and </texts> and give that "
        "text's id. Reply again with the complete corrected JSON object only."
    )


class PersonaWriter:
    """Writes personas for the segments of a run directory.

    Parameters (scikit-learn style: stored as given; nothing happens until `write`)
    ----------
    settings: which backend and how to call it (ignored for the model if `chat` is given).
    chat: an already-open ChatModel (tests, several runs on one server); else one is opened per write.
    language: "auto" (each segment's majority language), "en", "zh", ...
    prompt_version: a folder under prompts/ (None: the one the persona_writer agent definition names).
    text_token_budget / max_text_tokens / max_texts: how much of the segment goes into the prompt.
    min_quotes: verified quotes wanted; fewer triggers a re-ask (at most `max_quote_reasks`).
    distinct_threshold: similarity above which two personas count as the same persona, on the scale
        (cosine - chance) / (1 - chance), where chance is the embedder's mean cosine between random texts
        of the run (`chance_similarity_`). MiniLM's chance on 20NG posts is ~0.06, so 0.9 means cosine
        ~0.91; multilingual e5's on Chinese reviews is ~0.88, so 0.9 means ~0.99 there. One absolute
        cosine would regenerate every Chinese persona (distinct ones sit at 0.90-0.96) or no English one.
    max_regenerations: rounds of "different from" regeneration.
    agent: the agent definition (a name in agents/ or a .toml path) the writer runs: its role opens the
        system message, its prompt version chooses the templates, its output_schema (DraftCore or a
        subclass) is the response model the quote field is added to; it may ask for no tools.
    embedder: object with `.encode(texts) -> unit vectors`, a `persona_llm.embed.get_embedder` name, or
        "auto" (MiniLM for English personas, the multilingual E5 otherwise).
    write_store / write_report: also upsert into the Chroma store / write report.html.
    check_support: check every statement against the segment's texts (persona_llm.personas.support) with
        the run's own embedder; unsupported list items are dropped and recorded, and confidence is
        computed from the evidence. Off (or impossible, e.g. no text embeddings): confidence "low".
    support_embedder: the embedder of the run's text vectors (None: rebuilt from the run manifest).
    max_support_reasks / support_reask_below: re-ask (keeping the quotes) when under this share of a
        draft's statements is supported; a draft mostly made up is rewritten, a few stray items dropped.
    progress: called once per persona finished or failed (also logged at INFO): a build that runs for
        minutes says what it is doing, in a terminal or a log.
    quote_mode: "reference" (the model picks numbered sentences by id from an enum in the schema; the
        writer copies them: persona_llm.personas.quoting), "verbatim" (the model copies quotes as text,
        gated and re-asked), or "auto" (reference where the backend enforces JSON schemas, else verbatim).
    executor: None writes segments on `settings.concurrency` threads of this process; a SegmentExecutor
        (persona_llm.scale.RayExecutor) writes them elsewhere. Either way each segment goes through
        `write_segment_outcome`; gates, distinctness and the saved files are the same.
    """

    def __init__(
        self,
        settings: LLMSettings | None = None,
        *,
        chat: ChatModel | None = None,
        language: str = "auto",
        prompt_version: str | None = None,
        text_token_budget: int = 1500,
        max_text_tokens: int = 160,
        max_texts: int = 24,
        min_quotes: int = MIN_QUOTES,
        max_quote_reasks: int = 2,
        distinct_threshold: float = 0.9,
        max_regenerations: int = 1,
        embedder: Embedder | str | None = "auto",
        write_store: bool = True,
        write_report: bool = True,
        check_support: bool = True,
        support_embedder: Embedder | None = None,
        max_support_reasks: int = 1,
        support_reask_below: float = 0.5,
        progress: Callable[[PersonaProgress], None] | None = None,
        quote_mode: str = "auto",
        seed: int = 0,
        executor: SegmentExecutor | None = None,
        agent: str | Path = WRITER_AGENT,
    ) -> None:
        self.settings = settings
        self.chat = chat
        self.language = language
        self.prompt_version = prompt_version
        self.text_token_budget = text_token_budget
        self.max_text_tokens = max_text_tokens
        self.max_texts = max_texts
        self.min_quotes = min_quotes
        self.max_quote_reasks = max_quote_reasks
        self.distinct_threshold = distinct_threshold
        self.max_regenerations = max_regenerations
        self.embedder = embedder
        self.write_store = write_store
        self.write_report = write_report
        self.check_support = check_support
        self.support_embedder = support_embedder
        self.max_support_reasks = max_support_reasks
        self.support_reask_below = support_reask_below
        self.progress = progress
        self.quote_mode = quote_mode
        self.seed = seed
        self.executor = executor
        self.agent = agent

    # -- public -------------------------------------------------------------------------------------

    def write(self, run_dir: str | Path | RunDir, segment_ids: Sequence[int] | None = None) -> list[Persona]:
        """Generate personas for `segment_ids` (default: all), merge them into personas.json, write the
        Markdown and HTML report and the store. Returns all personas of the run, by segment id."""
        settings = self.settings or LLMSettings()
        run = run_dir if isinstance(run_dir, RunDir) else RunDir.open(run_dir)
        segment_set = run.load_segments()
        wanted = list(segment_ids) if segment_ids is not None else [s.segment_id for s in segment_set.segments]
        segments = [segment_set.get(int(sid)) for sid in wanted]  # KeyError names a wrong id
        if not segments:
            raise InputError("the run has no segments to write personas for", path=str(run.path))
        self.prepare(run)
        self.records_: list[CallRecord] = []
        self.failures_: dict[int, str] = {}
        started = time.perf_counter()
        if self.chat is not None:
            personas = self._write_with(self.chat, run, segments, settings)
        else:
            with open_chat_model(settings) as chat:
                personas = self._write_with(chat, run, segments, settings)
        self.seconds_ = time.perf_counter() - started
        all_personas = self._save(run, personas)
        if self.failures_:
            raise PersonaWriteError(self.failures_)
        return all_personas

    def prepare(self, run: RunDir) -> PersonaWriter:
        """Read what every segment's persona is checked against: the run's texts (quote gate), its text
        vectors and their embedder (narrative support), the median cohesion (confidence)."""
        segment_set = run.load_segments()
        self.index_ = TextIndex.from_frame(run.load_texts())
        self.support_index_, self.support_note_ = self._support_index(run) if self.check_support else (None, "off")
        cohesions = sorted(s.quality.cohesion for s in segment_set.segments)
        self.median_cohesion_ = cohesions[len(cohesions) // 2] if cohesions else None
        return self

    def for_worker(self) -> PersonaWriter:
        """A copy of this prepared writer to send to a worker process: parameters and prepared state
        (its embedders pickle as parameters and load again there), without the open chat model, the
        progress callback, the executor or the persona embedder, which stay with the driver."""
        clone = copy.copy(self)
        clone.chat = clone.progress = clone.executor = None
        clone.embedder = None  # distinctness runs in the driver, over all personas
        clone.records_, clone.failures_ = [], {}
        return clone

    # -- generation ---------------------------------------------------------------------------------

    def _write_with(
        self, chat: ChatModel, run: RunDir, segments: list[Segment], settings: LLMSettings
    ) -> list[Persona]:
        self.model_id_ = chat.model_id
        self.backend_info_ = dict(chat.info)
        # The agent definition (agents/persona_writer.toml): its role and output model are kept on the writer
        # (so a worker's copy has them), its templates travel as the executors expect.
        agent = AgentPrompt.load(self.agent, expects=DraftCore, prompt_version=self.prompt_version)
        self.agent_name_, self.role_ = agent.spec.name, agent.role
        self.output_model_: type[DraftCore] = agent.output_model  # type: ignore[assignment]  # checked on load
        templates = agent.templates
        generated = self._generate_many(chat, templates, run, segments, settings, {})
        personas = {g.persona.segment_id: g.persona for g in generated}
        self._distinctness(chat, templates, run, personas, settings)
        return [personas[s.segment_id] for s in segments if s.segment_id in personas]

    def _generate_many(
        self,
        chat: ChatModel,
        templates: PromptTemplates,
        run: RunDir,
        segments: Sequence[Segment],
        settings: LLMSettings,
        different_from: dict[int, list[dict[str, Any]]],
    ) -> list[_Generated]:
        workers = max(1, min(settings.concurrency, len(segments)))
        lock = threading.Lock()
        started = time.perf_counter()
        finished: list[float] = []

        def report(segment: Segment, seconds: float, generated: _Generated | None, error: str = "") -> None:
            with lock:
                finished.append(seconds)
                done, total = len(finished), len(segments)
                # Wall time so far per persona, spread over the remaining ones (workers run side by side).
                eta = (time.perf_counter() - started) / done * (total - done)
            persona = generated.persona if generated else None
            event = PersonaProgress(
                done=done, total=total, segment_id=segment.segment_id, name=persona.name if persona else "",
                seconds=seconds, quotes_kept=len(persona.quotes) if persona else 0,
                confidence=persona.confidence if persona else "", eta_seconds=eta, error=error,
                regenerated=bool(different_from),
            )  # fmt: skip
            log.info("%s", event.line())
            if self.progress is not None:
                self.progress(event)

        by_id = {s.segment_id: s for s in segments}

        def finish(outcome: SegmentOutcome) -> _Generated | None:
            segment = by_id[outcome.segment_id]
            if outcome.persona is None:
                self.failures_[segment.segment_id] = outcome.error
                with lock:
                    self.records_.extend(outcome.records)
                report(segment, outcome.seconds, None, outcome.error)
                return None
            generated = _Generated(outcome.persona, outcome.records)
            report(segment, outcome.seconds, generated)
            return generated

        if self.executor is not None:
            results = {
                outcome.segment_id: finish(outcome)
                for outcome in self.executor.write_segments(
                    self, chat, templates, run, segments, settings, different_from
                )
            }
            if set(results) != set(by_id):
                raise BackendError(f"the executor returned segments {sorted(results)} for {sorted(by_id)}")
            ordered = [results[s.segment_id] for s in segments]
        else:

            def one(segment: Segment) -> _Generated | None:
                if workers == 1:
                    chat.prepare_for_task()  # e.g. the embedded server takes cores that have come free
                return finish(
                    write_segment_outcome(
                        self, chat, templates, run, segment, settings, different_from.get(segment.segment_id, [])
                    )
                )

            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="persona") as pool:
                ordered = list(pool.map(one, segments))
        done = [r for r in ordered if r is not None]
        for r in done:
            self.records_.extend(r.records)
        return done

    def write_segment(
        self,
        chat: ChatModel,
        templates: PromptTemplates,
        run: RunDir,
        segment: Segment,
        settings: LLMSettings,
        different_from: list[dict[str, Any]],
    ) -> _Generated:
        """One segment's persona (after `prepare`): prompt, generation, quote gate and re-asks, estimates,
        narrative support, confidence. Called through `write_segment_outcome` by every executor."""
        sid = segment.segment_id
        mode = chat.capabilities.structured_mode(chat.structured)
        base = self.output_model_
        prompt = build_prompt(
            templates,
            segment,
            run.segment_texts(sid),
            chat.count_tokens,
            n_segments=len(run.load_segments().segments),
            language=self.language,
            max_context=chat.capabilities.max_context,
            completion_tokens=chat.max_tokens,
            text_token_budget=self.text_token_budget,
            max_text_tokens=self.max_text_tokens,
            max_texts=self.max_texts,
            different_from=different_from,
            schema_in_prompt=mode != "json_schema",
            quote_mode=self._quote_mode(mode),
            seed=self.seed,
            role=self.role_,
            response_schema=verbatim_draft_model(base).model_json_schema(),
            demographics_mode="hints" if _writes_hints(base) else "estimates",
        )
        if not prompt.texts:
            raise BackendError(f"segment {sid} has no usable texts for a prompt")
        reference = prompt.quote_mode == "reference" and bool(prompt.units)
        response_model: type[DraftCore] = (
            reference_draft_model([u.ref for u in prompt.units], base) if reference else verbatim_draft_model(base)
        )
        needed = min(self.min_quotes, len(prompt.units) if reference else len(prompt.texts))
        messages = prompt.messages
        kept: list[Quote] = []
        removed: list[QuoteRemoval] = []
        records: list[CallRecord] = []
        proposed = attempts = 0
        draft: PersonaDraft | None = None
        warnings: list[str] = []
        tag = f"segment {sid}"
        for round_ in range(1, self.max_quote_reasks + 2):
            # A quote re-ask at the first call's deterministic sampling tends to return the same quotes
            # again (seen with the 1.5B model); later rounds sample a little more freely.
            sampling = None if round_ == 1 else {"temperature": max(settings.temperature, 0.7), "seed": self.seed + round_}
            try:
                result = chat.generate_structured(
                    messages, response_model, max_reasks=settings.max_reasks, tag=tag, sampling=sampling
                )
            except StructuredOutputError as exc:
                if draft is None:
                    raise
                # A failed quote re-ask loses nothing the first round verified: the earlier draft and its
                # quotes stand, with the shortfall said in the warnings below.
                records.extend(exc.records)
                attempts += len(exc.records)
                warnings.append(f"quote re-ask {round_ - 1} gave no valid draft; the draft before it is kept")
                break
            records.extend(result.records)
            draft = _as_draft(result.value, prompt)
            grounding = ground_quotes_gate(
                draft.quotes,
                sid,
                self.index_,
                attempt=attempts + result.attempts,
                already_kept=kept,
                max_quotes=MAX_QUOTES,
            )
            attempts += result.attempts
            proposed += len(draft.quotes)
            kept.extend(grounding.kept)
            removed.extend(grounding.removed)
            if len(kept) >= needed:
                break
            if round_ <= self.max_quote_reasks:
                log.info("segment %d: %d/%d verified quotes; re-asking", sid, len(kept), needed)
                messages = result.messages + [
                    {"role": "user", "content": _quote_feedback(
                            grounding.removed,
                            len(kept),
                            needed,
                            prompt.ref_for,
                            unquoted=_unquoted_refs(prompt, kept, draft),
                        )}
                ]
        assert draft is not None
        capped = cap_quotes(kept, MAX_QUOTES, attempt=attempts)
        kept, removed = capped.kept, removed + capped.removed
        if len(kept) < needed:
            warnings.append(f"only {len(kept)} verified quotes after {self.max_quote_reasks} re-asks")
        demographics, estimate_removals = check_estimates(draft.demographics, segment, self.index_)
        if _writes_hints(base):
            demographics = fill_from_attributes(demographics, segment)
        draft = draft.model_copy(update={"demographics": demographics})
        draft, statements, statements_removed, support_attempts = self._support(
            chat, draft, sid, prompt, result.messages, settings, records, tag, response_model
        )
        attempts += support_attempts
        if self.support_index_ is None:
            warnings.append(f"statements not checked against the texts ({self.support_note_})")
        cohesion_ratio = (
            segment.quality.cohesion / self.median_cohesion_ if self.median_cohesion_ else None
        )
        confidence, basis = evidence_confidence(
            statements,
            quotes_kept=len(kept),
            quotes_proposed=proposed,
            min_quotes=needed,
            cohesion_ratio=cohesion_ratio,
        )
        provenance = Provenance(
            run_id=run.run_id,
            data_sha256=run.input_sha256,
            segment_sha256=prompt.inputs_sha256,
            backend=chat.backend,
            model=chat.model,
            prompt_version=prompt.prompt_version,
            prompt_sha256=prompt.template_sha256,
            agent=str(self.agent),  # as given (a name in agents/ or a .toml path), so a refresh can load it again
            quote_mode="reference" if reference else "verbatim",
            language=prompt.language_code,
            generated_at=datetime.now(UTC).isoformat(timespec="seconds"),
            attempts=attempts,
            from_cache=all(r.cached for r in records),
            prompt_tokens=sum(r.prompt_tokens for r in records),
            completion_tokens=sum(r.completion_tokens for r in records),
            seconds=round(sum(r.seconds for r in records), 3),
            quotes_proposed=proposed,
            quotes_removed=removed,
            estimates_removed=estimate_removals,
            statements=statements,
            statements_removed=statements_removed,
            support_share=None if (share := support_share(statements)) is None else round(share, 4),
            confidence_basis=basis,
            model_confidence=draft.confidence,
            warnings=warnings,
        )
        persona = Persona.from_draft(
            draft,
            persona_id=run.persona_id(sid),
            version=run.persona_version(sid),
            segment_id=sid,
            run_id=run.run_id,
            language=prompt.language_code,
            user_count=segment.size,
            share=segment.share,
            n_texts=segment.n_texts,
            quotes=kept,
            provenance=provenance,
            confidence=confidence,
            keywords=[k.term for k in segment.keywords[:8]],
        )
        return _Generated(persona, records)

    def _quote_mode(self, structured_mode: str) -> Literal["reference", "verbatim"]:
        if self.quote_mode == "auto":
            # Without schema decoding an enum is only a request; a small model then invents ids as it
            # invents quotes, so free text (gated and re-asked) is the safer form there.
            return "reference" if structured_mode == "json_schema" else "verbatim"
        if self.quote_mode not in ("reference", "verbatim"):
            raise ConfigError(f"quote_mode must be auto, reference or verbatim, not {self.quote_mode!r}")
        return "reference" if self.quote_mode == "reference" else "verbatim"

    # -- narrative support --------------------------------------------------------------------------

    def _support_index(self, run: RunDir) -> tuple[SupportIndex | None, str]:
        """The run's text vectors by segment and the embedder that made them; (None, why) if unavailable."""
        index, self.support_embedder_, note = run_support_index(run, embedder=self.support_embedder, seed=self.seed)
        return index, note

    def _check_statements(self, draft: PersonaDraft, segment_id: int) -> list[StatementCheck]:
        if self.support_index_ is None:
            return []
        statements = draft_statements(draft)
        vectors = np.asarray(self.support_embedder_.encode([s for _, s in statements]), dtype=np.float32)
        return self.support_index_.check(segment_id, statements, vectors)

    def _support(
        self,
        chat: ChatModel,
        draft: PersonaDraft,
        segment_id: int,
        prompt: RenderedPrompt,
        messages: list[dict[str, str]],
        settings: LLMSettings,
        records: list[CallRecord],
        tag: str,
        response_model: type[DraftCore] = PersonaDraft,
    ) -> tuple[PersonaDraft, list[StatementCheck], list[StatementCheck], int]:
        """Check the draft's statements; re-ask once when most are unsupported, or the name is, or one
        accuses the members (quotes and demographics kept), and take the rewrite only if it is no worse on
        any of the three counts and better on one;
        drop the unsupported list items that remain. Returns the draft, the checks of what the model wrote
        (dropped items included, so the share says how much of it held), the dropped items, and the
        generation calls made."""
        checks = self._check_statements(draft, segment_id)
        attempts = 0
        for _ in range(self.max_support_reasks):
            share = support_share(checks)
            if share is None or (
                share >= self.support_reask_below and name_supported(checks) and not accusations(checks)
            ):
                break
            log.info("%s: %d/%d statements supported; re-asking", tag, sum(c.supported for c in checks), len(checks))
            try:
                result = chat.generate_structured(
                    [*messages, {"role": "user", "content": support_feedback(checks)}],
                    response_model,
                    max_reasks=settings.max_reasks,
                    tag=tag,
                )
            except StructuredOutputError as exc:
                records.extend(exc.records)
                break
            records.extend(result.records)
            attempts += result.attempts
            new = _as_draft(result.value, prompt)
            # The rewritten narrative, as model objects (a dumped dict would leave dicts where models go).
            kept_fields = {"quotes", "demographics", "confidence", "keywords"}
            narrative = {name: getattr(new, name) for name in DraftCore.model_fields if name not in kept_fields}
            rewritten = draft.model_copy(update=narrative)
            new_checks = self._check_statements(rewritten, segment_id)
            old_rank = (share, name_supported(checks), -len(accusations(checks)))
            new_rank = (support_share(new_checks) or 0.0, name_supported(new_checks), -len(accusations(new_checks)))
            if new_rank != old_rank and all(n >= o for n, o in zip(new_rank, old_rank, strict=True)):
                draft, checks = rewritten, new_checks
        unsupported = {(c.field, c.text) for c in checks if not c.supported and c.field in DROPPABLE_FIELDS}
        removed = [c for c in checks if (c.field, c.text) in unsupported]
        if unsupported:
            draft = draft.model_copy(
                update={
                    name: [x for x in getattr(draft, name) if (name, x) not in unsupported]
                    for name in DROPPABLE_FIELDS
                }
            )
        return draft, checks, removed, attempts

    # -- distinctness -------------------------------------------------------------------------------

    def _get_embedder(self, personas: Sequence[Persona]) -> Embedder:
        if self.embedder is not None and not isinstance(self.embedder, str):
            return self.embedder
        from persona_llm.segment.embed import choose_embedder_for_languages, get_embedder

        name = self.embedder or "auto"
        if name == "auto":
            shares: dict[str, float] = {}
            for p in personas:
                shares[p.language] = shares.get(p.language, 0.0) + 1.0 / max(len(personas), 1)
            name = choose_embedder_for_languages(shares)
        return get_embedder(name)

    @staticmethod
    def _embed(personas: Sequence[Persona], embedder: Embedder) -> np.ndarray:
        if not personas:
            return np.zeros((0, 1), dtype=np.float32)
        vectors = embedder.encode([p.embedding_text() for p in personas])
        return np.asarray(vectors, dtype=np.float32)

    def _chance_similarity(self, run: RunDir, embedder: Embedder) -> float:
        """Mean cosine between random texts of the run under `embedder`: what "unrelated" looks like in
        this embedding space (anisotropic models put everything close together)."""
        model_id = run.load_manifest().models.get("embedder", "") if run.has(MANIFEST) else ""
        if getattr(embedder, "model_id", None) == model_id and run.has(TEXT_EMBEDDINGS):
            return self._chance_of(run.load_text_embeddings())  # the run's own vectors: nothing to embed
        texts = run.load_texts([TEXT])[TEXT].astype(str)
        rows = self._chance_rows(len(texts))
        return self._chance_of(np.asarray(embedder.encode([texts.iloc[int(i)] for i in rows]), dtype=np.float32), sampled=True)

    def _chance_rows(self, n: int) -> np.ndarray:
        return chance_rows(n, self.seed)

    def _chance_of(self, vectors: np.ndarray, *, sampled: bool = False) -> float:
        """Mean cosine between `CHANCE_SAMPLE` seeded rows of `vectors` (all of them when `sampled`)."""
        return chance_level(vectors, seed=self.seed, sampled=sampled)

    def _distinctness(
        self,
        chat: ChatModel,
        templates: PromptTemplates,
        run: RunDir,
        personas: dict[int, Persona],
        settings: LLMSettings,
    ) -> None:
        """Regenerate the smaller segment's persona of each too-similar pair, showing the other one."""
        existing = {p.segment_id: p for p in self._existing(run) if p.segment_id not in personas}
        embedder = self._get_embedder(list({**existing, **personas}.values()))
        chance = self._chance_similarity(run, embedder)
        threshold = chance + self.distinct_threshold * (1.0 - chance)  # as a plain cosine
        self.chance_similarity_, self.distinct_cosine_ = chance, threshold
        for _round in range(self.max_regenerations):
            everyone = {**existing, **personas}
            order = sorted(everyone)
            vectors = self._embed([everyone[s] for s in order], embedder)
            pairs = similar_pairs(vectors, threshold, names=[everyone[s].name for s in order])
            if not pairs:
                break
            sizes = {i: everyone[s].user_count for i, s in enumerate(order)}
            # Only personas of this write may be regenerated; if the smaller one is an old one, redo
            # the new one instead.
            redo: dict[int, list[tuple[int, float]]] = {}
            for small, large, sim in choose_to_regenerate(pairs, sizes):
                target, other = order[small], order[large]
                if target not in personas:
                    target, other = other, target
                if target in personas:
                    redo.setdefault(target, []).append((other, sim))
            if not redo:
                break
            different_from = {t: [self._as_other(everyone[o]) for o, _ in others] for t, others in redo.items()}
            log.info("distinctness: regenerating segments %s", sorted(redo))
            regenerated = self._generate_many(
                chat, templates, run, [run.load_segments().get(t) for t in redo], settings, different_from
            )
            for sid in redo:
                # A failed regeneration keeps the first persona: similar is better than missing.
                if sid in self.failures_ and sid in personas:
                    why = self.failures_.pop(sid)
                    personas[sid].provenance.warnings.append(f"regeneration for distinctness failed: {why[:200]}")
            new_vectors = self._embed([g.persona for g in regenerated], embedder) if regenerated else None
            for k, g in enumerate(regenerated):
                sid = g.persona.segment_id
                assert new_vectors is not None
                before = max(sim for _, sim in redo[sid])
                after = max(cosine(new_vectors[k], vectors[order.index(o)]) for o, _ in redo[sid])
                renamed = all(name_key(g.persona.name) != name_key(everyone[o].name) for o, _ in redo[sid])
                if not (renamed and (after < before or after <= threshold)):
                    personas[sid].provenance.warnings.append(
                        f"regeneration for distinctness did not help (similarity {before:.3f} -> {after:.3f}"
                        f"{'' if renamed else ', same name'}); kept the first version"
                    )
                    personas[sid].provenance.attempts += g.persona.provenance.attempts
                    continue
                checks = [
                    DistinctnessCheck(
                        other_persona_id=everyone[o].persona_id,
                        similarity=round(sim, 4),
                        threshold=round(threshold, 4),
                        regenerated=True,
                    )
                    for o, sim in redo[sid]
                ]
                g.persona.provenance.distinctness = personas[sid].provenance.distinctness + checks
                g.persona.provenance.attempts += personas[sid].provenance.attempts
                personas[sid] = g.persona
        self._disambiguate_names(run, existing, personas)
        # Final record: each persona's nearest other persona, regenerated or not.
        everyone = {**existing, **personas}
        order = sorted(everyone)
        vectors = self._embed([everyone[s] for s in order], embedder)
        self.max_similarity_ = max_pairwise_similarity(vectors)
        self.embeddings_ = {s: vectors[i] for i, s in enumerate(order)}
        if len(order) >= 2:
            sims = pairwise_cosine(vectors)
            np.fill_diagonal(sims, -np.inf)
            for i, sid in enumerate(order):
                if sid not in personas:
                    continue
                j = int(np.argmax(sims[i]))
                personas[sid].provenance.distinctness.append(
                    DistinctnessCheck(
                        other_persona_id=everyone[order[j]].persona_id,
                        similarity=round(float(sims[i, j]), 4),
                        threshold=round(threshold, 4),
                        regenerated=False,
                    )
                )

    @staticmethod
    def _disambiguate_names(run: RunDir, existing: dict[int, Persona], personas: dict[int, Persona]) -> None:
        """Last resort once regeneration is spent: a persona of this write still named like another one
        gets its segment's first keyword that the other segment lacks, e.g. "Tech Enthusiast (hockey)".
        Two personas with one name are duplicates to a reader even when their contents differ."""
        everyone = {**existing, **personas}
        # Published personas keep their names; among new ones the larger segment keeps its name.
        order = sorted(everyone, key=lambda s: (s in personas, -everyone[s].user_count, s))
        taken: dict[str, int] = {}
        for sid in order:
            persona = everyone[sid]
            key = name_key(persona.name)
            if key not in taken or sid not in personas:
                taken.setdefault(key, sid)
                continue
            holder = taken[key]
            other_terms = {k.term.casefold() for k in _keywords(run, holder)}
            own_terms = [k.term for k in _keywords(run, sid) if k.term.casefold() not in other_terms]
            qualifiers = [*own_terms, f"segment {sid}"]
            base = persona.name.strip()
            for qualifier in qualifiers:
                suffix = f" ({qualifier})"
                candidate = base[: NAME_MAX_CHARS - len(suffix)].rstrip() + suffix
                if len(suffix) < NAME_MAX_CHARS and name_key(candidate) not in taken:
                    break
            persona.provenance.warnings.append(
                f"still named like segment {holder}'s persona after regeneration; renamed "
                f"{persona.name!r} -> {candidate!r}"
            )
            persona.name = candidate
            taken[name_key(candidate)] = sid

    @staticmethod
    def _as_other(persona: Persona) -> dict[str, Any]:
        return {"name": persona.name, "tagline": persona.tagline, "interests": persona.interests[:5]}

    @staticmethod
    def _existing(run: RunDir) -> list[Persona]:
        try:
            return [p for p in run.load_personas() if p.run_id == run.run_id]
        except InputError as exc:
            log.warning("%s; it will be replaced", exc)
            return []

    # -- output -------------------------------------------------------------------------------------

    def _save(self, run: RunDir, personas: list[Persona]) -> list[Persona]:
        merged = {p.segment_id: p for p in self._existing(run)}
        merged.update({p.segment_id: p for p in personas})
        all_personas = [merged[k] for k in sorted(merged)]
        run.save_personas(all_personas)
        run.save_jsonl(LLM_CALLS, [record.to_dict() for record in self.records_])
        self.stats_ = self._stats(personas)
        run.save_json(PERSONA_STATS, self.stats_)
        from persona_llm.personas.report import html_report, markdown_report

        run.save_text(PERSONAS_MARKDOWN, markdown_report(all_personas, run_id=run.run_id))
        if self.write_report:
            run.save_text(REPORT, html_report(run, all_personas))
        if self.write_store and personas:
            self._upsert_store(run, personas)
        return all_personas

    def _stats(self, personas: list[Persona]) -> dict[str, Any]:
        calls = [r for r in self.records_ if not r.cached]
        seconds = sum(r.seconds for r in calls)
        completion = sum(r.completion_tokens for r in calls)
        timed = [r for r in calls if r.server_generation_ms > 0]
        gen_ms = sum(r.server_generation_ms for r in timed)
        prompt_ms = sum(r.server_prompt_ms for r in timed)
        completion_timed = sum(r.completion_tokens for r in timed)
        proposed = sum(p.provenance.quotes_proposed for p in personas)
        dropped = sum(len(p.provenance.quotes_removed) for p in personas)
        return {
            "model": getattr(self, "model_id_", ""),
            "backend_info": getattr(self, "backend_info_", {}),
            "personas": len(personas),
            "failed_segments": sorted(self.failures_),
            "calls": len(self.records_),
            "cached_calls": len(self.records_) - len(calls),
            "invalid_outputs": sum(1 for r in self.records_ if r.outcome == "invalid"),
            "transport_retries": sum(r.transport_retries for r in self.records_),
            "prompt_tokens": sum(r.prompt_tokens for r in calls),
            # Prompt tokens the server did not process again (its prompt cache held them), where it reports.
            "prompt_tokens_reused": sum(max(r.prompt_tokens - r.server_prompt_tokens, 0) for r in timed),
            "completion_tokens": completion,
            "llm_seconds": round(seconds, 2),
            "wall_seconds": round(getattr(self, "seconds_", 0.0), 2),
            "completion_tokens_per_second": round(completion / seconds, 2) if seconds else None,
            # Generation alone and prompt processing alone, where the server reports its timings.
            "generation_tokens_per_second": round(completion_timed / (gen_ms / 1000), 2) if gen_ms else None,
            "prompt_tokens_per_second": (
                round(sum(r.server_prompt_tokens for r in timed) / (prompt_ms / 1000), 2) if prompt_ms else None
            ),
            # Speculative decoding, where the server drafts: tokens proposed and how many the model kept.
            "draft_tokens": sum(r.server_draft_tokens for r in timed),
            "draft_tokens_accepted": sum(r.server_draft_accepted for r in timed),
            "quotes_proposed": proposed,
            "quotes_dropped_by_gate": dropped,
            "quotes_kept": sum(len(p.quotes) for p in personas),
            "personas_short_of_quotes": sum(1 for p in personas if len(p.quotes) < MIN_QUOTES),
            "statements_checked": sum(len(p.provenance.statements) for p in personas),
            "statements_supported": sum(sum(c.supported for c in p.provenance.statements) for p in personas),
            "statements_removed": sum(len(p.provenance.statements_removed) for p in personas),
            "confidence": {level: sum(p.confidence == level for p in personas) for level in ("high", "medium", "low")},
            "estimates_removed": sum(len(p.provenance.estimates_removed) for p in personas),
            "regenerated_for_distinctness": sum(
                1 for p in personas if any(c.regenerated for c in p.provenance.distinctness)
            ),
            "max_pairwise_similarity": getattr(self, "max_similarity_", None),
            "distinct_threshold": self.distinct_threshold,
            "chance_similarity": round(getattr(self, "chance_similarity_", 0.0), 4),
            "distinct_cosine": round(getattr(self, "distinct_cosine_", self.distinct_threshold), 4),
        }

    def _upsert_store(self, run: RunDir, personas: list[Persona]) -> None:
        from persona_llm.segment.store import store_for_run

        store = store_for_run(run)
        vectors = np.stack([self.embeddings_[p.segment_id] for p in personas])
        records = [{**p.model_dump(mode="json"), "id": p.persona_id} for p in personas]
        store.upsert_personas(run.run_id, records, vectors)
        store.close()


def write_personas(
    run_dir: str | Path | RunDir,
    settings: LLMSettings | None = None,
    language: str = "auto",
    segment_ids: Sequence[int] | None = None,
    **params: Any,
) -> list[Persona]:
    """Write personas for a run directory with the configured backend (see PersonaWriter)."""
    return PersonaWriter(settings, language=language, **params).write(run_dir, segment_ids)
