"""Background jobs of the server (a refresh of the workspace): one at a time, each in its own thread, its
status kept by id for a client to poll.

One at a time because a job writes the workspace, and the workspace has one writer: a second job while
one runs is refused (409) before anything starts, and so is a job while another process (a build, a
CLI refresh) holds the workspace's lock. The lock itself is taken by the job's own code (`refresh`), so
a process that takes it between the check and the job's start makes the job end as "locked".
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, Field

from persona_llm.errors import PersonaLLMError, WorkspaceLockedError

log = logging.getLogger(__name__)

JobStatus = Literal["running", "published", "unchanged", "gate_failed", "dry_run", "locked", "failed"]
#: Lines of progress a job keeps (the last ones).
MAX_LINES = 200


class JobRunning(PersonaLLMError):
    """Another job is running (a 409)."""


class Job(BaseModel):
    job_id: str
    kind: str
    status: JobStatus = "running"
    started_at: float
    finished_at: float | None = None
    exit_code: int | None = Field(default=None, description="as the command line's (0 published, 3 unchanged, ...)")
    error: str = ""
    summary: dict[str, Any] = Field(default_factory=dict, description="what the job did, in brief")
    result: dict[str, Any] | None = Field(default=None, description="the job's full result (a refresh: its diff)")
    lines: list[str] = Field(default_factory=list, description="progress, oldest first")


#: A job's work: it is given a function to report progress with, and returns (status, exit code, summary,
#: result). It raises for a failure.
Work = Callable[[Callable[[str], None]], tuple[JobStatus, int, dict[str, Any], dict[str, Any] | None]]


class Jobs:
    """The server's jobs: `start` one (JobRunning while another runs), `get` one by id."""

    def __init__(self, keep: int = 50) -> None:
        self.keep = keep
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._running: str | None = None
        self._lock = threading.Lock()

    def start(self, kind: str, work: Work, *, cleanup: Callable[[], None] | None = None) -> Job:
        with self._lock:
            if self._running is not None:
                raise JobRunning(f"job {self._running} is still running; wait for it (GET /v1/admin/jobs/{self._running})")
            job = Job(job_id="j-" + secrets.token_urlsafe(9), kind=kind, started_at=time.time())
            self._jobs[job.job_id] = job
            while len(self._jobs) > self.keep:
                self._jobs.popitem(last=False)
            self._running = job.job_id
        thread = threading.Thread(target=self._run, args=(job, work, cleanup), name=f"persona-llm-{job.job_id}", daemon=True)
        thread.start()
        return job.model_copy(deep=True)

    def _run(self, job: Job, work: Work, cleanup: Callable[[], None] | None) -> None:
        def say(line: str) -> None:
            with self._lock:
                job.lines = [*job.lines[-(MAX_LINES - 1) :], str(line)]

        update: dict[str, Any] = {"status": "failed", "exit_code": 1, "error": "the job was interrupted"}
        try:
            status, code, summary, result = work(say)
            update = {"status": status, "exit_code": code, "summary": summary, "result": result}
        except WorkspaceLockedError as exc:
            update = {"status": "locked", "exit_code": 5, "error": str(exc)}
        except PersonaLLMError as exc:
            update = {"status": "failed", "exit_code": 2, "error": str(exc)}
        except Exception as exc:  # noqa: BLE001 - a job's failure is its status, never the server's
            log.exception("job %s failed", job.job_id)
            update = {"status": "failed", "exit_code": 1, "error": f"{type(exc).__name__}: {exc}"[:500]}
        finally:
            if cleanup is not None:
                cleanup()
            with self._lock:
                for k, v in update.items():
                    setattr(job, k, v)
                job.finished_at = time.time()
                self._running = None
            log.info("job %s %s: %s", job.job_id, job.kind, job.status)

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            job = self._jobs.get(job_id)
            return job.model_copy(deep=True) if job is not None else None

    @property
    def running(self) -> str | None:
        return self._running
