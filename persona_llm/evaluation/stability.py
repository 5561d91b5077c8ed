"""Stability: does segmentation (and so each persona) survive re-running on slightly different users?

Independent of the pipeline: it takes `segment_fn(texts_frame, seed) -> assignments frame` (columns
user_id, segment_id; -1 = noise). The lead passes the real pipeline; tests pass a toy function.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy.optimize import linear_sum_assignment
from sklearn.metrics import adjusted_rand_score

from persona_llm.evaluation.metrics import NOISE

SegmentFn = Callable[[pd.DataFrame, int], pd.DataFrame]


def subsample_users(
    texts: pd.DataFrame, fraction: float, seed: int, user_col: str = "user_id"
) -> pd.DataFrame:
    """All texts of a random `fraction` of users (at least 2 users), order kept."""
    users = np.sort(texts[user_col].astype(str).unique())
    n = max(2, int(round(fraction * len(users))))
    chosen = np.random.default_rng(seed).choice(users, size=min(n, len(users)), replace=False)
    return texts[texts[user_col].astype(str).isin(set(chosen.tolist()))]


def _as_series(assignments: pd.DataFrame) -> pd.Series:
    frame = assignments.assign(user_id=assignments["user_id"].astype(str))
    return frame.drop_duplicates("user_id").set_index("user_id")["segment_id"].astype(int)


def n_segments(assignments: pd.DataFrame) -> int:
    """Distinct segments in an assignments frame, noise (-1) not counted."""
    ids = set(_as_series(assignments).tolist()) if len(assignments) else set()
    return len(ids - {NOISE})


def not_measurable_reason(assignments: pd.DataFrame) -> str | None:
    """Why stability cannot be measured for a run with these assignments, or None when it can.

    With fewer than two segments every re-run agrees with every other trivially (all users in one
    group, ARI 1.0 by definition): the number would say "stable" about a run that has no structure.
    """
    k = n_segments(assignments)
    if k < 2:
        return f"the run has {k} segment{'s' if k != 1 else ''}: stability needs at least 2 to be measurable"
    return None


def shared_ari(a: pd.DataFrame, b: pd.DataFrame) -> tuple[float | None, int]:
    """ARI of two assignments frames on the users both contain (noise as one group), and that count."""
    sa, sb = _as_series(a), _as_series(b)
    shared = sa.index.intersection(sb.index)
    if len(shared) < 2:
        return None, len(shared)
    return float(adjusted_rand_score(sa.loc[shared], sb.loc[shared])), len(shared)


def match_segments(
    reference: pd.DataFrame, other: pd.DataFrame, *, min_jaccard: float = 0.5
) -> list[dict[str, Any]]:
    """One-to-one match (Hungarian on Jaccard over shared users) of reference segments to `other`'s."""
    ra, ob = _as_series(reference), _as_series(other)
    shared = ra.index.intersection(ob.index)
    ra, ob = ra.loc[shared], ob.loc[shared]
    ref_ids = sorted(int(s) for s in set(ra.tolist()) if s != NOISE)
    oth_ids = sorted(int(s) for s in set(ob.tolist()) if s != NOISE)
    if not ref_ids:
        return []
    jac = np.zeros((len(ref_ids), max(len(oth_ids), 1)))
    for i, r in enumerate(ref_ids):
        members_r = set(ra.index[ra == r])
        for j, o in enumerate(oth_ids):
            members_o = set(ob.index[ob == o])
            union = len(members_r | members_o)
            jac[i, j] = len(members_r & members_o) / union if union else 0.0
    rows, cols = linear_sum_assignment(-jac)
    matched = dict(zip(rows.tolist(), cols.tolist(), strict=True))
    out: list[dict[str, Any]] = []
    for i, r in enumerate(ref_ids):
        col = matched.get(i)
        score = float(jac[i, col]) if col is not None and oth_ids else 0.0
        out.append(
            {
                "segment_id": r,
                "matched": oth_ids[col] if col is not None and oth_ids and score > 0 else None,
                "jaccard": score,
                "kept": score >= min_jaccard,
            }
        )
    return out


def stability(
    texts: pd.DataFrame,
    segment_fn: SegmentFn,
    *,
    reference: pd.DataFrame | None = None,
    segment_ids: Sequence[int] | None = None,
    fraction: float = 0.9,
    seeds: Sequence[int] = (1, 2),
    min_jaccard: float = 0.5,
) -> dict[str, Any]:
    """ARI between re-runs on `fraction` user subsamples, and the share of segments kept in every re-run.

    `reference` is the run's own assignments (persona ids belong to its segments; `segment_ids` limits the
    count to segments that have a persona). Without it, the first re-run is the reference.

    Not measurable (both numbers None, the reason in "not_measurable") when the reference has fewer than
    2 segments, or when no pair of re-runs holds 2+ segments on either side: such runs agree trivially.
    """
    if len(seeds) < 2:
        raise ValueError("stability needs at least two seeds")
    reason = not_measurable_reason(reference) if reference is not None else None
    if reason is not None:
        return _not_measurable(reason, seeds, fraction)
    runs = [segment_fn(subsample_users(texts, fraction, seed), seed) for seed in seeds]
    if reference is None and (reason := not_measurable_reason(runs[0])) is not None:
        return _not_measurable(f"first re-run as reference: {reason}", seeds, fraction)
    aris = []
    shared_counts = []
    trivial_pairs = 0
    for i in range(len(runs)):
        for j in range(i + 1, len(runs)):
            ari, n_shared = shared_ari(runs[i], runs[j])
            shared_counts.append(n_shared)
            if n_segments(runs[i]) < 2 and n_segments(runs[j]) < 2:
                trivial_pairs += 1  # two one-group re-runs agree by definition: not evidence of stability
            elif ari is not None:
                aris.append(ari)
    ref = reference if reference is not None else runs[0]
    others = runs if reference is not None else runs[1:]
    matches = [match_segments(ref, run, min_jaccard=min_jaccard) for run in others]
    wanted = set(segment_ids) if segment_ids is not None else None
    per_segment: dict[int, bool] = {}
    for match in matches:
        for m in match:
            if wanted is not None and m["segment_id"] not in wanted:
                continue
            per_segment[m["segment_id"]] = per_segment.get(m["segment_id"], True) and bool(m["kept"])
    why = None
    if not aris:
        why = (
            "every pair of re-runs found fewer than 2 segments"
            if trivial_pairs
            else "no pair of re-runs shared 2 or more users"
        )
    return {
        "stability_ari": float(np.mean(aris)) if aris else None,
        "persona_kept": float(np.mean(list(per_segment.values()))) if per_segment else None,
        "not_measurable": why,
        "trivial_pairs": trivial_pairs,
        "shared_users": shared_counts,
        "matches": matches,
        "seeds": list(seeds),
        "fraction": fraction,
    }


def _not_measurable(reason: str, seeds: Sequence[int], fraction: float) -> dict[str, Any]:
    return {
        "stability_ari": None,
        "persona_kept": None,
        "not_measurable": reason,
        "trivial_pairs": 0,
        "shared_users": [],
        "matches": [],
        "seeds": list(seeds),
        "fraction": fraction,
    }
