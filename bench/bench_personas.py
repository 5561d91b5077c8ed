"""Persona-writing benchmark: the "Measured" table of the persona issue.

    python bench/bench_personas.py RUN_DIR [--segments 0,1] [--llm embedded --llm-model qwen-1.5b]
    python bench/bench_personas.py --blog [--bloggers 120] [--max-personas 4]
    python bench/bench_personas.py --ci-slice 20newsgroups      # or online_shopping_10_cats: the ci.toml slice

With RUN_DIR it writes personas for an existing run (into a copy, so the run is untouched). With
--blog it first segments a slice of the Blog Authorship Corpus (../shared/data/blog_authorship), with
the gender and age columns HIDDEN from the pipeline and the model, and then compares each persona's
stated age group and gender with the true labels of the segment's members: a persona may only claim
what the texts show, and "unknown" is an honest answer.

Variants, side by side on the same segments (`--variants old,new`); those that differ only in the writer
share one model server, the others get their own (embedded backend):
  old:       prompt persona/v2, quotes copied as text and gated (quote_mode verbatim), no narrative check
  new:       the defaults: prompt persona/v4 (v3 at the time of the 2026-11-30 record), quotes chosen by sentence id (reference), narrative check
  draft:     new + speculative decoding, Qwen2.5-Coder-0.5B drafting for the model (draft_model qwen-0.5b)
  ngram:     new + speculative decoding by n-gram lookup in the prompt and reply (ngram_speculation simple)
  compact:   new with shorter bounds on demographics and recommendations (agents/persona_writer_compact.toml)
  hints:     new without the four generated estimates: the model lists what the texts say about who the
             customers are, attribute columns become estimates by code (agents/persona_writer_hints.toml)
  parallel2: new with 2 server slots, two segments written at the same time (concurrency 2)
The speculative variants should write the very personas "new" writes (the model verifies every drafted
token); the row "persona JSON = new" says whether they did (compare at --temperature 0).
Printed per variant: median and p90 seconds per persona (model time), calls, prompt and completion
tokens, quotes proposed / kept (keep rate), an independent re-check that every kept quote is verbatim,
statement support (the run's embedder, measured the same way for both variants, before any removal for
"new"), lexical support and identification lift from the eval, and the CPU with its vector extensions.
Replies are never taken from the response cache here.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
sys.path.insert(0, str(ROOT))

from persona_llm.common.demographics import fits_age, gender_of, parse_age_intervals  # noqa: E402
from persona_llm.common.textmatch import is_verbatim  # noqa: E402
from persona_llm.evaluation.runner import evaluate_run  # noqa: E402
from persona_llm.evaluation.suite import Suite  # noqa: E402
from persona_llm.llm.client import open_chat_model  # noqa: E402
from persona_llm.personas.support import draft_statements, support_share  # noqa: E402
from persona_llm.personas.writer import PersonaWriteError, PersonaWriter  # noqa: E402
from persona_llm.runs.rundir import RunDir  # noqa: E402
from persona_llm.schema.manifest import cpu_description  # noqa: E402
from persona_llm.schema.personas import PersonaDraft  # noqa: E402
from persona_llm.workflows import llm_settings  # noqa: E402

console = Console()


def blog_run(out: Path, bloggers: int, posts_per_blogger: int, seed: int) -> tuple[Path, pd.DataFrame]:
    """Segment a blog slice with demographics hidden; return the run dir and the true labels."""
    from persona_llm.segment.pipeline import SegmentPipeline

    df = pd.read_csv(SHARED / "blog_authorship" / "posts.csv.gz", dtype={"blogger_id": str})
    rng = np.random.default_rng(seed)
    chosen = rng.choice(df["blogger_id"].unique(), size=bloggers, replace=False)
    df = df[df["blogger_id"].isin(set(chosen))]
    df = df.groupby("blogger_id", group_keys=False).head(posts_per_blogger).reset_index(drop=True)
    df["text"] = df["text"].astype(str).str.slice(0, 1500)
    labels = df.groupby("blogger_id")[["gender", "age", "age_group"]].first()
    data = df[["blogger_id", "text"]].rename(columns={"blogger_id": "user_id"})
    started = time.perf_counter()
    pipe = SegmentPipeline(embedder="minilm", random_state=seed).fit(data, attribute_columns=[])
    pipe.save(out, overwrite=True)
    console.print(f"segmented {bloggers} bloggers / {len(df)} posts in {time.perf_counter() - started:.0f}s")
    return out, labels


def demographics_table(run_dir: Path, personas: list[Any], labels: pd.DataFrame) -> Table:
    assign = RunDir.open(run_dir).load_assignments()
    overall_f = float((labels["gender"] == "female").mean())
    table = Table(title=f"Stated demographics vs true labels (all users: {overall_f * 100:.0f}% female)")
    for col in ("segment", "users", "stated age (conf, source)", "members in stated range", "true age groups",
                "stated gender", "true female share"):  # fmt: skip
        table.add_column(col, overflow="fold")
    for p in personas:
        members = assign.loc[assign["segment_id"] == p.segment_id, "user_id"]
        lab = labels.reindex(members).dropna()
        age, gender = p.demographics.age_group, p.demographics.gender
        ages = parse_age_intervals(age.value) if age.value != "unknown" else []
        in_range = f"{np.mean([fits_age(a, ages) for a in lab['age']]) * 100:.0f}%" if ages else "-"
        groups = lab["age_group"].value_counts(normalize=True)
        table.add_row(
            str(p.segment_id), str(len(lab)), f"{age.value} ({age.confidence}, {age.source})", in_range,
            ", ".join(f"{g} {s * 100:.0f}%" for g, s in groups.items()),
            f"{gender.value} ({gender.confidence})" + (f" -> {gender_of(gender.value)}" if gender.value != "unknown" else ""),
            f"{(lab['gender'] == 'female').mean() * 100:.0f}%",
        )  # fmt: skip
    return table


def verify_quotes(run_dir: Path, personas: list[Any]) -> tuple[int, int]:
    """A re-check of what the gate kept: (verified, total) quotes verbatim (the eval's rules) in a text of
    their segment."""
    texts = RunDir.open(run_dir).load_texts(["text_id", "segment_id", "text"])
    by_id = {str(r.text_id): (int(r.segment_id), str(r.text)) for r in texts.itertuples()}
    ok = total = 0
    for p in personas:
        for q in p.quotes:
            total += 1
            seg, text = by_id.get(q.text_id, (None, ""))
            ok += int(seg == p.segment_id and is_verbatim(q.text, text))
    return ok, total


#: name -> (PersonaWriter options, LLMSettings overrides).
VARIANTS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "old": ({"prompt_version": "persona/v2", "quote_mode": "verbatim", "check_support": False}, {}),
    "new": ({}, {}),
    "compact": ({"agent": "persona_writer_compact"}, {}),
    "hints": ({"agent": "persona_writer_hints"}, {}),
    "draft": ({}, {"draft_model": "qwen-0.5b"}),
    "ngram": ({}, {"ngram_speculation": "simple"}),
    "parallel2": ({}, {"concurrency": 2}),
}


def ci_slice_run(key: str, out: Path) -> Path:
    """Segment one data set's slice as the ci suite does (evals/suites/ci.toml, SuiteBuilder)."""
    from persona_llm.evaluation.build import SuiteBuilder
    from persona_llm.evaluation.suite import load_dataset, load_suite, shared_data_dir

    suite = load_suite(ROOT / "evals" / "suites" / "ci.toml")
    ds = next((d for d in suite.datasets if key in (d.key, d.source)), None)
    if ds is None:
        raise SystemExit(f"no data set {key!r} in ci.toml; have {[d.key for d in suite.datasets]}")
    texts = load_dataset(ds, shared_data_dir())
    started = time.perf_counter()
    path = SuiteBuilder().build(texts, out, ds.seed)
    console.print(f"segmented the ci slice of {ds.key}: {len(texts)} texts in {time.perf_counter() - started:.0f} s")
    return path


def cpu_line() -> str:
    return f"{cpu_description()}, {len(os.sched_getaffinity(0))} usable cores"


def load_line() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def measured_support(writer: PersonaWriter, run_dir: Path, personas: list[Any]) -> float | None:
    """Share of statements supported, by the writer's own support index, for any persona (old ones too):
    one yardstick for both variants. For "new" the persona's recorded checks (before removal) are used."""
    recorded = [p.provenance.support_share for p in personas if p.provenance.support_share is not None]
    if recorded and len(recorded) == len(personas):
        return float(np.mean(recorded))
    index, _ = writer._support_index(RunDir.open(run_dir))
    if index is None:
        return None
    shares = []
    for p in personas:
        draft = PersonaDraft.model_construct(**{k: getattr(p, k) for k in PersonaDraft.model_fields if k != "quotes"})
        statements = draft_statements(draft)
        vectors = np.asarray(writer.support_embedder_.encode([x for _, x in statements]), dtype=np.float32)
        share = support_share(index.check(p.segment_id, statements, vectors))
        if share is not None:
            shares.append(share)
    return float(np.mean(shares)) if shares else None


def run_variant(
    name: str, chat: Any, settings: Any, source: Path, work: Path, ids: list[int], language: str, judge: bool = False
) -> dict[str, Any]:
    run_dir = work / name
    shutil.copytree(source, run_dir, ignore=shutil.ignore_patterns("personas*", "report.html", "eval.json"))
    writer = PersonaWriter(settings, chat=chat, language=language, embedder="minilm", write_store=False,
                           write_report=False, max_regenerations=0,
                           progress=lambda e: console.print(f"    {name}: {e.line()}", soft_wrap=True, markup=False),
                           **VARIANTS[name][0])  # fmt: skip
    started = time.perf_counter()
    failures: dict[int, str] = {}
    try:
        personas = writer.write(run_dir, ids)
    except PersonaWriteError as exc:
        failures = exc.failures
        personas = RunDir.open(run_dir).load_personas()
    wall = time.perf_counter() - started
    stats = writer.stats_
    ok, total = verify_quotes(run_dir, personas)
    seconds = [p.provenance.seconds for p in personas]
    groups = ["narrative", "representativeness", *(["judge"] if judge else [])]
    report = evaluate_run(run_dir, None, Suite.model_validate({"name": "bench", "metrics": groups}),
                          judge=chat if judge else None, write=False)  # fmt: skip
    return {
        "server": server_line(chat.info),
        "personas": f"{len(personas)} / {len(ids)}",
        "median s / persona": f"{np.median(seconds):.1f}" if seconds else "-",
        "p90 s / persona": f"{np.percentile(seconds, 90):.1f}" if seconds else "-",
        "wall s": f"{wall:.0f}",
        "model calls": str(stats["calls"]),
        "prompt tokens": str(stats["prompt_tokens"]),
        "completion tokens": str(stats["completion_tokens"]),
        "generation tokens / s": str(stats["generation_tokens_per_second"]),
        "completion tokens / wall s (all slots)": f"{stats['completion_tokens'] / wall:.2f}" if wall else "-",
        "drafted tokens accepted / proposed": (
            f"{stats['draft_tokens_accepted']} / {stats['draft_tokens']}" if stats.get("draft_tokens") else "-"
        ),
        "quotes kept / proposed": f"{stats['quotes_kept']} / {stats['quotes_proposed']}",
        "kept quotes re-verified verbatim": f"{ok} / {total}",
        "statement support (run embedder)": _fmt(measured_support(writer, run_dir, personas)),
        "statement support (lexical, eval)": _fmt(report.metrics.get("statement_support_lexical")),
        "identification lift (eval)": _fmt(report.metrics.get("identification_lift")),
        "judge: own claims supported (same model)": _fmt(report.metrics.get("judge_supported")),
        "judge: planted claims caught": (
            f"{_fmt(report.metrics.get('judge_planted_caught'))} of {report.metrics.get('judge_planted', 0):.0f}"
            if judge else "-"
        ),
        "confidence high/medium/low": "/".join(str(sum(p.confidence == c for p in personas)) for c in ("high", "medium", "low")),
        "tokens per persona by field (top 6; quotes as text)": field_tokens(
            chat, personas, computed=("demographics",) if "demographic_hints" in writer.output_model_.model_fields else ()
        ),
        "names": "; ".join(p.name for p in personas),
        "failed": "; ".join(f"{k}: {v[:80]}" for k, v in failures.items()),
    }


def server_line(info: dict[str, Any]) -> str:
    """What the server ran with (threads, slots, speculation), from the backend's `ChatModel.info`."""
    spec = info.get("speculative", "-")
    if isinstance(spec, dict):
        spec = ", ".join(f"{k} {v}" for k, v in spec.items())
    restarts = f", {len(info['restarts'])} restart(s)" if info.get("restarts") else ""
    return f"{info.get('threads', '?')} threads, {info.get('parallel_slots', 1)} slot(s), speculative: {spec}{restarts}"


def persona_content(run_dir: Path) -> dict[int, dict[str, Any]]:
    """Each persona's JSON without its provenance (timings, call counts), by segment."""
    return {p.segment_id: p.model_dump(mode="json", exclude={"provenance"}) for p in RunDir.open(run_dir).load_personas()}


def same_personas(a: dict[int, dict[str, Any]], b: dict[int, dict[str, Any]]) -> str:
    """'identical' or how many personas differ, with the first field that differs."""
    if not a or not b:
        return "-"
    differing = [sid for sid in sorted(set(a) | set(b)) if a.get(sid) != b.get(sid)]
    if not differing:
        return f"identical ({len(a)} personas)"
    sid = differing[0]
    fields = [k for k in (a.get(sid) or {}) if (a.get(sid) or {}).get(k) != (b.get(sid) or {}).get(k)]
    return f"{len(differing)} of {len(set(a) | set(b))} differ (segment {sid}: {', '.join(fields[:4])})"


def field_tokens(chat: Any, personas: list[Any], computed: tuple[str, ...] = ()) -> str:
    """Which generated fields cost most: mean tokens per persona of each field's JSON (the model's tokenizer).
    `computed`: fields the pipeline built rather than the model (hints: demographics), left out."""
    import json

    fields = ["name", "tagline", "summary", "demographics", "interests", "goals", "pain_points", "motivations",
              "purchase_triggers", "objections", "preferred_channels", "tone_of_voice", "recommendations", "quotes"]  # fmt: skip
    fields = [f for f in fields if f not in computed]
    totals = {f: 0 for f in fields}
    for p in personas:
        data = p.model_dump(mode="json")
        for f in fields:
            value = [q["text"] for q in data["quotes"]] if f == "quotes" else data[f]
            totals[f] += chat.count_tokens(json.dumps(value, ensure_ascii=False))
    n = max(len(personas), 1)
    top = sorted(totals.items(), key=lambda kv: -kv[1])[:6]
    return ", ".join(f"{k} {v / n:.0f}" for k, v in top)


def _fmt(x: Any) -> str:
    return "-" if x is None else f"{x:.2f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir", nargs="?", type=Path)
    ap.add_argument("--blog", action="store_true", help="segment a blog slice first (demographics hidden)")
    ap.add_argument("--ci-slice", help="segment this data set's slice of evals/suites/ci.toml first")
    ap.add_argument("--bloggers", type=int, default=120)
    ap.add_argument("--posts-per-blogger", type=int, default=8)
    ap.add_argument("--segments", help="comma-separated segment ids (default: the largest --max-personas)")
    ap.add_argument("--max-personas", type=int, default=4)
    ap.add_argument("--variants", default="old,new", help=f"comma-separated, of {', '.join(VARIANTS)}")
    ap.add_argument("--llm", default=None)
    ap.add_argument("--llm-url", default=None)
    ap.add_argument("--llm-model", default=None)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--concurrency", type=int, default=None)
    ap.add_argument("--temperature", type=float, default=None, help="sampling temperature (default: the settings')")
    ap.add_argument("--language", default="auto")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--fresh-server", action="store_true", help="start a new model server for every variant (no shared prompt cache)")
    ap.add_argument("--keep", type=Path, help="copy the resulting run directories here")
    ap.add_argument("--judge", action="store_true", help="also run the LLM judge (the same model) with planted claims")
    ap.add_argument("--blog-labels", action="store_true", help="RUN_DIR is a blog run: compare demographics")
    args = ap.parse_args()
    if not args.run_dir and not args.blog and not args.ci_slice:
        ap.error("give RUN_DIR, --blog or --ci-slice")
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    if unknown := [v for v in variants if v not in VARIANTS]:
        ap.error(f"unknown variant(s) {unknown}; use {', '.join(VARIANTS)}")

    work = Path(tempfile.mkdtemp(prefix="bench_personas_"))
    labels = None
    if args.blog:
        source, labels = blog_run(work / "run", args.bloggers, args.posts_per_blogger, args.seed)
    elif args.ci_slice:
        source = ci_slice_run(args.ci_slice, work / "run")
    else:
        source = args.run_dir
        if args.blog_labels:
            df = pd.read_csv(SHARED / "blog_authorship" / "posts.csv.gz", dtype={"blogger_id": str})
            labels = df.groupby("blogger_id")[["gender", "age", "age_group"]].first()
    segments = RunDir.open(source).load_segments().segments
    if args.segments:
        ids = [int(s) for s in args.segments.split(",")]
    else:
        ids = [s.segment_id for s in sorted(segments, key=lambda s: -s.size)[: args.max_personas]]
    extra = {"temperature": args.temperature} if args.temperature is not None else {}
    settings = llm_settings(
        args.llm, args.llm_url, args.llm_model, threads=args.threads, concurrency=args.concurrency, use_cache=False,
        **extra,
    )  # fmt: skip
    console.print(f"CPU: {cpu_line()}; load average before: {load_line()}")
    results: dict[str, dict[str, Any]] = {}
    with ExitStack() as stack:
        chat, open_settings = None, None
        for name in variants:
            variant_settings = settings.model_copy(update=VARIANTS[name][1])
            # Another server configuration, or --fresh-server: stop the last one first. A shared server keeps
            # the prompts it processed (llama.cpp's prompt cache), so a variant run after another on the same
            # segments skips most prompt processing: measured, compact after new took 53 s against 101 s
            # per persona for 15% fewer tokens. Compare seconds only between fresh servers.
            if variant_settings != open_settings or args.fresh_server:
                stack.close()
                chat, open_settings = stack.enter_context(open_chat_model(variant_settings)), variant_settings
                console.print(f"model {chat.model_id}, backend info {chat.info}; segments {ids}")
            results[name] = run_variant(name, chat, variant_settings, source, work, ids, args.language, args.judge)
            # The whole row now, so a run stopped later keeps what it measured.
            console.print(f"  {name}: done ({results[name]['wall s']} s): {json.dumps(results[name], ensure_ascii=False)}")
    base = "new" if "new" in variants else variants[0]
    for name in variants:
        results[name][f"persona JSON = {base} (all but provenance)"] = (
            "-" if name == base else same_personas(persona_content(work / base), persona_content(work / name))
        )
    console.print(f"load average after: {load_line()}")
    table = Table(title=f"Persona writing, {len(ids)} segments of {source}")
    table.add_column("measure")
    for name in variants:
        table.add_column(name, overflow="fold")
    for key in results[variants[0]]:
        table.add_row(key, *(results[v][key] for v in variants))
    console.print(table)
    if labels is not None:
        for name in variants:
            personas = RunDir.open(work / name).load_personas()
            console.print(f"[bold]{name}[/]")
            console.print(demographics_table(work / name, personas, labels))
    if args.keep:
        shutil.copytree(work, args.keep, dirs_exist_ok=True)
        console.print(f"runs kept in {args.keep}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
