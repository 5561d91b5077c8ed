"""A brief as Markdown, self-contained HTML (no script, nothing loaded from the network; the persona
report's styles) or JSON (the model itself: `persona_llm.schema.briefs.parse_brief` reads it back).

Both text forms show where every claim comes from (its text ids), mark every quote as verbatim with its
source id, and end with what the gates removed, so a reader sees what was not kept and why.
"""

from __future__ import annotations

from typing import Literal

import jinja2

from persona_llm.errors import ConfigError
from persona_llm.personas.report import CSS
from persona_llm.schema.briefs import Brief, MessagingMatrix, NarrativeBrief

LOW_CONFIDENCE_NOTE = (
    "Low confidence: the segment's texts support too little of this brief, or of the persona it addresses, "
    "to act on it; read it as a draft, not a finding."
)

Format = Literal["md", "html", "json"]
FORMATS: tuple[str, ...] = ("md", "html", "json")

_MARKDOWN = r"""
{%- macro ids(s) %} [{{ s.text_ids | join(", ") }}]{% endmacro -%}
{%- macro audience(a) -%}
{{ a.persona_name }} (persona `{{ a.persona_id }}`, segment {{ a.segment_id }}): {{ a.user_count }} customers ({{ "%.1f" | format(a.share * 100) }}% of all), {{ a.n_texts }} texts; persona confidence {{ a.persona_confidence }}
{%- endmacro -%}
{%- macro gates(p) -%}
<sub>{{ p.backend }}:{{ p.model }} · agent {{ p.agent }} · prompt {{ p.prompt_version }} · {{ p.attempts }} call(s) · {{ p.prompt_tokens }}+{{ p.completion_tokens }} tokens · {{ "%.0f" | format(p.seconds) }} s · {{ p.generated_at }}</sub>

Evidence: {{ p.confidence_basis }}.
{%- if p.statements_removed %}

Removed by the gates:
{% for r in p.statements_removed %}
- {{ r.field }}: "{{ r.text }}" ({{ r.reason | replace("_", " ") }}{% if r.detail %}: {{ r.detail }}{% endif %})
{%- endfor %}
{%- endif %}
{%- if p.citations_removed %}

Citations removed: {% for c in p.citations_removed %}{{ c.text_id }} ({{ c.reason | replace("_", " ") }}){% if not loop.last %}, {% endif %}{% endfor %}
{%- endif %}
{%- if p.quotes_removed %}

Quotes removed: {% for q in p.quotes_removed %}"{{ q.text[:80] }}" ({{ q.reason | replace("_", " ") }}){% if not loop.last %}, {% endif %}{% endfor %}
{%- endif %}
{%- for w in p.warnings %}

Warning: {{ w }}
{%- endfor %}
{%- endmacro -%}
{%- if b.kind == "messaging" -%}
# Messaging matrix: {{ b.goal }}

{% if b.channel %}Channel: {{ b.channel }} · {% endif %}confidence {{ b.confidence }} · run `{{ b.run_id }}` · `{{ b.brief_id }}`

| persona | users | insight (texts) | message | channel | call to action | proof (verbatim) | confidence |
|---|---|---|---|---|---|---|---|
{% for r in b.rows -%}
| {{ r.audience.persona_name | cell }} | {{ r.audience.user_count }} ({{ "%.1f" | format(r.audience.share * 100) }}%) | {% if r.insight %}{{ r.insight.text | cell }}{{ ids(r.insight) }}{% else %}_none passed the gates_{% endif %} | {{ r.message | cell }} | {{ r.channel | cell }} | {{ r.call_to_action | cell }} | {% if r.proof_point %}"{{ r.proof_point.text | cell }}" `{{ r.proof_point.text_id }}`{% else %}_none_{% endif %} | {{ r.confidence }} |
{% endfor %}
{%- for r in b.rows %}

## {{ r.audience.persona_name }}

{{ gates(r.provenance) }}
{%- endfor %}
{%- else -%}
# {% if b.kind == "narrative" %}{{ b.title }}{% else %}Campaign brief: {{ b.goal }}{% endif %}

Audience: {{ audience(b.audience) }}.

Goal: {{ b.goal }}{% if b.channel %} · channel: {{ b.channel }}{% endif %} · confidence {{ b.confidence }} · run `{{ b.run_id }}` · `{{ b.brief_id }}`
{%- if b.confidence == "low" %}

> **{{ low_note }}**
{%- endif %}
{%- if b.kind == "narrative" %}

## A day in their life

{% for s in b.story %}{{ s.text }}{{ ids(s) }}{% if not loop.last %} {% endif %}{% endfor %}
{%- if not b.story %}_no sentence of the story passed the gates_{% endif %}

## In their words (verbatim)
{% for q in b.quotes %}
> {{ q.text }} — `{{ q.text_id }}`
{% endfor %}
{%- if not b.quotes %}
_no quote passed the grounding gate_
{%- endif %}

## What it means for the goal
{% for t in b.takeaways %}
- {{ t }}
{%- endfor %}
{%- else %}

**Objective:** {{ b.objective }}

## Audience insights
{% for s in b.audience_insights %}
- {{ s.text }}{{ ids(s) }}
{%- endfor %}
{%- if not b.audience_insights %}
_no insight passed the gates_
{%- endif %}

**Key message:** {{ b.key_message }}

## Proof points (verbatim)
{% for q in b.proof_points %}
> {{ q.text }} — `{{ q.text_id }}`
{% endfor %}
{%- if not b.proof_points %}
_no quote passed the grounding gate_
{%- endif %}

## Offers
{% for o in b.offers %}
- {{ o }}
{%- endfor %}

## Channel plan
{% for c in b.channel_plan %}
- **{{ c.channel }}**: {{ c.action }}
{%- endfor %}

**Tone:** {{ b.tone }}

| do | don't |
|---|---|
{% for i in range([b.do | length, b.dont | length] | max) -%}
| {{ (b.do[i] if i < b.do | length else "") | cell }} | {{ (b.dont[i] if i < b.dont | length else "") | cell }} |
{% endfor %}
## Objections
{% for o in b.objections %}
- "{{ o.objection }}": {{ o.answer }}
{%- endfor %}
{%- if not b.objections %}
_none kept_
{%- endif %}

## What to measure
{% for m in b.measure %}
- {{ m }}
{%- endfor %}
{%- endif %}

---

{{ gates(b.provenance) }}
{%- endif %}
"""

_HTML = r"""<!doctype html>
<html lang="{{ b.language }}"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{ title }}</title><style>{{ css | safe }}
table.matrix{border-collapse:collapse;width:100%}table.matrix td,table.matrix th{border:1px solid #ddd;padding:4px 6px;vertical-align:top}
.ids{font-size:.8em;color:#777}</style></head>
<body>
{%- macro ids(s) %} <span class="ids">[{{ s.text_ids | join(", ") }}]</span>{% endmacro -%}
{%- macro gates(p) -%}
<details><summary>Provenance and gates</summary>
<p class="muted">{{ p.backend }}:{{ p.model }} · agent {{ p.agent }} · prompt {{ p.prompt_version }} ({{ p.prompt_sha256[:12] }}) · {{ p.attempts }} call(s) · {{ p.prompt_tokens }}+{{ p.completion_tokens }} tokens · {{ "%.1f" | format(p.seconds) }} s{% if p.from_cache %} · from cache{% endif %} · {{ p.generated_at }}</p>
<p>Evidence: {{ p.confidence_basis }}.</p>
{%- if p.statements_removed %}<p>Removed by the gates:</p><ul>{% for r in p.statements_removed %}<li>{{ r.field }}: {{ r.text }} ({{ r.reason | replace("_", " ") }}{% if r.detail %}: {{ r.detail }}{% endif %})</li>{% endfor %}</ul>{% endif %}
{%- if p.citations_removed %}<p>Citations removed:</p><ul>{% for c in p.citations_removed %}<li>{{ c.text_id }} for “{{ c.statement }}” ({{ c.reason | replace("_", " ") }})</li>{% endfor %}</ul>{% endif %}
{%- if p.quotes_removed %}<p>Quotes removed:</p><ul>{% for q in p.quotes_removed %}<li>{{ q.reason | replace("_", " ") }} (cited {{ q.text_id }}): {{ q.text[:160] }}</li>{% endfor %}</ul>{% endif %}
{%- for w in p.warnings %}<p class="warn">{{ w }}</p>{% endfor %}
</details>
{%- endmacro -%}
{%- macro quotes(qs) -%}
{% for q in qs %}<blockquote>{{ q.text }} <span class="badge">verbatim</span> <span class="ids">{{ q.text_id }}</span></blockquote>{% endfor %}
{%- if not qs %}<p class="muted">No quote passed the grounding gate.</p>{% endif %}
{%- endmacro -%}
<h1>{{ title }}</h1>
<p class="muted">goal: {{ b.goal }}{% if b.channel %} · channel {{ b.channel }}{% endif %} · confidence {{ b.confidence }} · run {{ b.run_id }} · {{ b.brief_id }}</p>
{%- if b.kind == "messaging" %}
<table class="matrix"><thead><tr><th>persona</th><th>users</th><th>insight</th><th>message</th><th>channel</th><th>call to action</th><th>proof (verbatim)</th><th>confidence</th></tr></thead><tbody>
{%- for r in b.rows %}
<tr><td>{{ r.audience.persona_name }}</td><td>{{ r.audience.user_count }} ({{ "%.1f" | format(r.audience.share * 100) }}%)</td>
<td>{% if r.insight %}{{ r.insight.text }}{{ ids(r.insight) }}{% else %}<span class="muted">none passed the gates</span>{% endif %}</td>
<td>{{ r.message }}</td><td>{{ r.channel }}</td><td>{{ r.call_to_action }}</td>
<td>{% if r.proof_point %}“{{ r.proof_point.text }}” <span class="ids">{{ r.proof_point.text_id }}</span>{% endif %}</td><td>{{ r.confidence }}</td></tr>
{%- endfor %}
</tbody></table>
{%- for r in b.rows %}<section class="card"><h3>{{ r.audience.persona_name }}</h3>{{ gates(r.provenance) }}</section>{% endfor %}
{%- else %}
<section class="card">
<p class="muted">Audience: {{ b.audience.persona_name }} (persona {{ b.audience.persona_id }}, segment {{ b.audience.segment_id }}): {{ b.audience.user_count }} customers ({{ "%.1f" | format(b.audience.share * 100) }}% of all), {{ b.audience.n_texts }} texts; persona confidence {{ b.audience.persona_confidence }}</p>
{%- if b.confidence == "low" %}<p class="warn"><b>{{ low_note }}</b></p>{% endif %}
{%- if b.kind == "narrative" %}
<h4>A day in their life</h4>
<p>{% for s in b.story %}{{ s.text }}{{ ids(s) }} {% endfor %}</p>
{%- if not b.story %}<p class="muted">No sentence of the story passed the gates.</p>{% endif %}
<h4>In their words</h4>{{ quotes(b.quotes) }}
<h4>What it means for the goal</h4><ul>{% for t in b.takeaways %}<li>{{ t }}</li>{% endfor %}</ul>
{%- else %}
<p><b>Objective:</b> {{ b.objective }}</p>
<h4>Audience insights</h4><ul>{% for s in b.audience_insights %}<li>{{ s.text }}{{ ids(s) }}</li>{% endfor %}</ul>
{%- if not b.audience_insights %}<p class="muted">No insight passed the gates.</p>{% endif %}
<p><b>Key message:</b> {{ b.key_message }}</p>
<h4>Proof points</h4>{{ quotes(b.proof_points) }}
<div class="grid">
<div><h4>Offers</h4><ul>{% for o in b.offers %}<li>{{ o }}</li>{% endfor %}</ul></div>
<div><h4>Channel plan</h4><ul>{% for c in b.channel_plan %}<li><b>{{ c.channel }}</b>: {{ c.action }}</li>{% endfor %}</ul></div>
<div><h4>Do</h4><ul>{% for d in b.do %}<li>{{ d }}</li>{% endfor %}</ul></div>
<div><h4>Don't</h4><ul>{% for d in b.dont %}<li>{{ d }}</li>{% endfor %}</ul></div>
<div><h4>Objections</h4><ul>{% for o in b.objections %}<li>“{{ o.objection }}”: {{ o.answer }}</li>{% endfor %}</ul></div>
<div><h4>What to measure</h4><ul>{% for m in b.measure %}<li>{{ m }}</li>{% endfor %}</ul></div>
</div>
<p><b>Tone:</b> {{ b.tone }}</p>
{%- endif %}
{{ gates(b.provenance) }}
</section>
{%- endif %}
</body></html>
"""


def _cell(value: object) -> str:
    """A Markdown table cell: no pipe or line break may end the cell early."""
    return " ".join(str(value).split()).replace("|", "\\|")


def _environment(autoescape: bool) -> jinja2.Environment:
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=autoescape, trim_blocks=False)
    env.filters["cell"] = _cell
    return env


_MD_TEMPLATE = _environment(False).from_string(_MARKDOWN)
_HTML_TEMPLATE = _environment(True).from_string(_HTML)


def _title(brief: Brief | NarrativeBrief | MessagingMatrix) -> str:
    if isinstance(brief, MessagingMatrix):
        return f"Messaging matrix: {brief.goal}"
    if isinstance(brief, NarrativeBrief):
        return brief.title
    return f"Campaign brief: {brief.goal}"


def render_brief(brief: Brief | NarrativeBrief | MessagingMatrix, fmt: Format | str = "md") -> str:
    """The brief as Markdown ("md"), a self-contained HTML page ("html") or JSON ("json")."""
    if fmt == "json":
        return brief.model_dump_json(indent=2) + "\n"
    if fmt == "md":
        return _MD_TEMPLATE.render(b=brief, low_note=LOW_CONFIDENCE_NOTE).strip() + "\n"
    if fmt == "html":
        return _HTML_TEMPLATE.render(b=brief, title=_title(brief), css=CSS, low_note=LOW_CONFIDENCE_NOTE)
    raise ConfigError(f"--format must be one of {', '.join(FORMATS)}, not {fmt!r}")
