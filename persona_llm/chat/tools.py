"""`SegmentTools`: what the chat agent may look up in one run, as Python methods and as LangChain tools.

Every method reads the run through `RunDir` (segments.json, texts.parquet, personas.json) and its store,
and returns a Pydantic record (`persona_llm.chat.records`) that says which texts it showed and which
numbers it stated: those are all an answer may cite and the numbers it is checked against.

Search by meaning embeds the query with the run's own embedder (the model its manifest records, so
queries and texts share one space) and asks two indexes: the run's Chroma store (each segment's
representative texts, queried with our own query embedding, never `query_texts`) and the run's text
vectors (`text_embeddings.npy`: every text, exact cosine). The store alone holds 8 texts a segment,
too few to find "what segment 3 says about delivery"; the vectors alone would ignore a store server.
Hits are merged by score, each text once.

The methods raise `ValueError` for a question the run cannot answer (an unknown segment or column); the
LangChain tools hand that message to the model instead of failing the conversation.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, get_args

import numpy as np
import pandas as pd
from pydantic import BaseModel, Field

from persona_llm.chat.records import (
    AttributeBreakdown,
    AttributeColumn,
    AttributeValue,
    Intent,
    MentionCount,
    MentionCounts,
    PersonaCard,
    PersonaResult,
    SearchResult,
    SegmentComparison,
    SegmentDetail,
    SegmentList,
    SegmentOverview,
    TextRef,
    ToolResult,
)
from persona_llm.errors import InputError
from persona_llm.runs.rundir import MANIFEST, TEXT_EMBEDDINGS, RunDir
from persona_llm.runs.workspace import resolve_run
from persona_llm.schema.personas import Persona
from persona_llm.schema.segments import CategoricalSummary, NumericSummary, Segment, SegmentSet

#: Tool names, as the agent definition (agents/segment_chat.toml) lists them: the router's intents
#: less "out_of_scope" (one list, in records.Intent).
TOOL_NAMES: tuple[str, ...] = tuple(i for i in get_args(Intent) if i != "out_of_scope")

_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")


def mention_pattern(term: str) -> re.Pattern[str]:
    """How `count_mentions` finds a term: case-insensitive, at the start of a word ("grinder" finds
    "grinders", not "regrinder"); Chinese and Japanese anywhere (no spaces to start a word at)."""
    term = term.strip()
    if not term:
        raise ValueError("count_mentions needs a non-empty term")
    if _CJK.search(term):
        return re.compile(re.escape(term))
    return re.compile(rf"(?<!\w){re.escape(term)}", re.IGNORECASE)


class SegmentTools:
    """Read-only lookups over one run (a `RunDir`, a run folder or a workspace: its published run).

    embedder: `.encode(texts, kind="query")` in the run's vector space; default: the run's own model
        (loaded on the first search).
    store: a `BaseStore` to search; default: the store the run's manifest records.
    max_text_chars: texts are cut to this many characters in tool results (the checks read whole texts).
    """

    def __init__(
        self,
        run: RunDir | str | Path,
        *,
        embedder: Any = None,
        store: Any = None,
        max_text_chars: int = 500,
    ) -> None:
        self.run = run
        self.embedder = embedder
        self.store = store
        self.max_text_chars = max_text_chars

    # -- what the tools read, loaded on first use ----------------------------------------------------

    @property
    def rundir(self) -> RunDir:
        if getattr(self, "rundir_", None) is None:
            self.rundir_ = self.run if isinstance(self.run, RunDir) else resolve_run(self.run)
        return self.rundir_

    @property
    def segment_set(self) -> SegmentSet:
        return self.rundir.load_segments()

    @property
    def texts(self) -> pd.DataFrame:
        """text_id, user_id, segment_id, text of every text of the run (cached)."""
        if getattr(self, "texts_", None) is None:
            frame = self.rundir.load_texts()
            if "segment_id" not in frame.columns:
                raise InputError("texts.parquet has no segment_id column: re-run the segmentation", path=str(self.rundir.path))
            frame = frame[["text_id", "user_id", "segment_id", "text"]].copy()
            frame["segment_id"] = frame["segment_id"].fillna(-1).astype(int)
            self.texts_ = frame.reset_index(drop=True)
        return self.texts_

    @property
    def personas(self) -> dict[int, Persona]:
        return {p.segment_id: p for p in self.rundir.load_personas()}

    def segment(self, segment_id: int) -> Segment:
        try:
            return self.segment_set.get(int(segment_id))
        except (KeyError, TypeError, ValueError):
            ids = ", ".join(str(s.segment_id) for s in self.segment_set.segments)
            raise ValueError(f"there is no segment {segment_id!r} in this run; its segments are {ids}") from None

    def text_ref(self, text_id: str, segment_id: int, user_id: str, text: str, score: float | None = None) -> TextRef:
        cut = len(text) > self.max_text_chars
        return TextRef(
            text_id=str(text_id),
            segment_id=int(segment_id),
            user_id=str(user_id),
            text=text[: self.max_text_chars].rstrip() + ("…" if cut else ""),
            truncated=cut,
            score=None if score is None else round(float(score), 4),
        )

    def _overview(self, seg: Segment) -> SegmentOverview:
        persona = self.personas.get(seg.segment_id)
        return SegmentOverview(
            segment_id=seg.segment_id,
            size=seg.size,
            share=seg.share,
            n_texts=seg.n_texts,
            keywords=[k.term for k in seg.keywords[:8]],
            persona_name=persona.name if persona else None,
        )

    @staticmethod
    def _attribute_columns(seg: Segment, column: str | None = None) -> list[AttributeColumn]:
        out: list[AttributeColumn] = []
        for name, summary in seg.attributes.items():
            if column is not None and name != column:
                continue
            if isinstance(summary, CategoricalSummary):
                values = [AttributeValue(value=c.value, share=c.share, overall_share=c.overall_share) for c in summary.top[:6]]
                out.append(AttributeColumn(column=name, kind="categorical", values=values))
            elif isinstance(summary, NumericSummary):
                out.append(
                    AttributeColumn(
                        column=name, kind="numeric", mean=summary.mean, median=summary.median, overall_mean=summary.overall_mean
                    )
                )
        return out

    # -- the tools ------------------------------------------------------------------------------------

    def list_segments(self) -> SegmentList:
        """Every segment, largest first: size, share, keywords, persona name."""
        segs = self.segment_set
        ordered = sorted(segs.segments, key=lambda s: (-s.size, s.segment_id))
        return SegmentList(
            run_id=segs.run_id,
            n_users=segs.n_users,
            n_assigned=segs.n_assigned,
            coverage=segs.coverage,
            segments=[self._overview(s) for s in ordered],
        )

    def describe_segment(self, segment_id: int, n_texts: int = 4) -> SegmentDetail:
        """One segment: size, share, keywords, languages, attribute summaries and representative texts."""
        seg = self.segment(segment_id)
        reps = [self.text_ref(r.text_id, seg.segment_id, r.user_id, r.text) for r in seg.representatives[:n_texts]]
        return SegmentDetail(
            overview=self._overview(seg),
            languages={k: round(v, 4) for k, v in seg.languages.items()},
            cohesion=round(seg.quality.cohesion, 4),
            attributes=self._attribute_columns(seg),
            representatives=reps,
        )

    def get_persona(self, segment_id: int) -> PersonaResult:
        """The persona written for a segment (None when none was), with its verified quotes."""
        seg = self.segment(segment_id)
        persona = self.personas.get(seg.segment_id)
        card = None
        if persona is not None:
            card = PersonaCard(
                persona_id=persona.persona_id,
                name=persona.name,
                tagline=persona.tagline,
                summary=persona.summary,
                interests=list(persona.interests),
                goals=list(persona.goals),
                pain_points=list(persona.pain_points),
                confidence=persona.confidence,
                quotes=[self.text_ref(q.text_id, seg.segment_id, q.user_id, q.text) for q in persona.quotes],
            )
        return PersonaResult(segment_id=seg.segment_id, persona=card, overview=self._overview(seg))

    def search_texts(self, query: str, segment_id: int | None = None, k: int = 8) -> SearchResult:
        """Texts nearest in meaning to `query`, from one segment or all; nearest first."""
        query = query.strip()
        if not query:
            raise ValueError("search_texts needs a query")
        if segment_id is not None:
            segment_id = self.segment(segment_id).segment_id
        k = max(1, min(int(k), 20))
        vector = self._query_vector(query)
        hits: dict[str, tuple[float, TextRef]] = {}
        for row in self._store_hits(vector, segment_id, k):
            ref = self.text_ref(row["text_id"], int(row["segment_id"]), row.get("user_id", ""), row["text"], row["score"])
            hits[ref.text_id] = (float(row["score"]), ref)
        frame = self.texts
        for score, idx in self._vector_hits(vector, segment_id, k):
            text_id = str(frame["text_id"].iat[idx])
            if text_id in hits:
                continue
            ref = self.text_ref(
                text_id, int(str(frame["segment_id"].iat[idx])), str(frame["user_id"].iat[idx]), str(frame["text"].iat[idx]), score
            )
            hits[text_id] = (score, ref)
        best = sorted(hits.values(), key=lambda h: -h[0])[:k]
        return SearchResult(query=query, segment_id=segment_id, hits=[ref for _, ref in best])

    def compare_segments(self, a: int, b: int) -> SegmentComparison:
        """Two segments side by side: sizes, shares, keywords they share and do not, attributes."""
        sa, sb = self.segment(a), self.segment(b)
        ka, kb = [k.term for k in sa.keywords[:10]], [k.term for k in sb.keywords[:10]]
        return SegmentComparison(
            a=self._overview(sa),
            b=self._overview(sb),
            shared_keywords=[t for t in ka if t in kb],
            only_a=[t for t in ka if t not in kb],
            only_b=[t for t in kb if t not in ka],
            attributes_a=self._attribute_columns(sa),
            attributes_b=self._attribute_columns(sb),
        )

    def attribute_breakdown(self, segment_id: int, column: str | None = None) -> AttributeBreakdown:
        """A segment's attribute columns (top values with their share in the segment and overall; numeric
        mean and median), or one column."""
        seg = self.segment(segment_id)
        column = (column or "").strip() or None
        if column is not None and column not in seg.attributes:
            known = ", ".join(sorted(seg.attributes)) or "none"
            raise ValueError(f"segment {seg.segment_id} has no attribute column {column!r}; columns: {known}")
        return AttributeBreakdown(segment_id=seg.segment_id, columns=self._attribute_columns(seg, column))

    def count_mentions(self, term: str, segment_id: int | None = None, n_examples: int = 3) -> MentionCounts:
        """How many texts of each segment mention `term` (at the start of a word, any case), most first,
        with example texts from the segments that mention it most."""
        pattern = mention_pattern(term)
        texts = self.texts[self.texts["segment_id"] >= 0]
        if segment_id is not None:
            texts = texts[texts["segment_id"] == self.segment(segment_id).segment_id]
        hit = texts["text"].astype(str).map(lambda t: pattern.search(t) is not None)
        counts = []
        for sid, group in texts.groupby("segment_id", sort=True):
            n = int(hit[group.index].sum())
            counts.append(MentionCount(segment_id=int(str(sid)), texts_mentioning=n, n_texts=len(group), share_of_texts=round(n / max(len(group), 1), 4)))
        counts.sort(key=lambda c: (-c.texts_mentioning, -c.share_of_texts, c.segment_id))
        examples: list[TextRef] = []
        for c in counts:
            if c.texts_mentioning == 0 or len(examples) >= n_examples:
                break
            rows = texts[hit & (texts["segment_id"] == c.segment_id)].head(n_examples - len(examples))
            examples += [
                self.text_ref(str(t), c.segment_id, str(u), str(x))
                for t, u, x in zip(rows["text_id"], rows["user_id"], rows["text"], strict=True)
            ]
        return MentionCounts(term=term.strip(), segments=counts, examples=examples)

    # -- search internals -----------------------------------------------------------------------------

    def _embedder(self) -> Any:
        if self.embedder is None:
            from persona_llm.segment.embed import embedder_from_model_id

            model_id = self.rundir.load_manifest().models.get("embedder") if self.rundir.has(MANIFEST) else None
            if not model_id:
                raise InputError("the run's manifest names no embedder: cannot search by meaning", path=str(self.rundir.path))
            self.embedder = embedder_from_model_id(str(model_id))
        return self.embedder

    def _query_vector(self, query: str) -> np.ndarray:
        vec = np.asarray(self._embedder().encode([query], kind="query"), dtype=np.float32)[0]
        norm = float(np.linalg.norm(vec))
        return vec / norm if norm > 0 else vec

    def _store(self) -> Any:
        if self.store is None:
            from persona_llm.segment.store import store_for_run

            self.store = store_for_run(self.rundir)
        return self.store

    def _store_hits(self, vector: np.ndarray, segment_id: int | None, k: int) -> list[dict[str, Any]]:
        store = self._store()
        try:
            return list(store.query_texts(vector, self.segment_set.run_id, segment_id=segment_id, n_results=k))
        except Exception as exc:  # noqa: BLE001 - an empty or missing collection: the vectors still answer
            if "Number of requested results" in str(exc) or "does not exist" in str(exc):
                return []
            raise

    def _vector_hits(self, vector: np.ndarray, segment_id: int | None, k: int) -> list[tuple[float, int]]:
        if not self.rundir.has(TEXT_EMBEDDINGS):
            return []
        vectors = self.rundir.load_text_embeddings()
        segments = self.texts["segment_id"].to_numpy()
        rows = np.flatnonzero(segments == segment_id) if segment_id is not None else np.flatnonzero(segments >= 0)
        if len(rows) == 0:
            return []
        scores = vectors[rows] @ vector
        top = np.argsort(-scores)[:k]
        return [(float(scores[i]), int(rows[i])) for i in top]

    # -- LangChain ------------------------------------------------------------------------------------

    def as_langchain_tools(self) -> list[Any]:
        """The tools as LangChain `StructuredTool`s with typed argument schemas. Each returns its record
        as JSON content and the record itself as the ToolMessage's artifact (what the checks read); an
        error (unknown segment) goes back to the model as the tool's answer."""
        from langchain_core.tools import StructuredTool, ToolException

        def wrap(method: Callable[..., ToolResult]) -> Callable[..., tuple[str, ToolResult]]:
            def run(**kwargs: Any) -> tuple[str, ToolResult]:
                try:
                    result = method(**kwargs)
                except ValueError as exc:  # handle_tool_error hands the message to the model
                    raise ToolException(str(exc)) from exc
                return result.model_dump_json(exclude_none=True), result

            return run

        specs: Sequence[tuple[str, Callable[..., ToolResult], type[BaseModel], str]] = (
            ("list_segments", self.list_segments, NoArgs, "List every segment of the run, largest first: size (users), share of users, keywords, persona name."),
            ("describe_segment", self.describe_segment, SegmentArgs, "Describe one segment: size, share, keywords, languages, attributes and representative customer texts."),
            ("get_persona", self.get_persona, SegmentArgs, "The marketing persona written for one segment, with its verified quotes."),
            ("search_texts", self.search_texts, SearchArgs, "Customer texts nearest in meaning to a query, within one segment or across all; returns text ids to cite."),
            ("compare_segments", self.compare_segments, CompareArgs, "Compare two segments: sizes, shares, shared and distinct keywords, attributes."),
            ("attribute_breakdown", self.attribute_breakdown, AttributeArgs, "A segment's attribute columns (e.g. plan, age): value shares in the segment vs overall."),
            ("count_mentions", self.count_mentions, MentionArgs, "How many texts of each segment mention a word, most first, with example texts: which segment talks most about it."),
        )
        tools = []
        for name, method, schema, description in specs:
            tools.append(
                StructuredTool.from_function(
                    func=wrap(method),
                    name=name,
                    description=description,
                    args_schema=schema,
                    response_format="content_and_artifact",
                    handle_tool_error=True,
                    handle_validation_error=True,
                )
            )
        return tools


# -- argument schemas (what the model fills in) --------------------------------------------------------


class NoArgs(BaseModel):
    pass


class SegmentArgs(BaseModel):
    segment_id: int = Field(description="the segment's id")


class SearchArgs(BaseModel):
    query: str = Field(description="what to look for, in the customers' words")
    segment_id: int | None = Field(default=None, description="only this segment; omit to search all")
    k: int = Field(default=8, ge=1, le=20, description="how many texts")


class CompareArgs(BaseModel):
    a: int = Field(description="first segment id")
    b: int = Field(description="second segment id")


class AttributeArgs(BaseModel):
    segment_id: int = Field(description="the segment's id")
    column: str | None = Field(default=None, description="one attribute column; omit for all")


class MentionArgs(BaseModel):
    term: str = Field(description="the word to count")
    segment_id: int | None = Field(default=None, description="only this segment; omit for all")

