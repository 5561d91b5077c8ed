"""New data against the published run: which texts and users a refresh adds, changes and removes.

New rows are read and cleaned exactly as a build reads and cleans them (TableIngester, TextCleaner), then
compared with the texts the published run holds (already cleaned):

    same text id (id column given), same user and text   already present: the run's row is kept
    same text id, different text or user                  changed: the old text goes, the new one comes in
    no id match, same user and same text                  already present
    the same text as another user's                       a duplicate: dropped, as the cleaner drops them
    anything else                                         added

Without an id column a new text's id is made from its user and content ("n" + hash), so the same post
sent twice is recognised. With `snapshot`, the file is everything: a text of the run it does not hold
is removed, and a user left without texts is removed. Rows of forgotten users are skipped before
anything is stored (their text is not even written to the rejects).

Vectors: a text the run holds keeps the run's vector; a new text is embedded with the run's own model
through the content-hash cache, so a text seen before is never embedded again.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from persona_llm.errors import ConfigError, InputError
from persona_llm.runs.rundir import RunDir
from persona_llm.runs.workspace import drop_forgotten_users
from persona_llm.schema.columns import ColumnMap
from persona_llm.schema.frames import LANGUAGE, SOURCE_ROW, TEXT, TEXT_ID, USER_ID, concat_rejects, make_rejects
from persona_llm.schema.refresh import DataChange
from persona_llm.segment.base import BaseCleaner, BaseEmbedder
from persona_llm.segment.clean import duplicate_key

#: Columns of a run's texts.parquet that are not the texts' own data.
_RUN_ONLY = ("segment_id",)


@dataclass
class MergedData:
    """The refreshed run's texts and what changed.

    texts: one row per text of the refreshed run (the run's rows kept, then the new ones), without
        segment ids; `parent_row[i]` is row i's row in the run's texts.parquet, or -1 for a new text.
    vectors: row-aligned text vectors, once `embed` has run.
    """

    texts: pd.DataFrame
    parent_row: np.ndarray
    rejects: pd.DataFrame
    change: DataChange
    users_added: set[str] = field(default_factory=set)
    users_changed: set[str] = field(default_factory=set)
    users_removed: set[str] = field(default_factory=set)
    input_sha256: str = ""
    input_format: str = ""
    vectors: np.ndarray | None = None

    @property
    def unchanged(self) -> bool:
        """No text added, changed or removed: the published run is still the truth."""
        c = self.change
        return not (c.texts_added or c.texts_changed or c.texts_removed)


def content_text_id(user_id: str, text: str) -> str:
    """A text id from content, for new data without an id column (row numbers would collide with the
    run's own "r<row>" ids): the same user writing the same text gets the same id."""
    return "n" + hashlib.sha256(f"{user_id}\0{text}".encode("utf-8", "surrogatepass")).hexdigest()[:16]


def merge_new_data(
    parent: RunDir,
    new_data: str | Path,
    columns: ColumnMap,
    *,
    snapshot: bool,
    cleaner: BaseCleaner,
    forgotten: set[str] | frozenset[str] = frozenset(),
) -> MergedData:
    """Read and clean `new_data` and merge it into `parent`'s texts (see the module docstring)."""
    from persona_llm.segment.ingest import TableIngester

    ingested = TableIngester().read_file(new_data, columns)
    rows_read = ingested.rows_read
    new = ingested.texts
    rejects = ingested.rejects
    # Forgotten users: dropped before cleaning, and their rejected rows are not kept either.
    new, rejects, skipped = drop_forgotten_users(new, rejects, forgotten)
    parts = [rejects]
    if len(new):
        cleaned = cleaner.transform(new)
        new = cleaned.texts.reset_index(drop=True)
        parts.append(cleaned.rejects)

    old = parent.load_texts().drop(columns=list(_RUN_ONLY), errors="ignore").reset_index(drop=True)
    old_ids = old[TEXT_ID].astype(str).tolist()
    old_users = old[USER_ID].astype(str).tolist()
    old_keys = [duplicate_key(t) for t in old[TEXT].astype(str)]
    by_id = {t: i for i, t in enumerate(old_ids)}
    by_user_key = {(u, k): i for i, (u, k) in enumerate(zip(old_users, old_keys, strict=True))}
    by_key: dict[str, int] = {}
    for i, k in enumerate(old_keys):
        by_key.setdefault(k, i)

    has_ids = columns.id_column is not None
    seen_old = np.zeros(len(old), dtype=bool)  # snapshot: the run's texts the file still holds
    dropped_old = np.zeros(len(old), dtype=bool)  # changed texts: the old version goes
    added_rows: list[int] = []
    new_ids: list[str] = []
    present = duplicates = changed = 0
    dup_rows: list[int] = []
    dup_reasons: list[str] = []
    refreshed_attrs: list[tuple[int, int]] = []  # (old row, new row) whose attributes the snapshot renews
    for j, (tid, user, text) in enumerate(
        zip(new[TEXT_ID].astype(str), new[USER_ID].astype(str), new[TEXT].astype(str), strict=True)
    ):
        key = duplicate_key(text)
        if has_ids and tid in by_id:
            i = by_id[tid]
            if old_users[i] == user and old_keys[i] == key:
                present += 1
                seen_old[i] = True
                refreshed_attrs.append((i, j))
            else:
                changed += 1
                dropped_old[i] = True
                added_rows.append(j)
                new_ids.append(tid)
            continue
        i_same = by_user_key.get((user, key))
        if i_same is not None:
            present += 1
            seen_old[i_same] = True
            refreshed_attrs.append((i_same, j))
            continue
        i_other = by_key.get(key)
        if i_other is not None and not dropped_old[i_other]:
            duplicates += 1
            dup_rows.append(j)
            dup_reasons.append(f"exact duplicate of text {old_ids[i_other]!r} of the published run")
            continue
        added_rows.append(j)
        new_ids.append(tid if has_ids else content_text_id(user, text))
    if dup_rows:
        parts.append(make_rejects(new.iloc[dup_rows], stage="refresh", reason=dup_reasons, field="text"))

    kept_old = ~dropped_old & (seen_old if snapshot else np.ones(len(old), dtype=bool))
    removed = int((~kept_old & ~dropped_old).sum())
    old_kept = old.loc[kept_old].copy()
    if snapshot and refreshed_attrs:
        _renew_attributes(old_kept, new, refreshed_attrs)
    added = new.iloc[added_rows].copy()
    added[TEXT_ID] = new_ids
    repeated = pd.Series(new_ids, dtype=object)
    if repeated.duplicated().any():  # the reader refuses repeated ids in one file; this is a content id clash
        dup = repeated[repeated.duplicated()].iloc[0]
        raise InputError(f"text id {dup!r} appears twice among the new texts", path=str(new_data))
    texts = pd.concat([old_kept, added], ignore_index=True, sort=False)
    texts[SOURCE_ROW] = np.arange(1, len(texts) + 1, dtype=np.int64)  # rows of the refreshed run, 1-based
    if LANGUAGE not in texts.columns:
        texts[LANGUAGE] = "und"
    parent_row = np.concatenate([np.flatnonzero(kept_old), np.full(len(added), -1)]).astype(np.int64)

    before = set(old_users)
    after = set(texts[USER_ID].astype(str))
    touched = set(added[USER_ID].astype(str)) | {old_users[i] for i in np.flatnonzero(~kept_old)}
    users_added = after - before
    users_removed = before - after
    users_changed = (touched & before & after)
    change = DataChange(
        source=str(new_data),
        snapshot=snapshot,
        rows_read=rows_read,
        rows_rejected=int(sum(len(p) for p in parts) - len(dup_rows)),
        rows_of_forgotten_users=skipped,
        already_present=present,
        duplicates_dropped=duplicates,
        texts_added=len(added) - changed,
        texts_changed=changed,
        texts_removed=removed,
        users_added=len(users_added),
        users_changed=len(users_changed),
        users_removed=len(users_removed),
        texts_reused=int(len(old_kept)),
    )
    digest = hashlib.sha256(f"{parent.input_sha256}\0{ingested.file_sha256}\0{int(snapshot)}".encode()).hexdigest()
    return MergedData(
        texts=texts, parent_row=parent_row, rejects=concat_rejects(parts), change=change,
        users_added=users_added, users_changed=users_changed, users_removed=users_removed,
        input_sha256=digest, input_format=ingested.format,
    )  # fmt: skip


def _renew_attributes(old_kept: pd.DataFrame, new: pd.DataFrame, pairs: list[tuple[int, int]]) -> None:
    """A snapshot's attribute values (plan, country...) replace the run's for texts it still holds."""
    core = {TEXT_ID, USER_ID, TEXT, SOURCE_ROW, LANGUAGE}
    attrs = [c for c in new.columns if c not in core and c in old_kept.columns]
    if not attrs:
        return
    rows = [i for i, _ in pairs if i in old_kept.index]
    source = [j for i, j in pairs if i in old_kept.index]
    for col in attrs:
        old_kept.loc[rows, col] = new[col].iloc[source].to_numpy()


def run_cleaner(parent: RunDir) -> BaseCleaner:
    """The cleaner the run was built with, rebuilt from its manifest (only the default one can be)."""
    from persona_llm.segment.clean import TextCleaner

    recorded = parent.load_manifest().parameters.get("cleaner", "default")
    if recorded != "default":
        raise ConfigError(
            f"{parent.path}: the run was cleaned with a custom cleaner ({recorded}), which a refresh cannot "
            "rebuild; new texts would be cleaned differently from the rest: build the workspace again"
        )
    return TextCleaner()


def cached_embedder(model_id: str, cache_dir: Any) -> BaseEmbedder:
    """The run's own embedding model (by its manifest id) behind the content-hash cache, as the pipeline
    wires it: long texts cut into pieces go through the cache piece by piece."""
    from persona_llm.segment import embed

    model = embed.embedder_from_model_id(model_id)
    if cache_dir == "none":
        return model
    cache = embed.EmbeddingCache(path=cache_dir) if cache_dir else embed.EmbeddingCache()
    if isinstance(model, embed.ChunkedEmbedder):
        return embed.ChunkedEmbedder(
            embed.CachedEmbedder(model.embedder, cache), window=model.window, max_pieces=model.max_pieces,
            token_offsets=model.token_offsets,
        )  # fmt: skip
    return embed.CachedEmbedder(model, cache)


def embed_texts(merged: MergedData, parent: RunDir, embedder: BaseEmbedder) -> MergedData:
    """Fill `merged.vectors`: the run's vectors for its own texts, `embedder` (cached) for new ones."""
    old_vectors = parent.load_text_embeddings()
    fresh = np.flatnonzero(merged.parent_row < 0)
    vectors = np.empty((len(merged.texts), old_vectors.shape[1]), dtype=np.float32)
    reused = np.flatnonzero(merged.parent_row >= 0)
    vectors[reused] = old_vectors[merged.parent_row[reused]]
    if len(fresh):
        hits0, misses0 = int(embedder.hits_), int(embedder.misses_)
        got = embedder.encode(merged.texts[TEXT].iloc[fresh].astype(str).tolist(), kind="passage")
        if got.shape[1] != vectors.shape[1]:
            raise ConfigError(
                f"the embedder gives {got.shape[1]}-d vectors, the run's are {vectors.shape[1]}-d ({parent.path})"
            )
        vectors[fresh] = got
        merged.change.texts_embedded = int(embedder.misses_) - misses0
        merged.change.texts_from_cache = int(embedder.hits_) - hits0
    merged.vectors = vectors
    return merged
