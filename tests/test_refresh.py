"""Refresh and forget on a real workspace (tests.conftest.persona_workspace: coffee, running and garden
users in five or six segments, personas for the three largest), with personas from the scripted server, whose
requests say which segments the model was asked about.

Matching, data merging and the quote gate also get fast unit tests on hand-made inputs.
"""

from __future__ import annotations

import json
import random
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from persona_llm.cli import app
from persona_llm.errors import WorkspaceLockedError
from persona_llm.llm.client import LLMSettings
from persona_llm.refresh import forget, refresh
from persona_llm.refresh.data import content_text_id, merge_new_data, run_cleaner
from persona_llm.refresh.lineage import verify_quotes
from persona_llm.refresh.matching import match_segments
from persona_llm.runs.rundir import RunDir
from persona_llm.runs.workspace import Workspace, resolve_run
from persona_llm.schema.columns import ColumnMap
from persona_llm.schema.personas import Persona, Quote
from tests.conftest import copy_workspace
from tests.fake_openai import FakeOpenAIServer
from tests.run_store_data import customer_texts, write_csv
from tests.test_run_store import ROOT, cli_env, persona_reply, tree_digest

COLUMNS = ColumnMap(user_column="user_id", text_column="text")
CLI_COLUMNS = ["--user-column", "user_id", "--text-column", "text"]

#: A fourth topic, in words of our own, that none of the workspace's segments is about.
BAKING = [
    "the sourdough starter doubled overnight on the counter", "my bread crust burns before the inside is baked",
    "rye flour makes the dough sticky and heavy", "the oven thermometer shows twenty degrees too hot",
    "I proof the loaves in baskets lined with linen", "croissant lamination takes me a whole weekend",
    "the stand mixer struggles with stiff bagel dough", "a baking stone gives the pizza a crisp base",
    "my cakes sink in the middle when I open the oven door", "whole wheat loaves need more water than white ones",
    "scoring the dough with a razor blade is tricky", "the bakery flour sold out at the mill again",
]  # fmt: skip


def baking_texts(n_users: int, seed: int = 0) -> pd.DataFrame:
    rng = random.Random(seed)
    rows = []
    for u in range(n_users):
        for k in range(3):
            a, b = rng.sample(BAKING, 2)
            text = f"{a.capitalize()}, and {b}. I have been at it for {rng.randint(2, 30)} years (note {k})."
            rows.append({"user_id": f"baking-{u:04d}", "text": text, "topic": "baking", "plan": "basic"})
    return pd.DataFrame(rows)


def segment_of_request(request: dict[str, Any]) -> int:
    user = next(m["content"] for m in request["messages"] if m["role"] == "user")
    return int(re.search(r"Segment (\d+) of", user).group(1))  # type: ignore[union-attr]


@pytest.fixture()
def ws(persona_workspace: Path, tmp_path: Path) -> Path:
    return copy_workspace(persona_workspace, tmp_path / "ws")


@pytest.fixture()
def server() -> Any:
    with FakeOpenAIServer(default=persona_reply("Second")) as s:
        yield s


def settings_for(server: FakeOpenAIServer, tmp_path: Path) -> LLMSettings:
    return LLMSettings(backend="openai", base_url=server.base_url, model="fake-model", cache_dir=tmp_path / "llm-cache")


def run_texts_csv(run: RunDir, path: Path, drop_users: set[str] | frozenset[str] = frozenset()) -> Path:
    """The run's own (cleaned) texts as a snapshot file with a text id column: nothing in it is new."""
    texts = run.load_texts()
    texts = texts[~texts["user_id"].isin(drop_users)]
    texts[["text_id", "user_id", "text", "plan"]].to_csv(path, index=False)
    return path


def segment_users(run: RunDir, segment_id: int) -> list[str]:
    a = run.load_assignments()
    return sorted(a.loc[a["segment_id"] == segment_id, "user_id"].astype(str))


# -- the refresh workflow ------------------------------------------------------------------------------


def test_new_users_of_known_topics_keep_every_persona_with_no_model_call(
    ws: Path, tmp_path: Path, server: FakeOpenAIServer
) -> None:
    before = resolve_run(ws)
    personas_before = {p.segment_id: p for p in before.load_personas()}
    new = customer_texts(users_per_topic=2, seed=5)
    new["user_id"] = "new-" + new["user_id"]
    data = tmp_path / "new.csv"
    new.to_csv(data, index=False)
    flags = ["--llm", "openai", "--llm-url", server.base_url, "--llm-model", "fake-model"]
    res = CliRunner().invoke(app, ["refresh", str(ws), str(data), *CLI_COLUMNS, *flags, "--json", "--quiet"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout.strip().splitlines()[-1])  # one JSON line
    assert summary["status"] == "published" and summary["mode"] == "assign" and summary["users_added"] == 6
    assert summary["llm_calls"] == 0 and not server.requests  # no segment changed enough to rewrite its persona
    run = resolve_run(ws)
    assert run.path != before.path
    after = {p.segment_id: p for p in run.load_personas()}
    assert {s: (p.persona_id, p.version) for s, p in after.items()} == {
        s: (p.persona_id, 1) for s, p in personas_before.items()
    }
    assert all(p.run_id == run.run_id for p in after.values())
    assert sum(after[s].user_count for s in after) > sum(personas_before[s].user_count for s in after)
    diff = run.load_refresh_diff()
    assert diff is not None and {p.action for p in diff.personas} == {"kept"}
    assert sum(c.joined for c in diff.segments) == 6 - diff.drift.unassigned_new_users  # type: ignore[union-attr]
    assert 'id="refresh"' in run.file("report.html").read_text() and "## Segments" in run.file("refresh.md").read_text()
    assert set(run.load_assignments()["user_id"]) >= set(new["user_id"]) - set()  # every new user is in the run
    # The same data again: nothing changed (exit 3), nothing written.
    names = Workspace(ws).run_names()
    res = CliRunner().invoke(app, ["refresh", str(ws), str(data), *CLI_COLUMNS, *flags, "--json", "--quiet"])
    assert res.exit_code == 3 and json.loads(res.stdout)["status"] == "unchanged"
    assert Workspace(ws).run_names() == names
    # rollback goes back one version
    res = CliRunner().invoke(app, ["rollback", str(ws)])
    assert res.exit_code == 0 and resolve_run(ws).path == before.path


def test_a_changed_segment_gets_a_new_version_of_its_persona_and_only_it_costs_model_calls(
    ws: Path, tmp_path: Path, server: FakeOpenAIServer
) -> None:
    before = resolve_run(ws)
    old = {p.segment_id: p for p in before.load_personas()}
    leaving = set(segment_users(before, 0)[:5])  # 5 of 13: churn 38%, over the 20% threshold
    quoted = {q.user_id for q in old[0].quotes}
    data = run_texts_csv(before, tmp_path / "snapshot.csv", leaving)
    result = refresh(
        ws, data, columns=ColumnMap(user_column="user_id", text_column="text", id_column="text_id"), snapshot=True,
        settings=settings_for(server, tmp_path), mode="assign",
    )  # fmt: skip
    assert result.status == "published" and result.exit_code == 0
    assert server.requests and {segment_of_request(r) for r in server.requests} == {0}  # only the changed one
    assert result.diff.llm_calls == len(server.requests)
    run = resolve_run(ws)
    now = {p.segment_id: p for p in run.load_personas()}
    assert now[0].persona_id == old[0].persona_id and now[0].version == 2 and now[0].name == "Second 0"
    assert [(now[s].persona_id, now[s].version, now[s].name) for s in (1, 2)] == [
        (old[s].persona_id, 1, old[s].name) for s in (1, 2)
    ]
    history = run.load_persona_history()
    assert [(v.persona.persona_id, v.persona.version, v.reason) for v in history] == [(old[0].persona_id, 1, "regenerated")]
    assert history[0].replaced_in_run == run.run_id and history[0].persona.name == old[0].name
    assert not leaving & set(run.load_assignments()["user_id"])  # the snapshot removed them
    change = {p.segment_id: p for p in result.diff.personas}
    assert change[0].action == "regenerated" and "name" in change[0].fields_changed
    if quoted & leaving:
        assert change[0].quotes_removed
    assert result.diff.data.users_removed == 5 and result.diff.data.texts_embedded == 0


def test_a_refresh_regenerates_with_the_agent_that_wrote_the_run(tmp_path: Path, server: FakeOpenAIServer) -> None:
    """Built with --agent persona_writer_hints, a refresh writes its regenerated persona with that agent
    too (from the parent personas' provenance), not with the default one."""
    ws = tmp_path / "ws"
    flags = ["--llm", "openai", "--llm-url", server.base_url, "--llm-model", "fake-model"]
    res = CliRunner().invoke(app, [
        "build", str(write_csv(tmp_path / "small.csv")), "--out", str(ws), *CLI_COLUMNS, *flags,
        "--max-segments", "3", "--agent", "persona_writer_hints", "--quiet",
    ])  # fmt: skip
    assert res.exit_code == 0, res.output
    before = resolve_run(ws)
    assert {p.provenance.agent for p in before.load_personas()} == {"persona_writer_hints"}
    assert all("demographic_hints" in r["response_format"]["json_schema"]["schema"]["properties"] for r in server.requests)
    server.requests.clear()
    leaving = set(segment_users(before, 0)[:5])  # 5 of 13: over the 20% churn threshold
    result = refresh(
        ws, run_texts_csv(before, tmp_path / "snapshot.csv", leaving),
        columns=ColumnMap(user_column="user_id", text_column="text", id_column="text_id"), snapshot=True,
        settings=settings_for(server, tmp_path), mode="assign",
    )  # fmt: skip
    assert result.status == "published" and server.requests
    schema = server.requests[0]["response_format"]["json_schema"]["schema"]
    assert "demographic_hints" in schema["properties"] and "demographics" not in schema["properties"]
    regenerated = {p.segment_id: p for p in resolve_run(ws).load_personas()}[0]
    assert regenerated.version == 2 and regenerated.provenance.agent == "persona_writer_hints"


def test_a_new_topic_is_an_emerging_segment_and_auto_reclusters_it_into_a_new_id(
    ws: Path, tmp_path: Path, server: FakeOpenAIServer
) -> None:
    before = resolve_run(ws)
    old = {p.segment_id: p for p in before.load_personas()}
    data = tmp_path / "baking.csv"
    baking_texts(12).to_csv(data, index=False)
    result = refresh(ws, data, columns=COLUMNS, settings=settings_for(server, tmp_path))
    drift = result.diff.drift
    assert drift is not None and drift.unassigned_share == 1.0 and drift.emerging
    words = {w for k in drift.emerging[0].keywords for w in k.split()}
    assert words and words <= set(" ".join(BAKING).lower().split()), words  # what the new users write about
    assert result.status == "published" and result.diff.mode_used == "recluster"
    added = [c for c in result.diff.segments if c.status == "added"]
    old_ids = {s.segment_id for s in before.load_segments().segments}
    new_id = max(old_ids) + 1
    assert [c.segment_id for c in added] == [new_id] and added[0].size_after == 12  # never a reused id
    kept = {c.segment_id for c in result.diff.segments if c.status == "kept"}
    assert kept == old_ids
    run = resolve_run(ws)
    now = {p.segment_id: p for p in run.load_personas()}
    assert {s: now[s].persona_id for s in old} == {s: p.persona_id for s, p in old.items()}
    assert {segment_of_request(r) for r in server.requests} == {new_id}  # the model wrote the new persona only
    assert now[new_id].version == 1 and now[new_id].persona_id not in {p.persona_id for p in old.values()}
    lineage = run.load_persona_lineage()
    assert lineage.next_segment_id == new_id + 1 and lineage.segments[new_id].persona_id == now[new_id].persona_id


def test_assign_that_places_no_new_user_fails_its_gate_and_the_published_run_stays(
    ws: Path, tmp_path: Path, server: FakeOpenAIServer
) -> None:
    published = resolve_run(ws)
    digest = tree_digest(published.path)
    data = tmp_path / "baking.csv"
    baking_texts(12).to_csv(data, index=False)
    result = refresh(ws, data, columns=COLUMNS, mode="assign", settings=settings_for(server, tmp_path))
    assert result.status == "gate_failed" and result.exit_code == 4
    failed = {g.name for g in result.diff.gates_failed()}
    assert "new_users_placed" in failed and "new_users_placed" in result.diff.reason
    assert resolve_run(ws).path == published.path and tree_digest(published.path) == digest
    assert result.run is not None and result.run.path.is_dir()  # kept unpublished, with its report
    assert result.run.load_refresh_diff().status == "gate_failed"  # type: ignore[union-attr]


def test_a_persona_the_model_cannot_write_fails_the_gate(ws: Path, tmp_path: Path) -> None:
    published = resolve_run(ws)
    data = run_texts_csv(published, tmp_path / "snapshot.csv", set(segment_users(published, 0)[:5]))
    with FakeOpenAIServer(default={"content": "not json at all"}) as bad:
        result = refresh(
            ws, data, columns=ColumnMap(user_column="user_id", text_column="text", id_column="text_id"),
            snapshot=True, mode="assign", settings=settings_for(bad, tmp_path),
        )  # fmt: skip
    assert result.status == "gate_failed"
    assert [g.name for g in result.diff.gates_failed()] == ["personas_written"]
    assert [p.action for p in result.diff.personas if p.segment_id == 0] == ["failed"]
    assert resolve_run(ws).path == published.path


def test_recluster_of_the_same_data_keeps_every_segment_and_persona_id(persona_workspace: Path, tmp_path: Path) -> None:
    ws = copy_workspace(persona_workspace, tmp_path / "ws")
    digest = tree_digest(ws)
    result = refresh(ws, persona_workspace.parent / "small.csv", columns=COLUMNS, mode="recluster")
    assert result.status == "unchanged" and result.exit_code == 3 and result.diff.mode_used == "recluster"
    assert result.diff.segments and all(c.status == "kept" and c.churn == 0 for c in result.diff.segments)
    assert all(c.match_score is not None and c.match_score > 0.9 for c in result.diff.segments)
    assert {p.action for p in result.diff.personas} == {"kept"}
    assert tree_digest(ws) == digest  # nothing written


def test_dry_run_prints_the_diff_and_writes_nothing(ws: Path, tmp_path: Path) -> None:
    digest = tree_digest(ws)
    new_id = max(s.segment_id for s in resolve_run(ws).load_segments().segments) + 1
    data = tmp_path / "baking.csv"
    baking_texts(12).to_csv(data, index=False)
    res = CliRunner().invoke(app, ["refresh", str(ws), str(data), *CLI_COLUMNS, "--dry-run", "--mode", "recluster"])
    assert res.exit_code == 0, res.output
    assert "# Refresh of" in res.stdout and f"| {new_id} | added |" in res.stdout and "dry_run" in res.output
    assert tree_digest(ws) == digest


def test_bad_input_is_exit_2_in_one_line(ws: Path, tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["refresh", str(ws), str(tmp_path / "none.csv"), *CLI_COLUMNS])
    assert res.exit_code == 2 and "not found" in res.output
    data = tmp_path / "x.csv"
    baking_texts(2).to_csv(data, index=False)
    res = CliRunner().invoke(app, ["refresh", str(ws), str(data), "--user-column", "who", "--text-column", "text"])
    assert res.exit_code == 2 and "who" in res.output
    res = CliRunner().invoke(app, ["refresh", str(ws), str(data), *CLI_COLUMNS, "--mode", "sometimes"])
    assert res.exit_code == 2 and "mode" in res.output


def test_a_locked_workspace_exits_5(ws: Path, tmp_path: Path) -> None:
    code = (
        "import sys, time\nfrom persona_llm.runs.workspace import Workspace\n"
        "with Workspace(sys.argv[1]).lock():\n    print('locked', flush=True)\n    time.sleep(60)\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", code, str(ws)], stdout=subprocess.PIPE, text=True, env=cli_env(tmp_path), cwd=ROOT)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        data = tmp_path / "x.csv"
        baking_texts(2).to_csv(data, index=False)
        res = CliRunner().invoke(app, ["refresh", str(ws), str(data), *CLI_COLUMNS, "--json"])
        assert res.exit_code == 5 and f"locked by pid {holder.pid}" in res.output
        assert json.loads(res.stdout.splitlines()[0])["status"] == "locked"
        res = CliRunner().invoke(app, ["forget", str(ws), "--user", "coffee-0001"])
        assert res.exit_code == 5
        with pytest.raises(WorkspaceLockedError):
            forget(ws, ["coffee-0001"])
    finally:
        holder.kill()
        holder.wait()


# -- forget --------------------------------------------------------------------------------------------


def test_forget_leaves_no_trace_of_the_user_and_a_refresh_of_old_data_does_not_bring_them_back(
    persona_workspace: Path, ws: Path, tmp_path: Path, server: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    monkeypatch.setenv("PERSONA_LLM_CACHE_DIR", str(cache))
    run = resolve_run(ws)
    persona = run.load_personas()[0]
    user = persona.quotes[0].user_id
    # A second run that holds them too: a refresh that embeds their new text into the (test's) cache.
    extra = pd.DataFrame([{"user_id": user, "text": "My grinder makes a terrible noise and the beans taste burnt to me.", "topic": "coffee", "plan": "plus"}])
    extra.to_csv(tmp_path / "extra.csv", index=False)
    first = refresh(ws, tmp_path / "extra.csv", columns=COLUMNS, mode="assign", settings=settings_for(server, tmp_path))
    assert first.status == "published" and first.diff.data.texts_embedded == 1
    texts = pd.concat([RunDir(p).load_texts() for p in (ws / "runs").iterdir()])
    theirs = sorted(set(texts.loc[texts["user_id"] == user, "text"]))
    assert len(theirs) >= 2

    def grep(text: str) -> list[str]:
        found = subprocess.run(["grep", "-rlF", text, str(ws), str(cache), str(tmp_path / "llm-cache")], capture_output=True, text=True)
        return found.stdout.split()

    assert grep(persona.quotes[0].text)  # the check finds what is there (personas.json, report, store...)
    res = CliRunner().invoke(app, ["forget", str(ws), "--user", user, "--json"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert report["users_found"] == 1 and len(report["runs_rewritten"]) == 2 and report["cached_vectors_removed"] >= 1
    for text in theirs:  # (whole texts: their phrases are shared with other users of the topic)
        assert grep(text) == [], text
    for name in Workspace(ws).run_names():
        r = RunDir(ws / "runs" / name)
        assert user not in set(r.load_texts()["user_id"]) and user not in set(r.load_assignments()["user_id"])
        assert len(r.load_text_embeddings()) == len(r.load_texts()) and len(r.load_user_embeddings()) == len(r.load_assignments())
        flagged = next(p for p in r.load_personas() if p.persona_id == persona.persona_id)
        assert all(q.user_id != user for q in flagged.quotes)
        assert any("forgotten" in w for w in flagged.provenance.warnings)  # re-verified and flagged
        assert not verify_quotes(r.load_personas(), _index(r))
        for rep in (s.representatives for s in r.load_segments().segments):
            assert all(x.user_id != user for x in rep)
    # Old data that still holds them: they stay out.
    again = refresh(ws, persona_workspace.parent / "small.csv", columns=COLUMNS, mode="assign", settings=settings_for(server, tmp_path))
    assert again.diff.data.rows_of_forgotten_users >= 2
    assert user not in set(resolve_run(ws).load_assignments()["user_id"])
    assert not any(user in json.dumps(row) for row in resolve_run(ws).load_rejects().to_dict("records"))
    for text in theirs:  # that refresh read their rows: nothing of them reached its files either
        assert grep(text) == [], text
    # The rebuilt and cleared stores still answer.
    from persona_llm.segment.store import TEXTS, ChromaStore, store_for_run

    for name in Workspace(ws).run_names():
        r = RunDir(ws / "runs" / name)
        store = store_for_run(r)
        assert isinstance(store, ChromaStore)
        hits = store.query_texts(r.load_text_embeddings()[0], r.run_id, n_results=3)
        assert store.count(TEXTS, r.run_id) > 0 and len(hits) == 3 and all(h["user_id"] != user for h in hits)
        store.close()


def _index(run: RunDir) -> Any:
    from persona_llm.personas.gates import TextIndex

    return TextIndex.from_frame(run.load_texts())


# -- units ---------------------------------------------------------------------------------------------


def _unit(v: list[float]) -> np.ndarray:
    a = np.asarray(v, dtype=np.float32)
    return a / np.linalg.norm(a)


def test_matching_keeps_ids_and_records_splits_merges_and_retirements() -> None:
    a, b, c, d = (set(f"{p}{i}" for i in range(10)) for p in "abcd")
    old = {0: a, 1: b | c, 2: d}
    cent = {0: _unit([1, 0, 0, 0]), 1: _unit([0, 1, 1, 0]), 2: _unit([0, 0, 0, 1])}
    # new clustering (its own labels): a unchanged, b and c split apart, d gone into a
    new = {7: a | d, 8: b, 9: c}
    new_cent = {7: _unit([1, 0, 0, 0.5]), 8: _unit([0, 1, 0, 0]), 9: _unit([0, 0, 1, 0])}
    m = match_segments(old, cent, new, new_cent, next_segment_id=3)
    assert m.mapping[7] == 0 and {m.mapping[8], m.mapping[9]} == {1, 3}  # one half keeps id 1, the other is new
    assert m.retired == [2] and m.merged_into == {2: 0} and m.merges[0].segment_ids == [0, 2]
    assert m.splits[0].segment_id == 1 and sorted(m.splits[0].into) == [1, 3] and m.split_from == {3: 1}
    assert m.next_segment_id == 4 and m.added == [3]


def test_matching_refuses_a_pair_with_close_centroids_and_no_member_in_common() -> None:
    a, b = {"a1", "a2", "a3"}, {"b1", "b2", "b3"}
    m = match_segments({0: a}, {0: _unit([1, 0.1])}, {5: b}, {5: _unit([1, 0])}, next_segment_id=4)
    assert m.mapping == {5: 4} and m.retired == [0]  # score 0.5 * 0.99 + 0.5 * 0: no match


def test_new_rows_are_merged_added_changed_present_duplicate_or_forgotten(persona_workspace: Path, tmp_path: Path) -> None:
    run = resolve_run(persona_workspace)
    texts = run.load_texts()
    first, second, third = texts.iloc[0], texts.iloc[1], texts.iloc[2]
    rows = [
        {"id": first["text_id"], "user_id": first["user_id"], "text": first["text"]},  # present
        {"id": second["text_id"], "user_id": second["user_id"], "text": "A different text now, about a kettle that whistles."},  # changed
        {"id": "x1", "user_id": "someone-new", "text": third["text"]},  # another user's text: duplicate
        {"id": "x2", "user_id": "someone-new", "text": "The kettle whistles so loudly that it wakes the whole house up."},  # added
        {"id": "x3", "user_id": "forgotten-one", "text": "A secret sentence that must never be stored anywhere at all."},
    ]
    path = tmp_path / "rows.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    from persona_llm.runs.workspace import user_hash

    merged = merge_new_data(
        run, path, ColumnMap(user_column="user_id", text_column="text", id_column="id"), snapshot=False,
        cleaner=run_cleaner(run), forgotten=frozenset({user_hash("forgotten-one")}),
    )  # fmt: skip
    c = merged.change
    assert (c.already_present, c.texts_changed, c.duplicates_dropped, c.texts_added, c.rows_of_forgotten_users) == (1, 1, 1, 1, 1)
    assert c.texts_removed == 0 and merged.users_added == {"someone-new"} and merged.users_changed == {second["user_id"]}
    assert len(merged.texts) == len(texts) + 1  # one changed (replaced), one added
    assert "secret sentence" not in merged.rejects.to_csv() and "secret sentence" not in merged.texts.to_csv()
    assert "duplicate" in " ".join(merged.rejects["reason"].astype(str))
    # a snapshot of the same rows removes every text of the run it does not hold
    snap = merge_new_data(run, path, ColumnMap(user_column="user_id", text_column="text", id_column="id"),
                          snapshot=True, cleaner=run_cleaner(run))  # fmt: skip
    assert snap.change.texts_removed == len(texts) - 2 and len(snap.texts) == 1 + 1 + 1 + 1  # present, changed, added, x3
    # without an id column, new ids come from the content
    assert content_text_id("u", "t") == content_text_id("u", "t") != content_text_id("v", "t")


def test_the_quote_gate_catches_a_quote_that_is_not_in_its_segment(persona_workspace: Path) -> None:
    run = resolve_run(persona_workspace)
    persona = run.load_personas()[0]
    assert verify_quotes([persona], _index(run)) == []
    bad = persona.model_copy(update={"quotes": [Quote(text_id=persona.quotes[0].text_id, user_id="u", text="words that nobody wrote here")]})
    assert len(verify_quotes([bad], _index(run))) == 1


def test_personas_written_before_versions_load_as_version_1(persona_workspace: Path) -> None:
    data = resolve_run(persona_workspace).load_personas()[0].model_dump(mode="json")
    del data["version"]
    assert Persona.model_validate(data).version == 1


def test_a_run_rewrite_replaces_the_run_whole_or_not_at_all(ws: Path) -> None:
    workspace = Workspace(ws)
    name = workspace.current_name()
    assert name is not None
    before = tree_digest(ws / "runs" / name)
    with workspace.lock():
        with pytest.raises(RuntimeError, match="half way"), workspace.rewrite_run(name) as copy:
            copy.save_text("personas.md", "half-written")
            raise RuntimeError("failed half way")
        assert tree_digest(ws / "runs" / name) == before
        with workspace.rewrite_run(name) as copy:
            copy.save_text("personas.md", "rewritten")
    assert (ws / "runs" / name / "personas.md").read_text() == "rewritten"
    assert not (ws / "runs" / name / "chroma").exists()  # the block writes the store it wants; none here
    assert not [p for p in (ws / "runs").iterdir() if p.name.startswith(".")]  # no copy left behind
