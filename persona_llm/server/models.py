"""What the HTTP API returns and accepts, as Pydantic models (they make the OpenAPI schema at /docs).

Run records are served as the run store holds them (`Segment`, `Persona` from persona_llm.schema); the
models here are the lists, summaries and requests around them. Request models bound every string, so an
oversized or malformed field is a 422 that names it, never a 500.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from persona_llm.schema.briefs import CHANNEL_MAX_CHARS, GOAL_MAX_CHARS, BriefKind
from persona_llm.schema.personas import Persona, Quote
from persona_llm.schema.segments import Segment


class _Request(BaseModel):
    # A misspelt field is an error that names it, not silently ignored.
    model_config = ConfigDict(extra="forbid")


class ErrorBody(BaseModel):
    """Every error: what went wrong in one line, the request id to find it in the logs, and for a 422 the
    fields at fault."""

    error: str
    request_id: str = ""
    fields: list[dict[str, Any]] = Field(default_factory=list)


class RunSummary(BaseModel):
    name: str
    run_id: str
    created_at: str
    current: bool
    published: bool = Field(description="published at some time (the publish log names it)")
    has_personas: bool
    segments: int | None


class RunList(BaseModel):
    workspace: str
    current: str | None
    runs: list[RunSummary]


class ServerInfo(BaseModel):
    """What a client needs before it asks anything: which run is published and what this server offers."""

    version: str
    workspace: str
    current_run: str | None
    run_id: str | None
    auth: Literal["api-key", "none (loopback only)"]
    features: list[str] = Field(description="optional endpoint groups this server has (e.g. chat, briefs)")
    limits: dict[str, float]


class PersonaRef(BaseModel):
    persona_id: str
    name: str


class SegmentSummary(BaseModel):
    segment_id: int
    size: int = Field(description="users")
    share: float
    n_texts: int
    keywords: list[str]
    colour: str = Field(description="the segment's colour on the map and in the report")
    persona: PersonaRef | None


class SegmentList(BaseModel):
    run: str
    run_id: str
    n_users: int
    coverage: float
    segments: list[SegmentSummary]


class SegmentDetail(BaseModel):
    run: str
    colour: str
    persona: PersonaRef | None
    segment: Segment


class PersonaSummary(BaseModel):
    persona_id: str
    segment_id: int
    name: str
    tagline: str
    summary: str
    confidence: str
    user_count: int
    share: float
    n_texts: int
    keywords: list[str]
    quotes: list[Quote]
    colour: str


class PersonaList(BaseModel):
    run: str
    run_id: str
    personas: list[PersonaSummary]


class PersonaDetail(BaseModel):
    run: str
    persona: Persona


class TextRecord(BaseModel):
    """One cleaned, redacted customer text of the run (what a citation or quote points at)."""

    text_id: str
    segment_id: int
    language: str
    text: str


class TextDetail(BaseModel):
    run: str
    text: TextRecord


class SearchHit(TextRecord):
    score: int = Field(description="how often the query's words occur in the text")


class SearchResult(BaseModel):
    run: str
    segment_id: int | None
    total: int = Field(description="texts matching every word (only `limit` are returned)")
    hits: list[SearchHit]


class MapSegment(BaseModel):
    segment_id: int
    label: str
    colour: str


class UserMapData(BaseModel):
    """The report's 2-D user map: x, y in [0, 1] (PCA of the user embeddings) and a segment per point."""

    run: str
    n_users: int
    points: list[tuple[float, float, int]] = Field(description="(x, y, segment_id); -1 is unassigned")
    segments: list[MapSegment]
    unassigned_colour: str
    note: str = ""


class ChatRequest(_Request):
    question: str = Field(min_length=1, max_length=100_000, description="the question (the server's limit applies)")
    conversation_id: str | None = Field(
        default=None, pattern=r"^c-[A-Za-z0-9_-]{8,64}$", description="continue this conversation (from an earlier answer)"
    )


class BriefRequest(_Request):
    kind: BriefKind = "campaign"
    persona_id: str = Field(
        min_length=1, max_length=400,
        description='a persona id or segment id (messaging: a comma-separated list of them, or "all")',
    )  # fmt: skip
    goal: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=GOAL_MAX_CHARS)] = Field(
        description="what the brief is for"
    )
    channel: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=CHANNEL_MAX_CHARS)] | None = (
        Field(default=None, description="one channel to plan for")
    )
    format: Literal["json", "md", "html"] = "json"
    run: str | None = Field(default=None, max_length=200, description="a run of the workspace; default: the published one")


class PublishRequest(_Request):
    run: str = Field(min_length=1, max_length=200, description="a run name, as /v1/runs lists it")


class PublishResult(BaseModel):
    published: str
    previous: str | None
    action: Literal["publish", "rollback"]
