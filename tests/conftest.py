"""Fixtures shared across test modules: one embedded model server for every test that needs the real
model (starting llama.cpp costs seconds and its weights ~1 GB of memory; two at once on 2 cores would
halve each other's speed), one small published workspace with personas from the scripted server, and one
local Ray for every Ray test (tests/test_ray_*.py).

All are session-scoped and read-only for their users: a test that changes a workspace copies it first
(`copy_workspace`).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fake_openai import FakeOpenAIServer
from tests.run_store_data import write_csv


@pytest.fixture(scope="session")
def embedded_chat(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A ChatModel on the real embedded backend (llama.cpp + Qwen2.5-Coder-1.5B), shared by the session.

    Its reply cache is fresh, so tests call the model. PERSONA_LLM_MODEL=qwen-0.5b is faster;
    PERSONA_LLM_THREADS fixes the thread count (default: the free cores, retuned between tasks)."""
    from persona_llm.llm.client import LLMSettings
    from persona_llm.llm.embedded import open_embedded

    settings = LLMSettings(
        backend="embedded",
        model=os.environ.get("PERSONA_LLM_MODEL") or None,
        n_threads=int(os.environ["PERSONA_LLM_THREADS"]) if os.environ.get("PERSONA_LLM_THREADS") else None,
        cache_dir=tmp_path_factory.mktemp("embedded-llm-cache"),
        max_tokens=1200,
    )
    with open_embedded(settings) as chat:
        yield chat


@pytest.fixture(scope="session")
def persona_workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A workspace whose published run has three segments (coffee, running, garden: tests/run_store_data)
    with personas written by the scripted server (quotes are the segment's own first texts). Read-only:
    copy it with `copy_workspace` before changing anything."""
    from persona_llm import workflows
    from persona_llm.llm.client import LLMSettings
    from tests.test_run_store import persona_reply

    base = tmp_path_factory.mktemp("persona-workspace")
    small = write_csv(base / "small.csv")
    with FakeOpenAIServer(default=persona_reply("First")) as server:
        settings = LLMSettings(
            backend="openai", base_url=server.base_url, model="fake-model", cache_dir=base / "llm-cache"
        )
        workflows.build(
            small,
            base / "ws",
            columns=workflows.column_map(workflows.Config(), user="user_id", text="text"),
            settings=settings,
            max_segments=3,
        )
    return base / "ws"


#: The last test (in run order) that uses `ray_session`: Ray is shut down after it.
_LAST_RAY_TEST = pytest.StashKey[str]()


@pytest.fixture(scope="session")
def ray_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """One local Ray for the test session (`ray.init(num_cpus=2)`): starting Ray is the cost, and two at
    once would fight over the 2 cores. Executors find it running and leave it up. It is shut down right
    after the last test that uses it (idle, it still holds ~700 MB and a few % of a core), else at the end.
    Its workers' default cache root is the session's own (a worker resolves its cache in its own
    environment), so no test reads replies cached in the user's cache by another run."""
    ray = pytest.importorskip("ray", reason="the cluster extra (pip install 'persona-llm[cluster]') is not installed")
    cache = tmp_path_factory.mktemp("ray-worker-cache")
    ray.init(
        num_cpus=2, include_dashboard=False, logging_level="WARNING",
        runtime_env={"env_vars": {"PERSONA_LLM_CACHE_DIR": str(cache)}},
    )  # fmt: skip
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield
    ray.shutdown()


@pytest.hookimpl(trylast=True)  # after any plugin that reorders the tests
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    users = [item.nodeid for item in items if "ray_session" in getattr(item, "fixturenames", ())]
    if users:
        config.stash[_LAST_RAY_TEST] = users[-1]


def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    if item.config.stash.get(_LAST_RAY_TEST, None) == item.nodeid:
        import ray

        ray.shutdown()  # no later test uses it; the fixture's own shutdown at the end is then a no-op


def copy_workspace(source: Path, dest: Path) -> Path:
    """A private copy of a workspace (symlinks kept), for tests that publish, refresh or forget."""
    shutil.copytree(source, dest, symlinks=True)
    return dest
