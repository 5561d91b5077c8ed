"""Optional LLM judge: is each persona claim supported by its segment's representative texts?

The judge is anything that answers chat messages: a `persona_llm.llm.ChatModel` (its
`generate_structured` is used, so schema decoding and re-asks apply) or a plain callable
`messages -> reply text` (tests pass a fake). Every verdict keeps the judge's reason.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field, ValidationError

from persona_llm.personas.prompting import AgentPrompt

if TYPE_CHECKING:
    from persona_llm.schema.personas import Persona

Message = dict[str, str]
ChatFn = Callable[[list[Message]], str]
Verdict = Literal["supported", "unsupported", "error"]

#: The agent definition (agents/persona_judge.toml): its role opens the system message, its prompt
#: version chooses the templates, its output_schema is the response model.
JUDGE_AGENT = "persona_judge"


def judge_system_prompt(agent: str | Path = JUDGE_AGENT) -> str:
    """The judge's instructions: the agent's role, then its prompt's rules."""
    prompt = _agent_prompt(agent)
    return prompt.templates.system.render(role=prompt.role).strip()


class ClaimVerdict(BaseModel):
    claim: int = Field(description="the claim's number")
    verdict: Literal["supported", "unsupported"]
    reason: str = Field(default="", max_length=400)


class JudgeResponse(BaseModel):
    verdicts: list[ClaimVerdict]


class JudgeRecord(BaseModel):
    """One judged claim, stored in eval.json."""

    persona_id: str
    claim: str
    verdict: Verdict
    reason: str = ""
    planted: bool = Field(
        default=False, description="a claim taken from another segment's persona, to measure the judge itself"
    )


def planted_claims(persona: Persona, others: Sequence[Persona], *, n: int = 3) -> list[str]:
    """Up to `n` claims of the other persona that shares the fewest keywords with `persona`: claims its
    own segment's texts should not support. A judge that calls them supported is not checking."""
    if not others:
        return []
    own = {k.casefold() for k in persona.keywords}
    other = min(others, key=lambda o: (len(own & {k.casefold() for k in o.keywords}), o.segment_id))
    own_claims = set(persona_claims(persona))
    candidates = [f"interested in {x}" for x in other.interests] + [f"goal: {x}" for x in other.goals]
    candidates += [f"pain point: {x}" for x in other.pain_points]
    return [c for c in candidates if c not in own_claims][:n]


def persona_claims(persona: Persona, *, max_claims: int = 16) -> list[str]:
    """The persona's checkable statements: demographics (not unknown), interests, goals, pain points..."""
    claims: list[str] = []
    for field, est in persona.demographics:
        if est.value != "unknown":
            claims.append(f"{field.replace('_', ' ')}: {est.value}")
    claims.extend(f"interested in {x}" for x in persona.interests)
    claims.extend(f"goal: {x}" for x in persona.goals)
    claims.extend(f"pain point: {x}" for x in persona.pain_points)
    claims.extend(f"motivation: {x}" for x in persona.motivations)
    claims.extend(f"objection: {x}" for x in persona.objections)
    return claims[:max_claims]


def _agent_prompt(agent: str | Path) -> AgentPrompt:
    return AgentPrompt.load(agent, expects=JudgeResponse)


def build_messages(
    claims: Sequence[str], texts: Sequence[str], *, max_chars: int = 500, agent: str | Path = JUDGE_AGENT
) -> list[Message]:
    """The judge prompt: numbered texts, then numbered claims."""
    prompt = _agent_prompt(agent)
    user = prompt.templates.user.render(
        texts=[f"[{i}] {t[:max_chars]}" for i, t in enumerate(texts, 1)],
        claims=[f"{i}. {c}" for i, c in enumerate(claims, 1)],
    )
    return [
        {"role": "system", "content": prompt.templates.system.render(role=prompt.role).strip()},
        {"role": "user", "content": user.strip()},
    ]


def parse_reply(reply: str) -> JudgeResponse:
    """Parse a judge reply (JSON, possibly fenced or with prose around it)."""
    match = re.search(r"\{.*\}", reply, flags=re.S)
    if match is None:
        raise ValueError("no JSON object in the judge's reply")
    return JudgeResponse.model_validate(json.loads(match.group(0)))


class LLMJudge:
    """Scores persona claims as supported / unsupported by the segment's representative texts."""

    def __init__(
        self,
        model: Any,
        *,
        max_texts: int = 8,
        max_chars: int = 500,
        max_claims: int = 16,
        agent: str | Path = JUDGE_AGENT,
    ) -> None:
        self.model = model
        self.max_texts = max_texts
        self.max_chars = max_chars
        self.max_claims = max_claims
        self.agent = agent

    @property
    def model_id(self) -> str:
        return str(
            getattr(self.model, "model_id", getattr(self.model, "__name__", type(self.model).__name__))
        )

    def _ask(self, messages: list[Message]) -> JudgeResponse:
        if hasattr(self.model, "generate_structured"):
            response_model = _agent_prompt(self.agent).output_model
            return self.model.generate_structured(messages, response_model, tag="judge").value  # type: ignore[no-any-return]
        if callable(self.model):
            return parse_reply(str(self.model(messages)))
        raise TypeError("judge model must be a ChatModel or a callable(messages) -> str")

    def judge_persona(self, persona: Persona, texts: Sequence[str], planted: Sequence[str] = ()) -> list[JudgeRecord]:
        """One record per claim; claims the judge skipped or a failed call are recorded as 'error'.

        `planted` claims (another segment's) are mixed in at fixed, spread-out positions, unmarked in the
        prompt, and recorded with planted=True."""
        own = persona_claims(persona, max_claims=self.max_claims)
        if not own:
            return []
        claims = list(own)
        is_planted = [False] * len(claims)
        for k, claim in enumerate(planted):
            at = min(len(claims), (k + 1) * (len(own) // (len(planted) + 1) + 1))
            claims.insert(at, claim)
            is_planted.insert(at, True)
        messages = build_messages(claims, list(texts)[: self.max_texts], max_chars=self.max_chars, agent=self.agent)
        try:
            response = self._ask(messages)
        except (ValueError, ValidationError, json.JSONDecodeError) as exc:
            return [
                JudgeRecord(persona_id=persona.persona_id, claim=c, verdict="error", reason=str(exc)[:200], planted=pl)
                for c, pl in zip(claims, is_planted, strict=True)
            ]
        except Exception as exc:  # noqa: BLE001 - a backend failure must not lose the other metrics
            return [
                JudgeRecord(
                    persona_id=persona.persona_id,
                    claim=c,
                    verdict="error",
                    reason=f"judge failed: {exc}"[:200],
                    planted=pl,
                )
                for c, pl in zip(claims, is_planted, strict=True)
            ]
        by_index = {v.claim: v for v in response.verdicts}
        records = []
        for i, claim in enumerate(claims, 1):
            v = by_index.get(i)
            records.append(
                JudgeRecord(
                    persona_id=persona.persona_id,
                    claim=claim,
                    verdict=v.verdict if v else "error",
                    reason=v.reason if v else "no verdict returned for this claim",
                    planted=is_planted[i - 1],
                )
            )
        return records


def judge_metrics(records: Sequence[JudgeRecord]) -> dict[str, float | None]:
    """Claims sent to the judge, how many got no verdict (errors), the share of the personas' own claims
    found supported, and the share of planted claims (another segment's) it caught as unsupported.

    A claim the judge could not score (failed call, unparsable reply, skipped claim) counts as not
    supported, and a planted one with no verdict as not caught: leaving them out of the denominator
    would let a broken judge read 100% on either. `judge_supported` means something only next to
    `judge_planted_caught`: a judge that says "supported" to everything scores 1.0 on the first and 0.0
    on the second.
    """
    own = [r for r in records if not r.planted]
    planted = [r for r in records if r.planted]
    return {
        "judge_claims": float(len(own)),
        "judge_errors": float(sum(r.verdict == "error" for r in records)),
        "judge_supported": sum(r.verdict == "supported" for r in own) / len(own) if own else None,
        "judge_planted": float(len(planted)),
        "judge_planted_caught": (
            sum(r.verdict == "unsupported" for r in planted) / len(planted) if planted else None
        ),
    }
