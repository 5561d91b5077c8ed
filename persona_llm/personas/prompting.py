"""Render the persona prompt of a segment from the versioned Jinja2 templates in `prompts/`.

The texts put in the prompt are the segment's representatives (central and diverse, chosen by the
segment pipeline) followed by one text per not-yet-heard user, in a seeded shuffle, so the model sees
the spread of the segment and not only its centre. They are cut to a token budget measured with the
served model's own tokenizer (llama.cpp's and vLLM's /tokenize) through `count_tokens`; backends with
no tokenizer endpoint fall back to a deliberate over-estimate (UTF-8 bytes / 3), see `ChatModel`.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import jinja2
import jinja2.meta
import pandas as pd
from pydantic import BaseModel

from persona_llm.agents.definitions import AgentSpec, load_agent
from persona_llm.errors import ConfigError
from persona_llm.personas.quoting import QuoteMode, QuoteUnit, mark_units, number_units
from persona_llm.resource_paths import RESOURCE_ENV, resource_root
from persona_llm.schema.personas import draft_json_schema
from persona_llm.schema.segments import CategoricalSummary, NumericSummary, Segment

#: "estimates": the reply writes the four demographic estimates (DraftCore); "hints": it lists only what the
#: texts say (HintsDraftCore) and the pipeline builds the estimates.
DemographicsMode = Literal["estimates", "hints"]

DEFAULT_PROMPT_VERSION = "persona/v4"
PROMPTS_ENV = RESOURCE_ENV["prompts"]

LANGUAGE_NAMES = {
    "en": "English",
    "zh": "Simplified Chinese (简体中文)",
    "de": "German",
    "fr": "French",
    "es": "Spanish",
    "it": "Italian",
    "pt": "Portuguese",
    "nl": "Dutch",
    "ja": "Japanese",
    "ko": "Korean",
    "ru": "Russian",
}

TokenCounter = Callable[[str], int]
Message = dict[str, str]


def prompts_root() -> Path:
    """$PERSONA_LLM_PROMPTS, else the package's resources/prompts, else the repository's prompts/."""
    return resource_root("prompts")


@dataclass(frozen=True)
class PromptTemplates:
    """A versioned pair of templates; `sha256` covers every file of the version and goes into provenance.
    `system_variables`: the variables system.j2 reads (an agent's prompt must read `role`)."""

    version: str
    system: jinja2.Template
    user: jinja2.Template
    sha256: str
    system_variables: frozenset[str] = frozenset()

    @classmethod
    def load(cls, version: str = DEFAULT_PROMPT_VERSION, root: Path | None = None) -> PromptTemplates:
        folder = (root or prompts_root()) / version
        if not (folder / "system.j2").is_file() or not (folder / "user.j2").is_file():
            raise ConfigError(f"{folder}: prompt version {version!r} needs system.j2 and user.j2")
        env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(str(folder)),
            undefined=jinja2.StrictUndefined,  # a missing variable is a bug, not an empty string
            keep_trailing_newline=False,
            autoescape=False,  # plain-text prompts, not HTML
        )
        # Every file of the version, in name order: a template it includes is part of the prompt too
        # (a folder of system.j2 and user.j2 hashes as those two always have).
        digest = hashlib.sha256()
        for path in sorted(p for p in folder.iterdir() if p.is_file()):
            digest.update(path.read_bytes())
        source = (folder / "system.j2").read_text(encoding="utf-8")
        variables = frozenset(jinja2.meta.find_undeclared_variables(env.parse(source)))
        return cls(
            version, env.get_template("system.j2"), env.get_template("user.j2"), digest.hexdigest(), variables
        )


@dataclass(frozen=True)
class AgentPrompt:
    """An agent definition (agents/<name>.toml) made into what a writer sends, so that every field of it
    is used at run time: `role` opens the system message (system.j2 must read `{{ role }}`), `prompt`
    chooses the templates, `output_schema` is the response model (it must be `expects` or a subclass),
    and `tools` must be among those the caller offers."""

    spec: AgentSpec
    templates: PromptTemplates
    output_model: type[BaseModel]

    @property
    def role(self) -> str:
        return self.spec.role.strip()

    @classmethod
    def load(
        cls,
        agent: str | Path,
        *,
        expects: type[BaseModel],
        prompt_version: str | None = None,
        tools: frozenset[str] = frozenset(),
    ) -> AgentPrompt:
        """`agent`: a name in the agents folder or a .toml path. `prompt_version` overrides the agent's
        prompt (older versions that predate roles, e.g. persona/v1, then carry their own first line)."""
        spec = load_agent(agent, available_tools=set(tools))
        model = spec.output_model()
        if not issubclass(model, expects):
            raise ConfigError(
                f"agent {spec.name!r}: output_schema {spec.output_schema!r} must be {expects.__name__} or a subclass of it"
            )
        templates = PromptTemplates.load(prompt_version or spec.prompt)
        if prompt_version is None and "role" not in templates.system_variables:
            raise ConfigError(
                f"agent {spec.name!r}: prompts/{spec.prompt}/system.j2 never reads {{{{ role }}}}, so the agent's "
                "role would not be sent"
            )
        return cls(spec, templates, model)


def output_language(segment: Segment, language: str) -> tuple[str, str]:
    """(code, name) to write in: `language` itself, or for "auto" the segment's majority language."""
    if language == "auto":
        known = {k: v for k, v in segment.languages.items() if k in LANGUAGE_NAMES}
        code = max(known, key=lambda k: known[k]) if known else "en"
    else:
        code = language
    if code not in LANGUAGE_NAMES:
        raise ConfigError(f"unsupported output language {language!r}; use auto or one of {', '.join(LANGUAGE_NAMES)}")
    return code, LANGUAGE_NAMES[code]


def attribute_lines(segment: Segment, max_values: int = 4) -> list[str]:
    lines = []
    for name, summary in segment.attributes.items():
        if isinstance(summary, NumericSummary):
            lines.append(
                f"{name}: mean {summary.mean:.1f}, median {summary.median:.1f} "
                f"(all customers: mean {summary.overall_mean:.1f}; {summary.count} known)"
            )
        elif isinstance(summary, CategoricalSummary):
            shares = ", ".join(
                f"{c.value} {c.share * 100:.0f}% (all {c.overall_share * 100:.0f}%)" for c in summary.top[:max_values]
            )
            lines.append(f"{name}: {shares}; {summary.count} known")
    return lines


@dataclass
class PromptText:
    text_id: str
    user_id: str
    text: str
    truncated: bool = False
    #: The short id the model sees ("t1", "t2", ...): real ids are long and structured
    #: ("train/rec.autos/101551") and small models garble them when citing; the writer maps them back.
    ref: str = ""


def truncate_to_tokens(text: str, max_tokens: int, count_tokens: TokenCounter) -> tuple[str, bool]:
    """Cut `text` to at most `max_tokens` tokens (at a word boundary where there are spaces)."""
    n = count_tokens(text)
    if n <= max_tokens:
        return text, False
    cut = text
    for _ in range(4):  # proportional cuts converge in one or two steps
        chars = max(1, int(len(cut) * max_tokens / max(n, 1) * 0.95))
        cut = cut[:chars]
        space = cut.rfind(" ")
        if space > chars * 0.7:
            cut = cut[:space]
        n = count_tokens(cut)
        if n <= max_tokens:
            break
    return cut.rstrip() + " …", True


def select_texts(
    segment: Segment,
    segment_texts: pd.DataFrame,
    count_tokens: TokenCounter,
    *,
    budget_tokens: int,
    max_text_tokens: int = 160,
    max_texts: int = 24,
    min_chars: int = 12,
    seed: int = 0,
) -> list[PromptText]:
    """Representatives first, then one text per unheard user (seeded shuffle), within the budget."""
    by_id = {str(r.text_id): r for r in segment_texts.itertuples(index=False)}
    order: list[str] = [r.text_id for r in segment.representatives if r.text_id in by_id]
    heard_users = {str(by_id[t].user_id) for t in order}
    rest = [t for t in by_id if t not in set(order)]
    random.Random(seed * 7919 + segment.segment_id).shuffle(rest)
    # One text per new user first, then the remaining texts, to spread across the segment.
    first_per_user: list[str] = []
    later: list[str] = []
    for text_id in rest:
        user = str(by_id[text_id].user_id)
        if user in heard_users:
            later.append(text_id)
        else:
            heard_users.add(user)
            first_per_user.append(text_id)
    chosen: list[PromptText] = []
    seen_texts: set[str] = set()
    used = 0
    for text_id in order + first_per_user + later:
        if len(chosen) >= max_texts or budget_tokens - used < 16:
            break
        row = by_id[text_id]
        raw = " ".join(str(row.text).split())
        if len(raw) < min_chars or raw.lower() in seen_texts:
            continue
        text, truncated = truncate_to_tokens(raw, max_text_tokens, count_tokens)
        ref = f"t{len(chosen) + 1}"
        cost = count_tokens(f"[{ref}] {text}") + 1
        if used + cost > budget_tokens:
            continue  # a shorter text further on may still fit
        seen_texts.add(raw.lower())
        chosen.append(PromptText(text_id, str(row.user_id), text, truncated, ref=ref))
        used += cost
    return chosen


@dataclass
class RenderedPrompt:
    messages: list[Message]
    prompt_version: str
    template_sha256: str
    inputs_sha256: str
    texts: list[PromptText]
    language_code: str
    language_name: str
    fixed_tokens: int = 0
    text_tokens: int = 0
    quote_mode: QuoteMode = "verbatim"
    #: In reference mode, the numbered sentences the schema lets the model choose from.
    units: list[QuoteUnit] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def text_id_for(self, ref: str) -> str:
        """The real text id behind a short id the model cited ("t3", "[t3]", "T3", a sentence id "t3.2");
        anything else as given."""
        key = ref.strip().strip("[]").strip()
        by_ref = {t.ref.lower(): t.text_id for t in self.texts if t.ref}
        if key.lower() not in by_ref and "." in key:
            head = key.split(".", 1)[0]
            if head.lower() in by_ref:
                return by_ref[head.lower()]
        return by_ref.get(key.lower(), key)

    def unit(self, ref: str) -> QuoteUnit | None:
        return next((u for u in self.units if u.ref == ref), None)

    def ref_for(self, text_id: str) -> str:
        """The short id shown to the model for a real text id (the id itself if it was not shown)."""
        return next((t.ref for t in self.texts if t.text_id == text_id and t.ref), text_id)


def render_messages(
    templates: PromptTemplates,
    segment: Segment,
    *,
    n_segments: int,
    texts: Sequence[PromptText],
    language_name: str,
    different_from: Sequence[dict[str, Any]] = (),
    schema_in_prompt: bool = False,
    quote_mode: QuoteMode = "verbatim",
    units: Sequence[QuoteUnit] = (),
    role: str | None = None,
    response_schema: dict[str, Any] | None = None,
    demographics_mode: DemographicsMode = "estimates",
) -> list[Message]:
    """`role`: the agent's role, for templates that read `{{ role }}` (left out when None, so such a
    template fails to render rather than send a prompt without it). `response_schema`: shown in the
    prompt when `schema_in_prompt` (default: PersonaDraft's). `demographics_mode` "hints": the reply lists
    only what the texts say about who the customers are (HintsDraftCore), for templates that read it."""
    system = templates.system.render(
        output_language=language_name,
        schema_json=json.dumps(response_schema or draft_json_schema(), ensure_ascii=False) if schema_in_prompt else "",
        quote_mode=quote_mode,
        demographics_mode=demographics_mode,
        **({"role": role} if role is not None else {}),
    )
    by_text: dict[str, list[QuoteUnit]] = {}
    for u in units:
        by_text.setdefault(u.text_id, []).append(u)
    languages = ", ".join(f"{k} {v * 100:.0f}%" for k, v in sorted(segment.languages.items(), key=lambda kv: -kv[1]))
    user = templates.user.render(
        segment=segment,
        n_segments=n_segments,
        languages=languages,
        keywords=", ".join(k.term for k in segment.keywords[:15]),
        attribute_lines=attribute_lines(segment),
        different_from=list(different_from),
        texts=[
            {"id": t.ref or t.text_id, "text": mark_units(t.text, by_text.get(t.text_id, [])) if units else t.text}
            for t in texts
        ],
        output_language=language_name,
        quote_mode=quote_mode,
    )
    return [{"role": "system", "content": system.strip()}, {"role": "user", "content": user.strip()}]


def build_prompt(
    templates: PromptTemplates,
    segment: Segment,
    segment_texts: pd.DataFrame,
    count_tokens: TokenCounter,
    *,
    n_segments: int,
    language: str = "auto",
    max_context: int = 4096,
    completion_tokens: int = 1500,
    text_token_budget: int = 1500,
    max_text_tokens: int = 160,
    max_texts: int = 24,
    different_from: Sequence[dict[str, Any]] = (),
    schema_in_prompt: bool = False,
    quote_mode: QuoteMode = "verbatim",
    seed: int = 0,
    role: str | None = None,
    response_schema: dict[str, Any] | None = None,
    demographics_mode: DemographicsMode = "estimates",
) -> RenderedPrompt:
    """Render the prompt with as many texts as fit: the context minus the reply and the fixed part.

    quote_mode "reference": texts are shown with their quotable sentences numbered ("[t3.2] ..."), for a
    response schema whose quote field is an enum of those ids (`quoting.reference_draft_model`)."""
    code, name = output_language(segment, language)
    kwargs: dict[str, Any] = {
        "n_segments": n_segments,
        "language_name": name,
        "different_from": different_from,
        "schema_in_prompt": schema_in_prompt,
        "quote_mode": quote_mode,
        "role": role,
        "response_schema": response_schema,
        "demographics_mode": demographics_mode,
    }
    empty = render_messages(templates, segment, texts=[], **kwargs)
    # Chat-template tokens (role markers) are a few per message; 64 covers them with room to spare.
    fixed = sum(count_tokens(m["content"]) for m in empty) + 64
    room = max_context - completion_tokens - fixed
    budget = min(text_token_budget, room)
    if quote_mode == "reference":
        budget = int(budget * 0.85)  # room for the "[t3.2] " sentence markers added after selection
    if room < 100:
        raise ConfigError(
            f"the model's context ({max_context} tokens) leaves no room for texts after the instructions "
            f"({fixed}) and the reply ({completion_tokens}); use a larger context or fewer max tokens"
        )
    texts = select_texts(
        segment,
        segment_texts,
        count_tokens,
        budget_tokens=budget,
        max_text_tokens=max_text_tokens,
        max_texts=max_texts,
        seed=seed,
    )
    units = number_units(texts) if quote_mode == "reference" else []
    messages = render_messages(templates, segment, texts=texts, units=units, **kwargs)
    inputs_sha = hashlib.sha256(json.dumps(messages, ensure_ascii=False, sort_keys=True).encode("utf-8")).hexdigest()
    return RenderedPrompt(
        messages=messages,
        prompt_version=templates.version,
        template_sha256=templates.sha256,
        inputs_sha256=inputs_sha,
        texts=texts,
        language_code=code,
        language_name=name,
        fixed_tokens=fixed,
        text_tokens=sum(count_tokens(f"[{t.ref or t.text_id}] {t.text}") + 1 for t in texts),
        quote_mode=quote_mode,
        units=units,
    )
