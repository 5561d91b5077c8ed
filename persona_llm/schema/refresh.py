"""What a refresh records in the run it makes (read and written through `persona_llm.runs.rundir.RunDir`).

    persona_ids.json      PersonaLineage: the persona id (and the version a persona written now gets) of
                          each segment, and the next free segment id. A run without it (a fresh build)
                          mints ids from its data (`RunDir.persona_id`); a refresh carries them forward.
    persona_history.json  list of PersonaVersion: every earlier version of a persona the run's lineage
                          replaced or retired, newest last.
    refresh.json          RefreshDiff: what the refresh changed and why it was (not) published;
                          refresh.md is its Markdown, and report.html shows it as a section.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from persona_llm.schema.personas import Persona

REFRESH_SCHEMA_VERSION = "1"

RefreshStatus = Literal["published", "unchanged", "gate_failed", "dry_run"]
RefreshMode = Literal["auto", "assign", "recluster"]


class LineageEntry(BaseModel):
    persona_id: str
    version: int = Field(ge=1, description="the version a persona written for this segment in this run gets")


class PersonaLineage(BaseModel):
    """persona_ids.json: which persona id each segment of the run carries."""

    segments: dict[int, LineageEntry] = Field(default_factory=dict)
    next_segment_id: int = Field(default=0, description="segment ids are never reused: a new segment gets this one")


class PersonaVersion(BaseModel):
    """One earlier version of a persona, kept when a refresh regenerated or retired it."""

    persona: Persona
    replaced_in_run: str = Field(description="the run id of the refresh that replaced or retired this version")
    reason: Literal["regenerated", "retired"]


class DataChange(BaseModel):
    """What the new data changed, in texts and users."""

    source: str
    snapshot: bool
    rows_read: int = 0
    rows_rejected: int = Field(default=0, description="rejected by reading or cleaning (in rejects.csv with why)")
    rows_of_forgotten_users: int = Field(default=0, description="skipped: their users were forgotten (never stored)")
    already_present: int = Field(default=0, description="texts the workspace already holds (same user, same text)")
    duplicates_dropped: int = Field(default=0, description="texts that repeat another user's text")
    texts_added: int = 0
    texts_changed: int = Field(default=0, description="same text id, different text")
    texts_removed: int = 0
    users_added: int = 0
    users_changed: int = Field(default=0, description="existing users with texts added, changed or removed")
    users_removed: int = 0
    texts_embedded: int = Field(default=0, description="texts sent to the embedding model")
    texts_from_cache: int = Field(default=0, description="new texts whose vectors the content-hash cache held")
    texts_reused: int = Field(default=0, description="texts whose vectors came from the previous run")


class EmergingGroup(BaseModel):
    """A dense group among the users that fit no segment: a segment that may be forming."""

    size: int
    cohesion: float = Field(description="mean cosine of its users to their centroid")
    nearest_segment: int | None = Field(description="the existing segment its centroid is closest to")
    nearest_similarity: float
    keywords: list[str] = Field(default_factory=list)
    text_ids: list[str] = Field(default_factory=list, description="texts nearest its centroid")


class DriftFigures(BaseModel):
    """How far the data moved from the published segmentation, and what `auto` decided from it."""

    users_before: int
    users_after: int
    new_or_changed_users: int
    unassigned_new_users: int = Field(description="new or changed users that fit no segment (pooled)")
    unassigned_share: float = Field(description="unassigned_new_users / new_or_changed_users (0 when none)")
    centroid_shift_max: float = Field(description="largest 1 - cosine between a segment's centroid before and after")
    centroid_shift_mean: float = Field(description="the same, averaged over segments weighted by size")
    membership_churn: float = Field(
        description="share of users (before or after) who joined, left or changed segment"
    )
    emerging: list[EmergingGroup] = Field(default_factory=list)
    thresholds: dict[str, float] = Field(default_factory=dict, description="auto re-clusters past any of these")
    exceeded: list[str] = Field(default_factory=list, description="the thresholds this refresh went past")
    assigner: str = Field(default="", description="how new users were assigned (SegmentAssigner.prediction_note_)")


class SegmentChange(BaseModel):
    """One segment before and after (ids are stable: the same id is the same segment)."""

    segment_id: int
    status: Literal["kept", "changed", "added", "retired"]
    size_before: int | None = None
    size_after: int | None = None
    share_before: float | None = None
    share_after: float | None = None
    joined: int = Field(default=0, description="users in it now who were not before")
    left: int = Field(default=0, description="users in it before who are not now")
    churn: float = Field(default=0.0, description="1 - Jaccard of its members before and after")
    centroid_shift: float | None = None
    split_from: int | None = Field(default=None, description="the retired or kept segment it was split from")
    merged_from: list[int] = Field(default_factory=list, description="segments merged into it")
    merged_into: int | None = Field(default=None, description="for a retired segment: where its users went")
    match_score: float | None = Field(default=None, description="recluster: centroid cosine and member overlap")


class Split(BaseModel):
    segment_id: int = Field(description="the segment before")
    into: list[int]


class Merge(BaseModel):
    segment_ids: list[int] = Field(description="the segments before")
    into: int


class QuoteChange(BaseModel):
    text_id: str
    text: str
    reason: str = ""


class PersonaChange(BaseModel):
    persona_id: str
    segment_id: int
    name: str
    action: Literal["kept", "regenerated", "added", "retired", "failed"]
    version_before: int | None = None
    version_after: int | None = None
    churn: float | None = Field(default=None, description="membership change of its segment")
    fields_changed: list[str] = Field(default_factory=list)
    quotes_added: list[QuoteChange] = Field(default_factory=list)
    quotes_removed: list[QuoteChange] = Field(default_factory=list)
    flags: list[str] = Field(default_factory=list, description="what a reader must know (e.g. quotes dropped)")


class GateResult(BaseModel):
    name: str
    passed: bool
    detail: str


class RefreshDiff(BaseModel):
    """refresh.json: everything a refresh changed, measured, decided and checked."""

    schema_version: str = REFRESH_SCHEMA_VERSION
    status: RefreshStatus
    reason: str = Field(default="", description="why it was not published, or why nothing changed")
    previous_run: str
    run: str | None = Field(default=None, description="the run id of the run written (None: nothing written)")
    mode_asked: RefreshMode
    mode_used: Literal["assign", "recluster", "none"]
    persona_threshold: float = Field(description="a persona is kept when its segment's churn is below this")
    data: DataChange
    drift: DriftFigures | None = None
    segments: list[SegmentChange] = Field(default_factory=list)
    splits: list[Split] = Field(default_factory=list)
    merges: list[Merge] = Field(default_factory=list)
    personas: list[PersonaChange] = Field(default_factory=list)
    gates: list[GateResult] = Field(default_factory=list)
    llm_calls: int = Field(default=0, description="model calls made (cached replies not counted)")
    seconds: float = 0.0
    timings_s: dict[str, float] = Field(default_factory=dict)

    def gates_failed(self) -> list[GateResult]:
        return [g for g in self.gates if not g.passed]
