"""The ray executor gives what the local one gives: the same segments (ARI 1.0) and identical embeddings
from the same input, and the same personas from the same scripted model; the cache is consulted
before any Ray work; `[scale]` config errors name the file.

One local Ray for the test session (`ray_session` in tests/conftest.py): starting Ray is the cost.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

ray = pytest.importorskip("ray", reason="the cluster extra (pip install 'persona-llm[cluster]') is not installed")

from persona_llm import workflows  # noqa: E402
from persona_llm.errors import ConfigError, InputError, RunNotPublishedError  # noqa: E402
from persona_llm.llm.client import LLMSettings  # noqa: E402
from persona_llm.scale import RayExecutor, ScaleSettings  # noqa: E402
from persona_llm.scale.ray_embed import RayEmbedder  # noqa: E402
from persona_llm.segment.embed import CachedEmbedder, SentenceTransformerEmbedder, innermost  # noqa: E402
from persona_llm.segment.pipeline import SegmentPipeline  # noqa: E402
from tests.conftest import copy_workspace  # noqa: E402
from tests.fake_openai import FakeOpenAIServer  # noqa: E402
from tests.hash_embedder import HashEmbedder  # noqa: E402
from tests.run_store_data import customer_texts  # noqa: E402
from tests.test_run_store import persona_reply  # noqa: E402


@pytest.fixture(scope="module")
def fits(ray_session: None, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The same texts segmented locally and on Ray, each with its own fresh embedding cache, and a second
    Ray fit on the Ray fit's (now full) cache."""
    caches = tmp_path_factory.mktemp("embedding-caches")
    texts = customer_texts()
    local = SegmentPipeline(cache_dir=caches / "local").fit(texts, user_column="user_id", text_column="text")
    # Small blocks: the input reaches the actors as several Arrow blocks, on two actors.
    executor = RayExecutor(ScaleSettings(executor="ray", embed_block_rows=40, embed_actors=2))
    on_ray = SegmentPipeline(cache_dir=caches / "ray", executor=executor).fit(
        texts, user_column="user_id", text_column="text"
    )
    again = SegmentPipeline(cache_dir=caches / "ray", executor=executor).fit(
        texts, user_column="user_id", text_column="text"
    )
    executor.close()  # a Ray it did not start stays up
    assert ray.is_initialized()
    return {"local": local, "ray": on_ray, "again": again}


def test_ray_embeds_what_the_local_executor_embeds(fits: dict[str, Any]) -> None:
    local, on_ray = fits["local"], fits["ray"]
    assert isinstance(innermost(on_ray.embedder_), SentenceTransformerEmbedder)
    assert isinstance(on_ray.embedder_, CachedEmbedder) and isinstance(on_ray.embedder_.embedder, RayEmbedder)
    assert not isinstance(local.embedder_.embedder, RayEmbedder)
    # every text went through Ray (a fresh cache), and the model id is the local model's
    assert on_ray.embedder_.misses_ == len(on_ray.texts_) and on_ray.embedder_.hits_ == 0
    assert on_ray.manifest_.models == local.manifest_.models
    assert on_ray.manifest_.parameters["executor"].startswith("RayExecutor(")
    assert "executor" not in local.manifest_.parameters
    assert list(on_ray.texts_["text_id"]) == list(local.texts_["text_id"])
    # the default int8 model embeds each text alone, so blocks grouping texts differently change nothing
    np.testing.assert_array_equal(on_ray.text_embeddings_, local.text_embeddings_)


def test_ray_gives_the_same_segments(fits: dict[str, Any]) -> None:
    from sklearn.metrics import adjusted_rand_score

    local, on_ray = fits["local"], fits["ray"]
    assert list(on_ray.user_ids_) == list(local.user_ids_)
    assert adjusted_rand_score(local.labels_, on_ray.labels_) == 1.0
    assert len(on_ray.segments_.segments) == len(local.segments_.segments) >= 3


def test_the_cache_is_consulted_before_ray(fits: dict[str, Any]) -> None:
    again = fits["again"]
    assert again.embedder_.misses_ == 0 and again.embedder_.hits_ == len(again.texts_)
    assert np.array_equal(again.text_embeddings_, fits["ray"].text_embeddings_)


def _comparable(persona: Any) -> dict[str, Any]:
    """A persona without what differs between two writes of the same draft: when and how fast."""
    data = persona.model_dump(mode="json")
    for key in ("generated_at", "seconds", "from_cache"):
        data["provenance"].pop(key, None)
    return data


def test_personas_written_on_ray_equal_local_ones(
    ray_session: None, persona_workspace: Path, tmp_path: Path
) -> None:
    """The shared workspace's personas were written by the local executor from the scripted model
    (tests/conftest.py); Ray workers on two scripted endpoints (llm_urls) write the same ones."""
    from persona_llm.runs.workspace import resolve_run

    ids = [0, 1, 2]
    local = [p for p in resolve_run(persona_workspace).load_personas() if p.segment_id in ids]
    ray_ws = copy_workspace(persona_workspace, tmp_path / "ray")
    with (
        FakeOpenAIServer(default=persona_reply("First")) as first,
        FakeOpenAIServer(default=persona_reply("First")) as second,
    ):
        settings = LLMSettings(backend="openai", base_url=first.base_url, model="fake-model", cache_dir=tmp_path / "c")
        scale = ScaleSettings(executor="ray", llm_urls=[first.base_url, second.base_url])
        on_ray = workflows.write_personas(ray_ws, settings, segment_ids=ids, scale=scale)
    assert first.requests and second.requests  # the segments were spread over both endpoints
    assert len(first.requests) + len(second.requests) == on_ray.writer.stats_["calls"]
    assert on_ray.published and on_ray.writer.stats_["personas"] == len(local) == 3
    assert [_comparable(p) for p in on_ray.personas] == [_comparable(p) for p in local]
    assert [p.name for p in on_ray.personas] == ["First 0", "First 1", "First 2"]


def test_a_failing_endpoint_fails_its_segments_not_the_run(
    ray_session: None, persona_workspace: Path, tmp_path: Path
) -> None:
    """A model failure on a Ray worker comes back as that segment's failure, with its calls recorded;
    the run is kept unpublished, as locally."""
    ws = copy_workspace(persona_workspace, tmp_path / "ws")
    with FakeOpenAIServer(default={"status": 500, "message": "model crashed"}) as broken:
        settings = LLMSettings(
            backend="openai", base_url=broken.base_url, model="fake-model", max_retries=0, use_cache=False
        )
        with pytest.raises(RunNotPublishedError, match="model crashed"):
            workflows.write_personas(ws, settings, scale=ScaleSettings(executor="ray"), segment_ids=[0])


def test_scale_table_in_a_config_file(tmp_path: Path) -> None:
    good = tmp_path / "good.toml"
    good.write_text('[scale]\nexecutor = "ray"\nray_address = "auto"\nllm_urls = ["http://10.0.0.2:8000/v1/"]\n')
    config = workflows.load_config(good)
    assert config.scale.executor == "ray" and config.scale.ray_address == "auto"
    assert config.scale.llm_urls == ["http://10.0.0.2:8000/v1"]
    assert workflows.load_config(None).scale.executor == "local"

    misspelt = tmp_path / "misspelt.toml"
    misspelt.write_text('[scale]\nexecutor = "ray"\nray_adress = "auto"\n')
    with pytest.raises(ConfigError, match=r"misspelt.toml: unknown key in \[scale\]: ray_adress"):
        workflows.load_config(misspelt)
    wrong = tmp_path / "wrong.toml"
    wrong.write_text('[scale]\nexecutor = "dask"\n')
    with pytest.raises(ConfigError, match=r"wrong.toml: \[scale\] executor"):
        workflows.load_config(wrong)


def test_several_endpoints_need_the_ray_executor() -> None:
    scale = ScaleSettings(llm_urls=["http://127.0.0.1:9/v1", "http://127.0.0.1:10/v1"])
    with pytest.raises(ConfigError, match="needs executor"):
        workflows.settings_for_scale(LLMSettings(backend="openai", model="m"), scale)


class _Elsewhere:
    """An EmbedExecutor stand-in (no Ray): wraps the model so the pipeline's chain can be inspected."""

    def embedder(self, embedder: Any) -> Any:
        return RayEmbedder(embedder, RayExecutor())


def test_the_executor_wraps_the_model_under_the_cache_and_chunking() -> None:
    from persona_llm.segment.embed import ChunkedEmbedder

    texts = customer_texts(users_per_topic=1)
    texts["language"] = "en"
    pipe = SegmentPipeline(executor=_Elsewhere(), long_texts="chunk", embedder="minilm")
    chain = pipe._embedder(texts)
    # chunking and the cache stay in the driver; only the model call goes to the executor
    assert isinstance(chain, ChunkedEmbedder) and isinstance(chain.embedder, CachedEmbedder)
    assert isinstance(chain.embedder.embedder, RayEmbedder)
    assert isinstance(innermost(chain), SentenceTransformerEmbedder)
    assert chain.model_id == SegmentPipeline(long_texts="chunk", embedder="minilm")._embedder(texts).model_id
    assert chain._window() == 254  # the tokenizer is found under the executor's wrapper


def _texts_file(tmp_path: Path, name: str) -> tuple[Path, list[str]]:
    frame = customer_texts(users_per_topic=10)
    path = tmp_path / name
    frame.to_csv(path, index=False)
    return path, frame["text"].tolist()


def test_embed_file_reads_in_chunks_and_uses_the_cache(tmp_path: Path) -> None:
    from persona_llm.scale.files import embed_file

    source, texts = _texts_file(tmp_path, "texts.csv.gz")
    expected = HashEmbedder().encode(texts)
    first = embed_file(source, "text", tmp_path / "v.npy", embedder=HashEmbedder(), cache_dir=tmp_path / "c", chunk_rows=7)
    vectors = np.load(tmp_path / "v.npy")
    assert first.rows == len(texts) == vectors.shape[0] and first.dimension == 16
    assert np.allclose(vectors, expected, atol=1e-6)
    assert first.misses == len(set(texts)) and first.model_id == "test-hash-16"
    again = embed_file(source, "text", tmp_path / "w.npy", embedder=HashEmbedder(), cache_dir=tmp_path / "c", chunk_rows=50)
    assert again.misses == 0 and again.hits == len(texts)
    assert np.array_equal(np.load(tmp_path / "w.npy"), vectors)

    with pytest.raises(InputError, match="no column 'body'"):
        embed_file(source, "body", tmp_path / "x.npy", embedder=HashEmbedder(), cache_dir="none")
    holey = tmp_path / "holey.csv"
    holey.write_text("user_id,text\nu1,fine text\nu2,\nu3,more\n")
    with pytest.raises(InputError, match=r"holey.csv.*row 2: column 'text' is empty"):
        embed_file(holey, "text", tmp_path / "h.npy", embedder=HashEmbedder(), cache_dir="none")
    assert not (tmp_path / "h.npy").exists() and not list(tmp_path.glob(".h.npy.tmp-*"))
