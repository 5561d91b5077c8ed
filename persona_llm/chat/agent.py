"""`SegmentChat`: answers questions about one run's segments and personas, checked before they are shown.

Two strategies behind one interface (`strategy="auto"` picks by the backend's `tool_calls` flag):

* "router", for models that do not emit reliable native tool calls (the default embedded
  Qwen2.5-Coder-1.5B writes its calls as fenced JSON, which llama.cpp does not parse): a
  schema-constrained router step reads only the question and writes `{intent, segment_ids, query}`;
  our code runs the tools; a schema-constrained answer step writes `{answer, citations, quotes}` from
  their results. Whether a question is out of scope is decided from the question alone (the rule of
  `persona_llm.chat.scope` first: a clear cue with no reference to the run refuses, a reference with
  no cue overrules the router's refusal; the router otherwise), never from a customer text, so a
  planted instruction cannot make the agent refuse.
* "tools", for capable backends: LangChain's tool-calling agent (`langchain.agents.create_agent`) with
  the same `SegmentTools` and a structured final answer (`DraftAnswer`). The scope rule's "out" refuses
  before the agent runs; otherwise the agent's own `out_of_scope` decides.

Either way the draft is checked (`persona_llm.chat.checks`): citations among the texts the tools returned
in this turn, quotes verbatim (the shared matcher), sizes and shares equal to the run's. A failed check is
re-asked once, with the problems, through the answer step; what still fails is removed and the answer
says so.

Conversations: a LangGraph graph with one node per turn, compiled with a checkpointer (in memory, or
SQLite) keyed by the conversation id; the history that goes back into the prompts is bounded by tokens.
Streaming: the answer's characters are decoded from the JSON as the model writes it
(`persona_llm.chat.streaming`) and emitted as `TokenEvent`s.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, TypedDict

from pydantic import ValidationError

from persona_llm.agents.definitions import AgentSpec, load_agent
from persona_llm.chat.checks import CHECKS, AnswerChecker, Evidence, Problem, apply_removals, run_facts
from persona_llm.chat.memory import bounded_history, open_checkpointer
from persona_llm.chat.prompting import ChatPrompts, answer_schema, render_evidence, response_format, route_schema
from persona_llm.chat.records import (
    QUERY_MAX_CHARS,
    AnswerChecks,
    ChatAnswer,
    ChatEvent,
    DraftAnswer,
    FinalEvent,
    Removal,
    Route,
    ScopeDecision,
    StatusEvent,
    TokenEvent,
    ToolResult,
)
from persona_llm.chat.scope import question_scope
from persona_llm.chat.streaming import JsonStringStreamer
from persona_llm.chat.tools import TOOL_NAMES, SegmentTools
from persona_llm.errors import BackendError, InputError
from persona_llm.llm.base import LLMSettings
from persona_llm.llm.chat_model import ChatModel, extract_json
from persona_llm.personas.gates import TextIndex
from persona_llm.runs.rundir import RunDir

log = logging.getLogger(__name__)

StrategyName = Literal["auto", "router", "tools"]
Emit = Callable[[dict[str, Any]], None]


class AnswerFormatError(BackendError):
    """The model's reply was not a valid answer object, after one re-ask."""


def _add_messages(left: list[Any], right: list[Any]) -> list[Any]:
    from langgraph.graph.message import add_messages

    return add_messages(left, right)  # type: ignore[return-value]


class ConversationState(TypedDict, total=False):
    """What the checkpointer keeps per conversation: questions and the checked answers as shown, and
    the last answer record."""

    messages: Annotated[list[Any], _add_messages]
    answer: dict[str, Any]


def langchain_model(chat: ChatModel, *, max_tokens: int) -> Any:
    """A LangChain `ChatOpenAI` on the same OpenAI-compatible server and settings as `chat`. Every reply
    is bounded by `max_tokens`: without a bound a small model that misses the stop can write until the
    context is full (measured: the tools agent on the 1.5B model ran 11 minutes on one question)."""
    from langchain_openai import ChatOpenAI

    return ChatOpenAI(
        base_url=chat.base_url,
        model=chat.model,
        api_key=chat.api_key,  # type: ignore[arg-type]
        temperature=chat.temperature,
        seed=chat.seed,
        timeout=chat.timeout_s,
        max_retries=chat.max_retries,
        max_completion_tokens=max_tokens,  # the field's alias; llama.cpp and vLLM read it too
    )


class SegmentChat:
    """Questions and answers about one run (a `RunDir`, a run folder, or a workspace: its published run).

    settings: the LLM backend to open (default: `LLMSettings.from_env()`); chat: an open `ChatModel` to
        use instead (its server is not ours to stop); llm: a LangChain chat model to use instead of
        either (tests use LangChain's fake models).
    strategy: "auto" (tools when the backend declares reliable tool calls, else router), "router", "tools".
    memory: "memory", "sqlite" (`<cache root>/chat/conversations.sqlite`) or a SQLite file path.
    tools: `SegmentTools` to use (default: over `run`).
    max_history_tokens: earlier turns put back into a prompt, at most this many tokens (approximate).
    max_texts: texts a search hands the answer step; text_chars: each cut to this many characters (the
        checks read whole texts). Every prompt token costs time before the first answer token on a CPU:
        4 texts of 300 characters are ~350 tokens.

    Use as a context manager (`with SegmentChat(run) as chat:`) to stop a backend it started; otherwise
    the first question opens it and `close()` stops it.
    """

    def __init__(
        self,
        run: RunDir | str | Path,
        *,
        settings: LLMSettings | None = None,
        chat: ChatModel | None = None,
        llm: Any = None,
        strategy: StrategyName = "auto",
        memory: str | Path = "memory",
        tools: SegmentTools | None = None,
        agent: str = "segment_chat",
        max_history_tokens: int = 400,
        max_texts: int = 4,
        text_chars: int = 300,
        answer_max_tokens: int = 600,
        recursion_limit: int = 12,
    ) -> None:
        self.run = run
        self.settings = settings
        self.chat = chat
        self.llm = llm
        self.strategy = strategy
        self.memory = memory
        self.tools = tools
        self.agent = agent
        self.max_history_tokens = max_history_tokens
        self.max_texts = max_texts
        self.text_chars = text_chars
        self.answer_max_tokens = answer_max_tokens
        self.recursion_limit = recursion_limit
        self._stack: contextlib.ExitStack | None = None
        self.graph_: Any = None

    # -- opening and closing ---------------------------------------------------------------------------

    def open(self) -> SegmentChat:
        """Read the run, load the agent definition, open the backend and the conversation store."""
        if self.graph_ is not None:
            return self
        if self.strategy not in ("auto", "router", "tools"):
            raise InputError(f"unknown chat strategy {self.strategy!r}; use auto, router or tools")
        stack = contextlib.ExitStack()
        try:
            self.tools_ = self.tools if self.tools is not None else SegmentTools(self.run, max_text_chars=self.text_chars)
            self.segment_ids_ = [s.segment_id for s in self.tools_.segment_set.segments]
            self.spec_: AgentSpec = load_agent(self.agent, available_tools=set(TOOL_NAMES))
            self.prompts_ = ChatPrompts.load(self.spec_)
            self.chat_model_: ChatModel | None = self.chat
            if self.chat is None and self.llm is None:
                from persona_llm.llm.client import open_chat_model

                self.chat_model_ = stack.enter_context(open_chat_model(self.settings or LLMSettings.from_env()))
            self.strategy_ = self._resolve_strategy()
            self.structured_ = (
                self.chat_model_.capabilities.structured_mode(self.chat_model_.structured)
                if self.chat_model_ is not None
                else "json_schema"
            )
            checkpointer, conn = open_checkpointer(self.memory)
            if conn is not None:
                stack.callback(conn.close)
            self.graph_ = self._build_graph(checkpointer)
        except BaseException:
            stack.close()
            raise
        self._stack = stack
        return self

    def close(self) -> None:
        if self._stack is not None:
            self._stack.close()
        self._stack, self.graph_ = None, None

    def __enter__(self) -> SegmentChat:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _resolve_strategy(self) -> Literal["router", "tools"]:
        if self.strategy in ("router", "tools"):
            return self.strategy  # type: ignore[return-value]
        if self.chat_model_ is not None and self.chat_model_.capabilities.tool_calls:
            return "tools"
        return "router"

    @property
    def checker(self) -> AnswerChecker:
        if getattr(self, "checker_", None) is None:
            self.checker_ = AnswerChecker(
                TextIndex.from_frame(self.tools_.texts),
                run_facts(self.tools_.segment_set),
                self.segment_ids_,
                run_names=[*self._attribute_columns(), *(p.name for p in self.tools_.personas.values())],
            )
        return self.checker_

    def _lc_model(self) -> Any:
        # Built per call: the embedded server may have restarted on another port between turns.
        if self.llm is not None:
            return self.llm
        return langchain_model(self.chat_model_, max_tokens=self.answer_max_tokens)  # type: ignore[arg-type]

    # -- asking ----------------------------------------------------------------------------------------

    def ask(self, question: str, conversation_id: str | None = None) -> ChatAnswer:
        """One checked answer (the last event of `stream`)."""
        answer = None
        for event in self.stream(question, conversation_id):
            if isinstance(event, FinalEvent):
                answer = event.answer
        assert answer is not None  # stream always ends with a FinalEvent or raises
        return answer

    def stream(self, question: str, conversation_id: str | None = None) -> Iterator[ChatEvent]:
        """TokenEvents as the answer is written, StatusEvents (tools run, re-ask), then a FinalEvent with
        the checked answer. The tokens are the draft's: show the FinalEvent's answer in the end."""
        from langchain_core.messages import HumanMessage

        question = " ".join(str(question).split())
        if not question:
            raise InputError("the question is empty")
        self.open()
        config = {"configurable": {"thread_id": conversation_id or uuid.uuid4().hex}}
        final: dict[str, Any] | None = None
        for mode, chunk in self.graph_.stream(
            {"messages": [HumanMessage(question)]}, config, stream_mode=["custom", "values"]
        ):
            if mode == "custom":
                yield TokenEvent(text=chunk["text"]) if chunk["type"] == "token" else StatusEvent(text=chunk["text"])
            else:
                final = chunk
        if final is None or "answer" not in final:
            raise BackendError("the chat graph ended without an answer")
        yield FinalEvent(answer=ChatAnswer.model_validate(final["answer"]))

    def route(self, question: str) -> Route:
        """The router step's decision for one question, on its own (no tools, no answer, no memory):
        for measuring the router beside the scope rule (bench/bench_chat_scope.py)."""
        self.open()
        return self._route(" ".join(str(question).split()), [])

    def history(self, conversation_id: str) -> list[tuple[str, str]]:
        """(role, text) of a conversation's turns so far: "user" questions and "assistant" answers."""
        self.open()
        state = self.graph_.get_state({"configurable": {"thread_id": conversation_id}})
        messages = (state.values or {}).get("messages", []) if state else []
        return [("user" if m.type == "human" else "assistant", str(m.content)) for m in messages]

    # -- the graph --------------------------------------------------------------------------------------

    def _build_graph(self, checkpointer: Any) -> Any:
        from langgraph.graph import END, START, StateGraph

        graph = StateGraph(ConversationState)
        graph.add_node("respond", self._respond)
        graph.add_edge(START, "respond")
        graph.add_edge("respond", END)
        return graph.compile(checkpointer=checkpointer)

    def _respond(self, state: ConversationState) -> dict[str, Any]:
        from langchain_core.messages import AIMessage
        from langgraph.config import get_config, get_stream_writer

        writer, config = get_stream_writer(), get_config()
        *earlier, asked = state["messages"]
        history = bounded_history(earlier, self.max_history_tokens)
        conversation_id = str(config["configurable"]["thread_id"])
        answer = self._turn(str(asked.content), history, conversation_id, writer)
        return {"messages": [AIMessage(answer.answer)], "answer": answer.model_dump(mode="json")}

    # -- one turn ---------------------------------------------------------------------------------------

    def _turn(self, question: str, history: list[Any], conversation_id: str, emit: Emit) -> ChatAnswer:
        started = time.perf_counter()
        first_token: float | None = None

        def on_token(text: str) -> None:
            nonlocal first_token
            if first_token is None:
                first_token = time.perf_counter() - started
            emit({"type": "token", "text": text})

        if self.chat_model_ is not None:
            self.chat_model_.prepare_for_task()  # the embedded server retunes its threads to the free cores

        route: Route | None = None
        min_quotes = 0
        scope = question_scope(question, self._attribute_columns())
        if scope.verdict == "out":
            return self._refusal(question, conversation_id, None, started, scope=scope)
        if self.strategy_ == "router":
            route = self._route(question, history)
            if route.intent == "out_of_scope" and scope.verdict == "in":
                # The question names the run's data and carries no cue of another task: the router's refusal
                # is overruled and every segment's texts are searched (the answer checks still hold).
                log.info("router said out of scope; overruled by the question's words %s", scope.about_run)
                route = Route(intent="search_texts", segment_ids=route.segment_ids, query=question[:QUERY_MAX_CHARS])
            if route.intent == "out_of_scope":
                return self._refusal(question, conversation_id, route, started, scope=scope)
            evidence = self._gather(route, question)
            emit({"type": "status", "text": f"looked up: {', '.join(evidence.tools_called) or 'nothing'}"})
            # Asked what customers say: the schema makes the model put at least one quote where the checks
            # can verify it (the 1.5B model otherwise pasted a whole text into the answer).
            min_quotes = int(route.intent == "search_texts" and bool(evidence.texts()))
            try:
                draft = self._answer(question, history, evidence, on_token, min_quotes=min_quotes)
            except AnswerFormatError as exc:
                return self._no_answer(question, conversation_id, route, evidence, started, first_token, str(exc))
        else:
            draft, evidence = self._agent_draft(question, history, on_token)
            if draft.out_of_scope:
                return self._refusal(question, conversation_id, None, started, tools_called=evidence.tools_called, scope=scope)

        problems = self.checker.problems(draft, evidence, question=question)
        passed, reasked = not problems, False
        found = [p.message() for p in problems]
        removed: list[Removal] = []
        if problems:
            reasked = True
            emit({"type": "status", "text": f"re-asking: {len(problems)} problem(s): {found[0]}"})
            try:
                second = self._answer(
                    question, history, evidence, on_token, previous=draft, problems=problems, min_quotes=min_quotes
                )
                problems = self.checker.problems(second, evidence, question=question)
                draft = second
                found += [p.message() for p in problems]
            except AnswerFormatError as exc:
                found.append(f"re-ask: {exc}")
            if problems:
                draft, removed = apply_removals(draft, problems)
                emit({"type": "status", "text": f"removed {len(removed)} unsupported part(s)"})

        quotes = [q for q in (self.checker.kept_quote(d.text_id, d.segment_id, d.text) for d in draft.quotes) if q]
        citations = self.checker.citations([*draft.citations, *(q.text_id for q in quotes)])
        return ChatAnswer(
            conversation_id=conversation_id,
            question=question,
            answer=draft.answer.strip(),
            citations=citations,
            quotes=quotes,
            checks=AnswerChecks(checked=list(CHECKS), passed=passed, reasked=reasked, problems=found, removed=removed),
            refused=False,
            strategy=self.strategy_,
            route=route,
            scope=scope,
            tools_called=evidence.tools_called,
            evidence_ids=list(evidence.texts()),
            run_id=self.tools_.segment_set.run_id,
            seconds=round(time.perf_counter() - started, 3),
            first_token_seconds=None if first_token is None else round(first_token, 3),
        )

    def _refusal(
        self,
        question: str,
        conversation_id: str,
        route: Route | None,
        started: float,
        tools_called: Sequence[str] = (),
        scope: ScopeDecision | None = None,
    ) -> ChatAnswer:
        return ChatAnswer(
            conversation_id=conversation_id,
            question=question,
            answer=self.prompts_.refusal(question),
            checks=AnswerChecks(checked=["scope"], passed=True),
            refused=True,
            strategy=self.strategy_,
            route=route,
            scope=scope,
            tools_called=list(tools_called),
            run_id=self.tools_.segment_set.run_id,
            seconds=round(time.perf_counter() - started, 3),
        )

    def _no_answer(
        self,
        question: str,
        conversation_id: str,
        route: Route | None,
        evidence: Evidence,
        started: float,
        first_token: float | None,
        why: str,
    ) -> ChatAnswer:
        return ChatAnswer(
            conversation_id=conversation_id,
            question=question,
            answer="I could not write an answer that the run's data supports (the model's reply was not usable).",
            checks=AnswerChecks(checked=list(CHECKS), passed=False, problems=[why]),
            strategy=self.strategy_,
            route=route,
            tools_called=evidence.tools_called,
            evidence_ids=list(evidence.texts()),
            run_id=self.tools_.segment_set.run_id,
            seconds=round(time.perf_counter() - started, 3),
            first_token_seconds=first_token,
        )

    # -- router strategy ----------------------------------------------------------------------------------

    def _system(self) -> str:
        """The system prompt the router and answer steps share (so its KV cache is reused)."""
        if getattr(self, "system_", None) is None:
            self.system_ = self.prompts_.system(self.segment_ids_, self._attribute_columns())
        return self.system_

    def _attribute_columns(self) -> list[str]:
        columns: dict[str, None] = {}
        for seg in self.tools_.segment_set.segments:
            columns.update(dict.fromkeys(seg.attributes))
        return list(columns)

    def _route(self, question: str, history: list[Any]) -> Route:
        from langchain_core.messages import HumanMessage, SystemMessage

        user = self.prompts_.render("route_user.j2", question=question)
        messages = [SystemMessage(self._system()), *history, HumanMessage(user)]
        fmt = response_format("Route", route_schema(self.segment_ids_), self.structured_)
        raw = self._complete(messages, fmt, max_tokens=120)
        try:
            route = Route.model_validate(extract_json(raw))
        except (ValueError, ValidationError) as exc:
            # A route we cannot read: search every segment for the question, which answers most questions.
            log.warning("router reply not usable (%s): %r", exc, raw[:200])
            route = Route(intent="search_texts", segment_ids=[], query=question[:200])
        known = set(self.segment_ids_)
        return route.model_copy(update={"segment_ids": [i for i in route.segment_ids if i in known]})

    def _gather(self, route: Route, question: str) -> Evidence:
        """Run the tools the route asks for; a route that lacks what its intent needs gets the list of
        segments, which answers "which/how many/largest" and lets the answer say what it can."""
        tools, evidence = self.tools_, Evidence()
        ids, query = route.segment_ids, (route.query.strip() or question)

        def call(name: str, method: Callable[..., ToolResult], *args: Any, **kwargs: Any) -> None:
            try:
                evidence.add(name, method(*args, **kwargs))
            except ValueError as exc:
                evidence.errors.append(f"{name}: {exc}")

        intent = route.intent
        if intent == "describe_segment" and ids:
            for sid in ids:
                call("describe_segment", tools.describe_segment, sid, n_texts=3)
            if route.query.strip():
                call("search_texts", tools.search_texts, route.query, ids[0], k=3)
        elif intent == "get_persona" and ids:
            for sid in ids:
                call("get_persona", tools.get_persona, sid)
        elif intent == "search_texts":
            scopes: list[int | None] = list(ids) or [None]
            for scope in scopes:
                call("search_texts", tools.search_texts, query, scope, k=max(2, self.max_texts // max(len(ids), 1)))
        elif intent == "compare_segments" and len(ids) == 2:
            call("compare_segments", tools.compare_segments, ids[0], ids[1])
        elif intent == "attribute_breakdown" and ids:
            by_name = {c.lower(): c for c in self._attribute_columns()}
            column = by_name.get(route.query.strip().lower())
            for sid in ids:
                call("attribute_breakdown", tools.attribute_breakdown, sid, column)
        elif intent == "count_mentions" and route.query.strip():
            call("count_mentions", tools.count_mentions, route.query)
        else:
            call("list_segments", tools.list_segments)
        return evidence

    def _answer(
        self,
        question: str,
        history: list[Any],
        evidence: Evidence,
        on_token: Callable[[str], None],
        *,
        previous: DraftAnswer | None = None,
        problems: Sequence[Problem] = (),
        min_quotes: int = 0,
    ) -> DraftAnswer:
        """The schema-constrained answer step over `evidence` (the router's draft, and every re-ask)."""
        from langchain_core.messages import AIMessage, HumanMessage, SystemMessage

        user = self.prompts_.render(
            "answer_user.j2",
            evidence=render_evidence(evidence),
            question=question,
            problems=[p.message() for p in problems],
            previous=previous.model_dump_json() if previous is not None else "",
        )
        messages: list[Any] = [SystemMessage(self._system()), *history, HumanMessage(user)]
        schema = answer_schema(list(evidence.texts()), self.segment_ids_, with_out_of_scope=False, min_quotes=min_quotes)
        fmt = response_format("DraftAnswer", schema, self.structured_)
        last_problem = ""
        for attempt in (1, 2):
            raw, finish = self._stream_answer(messages, fmt, on_token)
            try:
                if finish == "length":
                    raise ValueError("the reply was cut off at the token limit")
                return DraftAnswer.model_validate(extract_json(raw))
            except (ValueError, ValidationError) as exc:
                last_problem = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
                log.warning("answer attempt %d not usable: %s", attempt, last_problem)
                messages = [
                    *messages,
                    AIMessage(raw[:2000]),
                    HumanMessage(f"That reply was not a valid answer object ({last_problem}). Reply again with the complete, shorter JSON object only."),
                ]
        raise AnswerFormatError(f"the model's answer was not valid JSON twice: {last_problem}")

    def _complete(self, messages: list[Any], fmt: dict[str, Any] | None, *, max_tokens: int) -> str:
        import openai

        kwargs: dict[str, Any] = {"max_tokens": max_tokens}
        if fmt is not None:
            kwargs["response_format"] = fmt
        try:
            reply = self._lc_model().bind(**kwargs).invoke(messages)
        except openai.LengthFinishReasonError:
            return ""  # cut off: not a usable route, the caller falls back
        except openai.OpenAIError as exc:
            raise _backend_error(exc) from exc
        return _text(reply.content)

    def _stream_answer(
        self, messages: list[Any], fmt: dict[str, Any] | None, on_token: Callable[[str], None]
    ) -> tuple[str, str]:
        """Stream the reply, emitting the "answer" field's characters; returns (raw reply, finish reason)."""
        kwargs: dict[str, Any] = {"max_tokens": self.answer_max_tokens}
        if fmt is not None:
            kwargs["response_format"] = fmt
        import openai

        streamer = JsonStringStreamer("answer")
        raw, finish = "", ""
        try:
            for chunk in self._lc_model().bind(**kwargs).stream(messages):
                piece = _text(chunk.content)
                raw += piece
                new = streamer.feed(piece)
                if new:
                    on_token(new)
                finish = str((getattr(chunk, "response_metadata", None) or {}).get("finish_reason") or finish)
        except openai.LengthFinishReasonError:
            # With a response_format the openai client raises at the token limit instead of returning.
            return raw, "length"
        except openai.OpenAIError as exc:
            raise _backend_error(exc) from exc
        return raw, finish

    # -- tools strategy -----------------------------------------------------------------------------------

    def _agent_draft(self, question: str, history: list[Any], on_token: Callable[[str], None]) -> tuple[DraftAnswer, Evidence]:
        """LangChain's tool-calling agent with the same tools; its structured final answer is the draft."""
        import openai
        from langchain.agents import create_agent
        from langchain.agents.structured_output import ToolStrategy
        from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage, ToolMessage
        from langgraph.errors import GraphRecursionError

        strategy = ToolStrategy(DraftAnswer)
        answer_tool = strategy.schema_specs[0].name
        agent = create_agent(
            self._lc_model(),
            self.tools_.as_langchain_tools(),
            system_prompt=self.prompts_.render("agent.j2"),
            response_format=strategy,
        )
        streamer = JsonStringStreamer("answer")
        call_names: dict[Any, str] = {}
        final: dict[str, Any] = {}
        try:
            for mode, chunk in agent.stream(
                {"messages": [*history, HumanMessage(question)]},
                {"recursion_limit": self.recursion_limit},
                stream_mode=["messages", "values"],
            ):
                if mode == "values":
                    final = chunk if isinstance(chunk, dict) else {}
                    continue
                message = chunk[0] if isinstance(chunk, tuple) else None
                if not isinstance(message, AIMessageChunk):
                    continue
                for call in message.tool_call_chunks or []:
                    if call.get("name"):
                        call_names[call.get("index")] = str(call["name"])
                    if call_names.get(call.get("index")) == answer_tool and call.get("args"):
                        new = streamer.feed(str(call["args"]))
                        if new:
                            on_token(new)
        except GraphRecursionError:
            log.warning("tool agent stopped after %d steps without a final answer", self.recursion_limit)
        except openai.LengthFinishReasonError:
            log.warning("tool agent reply cut off at the token limit")
        except openai.OpenAIError as exc:
            raise _backend_error(exc) from exc
        evidence = Evidence()
        for message in final.get("messages", []):
            if isinstance(message, ToolMessage) and message.name != answer_tool:
                if isinstance(message.artifact, ToolResult):
                    evidence.add(str(message.name), message.artifact)
                elif message.status == "error":
                    evidence.errors.append(f"{message.name}: {_text(message.content)[:300]}")
        draft = final.get("structured_response")
        if isinstance(draft, DraftAnswer):
            return draft, evidence
        # No structured answer (the model answered in prose, or wrote its tool call as text).
        last = next((m for m in reversed(final.get("messages", [])) if isinstance(m, AIMessage)), None)
        content = _text(last.content) if last is not None else ""
        try:
            return DraftAnswer.model_validate(extract_json(content)), evidence
        except (ValueError, ValidationError):
            on_token(content[:1200])
            return DraftAnswer(answer=content[:1200] or "The model gave no answer."), evidence


def _backend_error(exc: Exception) -> BackendError:
    """An OpenAI client error as the one-line error the CLI and server show."""
    return BackendError(f"the chat model failed: {type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}")


def _text(content: Any) -> str:
    """A message's text (LangChain content may be a list of parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p if isinstance(p, str) else str(p.get("text", "")) for p in content if isinstance(p, (str, dict)))
    return json.dumps(content) if content is not None else ""
