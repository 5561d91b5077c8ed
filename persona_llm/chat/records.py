"""The records of segment chat: what each tool returns, what the model must write, and what a caller gets.

Three kinds, one module, so the tools, the checks, the CLI and the server read the same shapes:

* Tool results (`SegmentList`, `SegmentDetail`, `PersonaResult`, `SearchResult`, `SegmentComparison`,
  `AttributeBreakdown`, `MentionCounts`). Each says which texts it showed (`texts()`: the only texts an
  answer may cite) and which numbers it stated (`facts()`: what sizes and shares in an answer are
  checked against, with the run's own).
* What the model writes: `Route` (the router step) and `DraftAnswer` (the answer step, and the tool
  agent's structured final answer). Both are schema-constrained on backends that decode JSON schemas.
* What a caller gets: `ChatAnswer` (checked), and the events of a streamed answer.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from persona_llm.schema.personas import DRAFT_QUOTE_MAX_CHARS

#: Limits of what the model may write; a JSON schema does not bound length otherwise.
ANSWER_MAX_CHARS = 1200
QUERY_MAX_CHARS = 200
QUOTE_MAX_CHARS = DRAFT_QUOTE_MAX_CHARS  # the persona quote gate's limit: chat quotes pass the same gate
MAX_CITATIONS = 8
MAX_QUOTES = 3


class _Strict(BaseModel):
    # additionalProperties: false, so constrained decoding cannot add stray keys.
    model_config = ConfigDict(extra="forbid")


# -- numbers and texts the tools showed ---------------------------------------------------------------

FactKind = Literal["users", "texts", "share", "percent", "segments"]


class Fact(BaseModel):
    """One number a tool stated: a segment's users, texts or share (as a percentage), another percentage,
    or the number of segments.

    `segment_id` None: a number about the whole run (all users, coverage)."""

    kind: FactKind
    value: float
    segment_id: int | None = None
    label: str = ""
    terms: list[str] = Field(
        default_factory=list,
        description="words a sentence must use for this number to be what it states (an attribute value, a counted "
        "word): 33.9% of all users being 'coffee' does not make 33.9% a segment's share",
    )


class TextRef(BaseModel):
    """A text a tool returned: citable in this turn's answer. `text` may be cut (`truncated`); checks read
    the run's full text."""

    text_id: str
    segment_id: int
    user_id: str = ""
    text: str
    truncated: bool = False
    score: float | None = Field(default=None, description="cosine similarity to the search query")


class ToolResult(BaseModel):
    """Base of every tool result: the texts it showed and the numbers it stated."""

    def texts(self) -> list[TextRef]:
        return []

    def facts(self) -> list[Fact]:
        return []


class SegmentOverview(BaseModel):
    segment_id: int
    size: int = Field(description="users in the segment")
    share: float = Field(description="share of all segmented users, 0-1")
    n_texts: int
    keywords: list[str]
    persona_name: str | None = None

    def facts(self) -> list[Fact]:
        sid = self.segment_id
        return [
            Fact(kind="users", value=self.size, segment_id=sid, label=f"segment {sid} users"),
            Fact(kind="share", value=round(self.share * 100, 6), segment_id=sid, label=f"segment {sid} share"),
            Fact(kind="texts", value=self.n_texts, segment_id=sid, label=f"segment {sid} texts"),
        ]


class SegmentList(ToolResult):
    run_id: str
    n_users: int = Field(description="users segmented")
    n_assigned: int = Field(description="users in a segment")
    coverage: float
    segments: list[SegmentOverview] = Field(description="largest first")

    def facts(self) -> list[Fact]:
        facts = [
            Fact(kind="users", value=self.n_users, label="users segmented"),
            Fact(kind="users", value=self.n_assigned, label="users in a segment"),
            Fact(kind="share", value=round(self.coverage * 100, 6), label="coverage"),
            Fact(kind="share", value=round((1 - self.coverage) * 100, 6), label="unassigned"),
        ]
        return facts + [f for s in self.segments for f in s.facts()]


class AttributeValue(BaseModel):
    value: str
    share: float = Field(description="share of the segment's users, 0-1")
    overall_share: float = Field(description="share among all users, 0-1")


class AttributeColumn(BaseModel):
    column: str
    kind: Literal["categorical", "numeric"]
    values: list[AttributeValue] = Field(default_factory=list)
    mean: float | None = None
    median: float | None = None
    overall_mean: float | None = None


class AttributeBreakdown(ToolResult):
    segment_id: int
    columns: list[AttributeColumn]

    def facts(self) -> list[Fact]:
        out: list[Fact] = []
        for col in self.columns:
            for v in col.values:
                terms = [v.value, col.column]
                out.append(Fact(kind="percent", value=round(v.share * 100, 6), segment_id=self.segment_id, label=f"{col.column}={v.value}", terms=terms))
                out.append(Fact(kind="percent", value=round(v.overall_share * 100, 6), label=f"{col.column}={v.value} overall", terms=terms))
        return out


class SegmentDetail(ToolResult):
    overview: SegmentOverview
    languages: dict[str, float] = Field(default_factory=dict)
    cohesion: float | None = None
    attributes: list[AttributeColumn] = Field(default_factory=list)
    representatives: list[TextRef] = Field(description="texts near the segment's centre, and diverse")

    def texts(self) -> list[TextRef]:
        return list(self.representatives)

    def facts(self) -> list[Fact]:
        return self.overview.facts() + AttributeBreakdown(segment_id=self.overview.segment_id, columns=self.attributes).facts()


class PersonaCard(BaseModel):
    persona_id: str
    name: str
    tagline: str
    summary: str
    interests: list[str]
    goals: list[str]
    pain_points: list[str]
    confidence: str
    quotes: list[TextRef] = Field(description="the persona's verified quotes, each with its source text id")


class PersonaResult(ToolResult):
    segment_id: int
    persona: PersonaCard | None = Field(description="None: no persona was written for this segment")
    overview: SegmentOverview

    def texts(self) -> list[TextRef]:
        return list(self.persona.quotes) if self.persona else []

    def facts(self) -> list[Fact]:
        return self.overview.facts()


class SearchResult(ToolResult):
    query: str
    segment_id: int | None = None
    hits: list[TextRef] = Field(description="nearest in meaning first")

    def texts(self) -> list[TextRef]:
        return list(self.hits)


class SegmentComparison(ToolResult):
    a: SegmentOverview
    b: SegmentOverview
    shared_keywords: list[str]
    only_a: list[str]
    only_b: list[str]
    attributes_a: list[AttributeColumn] = Field(default_factory=list)
    attributes_b: list[AttributeColumn] = Field(default_factory=list)

    def facts(self) -> list[Fact]:
        return (
            self.a.facts()
            + self.b.facts()
            + AttributeBreakdown(segment_id=self.a.segment_id, columns=self.attributes_a).facts()
            + AttributeBreakdown(segment_id=self.b.segment_id, columns=self.attributes_b).facts()
        )


class MentionCount(BaseModel):
    segment_id: int
    texts_mentioning: int
    n_texts: int
    share_of_texts: float = Field(description="texts_mentioning / n_texts, 0-1")


class MentionCounts(ToolResult):
    term: str
    segments: list[MentionCount] = Field(description="most texts mentioning the term first")
    examples: list[TextRef] = Field(default_factory=list, description="texts that mention it, from the top segments")

    def texts(self) -> list[TextRef]:
        return list(self.examples)

    def facts(self) -> list[Fact]:
        out: list[Fact] = []
        for m in self.segments:
            terms = [self.term, "mention"]
            out.append(Fact(kind="texts", value=m.texts_mentioning, segment_id=m.segment_id, label=f"texts mentioning {self.term}", terms=terms))
            out.append(Fact(kind="percent", value=round(m.share_of_texts * 100, 6), segment_id=m.segment_id, label=f"share mentioning {self.term}", terms=terms))
            out.append(Fact(kind="texts", value=m.n_texts, segment_id=m.segment_id, label=f"segment {m.segment_id} texts"))
        return out


# -- what the model writes ----------------------------------------------------------------------------

Intent = Literal[
    "list_segments",
    "describe_segment",
    "get_persona",
    "search_texts",
    "compare_segments",
    "attribute_breakdown",
    "count_mentions",
    "out_of_scope",
]
INTENTS: tuple[str, ...] = Intent.__args__  # type: ignore[attr-defined]


class Route(_Strict):
    """The router step: what the question asks for (field order = generation order)."""

    intent: Intent
    segment_ids: list[int] = Field(default_factory=list, max_length=2, description="segments the question names")
    query: str = Field(default="", max_length=QUERY_MAX_CHARS, description="topic, word or attribute column asked about")


class DraftQuote(_Strict):
    text_id: str = Field(max_length=64, description="id of the text the quote is copied from")
    segment_id: int = Field(description="the segment that text belongs to")
    text: str = Field(min_length=1, max_length=QUOTE_MAX_CHARS, description="copied exactly from that text")


class DraftAnswer(_Strict):
    """The answer step (and the tool agent's final answer), before checks."""

    answer: str = Field(max_length=ANSWER_MAX_CHARS, description="the answer, from the tool results only")
    citations: list[str] = Field(default_factory=list, max_length=MAX_CITATIONS, description="ids of the texts the answer rests on")
    quotes: list[DraftQuote] = Field(default_factory=list, max_length=MAX_QUOTES)
    out_of_scope: bool = Field(default=False, description="true when the question is not about this run's segments")


# -- what a caller gets -------------------------------------------------------------------------------

ScopeVerdict = Literal["in", "out", "undecided"]


class ScopeDecision(BaseModel):
    """What the question's words say about its scope (see `persona_llm.chat.scope`)."""

    verdict: ScopeVerdict
    about_run: list[str] = Field(default_factory=list, description="the words that refer to the run's data")
    cues: list[str] = Field(default_factory=list, description="the out-of-scope cues found")




class Citation(BaseModel):
    """A cited text as the run stores it (the whole text, for a reader to open)."""

    text_id: str
    segment_id: int
    text: str


class ChatQuote(BaseModel):
    """A quote that passed the shared verbatim matcher: the source's own words, from a text of `segment_id`."""

    text_id: str
    segment_id: int
    text: str


class Removal(BaseModel):
    kind: Literal["citation", "quote", "sentence"]
    item: str
    reason: str


class AnswerChecks(BaseModel):
    """What was checked before the answer was shown, and what it cost the answer."""

    checked: list[str] = Field(description="the checks that ran")
    passed: bool = Field(description="the first draft passed every check")
    reasked: bool = False
    problems: list[str] = Field(default_factory=list, description="problems found, first draft and re-ask")
    removed: list[Removal] = Field(default_factory=list, description="what the shown answer lost")


class ChatAnswer(BaseModel):
    conversation_id: str
    question: str
    answer: str
    citations: list[Citation] = Field(default_factory=list)
    quotes: list[ChatQuote] = Field(default_factory=list)
    checks: AnswerChecks
    refused: bool = False
    strategy: Literal["router", "tools"]
    route: Route | None = Field(default=None, description="the router's decision (router strategy)")
    scope: ScopeDecision | None = Field(default=None, description="what the question's own words say about its scope")
    tools_called: list[str] = Field(default_factory=list)
    evidence_ids: list[str] = Field(default_factory=list, description="ids of the texts the tools returned this turn: all it could cite")
    run_id: str = ""
    seconds: float = 0.0
    first_token_seconds: float | None = None


class TokenEvent(BaseModel):
    """A piece of the answer as the model writes it (the first draft; a re-ask streams again after a
    StatusEvent). The FinalEvent's answer, checked, is what to show in the end."""

    type: Literal["token"] = "token"
    text: str


class StatusEvent(BaseModel):
    """Progress a reader may show: which tools ran, that the answer is being re-asked."""

    type: Literal["status"] = "status"
    text: str


class FinalEvent(BaseModel):
    type: Literal["final"] = "final"
    answer: ChatAnswer


ChatEvent = Annotated[TokenEvent | StatusEvent | FinalEvent, Field(discriminator="type")]
