"""The workspace as the server reads it: the published run, resolved again on every request.

`current` is one small file replaced atomically by publish and rollback, so reading it per request costs
a few microseconds and the server follows a new publication at once, with no restart and no watcher. What
a run's files hold is loaded once per run and kept (`RunView`) for the few most recent runs.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from persona_llm.errors import RunStoreError
from persona_llm.personas.report import NOISE_COLOUR, segment_colour, user_map
from persona_llm.runs.rundir import MANIFEST, TEXTS, RunDir
from persona_llm.runs.workspace import Workspace
from persona_llm.schema.frames import LANGUAGE, TEXT, TEXT_ID
from persona_llm.schema.personas import Persona
from persona_llm.schema.segments import Segment, SegmentSet
from persona_llm.server import models as api

#: A query is cut into at most this many words.
MAX_QUERY_WORDS = 8
_WORD = re.compile(r"\w+")
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af]")


class NotFound(LookupError):
    """A segment, persona, text or run the request named is not in the run (a 404)."""


class RunView:
    """What the API shows of one run, each part loaded once (thread-safe) and kept."""

    def __init__(self, name: str, run: RunDir) -> None:
        self.name = name
        self.run = run
        self._lock = threading.Lock()
        self._texts: _Texts | None = None
        self._map: api.UserMapData | None = None

    # -- segments and personas ----------------------------------------------------------------------

    @property
    def segments(self) -> SegmentSet:
        return self.run.load_segments()

    @property
    def run_id(self) -> str:
        return self.segments.run_id

    def personas(self) -> list[Persona]:
        return self.run.load_personas()

    def persona(self, persona_id: str) -> Persona:
        for p in self.personas():
            if p.persona_id == persona_id:
                return p
        raise NotFound(f"no persona {persona_id!r} in run {self.name}")

    def persona_ref(self, segment_id: int) -> api.PersonaRef | None:
        for p in self.personas():
            if p.segment_id == segment_id:
                return api.PersonaRef(persona_id=p.persona_id, name=p.name)
        return None

    def segment(self, segment_id: int) -> Segment:
        try:
            return self.segments.get(segment_id)
        except KeyError:
            known = ", ".join(str(s.segment_id) for s in self.segments.segments)
            raise NotFound(f"no segment {segment_id} in run {self.name} (segments: {known})") from None

    def segment_list(self) -> api.SegmentList:
        seg_set = self.segments
        rows = [
            api.SegmentSummary(
                segment_id=s.segment_id, size=s.size, share=s.share, n_texts=s.n_texts,
                keywords=[k.term for k in s.keywords[:10]], colour=segment_colour(s.segment_id),
                persona=self.persona_ref(s.segment_id),
            )  # fmt: skip
            for s in seg_set.segments
        ]
        return api.SegmentList(
            run=self.name, run_id=seg_set.run_id, n_users=seg_set.n_users, coverage=seg_set.coverage, segments=rows
        )

    def persona_list(self) -> api.PersonaList:
        rows = [
            api.PersonaSummary(
                persona_id=p.persona_id, segment_id=p.segment_id, name=p.name, tagline=p.tagline, summary=p.summary,
                confidence=p.confidence, user_count=p.user_count, share=p.share, n_texts=p.n_texts,
                keywords=p.keywords, quotes=p.quotes, colour=segment_colour(p.segment_id),
            )  # fmt: skip
            for p in self.personas()
        ]
        return api.PersonaList(run=self.name, run_id=self.run_id, personas=rows)

    # -- texts --------------------------------------------------------------------------------------

    def texts(self) -> _Texts:
        """The run's texts as plain columns with an index by id, loaded once."""
        if self._texts is None:
            with self._lock:
                if self._texts is None:
                    if not self.run.has(TEXTS):
                        raise NotFound(f"run {self.name} has no texts")
                    self._texts = _Texts(self.run.load_texts([TEXT_ID, "segment_id", LANGUAGE, TEXT]))
        return self._texts

    def text(self, text_id: str) -> api.TextRecord:
        texts = self.texts()
        i = texts.position.get(text_id)
        if i is None:
            raise NotFound(f"no text {text_id!r} in run {self.name}")
        return texts.record(i)

    def search(self, query: str, *, segment_id: int | None, limit: int) -> api.SearchResult:
        """Texts holding every word of `query` (case-insensitive, a word matches at the start of a word, so
        "run" finds "running"; Chinese and Japanese words anywhere), most occurrences first."""
        texts = self.texts()
        if segment_id is not None:
            self.segment(segment_id)  # 404 for a segment the run does not have
        words = list(dict.fromkeys(_WORD.findall(query.casefold())))[:MAX_QUERY_WORDS]
        if not words:
            return api.SearchResult(run=self.name, segment_id=segment_id, total=0, hits=[])
        rows = range(len(texts.ids)) if segment_id is None else np.flatnonzero(texts.segment_ids == segment_id)
        # A substring test in C first, then the word-start pattern only on the texts that passed it.
        candidates = [i for i in rows if all(w in texts.folded[i] for w in words)]
        patterns = [re.compile(re.escape(w) if _CJK.search(w) else rf"(?<!\w){re.escape(w)}") for w in words]
        scored = []
        for i in candidates:
            counts = [len(p.findall(texts.folded[i])) for p in patterns]
            if all(counts):
                scored.append((-sum(counts), int(i)))
        scored.sort()
        hits = [api.SearchHit(**texts.record(i).model_dump(), score=-neg) for neg, i in scored[:limit]]
        return api.SearchResult(run=self.name, segment_id=segment_id, total=len(scored), hits=hits)

    # -- the map ------------------------------------------------------------------------------------

    def user_map(self) -> api.UserMapData:
        if self._map is None:
            names = {p.segment_id: p.name for p in self.personas()}
            legend = [
                api.MapSegment(
                    segment_id=s.segment_id, colour=segment_colour(s.segment_id),
                    label=f"{s.segment_id}: {names.get(s.segment_id, ', '.join(k.term for k in s.keywords[:3]))}",
                )  # fmt: skip
                for s in self.segments.segments
            ]
            found = user_map(self.run)
            if isinstance(found, str):
                data = api.UserMapData(
                    run=self.name, n_users=0, points=[], segments=legend, unassigned_colour=NOISE_COLOUR,
                    note=f"no user map: {found}",
                )  # fmt: skip
            else:
                xy = found.xy
                lo, span = xy.min(axis=0), np.ptp(xy, axis=0)
                scaled = (xy - lo) / np.where(span == 0, 1, span)
                points = [
                    (round(float(x), 4), round(float(y), 4), int(s))
                    for (x, y), s in zip(scaled, found.segment_ids, strict=True)
                ]
                data = api.UserMapData(
                    run=self.name, n_users=found.n_users, points=points, segments=legend,
                    unassigned_colour=NOISE_COLOUR,
                    note=f"{len(points)} of {found.n_users} users, PCA of user embeddings",
                )  # fmt: skip
            self._map = data
        return self._map


class _Texts:
    """A run's texts as plain columns (a pandas lookup per request costs more than the rest of it)."""

    def __init__(self, frame: pd.DataFrame) -> None:
        self.ids: list[str] = frame[TEXT_ID].astype(str).tolist()
        self.segment_ids: np.ndarray = frame["segment_id"].to_numpy(dtype=int)
        self.languages: list[str] = frame[LANGUAGE].astype(str).tolist()
        self.texts: list[str] = frame[TEXT].astype(str).tolist()
        self.folded: list[str] = [t.casefold() for t in self.texts]
        self.position: dict[str, int] = {t: i for i, t in enumerate(self.ids)}

    def record(self, i: int) -> api.TextRecord:
        return api.TextRecord(
            text_id=self.ids[i], segment_id=int(self.segment_ids[i]), language=self.languages[i], text=self.texts[i]
        )


class PublishedRuns:
    """The workspace's runs for readers: `view()` is the published run as of this request."""

    def __init__(self, workspace: str | Path, *, cache_size: int = 3) -> None:
        self.workspace = Workspace.open(workspace)
        self.cache_size = cache_size
        self._views: OrderedDict[str, RunView] = OrderedDict()
        self._embedders: dict[str, Any] = {}
        self._lock = threading.Lock()

    def current_name(self) -> str | None:
        return self.workspace.current_name()

    def view(self, name: str | None = None) -> RunView:
        """The named run, or the published one; RunStoreError when nothing is published, NotFound for a
        name the workspace does not have."""
        if name is None:
            name = self.current_name()
            if name is None:
                raise RunStoreError(f"{self.workspace.path.name}: no run is published yet")
        with self._lock:
            found = self._views.get(name)
            if found is not None:
                self._views.move_to_end(name)
                return found
        try:
            run = self.workspace.run(name)
        except RunStoreError as exc:
            raise NotFound(str(exc).replace(str(self.workspace.path), self.workspace.path.name)) from None
        view = RunView(name, run)
        with self._lock:
            view = self._views.setdefault(name, view)
            self._views.move_to_end(name)
            while len(self._views) > self.cache_size:
                self._views.popitem(last=False)
        return view

    def embedder(self, run: RunDir) -> Any:
        """The embedder that made `run`'s vectors (from its manifest), loaded once per model and shared by
        every run made with it; None when the manifest names none."""
        model_id = run.load_manifest().models.get("embedder") if run.has(MANIFEST) else None
        if not model_id:
            return None
        with self._lock:
            found = self._embedders.get(str(model_id))
        if found is None:
            from persona_llm.segment.embed import embedder_from_model_id

            found = embedder_from_model_id(str(model_id))
            with self._lock:
                found = self._embedders.setdefault(str(model_id), found)
        return found

    def run_list(self) -> api.RunList:
        current = self.current_name()
        rows = [
            api.RunSummary(
                name=r.name, run_id=r.run_id, created_at=r.created_at, current=r.current, published=r.published,
                has_personas=r.has_personas, segments=r.segments,
            )  # fmt: skip
            for r in self.workspace.history()
        ]
        return api.RunList(workspace=self.workspace.path.name, current=current, runs=rows)
