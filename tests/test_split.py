"""The tune / held-out split: fixed by the id alone, disjoint, about half each."""

from __future__ import annotations

import numpy as np

from persona_llm.evaluation.split import holdout_mask, holdout_score, is_held_out, split_users


def test_split_is_deterministic_and_order_free() -> None:
    ids = [f"user-{i}" for i in range(500)]
    tune, held = split_users(ids)
    tune2, held2 = split_users(list(reversed(ids)))
    assert set(tune) == set(tune2) and set(held) == set(held2)
    # a user's side does not depend on who else is in the data
    assert all(is_held_out(u) for u in held[:20]) and not any(is_held_out(u) for u in tune[:20])
    assert holdout_score("user-1") == holdout_score("user-1")
    # pinned: a change here reshuffles every benchmark's held-out set
    pinned = [False, False, True, True, True, False, False, False]
    assert [is_held_out(f"user-{i}") for i in range(8)] == pinned
    assert holdout_mask([f"user-{i}" for i in range(8)]).tolist() == pinned


def test_split_is_disjoint_complete_and_about_half() -> None:
    ids = [f"u{i:05d}" for i in range(4000)] + ["u00001"]  # a duplicate is kept once
    tune, held = split_users(ids)
    assert not set(tune) & set(held)
    assert set(tune) | set(held) == set(ids)
    assert len(tune) + len(held) == 4000
    assert 0.46 < len(held) / 4000 < 0.54


def test_share_and_salt() -> None:
    ids = [str(i) for i in range(2000)]
    assert holdout_mask(ids, share=0.0).sum() == 0
    assert holdout_mask(ids, share=1.0).all()
    assert 0.15 < holdout_mask(ids, share=0.2).mean() < 0.25
    # a smaller share is a subset of a larger one (thresholds on one score)
    assert not (holdout_mask(ids, share=0.2) & ~holdout_mask(ids, share=0.5)).any()
    other = holdout_mask(ids, salt="another")
    assert 0.3 < np.mean(other == holdout_mask(ids)) < 0.7
