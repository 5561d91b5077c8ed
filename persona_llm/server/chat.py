"""Segment chat behind the server: one `SegmentChat` per run, conversations bound to their run and key.

A conversation id is made by the server (random, unguessable) on a conversation's first question and
returned in the stream; a later question with that id continues it, on the run it started on, and only
for the key that started it: another key, or an id the server never issued, is "unknown conversation".
So a newly published run never changes the ground under a conversation half-way, and nobody can read
another key's conversation by guessing its id.

Conversation memory lives in the run's `SegmentChat` (LangGraph's in-memory checkpointer); the server
keeps the chats of the few most recently used runs, and a conversation whose run's chat was dropped
has expired (the client starts a new one). Embedders are shared between runs made with the same model
(`PublishedRuns.embedder`), with the briefs too.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass

from persona_llm.chat import ChatEvent, SegmentChat, SegmentTools
from persona_llm.server.llm import ServerModel
from persona_llm.server.published import NotFound, PublishedRuns

CONVERSATION_PREFIX = "c-"


class UnknownConversation(NotFound):
    """A conversation id this server did not issue to this key, or one that expired (a 404)."""


@dataclass
class Conversation:
    conversation_id: str
    run: str
    owner: str
    started: float
    turns: int = 0


class ChatService:
    """Makes and keeps the per-run chats and the conversation registry; `stream` answers one turn."""

    def __init__(
        self,
        runs: PublishedRuns,
        model: ServerModel,
        *,
        cache_size: int = 3,
        max_conversations: int = 10_000,
        strategy: str = "auto",
    ) -> None:
        self.runs = runs
        self.model = model
        self.cache_size = cache_size
        self.max_conversations = max_conversations
        self.strategy = strategy
        self._chats: OrderedDict[str, SegmentChat] = OrderedDict()
        self._conversations: OrderedDict[str, Conversation] = OrderedDict()
        self._lock = threading.Lock()

    # -- conversations --------------------------------------------------------------------------------

    def conversation(self, owner: str, conversation_id: str | None) -> Conversation:
        """The conversation to continue, or a new one on the run published now."""
        with self._lock:
            if conversation_id is None:
                run = self.runs.view().name
                found = Conversation(CONVERSATION_PREFIX + secrets.token_urlsafe(18), run, owner, time.time())
                self._conversations[found.conversation_id] = found
                while len(self._conversations) > self.max_conversations:
                    self._conversations.popitem(last=False)
                return found
            known = self._conversations.get(conversation_id)
            if known is None or not secrets.compare_digest(known.owner, owner):
                raise UnknownConversation(
                    f"unknown or expired conversation {conversation_id!r}; leave conversation_id out to start one"
                )
            self._conversations.move_to_end(conversation_id)
            return known

    # -- chats per run ----------------------------------------------------------------------------------

    def chat_for(self, run_name: str) -> SegmentChat:
        with self._lock:
            found = self._chats.get(run_name)
            if found is not None:
                self._chats.move_to_end(run_name)
                return found
        view = self.runs.view(run_name)
        tools = SegmentTools(view.run, embedder=self.runs.embedder(view.run))
        chat = SegmentChat(view.run, chat=self.model.get(), tools=tools, strategy=self.strategy, memory="memory")  # type: ignore[arg-type]
        chat.open()
        dropped: list[SegmentChat] = []
        with self._lock:
            chat = self._chats.setdefault(run_name, chat)
            self._chats.move_to_end(run_name)
            while len(self._chats) > self.cache_size:
                name, old = self._chats.popitem(last=False)
                dropped.append(old)
                # Its memory goes with it: those conversations have expired.
                for cid in [c for c, conv in self._conversations.items() if conv.run == name]:
                    del self._conversations[cid]
        for old in dropped:
            old.close()
        return chat

    def stream(self, conversation: Conversation, question: str) -> Iterator[ChatEvent]:
        """The turn's events (SegmentChat.stream), on the conversation's own run."""
        chat = self.chat_for(conversation.run)
        conversation.turns += 1
        yield from chat.stream(question, conversation.conversation_id)

    def close(self) -> None:
        with self._lock:
            chats, self._chats = list(self._chats.values()), OrderedDict()
            self._conversations.clear()
        for chat in chats:
            chat.close()
