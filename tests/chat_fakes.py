"""LangChain fake chat models for the segment chat tests.

`ScriptedChat` answers each call from a script (strings or AIMessages, in order) or from a function of the
messages; it streams its content a few characters at a time (so the answer streamer is exercised), keeps
every call's messages and keyword arguments (response_format, max_tokens), and accepts `bind_tools` (so
`create_agent` can use it; tool calls are scripted AIMessages).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from pydantic import Field

Reply = str | AIMessage | dict[str, Any]


class ScriptedChat(BaseChatModel):
    script: list[Reply] = Field(default_factory=list)
    respond: Callable[[list[BaseMessage]], Reply] | None = None
    calls: list[dict[str, Any]] = Field(default_factory=list)

    @property
    def _llm_type(self) -> str:
        return "scripted-chat"

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> ScriptedChat:  # type: ignore[override]
        return self

    def _next(self, messages: list[BaseMessage], kwargs: dict[str, Any]) -> AIMessage:
        self.calls.append({"messages": list(messages), "kwargs": dict(kwargs)})
        if self.script:
            reply = self.script.pop(0)
        elif self.respond is not None:
            reply = self.respond(messages)
        else:
            raise AssertionError(f"unexpected model call #{len(self.calls)}: {messages[-1].content!r:.200}")
        if isinstance(reply, dict):
            reply = json.dumps(reply, ensure_ascii=False)
        return reply if isinstance(reply, AIMessage) else AIMessage(content=reply)

    def _generate(
        self, messages: list[BaseMessage], stop: list[str] | None = None, run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any
    ) -> ChatResult:
        return ChatResult(generations=[ChatGeneration(message=self._next(messages, kwargs))])

    def _stream(
        self, messages: list[BaseMessage], stop: list[str] | None = None, run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any
    ) -> Iterator[ChatGenerationChunk]:
        message = self._next(messages, kwargs)
        if message.tool_calls:  # one chunk, whole calls (what create_agent needs)
            yield ChatGenerationChunk(message=AIMessageChunk(content="", tool_call_chunks=[
                {"name": c["name"], "args": json.dumps(c["args"]), "id": c["id"], "index": i, "type": "tool_call_chunk"}
                for i, c in enumerate(message.tool_calls)
            ]))  # fmt: skip
            return
        text = str(message.content)
        for i in range(0, len(text), 5):
            chunk = ChatGenerationChunk(message=AIMessageChunk(content=text[i : i + 5]))
            if run_manager:
                run_manager.on_llm_new_token(text[i : i + 5], chunk=chunk)
            yield chunk


def last_user_text(messages: Sequence[BaseMessage]) -> str:
    return str(messages[-1].content)


def tool_call(name: str, args: dict[str, Any], call_id: str) -> AIMessage:
    return AIMessage(content="", tool_calls=[{"name": name, "args": args, "id": call_id, "type": "tool_call"}])
