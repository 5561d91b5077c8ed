"""The HTTP server under load, over loopback only: read endpoints' latency (p50/p95) and requests per
second at 1, 10 and 50 concurrent clients, the server process's memory, and chat with 4 concurrent
conversations on the embedded model (llama.cpp, Qwen2.5-Coder-1.5B). Prints tables.

    python bench/bench_server.py [--workspace WS] [--requests 600] [--seconds 20] [--concurrency 1,10,50]
                                 [--chat 4] [--chat-timeout 1500]

The server is the real `persona-llm serve` in its own process on a free 127.0.0.1 port (so the clients,
asyncio + httpx in this process, do not share its interpreter); it is stopped at the end. Without
--workspace a workspace is built first from the run-store test texts (tests/run_store_data.py, 3 topics)
with personas from the scripted model server (tests/fake_openai.py): the numbers are the server's, not a
model's. Each level sends at most --requests requests and stops after --seconds, whichever comes first;
requests cycle through segments, one segment, personas, one persona, search, one text and the user map.

Chat (`--chat N`, 0 to skip): a second `serve`, with the embedded model, and N conversations started at
once, one question each; the server's one model slot takes them in turn, so the table shows each
question's wait, first streamed token and whole answer. Each waits at most --chat-timeout seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from persona_llm.schema.manifest import cpu_description  # noqa: E402


def build_workspace(out: Path, users_per_topic: int) -> Path:
    from persona_llm import workflows
    from persona_llm.llm.client import LLMSettings
    from tests.fake_openai import FakeOpenAIServer
    from tests.run_store_data import write_csv
    from tests.test_run_store import persona_reply

    csv = write_csv(out / "texts.csv", users_per_topic=users_per_topic)
    with FakeOpenAIServer(default=persona_reply("Bench")) as server:
        settings = LLMSettings(backend="openai", base_url=server.base_url, model="fake-model", cache_dir=out / "llm")
        workflows.build(
            csv, out / "ws", columns=workflows.column_map(workflows.Config(), user="user_id", text="text"),
            settings=settings, max_segments=3,
        )  # fmt: skip
    return out / "ws"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def serve(workspace: Path, log: Path, *, chat: bool = False, ready_timeout: float = 60) -> Iterator[tuple[str, int]]:
    """`persona-llm serve` on a free loopback port until it is ready (with chat: until the model answers)."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "PERSONA_LLM_API_KEYS": "",
           "PERSONA_LLM_API_KEYS_FILE": ""}  # fmt: skip
    cmd = [sys.executable, "-c", "from persona_llm.cli import app; app()", "serve", str(workspace), "--port", str(port),
           "--rate", "1e9"]  # fmt: skip
    cmd += ["--llm", "embedded"] if chat else ["--no-llm"]
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + ready_timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"serve exited: {log.read_text()[-2000:]}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(url + "/readyz", timeout=5).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"serve was not ready in {ready_timeout:.0f} s")
            time.sleep(0.5)
        yield url, proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def memory_mb(pid: int) -> tuple[float, float]:
    """(current RSS, peak RSS) of a process in MB, from /proc."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def request_paths(url: str) -> list[str]:
    segs = httpx.get(url + "/v1/segments").json()["segments"]
    personas = httpx.get(url + "/v1/personas").json()["personas"]
    text_id = personas[0]["quotes"][0]["text_id"]
    return [
        "/v1/segments", f"/v1/segments/{segs[0]['segment_id']}", "/v1/personas",
        f"/v1/personas/{personas[0]['persona_id']}", "/v1/search?q=coffee%20beans&limit=20",
        f"/v1/texts/{text_id}", "/v1/map",
    ]  # fmt: skip


async def load(url: str, paths: list[str], concurrency: int, max_requests: int, max_seconds: float) -> dict[str, object]:
    latencies: dict[str, list[float]] = {p.split("?")[0]: [] for p in paths}
    errors = 0
    sent = 0
    started = time.perf_counter()
    deadline = started + max_seconds
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:

        async def worker() -> None:
            nonlocal sent, errors
            while sent < max_requests and time.perf_counter() < deadline:
                path = paths[sent % len(paths)]
                sent += 1
                t0 = time.perf_counter()
                r = await client.get(path)
                ms = (time.perf_counter() - t0) * 1000
                if r.status_code != 200:
                    errors += 1
                latencies[path.split("?")[0]].append(ms)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - started
    every = [x for v in latencies.values() for x in v]
    return {"n": len(every), "errors": errors, "wall": wall, "all": every, "by_path": latencies}


CHAT_QUESTIONS = [
    "What do customers say about their espresso machines?",
    "Which segment is the largest, and what is it about?",
    "What problems do the runners mention with their shoes?",
    "What do gardeners complain about?",
    "What do the coffee drinkers say about beans?",
    "What gear do runners talk about?",
]


def ask_streaming(url: str, question: str, timeout: float) -> dict[str, object]:
    """One question over POST /v1/chat: seconds to the first event, the first token and the final answer."""
    import json

    started = time.perf_counter()
    out: dict[str, object] = {"question": question, "first_event": None, "first_token": None, "total": None, "error": ""}
    client = httpx.Client(base_url=url, timeout=httpx.Timeout(timeout, connect=10))
    with client, client.stream("POST", "/v1/chat", json={"question": question}) as response:
        if response.status_code != 200:
            out["error"] = f"HTTP {response.status_code}: {response.read().decode()[:200]}"
            return out
        event = ""
        for line in response.iter_lines():
            now = time.perf_counter() - started
            if line.startswith("event:"):
                event = line[6:].strip()
                if out["first_event"] is None and event != "conversation":
                    out["first_event"] = now
            elif line.startswith("data:"):
                if event == "token" and out["first_token"] is None:
                    out["first_token"] = now
                elif event == "final":
                    answer = json.loads(line[5:])
                    out.update(total=now, citations=len(answer["citations"]), passed=answer["checks"]["passed"],
                               refused=answer["refused"], answer=answer["answer"][:160])  # fmt: skip
                elif event == "error":
                    out["error"] = json.loads(line[5:])["error"]
    return out


def chat_bench(workspace: Path, tmp: Path, n: int, timeout: float, console: Console) -> None:
    import threading

    console.print(f"chat: starting serve with the embedded model, then {n} conversations at once")
    t0 = time.perf_counter()
    with serve(workspace, tmp / "chat-server.log", chat=True, ready_timeout=900) as (url, pid):
        ready_s = time.perf_counter() - t0
        llm = httpx.get(url + "/readyz").json()["checks"]["llm"]["detail"]
        rss_ready, _ = memory_mb(pid)
        results: list[dict[str, object]] = [{} for _ in range(n)]

        def run(i: int) -> None:
            try:
                results[i] = ask_streaming(url, CHAT_QUESTIONS[i % len(CHAT_QUESTIONS)], timeout)
            except Exception as exc:  # noqa: BLE001 - a failed conversation is a row of the table
                results[i] = {"question": CHAT_QUESTIONS[i % len(CHAT_QUESTIONS)], "error": f"{type(exc).__name__}: {exc}"}

        started = time.perf_counter()
        threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - started
        rss, peak = memory_mb(pid)
    table = Table(title=f"chat: {n} conversations at once, one model slot ({llm})")
    for col in ("#", "question", "first event s", "first token s", "answer s", "citations", "checks", "error"):
        table.add_column(col, overflow="fold")
    fmt = lambda v: "-" if v is None else f"{v:.1f}"  # noqa: E731
    for i, r in enumerate(results):
        table.add_row(
            str(i + 1), str(r.get("question", ""))[:48], fmt(r.get("first_event")), fmt(r.get("first_token")),  # type: ignore[arg-type]
            fmt(r.get("total")), str(r.get("citations", "-")),  # type: ignore[arg-type]
            "-" if "passed" not in r else ("passed" if r["passed"] else "fixed/removed"), str(r.get("error", ""))[:80],
        )  # fmt: skip
    console.print(table)
    failed = sum(bool(r.get("error")) or r.get("total") is None for r in results)
    console.print(
        f"chat: {n - failed} of {n} answered, {failed} failed; wall {wall:.0f}s for all; server ready (model loaded) "
        f"after {ready_s:.0f}s; server memory {rss_ready:.0f} MB when ready, {rss:.0f} MB after, peak {peak:.0f} MB"
    )


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1] if len(values) > 1 else values[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workspace", type=Path, help="a persona-llm workspace (default: build a small one)")
    ap.add_argument("--users-per-topic", type=int, default=200, help="size of the built workspace (3 topics)")
    ap.add_argument("--requests", type=int, default=600, help="most requests per concurrency level")
    ap.add_argument("--seconds", type=float, default=20.0, help="most seconds per concurrency level")
    ap.add_argument("--concurrency", default="1,10,50")
    ap.add_argument("--chat", type=int, default=4, help="concurrent chat conversations on the embedded model (0: none)")
    ap.add_argument("--chat-timeout", type=float, default=1500.0, help="most seconds one chat answer may take")
    args = ap.parse_args()
    levels = [int(x) for x in args.concurrency.split(",")]

    console = Console()
    console.print(f"CPU: {cpu_description()} · load average {os.getloadavg()[0]:.2f} (other processes share the cores)")
    tmp = Path(tempfile.mkdtemp(prefix="bench-server-"))
    workspace = args.workspace
    if workspace is None:
        t0 = time.perf_counter()
        workspace = build_workspace(tmp, args.users_per_topic)
        console.print(f"built a workspace of {3 * args.users_per_topic} users in {time.perf_counter() - t0:.0f}s")
    with serve(workspace, tmp / "server.log") as (url, pid):
        idle_rss, _ = memory_mb(pid)
        paths = request_paths(url)
        warm = asyncio.run(load(url, paths, 1, len(paths) * 2, 30))  # load each run's files once
        assert warm["errors"] == 0, "the server answered errors while warming up"
        table = Table(title=f"read endpoints over loopback ({len(paths)} endpoints in turn)")
        for col in ("clients", "requests", "errors", "req/s", "p50 ms", "p95 ms", "max ms", "server RSS MB"):
            table.add_column(col, justify="right")
        per_path: dict[str, list[float]] = {}
        for level in levels:
            result = asyncio.run(load(url, paths, level, args.requests, args.seconds))
            every: list[float] = result["all"]  # type: ignore[assignment]
            rss, _ = memory_mb(pid)
            table.add_row(
                str(level), str(result["n"]), str(result["errors"]), f"{result['n'] / result['wall']:.0f}",  # type: ignore[operator]
                f"{pct(every, 50):.1f}", f"{pct(every, 95):.1f}", f"{max(every):.1f}", f"{rss:.0f}",
            )  # fmt: skip
            if level == 1:
                per_path = result["by_path"]  # type: ignore[assignment]
        rss, peak = memory_mb(pid)
        console.print(table)
        by_path = Table(title="one client: latency by endpoint")
        for col in ("endpoint", "requests", "p50 ms", "p95 ms"):
            by_path.add_column(col, justify="right")
        for path, values in per_path.items():
            by_path.add_row(path, str(len(values)), f"{pct(values, 50):.1f}", f"{pct(values, 95):.1f}")
        console.print(by_path)
        console.print(f"server memory: {idle_rss:.0f} MB at start, {rss:.0f} MB after the runs, peak {peak:.0f} MB")
    if args.chat:
        chat_bench(workspace, tmp, args.chat, args.chat_timeout, console)
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
