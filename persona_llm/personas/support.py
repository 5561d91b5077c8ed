"""Narrative support: is each thing a persona says (name, tagline, summary sentences, interests, goals,
pain points, motivations, triggers, objections) supported by its segment's texts?

A verbatim quote does not make the words around it true: a segment about a phone call and packing was
once named "Tech Enthusiast" with interests "Technology, Programming" and verbatim quotes. So every
statement is embedded with the run's own embedder (the one that embedded the texts) and compared with
the run's text vectors. A statement is **supported** by segment S when both hold:

1. *close enough, for enough of the segment*: the mean cosine of its nearest texts in S, the top 20% of
   S's texts (at least 3), rescaled as ``(cos - chance) / (1 - chance)`` (chance: mean cosine between
   random texts of the run, so anisotropic embedders are comparable), is at least `min_similarity` (per
   embedder family, below). The top 20%, not the top 3: in a large generic segment a few texts are close
   to almost anything (the ci blog run's 552-text "daily life" segment was named "Tech Enthusiast" from
   3 posts about computers, and top-3 passed every such statement);
2. *S is where it belongs*: that score is at least `min_share_of_best` (0.8) of the best score any
   segment of the run gets for the statement. A claim that fits another segment much better ("loves
   coding" in the daily-life segment of a run that has a programmers' segment) is not this segment's.

Calibrated on planted claims (`tests/test_support.py` keeps small versions of both): 20 Newsgroups,
30 posts of each group as a segment, 40 topic statements written for this test, each checked against
its own group (should pass) and every group of another hierarchy (should fail): MiniLM with
min_similarity 0.12: 100% of true statements pass, 1.1% of planted ones do. Chinese reviews, 10
categories, 20 statements, multilingual E5 (statements embedded as passages) with 0.10: 95% / 6%. On the
ci blog run the "Tech Enthusiast" statements score 0.01-0.09 in the daily-life segment (fail) while the
faith-and-music segment's own statements score 0.10-0.26. An absolute threshold alone does not carry
across embedders; the "share of best" rule does, but alone it passes a claim that fits nowhere in the
run, so both are required.

Similarity says what a statement is about, not whether it is true of the people who wrote the texts:
a statement that calls the members wrongdoers is unsupported unless members say so of themselves
(`persona_llm.personas.accusations`; the ci run's talk.politics.guns segment was once "Gun Criminals").

The eval checks narratives with other means (a lexical check and the LLM judge with planted claims,
`persona_llm.evaluation`), not with this detector again.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from persona_llm.common.vectors import pairwise_cosine
from persona_llm.errors import BackendError, InputError
from persona_llm.personas.accusations import unsupported_accusation
from persona_llm.runs.rundir import MANIFEST, RunDir
from persona_llm.schema.personas import Confidence, PersonaDraft, StatementCheck
from persona_llm.schema.sentences import split_sentences

log = logging.getLogger(__name__)

#: Cosine-above-chance floor per embedder family (matched as a substring of the run's embedder model
#: id, case-folded); see the module docstring for how each was measured.
MIN_SIMILARITY_BY_EMBEDDER: dict[str, float] = {"minilm": 0.12, "e5": 0.10}
DEFAULT_MIN_SIMILARITY = 0.12
MIN_SHARE_OF_BEST = 0.8
#: A statement is scored on the segment's nearest TOP_SHARE of texts (at least MIN_TOP): it must describe
#: a fair part of the segment, not the few texts of a large segment that happen to mention it.
TOP_SHARE, MIN_TOP = 0.2, 3

#: Draft fields checked statement by statement (lists item by item, the summary sentence by sentence).
LIST_FIELDS: tuple[str, ...] = ("interests", "goals", "pain_points", "motivations", "purchase_triggers", "objections")
#: Fields whose unsupported items are dropped from the persona (a list may get shorter; a name cannot).
DROPPABLE_FIELDS = frozenset(LIST_FIELDS)


def min_similarity_for(model_id: str) -> float:
    key = model_id.casefold()
    for family, value in MIN_SIMILARITY_BY_EMBEDDER.items():
        if family in key:
            return value
    return DEFAULT_MIN_SIMILARITY


def draft_statements(draft: PersonaDraft) -> list[tuple[str, str]]:
    """(field, statement) pairs of a draft, in the order a reader meets them."""
    out: list[tuple[str, str]] = [("name", draft.name), ("tagline", draft.tagline)]
    out.extend(("summary", s) for s in split_sentences(draft.summary))
    for name in LIST_FIELDS:
        out.extend((name, item) for item in getattr(draft, name))
    return [(f, s) for f, s in out if s.strip()]


@dataclass
class SupportIndex:
    """The run's text vectors grouped by segment (noise texts left out), plus the embedder's chance level.

    `embed(statements) -> unit vectors` must be the embedder that produced `vectors`. `texts` (row-aligned,
    optional) are read for members' own words by the accusation rule; without them an accusation is never
    supported."""

    vectors: np.ndarray
    segment_ids: np.ndarray
    text_ids: np.ndarray
    chance: float
    min_similarity: float = DEFAULT_MIN_SIMILARITY
    min_share_of_best: float = MIN_SHARE_OF_BEST
    texts: np.ndarray | None = None

    def __post_init__(self) -> None:
        keep = self.segment_ids >= 0
        self.vectors = np.asarray(self.vectors[keep], dtype=np.float32)
        self.segment_ids = np.asarray(self.segment_ids[keep])
        self.text_ids = np.asarray(self.text_ids[keep]).astype(str)
        if self.texts is not None:
            self.texts = np.asarray(self.texts[keep]).astype(str)
        self._segments = sorted({int(s) for s in self.segment_ids})
        self._rows = {s: np.flatnonzero(self.segment_ids == s) for s in self._segments}
        self._row_of = {str(t): i for i, t in enumerate(self.text_ids)}

    def scores(self, statement_vectors: np.ndarray) -> tuple[np.ndarray, list[int]]:
        """(statements x segments) chance-rescaled mean cosine of each segment's nearest TOP_SHARE of texts
        (at least MIN_TOP), and the segment order."""
        return self._scores(np.asarray(statement_vectors, dtype=np.float32) @ self.vectors.T)

    def _scores(self, sims: np.ndarray) -> tuple[np.ndarray, list[int]]:
        out = np.zeros((len(sims), len(self._segments)), dtype=np.float32)
        for j, seg in enumerate(self._segments):
            block = sims[:, self._rows[seg]]
            k = min(block.shape[1], max(MIN_TOP, int(np.ceil(TOP_SHARE * block.shape[1]))))
            top = np.partition(block, block.shape[1] - k, axis=1)[:, -k:]
            out[:, j] = top.mean(axis=1)
        return (out - self.chance) / max(1.0 - self.chance, 1e-6), self._segments

    def check(
        self, segment_id: int, statements: Sequence[tuple[str, str]], statement_vectors: np.ndarray
    ) -> list[StatementCheck]:
        if not statements:
            return []
        if segment_id not in self._rows:
            raise KeyError(f"segment {segment_id} has no texts in the support index")
        all_sims = np.asarray(statement_vectors, dtype=np.float32) @ self.vectors.T  # once, for both uses
        scores, order = self._scores(all_sims)
        col = order.index(segment_id)
        sims = all_sims[:, self._rows[segment_id]]
        own_texts = [] if self.texts is None else list(self.texts[self._rows[segment_id]])
        checks: list[StatementCheck] = []
        for i, (field_name, text) in enumerate(statements):
            own = float(scores[i, col])
            best = float(scores[i].max())
            nearest = np.argsort(-sims[i])[:2]
            accused = unsupported_accusation(field_name, text, own_texts)
            checks.append(
                StatementCheck(
                    field=field_name,
                    text=text,
                    similarity=round(own, 4),
                    best_segment_similarity=round(best, 4),
                    supported=bool(own >= self.min_similarity and own >= self.min_share_of_best * best)
                    and accused is None,
                    text_ids=[str(t) for t in self.text_ids[self._rows[segment_id][nearest]]],
                    reason=accused or "",
                )
            )
        return checks

    def text_vectors(self, text_ids: Sequence[str]) -> dict[str, np.ndarray]:
        """The vectors of those of `text_ids` that are in a segment (noise texts are not indexed)."""
        return {t: self.vectors[self._row_of[t]] for t in text_ids if t in self._row_of}

    def rescale(self, cosine: float) -> float:
        """A cosine on the chance-rescaled scale `min_similarity` is on."""
        return (cosine - self.chance) / max(1.0 - self.chance, 1e-6)


#: Random texts of a run compared to learn what "unrelated" looks like to an embedder (2,016 pairs).
CHANCE_SAMPLE = 64


def chance_rows(n: int, seed: int) -> np.ndarray:
    """The `CHANCE_SAMPLE` seeded rows (sorted) of `n` that chance levels are measured on."""
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, size=min(CHANCE_SAMPLE, n), replace=False))


def chance_level(vectors: np.ndarray, *, seed: int = 0, sampled: bool = False) -> float:
    """Mean cosine between `chance_rows` of `vectors` (all of them when already `sampled`): what
    "unrelated" looks like in this embedding space (anisotropic models put everything close together)."""
    sample = vectors if sampled else vectors[chance_rows(len(vectors), seed)]
    if len(sample) < 2:
        return 0.0
    sims = pairwise_cosine(sample)
    return float(np.clip(sims[np.triu_indices(len(sims), 1)].mean(), 0.0, 0.99))


def run_support_index(
    run: RunDir, *, embedder: Any = None, seed: int = 0
) -> tuple[SupportIndex | None, Any, str]:
    """The support index of a run (its text vectors by segment, its embedder's chance level) and the
    embedder that made the vectors (`embedder`, else rebuilt from the run manifest), for checking
    statements against the run: (index, embedder, model id), or (None, None, why) when the run lacks
    what the check needs. The persona writer and the brief writer both check through this."""
    from persona_llm.segment.embed import embedder_from_model_id

    model_id = run.load_manifest().models.get("embedder", "") if run.has(MANIFEST) else ""
    try:
        vectors = run.load_text_embeddings()
        texts = run.load_texts(["text_id", "segment_id", "text"])
        embedder = embedder or embedder_from_model_id(model_id)
    except (InputError, BackendError, FileNotFoundError, ValueError) as exc:
        log.warning("narrative support check unavailable: %s", exc)
        return None, None, str(exc)[:200]
    index = SupportIndex(
        vectors=vectors,
        segment_ids=texts["segment_id"].fillna(-1).astype(int).to_numpy(),
        text_ids=texts["text_id"].astype(str).to_numpy(),
        texts=texts["text"].astype(str).to_numpy(),
        chance=chance_level(vectors, seed=seed),
        min_similarity=min_similarity_for(model_id),
    )
    return index, embedder, model_id


def support_share(checks: Sequence[StatementCheck]) -> float | None:
    return sum(c.supported for c in checks) / len(checks) if checks else None


def name_supported(checks: Sequence[StatementCheck]) -> bool:
    """Whether the checks hold a supported name (a persona's name is checked like any statement)."""
    return any(c.field == "name" and c.supported for c in checks)


def accusations(checks: Sequence[StatementCheck]) -> list[StatementCheck]:
    """The statements that pin wrongdoing on the members that no member owns (see `accusations.py`)."""
    return [c for c in checks if c.reason]


def support_feedback(checks: Sequence[StatementCheck], shown_id: object = None) -> str:
    """The re-ask message when most of a draft is not supported by its texts."""
    lines = [f'- {c.field}: "{c.text[:140]}"{f" ({c.reason})" if c.reason else ""}' for c in checks if not c.supported][:12]
    return (
        "These statements are not supported by the texts of this segment (nothing in the texts says so, or "
        "it describes another group better):\n" + "\n".join(lines) + "\n"
        "Rewrite the persona from what the texts between <texts> and </texts> actually say: name, tagline, "
        "summary, interests, goals and pain points must each be something several texts show. Keep the quotes. "
        "Reply again with the complete corrected JSON object only."
    )


#: Thresholds of `evidence_confidence`.
HIGH_SUPPORT, LOW_SUPPORT = 0.8, 0.5
MIN_KEEP_RATE = 0.5
MIN_COHESION_RATIO = 0.8


def evidence_confidence(
    checks: Sequence[StatementCheck],
    *,
    quotes_kept: int,
    quotes_proposed: int,
    min_quotes: int,
    cohesion_ratio: float | None,
    named: bool = True,
) -> tuple[Confidence, str]:
    """How far a reader may act on a persona (or a brief), from evidence only (never the model's own word).

    high: >= 80% of its statements supported, at least `min_quotes` verified quotes, at least half the
    proposed quotes verbatim, and a segment at least 0.8 as cohesive as the run's median segment. low:
    under half its statements supported, or no verified quote, or its name not supported by the
    segment's texts (when `named`: briefs have none), or a statement calling the members wrongdoers that
    none of them makes of themselves (`accusations`), or not checked at all. medium: the rest. A name
    is what a reader acts on first ("Tech Enthusiasts" for a segment about phone calls and packing), so
    one the texts do not bear makes the persona a draft whatever else holds. Returns the level and the
    evidence, in words, for the report."""
    share = support_share(checks)
    keep_rate = quotes_kept / quotes_proposed if quotes_proposed else 0.0
    name_ok = not named or name_supported(checks)
    accused = len(accusations(checks))
    parts = [
        f"{sum(c.supported for c in checks)}/{len(checks)} statements supported" if checks else "statements not checked",
        *([f"name {'supported' if name_ok else 'not supported'}"] if named else []),
        *([f"{accused} accusation(s) no member makes of themselves"] if accused else []),
        f"{quotes_kept} verified quotes of {quotes_proposed} proposed",
        f"cohesion {cohesion_ratio:.2f} of the run's median segment" if cohesion_ratio is not None else "cohesion unknown",
    ]
    basis = "; ".join(parts)
    if share is None or share < LOW_SUPPORT or quotes_kept == 0 or not name_ok or accused:
        return "low", basis
    if (
        share >= HIGH_SUPPORT
        and quotes_kept >= min_quotes
        and keep_rate >= MIN_KEEP_RATE
        and (cohesion_ratio is None or cohesion_ratio >= MIN_COHESION_RATIO)
    ):
        return "high", basis
    return "medium", basis
