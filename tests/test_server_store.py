"""The server in store-server mode: a workspace segmented with `[store] url` keeps its records in a `chroma
run` server (tests/chroma_server.py, a free loopback port); the server reads the run's manifest, talks to
that store, reports it in /readyz, and is not ready once the store stops answering."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from persona_llm import workflows
from persona_llm.runs.workspace import Workspace
from persona_llm.segment.base import TEXTS
from persona_llm.segment.store import ChromaStore, store_for_run
from persona_llm.server import create_app
from tests.chroma_server import ChromaServer
from tests.run_store_data import customer_texts
from tests.test_server import client_for


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def chroma_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChromaServer]:
    with ChromaServer(tmp_path_factory.mktemp("server-chroma") / "store") as server:
        yield server


@pytest.fixture(scope="module")
def server_workspace(chroma_server: ChromaServer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("store-ws")
    customer_texts(users_per_topic=8).to_csv(base / "texts.csv", index=False)
    config = base / "config.toml"
    config.write_text(f'[columns]\nuser = "user_id"\ntext = "text"\n[store]\nurl = "{chroma_server.url}"\n')
    cfg = workflows.load_config(config)
    workflows.segment(base / "texts.csv", base / "ws", columns=workflows.column_map(cfg), config=cfg)
    return base / "ws"


@pytest.mark.anyio
async def test_the_server_reads_a_run_whose_store_is_a_chroma_server(
    server_workspace: Path, chroma_server: ChromaServer
) -> None:
    run = Workspace.open(server_workspace).current()
    store = store_for_run(run)
    assert isinstance(store, ChromaStore) and store.url == chroma_server.url
    assert not run.store_path.exists()  # nothing of the store inside the run folder
    expected = store.count(TEXTS, run.run_id)
    async with client_for(create_app(server_workspace)) as c:
        ready = await c.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json()["checks"]["store"]["detail"] == f"server store, {expected} texts" and expected > 0
        segments = (await c.get("/v1/segments")).json()["segments"]
        assert [s["segment_id"] for s in segments] == [s.segment_id for s in run.load_segments().segments]
        chroma_server.stop()
        down = await c.get("/readyz")
        assert down.status_code == 503 and "store does not answer" in down.json()["checks"]["store"]["detail"]
        assert (await c.get("/healthz")).status_code == 200
