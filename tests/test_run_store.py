"""The run store with real files and processes: RunDir refuses what is not ours, a workspace publishes
atomically, a build killed with SIGKILL (mid-embedding, mid-persona-writing) leaves the published run
exactly as it was, rollback restores the previous personas, and a second writer is told who holds the lock.

Personas here come from a scripted OpenAI-compatible server on loopback (tests/fake_openai.py) that quotes
the texts the prompt shows, so the real writer, gates, report and store run without a model.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from persona_llm.cli import app
from persona_llm.errors import RunStoreError, WorkspaceLockedError
from persona_llm.runs.rundir import MARKER, RunDir
from persona_llm.runs.workspace import Workspace, resolve_run
from tests.fake_openai import FakeOpenAIServer
from tests.run_store_data import write_csv
from tests.test_persona_gates import estimate, make_run_dir

ROOT = Path(__file__).resolve().parents[1]
COLUMNS = ["--user-column", "user_id", "--text-column", "text"]


# -- helpers ------------------------------------------------------------------------------------------


def tree_digest(path: Path) -> dict[str, str]:
    """sha256 of every file under `path` (relative names): equal digests mean nothing changed."""
    return {
        str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(path.rglob("*"))
        if p.is_file()
    }


def persona_reply(name_prefix: str) -> Any:
    """A persona draft for whatever segment the prompt shows, quoting its first three texts verbatim."""

    def reply(request: dict[str, Any]) -> dict[str, Any]:
        import json

        user = next(m["content"] for m in request["messages"] if m["role"] == "user")
        sid = int(re.search(r"Segment (\d+) of", user).group(1))  # type: ignore[union-attr]
        inside = user.split("<texts>")[1].split("</texts>")[0]
        refs = re.findall(r"^\[(t\d+)\] (.+)$", inside, flags=re.M)
        quotes = [{"text_id": ref, "text": text.strip()[:150]} for ref, text in refs[:3]]
        draft = {
            "name": f"{name_prefix} {sid}", "tagline": f"Segment {sid} customers",
            "summary": (
                f"People of segment {sid} write about their hobby. They post what they tried and what failed. "
                "They ask others for advice before they buy anything."
            ),
            "demographics": {k: estimate() for k in ("age_group", "gender", "location", "occupation")},
            "interests": [f"topic {sid}"], "goals": ["enjoy the hobby"], "pain_points": ["broken gear"],
            "motivations": ["quality"], "purchase_triggers": ["discounts"], "objections": ["price"],
            "preferred_channels": ["email"], "tone_of_voice": "plain", "sentiment": "mixed",
            "keywords": [f"k{sid}"], "quotes": quotes,
            "recommendations": {"messages": ["m"], "offers": ["o"], "channels": ["email"]},
            "confidence": "medium",
        }  # fmt: skip
        schema = (request.get("response_format") or {}).get("json_schema", {}).get("schema", {})
        if "quote_ids" in schema.get("properties", {}):  # quotes chosen by sentence id: take the first three
            ids = schema["properties"]["quote_ids"]["items"]["enum"]
            draft = {k: v for k, v in draft.items() if k != "quotes"} | {"quote_ids": ids[:3]}
        if "demographic_hints" in schema.get("properties", {}):  # the hints agent: no estimates to write
            draft = {k: v for k, v in draft.items() if k != "demographics"} | {"demographic_hints": []}
        return {"content": json.dumps(draft)}

    return reply


def cli_env(cache: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        PERSONA_LLM_CACHE_DIR=str(cache), PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1",
        PERSONA_LLM_BACKEND="", PERSONA_LLM_BASE_URL="", PERSONA_LLM_MODEL="",
    )  # fmt: skip
    return env


def llm_flags(server: FakeOpenAIServer) -> list[str]:
    return ["--llm", "openai", "--llm-url", server.base_url, "--llm-model", "fake-model"]


def start_cli(args: list[str], cache: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", "from persona_llm.cli import app; app()", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env(cache), cwd=ROOT,
    )  # fmt: skip


def kill_when(proc: subprocess.Popen[str], pattern: str, timeout: float = 600, then: Any = None) -> str:
    """Read the child's stderr until `pattern` appears (and `then()` is true, if given), then SIGKILL it;
    returns what it printed."""
    assert proc.stderr is not None
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        seen.append(line)
        if re.search(pattern, line):
            while then is not None and not then() and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.1)
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
            return "".join(seen)
    proc.kill()
    raise AssertionError(f"never saw {pattern!r}; output:\n{''.join(seen)}")


# -- RunDir refuses what is not ours (fast: fails before any work) ------------------------------------


def test_out_on_a_folder_of_user_files_refuses_and_leaves_every_file(tmp_path: Path) -> None:
    data = write_csv(tmp_path / "in.csv", users_per_topic=2)
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "important.txt").write_text("do not lose me")
    before = sorted(os.listdir(tmp_path))
    res = CliRunner().invoke(app, ["segment", str(data), *COLUMNS, "--out", str(folder), "--force"])
    assert res.exit_code == 2
    assert "refusing to write" in res.output and "not empty" in res.output
    assert len(res.output.strip().splitlines()) == 1  # one line, no traceback, no progress line first
    assert (folder / "important.txt").read_text() == "do not lose me"
    assert sorted(os.listdir(folder)) == ["important.txt"] and sorted(os.listdir(tmp_path)) == before


def test_out_naming_a_file_refuses_and_does_not_rename_it(tmp_path: Path) -> None:
    data = write_csv(tmp_path / "in.csv", users_per_topic=2)
    target = tmp_path / "notes.txt"
    target.write_text("mine")
    res = CliRunner().invoke(app, ["segment", str(data), *COLUMNS, "--out", str(target)])
    assert res.exit_code == 2 and "it is a file" in res.output
    assert target.read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv", "notes.txt"]  # no hidden .old copy


def test_unwritable_out_fails_in_one_line_before_any_work(tmp_path: Path) -> None:
    data = write_csv(tmp_path / "in.csv", users_per_topic=2)
    blocker = tmp_path / "file"
    blocker.write_text("x")  # a folder cannot be made under a file, even by root
    t0 = time.perf_counter()
    res = CliRunner().invoke(app, ["segment", str(data), *COLUMNS, "--out", str(blocker / "ws")])
    assert res.exit_code == 2 and "cannot write there" in res.output
    assert "Traceback" not in res.output and "ingest" not in res.output  # nothing ran
    assert time.perf_counter() - t0 < 5  # no model was loaded


def test_staged_run_replaces_only_a_run_and_only_with_overwrite(tmp_path: Path) -> None:
    run_path = make_run_dir(tmp_path / "run")
    before = tree_digest(run_path)
    with pytest.raises(RunStoreError, match="already there"), RunDir.staged(run_path):
        pass
    with pytest.raises(RuntimeError, match="boom"), RunDir.staged(run_path, overwrite=True) as run:
        run.save_text("half.txt", "half-written")
        raise RuntimeError("boom")
    assert tree_digest(run_path) == before  # a failed replacement leaves the old run
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # staging removed
    with RunDir.staged(run_path, overwrite=True) as run:
        run.save_text("new.txt", "complete")
    assert (run_path / "new.txt").is_file() and (run_path / MARKER).is_file()
    assert not (run_path / "segments.json").exists()  # replaced whole, not merged


# -- Workspace: publish, rollback, gc, lock (hand-made runs, no model) --------------------------------


def add_run(ws: Workspace, run_id: str) -> str:
    with ws.new_run() as run:
        make_run_dir(run.path, run_id=run_id)
    return run.path.name


def test_publish_rollback_and_gc(tmp_path: Path) -> None:
    ws = Workspace.create(tmp_path / "ws")
    with ws.lock():
        with pytest.raises(RunStoreError, match="no run is published"):
            ws.current()
        a, b, c = (add_run(ws, rid) for rid in ("run-a", "run-b", "run-c"))
        assert ws.current_name() is None  # writing a run publishes nothing
        ws.publish(a)
        ws.publish(b)
        ws.publish(c)
        assert resolve_run(ws.path).path.name == c
        assert ws.rollback().path.name == b
        assert ws.rollback().path.name == a  # repeated rollbacks go further back
        with pytest.raises(RunStoreError, match="no earlier published run"):
            ws.rollback()
        ws.publish(c)
        d = add_run(ws, "run-d")
        staging = ws.runs_dir / ".staging-99999-1"  # what a killed writer leaves
        staging.mkdir()
        removed = ws.gc(keep=1)
    # kept: d (newest), c (published) and a (the run rollback would restore); b and the leftover go
    assert set(removed) == {b, staging.name}
    assert set(ws.run_names()) == {a, c, d}
    assert [r.name for r in ws.history() if r.current] == [c]


def test_same_run_id_twice_gets_a_new_name(tmp_path: Path) -> None:
    ws = Workspace.create(tmp_path / "ws")
    with ws.lock():
        assert [add_run(ws, "same"), add_run(ws, "same")] == ["same", "same.2"]


def test_a_failed_run_leaves_no_trace_and_the_published_run_unchanged(tmp_path: Path) -> None:
    ws = Workspace.create(tmp_path / "ws")
    with ws.lock():
        ws.publish(add_run(ws, "good"))
        before = tree_digest(ws.path)
        with pytest.raises(ValueError), ws.new_run() as run:
            make_run_dir(run.path, run_id="bad")
            raise ValueError("failed half way")
        assert tree_digest(ws.path) == before


def test_workspace_refuses_a_folder_that_is_not_ours(tmp_path: Path) -> None:
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "cat.jpg").write_bytes(b"\xff\xd8")
    with pytest.raises(RunStoreError, match="not empty"):
        Workspace.open_or_create(tmp_path / "photos")
    assert os.listdir(tmp_path / "photos") == ["cat.jpg"]


def test_a_stale_lock_of_a_dead_process_is_taken_over_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ws = Workspace.create(tmp_path / "ws")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (ws.path / ".lock").write_text(f"{dead.pid}\n")  # as a SIGKILLed writer leaves it
    with caplog.at_level(logging.WARNING), ws.lock():
        assert (ws.path / ".lock").read_text().strip() == str(os.getpid())
    assert f"stale lock left by pid {dead.pid}" in caplog.text


@pytest.fixture()
def lock_holder(tmp_path: Path) -> Iterator[tuple[Path, subprocess.Popen[str]]]:
    ws = Workspace.create(tmp_path / "ws")
    code = (
        "import sys, time\nfrom persona_llm.runs.workspace import Workspace\n"
        "with Workspace(sys.argv[1]).lock():\n    print('locked', flush=True)\n    time.sleep(120)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(ws.path)], stdout=subprocess.PIPE, text=True, env=cli_env(tmp_path), cwd=ROOT
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
    yield ws.path, proc
    proc.kill()
    proc.wait()


def test_a_second_writer_gets_locked_by_pid(lock_holder: tuple[Path, subprocess.Popen[str]], tmp_path: Path) -> None:
    ws_path, holder = lock_holder
    with pytest.raises(WorkspaceLockedError, match=f"locked by pid {holder.pid}") as err, Workspace(ws_path).lock():
        pass
    assert err.value.pid == holder.pid
    data = write_csv(tmp_path / "in.csv", users_per_topic=2)
    res = CliRunner().invoke(app, ["segment", str(data), *COLUMNS, "--out", str(ws_path)])
    assert res.exit_code == 2 and f"locked by pid {holder.pid}" in res.output
    for command in (["rollback", str(ws_path)], ["gc", str(ws_path), "--keep", "1"]):
        res = CliRunner().invoke(app, command)
        assert res.exit_code == 2 and f"locked by pid {holder.pid}" in res.output


# -- real builds in subprocesses, killed with SIGKILL -------------------------------------------------


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path, Path]]:
    """A workspace whose published run has segments and personas: (workspace, small input, cache)."""
    base = tmp_path_factory.mktemp("store")
    cache = base / "cache"
    small = write_csv(base / "small.csv")
    with FakeOpenAIServer(default=persona_reply("First")) as server:
        proc = subprocess.run(
            [sys.executable, "-c", "from persona_llm.cli import app; app()", "build", str(small), *COLUMNS,
             "--out", str(base / "ws"), *llm_flags(server), "--max-segments", "3", "--quiet"],
            capture_output=True, text=True, env=cli_env(cache), cwd=ROOT, timeout=900,
        )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    yield base / "ws", small, cache



@pytest.mark.slow
def test_build_killed_mid_embedding_leaves_the_published_run(published: tuple[Path, Path, Path], tmp_path: Path) -> None:
    ws_path, small, cache = published
    current = (ws_path / "current").read_text()
    run_path = ws_path / "runs" / current.strip()
    before = tree_digest(run_path)
    big = write_csv(tmp_path / "big.csv", users_per_topic=700, texts_per_user=2, seed=1)  # ~4,000 new texts
    proc = start_cli(["segment", str(big), *COLUMNS, "--out", str(ws_path)], cache)
    out = kill_when(proc, r"✓ clean")  # the next stage, embedding, has begun
    assert "embed" not in out.split("✓ clean")[1]  # killed before embedding finished
    assert (ws_path / "current").read_text() == current
    assert tree_digest(run_path) == before
    assert any(p.name.startswith(".staging-") for p in (ws_path / "runs").iterdir())  # what it left
    # The published run still loads and evaluates.
    res = CliRunner().invoke(app, ["eval", str(ws_path), "--no-stability", "--no-embed", "--json"])
    assert res.exit_code == 0, res.output
    assert '"run_id"' in res.output
    personas = RunDir(run_path).load_personas()
    assert [p.name for p in personas] == ["First 0", "First 1", "First 2"]


@pytest.mark.slow
def test_build_killed_mid_persona_writing_leaves_the_published_run(
    published: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    ws_path, _, cache = published
    current = (ws_path / "current").read_text()
    run_path = ws_path / "runs" / current.strip()
    before = tree_digest(run_path)
    other = write_csv(tmp_path / "other.csv", seed=2)  # new texts: no cached persona reply can answer
    with FakeOpenAIServer(default={"sleep": 15.0, "content": "{}"}) as slow_server:
        proc = start_cli(
            ["build", str(other), *COLUMNS, "--out", str(ws_path), *llm_flags(slow_server), "--max-segments", "2"],
            cache,
        )
        # Killed while the writer waits inside its first model call.
        kill_when(proc, r"personas.*backend openai", then=lambda: bool(slow_server.requests))
        assert slow_server.requests, "the writer never called the model"
    assert (ws_path / "current").read_text() == current
    assert tree_digest(run_path) == before
    res = CliRunner().invoke(app, ["personas", str(ws_path), "--json"])
    assert res.exit_code == 0 and '"First 0"' in res.output
    # The next writer takes over the dead one's lock, cleans up and completes.
    res = CliRunner().invoke(app, ["gc", str(ws_path), "--keep", "5"])
    assert res.exit_code == 0, res.output
    assert not any(p.name.startswith(".staging-") for p in (ws_path / "runs").iterdir())


@pytest.mark.slow
def test_rewritten_personas_publish_a_new_run_and_rollback_restores_the_old(
    published: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    from persona_llm import workflows

    ws_path, _, cache = published
    first_run = resolve_run(ws_path)
    first = [p.model_dump() for p in first_run.load_personas()]
    first_files = tree_digest(first_run.path)
    os.environ["PERSONA_LLM_CACHE_DIR"] = str(cache)
    try:
        with FakeOpenAIServer(default=persona_reply("Second")) as server:
            settings = workflows.llm_settings("openai", server.base_url, "second-model")  # not in the reply cache
            result = workflows.write_personas(ws_path, settings, segment_ids=[0, 1, 2])
    finally:
        os.environ.pop("PERSONA_LLM_CACHE_DIR", None)
    assert result.published and result.run.path != first_run.path
    assert [p.name for p in resolve_run(ws_path).load_personas()] == ["Second 0", "Second 1", "Second 2"]
    assert tree_digest(first_run.path) == first_files  # the old run was copied, never modified
    res = CliRunner().invoke(app, ["rollback", str(ws_path)])
    assert res.exit_code == 0, res.output
    restored = resolve_run(ws_path)
    assert restored.path == first_run.path
    assert [p.model_dump() for p in restored.load_personas()] == first
    # The store of the new run holds its own personas; the old run's store was not touched.
    from persona_llm.segment.store import PERSONAS, ChromaStore, store_for_run

    new_run = RunDir(result.run.path)
    store = store_for_run(new_run)
    assert isinstance(store, ChromaStore)
    names = {m["name"] for m in store.collection(PERSONAS, new_run.run_id).get(include=["metadatas"])["metadatas"]}
    store.close()
    assert names == {"Second 0", "Second 1", "Second 2"}
    res = CliRunner().invoke(app, ["history", str(ws_path), "--json"])
    assert res.exit_code == 0 and res.output.count('"current": true') == 1


def test_personas_are_never_written_into_a_workspace_run_in_place(tmp_path: Path) -> None:
    from persona_llm import workflows

    ws = Workspace.create(tmp_path / "ws")
    with ws.lock():
        name = add_run(ws, "published")
        ws.publish(name)
    before = tree_digest(ws.path)
    with pytest.raises(RunStoreError, match="write personas to the workspace"):
        workflows.write_personas(ws.runs_dir / name, None)
    assert tree_digest(ws.path) == before


def test_readers_resolve_a_workspace_to_its_published_run(tmp_path: Path) -> None:
    ws = Workspace.create(tmp_path / "ws")
    res = CliRunner().invoke(app, ["segments", str(ws.path)])
    assert res.exit_code == 2 and "no run is published yet" in res.output
    with ws.lock():
        ws.publish(add_run(ws, "one"))
        ws.publish(add_run(ws, "two"))
    res = CliRunner().invoke(app, ["segments", str(ws.path)])
    assert res.exit_code == 0 and res.output.count("segment_id") == 3
    res = CliRunner().invoke(app, ["history", str(ws.path)])
    assert res.exit_code == 0 and "current" in res.output and "one" in res.output
    res = CliRunner().invoke(app, ["publish", str(ws.path), "nope"])
    assert res.exit_code == 2 and "no run named 'nope'" in res.output and "one, two" in res.output


def test_a_failed_first_run_leaves_no_workspace_behind(tmp_path: Path) -> None:
    data = write_csv(tmp_path / "in.csv", users_per_topic=2)
    res = CliRunner().invoke(app, ["segment", str(data), "--user-column", "nope", "--text-column", "text",
                                   "--out", str(tmp_path / "new")])  # fmt: skip
    assert res.exit_code == 2 and "nope" in res.output
    assert not (tmp_path / "new").exists()
    (tmp_path / "empty").mkdir()
    res = CliRunner().invoke(app, ["segment", str(data), "--user-column", "nope", "--text-column", "text",
                                   "--out", str(tmp_path / "empty")])  # fmt: skip
    assert res.exit_code == 2 and (tmp_path / "empty").is_dir() and not any((tmp_path / "empty").iterdir())
