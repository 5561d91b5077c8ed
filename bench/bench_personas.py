"""Persona-writing benchmark: the "Measured" table of the persona issue.

    python bench/bench_personas.py RUN_DIR [--segments 0,1] [--llm embedded --llm-model qwen-1.5b]
    python bench/bench_personas.py --blog [--bloggers 120] [--max-personas 4]

With RUN_DIR it writes personas for an existing run (into a copy, so the run is untouched). With
--blog it first segments a slice of the Blog Authorship Corpus (../shared/data/blog_authorship), with
the gender and age columns HIDDEN from the pipeline and the model, and then compares each persona's
stated age group and gender with the true labels of the segment's members: a persona may only claim
what the texts show, and "unknown" is an honest answer.

Printed: personas written / attempted (schema-valid after re-asks), invalid replies before re-ask,
quotes proposed / dropped by the grounding gate / kept, an independent re-check that every kept quote
is verbatim in a text of its segment, personas per minute, completion tokens per second, and the
largest pairwise persona similarity (MiniLM). Replies are never taken from the response cache here.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
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
from persona_llm.personas.writer import PersonaWriteError, PersonaWriter  # noqa: E402
from persona_llm.runs.rundir import RunDir  # noqa: E402
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir", nargs="?", type=Path)
    ap.add_argument("--blog", action="store_true", help="segment a blog slice first (demographics hidden)")
    ap.add_argument("--bloggers", type=int, default=120)
    ap.add_argument("--posts-per-blogger", type=int, default=8)
    ap.add_argument("--segments", help="comma-separated segment ids (default: the largest --max-personas)")
    ap.add_argument("--max-personas", type=int, default=4)
    ap.add_argument("--llm", default=None)
    ap.add_argument("--llm-url", default=None)
    ap.add_argument("--llm-model", default=None)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--concurrency", type=int, default=None)
    ap.add_argument("--language", default="auto")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep", type=Path, help="copy the resulting run directory here")
    ap.add_argument("--blog-labels", action="store_true", help="RUN_DIR is a blog run: compare demographics")
    args = ap.parse_args()
    if not args.run_dir and not args.blog:
        ap.error("give RUN_DIR or --blog")

    work = Path(tempfile.mkdtemp(prefix="bench_personas_"))
    labels = None
    if args.blog:
        run_dir, labels = blog_run(work / "run", args.bloggers, args.posts_per_blogger, args.seed)
    else:
        run_dir = work / "run"
        shutil.copytree(args.run_dir, run_dir, ignore=shutil.ignore_patterns("personas*", "report.html"))
        if args.blog_labels:
            df = pd.read_csv(SHARED / "blog_authorship" / "posts.csv.gz", dtype={"blogger_id": str})
            labels = df.groupby("blogger_id")[["gender", "age", "age_group"]].first()
    run = RunDir.open(run_dir)
    segments = run.load_segments().segments
    if args.segments:
        ids = [int(s) for s in args.segments.split(",")]
    else:
        ids = [s.segment_id for s in sorted(segments, key=lambda s: -s.size)[: args.max_personas]]
    settings = llm_settings(
        args.llm, args.llm_url, args.llm_model, threads=args.threads, concurrency=args.concurrency, use_cache=False
    )
    writer = PersonaWriter(settings, language=args.language, embedder="minilm", write_store=False)
    started = time.perf_counter()
    failures: dict[int, str] = {}
    try:
        personas = writer.write(run_dir, ids)
    except PersonaWriteError as exc:
        failures = exc.failures
        personas = run.load_personas()
    wall = time.perf_counter() - started
    stats = writer.stats_
    ok, total = verify_quotes(run_dir, personas)

    table = Table(title=f"Persona writing: {stats['model']} ({stats['backend_info'].get('threads', '?')} threads)")
    table.add_column("measure")
    table.add_column("value", justify="right")
    rows = [
        ("segments attempted", str(len(ids))),
        ("schema-valid personas after re-asks", f"{len(personas)} / {len(ids)} ({len(personas) / len(ids) * 100:.0f}%)"),
        ("invalid replies re-asked (JSON/schema/length/quotes)", str(stats["invalid_outputs"])),
        ("model calls", str(stats["calls"])),
        ("quotes proposed", str(stats["quotes_proposed"])),
        ("quotes dropped by the grounding gate", str(stats["quotes_dropped_by_gate"])),
        ("quotes kept, re-verified verbatim", f"{ok} / {total} ({ok / total * 100 if total else 0:.0f}%)"),
        ("personas with < 3 verified quotes", str(stats["personas_short_of_quotes"])),
        ("demographic estimates made unknown", str(stats["estimates_removed"])),
        ("regenerated for distinctness", str(stats["regenerated_for_distinctness"])),
        ("largest pairwise persona similarity (MiniLM)",
         f"{stats['max_pairwise_similarity']:.3f}" if stats["max_pairwise_similarity"] is not None else "-"),
        ("personas per minute (wall, incl. server start)", f"{len(personas) / wall * 60:.2f}"),
        ("seconds per persona (model time)", f"{stats['llm_seconds'] / max(len(personas), 1):.1f}"),
        ("completion tokens / s of model time (prompt included)", str(stats["completion_tokens_per_second"])),
        ("generation tokens / s (server timings)", str(stats["generation_tokens_per_second"])),
        ("prompt tokens / s (server timings)", str(stats["prompt_tokens_per_second"])),
        ("prompt tokens / completion tokens", f"{stats['prompt_tokens']} / {stats['completion_tokens']}"),
    ]  # fmt: skip
    for name, value in rows:
        table.add_row(name, value)
    console.print(table)
    if failures:
        console.print(f"[red]failed segments:[/] {failures}")
    if labels is not None:
        console.print(demographics_table(run_dir, personas, labels))
    for p in personas:
        console.print(f"[bold]{p.segment_id}: {p.name}[/] — {p.tagline}")
    if args.keep:
        shutil.copytree(run_dir, args.keep, dirs_exist_ok=True)
        console.print(f"run kept in {args.keep}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
