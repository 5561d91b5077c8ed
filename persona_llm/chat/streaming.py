"""Stream one string field of a JSON object while the model is still writing it.

The answer step replies with JSON (`{"answer": "...", "citations": [...], ...}`), decoded against a
schema that puts `answer` first, so the answer's words can be shown as they arrive instead of after the
whole object: `JsonStringStreamer.feed(chunk)` returns the newly decoded characters of the field.
"""

from __future__ import annotations

import json
import re

_ESCAPES = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}


def decode_partial_string(raw: str) -> tuple[str, bool]:
    """The JSON string body `raw` (after the opening quote) decoded as far as it is complete, and
    whether the closing quote was reached. An escape cut off at the end waits for the next chunk."""
    out: list[str] = []
    i = 0
    while i < len(raw):
        ch = raw[i]
        if ch == '"':
            return "".join(out), True
        if ch != "\\":
            out.append(ch)
            i += 1
            continue
        if i + 1 >= len(raw):
            break
        code = raw[i + 1]
        if code == "u":
            digits = raw[i + 2 : i + 6]
            if len(digits) < 4:
                break
            # A surrogate pair is two escapes; json decodes both together.
            if 0xD800 <= int(digits, 16) <= 0xDBFF:
                if len(raw) < i + 12:
                    break
                out.append(json.loads(f'"{raw[i : i + 12]}"'))
                i += 12
                continue
            out.append(chr(int(digits, 16)))
            i += 6
            continue
        out.append(_ESCAPES.get(code, code))
        i += 2
    return "".join(out), False


class JsonStringStreamer:
    """Feed raw chunks of a JSON reply; get back the new characters of the string field `key`."""

    def __init__(self, key: str = "answer") -> None:
        self.key = key
        self._open = re.compile(rf'"{re.escape(key)}"\s*:\s*"')
        self.raw = ""
        self._start: int | None = None
        self._emitted = 0
        self.done = False

    def feed(self, chunk: str) -> str:
        self.raw += chunk
        if self.done:
            return ""
        if self._start is None:
            match = self._open.search(self.raw)
            if match is None:
                return ""
            self._start = match.end()
        text, self.done = decode_partial_string(self.raw[self._start :])
        new = text[self._emitted :]
        self._emitted = len(text)
        return new
