"""Brief benchmark: the "Measured" line of the strategist-briefs issue (brief time on the 2-core machine
with the embedded model), and how much of what the model wrote the gates kept.

    python bench/bench_briefs.py RUN [--personas 0,1] [--kinds campaign,narrative,messaging]
        [--goal "launch of the annual plan"] [--channel email] [--llm embedded --llm-model qwen-1.5b] [--out DIR]

RUN is a workspace or a run directory with personas (e.g. a `persona-llm build` of a small slice, or the
20 Newsgroups run `persona-llm eval-suite evals/suites/ci.toml` builds). A brief only reads the run.
One model server serves every brief; replies are never taken from the response cache.

Printed per brief: kind, persona, wall seconds, model seconds, calls (re-asks included), prompt and
completion tokens, generated tokens per second, cited claims kept / written, quotes kept / proposed,
the eval's independent re-check (citations valid, quotes verbatim, lexical support), confidence, and the
CPU. Messaging is one row per persona, so its time is the sum over its rows.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from persona_llm.briefs import BriefWriter, render_brief  # noqa: E402
from persona_llm.evaluation.runner import evaluate_run  # noqa: E402
from persona_llm.evaluation.suite import Suite  # noqa: E402
from persona_llm.llm.client import open_chat_model  # noqa: E402
from persona_llm.runs.workspace import resolve_run  # noqa: E402
from persona_llm.schema.manifest import cpu_description  # noqa: E402
from persona_llm.workflows import llm_settings  # noqa: E402

console = Console(width=180)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path)
    parser.add_argument("--personas", default="0", help="segment ids or persona ids for campaign and narrative")
    parser.add_argument("--kinds", default="campaign,narrative,messaging")
    parser.add_argument("--goal", default="launch of the annual plan")
    parser.add_argument("--channel", default="email")
    parser.add_argument("--llm", default=None)
    parser.add_argument("--llm-url", default=None)
    parser.add_argument("--llm-model", default=None)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", type=Path, default=None, help="also write each brief here as .md and .json")
    args = parser.parse_args()

    run = resolve_run(args.run)
    cache = Path(tempfile.mkdtemp(prefix="bench-briefs-cache-"))  # a fresh cache: every reply generated
    settings = llm_settings(args.llm, args.llm_url, args.llm_model, threads=args.threads, cache_dir=cache)
    table = Table(title=f"Briefs on {run.path.name} ({len(run.load_personas())} personas), goal {args.goal!r}")
    for col in ("kind", "persona", "wall s", "model s", "calls", "prompt tok", "completion tok", "gen tok/s",
                "claims kept/written", "quotes kept/proposed", "eval: cites ok, verbatim, lexical", "confidence"):  # fmt: skip
        table.add_column(col, overflow="fold")
    jobs: list[tuple[str, str]] = []
    for kind in args.kinds.split(","):
        targets = ["all"] if kind == "messaging" else args.personas.split(",")
        jobs.extend((kind, t) for t in targets)
    with open_chat_model(settings) as chat:
        console.print(f"model {chat.model_id} · {chat.info}")
        for kind, target in jobs:
            writer = BriefWriter(settings, chat=chat)
            brief = writer.write(run, persona_id=target, goal=args.goal, kind=kind, channel=args.channel)
            stats = writer.stats()
            if args.out is not None:
                args.out.mkdir(parents=True, exist_ok=True)
                stem = args.out / f"{kind}-{target}-{brief.brief_id}"
                stem.with_suffix(".md").write_text(render_brief(brief, "md"), encoding="utf-8")
                stem.with_suffix(".json").write_text(render_brief(brief, "json"), encoding="utf-8")
            kept = written = quotes = proposed = 0
            for part in brief.parts():
                kept += len(part.cited)
                written += len(part.cited) + sum(r.field in ("insights", "story", "insight") for r in part.provenance.statements_removed)
                quotes += len(part.quotes)
                proposed += part.provenance.quotes_proposed
            report = evaluate_run(run, suite=Suite(name="briefs", metrics=["briefs"]), briefs=[brief], write=False)
            m: dict[str, Any] = report.metrics
            tps = stats["completion_tokens"] / stats["llm_seconds"] if stats["llm_seconds"] else None
            table.add_row(
                kind, target, f"{stats['wall_seconds']:.0f}", f"{stats['llm_seconds']:.0f}", str(stats["calls"]),
                str(stats["prompt_tokens"]), str(stats["completion_tokens"]), _fmt(tps), f"{kept}/{written}",
                f"{quotes}/{proposed}",
                f"{_fmt(m.get('brief_citation_valid'))}, {_fmt(m.get('brief_quote_verified'))}, {_fmt(m.get('brief_support_lexical'))}",
                brief.confidence,
            )  # fmt: skip
            console.print(f"  {kind} {target}: {stats['wall_seconds']:.0f} s, {stats['completion_tokens']} tokens")
    console.print(table)
    console.print(f"CPU: {cpu_description()}, {len(os.sched_getaffinity(0))} usable cores; load {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
