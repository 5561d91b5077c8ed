"""Column names shared by every stage, so no stage guesses another's layout.

A *texts frame* has one row per input text:
    text_id (str), user_id (str), text (str), source_row (int, 1-based data row in the input file),
    and after cleaning: language (str, "en", "zh", ... or "und").
Any other column is a user attribute (age, plan, country...) carried through to the segment summaries.

A *rejects frame* has one row per input row that was not used, with why:
    source_row, stage, field, reason, user_id, text_id, text
"""

from __future__ import annotations

from collections.abc import Iterable

import pandas as pd

TEXT_ID = "text_id"
USER_ID = "user_id"
TEXT = "text"
SOURCE_ROW = "source_row"
LANGUAGE = "language"

CORE_COLUMNS = (TEXT_ID, USER_ID, TEXT, SOURCE_ROW)
REJECT_COLUMNS = ("source_row", "stage", "field", "reason", USER_ID, TEXT_ID, TEXT)
INTERNAL_COLUMNS = frozenset({TEXT_ID, USER_ID, TEXT, SOURCE_ROW, LANGUAGE})


def attribute_columns(texts: pd.DataFrame) -> list[str]:
    """User attribute columns: everything that is not one of ours."""
    return [c for c in texts.columns if c not in INTERNAL_COLUMNS]


def empty_rejects() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype="object") for c in REJECT_COLUMNS})


def make_rejects(rows: pd.DataFrame, *, stage: str, reason: str | Iterable[str], field: str = "") -> pd.DataFrame:
    """Rejects for `rows` (a texts frame slice), all with one stage and field; reason scalar or per row."""
    out = pd.DataFrame(
        {
            "source_row": rows[SOURCE_ROW].to_numpy() if SOURCE_ROW in rows else None,
            "stage": stage,
            "field": field,
            "reason": list(reason) if not isinstance(reason, str) else reason,
            USER_ID: rows[USER_ID].to_numpy() if USER_ID in rows else None,
            TEXT_ID: rows[TEXT_ID].to_numpy() if TEXT_ID in rows else None,
            TEXT: rows[TEXT].to_numpy() if TEXT in rows else None,
        },
        index=range(len(rows)),
    )
    return out[list(REJECT_COLUMNS)]


def concat_rejects(parts: Iterable[pd.DataFrame]) -> pd.DataFrame:
    parts = [p for p in parts if len(p)]
    if not parts:
        return empty_rejects()
    return pd.concat(parts, ignore_index=True)[list(REJECT_COLUMNS)]
