"""Refresh vs full rebuild on the whole 20 Newsgroups file, side by side in one run.

    python bench/bench_refresh.py [--cases users,posts] [--kill] [--work DIR]
    python bench/bench_refresh.py --llm embedded [--llm-model NAME] [--max-personas N] [--work DIR]

Two cases, each built with segments AND a persona for every segment, then brought up to date two ways:
  users   build on 90% of the users (a salted hash of the user id), then refresh with the other 10%;
  posts   build on 90% of the posts of users with 2+ posts (10% of their posts held out, every user kept),
          then refresh with the held-out posts (new posts by existing users).
For each case:
  - `persona-llm refresh` (mode auto) of the 90% workspace with the new data, timed;
  - a full rebuild (`persona-llm build`) on all the data, timed, starting from the same embedding cache
    the refresh started from (both embed exactly the new texts once; a cold cache would make the rebuild
    look 10x worse than it is);
  - refresh wall time as a share of the rebuild's (target <= 15%), persona id retention for segments whose
    membership changed < 20% (target >= 90%), model calls made and for which segments, ARI of the refreshed
    segmentation vs the rebuild's (over the users both hold, unassigned users as one group), and each
    against the users' main newsgroup;
  - `recluster` id stability: refresh --mode recluster of the refreshed workspace (ids matched to its
    segments), then the same again on the same data (target: identical ids, nothing to publish).
`--kill`: SIGKILL a refresh during embedding, persona writing and publishing (CLI subprocesses); each
time the published run must be unchanged (tree digest) and the next refresh must complete.

Personas come from the scripted OpenAI-compatible server of the tests (tests/fake_openai.py: it quotes
the segment's first texts), so calls and ids are counted exactly while no time goes to a model. With the
real model (about 120 s per persona on this 2-core CPU, bench/results/2026-11-30-personas.md) a rebuild
writes every persona again and a refresh only the changed ones: the time share printed for that is an
estimate from the measured call counts, said as such.

`--llm embedded` (or another backend) measures that instead, with the real model, on a small case: the
20 Newsgroups slice of the CI suite (evals/suites/ci.toml: 100 users, 5-8 posts each). Build with personas
on 90% of the users; then, from the same embedding cache with the new texts' vectors evicted, refresh
(auto) with the other 10% and a full rebuild (segments and every persona) of all users, both timed, with
one model server for both (its start is in neither time) and the response cache off (no reply may come
from a cache: checked). Printed: wall times and their share, model calls (re-asks included) and model
seconds, persona ids kept, ARI refresh vs rebuild, the CPU and the load average before and after.
`--max-personas N` writes personas for the N largest segments only, in the build and in the rebuild alike
(as the CI suite does, max_personas = 3, to bound the embedded model's time on 2 cores); the refresh then
regenerates those of them whose segment changed.
`--data whole` runs the real-model case on the whole 20NG file (the users case: 10% of the users new).
`--scripted-base` writes the 90% build's personas with the scripted server: that build is not timed, and
what a refresh does with a persona (keep it, or regenerate it with the real model) depends on its
segment's membership churn, not on its words; it saves the ~40 minutes the real model would spend on
25 personas nobody times. `--seed-embeddings DIR` starts the base build's embedding cache from DIR (for
the same reason); the refresh and the rebuild still each embed the new texts, evicted from their caches.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
sys.path.insert(0, str(ROOT))

from persona_llm import workflows  # noqa: E402
from persona_llm.errors import RunNotPublishedError  # noqa: E402
from persona_llm.evaluation.metrics import score_labels  # noqa: E402
from persona_llm.llm.client import LLMSettings  # noqa: E402
from persona_llm.refresh import refresh  # noqa: E402
from persona_llm.runs.rundir import LLM_CALLS  # noqa: E402
from persona_llm.runs.workspace import Workspace, resolve_run  # noqa: E402
from persona_llm.schema.columns import ColumnMap  # noqa: E402
from persona_llm.schema.manifest import cpu_description, peak_rss_mb  # noqa: E402
from tests.fake_openai import FakeOpenAIServer  # noqa: E402
from tests.test_run_store import persona_reply, tree_digest  # noqa: E402

console = Console()
COLUMNS = ColumnMap(user_column="user_id", text_column="body", id_column="doc_id", attribute_columns=[])
REAL_MODEL_S_PER_PERSONA = 120.0  # measured median, bench/results/2026-11-30-personas.md


def in_sample(user: str, share: float, salt: str) -> bool:
    digest = hashlib.sha256(f"{salt}\0{user}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < share


def split_users(df: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    new = df["user_id"].map(lambda u: in_sample(str(u), 0.10, "bench-refresh-users"))
    return df[~new], df[new]


def split_posts(df: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """10% of the posts of users with 2+ posts held out; at least one post of each user stays."""
    posts = df.groupby("user_id")["doc_id"].transform("count")
    held = df["doc_id"].map(lambda d: in_sample(str(d), 0.10, "bench-refresh-posts")) & (posts >= 2)
    first = ~df.duplicated("user_id")  # every user keeps their first post in the build
    held &= ~first
    return df[~held], df[held]


def settings_for(server: FakeOpenAIServer, cache: Path) -> LLMSettings:
    return LLMSettings(backend="openai", base_url=server.base_url, model="fake-model", cache_dir=cache)


def labels_of(run: Any) -> pd.Series:
    a = run.load_assignments()
    return pd.Series(a["segment_id"].to_numpy(), index=a["user_id"].astype(str))


def ari(a: pd.Series, b: pd.Series) -> float:
    from sklearn.metrics import adjusted_rand_score

    common = a.index.intersection(b.index)
    return float(adjusted_rand_score(a.loc[common].to_numpy(), b.loc[common].to_numpy()))


def segment_of(request: dict[str, Any]) -> int:
    """Which segment a persona request is about (the prompt says "Segment N of M")."""
    user = next(m["content"] for m in request["messages"] if m["role"] == "user")
    return int(re.search(r"Segment (\d+) of", user).group(1))  # type: ignore[union-attr]


def with_cache(cache: Path) -> None:
    os.environ["PERSONA_LLM_CACHE_DIR"] = str(cache)


def evict(cache: Path, model_id: str, bodies: pd.Series) -> int:
    """Remove the vectors of these texts (as the cleaner leaves them) from an embedding cache."""
    from persona_llm.segment.clean import TextCleaner
    from persona_llm.segment.embed import EmbeddingCache

    cleaner = TextCleaner()
    cleaned = [cleaner.clean_text(str(b))[0] for b in bodies]
    keys = [EmbeddingCache.key(model_id, "passage", t) for t in cleaned if t]
    with EmbeddingCache(cache / "embeddings") as store:
        return store.delete_many(keys)


def build(data: Path, out: Path, server: FakeOpenAIServer, llm_cache: Path) -> tuple[float, Any]:
    t0 = time.perf_counter()
    result = workflows.build(data, out, columns=COLUMNS, settings=settings_for(server, llm_cache))
    return time.perf_counter() - t0, result


def run_case(name: str, base: pd.DataFrame, new: pd.DataFrame, full: Path, truth: pd.Series, work: Path) -> dict[str, Any]:
    folder = work / name
    folder.mkdir(parents=True, exist_ok=True)
    base_csv, new_csv = folder / "base.csv", folder / "new.csv"
    base.to_csv(base_csv, index=False)
    new.to_csv(new_csv, index=False)
    for old in folder.glob("llm-*"):  # model replies cached by an earlier run would hide calls
        shutil.rmtree(old)
    cache = work / "cache-shared"  # builds of both cases share vectors (their texts overlap)
    with_cache(cache)
    with FakeOpenAIServer(default=persona_reply("Built")) as server:
        shutil.rmtree(folder / "ws", ignore_errors=True)
        shutil.rmtree(folder / "ws-rebuild", ignore_errors=True)
        seconds, built = build(base_csv, folder / "ws", server, folder / "llm-base")
        console.print(f"({name}) base build: {seconds:.0f} s, {len(built.personas)} personas, {len(server.requests)} calls")
    # Both the refresh and the rebuild start from this cache without the new texts' vectors (whatever an
    # earlier run left in it): each embeds exactly the new texts, once.
    parent = resolve_run(folder / "ws")
    refresh_cache, rebuild_cache = folder / "cache-refresh", folder / "cache-rebuild"
    for target in (refresh_cache, rebuild_cache):
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(cache, target)
        evicted = evict(target, parent.load_manifest().models["embedder"], new["body"])
    console.print(f"({name}) {evicted} vectors of new texts evicted from the caches the refresh and the rebuild start from")
    before_personas = {p.segment_id: p for p in parent.load_personas()}

    with_cache(refresh_cache)
    with FakeOpenAIServer(default=persona_reply("Refreshed")) as server:
        t0 = time.perf_counter()
        result = refresh(folder / "ws", new_csv, columns=COLUMNS, settings=settings_for(server, folder / "llm-refresh"))
        refresh_s = time.perf_counter() - t0
        asked = sorted({segment_of(r) for r in server.requests})
        calls = len(server.requests)
    console.print(f"({name}) refresh: {result.status} in {refresh_s:.1f} s, mode {result.diff.mode_used}, {calls} calls")
    with_cache(rebuild_cache)
    with FakeOpenAIServer(default=persona_reply("Rebuilt")) as server:
        rebuild_s, rebuilt = build(full, folder / "ws-rebuild", server, folder / "llm-rebuild")
        rebuild_calls = len(server.requests)
    console.print(f"({name}) full rebuild: {rebuild_s:.1f} s, {rebuild_calls} calls")

    refreshed = resolve_run(folder / "ws")
    after = {p.segment_id: p for p in refreshed.load_personas()}
    churn = {c.segment_id: c.churn for c in result.diff.segments}
    stable = [s for s in before_personas if s in churn and churn[s] < 0.2]
    kept_id = [s for s in stable if s in after and after[s].persona_id == before_personas[s].persona_id]
    unchanged = [s for s in kept_id if after[s].version == before_personas[s].version]
    changed_segments = sorted(c.segment_id for c in result.diff.segments if c.status in ("changed", "added"))
    rl, bl = labels_of(refreshed), labels_of(rebuilt.run)
    truth_scores = {k: score_labels(truth, v)["ari"] for k, v in (("refresh", rl), ("rebuild", bl))}

    # recluster id stability: a re-clustering matched to the refreshed run, then the same again
    with_cache(refresh_cache)
    with FakeOpenAIServer(default=persona_reply("Reclustered")) as server:
        t0 = time.perf_counter()
        first = refresh(folder / "ws", new_csv, columns=COLUMNS, mode="recluster", settings=settings_for(server, folder / "llm-rc1"))
        rc1_s, rc1_calls = time.perf_counter() - t0, len(server.requests)
    with FakeOpenAIServer(default=persona_reply("Reclustered2")) as server:
        second = refresh(folder / "ws", new_csv, columns=COLUMNS, mode="recluster", settings=settings_for(server, folder / "llm-rc2"))
        rc2_calls = len(server.requests)
    rc1 = first.diff
    matched = [c for c in rc1.segments if c.match_score is not None]
    before_rc = set(labels_of(refreshed).unique()) - {-1}
    rc2_ids = [c.segment_id for c in second.diff.segments if c.status == "kept"]
    return {
        "case": name,
        "base_build_s": round(seconds, 1),
        "users_before": result.diff.drift.users_before if result.diff.drift else None,
        "users_after": result.diff.drift.users_after if result.diff.drift else None,
        "texts_added": result.diff.data.texts_added,
        "texts_embedded_refresh": result.diff.data.texts_embedded,
        "refresh_status": result.status,
        "refresh_mode": result.diff.mode_used,
        "drift": result.diff.drift.model_dump() if result.diff.drift else None,
        "refresh_s": round(refresh_s, 2),
        "refresh_timings": result.diff.timings_s,
        "rebuild_s": round(rebuild_s, 2),
        "rebuild_timings": rebuilt.pipeline.manifest_.timings_s,
        "time_share": round(refresh_s / rebuild_s, 4),
        "refresh_embed_s": result.diff.timings_s.get("embed", 0.0),
        "rebuild_embed_s": rebuilt.pipeline.manifest_.timings_s.get("embed", 0.0),
        "time_share_without_embedding": round(
            (refresh_s - result.diff.timings_s.get("embed", 0.0)) / (rebuild_s - rebuilt.pipeline.manifest_.timings_s.get("embed", 0.0)), 4
        ),
        "segments_before": len(before_personas),
        "segments_stable": len(stable),
        "persona_ids_kept": len(kept_id),
        "personas_unchanged": len(unchanged),
        "retention": round(len(kept_id) / len(stable), 4) if stable else None,
        "llm_calls_refresh": calls,
        "llm_segments_asked": asked,
        "segments_changed_or_added": changed_segments,
        "llm_calls_rebuild": rebuild_calls,
        "personas_rebuild": len(rebuilt.personas),
        "ari_refresh_vs_rebuild": round(ari(rl, bl), 4),
        "ari_truth_refresh": round(truth_scores["refresh"], 4),
        "ari_truth_rebuild": round(truth_scores["rebuild"], 4),
        "segments_refresh": len(set(rl.unique()) - {-1}),
        "segments_rebuild": len(set(bl.unique()) - {-1}),
        "recluster_status": first.status,
        "recluster_s": round(rc1_s, 2),
        "recluster_calls": rc1_calls,
        "recluster_matched": len(matched),
        "recluster_segments_before": len(before_rc),
        "recluster_added": [c.segment_id for c in rc1.segments if c.status == "added"],
        "recluster_retired": [c.segment_id for c in rc1.segments if c.status == "retired"],
        "recluster_splits": [s.model_dump() for s in rc1.splits],
        "recluster_merges": [m.model_dump() for m in rc1.merges],
        "recluster_again_status": second.status,
        "recluster_again_calls": rc2_calls,
        "recluster_again_ids_kept": f"{len(rc2_ids)}/{len(second.diff.segments)}",
        "real_model_estimate_share": round(
            (refresh_s + calls * REAL_MODEL_S_PER_PERSONA) / (rebuild_s + rebuild_calls * REAL_MODEL_S_PER_PERSONA), 4
        ),
        "peak_rss_mb": peak_rss_mb(),
    }


def model_calls(records: list[dict[str, Any]]) -> tuple[int, float]:
    """Model calls (every attempt, as `CallRecord.to_dict()` rows) and their seconds; a reply from a cache
    is an error here (the timing would be a lie)."""
    cached = [r for r in records if r.get("cached")]
    if cached:
        raise RuntimeError(f"{len(cached)} model replies came from the response cache: the timing is not valid")
    return len(records), round(sum(float(r["seconds"]) for r in records), 1)


def writer_calls(writer: Any) -> tuple[int, float]:
    """`model_calls` of what a persona writer did in this process."""
    return model_calls([r.to_dict() for r in getattr(writer, "records_", None) or []])


def kept_run_calls(run_path: Path) -> tuple[int, float]:
    """`model_calls` of a run's own log (llm_calls.jsonl): a run left unpublished has no writer to ask."""
    lines = (run_path / LLM_CALLS).read_text(encoding="utf-8").splitlines()
    return model_calls([json.loads(line) for line in lines if line])


def real_model_case(
    work: Path,
    backend: str,
    model: str | None,
    threads: int | None,
    max_personas: int | None = None,
    data_set: str = "ci",
    scripted_base: bool = False,
    seed_embeddings: Path | None = None,
) -> dict[str, Any]:
    """Refresh vs full rebuild with the real model (module docstring): on the CI suite's 20 Newsgroups slice
    (`data_set` "ci") or the whole file ("whole")."""
    from persona_llm.evaluation.suite import load_dataset, load_suite, shared_data_dir
    from persona_llm.llm.client import open_chat_model

    if data_set == "whole":
        frame = pd.read_csv(SHARED / "20newsgroups" / "posts.csv.gz", dtype=str)
        frame = frame.rename(columns={"doc_id": "text_id", "body": "text"})[["text_id", "user_id", "text", "newsgroup"]]
    else:
        suite = load_suite(ROOT / "evals" / "suites" / "ci.toml")
        ds = next(d for d in suite.datasets if d.source == "20newsgroups")
        frame = load_dataset(ds, shared_data_dir(suite))
    truth = frame.groupby("user_id")["newsgroup"].agg(lambda s: s.value_counts().index[0])
    data = frame[["text_id", "user_id", "text"]]
    new_users = data["user_id"].map(lambda u: in_sample(str(u), 0.10, "bench-refresh-users"))
    base, new = data[~new_users], data[new_users]
    columns = ColumnMap(user_column="user_id", text_column="text", id_column="text_id", attribute_columns=[])
    folder = work / "real-model"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    base_csv, new_csv, full_csv = folder / "base.csv", folder / "new.csv", folder / "all.csv"
    base.to_csv(base_csv, index=False)
    new.to_csv(new_csv, index=False)
    data.to_csv(full_csv, index=False)
    label = "whole 20NG file" if data_set == "whole" else "CI slice"
    console.print(
        f"(real model) {label}: {len(data)} posts / {data['user_id'].nunique()} users; base {base['user_id'].nunique()} "
        f"users, new {new['user_id'].nunique()} users ({len(new)} posts)"
    )
    settings = workflows.llm_settings(backend, None, model, threads=threads, use_cache=False)
    if settings.use_cache:
        raise RuntimeError("the response cache must be off for timing")
    cache = folder / "cache-shared"
    if seed_embeddings is not None:  # vectors of earlier runs: the base build's embedding is not what is timed
        shutil.copytree(seed_embeddings, cache / "embeddings")
    out: dict[str, Any] = {
        "case": f"real model, {label}", "data_set": data_set, "backend": settings.backend,
        "model": settings.model or "(default)", "max_personas": max_personas, "scripted_base": scripted_base,
    }  # fmt: skip
    with open_chat_model(settings) as chat:
        out["model"] = getattr(chat, "model", None) or out["model"]
        with_cache(cache)
        t0 = time.perf_counter()
        if scripted_base:
            # The base personas' words do not decide anything the refresh does (it keeps or regenerates a
            # persona by its segment's membership churn); only the refresh and the rebuild are timed.
            with FakeOpenAIServer(default=persona_reply("Built")) as server:
                built = workflows.build(
                    base_csv, folder / "ws", columns=columns, settings=settings_for(server, folder / "llm-base"),
                    max_segments=max_personas,
                )  # fmt: skip
                out["base_calls"] = len(server.requests)
        else:
            built = workflows.build(
                base_csv, folder / "ws", columns=columns, settings=settings, chat=chat, max_segments=max_personas
            )
            out["base_calls"], _ = writer_calls(built.writer)
        out["base_build_s"] = round(time.perf_counter() - t0, 1)
        out["base_personas"] = len(built.personas)
        console.print(f"(real model) base build: {out['base_build_s']} s, {len(built.personas)} personas, {out['base_calls']} calls")
        parent = resolve_run(folder / "ws")
        before_personas = {p.segment_id: p for p in parent.load_personas()}
        refresh_cache, rebuild_cache = folder / "cache-refresh", folder / "cache-rebuild"
        for target in (refresh_cache, rebuild_cache):
            shutil.copytree(cache, target)
            out["vectors_evicted"] = evict(target, parent.load_manifest().models["embedder"], new["text"])

        out["load_before"] = [round(x, 2) for x in os.getloadavg()]
        with_cache(refresh_cache)
        t0 = time.perf_counter()
        result = refresh(folder / "ws", new_csv, columns=columns, settings=settings, chat=chat)
        out["refresh_s"] = round(time.perf_counter() - t0, 1)
        out["refresh_calls"], out["refresh_model_s"] = writer_calls(result.writer)
        out["load_between"] = [round(x, 2) for x in os.getloadavg()]
        console.print(f"(real model) refresh: {result.status}, mode {result.diff.mode_used}, {out['refresh_s']} s, {out['refresh_calls']} calls")
        with_cache(rebuild_cache)
        t0 = time.perf_counter()
        try:
            rebuilt = workflows.build(
                full_csv, folder / "ws-rebuild", columns=columns, settings=settings, chat=chat, max_segments=max_personas
            )
            rebuilt_run, rebuilt_personas = rebuilt.run, len(rebuilt.personas)
            out["rebuild_calls"], out["rebuild_model_s"] = writer_calls(rebuilt.writer)
        except RunNotPublishedError as exc:
            # A persona that failed validation on every attempt leaves the rebuild unpublished, after it did
            # all of a rebuild's work: its time still counts, read from the run it kept.
            rebuilt_run = Workspace.open(folder / "ws-rebuild").run(exc.run_name)
            rebuilt_personas = len(rebuilt_run.load_personas())
            out["rebuild_unpublished"] = str(exc)
            out["rebuild_calls"], out["rebuild_model_s"] = kept_run_calls(rebuilt_run.path)
        out["rebuild_s"] = round(time.perf_counter() - t0, 1)
        out["load_after"] = [round(x, 2) for x in os.getloadavg()]
        console.print(f"(real model) full rebuild: {out['rebuild_s']} s, {rebuilt_personas} personas, {out['rebuild_calls']} calls")

    refreshed = resolve_run(folder / "ws")
    after = {p.segment_id: p for p in refreshed.load_personas()}
    churn = {c.segment_id: c.churn for c in result.diff.segments}
    stable = [s for s in before_personas if s in churn and (churn[s] or 0.0) < 0.2]
    kept = [s for s in before_personas if s in after and after[s].persona_id == before_personas[s].persona_id]
    rl, bl = labels_of(refreshed), labels_of(rebuilt_run)
    drift = result.diff.drift
    out.update(
        refresh_status=result.status, refresh_mode=result.diff.mode_used,
        users_before=drift.users_before if drift else None, users_after=drift.users_after if drift else None,
        texts_embedded_refresh=result.diff.data.texts_embedded,
        refresh_embed_s=result.diff.timings_s.get("embed", 0.0),
        rebuild_embed_s=rebuilt_run.load_manifest().timings_s.get("embed", 0.0),
        time_share=round(out["refresh_s"] / out["rebuild_s"], 4),
        personas_before=len(before_personas), personas_rebuild=rebuilt_personas,
        segments_stable=len(stable), persona_ids_kept=len(kept),
        persona_ids_kept_stable=len([s for s in stable if s in kept]),
        personas_unchanged=len([s for s in kept if after[s].version == before_personas[s].version]),
        ari_refresh_vs_rebuild=round(ari(rl, bl), 4),
        ari_truth_refresh=round(score_labels(truth, rl)["ari"], 4), ari_truth_rebuild=round(score_labels(truth, bl)["ari"], 4),
        segments_refresh=len(set(rl.unique()) - {-1}), segments_rebuild=len(set(bl.unique()) - {-1}),
        peak_rss_mb=peak_rss_mb(),
    )  # fmt: skip
    return out


def print_real_model_table(r: dict[str, Any]) -> None:
    where = "the whole 20 Newsgroups file" if r.get("data_set") == "whole" else "CI slice of 20 Newsgroups"
    table = Table(title=f"refresh vs full rebuild with the real model ({r['backend']}: {r['model']}), {where}")
    table.add_column("measure")
    table.add_column("value", justify="right")
    rows = [
        ("users before -> after (segmented)", f"{r['users_before']} -> {r['users_after']}"),
        ("personas written per build (largest segments)", str(r["max_personas"] or "all")),
        ("base build (90% of users): s, personas, calls", f"{r['base_build_s']:.0f}, {r['base_personas']}, {r['base_calls']}"
         + (" (scripted server)" if r.get("scripted_base") else "")),
        ("refresh status / mode", f"{r['refresh_status']} / {r['refresh_mode']}"),
        ("texts embedded by the refresh (cached vectors evicted)", f"{r['texts_embedded_refresh']} ({r['vectors_evicted']})"),
        ("refresh wall s", f"{r['refresh_s']:.1f}"),
        ("full rebuild wall s", f"{r['rebuild_s']:.1f}" + (" (NOT published)" if r.get("rebuild_unpublished") else "")),
        ("refresh / rebuild (target <= 15%)", f"{r['time_share']:.1%}"),
        ("  embedding: refresh / rebuild s", f"{r['refresh_embed_s']:.1f} / {r['rebuild_embed_s']:.1f}"),
        ("model calls: refresh / rebuild (re-asks included)", f"{r['refresh_calls']} / {r['rebuild_calls']}"),
        ("model seconds: refresh / rebuild", f"{r['refresh_model_s']:.0f} / {r['rebuild_model_s']:.0f}"),
        ("personas: before / rebuild", f"{r['personas_before']} / {r['personas_rebuild']}"),
        ("persona ids kept (all / of churn < 20%)", f"{r['persona_ids_kept']} / {r['persona_ids_kept_stable']} of {r['segments_stable']}"),
        ("personas unchanged (same version)", str(r["personas_unchanged"])),
        ("ARI refresh vs rebuild", f"{r['ari_refresh_vs_rebuild']:.3f}"),
        ("ARI vs main newsgroup: refresh / rebuild", f"{r['ari_truth_refresh']:.3f} / {r['ari_truth_rebuild']:.3f}"),
        ("segments: refresh / rebuild", f"{r['segments_refresh']} / {r['segments_rebuild']}"),
        ("load average (1/5/15 min) before / between / after", f"{r['load_before']} / {r['load_between']} / {r['load_after']}"),
    ]
    for label, value in rows:
        table.add_row(label, value)
    console.print(table)


def kill_checks(work: Path, new: pd.DataFrame) -> list[dict[str, Any]]:
    """SIGKILL a 20NG refresh while embedding, writing personas and publishing (CLI subprocesses)."""
    from tests.test_run_store import cli_env, kill_when, llm_flags, start_cli

    ws = work / "users" / "ws"
    out = []
    flags = ["--user-column", "user_id", "--text-column", "body", "--id-column", "doc_id"]
    cache = work / "cache-kill"
    shutil.rmtree(cache, ignore_errors=True)
    shutil.copytree(work / "cache-shared", cache)
    fresh = new.copy()
    fresh["doc_id"] = "k-" + fresh["doc_id"].astype(str)
    fresh["user_id"] = "k-" + fresh["user_id"].astype(str)
    fresh["body"] = fresh["body"].astype(str) + "\n\nPosted again for the kill check."  # texts the workspace lacks
    data = work / "kill-new.csv"
    fresh.to_csv(data, index=False)

    def state() -> tuple[str, dict[str, str]]:
        current = (ws / "current").read_text()
        return current, tree_digest(ws / "runs" / current.strip())

    def next_refresh_completes(server: FakeOpenAIServer) -> str:
        with_cache(cache)
        return refresh(ws, data, columns=COLUMNS, mode="assign", settings=settings_for(server, work / "llm-kill")).status

    before = state()
    proc = start_cli(["refresh", str(ws), str(data), *flags, "--mode", "assign"], cache)
    kill_when(proc, r"refresh: embedding", timeout=900)
    ok = state() == before
    with FakeOpenAIServer(default=persona_reply("AfterKill")) as server:
        status = next_refresh_completes(server)
    out.append({"killed": "embedding", "published_run_intact": ok, "next_refresh": status})
    # persona writing: a snapshot without a fifth of segment 0's users makes its persona change
    published = resolve_run(ws)
    a = published.load_assignments()
    leaving = set(a.loc[a["segment_id"] == 0, "user_id"].astype(str)[:: 4])
    texts = published.load_texts()
    snap = texts[~texts["user_id"].isin(leaving)][["text_id", "user_id", "text"]]
    snap_csv = work / "kill-snapshot.csv"
    snap.to_csv(snap_csv, index=False)
    snap_flags = ["--user-column", "user_id", "--text-column", "text", "--id-column", "text_id", "--snapshot", "--mode", "assign"]
    before = state()
    with FakeOpenAIServer(default={"sleep": 30.0, "content": "{}"}) as slow:
        proc = start_cli(["refresh", str(ws), str(snap_csv), *snap_flags, *llm_flags(slow)], cache)
        kill_when(proc, r"refresh: writing personas", timeout=900, then=lambda: bool(slow.requests))
    ok = state() == before
    by_id = ColumnMap(user_column="user_id", text_column="text", id_column="text_id", attribute_columns=[])
    with FakeOpenAIServer(default=persona_reply("AfterKill2")) as server:
        with_cache(cache)
        status = refresh(ws, snap_csv, columns=by_id, snapshot=True, mode="assign", settings=settings_for(server, work / "llm-kill2")).status
    out.append({"killed": "persona writing", "published_run_intact": ok, "next_refresh": status})
    # publishing: the rename of the `current` pointer becomes SIGKILL
    published = resolve_run(ws)
    texts = published.load_texts()
    one = texts["user_id"].iloc[0]
    snap = texts[texts["user_id"] != one][["text_id", "user_id", "text"]]
    snap.to_csv(snap_csv, index=False)
    code = (
        "import os, signal\nfrom pathlib import Path\nreal = os.replace\n"
        "def replace(a, b, *k, **kw):\n    if Path(b).name == 'current':\n        os.kill(os.getpid(), signal.SIGKILL)\n"
        "    return real(a, b, *k, **kw)\nos.replace = replace\nfrom persona_llm.cli import app\napp()\n"
    )
    before = state()
    done = subprocess.run(
        [sys.executable, "-c", code, "refresh", str(ws), str(snap_csv), *snap_flags],
        capture_output=True, text=True, env=cli_env(cache), cwd=ROOT, timeout=1800,
    )  # fmt: skip
    ok = state() == before and done.returncode == -signal.SIGKILL
    with FakeOpenAIServer(default=persona_reply("AfterKill3")) as server:
        with_cache(cache)
        status = refresh(ws, snap_csv, columns=by_id, snapshot=True, mode="assign", settings=settings_for(server, work / "llm-kill3")).status
    out.append({"killed": "publishing", "published_run_intact": ok, "next_refresh": status})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", default="users,posts")
    ap.add_argument("--kill", action="store_true", help="also SIGKILL refreshes of the 20NG workspace")
    ap.add_argument("--work", type=Path, default=None, help="work folder (default: a temporary one)")
    ap.add_argument("--json", type=Path, default=None, help="write the results as JSON here too")
    ap.add_argument("--llm", default=None, help="a real backend (embedded: the default one): the real-model case only")
    ap.add_argument("--llm-model", default=None, help="model of that backend (default: the backend's)")
    ap.add_argument("--threads", type=int, default=None, help="model threads (default: the backend's choice)")
    ap.add_argument("--max-personas", type=int, default=None, help="real-model case: personas for the N largest segments only")
    ap.add_argument("--data", choices=["ci", "whole"], default="ci", help="real-model case: the CI slice or the whole 20NG file")
    ap.add_argument("--scripted-base", action="store_true", help="real-model case: the 90%% build's personas from the scripted server")
    ap.add_argument("--seed-embeddings", type=Path, default=None, help="real-model case: an embedding cache folder to start from")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    work = args.work or Path(tempfile.mkdtemp(prefix="bench_refresh_"))
    if args.llm:
        work.mkdir(parents=True, exist_ok=True)
        console.print(f"CPU: {cpu_description()} · {os.cpu_count()} cores · load {os.getloadavg()} · work {work}")
        real = real_model_case(
            work, args.llm, args.llm_model, args.threads, args.max_personas, args.data, args.scripted_base, args.seed_embeddings
        )
        real["cpu"] = cpu_description()
        print_real_model_table(real)
        if args.json:
            args.json.write_text(json.dumps(real, indent=1, default=str))
        return
    df = pd.read_csv(SHARED / "20newsgroups" / "posts.csv.gz", dtype=str)
    df = df[["doc_id", "user_id", "body", "newsgroup"]]
    truth = df.groupby("user_id")["newsgroup"].agg(lambda s: s.value_counts().index[0])
    full = work / "all.csv"
    work.mkdir(parents=True, exist_ok=True)
    df.drop(columns=["newsgroup"]).to_csv(full, index=False)
    console.print(f"CPU: {cpu_description()} · {os.cpu_count()} cores · work {work}")
    results = []
    splits = {"users": split_users, "posts": split_posts}
    for case in [c.strip() for c in args.cases.split(",") if c.strip()]:
        base, new = splits[case](df)
        console.print(f"({case}) base {len(base)} posts / {base['user_id'].nunique()} users; new {len(new)} posts / {new['user_id'].nunique()} users")
        results.append(run_case(case, base.drop(columns=["newsgroup"]), new.drop(columns=["newsgroup"]), full, truth, work))
    print_table(results)
    if args.json:
        args.json.write_text(json.dumps({"cpu": cpu_description(), "results": results}, indent=1, default=str))
    kills = kill_checks(work, split_users(df)[1].drop(columns=["newsgroup"])) if args.kill else []
    for k in kills:
        console.print(f"kill while {k['killed']}: published run intact {k['published_run_intact']}, next refresh {k['next_refresh']}")
    if args.json:
        args.json.write_text(json.dumps({"cpu": cpu_description(), "results": results, "kills": kills}, indent=1, default=str))


def print_table(results: list[dict[str, Any]]) -> None:
    table = Table(title="refresh vs full rebuild, 20 Newsgroups (15,033 posts)")
    table.add_column("measure")
    for r in results:
        table.add_column(r["case"], justify="right")
    rows = [
        ("users before -> after", lambda r: f"{r['users_before']} -> {r['users_after']}"),
        ("texts added (embedded by refresh)", lambda r: f"{r['texts_added']} ({r['texts_embedded_refresh']})"),
        ("refresh status / mode", lambda r: f"{r['refresh_status']} / {r['refresh_mode']}"),
        ("drift: unassigned / shift max / churn", lambda r: "{:.1%} / {:.4f} / {:.1%}".format(
            r["drift"]["unassigned_share"], r["drift"]["centroid_shift_max"], r["drift"]["membership_churn"]) if r["drift"] else "-"),
        ("emerging segments", lambda r: str(len(r["drift"]["emerging"])) if r["drift"] else "-"),
        ("refresh wall s", lambda r: f"{r['refresh_s']:.1f}"),
        ("full rebuild wall s", lambda r: f"{r['rebuild_s']:.1f}"),
        ("refresh / rebuild (target <= 15%)", lambda r: f"{r['time_share']:.1%}"),
        ("  embedding the new texts: refresh / rebuild s", lambda r: f"{r['refresh_embed_s']:.0f} / {r['rebuild_embed_s']:.0f}"),
        ("  share without that embedding", lambda r: f"{r['time_share_without_embedding']:.1%}"),
        ("  with the real model (estimate)", lambda r: f"{r['real_model_estimate_share']:.1%}"),
        ("segments with churn < 20% (of personas)", lambda r: f"{r['segments_stable']} of {r['segments_before']}"),
        ("  persona id kept (target >= 90%)", lambda r: f"{r['persona_ids_kept']} ({(r['retention'] or 0):.0%})"),
        ("  persona unchanged, no call", lambda r: str(r["personas_unchanged"])),
        ("model calls: refresh / rebuild", lambda r: f"{r['llm_calls_refresh']} / {r['llm_calls_rebuild']}"),
        ("  segments asked / changed+added", lambda r: f"{r['llm_segments_asked']} / {r['segments_changed_or_added']}"),
        ("ARI refresh vs rebuild", lambda r: f"{r['ari_refresh_vs_rebuild']:.3f}"),
        ("ARI vs main newsgroup: refresh / rebuild", lambda r: f"{r['ari_truth_refresh']:.3f} / {r['ari_truth_rebuild']:.3f}"),
        ("segments: refresh / rebuild", lambda r: f"{r['segments_refresh']} / {r['segments_rebuild']}"),
        ("recluster: matched of before (calls)", lambda r: f"{r['recluster_matched']} of {r['recluster_segments_before']} ({r['recluster_calls']})"),
        ("  added / retired / splits / merges", lambda r: f"{len(r['recluster_added'])} / {len(r['recluster_retired'])} / {len(r['recluster_splits'])} / {len(r['recluster_merges'])}"),
        ("recluster again, same data: status, ids kept", lambda r: f"{r['recluster_again_status']}, {r['recluster_again_ids_kept']} ({r['recluster_again_calls']} calls)"),
    ]
    for label, get in rows:
        table.add_row(label, *[get(r) for r in results])
    console.print(table)


if __name__ == "__main__":
    main()
