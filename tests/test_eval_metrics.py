"""Known-answer cases for every evaluation metric (hand-made: the right answer is known in advance)."""

from __future__ import annotations

import json
import sys
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from persona_llm.errors import ConfigError
from persona_llm.evaluation import claims as C
from persona_llm.evaluation import metrics as M
from persona_llm.evaluation.judge import JudgeRecord, JudgeResponse, LLMJudge, judge_metrics, persona_claims
from persona_llm.evaluation.stability import match_segments, shared_ari, stability, subsample_users
from persona_llm.evaluation.suite import DataSet, load_dataset, load_suite
from persona_llm.schema.personas import Persona

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


# ---------------------------------------------------------------------------------------------------
# Builders
# ---------------------------------------------------------------------------------------------------


CASES = ROOT / "evals" / "cases"


def estimate(value: str = "unknown", text_ids: list[str] | None = None) -> dict[str, Any]:
    return {
        "value": value,
        "confidence": "medium",
        "source": "attribute",
        "evidence": "",
        "text_ids": text_ids or [],
    }


def make_persona(
    segment_id: int,
    *,
    name: str | None = None,
    age: str = "unknown",
    gender: str = "unknown",
    quotes: Sequence[tuple[str, str, str]] = (),
    words: str = "",
    summary: str = "A hand-made persona.",
    removed: int = 0,
    age_text_ids: list[str] | None = None,
) -> Persona:
    """A valid stored Persona from evals/cases/persona.json; quotes are (text_id, user_id, text)."""
    data = json.loads((CASES / "persona.json").read_text(encoding="utf-8"))
    data.update(
        persona_id=f"p{segment_id}",
        segment_id=segment_id,
        name=name or f"Persona {segment_id}",
        tagline=words or "tagline",
        summary=summary,
        interests=[words or "things"],
        goals=["a goal"],
        pain_points=["a pain"],
        keywords=[words or "kw"],
        quotes=[{"text_id": t, "user_id": u, "text": q} for t, u, q in quotes],
    )
    data["demographics"].update(age_group=estimate(age, age_text_ids), gender=estimate(gender))
    data["provenance"]["quotes_proposed"] = len(quotes) + removed
    data["provenance"]["quotes_removed"] = [
        {"text_id": "t0", "text": "made up", "reason": "not_verbatim", "attempt": 1} for _ in range(removed)
    ]
    return Persona.model_validate(data)


class HashEmbedder:
    """Deterministic bag-of-words embedder: tokens hashed into 64 dims, unit rows."""

    model_id = "fake-hash-64"

    def encode(self, texts: list[str], **_: Any) -> np.ndarray:
        out = np.zeros((len(texts), 64), dtype=np.float32)
        for i, text in enumerate(texts):
            for tok in text.lower().split():
                out[i, zlib.crc32(tok.strip(".,;").encode()) % 64] += 1.0
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.where(norms == 0, 1, norms)


# ---------------------------------------------------------------------------------------------------
# Segmentation vs labels
# ---------------------------------------------------------------------------------------------------


def test_perfect_clustering_scores_one_even_with_renamed_segments() -> None:
    y = ["a"] * 5 + ["b"] * 5 + ["c"] * 5
    p = [7] * 5 + [3] * 5 + [0] * 5
    got = M.label_metrics(y, p)
    assert got["ari"] == pytest.approx(1.0)
    assert got["nmi"] == pytest.approx(1.0)
    assert got["purity"] == pytest.approx(1.0)
    assert got["coverage"] == 1.0


def test_random_clustering_scores_near_zero() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 5, 3000)
    p = rng.integers(0, 5, 3000)
    assert abs(M.adjusted_rand(y, p)) < 0.01
    assert M.normalized_mutual_info(y, p) < 0.01
    assert M.purity(y, p) < 0.3


def test_noise_counts_against_ari_but_not_ari_assigned() -> None:
    y = ["a"] * 4 + ["b"] * 4
    p = [0, 0, 0, -1, 1, 1, 1, -1]
    assert M.coverage(p) == 0.75
    assert M.noise_share(p) == 0.25
    assert M.adjusted_rand(y, p, drop_noise=True) == pytest.approx(1.0)
    assert M.adjusted_rand(y, p) < 1.0


def test_score_labels_counts_dropped_users_as_unassigned() -> None:
    labels = pd.Series({"a": "x", "b": "x", "c": "y", "d": "y", "e": "x", "f": "y"})
    segments = pd.Series({"a": 0, "b": 0, "c": 1, "d": 1})  # e and f were dropped before segmenting
    got = M.score_labels(labels, segments)
    assert got["ari_kept"] == pytest.approx(1.0) and got["nmi_kept"] == pytest.approx(1.0)
    assert got["users_dropped"] == 2
    expected = M.adjusted_rand(["x", "x", "y", "y", "x", "y"], [0, 0, 1, 1, -1, -1])
    assert got["ari"] == pytest.approx(expected) and got["ari"] < 1.0
    assert got["ari_assigned"] == pytest.approx(1.0)


def test_bench_segment_scores_with_the_evals_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_segment", ROOT / "bench" / "bench_segment.py")
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    # Registered first, as `import` would: its dataclasses look their module up in sys.modules.
    monkeypatch.setitem(sys.modules, "bench_segment", bench)
    spec.loader.exec_module(bench)
    labels = pd.Series({"a": "x", "b": "x", "c": "y", "d": "y", "e": "x", "f": "y"})
    got = bench.score(labels, np.array(["a", "b", "c", "d"]), np.array([0, 0, 1, 1]))
    want = M.score_labels(labels, pd.Series([0, 0, 1, 1], index=["a", "b", "c", "d"]))
    assert got["ari"] == pytest.approx(want["ari"]) and got["nmi"] == pytest.approx(want["nmi"])
    assert got["coverage"] == pytest.approx(4 / 6)


def test_purity_and_segment_majorities() -> None:
    y = ["a", "a", "a", "b", "b", "b", "b", "a"]
    p = [0, 0, 0, 0, 1, 1, 1, 1]
    assert M.purity(y, p) == pytest.approx(6 / 8)
    assert M.segment_majorities(y, p) == [
        {"segment_id": 0, "size": 4, "majority": "a", "share": 0.75},
        {"segment_id": 1, "size": 4, "majority": "b", "share": 0.75},
    ]


# ---------------------------------------------------------------------------------------------------
# Internal quality
# ---------------------------------------------------------------------------------------------------


def _blobs(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centers = np.eye(8)[:3] * 5
    x = np.vstack([c + rng.normal(0, 0.3, (40, 8)) for c in centers])
    return x, np.repeat([0, 1, 2], 40)


def test_silhouette_and_dbcv_prefer_true_blobs_to_random_labels() -> None:
    x, y = _blobs()
    shuffled = np.random.default_rng(1).permutation(y)
    s_true, s_random = M.silhouette(x, y), M.silhouette(x, shuffled)
    assert s_true is not None and s_true > 0.8
    assert s_random is not None and s_random < 0.05
    good, bad = M.dbcv(x, y), M.dbcv(x, shuffled)
    assert good is not None and bad is not None and good > 0.5 > bad


def test_internal_metrics_need_two_segments() -> None:
    x, _ = _blobs()
    one = np.zeros(len(x), dtype=int)
    got = M.internal_metrics(x, one)
    assert got["silhouette"] is None and got["dbcv"] is None
    assert got["n_segments"] == 1


def test_dbcv_scales_with_coverage() -> None:
    x, y = _blobs()
    noisy = y.copy()
    noisy[::2] = -1
    full, half = M.dbcv(x, y), M.dbcv(x, noisy)
    assert full is not None and half is not None and half < full


# ---------------------------------------------------------------------------------------------------
# Grounding
# ---------------------------------------------------------------------------------------------------

SOURCES = {
    "t1": M.SourceText("I renew my  skate deck\nevery summer, no matter the price.", "u1", 0),
    "t2": M.SourceText("Homework takes all evening.", "u2", 0),
    "t3": M.SourceText("Our mortgage went up again.", "u3", 1),
}


def test_verbatim_quote_passes_after_whitespace_normalisation() -> None:
    assert M.is_verbatim("skate deck every summer", SOURCES["t1"].text)
    assert not M.is_verbatim("Skate deck every summer", SOURCES["t1"].text)  # case-sensitive
    assert not M.is_verbatim("   ", SOURCES["t1"].text)


def test_fabricated_quote_and_bad_citations_are_caught() -> None:
    persona = make_persona(
        0,
        quotes=[
            ("t1", "u1", "I renew my skate deck every summer"),  # good
            ("t2", "u2", "Homework is my favourite thing"),  # fabricated
            ("t3", "u3", "Our mortgage went up again."),  # verbatim but other segment
            ("t9", "u1", "anything"),  # no such text
        ],
        removed=2,
    )
    rows = M.quote_checks([persona], SOURCES)
    assert [r["verbatim"] for r in rows] == [True, False, True, False]
    assert [r["in_segment"] for r in rows] == [True, True, False, False]
    got = M.grounding_metrics([persona], SOURCES)
    assert got["quote_verified"] == pytest.approx(0.5)
    assert got["citation_valid"] == pytest.approx(0.5)
    assert got["quotes_dropped"] == 2
    assert got["quotes_dropped_share"] == pytest.approx(2 / 6)


def test_citation_by_wrong_user_and_demographic_evidence_ids_count() -> None:
    persona = make_persona(
        0, quotes=[("t2", "u1", "Homework takes all evening.")], age="13-17", age_text_ids=["t3", "t1"]
    )
    cites = M.citation_checks([persona], SOURCES)
    assert [(c["where"], c["valid"]) for c in cites] == [
        ("quote", False),  # t2 was written by u2, not u1
        ("demographics.age_group", False),  # t3 is in segment 1
        ("demographics.age_group", True),
    ]


def test_no_quotes_gives_none_not_a_pass() -> None:
    got = M.grounding_metrics([make_persona(0)], SOURCES)
    assert got["quote_verified"] is None and got["quotes_total"] == 0


# ---------------------------------------------------------------------------------------------------
# Claims
# ---------------------------------------------------------------------------------------------------

AGE_VOCAB = ["13-17", "23-27", "33-48"]


@pytest.mark.parametrize(
    ("claim", "expected"),
    [
        ("13-17", ("13-17",)),
        ("teen", ("13-17",)),
        ("teenagers", ("13-17",)),
        ("students in high school", ("13-17",)),
        ("30s", ("33-48",)),
        ("in their mid-30s", ("33-48",)),
        ("late 20s", ("23-27",)),
        ("over 40", ("33-48",)),
        ("mostly 13–17 (70%)", ("13-17",)),
        ("20s-30s", ("23-27", "33-48")),
        ("digital natives", ()),
        ("young professionals", ()),
        ("born in the 1990s", ()),
        ("unknown", ()),
    ],
)
def test_age_claims_map_to_the_blog_vocabulary(claim: str, expected: tuple[str, ...]) -> None:
    assert C.map_claim(claim, AGE_VOCAB, age=True) == expected


@pytest.mark.parametrize(
    ("claim", "expected"),
    [
        ("female", ("female",)),
        ("women", ("female",)),
        ("Mostly female (62%)", ("female",)),
        ("guys", ("male",)),
        ("male", ("male",)),
        ("mixed", ("female", "male")),
        ("men and women", ("female", "male")),
        ("nerds", ()),
    ],
)
def test_gender_claims_map_with_synonyms(claim: str, expected: tuple[str, ...]) -> None:
    assert C.map_claim(claim, ["female", "male"]) == expected


def _members() -> pd.DataFrame:
    # segment 0: 40-somethings, mostly male; segment 1: teens, mostly female
    return pd.DataFrame(
        {
            "user_id": [f"u{i}" for i in range(10)],
            "segment_id": [0] * 5 + [1] * 5,
            "age_group": ["33-48"] * 4 + ["23-27"] + ["13-17"] * 5,
            "gender": ["male"] * 4 + ["female"] + ["female"] * 3 + ["male"] * 2,
        }
    )


def _status(checks: list[C.ClaimCheck]) -> dict[tuple[int, str], str]:
    return {(c.segment_id, c.field): c.status for c in checks}


def test_teenagers_claimed_for_forty_year_olds_is_a_contradiction() -> None:
    checks = C.check_claims([make_persona(0, age="teenagers", gender="men")], _members())
    assert _status(checks) == {(0, "age_group"): "contradiction", (0, "gender"): "consistent"}
    bad = checks[0]
    assert bad.majority == ("33-48",) and bad.majority_share == pytest.approx(0.8)
    assert C.claim_metrics(checks)["contradictions"] == 1


def test_unknown_vague_and_unmapped_claims_are_not_passes() -> None:
    personas = [
        make_persona(0, age="unknown", gender="mixed"),
        make_persona(1, age="digital natives", gender="girls"),
    ]
    got = _status(C.check_claims(personas, _members()))
    assert got == {
        (0, "age_group"): "unknown",
        (0, "gender"): "vague",
        (1, "age_group"): "unmapped",
        (1, "gender"): "consistent",
    }
    counts = C.claim_metrics(C.check_claims(personas, _members()))
    assert counts == {
        "claims_checked": 4,
        "claims_consistent": 1,
        "claims_unknown": 3,
        "contradictions": 0,
        "claims_unsupported": 0,
        # 1 of the 4 claims is right; one constant guess (13-17, male: what most users hold) gets 2
        "claims_right_share": 0.25,
        "claims_constant_share": 0.5,
    }


def test_vague_claim_excluding_the_majority_is_still_a_contradiction() -> None:
    got = _status(C.check_claims([make_persona(1, age="20s-30s")], _members()))
    assert got[(1, "age_group")] == "contradiction"


def test_age_outside_every_bucket_contradicts() -> None:
    # the blog set has nobody aged 18-22, so "college students" cannot be right
    got = _status(C.check_claims([make_persona(0, age="college students")], _members()))
    assert got[(0, "age_group")] == "contradiction"


def test_numeric_age_column_uses_the_segment_median() -> None:
    users = pd.DataFrame({"user_id": ["a", "b", "c"], "segment_id": [0, 0, 0], "age": [41, 44, 39]})
    assert (
        _status(C.check_claims([make_persona(0, age="in their 40s")], users))[(0, "age_group")]
        == "consistent"
    )
    assert _status(C.check_claims([make_persona(0, age="teens")], users))[(0, "age_group")] == "contradiction"


def test_unknown_attribute_values_are_ignored() -> None:
    users = pd.DataFrame(
        {
            "user_id": list("abcd"),
            "segment_id": [0] * 4,
            "industry": ["indUnk", "indUnk", "indUnk", "Student"],
        }
    )
    p = make_persona(0)
    p.demographics.occupation.value = "Students"
    assert _status(C.check_claims([p], users))[(0, "occupation")] == "consistent"


def test_user_attribute_takes_each_users_majority() -> None:
    frame = pd.DataFrame({"user_id": ["a", "a", "a", "b"], "g": ["x", "y", "y", "z"]})
    assert C.user_attribute(frame, "g").to_dict() == {"a": "y", "b": "z"}


# ---------------------------------------------------------------------------------------------------
# Distinctness and representativeness
# ---------------------------------------------------------------------------------------------------


def test_distinctness_finds_the_closest_pair() -> None:
    v = np.array([[1, 0, 0], [0, 1, 0], [0.99, 0.1, 0]])
    got = M.distinctness(v, ["a", "b", "c"])
    assert got["closest_pair"] == ["a", "c"]
    assert got["pair_similarity_max"] == pytest.approx(0.995, abs=1e-3)
    assert M.distinctness(np.eye(3), ["a", "b", "c"])["pair_similarity_max"] == pytest.approx(0.0)
    assert M.distinctness(np.eye(3)[:1], ["a"])["pair_similarity_max"] is None


def test_duplicate_persona_names() -> None:
    assert M.duplicate_names(["Tech Tina", "Budget Bob", "tech  tina", "Zoë", "Zoe"]) == ["tech  tina", "Zoe"]
    assert M.duplicate_names(["A", "B"]) == []


def test_persona_identification_perfect_and_swapped() -> None:
    emb = HashEmbedder()
    texts = ["skate school homework"] * 3 + ["mortgage garden commute"] * 3
    users = ["u1", "u1", "u2", "u3", "u3", "u4"]
    segs = [0, 0, 0, 1, 1, 1]
    personas = emb.encode(["skate homework school teens", "mortgage commute garden parents"])
    got = M.persona_identification(emb.encode(texts), users, segs, personas, [0, 1])
    assert got["identification_accuracy"] == 1.0
    assert got["identification_chance"] == 0.5
    assert got["identification_lift"] == 2.0
    swapped = M.persona_identification(emb.encode(texts), users, segs, personas, [1, 0])
    assert swapped["identification_accuracy"] == 0.0


# ---------------------------------------------------------------------------------------------------
# Stability
# ---------------------------------------------------------------------------------------------------


def _texts_frame() -> pd.DataFrame:
    users = [f"u{i:02d}" for i in range(40)]
    return pd.DataFrame(
        {
            "text_id": [f"t{i}" for i in range(40)],
            "user_id": users,
            "text": ["x"] * 40,
            "kind": [i % 4 for i in range(40)],
        }
    )


def _by_kind(texts: pd.DataFrame, seed: int) -> pd.DataFrame:
    # segment ids deliberately renamed per seed: matching must not rely on ids
    return pd.DataFrame({"user_id": texts["user_id"], "segment_id": (texts["kind"] + seed) % 4})


def _at_random(texts: pd.DataFrame, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed + 100)
    return pd.DataFrame({"user_id": texts["user_id"], "segment_id": rng.integers(0, 4, len(texts))})


def test_stable_segmentation_scores_one() -> None:
    texts = _texts_frame()
    got = stability(texts, _by_kind, reference=_by_kind(texts, 0))
    assert got["stability_ari"] == pytest.approx(1.0)
    assert got["persona_kept"] == 1.0
    assert all(n == 32 or n > 30 for n in got["shared_users"])


def test_random_segmentation_is_unstable() -> None:
    texts = _texts_frame()
    got = stability(texts, _at_random, reference=_by_kind(texts, 0), seeds=(1, 2, 3))
    assert got["stability_ari"] < 0.2
    assert got["persona_kept"] == 0.0


def _one_segment(texts: pd.DataFrame, seed: int) -> pd.DataFrame:
    return pd.DataFrame({"user_id": texts["user_id"], "segment_id": 0})


def _all_noise(texts: pd.DataFrame, seed: int) -> pd.DataFrame:
    return pd.DataFrame({"user_id": texts["user_id"], "segment_id": -1})


@pytest.mark.parametrize("segment_fn", [_one_segment, _all_noise])
def test_stability_of_a_run_with_fewer_than_two_segments_is_not_measurable(segment_fn: Any) -> None:
    """One segment (or none): every re-run agrees trivially, which must not read as 1.0 (stable)."""
    texts = _texts_frame()
    for reference in (segment_fn(texts, 0), None):
        got = stability(texts, segment_fn, reference=reference)
        assert got["stability_ari"] is None and got["persona_kept"] is None
        assert "at least 2" in got["not_measurable"]


def test_re_runs_collapsing_to_one_segment_are_not_counted_as_stable() -> None:
    texts = _texts_frame()
    got = stability(texts, _one_segment, reference=_by_kind(texts, 0))
    assert got["stability_ari"] is None and got["trivial_pairs"] == 1
    assert "fewer than 2 segments" in got["not_measurable"]
    assert got["persona_kept"] == 0.0  # four reference segments, none survives as itself


def test_subsample_and_matching_helpers() -> None:
    texts = _texts_frame()
    sub = subsample_users(texts, 0.9, seed=5)
    assert sub["user_id"].nunique() == 36
    a = pd.DataFrame({"user_id": ["a", "b", "c", "d"], "segment_id": [0, 0, 1, 1]})
    b = pd.DataFrame({"user_id": ["a", "b", "c", "e"], "segment_id": [5, 5, 6, 6]})
    assert shared_ari(a, b) == (pytest.approx(1.0), 3)
    assert [(r["segment_id"], r["matched"], r["kept"]) for r in match_segments(a, b)] == [
        (0, 5, True),
        (1, 6, True),
    ]


# ---------------------------------------------------------------------------------------------------
# Judge
# ---------------------------------------------------------------------------------------------------


def test_judge_with_a_fake_callable_keeps_reasons() -> None:
    persona = make_persona(0, age="13-17", words="skateboarding")
    claims = persona_claims(persona)
    assert claims[0] == "age group: 13-17"
    seen: list[list[dict[str, str]]] = []

    def fake(messages: list[dict[str, str]]) -> str:
        seen.append(messages)
        verdicts = [
            {"claim": i, "verdict": "supported" if i == 1 else "unsupported", "reason": f"text [{i}]"}
            for i in range(1, len(claims) + 1)
        ]
        return "Sure!\n```json\n" + json.dumps({"verdicts": verdicts}) + "\n```"

    records = LLMJudge(fake).judge_persona(persona, ["I am 15 and skate", "school again"])
    assert "[1] I am 15 and skate" in seen[0][1]["content"]
    assert records[0].verdict == "supported" and records[0].reason == "text [1]"
    got = judge_metrics(records)
    assert got["judge_claims"] == len(claims)
    assert got["judge_supported"] == pytest.approx(1 / len(claims))


def test_judge_garbage_reply_is_recorded_as_error_not_support() -> None:
    records = LLMJudge(lambda _m: "I cannot answer").judge_persona(make_persona(0), ["t"])
    assert records and all(r.verdict == "error" for r in records)
    n = len(records)
    assert judge_metrics(records) == {"judge_claims": n, "judge_errors": n, "judge_supported": 0.0,
                                     "judge_planted": 0, "judge_planted_caught": None}


def test_judge_errors_count_as_not_supported() -> None:
    """One supported claim and one the judge skipped: 50% supported, not 100%."""
    records = [
        JudgeRecord(persona_id="p0", claim="a", verdict="supported"),
        JudgeRecord(persona_id="p0", claim="b", verdict="error", reason="no verdict returned"),
    ]
    assert judge_metrics(records) == {"judge_claims": 2, "judge_errors": 1, "judge_supported": 0.5,
                                     "judge_planted": 0, "judge_planted_caught": None}
    assert judge_metrics([]) == {"judge_claims": 0, "judge_errors": 0, "judge_supported": None,
                                 "judge_planted": 0, "judge_planted_caught": None}


def test_judge_uses_generate_structured_when_the_model_has_it() -> None:
    class FakeChatModel:
        model_id = "fake:judge"

        def generate_structured(self, messages: Any, response_model: Any, **_: Any) -> Any:
            assert response_model is JudgeResponse

            class Result:
                value = JudgeResponse.model_validate({"verdicts": [{"claim": 1, "verdict": "unsupported"}]})

            return Result()

    records = LLMJudge(FakeChatModel()).judge_persona(make_persona(0), ["t"])
    assert records[0].verdict == "unsupported"
    assert records[1].verdict == "error"  # the model skipped claim 2


# ---------------------------------------------------------------------------------------------------
# Privacy
# ---------------------------------------------------------------------------------------------------


def test_pii_is_found_and_masked() -> None:
    items = [
        ("a", "write to jane.doe@example.com today"),
        ("b", "call 555-123-4567"),
        ("c", "see https://example.org/page"),
        ("d", "already redacted: [EMAIL] [PHONE] [URL], in 1993 for $19.99"),
    ]
    found = M.pii_findings(items)  # the pipeline's own find_pii
    assert sorted(f["kind"] for f in found) == ["email", "phone", "url"]
    assert all("jane.doe@example.com" not in f["match"] for f in found)
    assert {f["where"] for f in found} == {"a", "b", "c"}


def test_persona_strings_scan_finds_pii_in_a_persona() -> None:
    persona = make_persona(0, summary="Reach her at tina@example.com.")
    found = M.pii_findings(M.persona_strings(persona))
    assert [(f["kind"], f["where"]) for f in found] == [("email", "p0.summary")]
    assert M.pii_findings(M.persona_strings(make_persona(1))) == []


def test_every_metric_has_a_group_and_a_description() -> None:
    from persona_llm.evaluation.suite import GROUPS

    groups = {g for g, _ in M.METRICS.values()}
    assert groups <= set(GROUPS)
    assert all(desc for _, desc in M.METRICS.values())


# ---------------------------------------------------------------------------------------------------
# Suites and shared data
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["ci", "full"])
def test_shipped_suites_load(name: str) -> None:
    suite = load_suite(ROOT / "evals" / "suites" / f"{name}.toml")
    assert suite.name == name
    assert suite.thresholds["quote_verified_min"] == 1.0
    assert suite.thresholds["pii_max"] == 0
    shared = {"20newsgroups", "blog_authorship", "online_shopping_10_cats"}
    # full adds the stated-demographics case set, the one with a floor on claims that are right
    assert {d.source for d in suite.datasets} == (shared | {"cases"} if name == "full" else shared)
    if name == "full":
        stated = suite.thresholds_for("stated_demographics")
        assert stated["claims_right_share_min"] > 1 / 3  # above a constant guess's share there
        loaded = load_dataset(next(d for d in suite.datasets if d.source == "cases"), SHARED,
                              suite_dir=ROOT / "evals" / "suites")  # fmt: skip
        assert loaded["user_id"].nunique() == 36


@pytest.mark.skipif(not SHARED.exists(), reason="shared data not present")
@pytest.mark.parametrize(
    ("source", "label"),
    [("20newsgroups", "newsgroup"), ("blog_authorship", "age_group"), ("online_shopping_10_cats", "cat")],
)
def test_load_dataset_slices_shared_data(source: str, label: str) -> None:
    ds = DataSet.model_validate(
        {"source": source, "labels": label, "max_users": 20, "min_texts_per_user": 2, "max_texts_per_user": 3}
    )
    frame = load_dataset(ds, SHARED)
    assert list(frame.columns[:4]) == ["text_id", "user_id", "text", "source_row"]
    assert label in frame.columns
    assert frame["user_id"].nunique() <= 20
    assert frame.groupby("user_id").size().max() <= 3
    assert frame["text_id"].is_unique
    if source == "online_shopping_10_cats":
        assert frame.groupby("user_id")["cat"].nunique().max() == 1  # pseudo-users: one category each


def test_a_cases_file_loads_from_the_suite_folder_with_its_columns(tmp_path: Path) -> None:
    suite_dir = tmp_path / "suites"
    (suite_dir / "cases").mkdir(parents=True)
    rows = "text_id,user_id,text,age_group,occupation\n" + "".join(
        f"t{i},u{i % 4},text number {i} about delivery,18-24,student\n" for i in range(12)
    )
    (suite_dir / "cases" / "c.csv").write_text(rows, encoding="utf-8")
    ds = DataSet.model_validate({"source": "cases", "path": "cases/c.csv", "labels": "occupation",
                                 "attributes": ["age_group"], "withheld": ["age_group", "occupation"]})  # fmt: skip
    frame = load_dataset(ds, tmp_path / "no-shared-data", suite_dir=suite_dir)
    assert list(frame.columns) == ["text_id", "user_id", "text", "source_row", "age_group", "occupation"]
    assert len(frame) == 12 and frame["user_id"].nunique() == 4
    with pytest.raises(ValueError, match="needs a path"):
        DataSet.model_validate({"source": "cases"})
    with pytest.raises(ConfigError, match="suite file's folder"):
        load_dataset(ds, tmp_path)
    with pytest.raises(ConfigError, match=r"missing\.csv: case file not found"):
        load_dataset(ds.model_copy(update={"path": "cases/missing.csv"}), tmp_path, suite_dir=suite_dir)
    (suite_dir / "cases" / "bad.csv").write_text("id,user_id,text,age_group\n1,u,x,18-24\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"bad\.csv: columns \['text_id'\]"):
        load_dataset(ds.model_copy(update={"path": "cases/bad.csv"}), tmp_path, suite_dir=suite_dir)
    (suite_dir / "cases" / "short.csv").write_text("text_id,user_id,text,age_group\n1,u,x,18-24\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"short\.csv: columns \['occupation'\]"):
        load_dataset(ds.model_copy(update={"path": "cases/short.csv"}), tmp_path, suite_dir=suite_dir)


@pytest.mark.parametrize("name", ["ci", "full"])
def test_shipped_suites_set_no_floor_below_chance_and_gate_blog_identification_honestly(name: str) -> None:
    """A floor under chance passes personas worse than a constant guess. The ci slice's bloggers measure
    under chance, so ci does not gate them; the whole set measured 1.33, so full gates it at chance."""
    suite = load_suite(ROOT / "evals" / "suites" / f"{name}.toml")
    for ds in suite.datasets:
        lift = suite.thresholds_for(ds.key).get("identification_lift_min")
        assert lift is None or lift >= 1.0, (ds.key, lift)
    blog_lift = suite.thresholds_for("blog_authorship").get("identification_lift_min")
    assert blog_lift == (None if name == "ci" else 1.0)
    assert "ari_min" not in suite.thresholds_for("blog_authorship")
    assert "Blog identification" in (ROOT / "evals" / "README.md").read_text(encoding="utf-8")


def test_full_suite_floors_come_from_measured_values() -> None:
    text = (ROOT / "evals" / "suites" / "full.toml").read_text(encoding="utf-8")
    assert "calibrate" not in text.lower()
    suite = load_suite(ROOT / "evals" / "suites" / "full.toml")
    news = suite.thresholds_for("20newsgroups")
    # README results table: ARI 0.70 at 99% coverage for the 398 authors
    assert news["ari_min"] == pytest.approx(0.65) and news["coverage_min"] == pytest.approx(0.94)
    # Every floor of a data set sits at or under the full suite's committed record of it, and no further
    # under than the calibration rule (about 0.05; lift, whose step is ~0.3 a persona, 0.6; the claims'
    # right share, whose step is 1/6, 0.5): a floor above the record would fail the next run, one far
    # under it would catch nothing.
    records = {
        r["dataset"]: r["metrics"]
        for f in sorted((ROOT / "bench" / "results").glob("*-full*.json"))
        for r in json.loads(f.read_text(encoding="utf-8"))["reports"]
    }
    assert set(records) == {d.key for d in suite.datasets}, "every data set of full.toml has a record"
    checked = 0
    for ds in suite.datasets:
        for name, floor in ds.thresholds.items():
            metric = name.removesuffix("_min")
            if name == metric or metric not in records[ds.key]:
                continue
            measured = records[ds.key][metric]
            # identification lift moves ~0.3 a persona; a right share of 6 claims moves 1/6 a claim
            room = {"identification_lift": 0.6, "claims_right_share": 0.5}.get(metric, 0.06)
            assert measured - room <= floor <= measured, (ds.key, name, floor, measured)
            checked += 1
    assert checked >= 12


def metric_rows(readme: str) -> dict[str, list[tuple[str, str]]]:
    """The README's metrics table: metric name -> [(group, description)], one entry per row naming it."""
    rows: dict[str, list[tuple[str, str]]] = {}
    for line in readme.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and len(cells) >= 3 and cells[1].startswith("`") and cells[1].endswith("`"):
            rows.setdefault(cells[1].strip("`"), []).append((cells[0], " | ".join(cells[2:])))
    return rows


def undocumented(readme: str) -> list[str]:
    """Metrics without exactly one table row in their own group saying what it catches and cannot catch."""
    rows = metric_rows(readme)
    problems = [f"{name}: no row" for name in M.METRICS if name not in rows]
    problems += [f"{name}: not a metric" for name in rows if name not in M.METRICS]
    for name, entries in rows.items():
        if name not in M.METRICS:
            continue
        if len(entries) != 1:
            problems.append(f"{name}: {len(entries)} rows")
        group, text = entries[0]
        if group != M.METRICS[name][0]:
            problems.append(f"{name}: group {group!r}, metrics.py says {M.METRICS[name][0]!r}")
        lowered = text.casefold()
        if "catches" not in lowered.replace("cannot catch", ""):
            problems.append(f"{name}: does not say what it catches")
        if "cannot catch" not in lowered:
            problems.append(f"{name}: does not say what it cannot catch")
    return problems


def test_readme_documents_every_metric() -> None:
    # The "done when": evals/README.md says for each metric what it can and cannot catch. Naming a
    # metric somewhere in the file (the old test) passed a row that said neither.
    readme = (ROOT / "evals" / "README.md").read_text(encoding="utf-8")
    assert undocumented(readme) == []
    # The check itself fails on what it must catch.
    table = "| group | metric | doc |\n|---|---|---|\n"
    name, (group, _) = next(iter(M.METRICS.items()))
    assert f"{name}: no row" in undocumented(table)
    assert f"{name}: does not say what it cannot catch" in undocumented(table + f"| {group} | `{name}` | Catches: x |")
    assert f"{name}: does not say what it catches" in undocumented(table + f"| {group} | `{name}` | Cannot catch: y |")
    assert f"{name}: group 'other', metrics.py says {group!r}" in undocumented(table + f"| other | `{name}` | Catches x. Cannot catch y |")
    assert "made_up: not a metric" in undocumented(table + "| labels | `made_up` | Catches x. Cannot catch y |")


def test_judge_through_the_projects_chat_model_on_a_fake_server() -> None:
    from persona_llm.llm.client import Capabilities, ChatModel
    from tests.fake_openai import FakeOpenAIServer

    persona = make_persona(0, age="13-17")
    n = len(persona_claims(persona))
    reply = {"verdicts": [{"claim": i, "verdict": "supported", "reason": "[1]"} for i in range(1, n + 1)]}
    with FakeOpenAIServer([{"content": reply}]) as server:
        chat = ChatModel(
            base_url=server.base_url,
            model="fake-judge",
            capabilities=Capabilities(json_schema=True, json_object=True),
            max_retries=0,
            timeout_s=5.0,
        )
        records = LLMJudge(chat).judge_persona(persona, ["I am 15."])
    assert [r.verdict for r in records] == ["supported"] * n
    assert server.requests[0]["response_format"]["json_schema"]["name"] == "JudgeResponse"


def test_near_tie_counts_as_majority_but_a_clear_minority_does_not() -> None:
    users = pd.DataFrame(
        {
            "user_id": [f"u{i}" for i in range(20)],
            "segment_id": [0] * 20,
            "age_group": ["23-27"] * 9 + ["13-17"] * 8 + ["33-48"] * 3,  # 45% / 40% / 15%
        }
    )
    strict = _status(C.check_claims([make_persona(0, age="teens")], users, tie_tolerance=0.0))
    assert strict[(0, "age_group")] == "contradiction"
    assert _status(C.check_claims([make_persona(0, age="teens")], users, tie_tolerance=0.05))[
        (0, "age_group")
    ] == ("consistent")
    assert _status(C.check_claims([make_persona(0, age="40s")], users))[(0, "age_group")] == "contradiction"
