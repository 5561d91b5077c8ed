"""Conversation memory: a LangGraph checkpointer keeps each conversation's messages by id, in memory or
in SQLite, and what goes back into a prompt is bounded by tokens.

The stored history is the user's questions and the checked answers as shown (never the tool results or
a removed draft), so an unsupported sentence cannot come back through the history.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from persona_llm.resource_paths import default_cache_dir


def default_sqlite_path() -> Path:
    """Where `memory="sqlite"` keeps conversations: `<cache root>/chat/conversations.sqlite`."""
    return default_cache_dir() / "chat" / "conversations.sqlite"


def open_checkpointer(memory: str | Path) -> tuple[Any, sqlite3.Connection | None]:
    """("memory" | "sqlite" | a file path) -> (a LangGraph checkpointer, the SQLite connection to close)."""
    if str(memory) == "memory":
        from langgraph.checkpoint.memory import InMemorySaver

        return InMemorySaver(), None
    from langgraph.checkpoint.sqlite import SqliteSaver

    path = default_sqlite_path() if str(memory) == "sqlite" else Path(memory)
    path.parent.mkdir(parents=True, exist_ok=True)
    # LangGraph runs graph nodes on worker threads; the saver serialises access itself.
    conn = sqlite3.connect(str(path), check_same_thread=False)
    saver = SqliteSaver(conn)
    saver.setup()
    return saver, conn


def bounded_history(messages: Sequence[Any], max_tokens: int) -> list[Any]:
    """The most recent messages that fit in `max_tokens` (approximate count), starting with a question."""
    if max_tokens <= 0 or not messages:
        return []
    from langchain_core.messages import trim_messages
    from langchain_core.messages.utils import count_tokens_approximately

    return list(
        trim_messages(
            list(messages),
            max_tokens=max_tokens,
            token_counter=count_tokens_approximately,
            strategy="last",
            start_on="human",
            allow_partial=False,
        )
    )
