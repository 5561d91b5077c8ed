"""A persona may not call its members wrongdoers unless they say so of themselves.

The case behind it: the ci suite's talk.politics.guns segment (posts on the Waco siege, the FBI and gun
laws) came back from the 1.5B model as "Gun Criminals", "customers who order firearms to commit crimes",
goal "commit crimes", with 13 of 16 statements passing the similarity test (they are about crime, as
the posts are) and confidence "high". The texts below are written for this test in our own words.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from persona_llm.personas.accusations import MIN_SELF_REPORTS, accusation, self_reports, unsupported_accusation
from persona_llm.personas.support import SupportIndex, evidence_confidence, min_similarity_for
from tests.fake_openai import FakeOpenAIServer
from tests.test_persona_gates import chat_for, draft_for, make_run_dir, segment_of, writer
from tests.test_support import ESPRESSO_DRAFT, _with_text_embeddings

GUN_POSTS = [
    "The FBI raid on the compound was a disaster and the children paid for it.",
    "Criminals do not buy guns at gun shows, they steal them; new federal laws only burden honest owners.",
    "The ATF should answer for how the agents handled the siege in Waco.",
    "Gun control laws will not stop criminals, they ignore laws anyway.",
    "I have owned rifles for twenty years and never hurt anyone.",
    "Crime went down in states that allow concealed carry, read the statistics.",
]
COFFEE = [
    "My grinder finally makes a fine espresso, the crema is thick and the beans smell great.",
    "The espresso machine leaks water from the group head after two months.",
    "Fresh beans arrive every two weeks with the coffee subscription, but shipping is slow.",
    "I buy whole beans and grind them right before brewing my morning coffee.",
]
# What the model wrote for the gun segment (2026-12-01), statement by statement.
GUN_CRIMINALS = [
    ("name", "Gun Criminals"),
    ("tagline", "They order late at night to carry firearms for a crime, and they're not afraid to use them."),
    ("summary", "Gun criminals are customers who order firearms to commit crimes late at night."),
    ("goals", "commit crimes"),
]
# What a true persona of the same segment says: crime and criminals as the topic, not as who they are.
GUN_DEBATERS = [
    ("name", "Gun Rights Debaters"),
    ("summary", "They argue that gun control laws do not stop criminals and burden honest owners."),
    ("summary", "They feel treated like criminals by new federal laws."),
    ("interests", "crime statistics"),
    ("pain_points", "criminals who steal guns"),
    ("goals", "protect their families from criminals"),
]


@pytest.mark.parametrize(("field", "text"), GUN_CRIMINALS + [
    ("summary", "They are a group of thieves who resell what they take."),
    ("summary", "These shoppers break the law to get discounts."),
    ("goals", "break the law without getting caught"),
    ("interests", "committing fraud"),
    ("name", "骗子买家"),
    ("goals", "诈骗他人"),
])  # fmt: skip
def test_wrongdoing_pinned_on_the_members_is_an_accusation(field: str, text: str) -> None:
    assert accusation(field, text) is not None


@pytest.mark.parametrize(("field", "text"), GUN_DEBATERS + [
    ("summary", "They worry about scammers and want safer payments."),
    ("pain_points", "scammers"),
    ("goals", "keep people who steal out of the store"),
    ("goals", "avoid scams"),
    ("name", "Anti-Racists"),
    ("name", "Sports Fanatics"),
    ("name", "Crime Victims"),
    ("summary", "他们担心被诈骗。"),
    ("summary", "他们觉得商家是骗子。"),
    ("summary", "They think the sellers are scammers."),
    ("summary", "They worry that stores steal their data."),
    ("summary", "They are not criminals."),
    ("summary", "Rob and his friends like hiking."),
])  # fmt: skip
def test_wrongdoing_as_a_topic_a_fear_or_a_complaint_is_not(field: str, text: str) -> None:
    assert accusation(field, text) is None


def test_members_who_say_it_of_themselves_may_be_called_so() -> None:
    said = [
        "I'm a recovering addict and the meeting app keeps me on track.",
        "As an addict, I count every day clean.",
        "We are addicts who meet on Tuesdays.",
    ]
    assert self_reports("Addicts", said) == MIN_SELF_REPORTS
    assert unsupported_accusation("name", "Recovering Addicts", said) is None
    # Two are not enough, and words about others never count.
    assert unsupported_accusation("name", "Recovering Addicts", said[:2]) is not None
    about_others = ["Addicts stole my bike.", "The addicts in my street are loud.", "Addicts need help."]
    assert self_reports("addicts", about_others) == 0
    # Another label than the one they use is not licensed: addicts did not say they are thieves.
    assert unsupported_accusation("name", "Thieves", said) is not None
    # The posts above discuss criminals; none says "I am a criminal".
    assert unsupported_accusation("name", "Gun Criminals", GUN_POSTS) is not None


@pytest.fixture(scope="module")
def minilm() -> Any:
    from persona_llm.segment.embed import get_embedder

    return get_embedder("minilm")


def test_similarity_alone_passes_gun_criminals_and_the_accusation_rule_stops_it(minilm: Any) -> None:
    texts = GUN_POSTS + COFFEE
    vectors = np.asarray(minilm.encode(texts), dtype=np.float32)
    sims = vectors @ vectors.T
    index = SupportIndex(
        vectors,
        np.array([0] * len(GUN_POSTS) + [1] * len(COFFEE)),
        np.array([f"t{i}" for i in range(len(texts))]),
        chance=float(sims[np.triu_indices(len(sims), 1)].mean()),
        min_similarity=min_similarity_for("all-MiniLM-L6-v2"),
        texts=np.array(texts),
    )
    statements = GUN_CRIMINALS + GUN_DEBATERS
    checks = index.check(0, statements, np.asarray(minilm.encode([s for _, s in statements]), dtype=np.float32))
    by_text = {c.text: c for c in checks}
    for _field, text in GUN_CRIMINALS:
        c = by_text[text]
        # The old test (similarity only) passed it: it is about crime, as the posts are.
        assert c.similarity >= index.min_similarity and c.similarity >= index.min_share_of_best * c.best_segment_similarity, c
        assert not c.supported and c.reason.startswith("calls its members"), c
    for _field, text in GUN_DEBATERS:
        assert by_text[text].reason == "", by_text[text]
    # The name fails, so the persona is a draft, not a finding, however the rest scores.
    crim = [by_text[t] for _, t in GUN_CRIMINALS]
    assert evidence_confidence(crim, quotes_kept=5, quotes_proposed=5, min_quotes=3, cohesion_ratio=1.0)[0] == "low"


@pytest.mark.parametrize("reworded", [True, False], ids=["reworded-on-reask", "accusation-kept"])
def test_a_persona_that_accuses_its_members_is_reasked_and_else_marked_low(
    tmp_path: Path, minilm: Any, reworded: bool
) -> None:
    # Name and most statements supported: before this rule the writer neither re-asked nor lowered it.
    run_dir = make_run_dir(tmp_path / "run")
    _with_text_embeddings(run_dir, minilm)
    accusing = "They are thieves who order beans to steal from the roaster."
    plain = "They grind fresh beans for espresso at home every morning before work."

    def reply(request: dict[str, Any]) -> dict[str, Any]:
        reasked = "not supported by the texts" in request["messages"][-1]["content"]
        summary = ESPRESSO_DRAFT["summary"] + " " + (plain if reasked and reworded else accusing)
        return {"content": draft_for(segment_of(request), name="Home Espresso Brewers", **{**ESPRESSO_DRAFT, "summary": summary})}

    with FakeOpenAIServer(default=reply) as server:
        (p,) = writer(chat_for(server), check_support=True, support_embedder=minilm).write(run_dir, [0])
    asks = [r["messages"][-1]["content"] for r in server.requests if "not supported by the texts" in r["messages"][-1]["content"]]
    assert len(asks) == 1 and 'calls its members "thieves"' in asks[0], asks
    if reworded:
        assert accusing not in p.summary and p.confidence != "low", p.provenance.confidence_basis
    else:
        assert accusing in p.summary and p.confidence == "low"
        assert "1 accusation(s) no member makes of themselves" in p.provenance.confidence_basis
