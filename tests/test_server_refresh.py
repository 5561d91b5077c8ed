"""Refresh over HTTP: `POST /v1/admin/refresh` takes new data as the request body and refreshes the
workspace in a background job (persona_llm.refresh), `GET /v1/admin/jobs/{id}` reports it; readers switch
to the refreshed run without a restart; one writer at a time (409); bad requests are 422 before any
work; a refresh that fails leaves the published run as it was."""

from __future__ import annotations

import glob
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from persona_llm.runs.workspace import Workspace
from persona_llm.server import ServerSettings, create_app
from tests.conftest import copy_workspace
from tests.run_store_data import customer_texts
from tests.test_server import ADMIN_KEY, READ_KEY, auth, client_for, make_keys

pytestmark = pytest.mark.anyio
COLUMNS = {"user_column": "user_id", "text_column": "text"}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def new_users_csv() -> bytes:
    new = customer_texts(users_per_topic=2, seed=5)
    new["user_id"] = "new-" + new["user_id"]
    return new.to_csv(index=False).encode()


def spool_dirs() -> set[str]:
    return set(glob.glob(str(Path(tempfile.gettempdir()) / "persona-llm-refresh-*")))


async def wait_for(c: Any, job_id: str, timeout: float = 180) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        job = (await c.get(f"/v1/admin/jobs/{job_id}", headers=auth(ADMIN_KEY))).json()
        if job["status"] != "running":
            return job  # type: ignore[no-any-return]
        assert time.monotonic() < deadline, job
        await __import__("anyio").sleep(0.2)


async def test_a_refresh_runs_in_the_background_and_readers_follow_it(persona_workspace: Path, tmp_path: Path) -> None:
    ws = copy_workspace(persona_workspace, tmp_path / "ws")
    before = Workspace.open(ws).current_name()
    spools = spool_dirs()
    app = create_app(ws, keys=make_keys())
    async with client_for(app) as c:
        r = await c.post("/v1/admin/refresh", params=COLUMNS, content=new_users_csv(), headers=auth(ADMIN_KEY))
        assert r.status_code == 202, r.text
        started = r.json()
        assert started["status"] == "running" and started["kind"] == "refresh"
        job = await wait_for(c, started["job_id"])
        assert job["status"] == "published" and job["exit_code"] == 0, job
        assert job["summary"]["users_added"] == 6 and job["summary"]["llm_calls"] == 0  # no persona changed enough
        assert job["result"]["previous_run"] and job["lines"]
        after = (await c.get("/v1/segments", headers=auth(READ_KEY))).json()["run"]
        assert after == Workspace.open(ws).current_name() != before
        assert (await c.get(f"/v1/admin/jobs/{started['job_id']}", headers=auth(READ_KEY))).status_code == 403
        assert (await c.get("/v1/admin/jobs/j-nope", headers=auth(ADMIN_KEY))).status_code == 404
        # The same data again changes nothing: unchanged (exit 3), nothing published.
        again = await wait_for(c, (await c.post("/v1/admin/refresh", params=COLUMNS, content=new_users_csv(),
                                                headers=auth(ADMIN_KEY))).json()["job_id"])  # fmt: skip
        assert again["status"] == "unchanged" and again["exit_code"] == 3
        assert Workspace.open(ws).current_name() == after
    assert spool_dirs() == spools  # the uploaded data (unredacted texts) is gone


async def test_one_writer_at_a_time_and_bad_requests_cost_nothing(persona_workspace: Path, tmp_path: Path) -> None:
    ws = copy_workspace(persona_workspace, tmp_path / "ws")
    published = Workspace.open(ws).current_name()
    spools = spool_dirs()
    app = create_app(ws, keys=make_keys(), settings=ServerSettings(max_upload_bytes=4096))
    async with client_for(app) as c:
        for params, body, field in [
            ({"text_column": "text"}, b"user_id,text\nu,hello\n", "user_column"),
            ({**COLUMNS, "mode": "guess"}, b"user_id,text\nu,hello\n", "mode"),
            ({**COLUMNS, "format": "xml"}, b"<x/>", "format"),
            (COLUMNS, b"", "body"),
        ]:
            r = await c.post("/v1/admin/refresh", params=params, content=body, headers=auth(ADMIN_KEY))
            assert r.status_code == 422 and field in {f["field"] for f in r.json()["fields"]}, (params, r.text)
        too_big = await c.post("/v1/admin/refresh", params=COLUMNS, content=b"x" * 5000, headers=auth(ADMIN_KEY))
        assert too_big.status_code == 413
        assert (await c.post("/v1/admin/refresh", params=COLUMNS, content=b"a", headers=auth(READ_KEY))).status_code == 403
        # Another process writing the workspace: 409 before the upload is read.
        with Workspace.open(ws).lock():
            r = await c.post("/v1/admin/refresh", params=COLUMNS, content=b"user_id,text\nu,hi\n", headers=auth(ADMIN_KEY))
            assert r.status_code == 409 and "another writer" in r.json()["error"]
        # A job of this server running: the next one is 409.
        release = threading.Event()
        blocker = app.state.ctx.jobs.start("test", lambda say: (release.wait(30), ("unchanged", 3, {}, None))[1])
        r = await c.post("/v1/admin/refresh", params=COLUMNS, content=b"user_id,text\nu,hi\n", headers=auth(ADMIN_KEY))
        assert r.status_code == 409 and blocker.job_id in r.json()["error"]
        release.set()
        assert (await wait_for(c, blocker.job_id))["status"] == "unchanged"
        # A file the refresh cannot read: the job fails with the reason, the published run stays.
        bad = await c.post("/v1/admin/refresh", params={"user_column": "user_id", "text_column": "body"},
                           content=b"user_id,text\nu1,hello there\n", headers=auth(ADMIN_KEY))  # fmt: skip
        failed = await wait_for(c, bad.json()["job_id"])
        assert failed["status"] == "failed" and failed["exit_code"] == 2 and "body" in failed["error"]
    assert Workspace.open(ws).current_name() == published
    assert spool_dirs() == spools
