"""A refresh killed with SIGKILL while embedding, while writing personas and while publishing leaves the
published run exactly as it was (tree digests), and the next refresh completes.

The refreshes run as CLI subprocesses (tests.test_run_store helpers). Inputs are kept tiny: the second and
third cases refresh from the published run's own texts (a snapshot without a few users), so nothing needs
embedding and no embedding model is loaded before the kill.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from persona_llm.refresh import refresh
from persona_llm.runs.workspace import Workspace, resolve_run
from persona_llm.schema.columns import ColumnMap
from tests.conftest import copy_workspace
from tests.fake_openai import FakeOpenAIServer
from tests.run_store_data import customer_texts
from tests.test_refresh import CLI_COLUMNS, COLUMNS, run_texts_csv, segment_users, settings_for
from tests.test_run_store import ROOT, cli_env, kill_when, llm_flags, persona_reply, start_cli, tree_digest

SNAPSHOT_FLAGS = [*CLI_COLUMNS, "--id-column", "text_id", "--snapshot", "--mode", "assign"]
BY_ID = ColumnMap(user_column="user_id", text_column="text", id_column="text_id")

#: The CLI, with the rename that publishes (the `current` pointer) turned into SIGKILL of the process.
KILL_AT_PUBLISH = """
import os, signal, sys
from pathlib import Path
real_replace = os.replace
def replace(src, dst, *args, **kwargs):
    if Path(dst).name == "current":
        os.kill(os.getpid(), signal.SIGKILL)
    return real_replace(src, dst, *args, **kwargs)
os.replace = replace
from persona_llm.cli import app
app()
"""


@pytest.fixture()
def ws(persona_workspace: Path, tmp_path: Path) -> Path:
    return copy_workspace(persona_workspace, tmp_path / "ws")


def published_state(ws: Path) -> tuple[str, dict[str, str]]:
    current = (ws / "current").read_text()
    return current, tree_digest(ws / "runs" / current.strip())


def test_refresh_killed_while_embedding(ws: Path, tmp_path: Path) -> None:
    before = published_state(ws)
    big = customer_texts(users_per_topic=700, texts_per_user=2, seed=11)  # ~4,000 texts to embed
    big["user_id"] = "big-" + big["user_id"]
    data = tmp_path / "big.csv"
    big.to_csv(data, index=False)
    proc = start_cli(["refresh", str(ws), str(data), *CLI_COLUMNS], tmp_path / "cache")
    out = kill_when(proc, r"refresh: embedding", timeout=300)
    assert "writing" not in out and proc.returncode == -9
    assert published_state(ws) == before
    # The next refresh completes (and takes over the lock the killed one held).
    small = customer_texts(users_per_topic=1, seed=12)
    small["user_id"] = "next-" + small["user_id"]
    small.to_csv(tmp_path / "small.csv", index=False)
    result = refresh(ws, tmp_path / "small.csv", columns=COLUMNS, mode="assign")
    assert result.status == "published" and resolve_run(ws).path == result.run.path  # type: ignore[union-attr]


def test_refresh_killed_while_writing_personas(ws: Path, tmp_path: Path) -> None:
    before = published_state(ws)
    published = resolve_run(ws)
    data = run_texts_csv(published, tmp_path / "snapshot.csv", set(segment_users(published, 0)[:5]))
    with FakeOpenAIServer(default={"sleep": 15.0, "content": "{}"}) as slow:
        proc = start_cli(["refresh", str(ws), str(data), *SNAPSHOT_FLAGS, *llm_flags(slow)], tmp_path / "cache")
        # Killed while the writer waits inside its model call for the changed segment.
        kill_when(proc, r"refresh: writing personas", timeout=300, then=lambda: bool(slow.requests))
        assert slow.requests, "the writer never called the model"
    assert published_state(ws) == before
    assert any(p.name.startswith(".staging-") for p in (ws / "runs").iterdir())  # what it left; gc removes it
    with FakeOpenAIServer(default=persona_reply("Second")) as server:
        result = refresh(ws, data, columns=BY_ID, snapshot=True, mode="assign", settings=settings_for(server, tmp_path))
    assert result.status == "published"
    assert {p.segment_id: p.version for p in resolve_run(ws).load_personas()} == {0: 2, 1: 1, 2: 1}


def test_refresh_killed_while_publishing(ws: Path, tmp_path: Path) -> None:
    before = published_state(ws)
    published = resolve_run(ws)
    names = set(Workspace(ws).run_names())
    data = run_texts_csv(published, tmp_path / "snapshot.csv", set(segment_users(published, 1)[:1]))
    proc = subprocess.run(
        [sys.executable, "-c", KILL_AT_PUBLISH, "refresh", str(ws), str(data), *SNAPSHOT_FLAGS],
        capture_output=True, text=True, env=cli_env(tmp_path / "cache"), cwd=ROOT, timeout=300,
    )  # fmt: skip
    assert proc.returncode == -9, proc.stderr
    assert "refresh: publishing run" in proc.stderr  # it got as far as the pointer swap
    assert published_state(ws) == before
    written = set(Workspace(ws).run_names()) - names
    assert len(written) == 1  # the complete refreshed run, never published
    result = refresh(ws, data, columns=BY_ID, snapshot=True, mode="assign")
    assert result.status == "published" and result.diff.llm_calls == 0
    assert resolve_run(ws).path == result.run.path  # type: ignore[union-attr]
