"""A workspace: versioned runs, one published at a time, replaced atomically, one writer at a time.

    WORKSPACE/
        workspace.json        marker: this folder is a persona-llm workspace
        current               the published run's name; replaced atomically (temp file, fsync,
                              os.replace, fsync of the folder), so a reader sees the old or the new run
        publish_log.jsonl     one line per publish or rollback (run, previous, time, pid)
        forgotten.json        hashes of the users `persona-llm forget` removed, so a refresh never
                              brings them back (the ids themselves are not kept)
        .lock                 held (flock) by the one writer; holds its pid
        runs/<name>/          complete runs (RunDir); <name> is the run id, ".2", ".3"... when taken
        runs/.staging-*/      runs being written; never read, removed by gc or on failure

A run is written into a staging folder and renamed into runs/ only when complete; `current` changes only
on publish. A build that fails or is killed at any point (SIGKILL included) therefore leaves the
published run exactly as it was: at worst a staging folder remains, which `gc` removes.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import pandas as pd

from persona_llm.errors import RunStoreError, WorkspaceLockedError
from persona_llm.runs.rundir import (
    MANIFEST,
    STORE,
    RunDir,
    atomic_write_text,
    check_new_or_empty,
    ensure_writable_dir,
    fsync_dir,
)
from persona_llm.schema.frames import USER_ID

log = logging.getLogger(__name__)

WORKSPACE_MARKER = "workspace.json"
CURRENT = "current"
PUBLISH_LOG = "publish_log.jsonl"
LOCK = ".lock"
FORGOTTEN = "forgotten.json"
RUNS = "runs"
STAGING_PREFIX = ".staging-"
_NAME_OK = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def user_hash(user_id: str) -> str:
    """How a forgotten user is remembered: a hash of the id, never the id itself."""
    return hashlib.sha256(f"persona-llm forgotten user\0{user_id}".encode("utf-8", "surrogatepass")).hexdigest()


def drop_forgotten_users(
    texts: pd.DataFrame, rejects: pd.DataFrame, forgotten: frozenset[str] | set[str]
) -> tuple[pd.DataFrame, pd.DataFrame, int]:
    """Rows of forgotten users (`forgotten`: `user_hash`es, `Workspace.forgotten_users`) taken out of
    freshly read `texts` and `rejects` (frames with a user_id column), before anything cleans, embeds,
    caches or stores them. Their rejected rows go too: the rejects would keep their text and id. Only
    how many rows went is kept: (texts, rejects, rows dropped). Every reader of new data into a
    workspace (build, segment, refresh) applies this one rule."""
    if not forgotten:
        return texts, rejects, 0
    gone = texts[USER_ID].astype(str).map(user_hash).isin(forgotten)
    dropped = int(gone.sum())
    texts = texts.loc[~gone].reset_index(drop=True)
    if len(rejects) and USER_ID in rejects:
        # a rejected row may lack its user id (that may be why it was rejected): it cannot be theirs
        rejected_gone = rejects[USER_ID].map(lambda u: isinstance(u, str) and user_hash(u) in forgotten)
        rejected_gone = rejected_gone.astype(bool)
        dropped += int(rejected_gone.sum())
        rejects = rejects.loc[~rejected_gone].reset_index(drop=True)
    return texts, rejects, dropped


@dataclass(frozen=True)
class RunInfo:
    """One line of `history`."""

    name: str
    run_id: str
    created_at: str
    published: bool
    current: bool
    has_personas: bool
    segments: int | None


class Workspace:
    """A workspace folder. `Workspace.open` an existing one, `Workspace.create` a new one, or
    `Workspace.open_or_create` for an output path that may be either (or a new/empty folder)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock_fh: IO[str] | None = None

    def __repr__(self) -> str:
        return f"Workspace({str(self.path)!r})"

    # -- opening ------------------------------------------------------------------------------------

    @staticmethod
    def is_workspace(path: str | Path) -> bool:
        return (Path(path) / WORKSPACE_MARKER).is_file()

    @classmethod
    def open(cls, path: str | Path) -> Workspace:
        p = Path(path)
        if not cls.is_workspace(p):
            raise RunStoreError(f"{p}: not a persona-llm workspace (no {WORKSPACE_MARKER})")
        return cls(p)

    @classmethod
    def create(cls, path: str | Path) -> Workspace:
        """Make a workspace in a new or empty folder; any other folder is refused untouched."""
        p = Path(path)
        check_new_or_empty(p)
        ensure_writable_dir(p)
        (p / RUNS).mkdir(exist_ok=True)
        atomic_write_text(p / WORKSPACE_MARKER, json.dumps({"kind": "persona-llm-workspace", "format": 1}) + "\n")
        return cls(p)

    @classmethod
    def open_or_create(cls, path: str | Path) -> Workspace:
        p = Path(path)
        if cls.is_workspace(p):
            ws = cls(p)
            ensure_writable_dir(ws.runs_dir)
            return ws
        if RunDir.is_run(p):
            raise RunStoreError(
                f"{p}: is a single run directory, not a workspace; write to a new folder, or pass --force to "
                "replace that run"
            )
        return cls.create(p)

    @property
    def runs_dir(self) -> Path:
        return self.path / RUNS

    # -- the one writer -----------------------------------------------------------------------------

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the workspace's writer lock for the block. A live holder makes this fail at once with
        "locked by pid N"; a lock left by a dead process is taken over with a warning (flock is released
        by the kernel when its holder dies, even by SIGKILL, so only the pid inside can be stale)."""
        if self._lock_fh is not None:  # re-entrant within one object
            yield
            return
        path = self.path / LOCK
        fh = open(path, "a+", encoding="utf-8")  # noqa: SIM115 - held open for the block
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(path)
            fh.close()
            raise WorkspaceLockedError(
                f"{self.path}: locked by pid {holder if holder is not None else '?'} (another persona-llm "
                "process is writing this workspace); try again when it has finished",
                pid=holder,
            ) from None
        stale = _read_pid(path)
        if stale is not None and stale != os.getpid():
            log.warning("%s: taking over a stale lock left by pid %d, which is no longer running", self.path, stale)
        fh.seek(0)
        fh.truncate()
        fh.write(f"{os.getpid()}\n")
        fh.flush()
        self._lock_fh = fh
        try:
            yield
        finally:
            # Clear the pid before unlocking, so a later reader does not mistake a clean exit for a stale lock.
            fh.seek(0)
            fh.truncate()
            fh.flush()
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
            fh.close()
            self._lock_fh = None

    def _require_lock(self) -> None:
        if self._lock_fh is None:
            raise RuntimeError("this workspace operation needs `with workspace.lock():`")

    # -- writing runs -------------------------------------------------------------------------------

    @contextlib.contextmanager
    def new_run(self, *, parent: RunDir | None = None) -> Iterator[RunDir]:
        """A staging run to write into; when the block completes it is renamed into runs/ (not published).

        `parent`: copy that run's segmentation into the staging run first (a persona rewrite of a
        published run makes a new run; the published one is never modified). The final RunDir's `path`
        is updated in place, so keep using the object after the block.
        """
        self._require_lock()
        ensure_writable_dir(self.runs_dir)
        staging = self.runs_dir / f"{STAGING_PREFIX}{os.getpid()}-{time.time_ns()}"
        if parent is not None:
            copy_run(parent.path, staging)
            run = RunDir(staging)
        else:
            run = RunDir.create(staging)
        try:
            yield run
            name = self._free_name(run.run_id)
            os.replace(staging, self.runs_dir / name)
            fsync_dir(self.runs_dir)
            run.path = self.runs_dir / name
            run.forget_cache()
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise

    @contextlib.contextmanager
    def rewrite_run(self, name: str) -> Iterator[RunDir]:
        """A copy of run `name` to change (its Chroma store not copied: the block writes a new one), which
        replaces the run in one atomic step when the block completes; a failure or a kill leaves the run
        as it was. Only `persona-llm forget` rewrites a run: runs are otherwise never changed."""
        self._require_lock()
        source = self.run(name).path
        staging = self.runs_dir / f"{STAGING_PREFIX}rewrite-{os.getpid()}-{time.time_ns()}"
        copy_run(source, staging, with_store=False)
        run = RunDir(staging)
        try:
            yield run
            _exchange(staging, source)  # staging now holds the old run
            fsync_dir(self.runs_dir)
            run.path = source
            run.forget_cache()
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def _free_name(self, run_id: str) -> str:
        base = run_id if _NAME_OK.match(run_id) else re.sub(r"[^A-Za-z0-9._-]", "_", run_id).lstrip("._-") or "run"
        name, n = base, 1
        while (self.runs_dir / name).exists():
            n += 1
            name = f"{base}.{n}"
        return name

    # -- reading ------------------------------------------------------------------------------------

    def run(self, name: str) -> RunDir:
        if not _NAME_OK.match(name) or not (self.runs_dir / name).is_dir():
            known = ", ".join(self.run_names()) or "none"
            raise RunStoreError(f"{self.path}: no run named {name!r} (runs: {known})")
        return RunDir(self.runs_dir / name)

    def run_names(self) -> list[str]:
        """Complete runs, oldest first."""
        if not self.runs_dir.is_dir():
            return []
        names = [p.name for p in self.runs_dir.iterdir() if p.is_dir() and not p.name.startswith(".")]
        return sorted(names, key=lambda n: ((self.runs_dir / n).stat().st_mtime_ns, n))

    def current_name(self) -> str | None:
        path = self.path / CURRENT
        if not path.is_file():
            return None
        name = path.read_text(encoding="utf-8").strip()
        return name or None

    def current(self) -> RunDir:
        """The published run; a clear error when nothing is published yet."""
        name = self.current_name()
        if name is None:
            raise RunStoreError(f"{self.path}: no run is published yet (see `persona-llm history {self.path}`)")
        return self.run(name)

    def publish_log(self) -> list[dict[str, Any]]:
        path = self.path / PUBLISH_LOG
        if not path.is_file():
            return []
        out = []
        for line in path.read_text(encoding="utf-8").splitlines():
            with contextlib.suppress(ValueError):
                out.append(json.loads(line))
        return out

    def history(self) -> list[RunInfo]:
        current = self.current_name()
        published = {e.get("run") for e in self.publish_log()}
        out = []
        for name in self.run_names():
            run = RunDir(self.runs_dir / name)
            run_id, created, n_segments = name, "", None
            with contextlib.suppress(Exception):
                if run.has(MANIFEST):
                    manifest = run.load_manifest()
                    run_id, created = manifest.run_id, manifest.created_at
                n_segments = len(run.load_segments().segments)
            out.append(
                RunInfo(
                    name=name, run_id=run_id, created_at=created, published=name in published,
                    current=name == current, has_personas=run.has_personas(), segments=n_segments,
                )
            )
        return out

    # -- forgotten users ----------------------------------------------------------------------------

    def forgotten_users(self) -> frozenset[str]:
        """Hashes (`user_hash`) of the users forgotten in this workspace."""
        path = self.path / FORGOTTEN
        if not path.is_file():
            return frozenset()
        try:
            return frozenset(json.loads(path.read_text(encoding="utf-8")).get("user_hashes", []))
        except (ValueError, AttributeError) as exc:
            raise RunStoreError(f"{path}: not a valid list of forgotten users ({exc}); refusing to go on") from exc

    def record_forgotten(self, user_ids: list[str]) -> None:
        """Add users to the forgotten list (durably: a refresh must never bring them back)."""
        self._require_lock()
        hashes = sorted(self.forgotten_users() | {user_hash(u) for u in user_ids})
        body = json.dumps({"kind": "persona-llm-forgotten-users", "user_hashes": hashes}, indent=1) + "\n"
        atomic_write_text(self.path / FORGOTTEN, body, durable=True)

    # -- publishing ---------------------------------------------------------------------------------

    def publish(self, name: str, *, action: str = "publish") -> RunDir:
        """Make run `name` the published one (atomic pointer swap) and log it."""
        self._require_lock()
        run = self.run(name)
        if not RunDir.is_run(run.path):
            raise RunStoreError(f"{run.path}: not a complete run; it cannot be published")
        previous = self.current_name()
        atomic_write_text(self.path / CURRENT, name + "\n", durable=True)
        entry = {
            "action": action, "run": name, "previous": previous,
            "at": datetime.now(UTC).isoformat(timespec="seconds"), "pid": os.getpid(),
        }  # fmt: skip
        with open(self.path / PUBLISH_LOG, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(entry) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        return run

    def rollback(self) -> RunDir:
        """Publish the run that was published before the current one (repeat to go further back)."""
        self._require_lock()
        current = self.current_name()
        if current is None:
            raise RunStoreError(f"{self.path}: nothing is published, so there is nothing to roll back")
        target = self._rollback_target()
        if target is None:
            raise RunStoreError(f"{self.path}: no earlier published run to roll back to (current: {current})")
        return self.publish(target, action="rollback")

    def _rollback_target(self) -> str | None:
        """The run `rollback` would publish: the publication before the current one, where each rollback
        undoes the step it rolled back (so repeated rollbacks walk further back)."""
        chain: list[str] = []
        for entry in self.publish_log():
            if entry.get("action") == "rollback":
                if chain:
                    chain.pop()
            elif entry.get("run"):
                chain.append(str(entry["run"]))
        current = self.current_name()
        while chain and chain[-1] == current:
            chain.pop()
        chain = [n for n in chain if (self.runs_dir / n).is_dir()]
        return chain[-1] if chain else None

    # -- cleaning -----------------------------------------------------------------------------------

    def gc(self, keep: int, *, before_remove: Callable[[RunDir], None] | None = None) -> list[str]:
        """Remove all but the `keep` newest runs (the published one and the one rollback would restore
        are always kept) and every staging folder left by a failed or killed writer. Returns the names
        removed. `before_remove` lets the caller drop what lives outside the folder (server collections)."""
        self._require_lock()
        if keep < 0:
            raise RunStoreError("gc --keep must be 0 or more")
        removed: list[str] = []
        # We hold the lock, so no other writer is filling a staging folder: all of them are leftovers.
        for path in self.runs_dir.glob(f"{STAGING_PREFIX}*"):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path.name)
        names = self.run_names()
        protected = {n for n in (self.current_name(), self._rollback_target()) if n}
        newest = set(names[-keep:]) if keep else set()
        for name in names:
            if name in protected or name in newest:
                continue
            run = RunDir(self.runs_dir / name)
            if before_remove is not None:
                before_remove(run)
            shutil.rmtree(run.path)
            removed.append(name)
        return removed


def resolve_run(path: str | Path) -> RunDir:
    """What a reader of PATH means: a workspace's published run, or the run directory itself."""
    p = Path(path)
    if Workspace.is_workspace(p):
        return Workspace(p).current()
    return RunDir.open(p)


def copy_run(source: Path, dest: Path, *, with_store: bool = True) -> None:
    """Copy a run for a derived run. Our files are hard-linked: RunDir only ever replaces a file by rename,
    never writes into it, so a link cannot change under the source. The Chroma store is copied for real:
    its SQLite and index files are written in place."""

    def link_or_copy(src: str, dst: str) -> object:
        try:
            os.link(src, dst)
            return dst
        except OSError:
            return shutil.copy2(src, dst)

    shutil.copytree(source, dest, copy_function=link_or_copy, ignore=shutil.ignore_patterns(STORE))
    if with_store and (source / STORE).is_dir():
        shutil.copytree(source / STORE, dest / STORE)


def _exchange(a: Path, b: Path) -> None:
    """Swap two folders atomically (Linux renameat2 RENAME_EXCHANGE): a reader sees the old run or the new
    one, never none. Elsewhere, two renames (a reader may miss the run for that instant)."""
    import ctypes
    import ctypes.util

    libc_name = ctypes.util.find_library("c")
    renameat2 = getattr(ctypes.CDLL(libc_name, use_errno=True), "renameat2", None) if libc_name else None
    if renameat2 is not None:
        at_fdcwd, rename_exchange = -100, 2
        if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
            return
        err = ctypes.get_errno()
        if err not in (22, 38, 95):  # EINVAL, ENOSYS, EOPNOTSUPP: the file system cannot exchange
            raise OSError(err, os.strerror(err), str(b))
    parked = a.with_name(a.name + ".old")
    os.replace(b, parked)
    os.replace(a, b)
    os.replace(parked, a)


def _read_pid(path: Path) -> int | None:
    try:
        text = path.read_text(encoding="utf-8").strip()
        return int(text) if text else None
    except (OSError, ValueError):
        return None
