"""The fast tier: a static model2vec table distilled locally from the bundled MiniLM ("minilm-static").

The distillation (~45 s on 2 quiet cores, minutes on a loaded one) is made once per machine in the
default models cache, like the ONNX exports the rest of the suite uses, and shared by this module.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from persona_llm.errors import ConfigError  # noqa: E402
from persona_llm.segment.embed import (  # noqa: E402
    STATIC_BACKEND,
    CachedEmbedder,
    EmbeddingCache,
    SentenceTransformerEmbedder,
    StaticEmbedder,
    embedder_from_model_id,
    get_embedder,
)

#: Four topics, two sentences each that share a topic but hardly a word.
PAIRS = [
    ("I love my new phone, the screen is so sharp.", "This smartphone has a great display."),
    ("The hockey game last night went to overtime.", "Our team won the playoff match on the ice."),
    ("My car engine makes a strange noise when I brake.", "The vehicle's motor rattles at every stop."),
    ("The tomato seedlings on my balcony need more sun.", "I water the vegetable garden every evening."),
]


def test_static_init_does_no_work_and_says_what_it_is(tmp_path: Path) -> None:
    emb = StaticEmbedder(cache_folder=tmp_path / "models")
    model_id = emb.model_id
    assert not (tmp_path / "models").exists() and not hasattr(emb, "_model_")
    assert model_id.startswith(f"sentence-transformers/all-MiniLM-L6-v2@{STATIC_BACKEND};")
    assert "pca=256" in model_id and "seq=512" in model_id and "model2vec==" in model_id
    assert isinstance(get_embedder("minilm-static"), StaticEmbedder)


def test_static_model_id_round_trip_and_config_errors(tmp_path: Path) -> None:
    emb = StaticEmbedder(pca_dims=128, max_tokens=None)
    again = embedder_from_model_id(emb.model_id)
    assert isinstance(again, StaticEmbedder) and again.model_id == emb.model_id
    assert (again.pca_dims, again.max_tokens) == (128, None)
    with pytest.raises(ConfigError, match="recipe"):
        embedder_from_model_id(emb.model_id.replace(StaticEmbedder.RECIPE, "m2v-distill-v0"))
    with pytest.raises(ConfigError, match="pca_dims"):
        StaticEmbedder(pca_dims=1000, cache_folder=tmp_path).encode(["x"])
    with pytest.raises(ConfigError, match="max_tokens"):
        StaticEmbedder(max_tokens=0, cache_folder=tmp_path).encode(["x"])
    with pytest.raises(ConfigError, match="bad parameter"):
        get_embedder("minilm-static", backend="onnx")
    assert not list(tmp_path.iterdir())  # a bad setting is refused before any distillation


@pytest.fixture(scope="module")
def static() -> StaticEmbedder:
    emb = StaticEmbedder()
    emb.encode(["distil or load once"])
    return emb


@pytest.mark.slow
def test_static_nearest_neighbours_agree_with_minilm(static: StaticEmbedder) -> None:
    texts = [t for pair in PAIRS for t in pair]
    vecs = static.encode(texts)
    assert vecs.shape == (len(texts), 256) and vecs.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    minilm = SentenceTransformerEmbedder(backend="torch").encode(texts)
    for name, v in (("static", vecs), ("minilm", minilm)):
        sims = v @ v.T
        np.fill_diagonal(sims, -np.inf)
        partner = np.arange(len(texts)) ^ 1  # 0<->1, 2<->3, ...
        assert (sims.argmax(axis=1) == partner).all(), (name, np.round(sims, 2))
    # a text with no known token is a zero vector, not a unit vector pointing somewhere
    empty = static.encode(["", "   "])
    assert np.abs(empty).max() == 0.0


@pytest.mark.slow
def test_static_reads_past_minilm_window_and_caches(static: StaticEmbedder, tmp_path: Path) -> None:
    head = "The hockey game last night went to overtime. " * 40  # ~400 tokens: past MiniLM's 256
    tail = "My car engine makes a strange noise when I brake. " * 10
    short, long = static.encode([head, head + tail])
    assert float(short @ long) < 0.999  # the tail beyond 256 tokens changed the vector
    capped = StaticEmbedder(max_tokens=256)
    a, b = capped.encode([head, head + tail])
    assert float(a @ b) > 0.9999  # with a 256-token cap it does not
    cached = CachedEmbedder(static, EmbeddingCache(tmp_path / "emb"))
    first = cached.encode([head, tail, head])
    assert (cached.misses_, cached.hits_) == (2, 1)
    np.testing.assert_array_equal(first, CachedEmbedder(static, EmbeddingCache(tmp_path / "emb")).encode([head, tail, head]))
