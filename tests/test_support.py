"""Narrative support: every statement of a persona is checked against its segment's texts.

The case behind it: a segment about a phone call and packing was named "Tech Enthusiast" with interests
"Technology, Programming" and a two-word summary, while its quotes were verbatim. Each test below is a
way the old writer let that through (it checked quotes only, took confidence from the model, and
accepted any non-empty summary).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from persona_llm.personas.support import (
    SupportIndex,
    draft_statements,
    evidence_confidence,
    min_similarity_for,
)
from persona_llm.schema.personas import PersonaDraft, StatementCheck, summary_length_problem, voice_problem
from persona_llm.schema.sentences import split_sentences
from tests.fake_openai import FakeOpenAIServer
from tests.test_persona_gates import chat_for, draft_for, make_run_dir, segment_of, writer

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"

# Three segments of texts written for this test, and statements for each.
TEXTS = {
    0: [
        "My grinder finally makes a fine espresso, the crema is thick and the beans smell great.",
        "I tried a light roast for pour-over and the coffee tastes fruity and bright.",
        "The espresso machine leaks water from the group head after two months.",
        "Fresh beans arrive every two weeks with the coffee subscription, but shipping is slow.",
        "Descaling the coffee machine is a pain, the manual does not explain it.",
        "I buy whole beans and grind them right before brewing my morning coffee.",
    ],
    1: [
        "These running shoes have great cushioning for long marathon training runs.",
        "My knee stopped hurting after I switched to shoes with more support.",
        "I run every morning before work, rain or shine, about ten kilometres.",
        "The sole of my trail shoes wore out after only 300 km of running.",
        "Our running club meets on Sundays for a long slow run in the park.",
        "I need light shoes for race day, my personal best is the goal this year.",
    ],
    2: [
        "Work was long today, I went home early and made dinner with my sister.",
        "Called my mom on the phone for an hour and then packed boxes for the move.",
        "Today I went to the store, bought groceries and cleaned the kitchen.",
        "Good day at work, then a walk in the park and a quiet evening.",
        "Spent the weekend packing, the moving truck comes on Monday morning.",
        "Tired after work, I watched a movie and went to bed early.",
    ],
}
TRUE = {
    0: ["interested in espresso and coffee beans", "wants a coffee machine that does not leak"],
    1: ["trains for marathons and races", "needs running shoes that protect their knees"],
    2: ["busy with moving house and packing", "talks about daily life at work and home"],
}
NOWHERE = ["interested in technology, programming and coding", "wants to build a personal brand in the tech industry"]


@pytest.fixture(scope="module")
def minilm() -> Any:
    from persona_llm.segment.embed import get_embedder

    return get_embedder("minilm")


def _index(embedder: Any) -> tuple[SupportIndex, list[str]]:
    texts = [t for sid in sorted(TEXTS) for t in TEXTS[sid]]
    seg = np.array([sid for sid in sorted(TEXTS) for _ in TEXTS[sid]])
    vectors = np.asarray(embedder.encode(texts), dtype=np.float32)
    sims = vectors @ vectors.T
    chance = float(sims[np.triu_indices(len(sims), 1)].mean())
    ids = np.array([f"t{i}" for i in range(len(texts))])
    return SupportIndex(vectors, seg, ids, chance=chance, min_similarity=min_similarity_for("all-MiniLM-L6-v2")), texts


def _check(index: SupportIndex, embedder: Any, segment_id: int, statements: list[str]) -> list[StatementCheck]:
    pairs = [("interests", s) for s in statements]
    return index.check(segment_id, pairs, np.asarray(embedder.encode(statements), dtype=np.float32))


def test_true_statements_pass_and_planted_ones_fail(minilm: Any) -> None:
    index, _ = _index(minilm)
    for sid, statements in TRUE.items():
        assert all(c.supported for c in _check(index, minilm, sid, statements)), sid
        # Another segment's statements, planted: they fit that segment better, so not this one's.
        planted = [s for other, ss in TRUE.items() if other != sid for s in ss]
        caught = [not c.supported for c in _check(index, minilm, sid, planted)]
        assert all(caught), (sid, caught)


def test_a_claim_that_fits_no_segment_fails_even_where_it_fits_best(minilm: Any) -> None:
    # "Share of best" alone would pass these in whichever segment they happen to sit closest to.
    index, _ = _index(minilm)
    for sid in TEXTS:
        assert not any(c.supported for c in _check(index, minilm, sid, NOWHERE))


def test_the_daily_life_segment_is_not_a_tech_enthusiast(minilm: Any) -> None:
    index, _ = _index(minilm)
    draft = PersonaDraft.model_validate(
        {**draft_for(0), "name": "Tech Enthusiast", "tagline": "Lives for new gadgets and code",
         "interests": ["Technology", "Programming", "Coding"],
         "goals": ["Build a personal brand in the tech industry"], "pain_points": ["slow laptops"]}
    )  # fmt: skip
    statements = [(f, s) for f, s in draft_statements(draft) if f in ("name", "tagline", "interests", "goals")]
    vectors = np.asarray(minilm.encode([s for _, s in statements]), dtype=np.float32)
    checks = index.check(2, statements, vectors)
    assert not any(c.supported for c in checks), [(c.text, c.similarity) for c in checks]


@pytest.mark.skipif(not (SHARED / "20newsgroups" / "posts.csv.gz").is_file(), reason="shared data not present")
def test_calibration_holds_on_20_newsgroups(minilm: Any) -> None:
    """A small version of the calibration the thresholds come from (module docstring): 6 groups of
    different hierarchies, 15 posts each; each group's own statements pass, others' are caught."""
    statements = {
        "rec.sport.hockey": ["follows NHL hockey playoffs", "interested in ice hockey teams"],
        "sci.space": ["follows NASA space missions", "interested in space exploration"],
        "talk.politics.guns": ["defends the right to own firearms", "interested in gun control laws"],
        "comp.graphics": ["works with 3D rendering and image file formats", "interested in computer graphics"],
        "sci.med": ["asks about medical treatments and doctors", "interested in health and medicine"],
        "rec.autos": ["cares about cars, engines and car dealers", "interested in automobiles"],
    }
    posts = pd.read_csv(SHARED / "20newsgroups" / "posts.csv.gz")
    posts = posts[posts["newsgroup"].isin(list(statements)) & (posts["body"].astype(str).str.len() > 200)]
    sample = pd.concat([g.sample(15, random_state=7) for _, g in posts.groupby("newsgroup")])
    groups = sorted(statements)
    vectors = np.asarray(minilm.encode([str(b)[:800] for b in sample["body"]]), dtype=np.float32)
    seg = np.array([groups.index(g) for g in sample["newsgroup"]])
    sims = vectors @ vectors.T
    index = SupportIndex(vectors, seg, np.arange(len(seg)), chance=float(sims[np.triu_indices(len(sims), 1)].mean()),
                         min_similarity=min_similarity_for("all-MiniLM-L6-v2"))  # fmt: skip
    true_pass, planted_pass, n_true, n_planted = 0, 0, 0, 0
    for sid, group in enumerate(groups):
        for other, texts in statements.items():
            checks = _check(index, minilm, sid, texts)
            if other == group:
                true_pass += sum(c.supported for c in checks)
                n_true += len(checks)
            else:
                planted_pass += sum(c.supported for c in checks)
                n_planted += len(checks)
    assert true_pass / n_true >= 0.85, (true_pass, n_true)
    assert planted_pass / n_planted <= 0.05, (planted_pass, n_planted)


# -- confidence from evidence ---------------------------------------------------------------------


def _checks(supported: list[bool], name_ok: bool = True) -> list[StatementCheck]:
    out = [StatementCheck(field="name", text="n", supported=name_ok, similarity=0.3, best_segment_similarity=0.3)]
    out += [StatementCheck(field="interests", text=f"s{i}", supported=s, similarity=0.3, best_segment_similarity=0.3)
            for i, s in enumerate(supported)]  # fmt: skip
    return out


def test_confidence_comes_from_evidence_not_the_model() -> None:
    high, _ = evidence_confidence(_checks([True] * 9), quotes_kept=3, quotes_proposed=4, min_quotes=3, cohesion_ratio=1.0)
    assert high == "high"
    # Each weakness on its own takes "high" away.
    assert evidence_confidence(_checks([True] * 9), quotes_kept=2, quotes_proposed=4, min_quotes=3, cohesion_ratio=1.0)[0] == "medium"
    assert evidence_confidence(_checks([True] * 9), quotes_kept=3, quotes_proposed=10, min_quotes=3, cohesion_ratio=1.0)[0] == "medium"
    assert evidence_confidence(_checks([True] * 9), quotes_kept=3, quotes_proposed=3, min_quotes=3, cohesion_ratio=0.6)[0] == "medium"
    # Mostly unsupported, or no verified quote, or a name the texts do not bear, or never checked: low.
    named_wrong, basis = evidence_confidence(_checks([True] * 9, name_ok=False), quotes_kept=3, quotes_proposed=3, min_quotes=3, cohesion_ratio=1.0)
    assert named_wrong == "low" and "name not supported" in basis
    # A brief has no name: its confidence does not wait for one.
    assert evidence_confidence(_checks([True] * 9)[1:], quotes_kept=3, quotes_proposed=3, min_quotes=3, cohesion_ratio=1.0, named=False)[0] == "high"
    low, basis = evidence_confidence(_checks([True, False, False, False]), quotes_kept=5, quotes_proposed=5, min_quotes=3, cohesion_ratio=1.0)
    assert low == "low" and "2/5 statements supported" in basis
    assert evidence_confidence(_checks([True] * 9), quotes_kept=0, quotes_proposed=9, min_quotes=3, cohesion_ratio=1.0)[0] == "low"
    assert evidence_confidence([], quotes_kept=5, quotes_proposed=5, min_quotes=3, cohesion_ratio=1.0)[0] == "low"


# -- summary length -------------------------------------------------------------------------------


def test_a_summary_must_be_the_narrative_asked_for() -> None:
    assert summary_length_problem("Tech Enthusiast")
    assert summary_length_problem("一个喜欢买奶粉的妈妈。")
    assert summary_length_problem(" ".join(["word"] * 40))  # one run-on sentence
    ok = ("They brew espresso at home every morning and care about fresh beans. They compare grinders for "
          "weeks before they buy. Slow shipping and stale beans annoy them most.")  # fmt: skip
    assert summary_length_problem(ok) == ""
    zh = "她们是新手妈妈，最关心奶粉是不是正品，希望看到溯源信息。她们会在双十一囤纸尿裤，价格便宜就会回购。物流太慢会让她们很焦虑，担心宝宝断粮。"
    assert summary_length_problem(zh) == ""
    with pytest.raises(ValueError, match="summary"):
        PersonaDraft.model_validate({**draft_for(0), "summary": "Tech Enthusiast"})
    assert split_sentences(ok)[1].startswith("They compare")


def test_a_persona_written_as_an_advertisement_is_refused() -> None:
    # the README's main job wrote "Electronics Repairers" as "Our team of experienced technicians
    # specializes in...": a business describing itself, not its customers
    advert = ("Our team of experienced technicians specializes in repairing phones and laptops. We fix "
              "cracked screens in under an hour. Customers trust us with their most important devices.")  # fmt: skip
    assert "'Our'" in voice_problem(advert, "summary")
    assert voice_problem("Discover the joy of driving with us", "tagline")
    third = ("They repair their own phones and laptops and trade tips on cheap parts. Many of them live in "
             "the US and order screens from abroad. Slow shipping annoys them most.")  # fmt: skip
    assert voice_problem(third, "summary") == "" and voice_problem("Fixers who would rather not pay a shop", "tagline") == ""
    with pytest.raises(ValueError, match="third person"):
        PersonaDraft.model_validate({**draft_for(0), "summary": advert})
    with pytest.raises(ValueError, match="tagline"):
        PersonaDraft.model_validate({**draft_for(0), "tagline": "Protecting our rights"})


# -- the writer -----------------------------------------------------------------------------------


def _with_text_embeddings(run_dir: Path, embedder: Any) -> None:
    texts = pd.read_parquet(run_dir / "texts.parquet")
    np.save(run_dir / "text_embeddings.npy", np.asarray(embedder.encode(list(texts["text"].astype(str))), dtype=np.float32))


def test_writer_drops_unsupported_items_records_them_and_computes_confidence(tmp_path: Path, minilm: Any) -> None:
    run_dir = make_run_dir(tmp_path / "run")
    _with_text_embeddings(run_dir, minilm)

    def reply(request: dict[str, Any]) -> dict[str, Any]:
        sid = segment_of(request)
        # Mostly true, one invented interest and one invented goal; the model claims "high" confidence.
        extra = {0: (["espresso", "coffee beans", "Programming"], ["brew better espresso at home", "win a chess tournament"]),
                 1: (["marathon running", "running shoes", "Programming"], ["run a marathon without knee pain", "win a chess tournament"])}  # fmt: skip
        interests, goals = extra[sid]
        return {"content": draft_for(sid, interests=interests, goals=goals, confidence="high")}

    with FakeOpenAIServer(default=reply) as server:
        personas = writer(chat_for(server), check_support=True, support_embedder=minilm).write(run_dir, [0, 1])
    for p in personas:
        removed = {(c.field, c.text) for c in p.provenance.statements_removed}
        assert ("interests", "Programming") in removed and ("goals", "win a chess tournament") in removed
        assert "Programming" not in p.interests and "win a chess tournament" not in p.goals
        assert len(p.interests) == 2 and len(p.goals) == 1
        assert p.provenance.support_share is not None and p.provenance.support_share < 1.0
        assert p.provenance.model_confidence == "high"
        assert p.confidence in ("low", "medium", "high") and p.provenance.confidence_basis
        assert p.confidence != "high" or p.provenance.support_share >= 0.8


def test_writer_reasks_a_mostly_invented_persona_and_marks_it_low_if_it_stays(tmp_path: Path, minilm: Any) -> None:
    run_dir = make_run_dir(tmp_path / "run")
    _with_text_embeddings(run_dir, minilm)
    invented = {
        "name": "Tech Enthusiast", "tagline": "Lives for new gadgets and code",
        "summary": ("They love programming and new gadgets. They build a personal brand in the tech industry. "
                    "They follow every smartphone launch and write code on weekends."),
        "interests": ["Technology", "Programming", "Coding"], "goals": ["Build a personal brand in the tech industry"],
        "pain_points": ["slow laptops"], "motivations": ["being first to try new gadgets"],
        "purchase_triggers": ["a new smartphone launch"], "objections": ["software bugs"],
    }  # fmt: skip

    def reply(request: dict[str, Any]) -> dict[str, Any]:
        return {"content": draft_for(segment_of(request), **invented)}

    with FakeOpenAIServer(default=reply) as server:
        personas = writer(chat_for(server), check_support=True, support_embedder=minilm).write(run_dir, [0])
    asks = [r for r in server.requests if "not supported by the texts" in r["messages"][-1]["content"]]
    assert len(asks) == 1  # one support re-ask, then the persona is kept but not presented as a finding
    (p,) = personas
    assert p.confidence == "low"
    assert p.provenance.support_share is not None and p.provenance.support_share < 0.5
    assert p.interests == [] and p.provenance.statements_removed
    # The reader is told: a low-confidence persona is a draft, not a finding, with the evidence.
    markdown = (run_dir / "personas.md").read_text(encoding="utf-8")
    assert "Low confidence" in markdown and "statements supported by the segment's texts" in markdown
    html = (run_dir / "report.html").read_text(encoding="utf-8")
    assert "not a finding" in html and "Statements removed as unsupported" in html and "Programming" in html


#: A persona of segment 0 (espresso, grinders, beans, a bean subscription) whose every statement its
#: texts bear; only the name varies in the tests below.
ESPRESSO_DRAFT = {
    "tagline": "Home brewers who grind fresh beans for their espresso",
    "summary": ("They make espresso at home and care about their grinder and fresh beans. They buy beans on a "
                "subscription and want to pause it when they travel. Stale beans after slow shipping annoy them."),
    "interests": ["espresso", "coffee beans", "coffee grinders"], "goals": ["brew espresso at home that tastes like a cafe"],
    "pain_points": ["stale beans after slow shipping"], "motivations": ["fresh coffee every morning"],
    "purchase_triggers": ["a way to pause the bean subscription"], "objections": ["the bean subscription price going up"],
}  # fmt: skip


@pytest.mark.parametrize("renamed", [True, False], ids=["renamed-on-reask", "name-kept"])
def test_a_name_its_texts_do_not_bear_is_reasked_and_else_marks_the_persona_low(
    tmp_path: Path, minilm: Any, renamed: bool
) -> None:
    # The case: verbatim quotes and true statements, and the name "Tech Enthusiast" over them. The
    # old writer re-asked only mostly-unsupported drafts and called this one "medium".
    run_dir = make_run_dir(tmp_path / "run")
    _with_text_embeddings(run_dir, minilm)

    def reply(request: dict[str, Any]) -> dict[str, Any]:
        reasked = "not supported by the texts" in request["messages"][-1]["content"]
        name = "Home Espresso Brewers" if reasked and renamed else "Tech Enthusiast"
        return {"content": draft_for(segment_of(request), name=name, **ESPRESSO_DRAFT)}

    with FakeOpenAIServer(default=reply) as server:
        (p,) = writer(chat_for(server), check_support=True, support_embedder=minilm).write(run_dir, [0])
    asks = [r["messages"][-1]["content"] for r in server.requests if "not supported by the texts" in r["messages"][-1]["content"]]
    assert len(asks) == 1 and '- name: "Tech Enthusiast"' in asks[0]
    names = {c.text: c.supported for c in p.provenance.statements if c.field == "name"}
    if renamed:
        assert p.name == "Home Espresso Brewers" and names == {"Home Espresso Brewers": True}
        assert p.confidence != "low" and "name supported" in p.provenance.confidence_basis
    else:
        assert p.name == "Tech Enthusiast" and names == {"Tech Enthusiast": False}
        assert p.confidence == "low" and "name not supported" in p.provenance.confidence_basis
    # Everything else held, so the share alone would never have flagged it.
    assert p.provenance.support_share is not None and p.provenance.support_share >= 0.8


def test_writer_without_text_vectors_says_unchecked_and_low(tmp_path: Path) -> None:
    run_dir = make_run_dir(tmp_path / "run")  # no text_embeddings.npy

    def reply(request: dict[str, Any]) -> dict[str, Any]:
        return {"content": draft_for(segment_of(request), confidence="high")}

    with FakeOpenAIServer(default=reply) as server:
        (p,) = writer(chat_for(server), check_support=True).write(run_dir, [0])
    assert p.confidence == "low" and p.provenance.support_share is None
    assert any("not checked" in w for w in p.provenance.warnings)


def test_the_model_is_not_asked_for_a_confidence() -> None:
    assert "confidence" not in PersonaDraft.model_json_schema()["properties"]
    assert PersonaDraft.model_json_schema()["properties"]["summary"]["minLength"] >= 60


def test_a_few_texts_of_a_large_generic_segment_do_not_make_it_a_tech_segment(minilm: Any) -> None:
    """The ci blog run: a 552-text segment about everyday life held three posts about computers, and the
    top-3 score passed "Tech Enthusiast", "Technology", "Gadgets" for it. Scored on its nearest 20% of
    texts, they fail, while what most of its texts say passes."""
    daily = [  # 25 texts of everyday life, written for this test
        "Work was long today, I went home early and made dinner with my sister.",
        "Called my mom for an hour and then packed boxes for the move.",
        "Went to the store, bought groceries and cleaned the kitchen.",
        "Good day at work, then a walk in the park and a quiet evening.",
        "Spent the weekend packing, the moving truck comes on Monday morning.",
        "Tired after work, I watched a movie and went to bed early.",
        "My roommate forgot to pay the electricity bill again.",
        "Had lunch with an old friend from school, we laughed for hours.",
        "The bus was late so I walked to the office in the rain.",
        "Grandma turned eighty today and the whole family came over.",
        "I finally did the laundry after two weeks of putting it off.",
        "My boss asked me to stay late, so dinner was cold pizza.",
        "Took the dog to the vet, she is fine, just a bit overweight.",
        "Sunday brunch with my cousins, then a nap on the couch.",
        "Painted the bedroom blue, it took all afternoon.",
        "Stuck in traffic for an hour on the way home from work.",
        "Baked cookies with my little brother, the kitchen is a mess.",
        "Went to the dentist, no cavities this time.",
        "Our neighbours had a loud party until three in the morning.",
        "Worked from home today and never got out of my pajamas.",
        "Met my friends at the pub after work for a quick drink.",
        "Cleaned out the garage and found my old bike.",
        "My sister is getting married next month and I am the bridesmaid.",
        "Spent the evening on the phone with my dad talking about nothing.",
        "Rainy day, stayed in, read a book and drank too much tea.",
    ]
    tech = ["I spent all night installing Linux on my new laptop and writing Python code.",
            "The new smartphone has a faster processor and I love the apps and gadgets.",
            "Reading tech news about software startups and programming languages again."]  # fmt: skip
    coffee = TEXTS[0]
    texts = daily + tech + coffee
    seg = np.array([0] * (len(daily) + len(tech)) + [1] * len(coffee))
    vectors = np.asarray(minilm.encode(texts), dtype=np.float32)
    sims = vectors @ vectors.T
    index = SupportIndex(vectors, seg, np.arange(len(texts)), chance=float(sims[np.triu_indices(len(sims), 1)].mean()),
                         min_similarity=min_similarity_for("all-MiniLM-L6-v2"))  # fmt: skip
    tech_claims = _check(index, minilm, 0, ["Technology", "Gadgets and apps", "writing code and programming"])
    assert not any(c.supported for c in tech_claims), [(c.text, c.similarity) for c in tech_claims]
    daily_claims = _check(index, minilm, 0, ["spends evenings with family and friends after work",
                                             "writes about everyday chores, work and home"])  # fmt: skip
    assert all(c.supported for c in daily_claims), [(c.text, c.similarity) for c in daily_claims]
