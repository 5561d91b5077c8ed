"""`forget`: take users out of a workspace for good: texts, vectors, store records, quotes, caches.

Under the workspace's writer lock:
    1. the users are recorded first (as hashes, `Workspace.record_forgotten`), so a refresh of old data
       never brings them back, even if this forget is interrupted (run it again to finish);
    2. what killed writers left (staging folders, which may hold copies of their texts) is removed;
    3. every run that holds anything of theirs is rewritten as a copy and swapped in atomically
       (`Workspace.rewrite_run`): their rows leave texts.parquet, text_embeddings.npy, assignments.csv,
       user_embeddings.npy and rejects.csv; their representative texts leave segments.json, whose sizes
       and shares are recounted; their quotes leave every persona (current and in the history), each
       persona's remaining quotes are re-verified against the remaining texts and the persona is flagged
       and its confidence recomputed; the refresh report drops their quotes; an eval.json that mentions
       them is removed (run the eval again); personas.md, refresh.md and report.html are rewritten; and
       the Chroma store is rebuilt without their records (a deleted row can linger in SQLite's free pages,
       a rebuilt store holds none). A store on a server gets their records deleted instead;
    4. the caches: their vectors leave the embedding cache (with SQLite secure_delete), and every cached
       model reply that contains one of their sentences is deleted.
What a run derived from their words goes too: each segment's keywords are recomputed from the remaining
texts with the run's recorded settings (`segment_keywords`, n_keywords from the manifest), and written
wherever they were copied: segments.json, the store's segment records, the personas' keyword fields
(the segment's first 8, as the writer copies them) and so personas.md, report.html and the store's
persona records. Keywords that cannot be recomputed (earlier persona versions, emerging groups of a
refresh report, a run described by a custom describer) keep only the terms at least two remaining users
still write (`terms_in_use`, the rule every keyword obeys when found); an eval.json that names a term
no longer in use is removed like one that quotes them. Not recomputed: the manifest's row counts, and
the model-written prose of a persona (its quotes are re-verified; anything else it says was checked
when written).
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from persona_llm.common.textmatch import normalize_ws
from persona_llm.errors import ConfigError
from persona_llm.personas.gates import TextIndex, ground_quotes
from persona_llm.personas.support import evidence_confidence
from persona_llm.runs.rundir import (
    EVAL,
    MANIFEST,
    PERSONAS_MARKDOWN,
    REFRESH_MARKDOWN,
    REJECTS,
    REPORT,
    TEXTS,
    RunDir,
    write_rejects_csv,
)
from persona_llm.runs.workspace import STAGING_PREFIX, Workspace
from persona_llm.schema.frames import TEXT, TEXT_ID, USER_ID
from persona_llm.schema.personas import MIN_QUOTES, DraftQuote, Persona
from persona_llm.schema.refresh import PersonaVersion, RefreshDiff
from persona_llm.schema.segments import SegmentSet
from persona_llm.segment.describe import segment_keywords, terms_in_use

#: A cached model reply is deleted when it contains a sentence of theirs at least this long.
MIN_FRAGMENT_CHARS = 15
_SENTENCE = re.compile(r"[^.!?。！？\n]+[.!?。！？]?")


@dataclass
class ForgetReport:
    """What `forget` removed."""

    users: int
    users_found: int = 0
    runs_rewritten: list[str] = field(default_factory=list)
    texts_removed: int = 0
    quotes_removed: int = 0
    personas_flagged: list[str] = field(default_factory=list)
    store_records_removed: int = 0
    cached_vectors_removed: int = 0
    cached_replies_removed: int = 0
    leftovers_removed: int = 0
    evals_removed: list[str] = field(default_factory=list)
    segments_rekeyworded: int = 0
    #: keyword terms no remaining pair of users writes, summed over the runs rewritten: a count only, as
    #: those words are theirs (a report that names them would repeat what was to be forgotten)
    keywords_dropped: int = 0

    def summary(self) -> dict[str, Any]:
        return dict(self.__dict__)


def forget(
    workspace: str | Path,
    user_ids: Sequence[str],
    *,
    cache_dir: str | Path | None = None,
    reply_cache_dirs: Iterable[str | Path] = (),
) -> ForgetReport:
    """Remove `user_ids` from every run of `workspace` and from the caches (see the module docstring).

    cache_dir: the cache root (default: $PERSONA_LLM_CACHE_DIR or ~/.cache/persona_llm); a run built with
    its own embedding cache_dir is purged there too. reply_cache_dirs: more model-reply caches to purge
    (an LLMSettings.cache_dir used to write personas), besides <cache root>/llm-responses.
    """
    from persona_llm.resource_paths import default_cache_dir

    users = {str(u).strip() for u in user_ids if str(u).strip()}
    if not users:
        raise ConfigError("say which users to forget: --user ID (repeatable)")
    ws = Workspace.open(workspace)
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    report = ForgetReport(users=len(users))
    their_texts: dict[str, set[str]] = {}  # embedding model id -> their texts embedded with it
    fragments: set[str] = set()
    found: set[str] = set()
    with ws.lock():
        ws.record_forgotten(sorted(users))  # first: nothing may bring them back, even if we are interrupted
        for leftover in ws.runs_dir.glob(f"{STAGING_PREFIX}*"):
            shutil.rmtree(leftover, ignore_errors=True)
            report.leftovers_removed += 1
        embedding_caches: set[str] = set()
        for name in ws.run_names():
            run = ws.run(name)
            texts = run.load_texts() if run.has(TEXTS) else pd.DataFrame(columns=[TEXT_ID, USER_ID, TEXT])
            mine = texts[USER_ID].astype(str).isin(users)
            rejects = run.load_rejects() if run.has(REJECTS) else pd.DataFrame(columns=[USER_ID, TEXT])
            rejected_mine = rejects[USER_ID].astype(str).isin(users)
            manifest = run.load_manifest() if run.has(MANIFEST) else None
            model_id = manifest.models.get("embedder", "") if manifest else ""
            recorded_cache = (manifest.parameters.get("cache_dir") if manifest else None) or None
            if recorded_cache not in (None, "none"):
                embedding_caches.add(str(recorded_cache))
            written = texts.loc[mine, TEXT].astype(str).tolist()
            raw = [t for t in rejects.loc[rejected_mine, TEXT].tolist() if isinstance(t, str)]
            if model_id:
                their_texts.setdefault(model_id, set()).update(written)
            fragments |= _fragments([*written, *raw])
            found |= set(texts.loc[mine, USER_ID].astype(str)) | set(rejects.loc[rejected_mine, USER_ID].astype(str))
            if not (mine.any() or rejected_mine.any() or _mentions(run, users)):
                continue
            with ws.rewrite_run(name) as copy:
                _scrub_run(run, copy, users, set(texts.loc[mine, TEXT_ID].astype(str)), report)
            report.runs_rewritten.append(name)
            report.texts_removed += int(mine.sum())
        for path in sorted(ws.path.glob("rejects-*.csv")):  # rejects of failed builds, outside every run
            frame = pd.read_csv(path, dtype=str, keep_default_na=False)
            hit = frame[USER_ID].isin(users) if USER_ID in frame else pd.Series(False, index=frame.index)
            if hit.any():
                fragments |= _fragments(frame.loc[hit, TEXT].tolist() if TEXT in frame else [])
                write_rejects_csv(path, frame.loc[~hit])
        report.users_found = len(found)
        report.cached_vectors_removed = _purge_vectors(their_texts, [root / "embeddings", *map(Path, embedding_caches)])
        reply_dirs = [root / "llm-responses", *map(Path, reply_cache_dirs)]
        report.cached_replies_removed = _purge_replies(fragments, reply_dirs)
    return report


def _fragments(texts: Iterable[str]) -> set[str]:
    """Their sentences (and whole short texts), as a cached reply could repeat them."""
    out: set[str] = set()
    for text in texts:
        norm = normalize_ws(str(text))
        if len(norm) >= MIN_FRAGMENT_CHARS:
            out.add(norm)
        out |= {s.strip() for s in _SENTENCE.findall(norm) if len(s.strip()) >= MIN_FRAGMENT_CHARS}
    return out


def _mentions(run: RunDir, users: set[str]) -> bool:
    """Does anything of the run besides texts and rejects hold their quotes or ids?"""
    quoted = any(q.user_id in users for p in run.load_personas() for q in p.quotes)
    history = any(q.user_id in users for v in run.load_persona_history() for q in v.persona.quotes)
    assignments = run.load_assignments()[USER_ID].astype(str).isin(users).any() if run.has("assignments.csv") else False
    return bool(quoted or history or assignments)


def _scrub_run(source: RunDir, run: RunDir, users: set[str], text_ids: set[str], report: ForgetReport) -> None:
    """Write `source` without `users` into `run` (a copy without a store; see the module docstring)."""
    texts = source.load_texts()
    keep_t = ~texts[USER_ID].astype(str).isin(users)
    run.save_texts(texts.loc[keep_t].reset_index(drop=True))
    if source.has("text_embeddings.npy"):
        run.save_text_embeddings(source.load_text_embeddings()[keep_t.to_numpy()])
    assignments = source.load_assignments()
    keep_a = ~assignments[USER_ID].astype(str).isin(users)
    run.save_assignments(assignments.loc[keep_a].reset_index(drop=True))
    if source.has("user_embeddings.npy"):
        run.save_user_embeddings(source.load_user_embeddings()[keep_a.to_numpy()])
    if source.has(REJECTS):
        rejects = source.load_rejects()
        run.save_rejects(rejects.loc[~rejects[USER_ID].astype(str).isin(users)].reset_index(drop=True))
    before = source.load_segments()
    segment_set = _recount(before, assignments.loc[keep_a], texts.loc[keep_t], users)
    params = source.load_manifest().parameters if source.has(MANIFEST) else {}
    segment_set = _rekeyword(segment_set, texts.loc[keep_t], params, report)
    vanished = _vanished_terms(before, segment_set, source, texts.loc[keep_t])
    report.keywords_dropped += len(vanished)
    run.save_segments(segment_set)
    index = TextIndex.from_frame(run.load_texts(["text_id", "user_id", "segment_id", "text"]))
    cohesions = sorted(s.quality.cohesion for s in segment_set.segments)
    median = cohesions[len(cohesions) // 2] if cohesions else None
    personas = [_scrub_persona(p, users, index, segment_set, median, report) for p in source.load_personas()]
    if personas:
        run.save_personas(personas)
    history = source.load_persona_history()
    if history:
        run.save_persona_history(
            [
                PersonaVersion(persona=_without_terms(_without_quotes(v.persona, users), vanished), replaced_in_run=v.replaced_in_run, reason=v.reason)
                for v in history
            ]
        )  # fmt: skip
    diff = source.load_refresh_diff()
    if diff is not None:
        diff = _scrub_diff(diff, text_ids, vanished)
        run.save_refresh_diff(diff)
        from persona_llm.personas.report import refresh_markdown

        run.save_text(REFRESH_MARKDOWN, refresh_markdown(diff))
    if source.has(EVAL) and _eval_mentions(source.file(EVAL).read_text(encoding="utf-8"), users, texts.loc[~keep_t], vanished):
        run.file(EVAL).unlink()  # a hard link to the source's file: unlinking the copy's name only
        report.evals_removed.append(source.path.name)
    if personas:
        from persona_llm.personas.report import html_report, markdown_report

        run.save_text(PERSONAS_MARKDOWN, markdown_report(personas, run_id=source.run_id))
        run.save_text(REPORT, html_report(run, personas))
    report.store_records_removed += _rebuild_store(source, run, users, personas, segment_set)


def _recount(segment_set: SegmentSet, assignments: pd.DataFrame, texts: pd.DataFrame, users: set[str]) -> SegmentSet:
    """Their representative texts out; sizes, shares and coverage counted without them."""
    labels = assignments["segment_id"].to_numpy()
    n_users = len(labels)
    sizes = pd.Series(labels[labels >= 0]).value_counts().to_dict()
    n_texts = texts["segment_id"].value_counts().to_dict() if "segment_id" in texts else {}
    segments = []
    for seg in segment_set.segments:
        reps = [r for r in seg.representatives if r.user_id not in users]
        size = int(sizes.get(seg.segment_id, 0))
        segments.append(
            seg.model_copy(
                update={
                    "representatives": reps, "representative_text_ids": [r.text_id for r in reps], "size": size,
                    "share": round(size / n_users, 4) if n_users else 0.0,
                    "n_texts": int(n_texts.get(seg.segment_id, seg.n_texts)),
                }
            )  # fmt: skip
        )
    assigned = int((labels >= 0).sum())
    return segment_set.model_copy(
        update={
            "segments": segments, "n_users": n_users, "n_assigned": assigned,
            "coverage": round(assigned / n_users, 4) if n_users else 0.0,
            "noise_share": round(1 - assigned / n_users, 4) if n_users else 0.0,
        }
    )  # fmt: skip


def _rekeyword(segment_set: SegmentSet, texts: pd.DataFrame, params: dict[str, Any], report: ForgetReport) -> SegmentSet:
    """Each segment's keywords found again from `texts` (the run's remaining texts, with segment ids) with
    the run's recorded n_keywords; a run described by a custom describer keeps its keywords that are
    still in use (its describer cannot be rebuilt here)."""
    if "describer" in params or "segment_id" not in texts:
        in_use = terms_in_use(
            texts[TEXT].astype(str).tolist(), texts[USER_ID].astype(str).tolist(),
            {k.term for seg in segment_set.segments for k in seg.keywords},
        )  # fmt: skip
        found = {seg.segment_id: [k for k in seg.keywords if k.term in in_use] for seg in segment_set.segments}
    else:
        found = segment_keywords(texts, int(params.get("n_keywords", 10)))
    segments = []
    for seg in segment_set.segments:
        keywords = found.get(seg.segment_id, [])
        if [k.term for k in keywords] != [k.term for k in seg.keywords]:
            report.segments_rekeyworded += 1
        segments.append(seg.model_copy(update={"keywords": keywords}))
    return segment_set.model_copy(update={"segments": segments})


def _vanished_terms(before: SegmentSet, after: SegmentSet, source: RunDir, texts: pd.DataFrame) -> set[str]:
    """Keyword terms the run showed anywhere (segments, personas and their history, emerging groups of its
    refresh report) that fewer than two remaining users write: they must go wherever they were copied."""
    shown = {k.term for seg in before.segments for k in seg.keywords}
    shown |= {t for p in source.load_personas() for t in (p.keywords or [])}
    shown |= {t for v in source.load_persona_history() for t in (v.persona.keywords or [])}
    diff = source.load_refresh_diff()
    if diff is not None and diff.drift is not None:
        shown |= {t for g in diff.drift.emerging for t in g.keywords}
    kept = {k.term for seg in after.segments for k in seg.keywords}
    candidates = shown - kept
    return candidates - terms_in_use(texts[TEXT].astype(str).tolist(), texts[USER_ID].astype(str).tolist(), candidates)


def _without_terms(persona: Persona, terms: set[str]) -> Persona:
    if not terms or not persona.keywords:
        return persona
    return persona.model_copy(update={"keywords": [t for t in persona.keywords if t not in terms]})


def _without_quotes(persona: Persona, users: set[str]) -> Persona:
    return persona.model_copy(update={"quotes": [q for q in persona.quotes if q.user_id not in users]}, deep=True)


def _scrub_persona(
    persona: Persona, users: set[str], index: TextIndex, segment_set: SegmentSet, median: float | None, report: ForgetReport
) -> Persona:
    """Their quotes out; the rest re-verified against the remaining texts; flagged when anything went."""
    drafts = [DraftQuote.model_construct(text_id=q.text_id, text=q.text) for q in persona.quotes if q.user_id not in users]
    checked = ground_quotes(drafts, persona.segment_id, index, max_quotes=len(drafts) or 1)
    removed = len(persona.quotes) - len(checked.kept)
    out = persona.model_copy(update={"quotes": checked.kept}, deep=True)
    try:
        seg = segment_set.get(persona.segment_id)
        out.user_count, out.share, out.n_texts = seg.size, seg.share, seg.n_texts
        out.keywords = [k.term for k in seg.keywords[:8]]  # as the writer copies them (recomputed: _rekeyword)
    except KeyError:
        seg = None
    if removed:
        report.quotes_removed += removed
        report.personas_flagged.append(persona.persona_id)
        prov = out.provenance
        prov.warnings.append(f"{removed} quote(s) removed: their author was forgotten (persona-llm forget); quotes re-verified")
        ratio = seg.quality.cohesion / median if (seg is not None and median) else None
        out.confidence, prov.confidence_basis = evidence_confidence(
            prov.statements, quotes_kept=len(checked.kept), quotes_proposed=prov.quotes_proposed,
            min_quotes=MIN_QUOTES, cohesion_ratio=ratio,
        )  # fmt: skip
    return out


def _scrub_diff(diff: RefreshDiff, text_ids: set[str], vanished: set[str]) -> RefreshDiff:
    personas = [
        p.model_copy(
            update={
                "quotes_added": [q for q in p.quotes_added if q.text_id not in text_ids],
                "quotes_removed": [q for q in p.quotes_removed if q.text_id not in text_ids],
            }
        )
        for p in diff.personas
    ]
    drift = diff.drift
    if drift is not None:
        emerging = [
            g.model_copy(
                update={"text_ids": [t for t in g.text_ids if t not in text_ids], "keywords": [k for k in g.keywords if k not in vanished]}
            )
            for g in drift.emerging
        ]
        drift = drift.model_copy(update={"emerging": emerging})
    return diff.model_copy(update={"personas": personas, "drift": drift})


def _eval_mentions(body: str, users: set[str], their_texts: pd.DataFrame, vanished: set[str]) -> bool:
    if any(json.dumps(u) in body for u in users):
        return True
    lowered = body.casefold()
    if any(re.search(rf"(?<!\w){re.escape(json.dumps(t)[1:-1].casefold())}(?!\w)", lowered) for t in vanished):
        return True  # a keyword only they wrote (the chat eval asks about keywords)
    # The eval writes texts as JSON strings: compare escaped, a sentence at a time.
    return any(json.dumps(f)[1:-1] in body for f in _fragments(their_texts[TEXT].astype(str)))


def _rebuild_store(source: RunDir, run: RunDir, users: set[str], personas: list[Persona], segment_set: SegmentSet) -> int:
    """The run's store without their records: a new persistent store in the copy, or, on a server, their
    records deleted and the personas' records updated. Returns how many records went."""
    from persona_llm.segment import base as kinds
    from persona_llm.segment.store import ChromaStore, read_copy, store_for_run, zero_unused_space

    old = store_for_run(source)
    if not isinstance(old, ChromaStore):
        return 0
    run_id = source.run_id
    by_id = {p.persona_id: p for p in personas}
    removed = 0
    if old.url:
        coll = old.collection(kinds.TEXTS, run_id)
        got = coll.get(where={"user_id": {"$in": sorted(users)}})
        if got["ids"]:
            coll.delete(ids=got["ids"])
            removed += len(got["ids"])
        for kind, update in ((kinds.SEGMENTS, lambda r: _update_segments(r, segment_set)),
                             (kinds.PERSONAS, lambda r: _update_personas(r, by_id))):  # fmt: skip
            records = old.records(kind, run_id)
            if records is not None and records["ids"]:
                update(records)
                old.collection(kind, run_id).upsert(
                    ids=records["ids"], documents=records["documents"], metadatas=records["metadatas"],
                    embeddings=np.asarray(records["embeddings"], dtype=np.float32),
                )  # fmt: skip
        old.close()
        return removed
    new = ChromaStore(path=run.store_path, prefix=old.prefix)
    with read_copy(old, run.path / ".old-store") as readable:
        for kind in (kinds.TEXTS, kinds.SEGMENTS, kinds.PERSONAS):
            records = readable.records(kind, run_id) if readable is not None else None
            if records is None:
                continue
            keep = [i for i, m in enumerate(records["metadatas"]) if str((m or {}).get("user_id", "")) not in users]
            removed += len(records["ids"]) - len(keep)
            records = {k: [v[i] for i in keep] for k, v in records.items()}
            if kind == kinds.PERSONAS:
                _update_personas(records, by_id)
            if kind == kinds.SEGMENTS:
                _update_segments(records, segment_set)
            if records["ids"]:
                new.add_records(kind, run_id, records)
            else:
                new.collection(kind, run_id)  # an empty collection, as the run had
    new.close()
    zero_unused_space(run.store_path)  # this process held their texts: none of its memory may reach the disk
    return removed


def _update_segments(records: dict[str, list[Any]], segment_set: SegmentSet) -> None:
    """The segment records' keywords (document and metadata, as ChromaStore.write_segments writes them)
    and counts from the recomputed segments."""
    by_id = {seg.segment_id: seg for seg in segment_set.segments}
    for i, meta in enumerate(records["metadatas"]):
        seg = by_id.get(int((meta or {}).get("segment_id", -1)))
        if seg is None:
            continue
        terms = [k.term for k in seg.keywords]
        records["documents"][i] = ", ".join(terms)
        meta.update(size=seg.size, share=seg.share, keywords=json.dumps(terms, ensure_ascii=False))


def _update_personas(records: dict[str, list[Any]], by_id: dict[str, Persona]) -> None:
    for meta in records["metadatas"]:
        persona = by_id.get(str((meta or {}).get("persona_id", "")))
        if persona is not None:
            meta["persona"] = json.dumps({**persona.model_dump(mode="json"), "id": persona.persona_id}, ensure_ascii=False)


def _purge_vectors(their_texts: dict[str, set[str]], caches: list[Path]) -> int:
    """Their texts' vectors out of each embedding cache, under every model id the runs used."""
    from persona_llm.segment.embed import ChunkedEmbedder, EmbeddingCache, embedder_from_model_id

    keys: list[bytes] = []
    for model_id, texts in their_texts.items():
        if not texts:
            continue
        if ";long=chunk" in model_id:  # long texts were cached piece by piece under the inner model's id
            chunked = embedder_from_model_id(model_id)
            assert isinstance(chunked, ChunkedEmbedder)
            inner = chunked.embedder.model_id
            keys += [EmbeddingCache.key(inner, "passage", piece) for pieces in chunked.pieces(sorted(texts)) for piece in pieces]
        keys += [EmbeddingCache.key(model_id.split(";long=")[0], "passage", t) for t in texts]
        keys += [EmbeddingCache.key(model_id, "passage", t) for t in texts]
    removed = 0
    for folder in dict.fromkeys(caches):
        path = folder / EmbeddingCache.FILE_NAME if folder.suffix == "" else folder
        if not path.is_file():
            continue
        with EmbeddingCache(path) as cache:
            removed += cache.delete_many(sorted(set(keys)))
    return removed


def _purge_replies(fragments: set[str], folders: list[Path]) -> int:
    """Cached model replies that repeat one of their sentences, deleted."""
    if not fragments:
        return 0
    needles = sorted(fragments, key=len)
    removed = 0
    for folder in dict.fromkeys(folders):
        if not folder.is_dir():
            continue
        for path in folder.rglob("*.json"):
            try:
                body = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            reply = normalize_ws(str(body.get("text", ""))) if isinstance(body, dict) else ""
            raw = normalize_ws(path.read_text(encoding="utf-8", errors="replace"))
            if any(n in reply or n in raw for n in needles):
                path.unlink(missing_ok=True)
                removed += 1
    return removed
