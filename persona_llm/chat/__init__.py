"""Segment chat: an agent that answers questions about a run's segments and personas from its store,
held to the personas' rule (every cited text exists and belongs where it says, every quote verbatim,
every size and share the run's own).

    from persona_llm.chat import SegmentChat, SegmentTools
    with SegmentChat("runs/ng") as chat:            # the workspace's published run, embedded LLM
        answer = chat.ask("Which segment is the largest?")
        answer.answer, answer.citations, answer.checks
    SegmentTools(RunDir.open("runs/ng/runs/<id>")).search_texts("delivery", segment_id=2)

    tools.py      SegmentTools: the lookups, as Python methods and LangChain tools
    agent.py      SegmentChat: router and tool-calling strategies, checks, re-ask, memory, streaming
    checks.py     what an answer must pass, and what is removed when it does not
    prompting.py  templates (prompts/chat/vN), tool results as prompt lines, per-turn JSON schemas
    records.py    tool results, the model's outputs, ChatAnswer and the stream's events
    memory.py     LangGraph checkpointers (memory, SQLite), token-bounded history
    streaming.py  the answer's characters decoded from the JSON as it is written
"""

from persona_llm.chat.agent import SegmentChat
from persona_llm.chat.records import (
    AnswerChecks,
    ChatAnswer,
    ChatEvent,
    ChatQuote,
    Citation,
    FinalEvent,
    StatusEvent,
    TokenEvent,
)
from persona_llm.chat.tools import SegmentTools

__all__ = [
    "AnswerChecks",
    "ChatAnswer",
    "ChatEvent",
    "ChatQuote",
    "Citation",
    "FinalEvent",
    "SegmentChat",
    "SegmentTools",
    "StatusEvent",
    "TokenEvent",
]
