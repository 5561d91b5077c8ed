"""A fixed tune / held-out split of users, by a hash of the user id (no random state, no file).

Benchmarks choose parameters on the "tune" users and only report the "held-out" users, so a figure
on the held-out half is one nobody optimised. The split depends on nothing but the id and the salt:
the same user is on the same side on every machine, in every run, whatever else is in the data.

    from persona_llm.evaluation.split import holdout_mask
    held = holdout_mask(labels.index)          # True: held-out, never used to choose a setting
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import numpy as np

#: Salt of the project's split. Changing it reshuffles every user: never do so to improve a figure.
HOLDOUT_SALT = "persona-llm/segment-truth/v1"
HOLDOUT_SHARE = 0.5


def holdout_score(user_id: object, salt: str = HOLDOUT_SALT) -> float:
    """A number in [0, 1) fixed by the id: the first 8 bytes of sha256(salt NUL id) over 2**64."""
    digest = hashlib.sha256(f"{salt}\0{user_id}".encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def is_held_out(user_id: object, share: float = HOLDOUT_SHARE, salt: str = HOLDOUT_SALT) -> bool:
    """Whether `user_id` is in the held-out part (about `share` of all ids)."""
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"share must be in [0, 1], not {share}")
    return holdout_score(user_id, salt) < share


def holdout_mask(user_ids: Iterable[object], share: float = HOLDOUT_SHARE, salt: str = HOLDOUT_SALT) -> np.ndarray:
    """Boolean array, True where the id is held out (ids are compared as ``str(id)``)."""
    return np.array([is_held_out(str(u), share, salt) for u in user_ids], dtype=bool)


def split_users(
    user_ids: Iterable[object], share: float = HOLDOUT_SHARE, salt: str = HOLDOUT_SALT
) -> tuple[list[str], list[str]]:
    """(tune ids, held-out ids), each in input order, as strings; duplicates kept once."""
    ids = list(dict.fromkeys(str(u) for u in user_ids))
    mask = holdout_mask(ids, share, salt)
    return [u for u, m in zip(ids, mask, strict=True) if not m], [u for u, m in zip(ids, mask, strict=True) if m]
