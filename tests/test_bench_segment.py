"""bench/bench_segment.py --truth: the tune and held-out halves are each segmented on their own (a held-out
author never reaches the tune fit, nor a tune author the held-out one) and both halves are printed for every
option. Runs on texts written for the test with the hashing embedder (no shared data, no model)."""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pandas as pd
import pytest
from rich.console import Console

from persona_llm.segment import embed
from tests.test_stage_swaps import HashEmbedder, topic_frame

BENCH = Path(__file__).resolve().parents[1] / "bench" / "bench_segment.py"


def bench(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_segment_under_test", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # its dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def authors(min_posts: int = 5) -> tuple[pd.DataFrame, pd.Series]:
    """Stands in for the shared 20NG authors: 60 users on three topics, 5 texts each."""
    frame = topic_frame(users_per_topic=20, texts_per_user=5).rename(columns={"user": "user_id", "topic": "newsgroup"})
    frame["doc_id"] = [f"d{i}" for i in range(len(frame))]
    return frame, frame.groupby("user_id")["newsgroup"].first()


def test_truth_segments_each_half_alone_and_prints_both(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    module = bench(monkeypatch)
    monkeypatch.setattr(module, "newsgroup_authors", authors)
    monkeypatch.setattr(embed, "get_embedder", lambda name, **params: HashEmbedder())
    fitted: list[set[str]] = []

    class RecordingPipeline(module.SegmentPipeline):  # type: ignore[name-defined,misc]
        def fit(self, data: pd.DataFrame, **kwargs: Any) -> Any:
            fitted.append(set(data[kwargs["user_column"]].astype(str)))
            return super().fit(data, **kwargs)

    monkeypatch.setattr(module, "SegmentPipeline", RecordingPipeline)
    module.console = Console(record=True, width=400)
    args = argparse.Namespace(min_texts=5, big_model_share=0.0, clustering=False, embedder=["hash"], with_e5=False)
    module.run_truth(str(tmp_path / "cache"), args)

    from persona_llm.evaluation.split import HOLDOUT_SALT, HOLDOUT_SHARE, holdout_mask

    _, labels = authors()
    held = set(labels.index[holdout_mask(labels.index, HOLDOUT_SHARE, HOLDOUT_SALT)])
    tune = set(labels.index) - held
    assert held and tune
    # the cleaning run on everyone, then per option: tune alone, held-out alone, everyone (the users
    # cleaning kept: its near-duplicate texts leave a few out)
    assert fitted[0] == tune | held
    per_option = fitted[1:]
    assert len(per_option) == 2 * 3  # the default and "embedder hash"
    for i in range(0, len(per_option), 3):
        fit_tune, fit_held, fit_all = per_option[i : i + 3]
        assert fit_tune and fit_tune <= tune and fit_held and fit_held <= held
        assert fit_all == fit_tune | fit_held

    text = module.console.export_text()
    assert f"tune {len(tune)}, held-out {len(held)} (never used to choose a setting)" in text
    header = next(line for line in text.splitlines() if "option" in line and "held-out ARI" in line)
    for column in ("tune ARI", "tune 5-NN", "held-out ARI", "held-out 5-NN", "all ARI"):
        assert column in header
    rows = [line for line in text.splitlines() if line.lstrip("│ ").startswith(("default:", "embedder hash"))]
    assert len(rows) == 2
    for row in rows:
        cells = [c.strip() for c in row.strip("│ ").split("│")]
        assert cells[1] == f"{len(tune)}/{len(held)}"
        assert all(c.replace(".", "").replace("%", "").replace("-", "").isdigit() for c in cells[2:]), cells
    assert "held-out columns are reported only" in text
