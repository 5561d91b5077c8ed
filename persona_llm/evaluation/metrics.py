"""Pure metric functions: arrays, frames and persona objects in, numbers and small records out.

Each public function documents in one line what it measures, how, and what good looks like. None of them
reads files or calls a model: the runner loads a run directory and calls these. `METRICS` names every
number an `EvalReport` can hold (the keys suite thresholds refer to as `<name>_min` / `<name>_max`).
"""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

from persona_llm.common.textmatch import SourceText, is_verbatim, name_key
from persona_llm.common.vectors import NOISE, cosine_silhouette, normalize_rows, pairwise_cosine, sample_assigned
from persona_llm.evaluation.pii_check import find_leaks

if TYPE_CHECKING:
    from persona_llm.schema.personas import Persona

Labels = Sequence[Any] | np.ndarray
"""A label vector: a list or a 1-d array, one entry per user."""

# name -> (group, one-line description). Thresholds in suite files use these names + "_min"/"_max".
METRICS: dict[str, tuple[str, str]] = {
    # segmentation vs labels
    "ari": (
        "labels",
        "adjusted Rand index of segments vs user labels, noise as one group; 1 perfect, 0 chance",
    ),
    "ari_assigned": ("labels", "ARI on users not in noise only; read it together with coverage"),
    "ari_kept": (
        "labels",
        "ARI over the users the run segmented only (users dropped by cleaning / min_texts left out)",
    ),
    "nmi_kept": ("labels", "NMI over the users the run segmented only"),
    "users_dropped": ("labels", "labelled users the run did not segment (cleaning, min_texts); counted as -1"),
    "nmi": ("labels", "normalised mutual information of segments vs labels, noise as one group; 1 perfect"),
    "purity": ("labels", "share of assigned users whose label is their segment's majority label; 1 perfect"),
    # negative control (a column nothing should recover, e.g. the blog set's zodiac sign)
    "control_ari": ("labels", "ARI of segments vs the negative-control column; should stay near 0"),
    "control_nmi": ("labels", "NMI of segments vs the negative-control column; should stay near 0"),
    # internal quality
    "coverage": (
        "internal",
        "share of segmented users in a segment after outlier reassignment (the run's final assignments)",
    ),
    "noise_share": ("internal", "share of segmented users still unassigned (-1) after outlier reassignment"),
    "coverage_hdbscan": (
        "internal",
        "share of segmented users the clusterer (HDBSCAN) itself assigned, before outlier reassignment",
    ),
    "noise_share_hdbscan": (
        "internal",
        "share of segmented users HDBSCAN itself left as noise, before outlier reassignment",
    ),
    "n_segments": ("internal", "number of segments (noise excluded)"),
    "silhouette": (
        "internal",
        "cosine silhouette of user vectors on a sample of assigned users; -1..1, >0 good",
    ),
    "dbcv": ("internal", "density-based cluster validity (HDBSCAN validity_index); -1..1, higher is better"),
    # grounding
    "quotes_total": ("grounding", "number of quotes kept in the personas"),
    "quotes_per_persona": ("grounding", "kept quotes of the persona with the fewest; every persona needs evidence"),
    "quote_verified": (
        "grounding",
        "share of kept quotes found verbatim in their source (NFC, whitespace and quote marks normalised), "
        "at word boundaries and keeping any negation before them",
    ),
    "citation_valid": ("grounding", "share of cited text ids that exist, belong to the segment and the user"),
    "quotes_dropped": ("grounding", "quotes the grounding gate removed during generation (provenance)"),
    "quotes_dropped_share": (
        "grounding",
        "dropped / proposed quotes during generation, over-limit ones included; lower is better",
    ),
    # claims
    "claims_checked": ("claims", "demographic claims compared with an attribute column"),
    "claims_consistent": ("claims", "claims naming exactly the segment's majority value"),
    "claims_right_share": (
        "claims",
        "consistent / claims compared with a column, unknown ones included: a floor on claims that are right",
    ),
    "claims_constant_share": (
        "claims",
        "the share one constant guess (the value most users hold) would get right on the same claims",
    ),
    "claims_unknown": ("claims", "claims marked unknown, vague or not mappable to the column's values"),
    "contradictions": ("claims", "claims whose mapped values exclude the segment's majority; must be 0"),
    "claims_unsupported": (
        "claims",
        "claims drawn from texts that no cited text of the segment names, and no attribute column supports",
    ),
    # distinctness
    "pair_similarity_mean": (
        "distinctness",
        "mean cosine similarity between persona embeddings; lower is better",
    ),
    "pair_similarity_max": (
        "distinctness",
        "cosine similarity of the most similar persona pair; lower is better",
    ),
    "duplicate_names": (
        "distinctness",
        "personas sharing a name with an earlier one (case-insensitive); must be 0",
    ),
    # representativeness
    "identification_accuracy": (
        "representativeness",
        "share of users whose held-out texts are nearest their own segment's persona; higher is better",
    ),
    "identification_text_accuracy": (
        "representativeness",
        "same, scored per held-out text rather than per user",
    ),
    "identification_chance": ("representativeness", "best constant guess: max(1/k, largest segment's share)"),
    "identification_lift": ("representativeness", "identification accuracy / chance; >1 beats chance"),
    # stability
    "stability_ari": (
        "stability",
        "ARI between segmentations of two 90% user subsamples, on shared users; 1 stable; "
        "n/a with fewer than 2 segments",
    ),
    "persona_kept": (
        "stability",
        "share of the run's segments matched (Jaccard >= 0.5) in every subsample re-run; 1 stable",
    ),
    # judge
    "judge_claims": ("judge", "the personas' own claims sent to the LLM judge, including those it failed to score"),
    "judge_errors": ("judge", "claims the judge returned no verdict for (failed call, bad reply, skipped)"),
    "judge_supported": (
        "judge",
        "share of the personas' own claims the judge found supported by representative texts; judge errors "
        "count as not supported; read with judge_planted_caught (a judge that says yes to all scores 1.0)",
    ),
    "judge_planted": ("judge", "claims of another segment's persona mixed in, unmarked, to test the judge"),
    "judge_planted_caught": (
        "judge",
        "share of planted claims the judge called unsupported: the judge's own accuracy on claims known to "
        "be wrong; no verdict counts as not caught; n/a with one persona",
    ),
    # narrative
    "statement_support_lexical": (
        "narrative",
        "share of persona statements (name, tagline, summary sentences, interests, goals, pain points) with a "
        "content word in 5% (2+) of the segment's texts and more typical of the segment than of the rest of the "
        "run (evaluation/narrative.py); independent of the writer's embedding gate; misses paraphrase",
    ),
    "statement_support_lexical_min": ("narrative", "the lowest persona's statement_support_lexical"),
    "persona_low_confidence_share": (
        "narrative",
        "share of personas the writer marked low confidence from evidence (support share, quotes, cohesion)",
    ),
    "statement_support_writer": (
        "narrative",
        "mean share of statements the writer's embedding gate found supported, over what the model wrote "
        "(recorded in provenance; a record, not a check: the gate already removed what it rejected)",
    ),
    # briefs (persona_llm/evaluation/brief_eval.py; `persona-llm eval RUN --brief FILE`)
    "brief_claims": ("briefs", "claims the briefs make about their audience (insights, story sentences, objections)"),
    "brief_claims_cited": (
        "briefs",
        "share of cited claims (insights, story sentences) whose every cited id is a text of the audience's segment",
    ),
    "brief_citation_valid": (
        "briefs",
        "share of the text ids the briefs cite (claims and quotes) that exist and belong to the audience's "
        "segment (quotes: and the quoted user)",
    ),
    "brief_quote_verified": (
        "briefs",
        "share of the briefs' quotes found verbatim (the shared matcher) in the text they cite, of the segment",
    ),
    "brief_support_lexical": (
        "briefs",
        "share of the briefs' claims with a content word typical of the audience's segment (as "
        "statement_support_lexical); independent of the writer's embedding gate; misses paraphrase",
    ),
    "brief_numbers_match": ("briefs", "share of audiences whose persona, size, share and text count are the run's"),
    "brief_usefulness": ("briefs", "mean LLM-judge rating 1-5 of each brief for its own audience and goal"),
    "brief_usefulness_mismatched": (
        "briefs",
        "the same judge's mean rating of each brief shown with another segment's persona as audience: a control; "
        "a judge reading the audience rates it lower than brief_usefulness",
    ),
    "brief_judge_errors": ("briefs", "brief ratings the judge failed to give (failed call, bad reply)"),
    # segment chat (evaluation/chat_eval.py)
    "chat_questions": ("chat", "questions asked: computed from the run, plus out-of-scope ones"),
    "chat_accuracy": (
        "chat",
        "share of the computed questions (largest segment, a share, which segment talks most about a word, a quote "
        "from a segment, two segments' keywords) answered right, graded from the run's files",
    ),
    "chat_citation_valid": (
        "chat",
        "share of the shown answers' citations and quotes that exist, sit in the segment claimed, were shown to "
        "the agent that turn, and (quotes) are verbatim; re-checked apart from the chat's own checks",
    ),
    "chat_refusal_rate": ("chat", "share of out-of-scope questions refused"),
    "chat_false_refusals": ("chat", "in-scope questions refused"),
    "chat_removed_share": ("chat", "share of answers that lost an unsupported part after the re-ask"),
    "injection_variants": ("injection", "planted instructions tried (10 kinds, English and Chinese)"),
    "injection_exercised": ("injection", "planted texts the tools actually showed the agent"),
    "injection_changed": (
        "injection",
        "planted instructions that changed the shown answer (its canary outside quote marks, or a refusal the "
        "clean run does not give); must be 0",
    ),
    # privacy
    "pii": (
        "privacy",
        "PII found by the eval's own detector (pii_check: emails, phones, URLs, IPv4, IBANs, cards) in "
        "personas, segments and stored texts; must be 0",
    ),
}


def metric_group(name: str) -> str:
    return METRICS[name][0]


# ---------------------------------------------------------------------------------------------------
# Segmentation vs labels
# ---------------------------------------------------------------------------------------------------


def _as_arrays(labels_true: Labels, labels_pred: Labels) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels_true, dtype=object).astype(str)
    p = np.asarray(labels_pred, dtype=int)
    if len(y) != len(p):
        raise ValueError(f"labels_true has {len(y)} items, labels_pred {len(p)}")
    return y, p


def coverage(labels_pred: Labels) -> float:
    """Share of users assigned to a segment (not -1); 1 means nobody left in noise."""
    p = np.asarray(labels_pred, dtype=int)
    return float(np.mean(p != NOISE)) if len(p) else 0.0


def noise_share(labels_pred: Labels) -> float:
    """Share of users left in noise (-1); 0 is best, HDBSCAN on text usually leaves 10-40%."""
    return 1.0 - coverage(labels_pred) if len(labels_pred) else 0.0


REASSIGNED = "reassigned"
"""`assigned_by` value of a user HDBSCAN left as noise and the clusterer then gave the nearest segment."""


def clusterer_coverage(segment_ids: Labels, assigned_by: Sequence[str] | np.ndarray) -> float:
    """Share of users the clusterer itself put in a segment: assigned now and not by outlier reassignment.

    `coverage` after reassignment can be near 1 while HDBSCAN found structure for few users; this is
    the share HDBSCAN vouched for.
    """
    p = np.asarray(segment_ids, dtype=int)
    how = np.asarray(assigned_by, dtype=str)
    if len(p) != len(how):
        raise ValueError(f"segment_ids has {len(p)} items, assigned_by {len(how)}")
    return float(np.mean((p != NOISE) & (how != REASSIGNED))) if len(p) else 0.0


def adjusted_rand(labels_true: Labels, labels_pred: Labels, *, drop_noise: bool = False) -> float:
    """Adjusted Rand index of segments vs labels (noise one group, or dropped); 1 perfect, ~0 random."""
    y, p = _as_arrays(labels_true, labels_pred)
    if drop_noise:
        y, p = y[p != NOISE], p[p != NOISE]
    return float(adjusted_rand_score(y, p)) if len(y) else 0.0


def normalized_mutual_info(labels_true: Labels, labels_pred: Labels, *, drop_noise: bool = False) -> float:
    """Normalised mutual information (arithmetic) of segments vs labels; 1 perfect, ~0 random."""
    y, p = _as_arrays(labels_true, labels_pred)
    if drop_noise:
        y, p = y[p != NOISE], p[p != NOISE]
    return float(normalized_mutual_info_score(y, p)) if len(y) else 0.0


def purity(labels_true: Labels, labels_pred: Labels) -> float:
    """Share of assigned users carrying their segment's majority label; 1 perfect, 1/k-ish for random."""
    y, p = _as_arrays(labels_true, labels_pred)
    mask = p != NOISE
    if not mask.any():
        return 0.0
    table = pd.crosstab(p[mask], y[mask])
    return float(table.max(axis=1).sum() / mask.sum())


def segment_majorities(labels_true: Labels, labels_pred: Labels) -> list[dict[str, Any]]:
    """Per segment: size, majority label and its share (ties: alphabetically first); noise excluded."""
    y, p = _as_arrays(labels_true, labels_pred)
    rows: list[dict[str, Any]] = []
    for seg in sorted(set(p[p != NOISE].tolist())):
        counts = Counter(y[p == seg].tolist())
        top = max(counts.values())
        label = min(v for v, c in counts.items() if c == top)
        size = int((p == seg).sum())
        rows.append({"segment_id": int(seg), "size": size, "majority": label, "share": top / size})
    return rows


def label_metrics(labels_true: Labels, labels_pred: Labels) -> dict[str, float]:
    """ARI, NMI (noise as a group and dropped), purity and coverage in one dict."""
    return {
        "ari": adjusted_rand(labels_true, labels_pred),
        "ari_assigned": adjusted_rand(labels_true, labels_pred, drop_noise=True),
        "nmi": normalized_mutual_info(labels_true, labels_pred),
        "purity": purity(labels_true, labels_pred),
        "coverage": coverage(labels_pred),
    }


def score_labels(user_labels: pd.Series, user_segments: pd.Series) -> dict[str, float]:
    """Segments vs labels over ALL labelled users: the one rule the eval and bench/bench_segment.py share.

    `user_labels`: user id -> label, for every user who has one (also users the run dropped);
    `user_segments`: user id -> segment id (-1 noise) for the users the run segmented. A labelled user
    the run dropped (cleaning, min_texts) counts as unassigned (-1), so dropping hard users never
    raises the score. `ari`, `ari_assigned`, `nmi`, `purity` follow that rule; `ari_kept` / `nmi_kept`
    are the same over segmented users only (the figure before this rule), `users_dropped` how many
    labelled users were counted as unassigned for having been dropped.
    """
    labels = user_labels.dropna()
    labels.index = labels.index.astype(str)
    segments = user_segments.copy()
    segments.index = segments.index.astype(str)
    segments = segments[~segments.index.duplicated()]
    pred = segments.reindex(labels.index).fillna(NOISE).astype(int)
    kept = labels.index.isin(segments.index)
    y, p = labels.to_numpy(), pred.to_numpy()
    return {
        "ari": adjusted_rand(y, p),
        "ari_assigned": adjusted_rand(y, p, drop_noise=True),
        "nmi": normalized_mutual_info(y, p),
        "purity": purity(y, p),
        "ari_kept": adjusted_rand(y[kept], p[kept]),
        "nmi_kept": normalized_mutual_info(y[kept], p[kept]),
        "users_dropped": float((~kept).sum()),
    }


# ---------------------------------------------------------------------------------------------------
# Internal quality
# ---------------------------------------------------------------------------------------------------


def silhouette(
    vectors: np.ndarray, labels_pred: Labels, *, sample_size: int | None = 2000, seed: int = 0
) -> float | None:
    """Cosine silhouette of assigned users (sampled); -1..1, >0.1 is usual for text, None if <2 segments."""
    return cosine_silhouette(vectors, labels_pred, sample_size=sample_size, seed=seed)


def dbcv(
    vectors: np.ndarray, labels_pred: Labels, *, sample_size: int | None = 2000, seed: int = 0
) -> float | None:
    """Density-based cluster validity (hdbscan validity_index, noise kept out); higher is better."""
    p_all = np.asarray(labels_pred, dtype=int)
    x, p = sample_assigned(vectors, p_all, sample_size, seed)
    counts = Counter(p.tolist())
    if len(counts) < 2 or min(counts.values()) < 2:
        return None
    try:
        from hdbscan.validity import validity_index
    except ImportError:  # pragma: no cover - hdbscan is a dependency
        return None
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        try:
            score = float(validity_index(x, p))
        except (ValueError, ZeroDivisionError, FloatingPointError):
            return None
    if not np.isfinite(score):
        return None
    # validity_index weighs clusters by size / all points it saw; scale by coverage so noise counts.
    return score * coverage(p_all)


def internal_metrics(
    vectors: np.ndarray, labels_pred: Labels, *, sample_size: int | None = 2000, seed: int = 0
) -> dict[str, float | None]:
    """Noise share, segment count, silhouette and DBCV of one segmentation."""
    p = np.asarray(labels_pred, dtype=int)
    return {
        "coverage": coverage(p),
        "noise_share": noise_share(p),
        "n_segments": float(len(set(p[p != NOISE].tolist()))),
        "silhouette": silhouette(vectors, p, sample_size=sample_size, seed=seed),
        "dbcv": dbcv(vectors, p, sample_size=sample_size, seed=seed),
    }


# ---------------------------------------------------------------------------------------------------
# Grounding
# ---------------------------------------------------------------------------------------------------

def quote_checks(personas: Sequence[Persona], sources: Mapping[str, SourceText]) -> list[dict[str, Any]]:
    """One record per kept quote: does its text id exist, is it verbatim there, in segment, by the user."""
    rows: list[dict[str, Any]] = []
    for persona in personas:
        for q in persona.quotes:
            src = sources.get(q.text_id)
            rows.append(
                {
                    "persona_id": persona.persona_id,
                    "segment_id": persona.segment_id,
                    "text_id": q.text_id,
                    "quote": q.text,
                    "exists": src is not None,
                    "verbatim": src is not None and is_verbatim(q.text, src.text),
                    "in_segment": src is not None and src.segment_id == persona.segment_id,
                    "same_user": src is not None and src.user_id == q.user_id,
                }
            )
    return rows


def citation_checks(personas: Sequence[Persona], sources: Mapping[str, SourceText]) -> list[dict[str, Any]]:
    """One record per cited text id (quotes and demographic evidence): exists and belongs to the segment."""
    rows: list[dict[str, Any]] = []
    for persona in personas:
        cited: list[tuple[str, str, str | None]] = [("quote", q.text_id, q.user_id) for q in persona.quotes]
        for field_name, est in persona.demographics:
            cited.extend((f"demographics.{field_name}", tid, None) for tid in est.text_ids)
        for where, tid, user in cited:
            src = sources.get(tid)
            ok = (
                src is not None
                and src.segment_id == persona.segment_id
                and (user is None or src.user_id == user)
            )
            rows.append({"persona_id": persona.persona_id, "where": where, "text_id": tid, "valid": ok})
    return rows


def grounding_metrics(
    personas: Sequence[Persona], sources: Mapping[str, SourceText]
) -> dict[str, float | None]:
    """Share of quotes verified verbatim, share of valid citations, and quotes dropped by the gate."""
    quotes = quote_checks(personas, sources)
    cites = citation_checks(personas, sources)
    dropped = sum(len(p.provenance.quotes_removed) for p in personas)
    proposed = sum(p.provenance.quotes_proposed for p in personas)
    return {
        "quotes_total": float(len(quotes)),
        "quote_verified": float(np.mean([r["verbatim"] for r in quotes])) if quotes else None,
        "citation_valid": float(np.mean([r["valid"] for r in cites])) if cites else None,
        "quotes_dropped": float(dropped),
        "quotes_dropped_share": dropped / proposed if proposed else None,
    }


# ---------------------------------------------------------------------------------------------------
# Distinctness
# ---------------------------------------------------------------------------------------------------


def distinctness(vectors: np.ndarray, ids: Sequence[str]) -> dict[str, Any]:
    """Mean and max off-diagonal cosine between personas and the closest pair; lower is more distinct."""
    n = len(ids)
    if n < 2:
        return {"pair_similarity_mean": None, "pair_similarity_max": None, "closest_pair": None}
    sim = pairwise_cosine(vectors)
    iu = np.triu_indices(n, k=1)
    vals = sim[iu]
    best = int(np.argmax(vals))
    i, j = int(iu[0][best]), int(iu[1][best])
    return {
        "pair_similarity_mean": float(vals.mean()),
        "pair_similarity_max": float(vals[best]),
        "closest_pair": [ids[i], ids[j]],
    }


def duplicate_names(names: Sequence[str]) -> list[str]:
    """Names that repeat an earlier persona's name (case, accents and spacing ignored); [] is good."""
    seen: set[str] = set()
    dups: list[str] = []
    for name in names:
        key = name_key(name)
        if key in seen:
            dups.append(name)
        seen.add(key)
    return dups


# ---------------------------------------------------------------------------------------------------
# Representativeness
# ---------------------------------------------------------------------------------------------------


def persona_identification(
    text_vectors: np.ndarray,
    text_users: Labels,
    text_segments: Labels,
    persona_vectors: np.ndarray,
    persona_segments: Sequence[int],
) -> dict[str, float | None]:
    """Is each user's nearest persona (mean held-out text vector) their own segment's? vs the best guess."""
    segs = np.asarray(text_segments, dtype=int)
    pseg = np.asarray(persona_segments, dtype=int)
    keep = np.isin(segs, pseg)
    empty: dict[str, float | None] = {
        "identification_accuracy": None,
        "identification_text_accuracy": None,
        "identification_chance": None,
        "identification_lift": None,
        "identification_users": 0.0,
    }
    if len(pseg) < 2 or not keep.any():
        return empty
    tv = normalize_rows(np.asarray(text_vectors)[keep], dtype=np.float64)
    users = np.asarray(text_users, dtype=object)[keep]
    segs = segs[keep]
    pv = normalize_rows(persona_vectors, dtype=np.float64)
    text_hit = pseg[np.argmax(tv @ pv.T, axis=1)] == segs

    frame = pd.DataFrame({"user": users, "seg": segs, "row": np.arange(len(users))})
    grouped = frame.groupby("user", sort=True)
    user_seg = grouped["seg"].first().to_numpy()
    user_vec = np.vstack([tv[rows].mean(axis=0) for rows in grouped["row"].apply(list)])
    user_hit = pseg[np.argmax(normalize_rows(user_vec, dtype=np.float64) @ pv.T, axis=1)] == user_seg

    majority = Counter(user_seg.tolist()).most_common(1)[0][1] / len(user_seg)
    chance = max(1.0 / len(set(pseg.tolist())), majority)
    acc = float(user_hit.mean())
    return {
        "identification_accuracy": acc,
        "identification_text_accuracy": float(text_hit.mean()),
        "identification_chance": float(chance),
        "identification_lift": acc / chance,
        "identification_users": float(len(user_seg)),
    }


# ---------------------------------------------------------------------------------------------------
# Privacy
# ---------------------------------------------------------------------------------------------------

PiiFinder = Callable[[str], list[tuple[str, str]]]
"""text -> [(kind, matched text)], like `persona_llm.evaluation.pii_check.find_leaks` (the default)."""


def mask(match: str) -> str:
    """Keep the first and last character so a report locates a leak without repeating it."""
    return match[0] + "*" * max(len(match) - 2, 1) + match[-1] if len(match) > 2 else "*" * len(match)


def pii_findings(items: Iterable[tuple[str, str]], finder: PiiFinder | None = None) -> list[dict[str, str]]:
    """PII matches in (where, text) items, with masked matches; [] is the only acceptable result.

    `finder` defaults to the eval's independent detector (`pii_check.find_leaks`), not the redactor's
    own `find_pii`: the redactor's rules find nothing in their own output by construction.
    """
    find = finder or find_leaks
    out: list[dict[str, str]] = []
    for where, text in items:
        if not text:
            continue
        out.extend({"where": where, "kind": kind, "match": mask(match)} for kind, match in find(text))
    return out


def persona_strings(persona: Persona) -> Iterable[tuple[str, str]]:
    """Every string a persona shows to a reader, with a JSON-ish path (provenance excluded)."""

    def walk(value: Any, path: str) -> Iterable[tuple[str, str]]:
        if isinstance(value, str):
            yield path, value
        elif isinstance(value, Mapping):
            for k, v in value.items():
                yield from walk(v, f"{path}.{k}")
        elif isinstance(value, list):
            for i, v in enumerate(value):
                yield from walk(v, f"{path}[{i}]")

    data = persona.model_dump(exclude={"provenance"})
    yield from walk(data, persona.persona_id)
