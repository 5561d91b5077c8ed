"""Strategist briefs: what the LLM is asked to fill (the `*Draft` models) and what a reader gets
(`Brief`, `NarrativeBrief`, `MessagingMatrix`).

As with personas (`persona_llm.schema.personas`), two kinds of model on purpose. A *draft* is the
response schema sent to the model: only what the model can know from the prompt, every list and string
bounded (a JSON schema alone does not stop a small model rambling). Drafts leave out their quote field:
the writer adds it per prompt, as `quote_ids` (an enum of the prompt's numbered sentences: quotes by
reference, `persona_llm.personas.quoting`) or as `quotes` copied as text for backends without schema
decoding. A draft's cited claims (`CitedClaim.text_ids`) become an enum of the prompt's text ids in the
same way.

The stored models add what the model does not decide: the audience's numbers (copied from the run, never
written by the model), verified quotes with their user, the cited claims that passed the gates, the
confidence computed from evidence, and provenance holding every gate decision.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, TypeAdapter

from persona_llm.schema.personas import Confidence, Quote, QuoteRemoval, StatementCheck

BRIEF_SCHEMA_VERSION = "1"

BriefKind = Literal["campaign", "narrative", "messaging"]
BRIEF_KINDS: tuple[BriefKind, ...] = ("campaign", "narrative", "messaging")
GOAL_MAX_CHARS = 300
CHANNEL_MAX_CHARS = 60

Short = Annotated[str, StringConstraints(min_length=1, max_length=80, strip_whitespace=True)]
Sentence = Annotated[str, StringConstraints(min_length=1, max_length=200, strip_whitespace=True)]


class _Strict(BaseModel):
    # additionalProperties: false in the schema, so constrained decoding cannot add stray keys.
    model_config = ConfigDict(extra="forbid")


# -- drafts: the response schemas -------------------------------------------------------------------


class CitedClaim(_Strict):
    """A sentence about the customers and the texts that show it. Checked after generation: every id
    must be a text of the segment, the sentence must be supported by the segment's texts, and any
    number in it must be the run's or the cited texts' own."""

    text: Sentence = Field(description="one sentence about these customers, from what the cited texts say")
    text_ids: list[str] = Field(min_length=1, max_length=3, description="ids of the texts that show it, e.g. t3")


class ChannelStep(_Strict):
    channel: Short
    action: Sentence = Field(description="what to do there, and when")


class ObjectionDraft(_Strict):
    objection: Sentence = Field(description="a doubt these customers have, as their texts show it")
    answer: Sentence = Field(description="how the brand answers it")


class BriefDraft(_Strict):
    """Base of the three response models. Class variables name the fields the gates read:
    `CITED` (CitedClaim or list of them: citations, numbers and support are checked) and `CHECKED`
    (other statements about the customers: support and numbers are checked)."""

    CITED: ClassVar[tuple[str, ...]] = ()
    CHECKED: ClassVar[tuple[str, ...]] = ()
    #: Bounds of the quote field the writer adds (`quote_ids` or `quotes`).
    MIN_QUOTES: ClassVar[int] = 1
    MAX_QUOTES: ClassVar[int] = 3
    QUOTES_DESCRIPTION: ClassVar[str] = "sentences that prove what the brief says"


class CampaignDraft(BriefDraft):
    """A campaign brief for one persona and one goal (field order = generation order)."""

    CITED: ClassVar[tuple[str, ...]] = ("insights",)
    CHECKED: ClassVar[tuple[str, ...]] = ("objections",)
    QUOTES_DESCRIPTION: ClassVar[str] = "proof points: sentences that prove the key message"

    objective: Sentence = Field(description="what the campaign must achieve for the goal, in one sentence")
    insights: list[CitedClaim] = Field(min_length=1, max_length=3, description="audience insights that matter for the goal")
    key_message: Sentence
    offers: list[Sentence] = Field(min_length=1, max_length=2)
    channel_plan: list[ChannelStep] = Field(min_length=1, max_length=3)
    tone: Short
    do: list[Sentence] = Field(min_length=1, max_length=3)
    dont: list[Sentence] = Field(min_length=1, max_length=3)
    objections: list[ObjectionDraft] = Field(default_factory=list, max_length=2)
    # Sentence, not Short: schema decoding cuts a string at maxLength, and the 1.5B model's metrics ran
    # past 80 characters ("... on a 10").
    measure: list[Sentence] = Field(min_length=1, max_length=3, description="a metric that shows it worked, in a few words")


class NarrativeDraft(BriefDraft):
    """A day-in-the-life story of the persona; every sentence cites the texts it comes from."""

    CITED: ClassVar[tuple[str, ...]] = ("story",)
    QUOTES_DESCRIPTION: ClassVar[str] = "sentences in the customers' own words that fit the story"

    title: Short
    story: list[CitedClaim] = Field(min_length=3, max_length=7, description="the story, one sentence per item, in order")
    takeaways: list[Sentence] = Field(min_length=1, max_length=3, description="what the story means for the goal")


class MessageDraft(BriefDraft):
    """One row of a messaging matrix: the message for one persona and the goal."""

    CITED: ClassVar[tuple[str, ...]] = ("insight",)
    MAX_QUOTES: ClassVar[int] = 1
    QUOTES_DESCRIPTION: ClassVar[str] = "one sentence that proves the message"

    insight: CitedClaim = Field(description="what about these customers the message builds on")
    message: Sentence
    channel: Short
    call_to_action: Short


DRAFT_FOR_KIND: dict[str, type[BriefDraft]] = {
    "campaign": CampaignDraft,
    "narrative": NarrativeDraft,
    "messaging": MessageDraft,
}


# -- what a reader gets -------------------------------------------------------------------------------


class CitedStatement(_Strict):
    """A claim that passed the gates; `text_ids` are real text ids of the audience's segment."""

    text: str
    text_ids: list[str]


class Objection(_Strict):
    objection: str
    answer: str


class Audience(_Strict):
    """Who a brief addresses. Every number is copied from the run, never written by the model."""

    persona_id: str
    persona_name: str
    segment_id: int
    user_count: int
    share: float = Field(description="share of segmented users")
    n_texts: int
    persona_confidence: Confidence


StatementRemovalReason = Literal["unsupported", "no_valid_citation", "number_not_in_run"]
CitationRemovalReason = Literal["unknown_text", "not_in_segment", "unrelated"]


class StatementRemoval(_Strict):
    field: str
    text: str
    reason: StatementRemovalReason
    detail: str = ""


class CitationRemoval(_Strict):
    field: str
    statement: str
    text_id: str
    reason: CitationRemovalReason


class BriefProvenance(_Strict):
    run_id: str
    data_sha256: str = Field(description="input_sha256 of the run manifest")
    agent: str = Field(description="the agent definition (agents/<name>.toml) that wrote it")
    backend: str
    model: str
    prompt_version: str
    prompt_sha256: str
    quote_mode: str
    schema_version: str = BRIEF_SCHEMA_VERSION
    language: str
    generated_at: str = Field(description="ISO 8601 UTC")
    attempts: int = Field(description="generation calls made, including re-asks")
    from_cache: bool = False
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    quotes_proposed: int = 0
    quotes_removed: list[QuoteRemoval] = Field(default_factory=list)
    statements: list[StatementCheck] = Field(
        default_factory=list, description="every statement about the customers, checked against the segment's texts"
    )
    statements_removed: list[StatementRemoval] = Field(default_factory=list)
    citations_removed: list[CitationRemoval] = Field(default_factory=list)
    numbers_checked: int = Field(default=0, description="numbers found in statements and compared with the run's")
    support_share: float | None = None
    confidence_basis: str = ""
    warnings: list[str] = Field(default_factory=list)


class _BriefBase(_Strict):
    brief_id: str = Field(description="hash of run, persona(s), kind, goal and channel")
    run_id: str
    goal: str
    channel: str | None = None
    language: str


class Brief(_BriefBase):
    """A campaign brief (`--kind campaign`)."""

    kind: Literal["campaign"] = "campaign"
    audience: Audience
    objective: str
    audience_insights: list[CitedStatement]
    key_message: str
    proof_points: list[Quote] = Field(description="verbatim sentences of the segment's texts")
    offers: list[str]
    channel_plan: list[ChannelStep]
    tone: str
    do: list[str]
    dont: list[str]
    objections: list[Objection]
    measure: list[str]
    confidence: Confidence = Field(description="computed from evidence, never the model's word")
    provenance: BriefProvenance

    def parts(self) -> list[BriefPart]:
        return [
            BriefPart(
                audience=self.audience,
                cited=[("audience_insights", s) for s in self.audience_insights],
                checked=[("objections", o.objection) for o in self.objections],
                quotes=list(self.proof_points),
                provenance=self.provenance,
            )
        ]


class NarrativeBrief(_BriefBase):
    """A grounded day-in-the-life story (`--kind narrative`)."""

    kind: Literal["narrative"] = "narrative"
    audience: Audience
    title: str
    story: list[CitedStatement] = Field(description="the sentences that passed the gates, in order")
    quotes: list[Quote]
    takeaways: list[str]
    confidence: Confidence
    provenance: BriefProvenance

    def parts(self) -> list[BriefPart]:
        return [
            BriefPart(
                audience=self.audience,
                cited=[("story", s) for s in self.story],
                quotes=list(self.quotes),
                provenance=self.provenance,
            )
        ]


class MessageRow(_Strict):
    audience: Audience
    insight: CitedStatement | None = Field(description="None when the model's insight failed a gate")
    message: str
    channel: str
    call_to_action: str
    proof_point: Quote | None
    confidence: Confidence
    provenance: BriefProvenance


class MessagingMatrix(_BriefBase):
    """One message per persona for one goal (`--kind messaging`)."""

    kind: Literal["messaging"] = "messaging"
    rows: list[MessageRow]
    confidence: Confidence = Field(description="the lowest row's")

    def parts(self) -> list[BriefPart]:
        return [
            BriefPart(
                audience=r.audience,
                cited=[("insight", r.insight)] if r.insight is not None else [],
                quotes=[r.proof_point] if r.proof_point is not None else [],
                provenance=r.provenance,
            )
            for r in self.rows
        ]


class BriefPart(BaseModel):
    """What a brief says about one audience, for checks that treat every kind alike (the eval)."""

    audience: Audience
    cited: list[tuple[str, CitedStatement]] = Field(default_factory=list)
    checked: list[tuple[str, str]] = Field(default_factory=list)
    quotes: list[Quote] = Field(default_factory=list)
    provenance: BriefProvenance


AnyBrief = Annotated[Brief | NarrativeBrief | MessagingMatrix, Field(discriminator="kind")]
#: The one parser of a brief's JSON (`persona-llm brief --format json` writes it; the eval reads it).
BRIEF_ADAPTER: TypeAdapter[Brief | NarrativeBrief | MessagingMatrix] = TypeAdapter(AnyBrief)


def parse_brief(data: str | bytes | dict[str, Any]) -> Brief | NarrativeBrief | MessagingMatrix:
    if isinstance(data, dict):
        return BRIEF_ADAPTER.validate_python(data)
    return BRIEF_ADAPTER.validate_json(data)
