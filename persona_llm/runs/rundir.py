"""`RunDir`: one run directory, the only place that knows its file names and how each is read and written.

A run directory holds:
    .persona-llm-run      marker: this folder is a persona-llm run (we may replace it, never anything else)
    manifest.json         RunManifest: input hash, row counts, parameters, models, timings, store
    segments.json         SegmentSet
    assignments.csv       user_id, segment_id, probability, assigned_by, n_texts (-1: unassigned on purpose;
                          assigned_by "cluster": HDBSCAN's own, "reassigned": noise moved to the nearest
                          segment, "assigned": outside a fit sample, put in the nearest segment above its
                          threshold (segment/sample_fit.py), "noise": left unassigned)
    rejects.csv           every input row not used, with stage, field and reason
    texts.parquet         the cleaned, redacted texts: text_id, user_id, text, language, segment_id + attributes
    text_embeddings.npy   float32 (n_texts, dim), row-aligned with texts.parquet
    user_embeddings.npy   float32 (n_users, dim), row-aligned with assignments.csv
    chroma/               the persistent Chroma store (when no store server is configured)
    personas.json         list of Persona (persona.schema.json beside it), personas.md, report.html
    personas_stats.json   what the persona writer did; llm_calls.jsonl one line per model call
    eval.json             the last evaluation
    persona_ids.json      refreshed runs: the persona id and version of each segment, the next segment id
    persona_history.json  refreshed runs: earlier versions of their personas
    refresh.json          refreshed runs: what the refresh changed (RefreshDiff); refresh.md, its Markdown

Every save is atomic per file (temp file beside it, then `os.replace`), and loads are cached on the
object: a reader that asks twice reads once. A run is written into a new or empty folder, or a staging
folder that replaces an existing run only when complete (`staged`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd
from pydantic import BaseModel, ValidationError

from persona_llm.errors import InputError, RunStoreError
from persona_llm.schema.frames import LANGUAGE, TEXT, TEXT_ID, USER_ID
from persona_llm.schema.manifest import RunManifest
from persona_llm.schema.personas import PERSONA_LIST, Persona, persona_list_schema
from persona_llm.schema.refresh import PersonaLineage, PersonaVersion, RefreshDiff
from persona_llm.schema.segments import SegmentSet

MARKER = ".persona-llm-run"
MANIFEST = "manifest.json"
SEGMENTS = "segments.json"
ASSIGNMENTS = "assignments.csv"
REJECTS = "rejects.csv"
TEXTS = "texts.parquet"
TEXT_EMBEDDINGS = "text_embeddings.npy"
USER_EMBEDDINGS = "user_embeddings.npy"
STORE = "chroma"
PERSONAS = "personas.json"
PERSONA_SCHEMA = "persona.schema.json"
PERSONAS_MARKDOWN = "personas.md"
REPORT = "report.html"
PERSONA_STATS = "personas_stats.json"
LLM_CALLS = "llm_calls.jsonl"
EVAL = "eval.json"
PERSONA_IDS = "persona_ids.json"
PERSONA_HISTORY = "persona_history.json"
REFRESH_DIFF = "refresh.json"
REFRESH_MARKDOWN = "refresh.md"

_Record = TypeVar("_Record", bound=BaseModel)

#: What makes a folder a run when it has no marker (runs written before the marker existed, hand-made ones).
_LEGACY_RUN_FILES = (SEGMENTS, ASSIGNMENTS)


class RunDir:
    """A run directory. Construct with a path; nothing is read until asked.

    run = RunDir.open("runs/ng")            # must be a run
    run.load_segments().segments[0].keywords
    run.load_texts(), run.load_personas(), run.load_manifest().models["embedder"]
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._cache: dict[str, Any] = {}

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    # -- what a folder is ---------------------------------------------------------------------------

    @staticmethod
    def is_run(path: str | Path) -> bool:
        """Is `path` a persona-llm run directory (marker, or the files every run has)?"""
        p = Path(path)
        return p.is_dir() and ((p / MARKER).is_file() or all((p / f).is_file() for f in _LEGACY_RUN_FILES))

    @classmethod
    def open(cls, path: str | Path) -> RunDir:
        """An existing run; a one-line error names the folder when it is not one."""
        p = Path(path)
        if not p.exists():
            raise InputError("run directory or workspace not found", path=str(p))
        if not cls.is_run(p):
            raise InputError(f"not a persona-llm run directory (no {MARKER} or {SEGMENTS})", path=str(p))
        return cls(p)

    @classmethod
    def create(cls, path: str | Path) -> RunDir:
        """A new run in `path`, which must be new or an empty folder: we never write into a folder that
        holds anything else. Checks the folder is writable before any work starts."""
        p = Path(path)
        check_new_or_empty(p)
        ensure_writable_dir(p)
        run = cls(p)
        run.mark()
        return run

    @classmethod
    @contextlib.contextmanager
    def staged(cls, path: str | Path, *, overwrite: bool = False) -> Iterator[RunDir]:
        """Write a run beside `path` and move it into place only when the block completes.

        `path` must be new, an empty folder, or (with `overwrite`) an existing run, which is replaced
        whole; a failure inside the block removes the staging folder and leaves `path` as it was.
        """
        target = Path(path)
        if target.exists() and not (target.is_dir() and not any(target.iterdir())):
            if not cls.is_run(target):
                raise RunStoreError(
                    f"{target}: refusing to write: it is not a persona-llm run or an empty folder "
                    "(nothing was changed; choose a new --out)"
                )
            if not overwrite:
                raise RunStoreError(f"{target}: a run is already there; pass --force (overwrite=True) to replace it")
        ensure_writable_dir(target.parent if target.parent != Path("") else Path("."))
        staging = target.parent / f".{target.name}.staging-{os.getpid()}"
        if staging.exists():
            shutil.rmtree(staging)
        run = cls.create(staging)
        try:
            yield run
            run.path = _swap_into_place(staging, target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise

    def mark(self) -> None:
        """Write the marker that says this folder is ours."""
        self.path.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.path / MARKER, json.dumps({"kind": "persona-llm-run", "format": 1}) + "\n")

    # -- files --------------------------------------------------------------------------------------

    def file(self, name: str) -> Path:
        return self.path / name

    def has(self, name: str) -> bool:
        return (self.path / name).exists()

    @property
    def store_path(self) -> Path:
        """Where the persistent Chroma store of this run lives."""
        return self.path / STORE

    def _required(self, name: str) -> Path:
        path = self.path / name
        if not path.exists():
            raise InputError(f"missing {name}: is this a persona-llm run directory?", path=str(path))
        return path

    def _cached(self, key: str, load: Any) -> Any:
        if key not in self._cache:
            self._cache[key] = load()
        return self._cache[key]

    def forget_cache(self) -> None:
        self._cache.clear()

    # -- manifest -----------------------------------------------------------------------------------

    def _load_record(self, name: str, model: type[_Record], what: str) -> _Record:
        """A required JSON file parsed as a Pydantic model, once; invalid content names the file."""

        def load() -> _Record:
            path = self._required(name)
            try:
                return model.model_validate_json(path.read_text(encoding="utf-8"))
            except ValidationError as exc:
                raise InputError(f"not a valid {what}: {_first_error(exc)}", path=str(path)) from exc

        return self._cached(name, load)  # type: ignore[no-any-return]

    def load_manifest(self) -> RunManifest:
        return self._load_record(MANIFEST, RunManifest, "manifest")

    def save_manifest(self, manifest: RunManifest) -> None:
        atomic_write_text(self.path / MANIFEST, manifest.model_dump_json(indent=2))
        self._cache[MANIFEST] = manifest

    @property
    def run_id(self) -> str:
        """The run's id: the manifest's, else the segment set's."""
        if self.has(MANIFEST):
            return self.load_manifest().run_id or self.load_segments().run_id
        return self.load_segments().run_id

    @property
    def input_sha256(self) -> str:
        """Hash of the input file the run was built from ("" when the manifest does not say)."""
        return self.load_manifest().input_sha256 if self.has(MANIFEST) else ""

    # -- segments and assignments ------------------------------------------------------------------

    def load_segments(self) -> SegmentSet:
        return self._load_record(SEGMENTS, SegmentSet, "segment set")

    def save_segments(self, segments: SegmentSet) -> None:
        atomic_write_text(self.path / SEGMENTS, segments.model_dump_json(indent=2))
        self._cache[SEGMENTS] = segments

    def load_assignments(self) -> pd.DataFrame:
        def load() -> pd.DataFrame:
            path = self._required(ASSIGNMENTS)
            frame = pd.read_csv(path, dtype={USER_ID: str})
            for col in (USER_ID, "segment_id"):
                if col not in frame.columns:
                    raise InputError("missing column", path=str(path), column=col)
            frame["segment_id"] = frame["segment_id"].astype(int)
            return frame

        return self._cached(ASSIGNMENTS, load).copy()  # type: ignore[no-any-return]

    def save_assignments(self, frame: pd.DataFrame) -> None:
        _atomic_write(self.path / ASSIGNMENTS, lambda p: frame.to_csv(p, index=False))
        self._cache.pop(ASSIGNMENTS, None)

    def load_rejects(self) -> pd.DataFrame:
        return pd.read_csv(self._required(REJECTS), dtype=str, keep_default_na=False)

    def save_rejects(self, frame: pd.DataFrame) -> None:
        write_rejects_csv(self.path / REJECTS, frame)

    # -- texts and vectors --------------------------------------------------------------------------

    def load_texts(self, columns: list[str] | None = None) -> pd.DataFrame:
        """The cleaned texts, ids as strings; `columns` reads only those (not cached)."""
        if columns is not None:
            frame = pd.read_parquet(self._required(TEXTS), columns=columns)
            return _string_ids(frame)

        def load() -> pd.DataFrame:
            path = self._required(TEXTS)
            frame = pd.read_parquet(path)
            missing = {TEXT_ID, USER_ID, TEXT} - set(frame.columns)
            if missing:
                raise InputError(f"missing columns {sorted(missing)}", path=str(path))
            return _string_ids(frame)

        return self._cached(TEXTS, load).copy()  # type: ignore[no-any-return]

    def save_texts(self, texts: pd.DataFrame) -> None:
        frame = texts.copy()
        for col in frame.columns:
            # Attribute columns of mixed object types would make pyarrow fail or guess; store them as strings.
            if frame[col].dtype == object and col not in (TEXT, TEXT_ID, USER_ID, LANGUAGE):
                frame[col] = frame[col].astype("string")
        _atomic_write(self.path / TEXTS, lambda p: frame.to_parquet(p, index=False))
        self._cache.pop(TEXTS, None)

    def load_text_embeddings(self) -> np.ndarray:
        return self._cached(TEXT_EMBEDDINGS, lambda: self._array(TEXT_EMBEDDINGS))  # type: ignore[no-any-return]

    def save_text_embeddings(self, vectors: np.ndarray) -> None:
        _atomic_write(self.path / TEXT_EMBEDDINGS, lambda p: _save_npy(p, vectors))
        self._cache.pop(TEXT_EMBEDDINGS, None)

    def load_user_embeddings(self) -> np.ndarray:
        return self._cached(USER_EMBEDDINGS, lambda: self._array(USER_EMBEDDINGS))  # type: ignore[no-any-return]

    def save_user_embeddings(self, vectors: np.ndarray) -> None:
        _atomic_write(self.path / USER_EMBEDDINGS, lambda p: _save_npy(p, vectors))
        self._cache.pop(USER_EMBEDDINGS, None)

    def _array(self, name: str) -> np.ndarray:
        path = self._required(name)
        arr = np.load(path)
        rows_file = TEXTS if name == TEXT_EMBEDDINGS else ASSIGNMENTS
        if self.has(rows_file):
            rows = len(self.load_texts([TEXT_ID])) if name == TEXT_EMBEDDINGS else len(self.load_assignments())
            if arr.ndim != 2 or len(arr) != rows:
                raise InputError(f"has shape {arr.shape}, expected {rows} rows (one per row of {rows_file})", path=str(path))
        return arr

    def segment_texts(self, segment_id: int) -> pd.DataFrame:
        texts = self.load_texts()
        return texts[texts["segment_id"] == segment_id]

    # -- personas -----------------------------------------------------------------------------------

    def has_personas(self) -> bool:
        return self.has(PERSONAS)

    def load_personas(self) -> list[Persona]:
        """The run's personas ([] when none were written)."""

        def load() -> list[Persona]:
            path = self.path / PERSONAS
            if not path.is_file():
                return []
            try:
                return PERSONA_LIST.validate_json(path.read_bytes())
            except ValidationError as exc:
                raise InputError(f"not a valid list of personas: {_first_error(exc)}", path=str(path)) from exc

        return list(self._cached(PERSONAS, load))

    def save_personas(self, personas: list[Persona]) -> None:
        """personas.json and its JSON Schema beside it."""
        data = [p.model_dump(mode="json") for p in personas]
        atomic_write_text(self.path / PERSONAS, json.dumps(data, indent=2, ensure_ascii=False) + "\n")
        atomic_write_text(
            self.path / PERSONA_SCHEMA, json.dumps(persona_list_schema(), indent=2, ensure_ascii=False) + "\n"
        )
        self._cache[PERSONAS] = list(personas)

    def persona_id(self, segment_id: int) -> str:
        """The persona-id policy: a segment the run's lineage (persona_ids.json, written by a refresh) names
        keeps the id it was given; otherwise the id is minted from the data: the same input, segment and
        members give the same id on every run."""
        entry = self.load_persona_lineage().segments.get(int(segment_id))
        if entry is not None:
            return entry.persona_id
        members = sorted(self.segment_texts(segment_id)[TEXT_ID])
        digest = hashlib.sha256(f"{self.input_sha256}|{segment_id}|{','.join(members)}".encode()).hexdigest()
        return f"p{segment_id}-{digest[:10]}"

    def persona_version(self, segment_id: int) -> int:
        """The version a persona written now for `segment_id` gets (1 unless a refresh says otherwise)."""
        entry = self.load_persona_lineage().segments.get(int(segment_id))
        return entry.version if entry is not None else 1

    def load_persona_lineage(self) -> PersonaLineage:
        """persona_ids.json; an empty lineage for a run that has none (a fresh build)."""
        if not self.has(PERSONA_IDS):
            return PersonaLineage()
        return self._load_record(PERSONA_IDS, PersonaLineage, "persona lineage")

    def save_persona_lineage(self, lineage: PersonaLineage) -> None:
        atomic_write_text(self.path / PERSONA_IDS, lineage.model_dump_json(indent=2) + "\n")
        self._cache[PERSONA_IDS] = lineage

    def load_persona_history(self) -> list[PersonaVersion]:
        """Earlier versions of this run's personas, oldest first ([] when none)."""
        if not self.has(PERSONA_HISTORY):
            return []
        rows = self.load_json(PERSONA_HISTORY)
        try:
            return [PersonaVersion.model_validate(r) for r in rows]
        except ValidationError as exc:
            raise InputError(f"not a valid persona history: {_first_error(exc)}", path=str(self.file(PERSONA_HISTORY))) from exc

    def save_persona_history(self, versions: list[PersonaVersion]) -> None:
        self.save_json(PERSONA_HISTORY, [v.model_dump(mode="json") for v in versions])

    def load_refresh_diff(self) -> RefreshDiff | None:
        """What the refresh that made this run changed (None: the run was not made by a refresh)."""
        if not self.has(REFRESH_DIFF):
            return None
        return self._load_record(REFRESH_DIFF, RefreshDiff, "refresh report")

    def save_refresh_diff(self, diff: RefreshDiff) -> None:
        atomic_write_text(self.path / REFRESH_DIFF, diff.model_dump_json(indent=2) + "\n")
        self._cache[REFRESH_DIFF] = diff

    # -- other artifacts ----------------------------------------------------------------------------

    def save_json(self, name: str, data: Any) -> Path:
        return atomic_write_text(self.path / name, json.dumps(data, indent=2, ensure_ascii=False) + "\n")

    def load_json(self, name: str) -> Any:
        path = self._required(name)
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise InputError(f"not valid JSON: {exc}", path=str(path)) from exc

    def save_text(self, name: str, text: str) -> Path:
        return atomic_write_text(self.path / name, text)

    def save_jsonl(self, name: str, rows: list[dict[str, Any]]) -> Path:
        body = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        return atomic_write_text(self.path / name, body)

    def load_eval(self) -> dict[str, Any]:
        return self.load_json(EVAL)  # type: ignore[no-any-return]

    def save_eval(self, report_json: str) -> Path:
        return atomic_write_text(self.path / EVAL, report_json.rstrip("\n") + "\n")


# -- folder checks ------------------------------------------------------------------------------------


def check_new_or_empty(path: Path) -> None:
    """Refuse any folder that holds something: a user's files are never ours to write over."""
    if path.exists():
        if not path.is_dir():
            raise RunStoreError(f"{path}: refusing to write: it is a file, not a folder (nothing was changed)")
        if any(path.iterdir()):
            raise RunStoreError(
                f"{path}: refusing to write: the folder is not empty and not a persona-llm run or workspace "
                "(nothing was changed; choose a new or empty folder)"
            )


def ensure_writable_dir(path: Path) -> None:
    """Create `path` (and parents) and prove we can write there, before any long work starts."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise RunStoreError(f"{path}: cannot write there: {exc.strerror or exc}") from exc


# -- atomic writes ------------------------------------------------------------------------------------


def _atomic_write(path: Path, write: Any) -> Path:
    """Write through `write(tmp_path)` then rename over `path`: a reader sees the old or the new file."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    return path


def atomic_write_text(path: Path, text: str, *, durable: bool = False) -> Path:
    """Replace `path` with `text` atomically; `durable` also fsyncs the folder so the rename survives a
    power cut (the workspace's `current` pointer)."""
    _atomic_write(path, lambda p: Path(p).write_text(text, encoding="utf-8"))
    if durable:
        fsync_dir(path.parent)
    return path


def write_rejects_csv(path: Path, frame: pd.DataFrame) -> Path:
    """Write a rejects frame as CSV (a run's rejects.csv, or a failed run's rejects beside the runs)."""
    return _atomic_write(path, lambda p: frame.to_csv(p, index=False))


def _save_npy(path: Path, vectors: np.ndarray) -> None:
    with open(path, "wb") as fh:  # np.save on a path would append ".npy" to our temp name
        np.save(fh, np.asarray(vectors))


def fsync_dir(path: Path) -> None:
    """Make a rename inside `path` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _swap_into_place(staging: Path, target: Path) -> Path:
    """Move a complete staging run to `target`; an existing run there is replaced (it is ours)."""
    old = target.parent / f".{target.name}.old-{os.getpid()}"
    if target.exists():
        os.replace(target, old)
    try:
        os.replace(staging, target)
    except BaseException:
        if old.exists():
            os.replace(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)
    fsync_dir(target.parent)
    return target


def _string_ids(frame: pd.DataFrame) -> pd.DataFrame:
    for col in (TEXT_ID, USER_ID):
        if col in frame.columns:
            frame[col] = frame[col].astype(str)
    return frame


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(x) for x in err.get("loc", ()))
    return f"{where}: {err.get('msg', '')}" if where else str(err.get("msg", exc))
