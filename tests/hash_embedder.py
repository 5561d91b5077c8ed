"""A deterministic embedder that loads nothing, for tests where the model does not matter (a Ray actor
imports it by module path, so it lives here rather than in a test module)."""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from persona_llm.segment.base import BaseEmbedder


class HashEmbedder(BaseEmbedder):
    """Deterministic, instant vectors (a text's words hashed into 16 dimensions): for file-level tests
    where the model does not matter, so a Ray actor starts without loading one."""

    @property
    def model_id(self) -> str:
        return "test-hash-16"

    def encode(self, texts: Any, *, kind: Any = "passage", show_progress: bool = False) -> np.ndarray:
        out = np.zeros((len(texts), 16), dtype=np.float32)
        for i, text in enumerate(texts):
            for word in str(text).lower().split():
                out[i, int(hashlib.md5(word.encode()).hexdigest(), 16) % 16] += 1.0
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)
