"""Markdown and a self-contained HTML report of a run's personas.

The HTML has no script and loads nothing from the network: the user map (a PCA projection of
user_embeddings.npy, coloured by segment) and the segment size bars are inline SVG, the styles are
inline CSS. Every quote links to its full source text in the evidence section at the end.
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

from persona_llm.errors import InputError
from persona_llm.runs.rundir import ASSIGNMENTS, SEGMENTS, TEXTS, USER_EMBEDDINGS, RunDir
from persona_llm.schema.personas import DemographicEstimate, Persona
from persona_llm.schema.refresh import RefreshDiff, SegmentChange

PALETTE = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf", "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd",
]  # fmt: skip
NOISE_COLOUR = "#c8c8c8"


def segment_colour(segment_id: int) -> str:
    return NOISE_COLOUR if segment_id < 0 else PALETTE[segment_id % len(PALETTE)]


def _anchor(text_id: str) -> str:
    return "t-" + re.sub(r"[^A-Za-z0-9_-]", "_", text_id)


def _estimate_text(est: DemographicEstimate) -> str:
    if est.value == "unknown":
        return "unknown"
    ids = f" [{', '.join(est.text_ids)}]" if est.text_ids else ""
    return f"{est.value} ({est.confidence} confidence, from {est.source}{ids}: {est.evidence})"


# -- Markdown ---------------------------------------------------------------------------------------


LOW_CONFIDENCE_NOTE = (
    "Low confidence: the segment's texts do not support enough of this persona to act on it; read it as a "
    "draft, not a finding."
)


def support_line(p: Persona) -> str:
    """"9/11 statements supported by the segment's texts (82%); confidence: ..." for a persona card."""
    prov = p.provenance
    if prov.support_share is None:
        return "statements not checked against the texts"
    n = len(prov.statements)
    ok = sum(c.supported for c in prov.statements)
    dropped = f"; {len(prov.statements_removed)} unsupported item(s) removed" if prov.statements_removed else ""
    return f"{ok}/{n} statements supported by the segment's texts ({prov.support_share * 100:.0f}%){dropped}"


def persona_markdown(p: Persona) -> str:
    lines = [
        f"## {p.name} (segment {p.segment_id})",
        "",
        f"*{p.tagline}*",
        "",
        f"{p.user_count} users ({p.share * 100:.1f}%), {p.n_texts} texts · sentiment {p.sentiment} · "
        f"confidence {p.confidence} · id `{p.persona_id}`",
        "",
        *([f"> **{LOW_CONFIDENCE_NOTE}**", ""] if p.confidence == "low" else []),
        f"Evidence: {support_line(p)}. Confidence basis: {p.provenance.confidence_basis or 'not recorded'}.",
        "",
        p.summary,
        "",
        "**Demographics (estimates)**",
        "",
    ]
    for name in ("age_group", "gender", "location", "occupation"):
        lines.append(f"- {name.replace('_', ' ')}: {_estimate_text(getattr(p.demographics, name))}")
    for title, items in (
        ("Interests", p.interests),
        ("Goals", p.goals),
        ("Pain points", p.pain_points),
        ("Motivations", p.motivations),
        ("Purchase triggers", p.purchase_triggers),
        ("Objections", p.objections),
        ("Preferred channels", p.preferred_channels),
    ):
        if items:
            lines += ["", f"**{title}**", ""] + [f"- {item}" for item in items]
    lines += ["", f"**Tone of voice:** {p.tone_of_voice}", "", f"**Keywords:** {', '.join(p.keywords)}", ""]
    lines += ["**Quotes (verbatim)**", ""] + [f"> {q.text} — `{q.text_id}`" for q in p.quotes]
    if not p.quotes:
        lines.append("_no quote passed the grounding gate_")
    rec = p.recommendations
    lines += ["", "**Marketing recommendations**", ""]
    lines += [f"- message: {m}" for m in rec.messages]
    lines += [f"- offer: {o}" for o in rec.offers]
    lines += [f"- channel: {c}" for c in rec.channels]
    prov = p.provenance
    lines += [
        "",
        f"<sub>{prov.backend}:{prov.model} · prompt {prov.prompt_version} · {prov.attempts} call(s) · "
        f"{len(prov.quotes_removed)} of {prov.quotes_proposed} proposed quotes removed by the grounding gate · "
        f"{prov.generated_at}</sub>",
        "",
    ]
    return "\n".join(lines)


def markdown_report(personas: Sequence[Persona], *, run_id: str = "") -> str:
    """personas.md: every persona as Markdown."""
    head = [f"# Personas{f' of run {run_id}' if run_id else ''}", ""]
    body = [persona_markdown(p) for p in personas]
    return "\n".join(head + body)


def _size(value: int | None, share: float | None) -> str:
    return "-" if value is None else f"{value} ({(share or 0) * 100:.1f}%)"


def _segment_note(c: SegmentChange) -> str:
    notes = []
    if c.split_from is not None:
        notes.append(f"split from {c.split_from}")
    if c.merged_from:
        notes.append(f"merged from {', '.join(map(str, c.merged_from))}")
    if c.merged_into is not None:
        notes.append(f"merged into {c.merged_into}")
    if c.match_score is not None:
        notes.append(f"match {c.match_score:.2f}")
    return "; ".join(notes)


def refresh_markdown(diff: RefreshDiff) -> str:
    """refresh.md: what a refresh changed, measured and checked."""
    d = diff.data
    lines = [
        f"# Refresh of {diff.previous_run}: {diff.status}",
        "",
        *([f"**{diff.reason}**", ""] if diff.reason else []),
        f"Mode {diff.mode_asked} -> {diff.mode_used} · new data {d.source} ({'snapshot' if d.snapshot else 'appended'}) · "
        f"{diff.llm_calls} model call(s) · {diff.seconds:.1f} s",
        "",
        "## Data",
        "",
        f"- rows read {d.rows_read}, rejected {d.rows_rejected}, of forgotten users {d.rows_of_forgotten_users}",
        f"- texts added {d.texts_added}, changed {d.texts_changed}, removed {d.texts_removed}; already present "
        f"{d.already_present}, duplicates dropped {d.duplicates_dropped}",
        f"- users added {d.users_added}, changed {d.users_changed}, removed {d.users_removed}",
        f"- embedded {d.texts_embedded}, from the cache {d.texts_from_cache}, reused from the run {d.texts_reused}",
    ]
    if diff.drift is not None:
        f = diff.drift
        lines += [
            "",
            "## Drift",
            "",
            f"- new or changed users {f.new_or_changed_users}, in no segment {f.unassigned_new_users} ({f.unassigned_share:.1%})",
            f"- centroid shift max {f.centroid_shift_max:.4f}, mean {f.centroid_shift_mean:.4f}; membership churn "
            f"{f.membership_churn:.1%}",
            f"- re-cluster thresholds: {', '.join(f'{k} {v:g}' for k, v in f.thresholds.items())}; exceeded: "
            f"{'; '.join(f.exceeded) or 'none'}",
            f"- assignment: {f.assigner}",
        ]
        for g in f.emerging:
            lines.append(
                f"- emerging segment: {g.size} users, cohesion {g.cohesion:.2f}, nearest segment {g.nearest_segment} "
                f"({g.nearest_similarity:.2f}), keywords {', '.join(g.keywords) or '-'}"
            )
    if diff.segments:
        lines += ["", "## Segments", "", "| segment | status | before | after | joined | left | churn | note |", "|---|---|---|---|---|---|---|---|"]
        for c in diff.segments:
            lines.append(
                f"| {c.segment_id} | {c.status} | {_size(c.size_before, c.share_before)} | {_size(c.size_after, c.share_after)} "
                f"| {c.joined} | {c.left} | {c.churn:.1%} | {_segment_note(c)} |"
            )
        for sp in diff.splits:
            lines.append(f"\nSplit: segment {sp.segment_id} -> {', '.join(map(str, sp.into))}")
        for m in diff.merges:
            lines.append(f"\nMerge: segments {', '.join(map(str, m.segment_ids))} -> {m.into}")
    if diff.personas:
        lines += ["", "## Personas", ""]
        for p in diff.personas:
            version = f"v{p.version_before or '-'} -> v{p.version_after or '-'}"
            lines.append(f"- **{p.name or '(new)'}** (segment {p.segment_id}, `{p.persona_id or '-'}`): {p.action}, {version}")
            if p.fields_changed:
                lines.append(f"  - fields changed: {', '.join(p.fields_changed)}")
            for q in p.quotes_added:
                lines.append(f"  - quote added [{q.text_id}]: {q.text}")
            for q in p.quotes_removed:
                lines.append(f"  - quote removed [{q.text_id}]: {q.text}{f' ({q.reason})' if q.reason else ''}")
            for flag in p.flags:
                lines.append(f"  - flag: {flag}")
    if diff.gates:
        lines += ["", "## Gates", ""]
        lines += [f"- {'pass' if g.passed else 'FAIL'} {g.name}: {g.detail}" for g in diff.gates]
    return "\n".join(lines) + "\n"


def refresh_section(diff: RefreshDiff) -> str:
    """The refresh section of report.html."""
    e = html.escape
    rows = "".join(
        f"<tr><td>{c.segment_id}</td><td>{e(c.status)}</td><td>{_size(c.size_before, c.share_before)}</td>"
        f"<td>{_size(c.size_after, c.share_after)}</td><td>{c.joined}</td><td>{c.left}</td><td>{c.churn:.1%}</td>"
        f"<td>{e(_segment_note(c))}</td></tr>"
        for c in diff.segments
    )
    items = []
    for p in diff.personas:
        details = [f"fields changed: {', '.join(p.fields_changed)}"] if p.fields_changed else []
        details += [f"quote added [{q.text_id}]: {q.text}" for q in p.quotes_added]
        details += [f"quote removed [{q.text_id}]: {q.text}" + (f" ({q.reason})" if q.reason else "") for q in p.quotes_removed]
        details += [f"flag: {f}" for f in p.flags]
        sub = "".join(f"<li>{e(x)}</li>" for x in details)
        items.append(
            f"<li><b>{e(p.name or '(new)')}</b> (segment {p.segment_id}) {e(p.action)}, "
            f"v{p.version_before or '-'} &rarr; v{p.version_after or '-'}{f'<ul>{sub}</ul>' if sub else ''}</li>"
        )
    gates = "".join(
        f"<li class='{'' if g.passed else 'warn'}'>{'pass' if g.passed else 'FAIL'} {e(g.name)}: {e(g.detail)}</li>"
        for g in diff.gates
    )
    drift = ""
    if diff.drift is not None:
        f = diff.drift
        drift = (
            f"<p>Drift: {f.unassigned_new_users} of {f.new_or_changed_users} new or changed users in no segment "
            f"({f.unassigned_share:.1%}); centroid shift max {f.centroid_shift_max:.4f}; membership churn "
            f"{f.membership_churn:.1%}; {len(f.emerging)} emerging segment(s); exceeded: {e('; '.join(f.exceeded) or 'none')}</p>"
        )
    d = diff.data
    return f"""<h2 id="refresh">Refresh</h2>
<p class="muted">from run {e(diff.previous_run)} · {e(diff.status)} · mode {e(diff.mode_asked)} &rarr; {e(diff.mode_used)} ·
{d.texts_added} texts added, {d.texts_changed} changed, {d.texts_removed} removed · {d.users_added} users added ·
{diff.llm_calls} model call(s)</p>{f"<p class='warn'>{e(diff.reason)}</p>" if diff.reason else ""}{drift}
<table class="demo"><tr><th>segment</th><th>status</th><th>before</th><th>after</th><th>joined</th><th>left</th>
<th>churn</th><th>note</th></tr>{rows}</table>
<ul>{''.join(items)}</ul><ul>{gates}</ul>"""


# -- HTML -------------------------------------------------------------------------------------------


def project_2d(vectors: np.ndarray) -> np.ndarray:
    """PCA to two dimensions (numpy SVD: deterministic up to sign, which we fix)."""
    x = np.asarray(vectors, dtype=np.float64)
    if x.shape[0] < 2:
        return np.zeros((x.shape[0], 2))
    x = x - x.mean(axis=0)
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    comps = vt[:2]
    comps *= np.sign(comps[np.arange(comps.shape[0]), np.abs(comps).argmax(axis=1)])[:, None]
    out = x @ comps.T
    return out if out.shape[1] == 2 else np.hstack([out, np.zeros((out.shape[0], 1))])


@dataclass(frozen=True)
class UserMap:
    """The 2-D user map: a PCA projection of user_embeddings.npy, at most `max_points` users (a fixed
    random sample above that), in the order they are drawn (unassigned users first, under the rest)."""

    xy: np.ndarray  # (n, 2) projected coordinates
    segment_ids: np.ndarray  # (n,) segment of each point, -1 unassigned
    n_users: int  # users in the run (the map may show a sample)


def user_map(run: RunDir, *, max_points: int = 3000) -> UserMap | str:
    """The user map of a run, or why there is none (a sentence). The report draws it as SVG; the server
    hands the same points to its web page."""
    if not run.has(USER_EMBEDDINGS) or not run.has(ASSIGNMENTS):
        return f"{USER_EMBEDDINGS} or {ASSIGNMENTS} is missing"
    try:
        vectors = run.load_user_embeddings()
    except InputError:
        return "embeddings and assignments do not line up"
    segments = run.load_assignments()["segment_id"].to_numpy()
    if len(vectors) != len(segments) or len(vectors) == 0:
        return "embeddings and assignments do not line up"
    rng = np.random.default_rng(0)
    idx = np.arange(len(vectors))
    if len(idx) > max_points:
        idx = np.sort(rng.choice(idx, size=max_points, replace=False))
    xy = project_2d(vectors[idx])
    ids = segments[idx].astype(int)
    # Noise first so segments are drawn on top of it.
    order = np.argsort(ids >= 0, kind="stable")
    return UserMap(xy=xy[order], segment_ids=ids[order], n_users=len(vectors))


def user_map_svg(
    run: RunDir, names: dict[int, str], *, width: int = 640, height: int = 420, max_points: int = 3000
) -> str:
    found = user_map(run, max_points=max_points)
    if isinstance(found, str):
        return f"<p class='muted'>No user map: {html.escape(found)}.</p>"
    xy, ids = found.xy, found.segment_ids
    lo, hi = xy.min(axis=0), xy.max(axis=0)
    span = np.where(hi - lo == 0, 1, hi - lo)
    pad = 16
    px = pad + (xy[:, 0] - lo[0]) / span[0] * (width - 2 * pad)
    py = height - pad - (xy[:, 1] - lo[1]) / span[1] * (height - 2 * pad)
    dots = []
    for i in range(len(ids)):
        sid = int(ids[i])
        r = 1.6 if sid < 0 else 2.6
        dots.append(f'<circle cx="{px[i]:.1f}" cy="{py[i]:.1f}" r="{r}" fill="{segment_colour(sid)}"/>')
    legend = "".join(
        f'<span class="key"><i style="background:{segment_colour(sid)}"></i>{html.escape(label)}</span>'
        for sid, label in sorted(names.items())
    )
    if (ids < 0).any():
        legend += f'<span class="key"><i style="background:{NOISE_COLOUR}"></i>unassigned</span>'
    note = f"{len(ids)} of {found.n_users} users, PCA of user embeddings"
    return (
        f'<svg viewBox="0 0 {width} {height}" width="100%" role="img" aria-label="user map">'
        f'<rect width="{width}" height="{height}" fill="#fafafa"/>{"".join(dots)}</svg>'
        f'<div class="legend">{legend}</div><p class="muted">{note}</p>'
    )


def sizes_svg(rows: Sequence[tuple[int, str, int, float]], width: int = 640) -> str:
    """Horizontal bars: (segment id, label, users, share)."""
    if not rows:
        return ""
    bar_h, gap, label_w = 22, 6, 250
    height = len(rows) * (bar_h + gap)
    biggest = max(r[2] for r in rows) or 1
    parts = []
    for k, (sid, label, users, share) in enumerate(rows):
        y = k * (bar_h + gap)
        w = (width - label_w - 90) * users / biggest
        parts.append(
            f'<text x="{label_w - 6}" y="{y + 15}" text-anchor="end" font-size="12">{html.escape(label[:38])}</text>'
            f'<rect x="{label_w}" y="{y}" width="{w:.1f}" height="{bar_h}" fill="{segment_colour(sid)}"/>'
            f'<text x="{label_w + w + 6:.1f}" y="{y + 15}" font-size="12">{users} ({share * 100:.1f}%)</text>'
        )
    return (
        f'<svg viewBox="0 0 {width} {height}" width="100%" role="img" aria-label="segment sizes">{"".join(parts)}</svg>'
    )


def _list(title: str, items: Sequence[str]) -> str:
    if not items:
        return ""
    lis = "".join(f"<li>{html.escape(i)}</li>" for i in items)
    return f"<div><h4>{html.escape(title)}</h4><ul>{lis}</ul></div>"


def _estimate_html(name: str, est: DemographicEstimate) -> str:
    if est.value == "unknown":
        return f"<tr><th>{name}</th><td class='muted'>unknown</td><td></td></tr>"
    links = " ".join(f'<a href="#{_anchor(t)}">{html.escape(t)}</a>' for t in est.text_ids)
    why = html.escape(f"{est.source}: {est.evidence}")
    return (
        f"<tr><th>{name}</th><td>{html.escape(est.value)} <span class='badge'>{est.confidence}</span></td>"
        f"<td class='muted'>{why} {links}</td></tr>"
    )


def persona_card(p: Persona) -> str:
    demo = "".join(
        _estimate_html(n.replace("_", " "), getattr(p.demographics, n))
        for n in ("age_group", "gender", "location", "occupation")
    )
    quotes = (
        "".join(
            f'<blockquote>{html.escape(q.text)} <a class="src" href="#{_anchor(q.text_id)}">{html.escape(q.text_id)}</a>'
            "</blockquote>"
            for q in p.quotes
        )
        or "<p class='muted'>No quote passed the grounding gate.</p>"
    )
    rec = p.recommendations
    prov = p.provenance
    removed = "".join(
        f"<li>{html.escape(r.reason)} (attempt {r.attempt}, cited {html.escape(r.text_id)}): "
        f"{html.escape(r.text[:160])}</li>"
        for r in prov.quotes_removed
    )
    est_removed = "".join(
        f"<li>{html.escape(e.field)} = {html.escape(e.value)}: {html.escape(e.reason)}</li>"
        for e in prov.estimates_removed
    )
    distinct = "".join(
        f"<li>{'regenerated: ' if d.regenerated else ''}similarity {d.similarity:.3f} to "
        f"{html.escape(d.other_persona_id)} (threshold {d.threshold})</li>"
        for d in prov.distinctness
    )
    unsupported = "".join(
        f"<li>{html.escape(c.field)}: {html.escape(c.text)} (similarity {c.similarity:.2f}, best segment "
        f"{c.best_segment_similarity:.2f}{'; ' + html.escape(c.reason) if c.reason else ''})</li>"
        for c in prov.statements_removed
    )
    colour = segment_colour(p.segment_id)
    return f"""
<section class="card" id="persona-{p.segment_id}" style="border-top:6px solid {colour}">
  <h3>{html.escape(p.name)} <span class="muted">segment {p.segment_id}</span></h3>
  <p class="tagline">{html.escape(p.tagline)}</p>
  <p class="muted">{p.user_count} users ({p.share * 100:.1f}%) · {p.n_texts} texts · sentiment
    {html.escape(p.sentiment)} · confidence {html.escape(p.confidence)} · language {html.escape(p.language)}</p>
  {f'<p class="warn"><b>{html.escape(LOW_CONFIDENCE_NOTE)}</b></p>' if p.confidence == "low" else ""}
  <p class="muted">Evidence: {html.escape(support_line(p))}. Confidence basis:
    {html.escape(prov.confidence_basis or "not recorded")}.</p>
  <p>{html.escape(p.summary)}</p>
  <h4>Demographics (estimates, never facts)</h4><table class="demo">{demo}</table>
  <div class="grid">
    {_list("Interests", p.interests)}{_list("Goals", p.goals)}{_list("Pain points", p.pain_points)}
    {_list("Motivations", p.motivations)}{_list("Purchase triggers", p.purchase_triggers)}
    {_list("Objections", p.objections)}{_list("Preferred channels", p.preferred_channels)}
  </div>
  <p><b>Tone of voice:</b> {html.escape(p.tone_of_voice)}</p>
  <p><b>Keywords:</b> {html.escape(", ".join(p.keywords))}</p>
  <h4>Quotes (verbatim, linked to their source)</h4>{quotes}
  <div class="grid">
    {_list("Messages", rec.messages)}{_list("Offers", rec.offers)}{_list("Channels", rec.channels)}
  </div>
  <details><summary>Provenance and gates</summary>
    <p class="muted">{html.escape(prov.backend)}:{html.escape(prov.model)} · prompt {html.escape(prov.prompt_version)}
    ({prov.prompt_sha256[:12]}) · data {prov.data_sha256[:12]} · {prov.attempts} call(s) ·
    {prov.prompt_tokens}+{prov.completion_tokens} tokens · {prov.seconds:.1f}s{" · from cache" if prov.from_cache else ""}
    · {html.escape(prov.generated_at)} · id {html.escape(p.persona_id)}</p>
    <p>Grounding gate: {len(prov.quotes_removed)} of {prov.quotes_proposed} proposed quotes removed.</p>
    {f"<ul>{removed}</ul>" if removed else ""}
    {f"<p>Estimates made unknown:</p><ul>{est_removed}</ul>" if est_removed else ""}
    {f"<p>Distinctness:</p><ul>{distinct}</ul>" if distinct else ""}
    {f"<p>Statements removed as unsupported by the texts:</p><ul>{unsupported}</ul>" if unsupported else ""}
    {"".join(f"<p class='warn'>{html.escape(w)}</p>" for w in prov.warnings)}
  </details>
</section>"""


CSS = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Noto Sans","PingFang SC","Microsoft YaHei",sans-serif;
 margin:0 auto;max-width:1100px;padding:24px;color:#222}
h1{margin-bottom:0}.muted{color:#777}.tagline{font-style:italic;font-size:1.05em}
.card{background:#fff;border:1px solid #ddd;border-radius:8px;padding:8px 20px 14px;margin:20px 0;
 box-shadow:0 1px 3px rgba(0,0,0,.05)}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(230px,1fr));gap:0 18px}
h4{margin:12px 0 4px}ul{margin:0;padding-left:20px}
blockquote{margin:6px 0;padding:4px 10px;border-left:3px solid #bbb;background:#f7f7f7}
a.src{font-size:.8em;margin-left:6px}.badge{font-size:.75em;background:#eee;border-radius:4px;padding:1px 5px}
table.demo th{text-align:left;padding-right:12px;font-weight:600}table.demo td{padding:2px 10px 2px 0}
.legend{display:flex;flex-wrap:wrap;gap:4px 14px;font-size:.85em}.key i{display:inline-block;width:10px;height:10px;
 border-radius:50%;margin-right:5px}.warn{color:#a40}
.evidence dt{font-weight:600;margin-top:8px}.evidence dd{margin:2px 0 0 0;white-space:pre-wrap}
"""


def _evidence_section(run: RunDir, personas: Sequence[Persona]) -> str:
    wanted: list[str] = []
    for p in personas:
        wanted += [q.text_id for q in p.quotes]
        for n in ("age_group", "gender", "location", "occupation"):
            wanted += getattr(p.demographics, n).text_ids
    wanted = list(dict.fromkeys(wanted))
    if not wanted:
        return ""
    by_id: dict[str, Any] = {}
    if run.has(TEXTS):
        frame = run.load_texts(["text_id", "user_id", "text", "segment_id"])
        frame = frame[frame["text_id"].isin(set(wanted))]
        by_id = {str(r.text_id): r for r in frame.itertuples(index=False)}
    items = []
    for text_id in wanted:
        row = by_id.get(text_id)
        if row is None:
            continue
        items.append(
            f'<dt id="{_anchor(text_id)}">{html.escape(text_id)} <span class="muted">user '
            f"{html.escape(str(row.user_id))} · segment {int(row.segment_id)}</span></dt>"
            f"<dd>{html.escape(str(row.text))}</dd>"
        )
    return f"<h2>Evidence: source texts</h2><dl class='evidence'>{''.join(items)}</dl>"


def html_report(run: RunDir, personas: Sequence[Persona]) -> str:
    """report.html: a self-contained page with the user map, segment sizes and persona cards."""
    names = {p.segment_id: f"{p.segment_id}: {p.name}" for p in personas}
    rows: list[tuple[int, str, int, float]] = []
    run_id = personas[0].run_id if personas else ""
    if run.has(SEGMENTS):
        segment_set = run.load_segments()
        run_id = run_id or segment_set.run_id
        for seg in segment_set.segments:
            sid = seg.segment_id
            names.setdefault(sid, f"{sid}: (no persona)")
            rows.append((sid, names[sid], seg.size, seg.share))
    else:
        rows = [(p.segment_id, names[p.segment_id], p.user_count, p.share) for p in personas]
    rows.sort(key=lambda r: -r[2])
    models = sorted({f"{p.provenance.backend}:{p.provenance.model}" for p in personas})
    made = datetime.now(UTC).isoformat(timespec="seconds")
    cards = "".join(persona_card(p) for p in personas)
    toc = "".join(f'<li><a href="#persona-{p.segment_id}">{html.escape(p.name)}</a></li>' for p in personas)
    doc = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>Personas · {html.escape(run_id)}</title><style>{CSS}</style></head>
<body>
<h1>Personas</h1>
<p class="muted">run {html.escape(run_id)} · {len(personas)} personas · {html.escape(", ".join(models))} · {made}</p>
<ul>{toc}</ul>
<h2>Users by segment</h2>{user_map_svg(run, names)}
<h2>Segment sizes</h2>{sizes_svg(rows)}
<h2>Personas</h2>
<p class="muted">Every quote was checked to appear word for word in the linked text of its segment.
Demographics are estimates with their evidence; "unknown" means the data does not say.</p>
{cards}
{refresh_section(diff) if (diff := run.load_refresh_diff()) is not None else ""}
{_evidence_section(run, personas)}
</body></html>
"""
    return doc
