"""The segment records a run writes (`segments.json`) and later stages read (personas, chat, evals).

Run directory layout (written by `SegmentPipeline.save`):
    manifest.json         RunManifest: input hash, row counts, parameters, models, timings, version
    segments.json         SegmentSet: the segments below
    assignments.csv       user_id, segment_id, probability, assigned_by (-1: unassigned on purpose;
                          assigned_by "cluster": HDBSCAN's own, "reassigned": noise moved to the nearest
                          segment, "noise": left unassigned)
    rejects.csv           every input row not used, with stage, field and reason
    texts.parquet         the cleaned, redacted texts used: text_id, user_id, text, language,
                          segment_id (of the text's user) + attribute columns
    text_embeddings.npy   float32 (n_texts, dim), row-aligned with texts.parquet
    user_embeddings.npy   float32 (n_users, dim), row-aligned with assignments.csv
    chroma/               the Chroma store (when the default persistent store is used)
"""

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
