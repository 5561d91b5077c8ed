"""bench/bench_gpu_vllm.py parses its arguments and, on a machine without a GPU or vLLM, stops before any
work with a message that says what is missing (exit 2)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench" / "bench_gpu_vllm.py"


def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_gpu_vllm", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_without_a_gpu_it_says_so_and_exits_2(tmp_path: Path) -> None:
    module = bench()
    if module.gpu_names():
        pytest.skip("this machine has an NVIDIA GPU: the no-GPU message does not apply")
    data = tmp_path / "texts.csv"
    data.write_text("user_id,body\nu1,hello there\n")
    done = subprocess.run(
        [sys.executable, str(BENCH), "--model", "/models/none", "--input", str(data), "--vllm-bin", "no-such-vllm"],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 2
    assert "no NVIDIA GPU here" in done.stderr
    assert "'no-such-vllm' not found" in done.stderr and "requirements-vllm-node.txt" in done.stderr
    assert "Traceback" not in done.stderr


def test_arguments_and_what_each_case_needs(tmp_path: Path) -> None:
    module = bench()
    args = module.parse_args(["--llm-url", "http://127.0.0.1:9/v1", "--input", str(tmp_path / "missing.csv")])
    assert args.n_personas == 50 and args.executor == "ray" and args.concurrency == 16
    # servers given: no GPU or vLLM needed here, but the input must exist
    assert module.problems(args) == [f"{tmp_path / 'missing.csv'}: input not found (pass --input or --run)"]
    no_model = module.parse_args(["--run", str(tmp_path), "--vllm-bin", sys.executable])
    assert "--model is needed to start vLLM (or pass --llm-url)" in module.problems(no_model)
    assert module.problems(module.parse_args(["--llm-url", "http://x/v1", "--run", str(tmp_path), "--n-personas", "0"]))
