"""The segment records a run holds (`SegmentSet`, read and written by `persona_llm.runs.rundir.RunDir`,
which also lists every file of a run) and later stages read (personas, chat, evals)."""

from __future__ import annotations

from pydantic import BaseModel, Field


class Keyword(BaseModel):
    term: str
    score: float


class Representative(BaseModel):
    """A text chosen to stand for its segment: near the centre and diverse (MMR)."""

    text_id: str
    user_id: str
    text: str
    language: str = "und"
    similarity: float = Field(description="cosine similarity to the segment centroid")


class NumericSummary(BaseModel):
    kind: str = "numeric"
    count: int
    mean: float
    median: float
    overall_mean: float


class CategoryShare(BaseModel):
    value: str
    share: float
    overall_share: float = Field(description="share of this value among all users, for lift")


class CategoricalSummary(BaseModel):
    kind: str = "categorical"
    count: int
    top: list[CategoryShare]


class SegmentQuality(BaseModel):
    mean_probability: float
    silhouette: float | None = None
    cohesion: float = Field(description="mean cosine of members to the centroid")


class Segment(BaseModel):
    segment_id: int
    size: int = Field(description="number of users")
    share: float = Field(description="share of all segmented users")
    n_texts: int
    keywords: list[Keyword]
    representative_text_ids: list[str]
    representatives: list[Representative]
    attributes: dict[str, NumericSummary | CategoricalSummary] = Field(default_factory=dict)
    languages: dict[str, float] = Field(default_factory=dict)
    quality: SegmentQuality


class SegmentSet(BaseModel):
    run_id: str
    n_users: int = Field(description="users segmented (kept by cleaning and min_texts)")
    n_assigned: int = Field(description="users in a segment after outlier reassignment")
    coverage: float = Field(description="n_assigned / n_users: share in a segment after outlier reassignment")
    noise_share: float = Field(description="share of users still unassigned (-1) after outlier reassignment")
    coverage_hdbscan: float | None = Field(
        default=None,
        description="share of users the clusterer (HDBSCAN) itself assigned, before outlier reassignment; "
        "None for runs written before it was recorded",
    )
    noise_share_hdbscan: float | None = Field(
        default=None, description="share of users HDBSCAN itself left as noise, before outlier reassignment"
    )
    segments: list[Segment]
    quality: dict[str, float | None] = Field(default_factory=dict)

    def get(self, segment_id: int) -> Segment:
        for seg in self.segments:
            if seg.segment_id == segment_id:
                return seg
        raise KeyError(f"no segment {segment_id} in run {self.run_id}")
