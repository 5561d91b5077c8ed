"""Segments before and after a refresh: matching (stable ids), splits and merges, drift, emerging groups.

Matching a fresh clustering to the published segments is an assignment problem: each pair (old segment
i, new cluster j) scores `weight * cosine(centroid_i, centroid_j) + (1 - weight) * Jaccard(members_i,
members_j)`, and the Hungarian algorithm picks the one-to-one pairing of largest total score. A pair
scoring under `min_score` is no match (two neighbouring topics can have close centroids and no member in
common). A matched cluster takes the old segment's id; an unmatched one gets a new id (ids are never
reused); an unmatched old segment is retired.

Splits and merges are read from the members, counting only users present both before and after:
    new cluster j is a *part* of old segment i when at least `part_share` of j's users came from i and
    they are at least `part_min` of i's users; an old segment with two or more parts was split.
    Symmetrically, old segment i went *into* new cluster j when at least `part_share` of i's users are
    in j and they are at least `part_min` of j; a new cluster that two or more old segments went into
    is a merge.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from persona_llm.common.vectors import normalize_rows
from persona_llm.schema.frames import TEXT, TEXT_ID, USER_ID
from persona_llm.schema.refresh import EmergingGroup, Merge, Split

Members = Mapping[int, set[str]]
Centroids = Mapping[int, np.ndarray]


def members_of(user_ids: Sequence[str] | np.ndarray, labels: np.ndarray) -> dict[int, set[str]]:
    """Segment id -> its users (noise, -1, left out)."""
    out: dict[int, set[str]] = {}
    for user, label in zip(np.asarray(user_ids, dtype=str), np.asarray(labels), strict=True):
        if label >= 0:
            out.setdefault(int(label), set()).add(str(user))
    return out


def centroids_of(vectors: np.ndarray, labels: np.ndarray) -> dict[int, np.ndarray]:
    """Segment id -> the unit mean of its members' unit vectors (ids need not be contiguous)."""
    unit = normalize_rows(vectors, dtype=np.float32)
    out = {}
    for s in np.unique(labels[labels >= 0]):
        mean = unit[labels == s].mean(axis=0)
        out[int(s)] = mean / max(float(np.linalg.norm(mean)), 1e-12)
    return out


def jaccard(a: set[str], b: set[str]) -> float:
    return len(a & b) / len(a | b) if (a or b) else 1.0


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / max(float(np.linalg.norm(a) * np.linalg.norm(b)), 1e-12))


@dataclass
class MatchResult:
    """A fresh clustering's labels mapped onto stable segment ids."""

    mapping: dict[int, int]  # new cluster label -> stable segment id
    scores: dict[int, float] = field(default_factory=dict)  # stable id of a matched segment -> its score
    added: list[int] = field(default_factory=list)  # stable ids that are new
    retired: list[int] = field(default_factory=list)  # old ids no cluster matched
    splits: list[Split] = field(default_factory=list)
    merges: list[Merge] = field(default_factory=list)
    split_from: dict[int, int] = field(default_factory=dict)  # new stable id -> old id it split from
    merged_into: dict[int, int] = field(default_factory=dict)  # retired old id -> stable id it went into
    merged_from: dict[int, list[int]] = field(default_factory=dict)  # stable id -> old ids merged into it
    next_segment_id: int = 0


def match_segments(
    old: Members,
    old_centroids: Centroids,
    new: Members,
    new_centroids: Centroids,
    *,
    next_segment_id: int,
    weight: float = 0.5,
    min_score: float = 0.5,
    part_share: float = 0.5,
    part_min: float = 0.2,
) -> MatchResult:
    """Map the clusters of a fresh clustering (`new`, by its own labels) to the published segments
    (`old`, by stable id); see the module docstring. New ids start at `next_segment_id`."""
    from scipy.optimize import linear_sum_assignment

    old_ids, new_ids = sorted(old), sorted(new)
    score = np.zeros((len(old_ids), len(new_ids)))
    for a, i in enumerate(old_ids):
        for b, j in enumerate(new_ids):
            score[a, b] = weight * cosine(old_centroids[i], new_centroids[j]) + (1 - weight) * jaccard(old[i], new[j])
    mapping: dict[int, int] = {}
    result = MatchResult(mapping=mapping)
    if len(old_ids) and len(new_ids):
        rows, cols = linear_sum_assignment(-score)
        for a, b in zip(rows, cols, strict=True):
            if score[a, b] >= min_score:
                mapping[new_ids[b]] = old_ids[a]
                result.scores[old_ids[a]] = round(float(score[a, b]), 4)
    nxt = next_segment_id
    # New ids by size, largest first, so the numbering does not depend on the clusterer's.
    for j in sorted((j for j in new_ids if j not in mapping), key=lambda j: (-len(new[j]), j)):
        mapping[j] = nxt
        result.added.append(nxt)
        nxt += 1
    result.next_segment_id = nxt
    result.retired = sorted(set(old_ids) - set(mapping.values()))

    before = set().union(*old.values()) if old else set()
    after = set().union(*new.values()) if new else set()
    both = before & after
    for i in old_ids:
        stayed = old[i] & both
        parts = [
            j for j in new_ids
            if (common := len(stayed & new[j])) and common >= part_min * len(stayed)
            and common >= part_share * len(new[j] & both)
        ]  # fmt: skip
        if len(parts) >= 2:
            into = sorted(mapping[j] for j in parts)
            result.splits.append(Split(segment_id=i, into=into))
            for sid in into:
                if sid != i:
                    result.split_from[sid] = i
    for j in new_ids:
        arrived = new[j] & both
        sources = [
            i for i in old_ids
            if (common := len(old[i] & arrived)) and common >= part_share * len(old[i] & both)
            and common >= part_min * len(arrived)
        ]  # fmt: skip
        if len(sources) >= 2:
            result.merges.append(Merge(segment_ids=sorted(sources), into=mapping[j]))
            result.merged_from[mapping[j]] = sorted(i for i in sources if i != mapping[j])
            for i in sources:
                if i in result.retired:
                    result.merged_into[i] = mapping[j]
    return result


def membership_churn(before: Mapping[str, int], after: Mapping[str, int]) -> float:
    """Share of users (present before or after) who joined, left, or are in another segment now."""
    users = set(before) | set(after)
    if not users:
        return 0.0
    moved = sum(1 for u in users if before.get(u, -2) != after.get(u, -2))
    return moved / len(users)


def emerging_groups(
    pool_vectors: np.ndarray,
    pool_users: Sequence[str],
    centroids: Centroids,
    texts: pd.DataFrame,
    text_vectors: np.ndarray,
    *,
    min_cluster_size: int,
    min_cohesion: float,
    n_texts: int = 3,
) -> list[EmergingGroup]:
    """Dense groups among the users that fit no segment: HDBSCAN on them alone (one group allowed: the
    pool may hold a single new topic), keeping groups of at least `min_cluster_size` users that are at
    least `min_cohesion` cohesive (the loosest published segment's cohesion), so leftovers of many
    topics are not reported as one. What a segment forming in the new data looks like before a
    re-cluster. `texts`/`text_vectors`: all the run's texts (user_id, text_id, text) and their vectors."""
    import warnings

    import hdbscan

    from persona_llm.segment.cluster import default_min_samples
    from persona_llm.segment.describe import KeywordExtractor

    if len(pool_users) < max(min_cluster_size, 3):
        return []
    unit = normalize_rows(pool_vectors, dtype=np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = hdbscan.HDBSCAN(
            min_cluster_size=min_cluster_size, min_samples=default_min_samples(min_cluster_size),
            allow_single_cluster=True, core_dist_n_jobs=1,
        ).fit(unit.astype(np.float64))  # fmt: skip
    labels = np.asarray(model.labels_, dtype=np.int64)
    for g in set(labels[labels >= 0].tolist()):
        members = unit[labels == g]
        centre = members.mean(axis=0)
        if float((members @ (centre / max(float(np.linalg.norm(centre)), 1e-12))).mean()) < min_cohesion:
            labels[labels == g] = -1
    if not (labels >= 0).any():
        return []
    ids = sorted(centroids)
    cents = np.stack([centroids[s] for s in ids]) if ids else np.zeros((0, unit.shape[1]), dtype=np.float32)
    group_of = {str(u): int(g) for u, g in zip(pool_users, labels, strict=True) if g >= 0}
    rows = texts[USER_ID].astype(str).map(group_of).fillna(-1).astype(int)
    # Keywords against every text (the others as -1), so words common everywhere sink.
    keywords = KeywordExtractor(top_n=6).fit_transform(
        texts[TEXT].astype(str).tolist(), rows.to_numpy(), texts[USER_ID].astype(str).tolist()
    )
    out = []
    for g in sorted(set(labels[labels >= 0].tolist())):
        members = unit[labels == g]
        centre = members.mean(axis=0)
        centre /= max(float(np.linalg.norm(centre)), 1e-12)
        sims = cents @ centre if len(ids) else np.zeros(0)
        best = int(np.argmax(sims)) if len(ids) else -1
        g_rows = np.flatnonzero(rows.to_numpy() == g)
        nearest_texts = g_rows[np.argsort(-(normalize_rows(text_vectors[g_rows]) @ centre))[:n_texts]]
        out.append(
            EmergingGroup(
                size=int((labels == g).sum()),
                cohesion=round(float((members @ centre).mean()), 4),
                nearest_segment=ids[best] if best >= 0 else None,
                nearest_similarity=round(float(sims[best]), 4) if best >= 0 else 0.0,
                keywords=[k.term for k in keywords.get(g, [])],
                text_ids=[str(texts[TEXT_ID].iloc[i]) for i in nearest_texts],
            )
        )
    return sorted(out, key=lambda e: -e.size)
