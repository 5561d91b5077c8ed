"""Forget, then old data again: a forgotten user never comes back through `build` or `segment` into the
workspace, and nothing a run derived from their words (segment keywords and every copy of them) is left.

One workspace, built once for the module from the store-test topics plus two coffee customers who write
a made-up word ("zorblaxian") that becomes a keyword; personas from the scripted server.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from typer.testing import CliRunner

from persona_llm import workflows
from persona_llm.cli import app
from persona_llm.llm.client import LLMSettings
from persona_llm.runs.rundir import RunDir
from persona_llm.runs.workspace import Workspace, drop_forgotten_users, resolve_run, user_hash
from persona_llm.schema.frames import empty_rejects
from persona_llm.segment.describe import segment_keywords, terms_in_use
from persona_llm.segment.embed import EmbeddingCache
from tests.fake_openai import FakeOpenAIServer
from tests.run_store_data import customer_texts
from tests.test_run_store import persona_reply

WORD = "zorblaxian"
#: The two customers `forget` removes; only they write WORD, so it is a keyword (two users) until they go.
GONE = ("zorb-0001", "zorb-0002")
CLI_COLUMNS = ["--user-column", "user_id", "--text-column", "text"]
#: What each of them writes (their own sentences: the cleaner drops a text another user wrote too).
THEIR_TEXTS = {
    GONE[0]: [
        f"my {WORD} grinder makes a terrible noise every morning",
        f"the {WORD} beans taste of berries and chocolate",
        f"I weigh every dose for the {WORD} espresso machine",
        f"the {WORD} portafilter handle got loose after a year",
    ],
    GONE[1]: [
        f"the {WORD} grinder is loud every morning before work",
        f"my {WORD} espresso machine heats up slowly",
        f"I weigh each {WORD} dose of coffee twice",
        f"milk frothing with the {WORD} machine is hard for me",
    ],
}


def data_with_word(path: Path) -> Path:
    rows = customer_texts(users_per_topic=20)
    theirs = [
        {"user_id": user, "text": text, "topic": "coffee", "plan": "plus"} for user, texts in THEIR_TEXTS.items() for text in texts
    ]
    pd.concat([rows, pd.DataFrame(theirs)], ignore_index=True).to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The workspace as built (read-only: tests copy it), its data, and the cache it was built with."""
    base = tmp_path_factory.mktemp("forget-build")
    data = data_with_word(base / "data.csv")
    with pytest.MonkeyPatch.context() as mp, FakeOpenAIServer(default=persona_reply("First")) as server:
        mp.setenv("PERSONA_LLM_CACHE_DIR", str(base / "cache"))
        settings = LLMSettings(backend="openai", base_url=server.base_url, model="fake-model", cache_dir=base / "cache" / "llm-responses")
        workflows.build(
            data, base / "ws", columns=workflows.column_map(workflows.Config(), user="user_id", text="text"),
            settings=settings,
        )  # fmt: skip
    return {"ws": base / "ws", "data": data}


def grep(text: str, *where: Path) -> list[str]:
    found = subprocess.run(["grep", "-rilF", text, *map(str, where)], capture_output=True, text=True)
    return found.stdout.split()


def test_forget_recomputes_keywords_and_a_later_build_or_segment_of_old_data_leaves_them_out(
    built: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    monkeypatch.setenv("PERSONA_LLM_CACHE_DIR", str(cache))
    ws = tmp_path / "ws"
    import shutil

    shutil.copytree(built["ws"], ws, symlinks=True)
    run = resolve_run(ws)
    # The build found the word: a keyword of the coffee segment, copied into its persona and the store.
    holder = next(s for s in run.load_segments().segments if WORD in {k.term for k in s.keywords})
    params = run.load_manifest().parameters
    # The recomputation rule is the describe stage's own: on the run's own texts it gives the run's keywords.
    again = segment_keywords(run.load_texts(), int(params["n_keywords"]))
    assert {s.segment_id: [k.term for k in s.keywords] for s in run.load_segments().segments} == {
        s: [k.term for k in kws] for s, kws in again.items()
    }
    assert any(WORD in p.keywords for p in run.load_personas() if p.segment_id == holder.segment_id)
    assert grep(WORD, ws)  # the check finds it where it is (segments.json, personas, report, store)

    res = CliRunner().invoke(app, ["forget", str(ws), "--user", GONE[0], "--user", GONE[1], "--json"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert report["users_found"] == 2 and report["keywords_dropped"] >= 1 and report["segments_rekeyworded"] >= 1
    assert WORD not in res.stdout  # the report counts their words, it does not repeat them
    assert grep(WORD, ws) == []
    after = resolve_run(ws)
    seg = after.load_segments().get(holder.segment_id)
    assert len(seg.keywords) == len(holder.keywords)  # found again, not merely cut
    persona = next(p for p in after.load_personas() if p.segment_id == holder.segment_id)
    assert persona.keywords == [k.term for k in seg.keywords[:8]]

    # Old data that still holds them, built and segmented into the workspace again: they stay out.
    with FakeOpenAIServer(default=persona_reply("Second")) as server:
        res = CliRunner().invoke(
            app,
            ["build", str(built["data"]), "--out", str(ws), *CLI_COLUMNS, "--max-segments", "1", "--llm", "openai",
             "--llm-url", server.base_url, "--llm-model", "fake-model"],
        )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "of forgotten users 8 (skipped)" in " ".join(res.output.split())  # (rich wraps lines)
    res = CliRunner().invoke(app, ["segment", str(built["data"]), "--out", str(ws), *CLI_COLUMNS])
    assert res.exit_code == 0, res.output
    assert "of forgotten users 8 (skipped)" in " ".join(res.output.split())
    names = Workspace(ws).run_names()
    assert len(names) == 3
    for name in names[1:]:
        r = RunDir(ws / "runs" / name)
        m = r.load_manifest()
        assert m.rows.of_forgotten_users == 8 and m.rows.read == 188 and m.rows.kept + m.rows.rejected == 180
        assert not set(GONE) & set(r.load_assignments()["user_id"].astype(str))
    for text in (t for texts in THEIR_TEXTS.values() for t in texts):
        assert grep(text, ws, cache) == [], text
    assert grep(WORD, ws) == [] and grep(GONE[0], ws) == []
    # Not embedded, so not cached: the cache holds the others' vectors and none of theirs.
    model_id = RunDir(ws / "runs" / names[-1]).load_manifest().models["embedder"]
    theirs = pd.read_csv(built["data"]).query("user_id in @GONE")["text"].tolist()
    with EmbeddingCache(cache / "embeddings") as store:
        assert len(store) > 0
        assert store.get_many([EmbeddingCache.key(model_id, "passage", t) for t in theirs]) == {}


def test_the_forgotten_rule_drops_their_rows_and_their_rejects_and_counts_them() -> None:
    texts = pd.DataFrame({"user_id": ["a", "b", "a"], "text_id": ["1", "2", "3"], "text": ["x", "y", "z"]})
    rejects = pd.concat([empty_rejects(), pd.DataFrame({"user_id": ["a", None], "text": ["bad", "no user"]})])
    kept, kept_rejects, dropped = drop_forgotten_users(texts, rejects, frozenset({user_hash("a")}))
    assert kept["user_id"].tolist() == ["b"] and kept_rejects["text"].tolist() == ["no user"] and dropped == 3
    assert drop_forgotten_users(texts, rejects, frozenset())[2] == 0


def test_terms_in_use_needs_two_users_of_a_term() -> None:
    texts = ["the zorb grinder hums", "a zorb grinder again", "my zorb grinder", "plain words"]
    users = ["u1", "u1", "u2", "u3"]
    assert terms_in_use(texts, users, {"zorb grinder", "hums", "zorb", "absent"}) == {"zorb grinder", "zorb"}
