"""Persona writing on GPU with vLLM: wall time and tokens/s for N personas (default 50), written through the
ray executor (Ray actors, `--concurrency` per endpoint) or the local concurrent writer (threads).

    # a GPU machine: vLLM in its own venv (scripts/requirements-vllm-node.txt), a model folder on disk
    python bench/bench_gpu_vllm.py --model /models/Qwen2.5-7B-Instruct --vllm-bin /opt/vllm/bin/vllm
    # servers already running (one per GPU node), spread over with the ray executor
    python bench/bench_gpu_vllm.py --llm-url http://10.0.0.5:8000/v1,http://10.0.0.6:8000/v1
    # the local concurrent writer instead of Ray, for comparison
    python bench/bench_gpu_vllm.py --model ... --executor local

Without --llm-url it starts `vllm serve MODEL` on a free loopback port (log beside --out) and stops it
after; that needs an NVIDIA GPU (nvidia-smi) and the vllm command, and the script says which is missing
and exits 2 before any work. vLLM cannot share persona-llm's environment (it needs transformers >= 5.10,
persona-llm's ONNX embedder < 4.58), hence --vllm-bin.

The run: `--run` (a workspace or run directory, copied first), or `--input` segmented here (default: the
shared 20 Newsgroups posts, `--max-rows` of them). Personas are written in rounds over the run's segments
(all segments of a round at once) until N are written; replies never come from the response cache.
Printed: personas, wall seconds, personas per minute, prompt and completion tokens, completion tokens per
wall second (the serving throughput), failures, the GPU (nvidia-smi) and the CPU. `--out` gets the
figures as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("PERSONA_LLM_DATA", str(ROOT.parent / "shared" / "data")))
DEFAULT_INPUT = DATA / "20newsgroups" / "posts.csv.gz"
sys.path.insert(0, str(ROOT))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="model folder (or name in the HF cache) for `vllm serve`")
    p.add_argument("--llm-url", help="comma-separated base URLs (…/v1) of running vLLM servers (no server started)")
    p.add_argument("--vllm-bin", default="vllm", help="the vllm command of vLLM's own environment")
    p.add_argument("--vllm-args", default="", help="extra `vllm serve` arguments, e.g. '--max-model-len 8192'")
    p.add_argument("--gpu-memory-utilization", type=float, default=0.85)
    p.add_argument("--startup-timeout", type=float, default=900.0, help="seconds to wait for vLLM to load")
    p.add_argument("--executor", choices=("ray", "local"), default="ray")
    p.add_argument("--concurrency", type=int, default=16, help="segments in flight per endpoint")
    p.add_argument("--n-personas", type=int, default=50)
    p.add_argument("--run", type=Path, help="an existing workspace or run directory (copied, never changed)")
    p.add_argument("--input", type=Path, default=DEFAULT_INPUT, help="texts to segment when --run is not given")
    p.add_argument("--user-column", default="user_id")
    p.add_argument("--text-column", default="body")
    p.add_argument("--max-rows", type=int, default=20000)
    p.add_argument("--min-cluster-size", type=int, default=None)
    p.add_argument("--max-tokens", type=int, default=1500, help="completion token limit per call")
    p.add_argument("--out", type=Path, default=Path("bench/results/gpu-vllm.json"))
    return p.parse_args(argv)


def gpu_names() -> list[str]:
    """GPU names from nvidia-smi; empty when there is no NVIDIA GPU (or no driver)."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        out = subprocess.run(
            [smi, "--query-gpu=name,memory.total", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=30, check=True,
        ).stdout  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.splitlines() if line.strip()]


def problems(args: argparse.Namespace) -> list[str]:
    """What stops this bench on this machine, before any work (empty: go)."""
    found: list[str] = []
    if args.n_personas < 1 or args.concurrency < 1:
        found.append("--n-personas and --concurrency must be >= 1")
    if not args.llm_url:
        if not gpu_names():
            found.append(
                "no NVIDIA GPU here (nvidia-smi missing or lists none): run this on a GPU machine, "
                "or pass --llm-url of running vLLM servers"
            )
        if shutil.which(args.vllm_bin) is None:
            found.append(
                f"vLLM command {args.vllm_bin!r} not found: install scripts/requirements-vllm-node.txt in its own "
                "venv and pass --vllm-bin VENV/bin/vllm"
            )
        if not args.model:
            found.append("--model is needed to start vLLM (or pass --llm-url)")
    if args.run is None and not args.input.exists():
        found.append(f"{args.input}: input not found (pass --input or --run)")
    if args.executor == "ray":
        try:
            import ray  # noqa: F401
        except ImportError:
            found.append("the ray executor needs Ray: pip install 'persona-llm[cluster]' (or --executor local)")
    return found


def vllm_server(args: argparse.Namespace, log_path: Path) -> Any:
    """`vllm serve MODEL` from vLLM's own environment, on a free loopback port (persona-llm's LocalServer
    does the port, the readiness wait and the shutdown)."""
    from persona_llm.llm.vllm import VLLMServer

    class ServeCommand(VLLMServer):
        def command(self, port: int) -> list[str]:
            return [
                args.vllm_bin, "serve", self.model, "--host", "127.0.0.1", "--port", str(port),
                "--served-model-name", Path(self.model).name, "--gpu-memory-utilization",
                str(args.gpu_memory_utilization), *self.extra_args,
            ]  # fmt: skip

        def _prepare(self) -> None:  # vLLM is not importable here by design: its command is checked above
            return None

    return ServeCommand(
        args.model, startup_timeout_s=args.startup_timeout, extra_args=tuple(args.vllm_args.split()), log_path=log_path
    )


def prepare_run(args: argparse.Namespace, scratch: Path) -> Path:
    """A run directory to write into: a copy of --run's (published) run, or --input segmented here."""
    from persona_llm import workflows
    from persona_llm.runs.workspace import resolve_run

    if args.run is not None:
        source = resolve_run(args.run).path
        target = scratch / "run"
        shutil.copytree(source, target, symlinks=True)
        return target
    columns = workflows.column_map(workflows.Config(), user=args.user_column, text=args.text_column)
    overrides = {"min_cluster_size": args.min_cluster_size}
    result = workflows.segment(args.input, scratch / "ws", columns=columns, overrides=overrides, max_rows=args.max_rows)
    return result.run.path


def write_rounds(args: argparse.Namespace, run_path: Path, urls: list[str]) -> dict[str, Any]:
    """Write personas over the run's segments, round after round, until --n-personas are written."""
    from persona_llm.llm.client import LLMSettings
    from persona_llm.personas.writer import PersonaWriteError, PersonaWriter
    from persona_llm.runs.rundir import RunDir
    from persona_llm.scale import RayExecutor, ScaleSettings

    run = RunDir.open(run_path)
    segment_ids = [s.segment_id for s in run.load_segments().segments]
    settings = LLMSettings(
        backend="vllm", base_url=urls[0], concurrency=args.concurrency, use_cache=False, max_tokens=args.max_tokens
    )
    executor = RayExecutor(ScaleSettings(executor="ray", llm_urls=urls)) if args.executor == "ray" else None
    totals = {"personas": 0, "failed": 0, "prompt_tokens": 0, "completion_tokens": 0, "calls": 0, "rounds": 0}
    started = time.perf_counter()
    try:
        while totals["personas"] + totals["failed"] < args.n_personas:
            ids = segment_ids[: args.n_personas - totals["personas"] - totals["failed"]]
            writer = PersonaWriter(settings, executor=executor, write_report=False, write_store=False)
            try:
                writer.write(run, ids)
            except PersonaWriteError as exc:
                print(f"round {totals['rounds'] + 1}: {len(exc.failures)} segment(s) failed", file=sys.stderr)
            stats = writer.stats_
            totals["personas"] += int(stats["personas"])
            totals["failed"] += len(stats["failed_segments"])
            for key in ("prompt_tokens", "completion_tokens", "calls"):
                totals[key] += int(stats[key])
            totals["rounds"] += 1
            print(f"round {totals['rounds']}: {stats['personas']} personas in {stats['wall_seconds']} s", file=sys.stderr)
    finally:
        if executor is not None:
            executor.close()
    wall = time.perf_counter() - started
    totals["wall_seconds"] = round(wall, 2)
    totals["personas_per_minute"] = round(60 * totals["personas"] / wall, 2) if wall else None
    totals["completion_tokens_per_second"] = round(totals["completion_tokens"] / wall, 1) if wall else None
    return totals


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    found = problems(args)
    if found:
        for line in found:
            print(f"bench_gpu_vllm: {line}", file=sys.stderr)
        return 2
    from persona_llm.schema.manifest import cpu_description

    args.out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bench-gpu-vllm-") as tmp:
        scratch = Path(tmp)
        t0 = time.perf_counter()
        run_path = prepare_run(args, scratch)
        prepare_s = time.perf_counter() - t0
        if args.llm_url:
            urls = [u.strip().rstrip("/") for u in args.llm_url.split(",") if u.strip()]
            figures = write_rounds(args, run_path, urls)
            startup_s = 0.0
        else:
            t1 = time.perf_counter()
            with vllm_server(args, args.out.with_suffix(".vllm.log")) as server:
                startup_s = time.perf_counter() - t1
                figures = write_rounds(args, run_path, [server.base_url])
    report = {
        **figures,
        "executor": args.executor,
        "endpoints": len(args.llm_url.split(",")) if args.llm_url else 1,
        "concurrency_per_endpoint": args.concurrency,
        "model": args.model or "(servers at --llm-url)",
        "vllm_startup_seconds": round(startup_s, 1),
        "run_prepare_seconds": round(prepare_s, 1),
        "gpus": gpu_names(),
        "cpu": cpu_description(),
    }
    args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    width = max(len(k) for k in report)
    for key, value in report.items():
        print(f"{key:<{width}}  {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
