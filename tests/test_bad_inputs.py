"""Bad inputs tried as a new user would, through the CLI: each gets one clear, unwrapped line naming the
file (and where the rejects went), exits 2, and leaves the published run exactly as it was.

Runs that get as far as embedding use the hashing embedder of tests/test_stage_swaps.py (no model).
"""

from __future__ import annotations

import csv
import hashlib
import re
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from typer.testing import CliRunner, Result

from persona_llm import workflows
from persona_llm.cli import app
from persona_llm.segment import embed
from persona_llm.segment.ingest import ColumnMap
from tests.test_stage_swaps import HashEmbedder, topic_frame

COLUMNS = ["--user-column", "user", "--text-column", "body"]


def tree_digest(path: Path) -> dict[str, str]:
    return {
        str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(path.rglob("*"))
        if p.is_file()
    }


def write_rows(path: Path, rows: list[dict[str, str]]) -> Path:
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def segment_cli(*args: str) -> Result:
    return CliRunner().invoke(app, ["segment", *args])


def the_one_error_line(res: Result) -> str:
    """The error: exit 2, exactly one line on stderr, nothing on stdout."""
    assert res.exit_code == 2, res.output
    assert res.stdout == ""
    lines = res.stderr.splitlines()
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("error: ") and "Traceback" not in lines[0]
    return lines[0]


#: A tqdm bar ("embedding:  40%|####      | 4/10 ..."); `splitlines` cuts its redraws at the carriage returns
#: (an empty piece before the first).
PROGRESS_BAR = re.compile(r"[\w ]+: +\d+%\|")


def the_error_after_progress(res: Result) -> str:
    """The error of a run that got past some stages: exit 2, nothing on stdout, on stderr only the "✓"
    lines of the stages that finished (and the embedding progress bar) and then exactly one error line,
    last."""
    assert res.exit_code == 2, res.output
    assert res.stdout == ""
    *progress, line = res.stderr.splitlines()
    assert all(p.lstrip().startswith("✓ ") or PROGRESS_BAR.match(p) or p == "" for p in progress), res.stderr
    assert line.startswith("error: ") and "Traceback" not in res.stderr
    return line


@pytest.fixture
def hash_embedder(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Every embedder the CLI asks for is the hashing one: no model is loaded."""
    monkeypatch.setattr(embed, "get_embedder", lambda name, **params: HashEmbedder())
    monkeypatch.setenv("PERSONA_LLM_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture
def published(tmp_path: Path) -> Path:
    """A workspace with one published run of three topics."""
    data = tmp_path / "topics.csv"
    topic_frame().to_csv(data, index=False)
    ws = tmp_path / "ws"
    workflows.segment(
        data, ws, columns=ColumnMap(user_column="user", text_column="body"),
        overrides={"embedder": HashEmbedder(), "cache_dir": "none", "min_cluster_size": 5},
    )  # fmt: skip
    assert (ws / "current").is_file()
    return ws


# -- every row rejected: the rejects still reach the user ------------------------------------------


def test_all_empty_texts_fail_in_one_line_naming_the_rejects_file(published: Path, tmp_path: Path) -> None:
    data = write_rows(tmp_path / "empty.csv", [{"user": f"u{i}", "body": " " * (i % 2)} for i in range(5)])
    before = tree_digest(published)
    res = segment_cli(str(data), *COLUMNS, "--out", str(published))
    line = the_one_error_line(res)
    assert str(data) in line and "every row was rejected while reading (5 read: 5 empty text)" in line
    written = sorted(published.glob("rejects-*.csv"))
    assert len(written) == 1 and line.endswith(f"each rejected row and its reason: {written[0]}")
    with written[0].open(encoding="utf-8") as fh:
        rejects = list(csv.DictReader(fh))
    assert [(r["source_row"], r["stage"], r["field"], r["reason"]) for r in rejects] == [
        (str(i), "ingest", "text", "empty text") for i in range(1, 6)
    ]
    # the published run and the runs are exactly as they were: the rejects file is the only change
    after = tree_digest(published)
    assert {k: v for k, v in after.items() if not k.startswith("rejects-")} == before


def test_emoji_only_texts_fail_at_cleaning_with_the_rejects_written(published: Path, tmp_path: Path) -> None:
    data = write_rows(tmp_path / "emoji.csv", [{"user": f"u{i}", "body": "😀 🎉" * (i + 1)} for i in range(4)])
    res = segment_cli(str(data), *COLUMNS, "--out", str(published))
    assert res.exit_code == 2
    # ingest succeeded and may say so; the stage that failed (clean) prints no progress line
    *progress, line = res.stderr.splitlines()
    assert all("✓ ingest" in p for p in progress) and "✓ clean" not in res.stderr
    assert "every row was rejected (4 read: " in line and "too short after cleaning" in line
    written = next(published.glob("rejects-*.csv"))
    assert line.endswith(str(written))
    rejects = pd.read_csv(written, dtype=str)
    assert rejects["stage"].tolist() == ["clean"] * 4 and rejects["reason"].notna().all()


def test_a_forced_single_run_keeps_its_rejects_beside_it(tmp_path: Path) -> None:
    run = tmp_path / "single"
    run.mkdir()
    (run / ".persona-llm-run").write_text('{"kind": "persona-llm-run", "format": 1}\n')
    data = write_rows(tmp_path / "empty.csv", [{"user": "u1", "body": ""}])
    line = the_one_error_line(segment_cli(str(data), *COLUMNS, "--out", str(run), "--force"))
    written = sorted(tmp_path.glob("single.rejects-*.csv"))
    assert len(written) == 1 and line.endswith(str(written[0]))
    assert sorted(p.name for p in run.iterdir()) == [".persona-llm-run"]  # the run is untouched


# -- errors are one line, and no progress line claims a stage that failed ----------------------------


def test_a_bad_input_is_exactly_one_unwrapped_line(tmp_path: Path) -> None:
    deep = tmp_path / ("a-folder-with-a-rather-long-name-" * 3)
    deep.mkdir()
    data = write_rows(deep / "texts.csv", [{"user": "u1", "message": "hello there"}])
    line = the_one_error_line(segment_cli(str(data), *COLUMNS, "--out", str(tmp_path / "ws")))
    assert len(line) > 80  # printed whole: a script can grep it, a terminal wraps it itself
    assert str(data) in line and "column 'body'" in line
    assert "✓" not in line


# -- too few users, or no segment: say which minimum and what to change -----------------------------


def test_three_users_find_no_segment_and_say_what_to_change(hash_embedder: Any, tmp_path: Path) -> None:
    data = tmp_path / "three.csv"
    topic_frame(users_per_topic=1).to_csv(data, index=False)
    res = segment_cli(str(data), *COLUMNS, "--out", str(tmp_path / "ws"))
    line = the_error_after_progress(res)
    assert str(data) in line
    assert "HDBSCAN found no segment among 3 users: min_cluster_size=3 needs at least 3 users" in line
    assert "try --min-cluster-size 2" in line
    assert not (tmp_path / "ws").exists()  # the workspace this failed first run made is gone again
    assert "0 segments" not in res.output


def test_ten_users_on_one_topic_find_no_segment(hash_embedder: Any, published: Path, tmp_path: Path) -> None:
    frame = topic_frame(users_per_topic=10)
    data = tmp_path / "pizza.csv"
    frame[frame["topic"] == "pizza"].to_csv(data, index=False)
    before = tree_digest(published)
    res = segment_cli(str(data), *COLUMNS, "--out", str(published))
    line = the_error_after_progress(res)
    assert "no segment among 10 users: min_cluster_size=5 needs at least 5 users who write alike" in line
    assert "one group of everyone is not a segment" in line and "--min-cluster-size 2" in line
    assert tree_digest(published) == before  # nothing written, nothing published


def test_an_asked_min_cluster_size_above_the_users_is_named(hash_embedder: Any, tmp_path: Path) -> None:
    frame = topic_frame(users_per_topic=4)
    data = tmp_path / "twelve.csv"
    frame.to_csv(data, index=False)
    res = segment_cli(str(data), *COLUMNS, "--out", str(tmp_path / "ws"), "--min-cluster-size", "50")
    line = the_error_after_progress(res)
    assert "min_cluster_size=12 (asked 50, capped at the number of users)" in line and "--min-cluster-size 6" in line


def test_fewer_than_three_users_name_the_minimum_and_the_fix(hash_embedder: Any, tmp_path: Path) -> None:
    rows = [{"user": "a", "body": "The pizza oven at home finally reached the heat a good crust needs"},
            {"user": "a", "body": "Fresh basil and tomato sauce made from scratch beat any delivery order"},
            {"user": "b", "body": "My gearbox grinds in third gear whenever the engine is still cold"},
            {"user": "b", "body": "Replaced the spark plugs and the brake pads myself over the weekend"}]  # fmt: skip
    rows += [{"user": u, "body": f"Only one text from this user about the {w} and the match"} for u, w in
             (("c", "striker"), ("d", "referee"))]  # fmt: skip
    data = write_rows(tmp_path / "few.csv", rows)
    res = segment_cli(str(data), *COLUMNS, "--out", str(tmp_path / "ws"), "--min-texts", "2")
    line = the_error_after_progress(res)
    assert "✓ users" not in res.stderr
    assert "only 2 user(s) left to segment (2 more had fewer than min_texts=2 texts)" in line
    assert "segmenting needs at least 3: lower --min-texts or add users" in line
    written = next((tmp_path / "ws").glob("rejects-*.csv"))
    assert line.endswith(str(written))
    assert pd.read_csv(written, dtype=str)["stage"].tolist() == ["users", "users"]
