"""How often the chat refuses what it should and answers what it should: the scope rule, the router,
and the two combined, on labelled questions.

    python bench/bench_chat_scope.py QUESTIONS.jsonl [...]               # the rule alone (no model)
    python bench/bench_chat_scope.py QUESTIONS.jsonl --run RUN --router  # + the router on the embedded model
    python bench/bench_chat_scope.py QUESTIONS.jsonl --routes OUT.jsonl  # the router's decisions of an earlier --out

QUESTIONS: JSON lines {"question", "in_scope", "lang"}. evals/cases/chat_scope_a.jsonl and
chat_scope_b.jsonl were written by two helpers who never saw the rule (persona_llm.chat.scope); set a
was then looked at and the rule changed after it, so set a is development data and set b, looked at
once, is the held-out figure.

Printed per set and language, for each policy: out-of-scope questions refused (should be all) and
in-scope questions refused (should be none).

* rule: refuse when the rule says "out" (everything else answered);
* router: refuse when the router's intent is out_of_scope (the chat before the rule);
* rule + router: refuse when the rule says "out", or the router refuses and the rule did not say "in"
  (what SegmentChat does).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from persona_llm.chat.scope import question_scope  # noqa: E402
from persona_llm.schema.manifest import cpu_description  # noqa: E402

console = Console()

Policy = Callable[[dict[str, Any]], bool]
POLICIES: dict[str, Policy] = {
    "rule": lambda r: r["verdict"] == "out",
    "router": lambda r: r["router"] == "out_of_scope",
    "rule + router": lambda r: r["verdict"] == "out" or (r["router"] == "out_of_scope" and r["verdict"] != "in"),
}


def load_questions(path: Path) -> list[dict[str, Any]]:
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            row = json.loads(line)
            if not isinstance(row.get("in_scope"), bool) or not str(row.get("question", "")).strip():
                raise SystemExit(f"{path}:{number}: needs 'question' and a true/false 'in_scope'")
            rows.append({"set": path.stem, **row})
    return rows


def table(rows: list[dict[str, Any]], policies: list[str]) -> Table:
    out = Table(title="refusals by policy (refused / asked)")
    out.add_column("set"), out.add_column("lang")
    for name in policies:
        out.add_column(f"{name}: out-of-scope refused", justify="right")
        out.add_column(f"{name}: in-scope refused", justify="right")
    groups = sorted({(r["set"], r["lang"]) for r in rows}) + sorted({(r["set"], "all") for r in rows})
    for set_name, lang in groups:
        sel = [r for r in rows if r["set"] == set_name and lang in ("all", r["lang"])]
        oos, ins = [r for r in sel if not r["in_scope"]], [r for r in sel if r["in_scope"]]
        cells = []
        for name in policies:
            refuse = POLICIES[name]
            cells += [f"{sum(map(refuse, oos))}/{len(oos)}", f"{sum(map(refuse, ins))}/{len(ins)}"]
        out.add_row(set_name, lang, *cells)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("questions", nargs="+", type=Path)
    parser.add_argument("--run", help="a workspace or run directory (the router prompt names its segments)")
    parser.add_argument("--router", action="store_true", help="ask the router too (the LLM backend)")
    parser.add_argument("--llm"), parser.add_argument("--llm-url"), parser.add_argument("--llm-model")
    parser.add_argument("--routes", type=Path, help="take the router's decisions from an earlier --out file (same questions)")
    parser.add_argument("--out", type=Path, help="write every question's decisions as JSON lines here")
    parser.add_argument("--show-wrong", action="store_true", help="print the questions each policy gets wrong")
    args = parser.parse_args()

    rows = [r for path in args.questions for r in load_questions(path)]
    console.print(f"{len(rows)} questions; CPU {cpu_description()}")
    for r in rows:
        decision = question_scope(r["question"])
        r.update(verdict=decision.verdict, about_run=decision.about_run, cues=decision.cues, router=None)
    policies = ["rule"]
    if args.routes:
        earlier = {r["question"]: r["router"] for r in map(json.loads, args.routes.read_text(encoding="utf-8").splitlines()) if r.get("router")}
        missing = [r["question"] for r in rows if r["question"] not in earlier]
        if missing:
            parser.error(f"{args.routes} has no router decision for {len(missing)} question(s), e.g. {missing[0]!r}")
        for r in rows:
            r["router"] = earlier[r["question"]]
        policies += ["router", "rule + router"]
    elif args.router:
        if not args.run:
            parser.error("--router needs --run")
        from persona_llm.chat import SegmentChat
        from persona_llm.llm.client import open_chat_model
        from persona_llm.runs.workspace import resolve_run
        from persona_llm.workflows import llm_settings

        run = resolve_run(args.run)
        settings = llm_settings(args.llm, args.llm_url, args.llm_model, use_cache=False)
        started = time.perf_counter()
        with open_chat_model(settings) as model, SegmentChat(run, chat=model, strategy="router") as chat:
            console.print(f"model {model.model_id}; load average {os.getloadavg()[0]:.1f}")
            for i, r in enumerate(rows, 1):
                r["router"] = chat.route(r["question"]).intent
                if i % 20 == 0:
                    console.print(f"  {i}/{len(rows)} routed, {time.perf_counter() - started:.0f}s")
        console.print(f"router: {len(rows)} questions in {time.perf_counter() - started:.0f}s")
        policies += ["router", "rule + router"]
    console.print(table(rows, policies))
    if args.show_wrong:
        for name in policies:
            for r in rows:
                if POLICIES[name](r) == r["in_scope"]:
                    what = "refused" if r["in_scope"] else "answered"
                    console.print(f"  [{name}] {what}: {r['question']!r} (rule {r['verdict']}, router {r['router']})")
    if args.out:
        args.out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


if __name__ == "__main__":
    main()
