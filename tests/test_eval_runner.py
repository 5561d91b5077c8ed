"""evaluate_run on a hand-built run directory, thresholds, the `eval` CLI command and run_suite."""

from __future__ import annotations

import json
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

from persona_llm.cli import app as persona_llm_app
from persona_llm.errors import ConfigError
from persona_llm.evaluation.runner import (
    EvalReport,
    check_thresholds,
    eval_section_html,
    evaluate_run,
    load_report,
    run_suite,
)
from persona_llm.evaluation.suite import Suite, load_suite
from persona_llm.schema.personas import Persona
from persona_llm.schema.segments import Representative, Segment, SegmentQuality, SegmentSet

ROOT = Path(__file__).resolve().parents[1]


def make_persona(
    segment_id: int, *, name: str, age: str, gender: str, words: str, quotes: list[tuple[str, str, str]]
) -> Persona:
    """A stored Persona from the hand-made case evals/cases/persona.json; quotes: (text_id, user_id, text)."""
    data = json.loads((ROOT / "evals" / "cases" / "persona.json").read_text(encoding="utf-8"))
    data.update(
        persona_id=f"p{segment_id}",
        segment_id=segment_id,
        name=name,
        tagline=words,
        summary=f"People who write about {words}.",
        interests=words.split()[:3],
        goals=["a goal"],
        pain_points=["a pain"],
        keywords=words.split(),
        quotes=[{"text_id": t, "user_id": u, "text": q} for t, u, q in quotes],
    )
    data["demographics"]["age_group"]["value"] = age
    data["demographics"]["gender"]["value"] = gender
    data["provenance"]["quotes_proposed"] = len(quotes)
    return Persona.model_validate(data)


class HashEmbedder:
    """Deterministic bag-of-words embedder: tokens hashed into 64 dims, unit rows."""

    model_id = "fake-hash-64"

    def encode(self, texts: list[str], **_: Any) -> np.ndarray:
        out = np.zeros((len(texts), 64), dtype=np.float32)
        for i, text in enumerate(texts):
            for tok in text.lower().split():
                out[i, zlib.crc32(tok.strip(".,;:").encode()) % 64] += 1.0
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.where(norms == 0, 1, norms)


# Three segments with their own words and demographics, plus two noise users.
SEGMENT_TEXTS = {
    0: ("skate school homework exam", "13-17", "male"),
    1: ("mortgage garden commute daycare", "33-48", "female"),
    2: ("gigs startup flatmate brunch", "23-27", "female"),
}


def hand_made_texts() -> tuple[pd.DataFrame, dict[str, int]]:
    rows, seg_of = [], {}
    for seg, (words, age, gender) in SEGMENT_TEXTS.items():
        for u in range(4):
            uid = f"s{seg}u{u}"
            seg_of[uid] = seg
            for k in range(3):
                rows.append(
                    {
                        "text_id": f"{uid}t{k}",
                        "user_id": uid,
                        "text": f"Day {k}: {words} again, honestly {words.split()[k]} is my life.",
                        "age_group": age,
                        "gender": gender,
                        "sign": ["Leo", "Aries", "Virgo", "Libra"][u],
                    }
                )
    for u in range(2):
        uid = f"noise{u}"
        seg_of[uid] = -1
        rows.append(
            {
                "text_id": f"{uid}t0",
                "user_id": uid,
                "text": "random weather chat",
                "age_group": "23-27",
                "gender": "male",
                "sign": "Leo",
            }
        )
    return pd.DataFrame(rows), seg_of


def good_personas() -> list[Persona]:
    out = []
    for seg, (words, age, gender) in SEGMENT_TEXTS.items():
        p = make_persona(
            seg,
            name=f"Persona {words.split()[0].title()}",
            age=age,
            gender={"male": "mostly men", "female": "women"}[gender],
            words=words,
            quotes=[(f"s{seg}u{u}t1", f"s{seg}u{u}", f"{words} again, honestly") for u in range(3)],
        )
        out.append(p)
    return out


def write_run(run_dir: Path, texts: pd.DataFrame, seg_of: dict[str, int], personas: list[Persona]) -> Path:
    """A run directory in the layout of persona_llm.schema.segments (what the pipeline writes)."""
    emb = HashEmbedder()
    run_dir.mkdir(parents=True, exist_ok=True)
    texts = texts.assign(language="en", segment_id=texts["user_id"].map(seg_of).astype(int))
    tv = emb.encode(texts["text"].tolist())
    users = sorted(seg_of)
    uv = np.vstack([tv[(texts["user_id"] == u).to_numpy()].mean(axis=0) for u in users])
    uv /= np.linalg.norm(uv, axis=1, keepdims=True)
    assignments = pd.DataFrame(
        {"user_id": users, "segment_id": [seg_of[u] for u in users], "probability": 1.0}
    )
    n_assigned = int((assignments["segment_id"] != -1).sum())
    segments = []
    for seg in sorted({s for s in seg_of.values() if s != -1}):
        members = texts[texts["segment_id"] == seg]
        reps = members.iloc[[0, 3]]
        size = sum(1 for s in seg_of.values() if s == seg)
        segments.append(
            Segment(
                segment_id=seg,
                size=size,
                share=size / n_assigned,
                n_texts=len(members),
                keywords=[],
                representative_text_ids=reps["text_id"].tolist(),
                representatives=[
                    Representative(text_id=str(tid), user_id=str(uid), text=str(text), similarity=0.9)
                    for tid, uid, text in zip(reps["text_id"], reps["user_id"], reps["text"], strict=True)
                ],
                quality=SegmentQuality(mean_probability=1.0, cohesion=0.5),
            )
        )
    seg_set = SegmentSet(
        run_id="run-test",
        n_users=len(users),
        n_assigned=n_assigned,
        coverage=n_assigned / len(users),
        noise_share=1 - n_assigned / len(users),
        segments=segments,
    )
    (run_dir / "segments.json").write_text(seg_set.model_dump_json(indent=2), encoding="utf-8")
    assignments.to_csv(run_dir / "assignments.csv", index=False)
    texts.to_parquet(run_dir / "texts.parquet", index=False)
    np.save(run_dir / "text_embeddings.npy", tv)
    np.save(run_dir / "user_embeddings.npy", uv.astype(np.float32))
    (run_dir / "personas.json").write_text(
        json.dumps([p.model_dump(mode="json") for p in personas], indent=2), encoding="utf-8"
    )
    return run_dir


@pytest.fixture
def good_run(tmp_path: Path) -> Path:
    texts, seg_of = hand_made_texts()
    return write_run(tmp_path / "good", texts, seg_of, good_personas())


@pytest.fixture
def bad_run(tmp_path: Path) -> Path:
    texts, seg_of = hand_made_texts()
    texts["text"] = [t + (" mail me: kid@example.com" if i == 0 else "") for i, t in enumerate(texts["text"])]
    personas = good_personas()
    personas[1].demographics.age_group.value = "teenagers"  # segment 1 is 33-48
    personas[2].quotes[0].text = "brunch is the best meal of the week"  # fabricated
    return write_run(tmp_path / "bad", texts, seg_of, personas)


SUITE_TOML = """
name = "test"
metrics = ["labels", "internal", "grounding", "claims", "distinctness", "privacy"]
[thresholds]
ari_assigned_min = 0.99
coverage_min = 0.8
quote_verified_min = 1.0
citation_valid_min = 1.0
contradictions_max = 0
duplicate_names_max = 0
pii_max = 0
"""


@pytest.fixture
def suite_file(tmp_path: Path) -> Path:
    path = tmp_path / "suite.toml"
    path.write_text(SUITE_TOML, encoding="utf-8")
    return path


def by_age(texts: pd.DataFrame, seed: int) -> pd.DataFrame:
    """A stand-in segmenter for stability: users grouped by their age group (ids vary per seed)."""
    users = texts.drop_duplicates("user_id")
    codes = {"13-17": 0, "33-48": 1, "23-27": 2}
    seg = users["age_group"].map(codes)
    seg = seg.where(~users["user_id"].str.startswith("noise"), -1)
    return pd.DataFrame({"user_id": users["user_id"], "segment_id": (seg + seed * (seg >= 0)) % 7})


# ---------------------------------------------------------------------------------------------------


def test_a_failing_re_segmentation_skips_stability_only(good_run: Path) -> None:
    from persona_llm.errors import ConfigError

    def broken(texts: pd.DataFrame, seed: int) -> pd.DataFrame:
        raise ConfigError("need at least 3 users to segment, got 2")

    report = evaluate_run(good_run, "age_group", segment_fn=broken, write=False)
    assert "re-segmentation failed: need at least 3 users" in report.skipped["stability"]
    assert "stability_ari" not in report.metrics and report.metrics["ari_assigned"] == pytest.approx(1.0)


@pytest.mark.parametrize("segment_id", [0, -1])
def test_stability_of_a_run_with_one_or_no_segment_fails_its_threshold(tmp_path: Path, segment_id: int) -> None:
    """A run with one segment (or only noise) re-segmented into one segment scored 1.0 before."""
    texts, seg_of = hand_made_texts()
    run = write_run(tmp_path / "one", texts, dict.fromkeys(seg_of, segment_id), [])

    def one_group(frame: pd.DataFrame, seed: int) -> pd.DataFrame:
        users = frame["user_id"].drop_duplicates()
        return pd.DataFrame({"user_id": users, "segment_id": segment_id})

    suite = Suite.model_validate(
        {"name": "t", "metrics": ["stability"], "thresholds": {"stability_ari_min": 0.5, "persona_kept_min": 0.5}}
    )
    report = evaluate_run(run, None, suite, segment_fn=one_group, write=False)
    assert report.metrics["stability_ari"] is None and report.metrics["persona_kept"] is None
    assert "stability needs at least 2" in report.skipped["stability"]
    assert sorted(f.metric for f in report.failures) == ["persona_kept", "stability_ari"]
    assert all(f.value is None and "at least 2" in f.message for f in report.failures)


def test_coverage_before_and_after_outlier_reassignment_are_both_reported(tmp_path: Path) -> None:
    """`coverage` counts users reassigned to their nearest segment; `coverage_hdbscan` does not."""
    texts, seg_of = hand_made_texts()
    run = write_run(tmp_path / "r", texts, seg_of, [])
    assignments = pd.read_csv(run / "assignments.csv", dtype={"user_id": str})
    reassigned = {"s0u3", "s1u3", "s2u3"}  # HDBSCAN left these as noise; reassignment placed them
    assignments["assigned_by"] = [
        "reassigned" if u in reassigned else ("noise" if s == -1 else "cluster")
        for u, s in zip(assignments["user_id"], assignments["segment_id"], strict=True)
    ]
    assignments.to_csv(run / "assignments.csv", index=False)
    suite = Suite.model_validate(
        {"name": "t", "metrics": ["internal"], "thresholds": {"coverage_min": 0.8, "coverage_hdbscan_min": 0.7}}
    )
    report = evaluate_run(run, None, suite, write=False)
    got = report.metrics
    assert got["coverage"] == pytest.approx(12 / 14) and got["noise_share"] == pytest.approx(2 / 14)
    assert got["coverage_hdbscan"] == pytest.approx(9 / 14) and got["noise_share_hdbscan"] == pytest.approx(5 / 14)
    assert [f.metric for f in report.failures] == ["coverage_hdbscan"]


def test_coverage_hdbscan_falls_back_to_the_recorded_quality_or_says_why_not(tmp_path: Path) -> None:
    texts, seg_of = hand_made_texts()
    run = write_run(tmp_path / "r", texts, seg_of, [])  # no assigned_by column
    report = evaluate_run(run, None, Suite.model_validate({"name": "t", "metrics": ["internal"]}), write=False)
    assert report.metrics["coverage_hdbscan"] is None
    assert any("coverage_hdbscan not computed" in n for n in report.notes)
    segments = json.loads((run / "segments.json").read_text(encoding="utf-8"))
    segments["quality"] = {"noise_share_hdbscan": 0.25}
    (run / "segments.json").write_text(json.dumps(segments), encoding="utf-8")
    report = evaluate_run(run, None, Suite.model_validate({"name": "t", "metrics": ["internal"]}), write=False)
    assert report.metrics["coverage_hdbscan"] == pytest.approx(0.75)


def test_pipeline_records_coverage_before_reassignment(tmp_path: Path) -> None:
    from persona_llm.segment.pipeline import SegmentPipeline

    words = {
        "pizza": "pizza cheese oven dough tomato basil crust flour yeast sauce",
        "cars": "engine gearbox tyre brake clutch filter spark plug motor exhaust",
        "football": "goal striker keeper match league referee penalty offside club stadium",
    }
    rng = np.random.default_rng(0)
    rows = [
        {"user": f"{t}-{u}", "body": f"I think the {' and the '.join(rng.choice(v.split(), 3, replace=False))} ({j})"}
        for t, v in words.items()
        for u in range(10)
        for j in range(3)
    ]
    # loners: each writes words nobody else uses, so HDBSCAN leaves them as noise
    rows += [
        {"user": f"loner-{u}", "body": f"I think the lone{u}a and the lone{u}b{j} are what matters ({j})"}
        for u in range(4)
        for j in range(3)
    ]

    from persona_llm.segment.base import BaseEmbedder

    class PipelineHashEmbedder(BaseEmbedder):
        model_id = HashEmbedder.model_id

        def encode(self, texts: Any, *, kind: Any = "passage", show_progress: bool = False) -> np.ndarray:
            return HashEmbedder().encode(list(texts))

    # threshold 0: every HDBSCAN noise user is reassigned, so the two coverages must differ
    pipe = SegmentPipeline(
        embedder=PipelineHashEmbedder(), cache_dir="none", min_cluster_size=5, reassign_threshold=0.0
    )
    pipe.fit(pd.DataFrame(rows), user_column="user", text_column="body", attribute_columns=[])
    seg = pipe.segments_
    raw_noise = seg.quality["noise_share_hdbscan"]
    assert raw_noise is not None and seg.noise_share_hdbscan == pytest.approx(raw_noise)
    assert seg.coverage_hdbscan == pytest.approx(1 - raw_noise)
    assert seg.coverage_hdbscan == pytest.approx(float(np.mean(pipe.assigned_by_ == "cluster")), abs=1e-4)
    assert seg.coverage == 1.0 and raw_noise > 0
    suite = Suite.model_validate({"name": "t", "metrics": ["internal"]})
    report = evaluate_run(pipe.save(tmp_path / "run"), None, suite)
    assert report.metrics["coverage_hdbscan"] == pytest.approx(seg.coverage_hdbscan, abs=1e-4)
    assert report.metrics["coverage"] == pytest.approx(seg.coverage, abs=1e-4)


def test_label_metrics_count_users_the_run_dropped_as_unassigned(good_run: Path) -> None:
    """Two labelled users never reached the run (dropped by cleaning / min_texts): the eval and the
    bench count them as unassigned; the kept-only figure is reported beside it."""
    texts, _ = hand_made_texts()
    dropped = pd.DataFrame(
        [
            {"text_id": f"gone{u}", "user_id": f"gone{u}", "text": "hi", "age_group": age, "gender": "male"}
            for u, age in enumerate(["13-17", "33-48"])
        ]
    )
    report = evaluate_run(good_run, "age_group", input_texts=pd.concat([texts, dropped]), write=False)
    kept_only = evaluate_run(good_run, "age_group", write=False)
    got = report.metrics
    assert got["users_dropped"] == 2 and kept_only.metrics["users_dropped"] == 0
    assert got["ari_kept"] == pytest.approx(kept_only.metrics["ari"])
    assert got["ari"] < got["ari_kept"] and got["nmi"] < got["nmi_kept"]
    assert "every labelled input user" in report.details["labels_scope"]
    assert any("dropped by cleaning" in n for n in report.notes)


def test_evaluate_good_run_writes_eval_json(good_run: Path) -> None:
    report = evaluate_run(
        good_run, "age_group", embedder=HashEmbedder(), segment_fn=by_age, negative_control="sign"
    )
    got = report.metrics
    assert got["ari_assigned"] == pytest.approx(1.0)
    assert got["purity"] == pytest.approx(1.0)
    assert got["coverage"] == pytest.approx(12 / 14)
    assert got["n_segments"] == 3
    assert got["silhouette"] is not None and got["silhouette"] > 0.3
    assert got["quote_verified"] == 1.0 and got["citation_valid"] == 1.0
    assert got["contradictions"] == 0 and got["claims_consistent"] == 6
    assert got["duplicate_names"] == 0
    assert got["pair_similarity_max"] is not None and got["pair_similarity_max"] < 0.9
    assert got["identification_accuracy"] == 1.0 and got["identification_lift"] == pytest.approx(3.0)
    assert got["stability_ari"] == pytest.approx(1.0) and got["persona_kept"] == 1.0
    assert got["pii"] == 0
    assert got["control_ari"] is not None and abs(got["control_ari"]) < 0.2
    assert report.skipped == {
        "judge": "no judge model given (optional)",
        "chat": "no chat model given (optional: persona-llm eval --chat)",
        "injection": "no chat model given (optional: persona-llm eval --chat)",
    }
    assert [m["majority"] for m in report.details["segment_majorities"]] == ["13-17", "33-48", "23-27"]

    saved = load_report(good_run)
    assert saved.metrics == report.metrics
    assert json.loads((good_run / "eval.json").read_text())["run_id"] == "run-test"


def test_evaluate_bad_run_catches_each_problem(bad_run: Path, suite_file: Path) -> None:
    suite = load_suite(suite_file)
    report = evaluate_run(bad_run, "age_group", suite)
    assert report.metrics["quote_verified"] == pytest.approx(8 / 9)
    assert report.metrics["contradictions"] == 1
    assert report.metrics["pii"] == 2  # the text and its copy as a segment representative
    assert {f["where"] for f in report.details["pii"]} == {
        "texts.parquet:s0u0t0",
        "segments[0].representatives.s0u0t0",
    }
    (c,) = report.details["contradictions"]
    assert (c["persona_id"], c["claim"], c["majority"]) == ("p1", "teenagers", ["33-48"])
    assert report.details["grounding"]["failed_quotes"][0]["text_id"] == "s2u0t1"
    assert "kid@example.com" not in (bad_run / "eval.json").read_text()  # findings are masked
    assert sorted(f.metric for f in report.failures) == ["contradictions", "pii", "quote_verified"]
    assert report.failures == check_thresholds(report, suite)


def test_a_persona_without_quotes_fails_even_when_the_total_is_high(tmp_path: Path) -> None:
    """quotes_total over a run hid a persona with no quote; quotes_per_persona is the fewest of any."""
    texts, seg_of = hand_made_texts()
    personas = good_personas()
    personas[1].quotes = []
    run = write_run(tmp_path / "run", texts, seg_of, personas)
    suite = Suite.model_validate(
        {"name": "t", "metrics": ["grounding"], "thresholds": {"quotes_total_min": 5, "quotes_per_persona_min": 1}}
    )
    report = evaluate_run(run, None, suite, write=False)
    assert report.metrics["quotes_total"] == 6 and report.metrics["quotes_per_persona"] == 0
    assert [(f.metric, f.value) for f in report.failures] == [("quotes_per_persona", 0)]
    good = evaluate_run(write_run(tmp_path / "good", texts, seg_of, good_personas()), None, suite, write=False)
    assert good.metrics["quotes_per_persona"] == 3 and good.failures == []


def test_ci_suite_asks_every_persona_for_a_quote() -> None:
    assert load_suite(ROOT / "evals" / "suites" / "ci.toml").thresholds["quotes_per_persona_min"] == 1


def test_thresholded_metric_that_was_not_computed_fails(good_run: Path) -> None:
    suite = Suite.model_validate(
        {"name": "t", "metrics": ["distinctness"], "thresholds": {"pair_similarity_max_max": 0.9}}
    )
    report = evaluate_run(good_run, None, suite)  # no embedder
    (failure,) = report.failures
    assert failure.value is None and "no embedder" in failure.message


def test_per_dataset_thresholds_override_the_suites() -> None:
    suite = Suite.model_validate(
        {
            "name": "t",
            "thresholds": {"ari_min": 0.5},
            "datasets": [{"source": "20newsgroups", "thresholds": {"ari_min": 0.1}}],
        }
    )
    report = EvalReport(run_id="r", run_dir=".", created_at="now", version="0", metrics={"ari": 0.2})
    assert [f.metric for f in check_thresholds(report, suite)] == ["ari"]
    report.dataset = "20newsgroups"
    assert check_thresholds(report, suite) == []


def test_unknown_threshold_name_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text('name = "x"\n[thresholds]\naccuracy_min = 1\n', encoding="utf-8")
    with pytest.raises(Exception, match="unknown threshold 'accuracy_min'"):
        load_suite(path)


def test_run_without_personas_skips_persona_metrics(good_run: Path) -> None:
    (good_run / "personas.json").unlink()
    report = evaluate_run(good_run, "age_group")
    assert "grounding" in report.skipped and "claims" in report.skipped
    assert report.metrics["ari_assigned"] == pytest.approx(1.0)


def test_eval_section_html_lists_failures_and_escapes(bad_run: Path, suite_file: Path) -> None:
    suite = load_suite(suite_file)
    html = eval_section_html(evaluate_run(bad_run, "age_group", suite), suite)
    assert html.startswith("<section class='eval'>")
    assert "Missed thresholds" in html and "Contradicted claims" in html and "teenagers" in html


# ---------------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------------


def cli_app() -> typer.Typer:
    return persona_llm_app


def test_cli_passes_on_a_good_run(good_run: Path, suite_file: Path) -> None:
    result = CliRunner().invoke(
        cli_app(), ["eval", str(good_run), "--labels", "age_group", "--suite", str(suite_file), "--no-embed"]
    )
    assert result.exit_code == 0, result.output
    assert "quote_verified" in result.output and "FAIL" not in result.output
    assert (good_run / "eval.json").exists()


def test_cli_exits_non_zero_when_a_threshold_is_missed(bad_run: Path, suite_file: Path) -> None:
    result = CliRunner().invoke(cli_app(), ["eval", str(bad_run), "--suite", str(suite_file), "--no-embed"])
    assert result.exit_code == 1, result.output
    assert "FAIL" in result.output and "contradiction" in result.output


def test_cli_bad_input_exits_2(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli_app(), ["eval", str(tmp_path / "nope"), "--no-embed"])
    assert result.exit_code == 2
    assert "run directory or workspace not found" in result.output


def test_cli_json_output(good_run: Path) -> None:
    result = CliRunner().invoke(cli_app(), ["eval", str(good_run), "--no-embed", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["metrics"]["pii"] == 0
    # this hand-made run has no manifest to rebuild its pipeline from: stability says so, the rest runs
    assert "cannot re-segment" in report["skipped"]["stability"] and "manifest.json" in report["skipped"]["stability"]


# ---------------------------------------------------------------------------------------------------
# run_suite with a stand-in pipeline on a stand-in shared data dir
# ---------------------------------------------------------------------------------------------------


MINI_GROUPS = ["sci.space", "rec.autos", "talk.politics"]


def write_mini_20ng(data_dir: Path) -> None:
    """A stand-in shared 20NG file: 3 groups x 4 users x 5 posts."""
    data = data_dir / "20newsgroups"
    data.mkdir(parents=True)
    groups = MINI_GROUPS
    rows = [
        {
            "doc_id": f"d{g}{u}{k}",
            "user_id": f"u{g}{u}",
            "split": "train",
            "newsgroup": groups[g],
            "subject": "s",
            "body": f"{groups[g]} post {k} by {u}",
        }
        for g in range(3)
        for u in range(4)
        for k in range(5)
    ]
    pd.DataFrame(rows).to_csv(data / "posts.csv.gz", index=False)


def mini_pipeline(calls: list[tuple[int, int, int]]) -> Any:
    def pipeline(texts: pd.DataFrame, run_dir: Path, seed: int) -> None:
        calls.append((len(texts), texts["user_id"].nunique(), seed))
        seg_of = {
            str(u): MINI_GROUPS.index(str(g)) for u, g in texts.groupby("user_id")["newsgroup"].first().items()
        }
        write_run(run_dir, texts, seg_of, [])

    return pipeline


def mini_suite(tmp_path: Path, toml: str) -> Path:
    """The stand-in 20NG data under tmp_path/data and a suite file tmp_path/suites/mini.toml (its records
    go to tmp_path/bench)."""
    write_mini_20ng(tmp_path / "data")
    (tmp_path / "suites").mkdir()
    suite_path = tmp_path / "suites" / "mini.toml"
    suite_path.write_text(toml, encoding="utf-8")
    return suite_path


def test_run_suite_builds_evaluates_and_writes_a_bench_record(tmp_path: Path) -> None:
    suite_path = mini_suite(
        tmp_path,
        'name = "mini"\nmetrics = ["labels", "grounding", "privacy"]\nreport_dir = "../bench"\n'
        "[thresholds]\nari_min = 0.99\npii_max = 0\n"
        '[[datasets]]\nsource = "20newsgroups"\nlabels = "newsgroup"\nmin_texts_per_user = 5\n'
        "max_texts_per_user = 3\nmax_users = 9\n",
    )
    calls: list[tuple[int, int, int]] = []
    result = run_suite(suite_path, tmp_path / "runs", mini_pipeline(calls), data_dir=tmp_path / "data")
    assert calls == [(27, 9, 0)]
    assert result.passed, result.failures
    (report,) = result.reports
    assert report.dataset == "20newsgroups" and report.metrics["ari"] == pytest.approx(1.0)
    assert (tmp_path / "runs" / "20newsgroups" / "eval.json").exists()
    bench = sorted((tmp_path / "bench").iterdir())
    assert [p.suffix for p in bench] == [".json", ".md"] and bench[0].name.endswith("-mini.json")
    # The record is committed to the repository: the details (which quote the data) stay in the run's eval.json.
    recorded = json.loads(bench[0].read_text(encoding="utf-8"))["reports"][0]
    assert "details" not in recorded and recorded["metrics"]["ari"] == pytest.approx(1.0)
    # floors are calibrated from records, and int8 segments differ by CPU: the record names the machine
    machine = json.loads(bench[0].read_text(encoding="utf-8"))["machine"]
    assert "usable cores" in machine and f"CPU: {machine}" in bench[1].read_text(encoding="utf-8")
    assert json.loads((tmp_path / "runs" / "20newsgroups" / "eval.json").read_text(encoding="utf-8"))["details"]


def test_a_data_set_bounds_its_own_personas_and_the_others_keep_the_suites(tmp_path: Path) -> None:
    """ci.toml writes 2 blog personas and 3 of the other sets (LLM time on 2 cores): the bound reaches
    the pipeline for the data set that sets it, and only for that one."""
    suite_path = mini_suite(
        tmp_path,
        'name = "mini"\nmetrics = ["labels"]\n[options]\nmax_personas = 3\n'
        '[[datasets]]\nname = "own"\nsource = "20newsgroups"\nlabels = "newsgroup"\nmax_users = 6\nmax_personas = 2\n'
        '[[datasets]]\nname = "suites"\nsource = "20newsgroups"\nlabels = "newsgroup"\nmax_users = 6\n',
    )
    calls: list[tuple[int, int, int]] = []
    inner = mini_pipeline(calls)
    bounds: list[int | None] = []

    def pipeline(texts: pd.DataFrame, run_dir: Path, seed: int, max_personas: int | None = None) -> None:
        bounds.append(max_personas)
        inner(texts, run_dir, seed)

    run_suite(suite_path, tmp_path / "runs", pipeline, data_dir=tmp_path / "data")
    assert bounds == [2, None] and len(calls) == 2
    suite_path.write_text(suite_path.read_text(encoding="utf-8").replace("max_personas = 2", "max_personas = 1"))
    with pytest.raises(Exception, match="max_personas"):  # one persona has nothing to be distinct from
        load_suite(suite_path)


def test_a_suite_narrowed_to_one_data_set_keeps_every_earlier_record(tmp_path: Path) -> None:
    """The full suite is run a data set at a time: the narrowed run's record is named for its data set,
    and a second run the same day never writes over the first day's record."""
    suite_path = mini_suite(
        tmp_path,
        'name = "mini"\nmetrics = ["labels"]\nreport_dir = "../bench"\n'
        '[[datasets]]\nname = "small"\nsource = "20newsgroups"\nlabels = "newsgroup"\nmax_users = 6\n'
        '[[datasets]]\nname = "large"\nsource = "20newsgroups"\nlabels = "newsgroup"\nmax_users = 9\n',
    )
    suite = load_suite(suite_path)
    with pytest.raises(ConfigError, match=r"mini.toml: no data set \['medium'\].*'small', 'large'"):
        suite.only(["medium"])
    cli = ["eval-suite", str(suite_path), "--dataset", "medium", "--no-personas", "--workdir", str(tmp_path / "w")]
    refused = CliRunner().invoke(cli_app(), cli)
    assert refused.exit_code != 0 and "no data set ['medium']" in refused.output
    assert not (tmp_path / "bench").exists() and not (tmp_path / "w").exists()
    calls: list[tuple[int, int, int]] = []
    whole = run_suite(suite, tmp_path / "runs", mini_pipeline(calls), data_dir=tmp_path / "data")
    assert [r.dataset for r in whole.reports] == ["small", "large"] and len(calls) == 2
    first = {p.name: p.read_bytes() for p in (tmp_path / "bench").iterdir()}
    assert sorted(n[11:] for n in first) == ["mini.json", "mini.md"]

    narrowed = suite.only(["large"])
    assert narrowed.name == "mini-large" and [d.key for d in narrowed.datasets] == ["large"]
    assert narrowed.thresholds_for("large") == suite.thresholds_for("large")
    part = run_suite(narrowed, tmp_path / "runs", mini_pipeline(calls), data_dir=tmp_path / "data")
    assert [r.dataset for r in part.reports] == ["large"] and len(calls) == 3 and calls[-1][1] == 9
    again = run_suite(suite, tmp_path / "runs", mini_pipeline(calls), data_dir=tmp_path / "data")
    assert again.passed
    names = sorted(p.name for p in (tmp_path / "bench").iterdir())
    assert len(names) == 6, names
    assert sum(n.endswith("-mini-large.json") for n in names) == 1
    assert sum(n.endswith("-mini.json") for n in names) == 2  # the day's second run beside the first
    for name, content in first.items():  # the first record is as it was
        assert (tmp_path / "bench" / name).read_bytes() == content


# ---------------------------------------------------------------------------------------------------
# Judge
# ---------------------------------------------------------------------------------------------------


def test_a_failing_judge_is_counted_not_read_as_supported(good_run: Path) -> None:
    """A judge that supports persona p0's claims and fails for the others must not read 100% supported."""

    def flaky_judge(messages: list[dict[str, str]]) -> str:
        if "skate" not in messages[1]["content"].split("Claims:")[0]:  # the texts, not planted claims
            raise RuntimeError("backend down")
        n = messages[1]["content"].split("Claims:\n", 1)[1].count("\n") + 1
        return json.dumps({"verdicts": [{"claim": i, "verdict": "supported"} for i in range(1, n + 1)]})

    suite = Suite.model_validate({"name": "t", "metrics": ["judge"], "thresholds": {"judge_supported_min": 0.9}})
    report = evaluate_run(good_run, None, suite, judge=flaky_judge, write=False)
    got = report.metrics
    records = [r for r in report.details["judge"]["records"] if not r["planted"]]
    supported = sum(r["verdict"] == "supported" for r in records)
    assert 0 < supported < len(records)
    assert got["judge_claims"] == len(records)
    assert got["judge_errors"] >= len(records) - supported
    assert got["judge_supported"] == pytest.approx(supported / len(records))
    assert [f.metric for f in report.failures] == ["judge_supported"]
    assert any("no verdict" in n for n in report.notes)


def test_a_yes_man_judge_is_caught_by_planted_claims(good_run: Path) -> None:
    """A judge that calls every claim supported reads judge_supported 1.0; the planted claims (another
    segment's interests and goals, mixed in unmarked) show it is not checking."""

    def yes_man(messages: list[dict[str, str]]) -> str:
        n = messages[1]["content"].split("Claims:\n", 1)[1].count("\n") + 1
        return json.dumps({"verdicts": [{"claim": i, "verdict": "supported"} for i in range(1, n + 1)]})

    suite = Suite.model_validate(
        {"name": "t", "metrics": ["judge"], "thresholds": {"judge_supported_min": 0.9, "judge_planted_caught_min": 0.8}}
    )
    report = evaluate_run(good_run, None, suite, judge=yes_man, write=False)
    assert report.metrics["judge_supported"] == 1.0
    assert report.metrics["judge_planted"] > 0 and report.metrics["judge_planted_caught"] == 0.0
    assert [f.metric for f in report.failures] == ["judge_planted_caught"]
    # The planted claims are another segment's: segment 0 (skaters) gets the mortgage or brunch segment's.
    planted = [r for r in report.details["judge"]["records"] if r["planted"] and r["persona_id"] == "p0"]
    assert planted and all("skate" not in r["claim"] for r in planted)
    # The prompt does not mark them.
    assert "planted" not in json.dumps(report.details["judge"]["records"][0]["claim"])


def test_narrative_check_reads_words_not_the_writers_gate(good_run: Path, tmp_path: Path) -> None:
    """Good personas use their segment's words; one renamed "Tech Enthusiast" with tech interests does
    not, and the lexical check says so even though its quotes and provenance are untouched."""
    report = evaluate_run(good_run, None, Suite.model_validate({"name": "t", "metrics": ["narrative"]}), write=False)
    good = report.metrics["statement_support_lexical"]
    assert good is not None and good >= 0.5

    texts, seg_of = hand_made_texts()
    personas = good_personas()
    personas[0].name, personas[0].tagline = "Tech Enthusiast", "Lives for code and gadgets"
    personas[0].summary = "They write software. They follow programming blogs. They build apps at night."
    personas[0].interests, personas[0].goals = ["Technology", "Programming", "Coding"], ["build a tech brand"]
    personas[0].pain_points = ["slow laptops"]
    bad_run = write_run(tmp_path / "tech", texts, seg_of, personas)
    suite = Suite.model_validate(
        {"name": "t", "metrics": ["narrative"], "thresholds": {"statement_support_lexical_min_min": 0.3}}
    )
    bad = evaluate_run(bad_run, None, suite, write=False)
    assert bad.metrics["statement_support_lexical_min"] == 0.0
    assert bad.metrics["statement_support_lexical"] < good
    assert [f.metric for f in bad.failures] == ["statement_support_lexical_min"]
    unsupported = {r["statement"] for r in bad.details["narrative"]["unsupported"]}
    assert {"Programming", "Tech Enthusiast"} <= unsupported


def test_lexical_support_needs_a_fair_share_of_a_large_segment() -> None:
    """Two texts of a 60-text segment mentioning a word do not make the segment about it; ten do."""
    from persona_llm.evaluation.narrative import LexicalSupport

    rows = [(0, f"Went to work and then cooked dinner with family, day {i}.") for i in range(48)]
    rows += [(0, "My new laptop runs the latest technology, so fast.")] * 2
    rows += [(0, f"Gardening in the backyard again, tomatoes are growing, week {i}.") for i in range(10)]
    rows += [(1, f"Espresso beans and a new grinder, cup {i}.") for i in range(20)]
    texts = pd.DataFrame(rows, columns=["segment_id", "text"])
    lexical = LexicalSupport.from_texts(texts)
    assert not lexical.supports(0, "Technology enthusiast")
    assert lexical.supports(0, "Loves gardening")
    assert LexicalSupport.from_texts(texts, min_share=0.0).supports(0, "Technology enthusiast")  # the old rule


def test_claims_are_checked_against_columns_the_writer_never_saw(tmp_path: Path) -> None:
    """The honest claims test: the run (and so the writer) has no demographic column; the eval reads the
    columns from the input. Given to the writer, they made every claim right by construction."""
    texts, seg_of = hand_made_texts()
    blind = texts.drop(columns=["age_group", "gender"])
    run = write_run(tmp_path / "blind", blind, seg_of, good_personas())
    without_input = evaluate_run(run, write=False)
    assert "claims" in without_input.skipped  # nothing to check against: the run never had the columns
    report = evaluate_run(run, input_texts=texts, write=False)
    assert report.metrics["claims_checked"] == 6 and report.metrics["claims_right_share"] == pytest.approx(1.0)
    # one constant guess (the value most users hold: female, 23-27) is right on 3 of the 6 claims
    assert report.metrics["claims_constant_share"] == pytest.approx(0.5)

    # personas that say "unknown" everywhere contradict nothing: only a floor on right claims catches them
    vague = good_personas()
    for p in vague:
        p.demographics.age_group.value = "unknown"
        p.demographics.gender.value = "unknown"
    suite = Suite.model_validate(
        {"name": "t", "metrics": ["claims"], "thresholds": {"contradictions_max": 0, "claims_right_share_min": 0.6}}
    )
    quiet = evaluate_run(write_run(tmp_path / "vague", blind, seg_of, vague), suite=suite, input_texts=texts, write=False)
    assert quiet.metrics["contradictions"] == 0 and quiet.metrics["claims_right_share"] == 0.0
    assert [f.metric for f in quiet.failures] == ["claims_right_share"]


def test_withheld_columns_never_reach_the_pipeline_and_are_still_scored(tmp_path: Path) -> None:
    suite_path = mini_suite(
        tmp_path,
        'name = "mini"\nmetrics = ["labels"]\n[thresholds]\nari_min = 0.99\n'
        '[[datasets]]\nsource = "20newsgroups"\nlabels = "newsgroup"\nwithheld = ["newsgroup"]\n'
        "min_texts_per_user = 5\nmax_users = 9\n",
    )
    seen: list[list[str]] = []

    def pipeline(texts: pd.DataFrame, run_dir: Path, seed: int) -> None:
        seen.append(list(texts.columns))
        # segments from the user ids ("u<group><n>"): the label column is not there to peek at
        write_run(run_dir, texts, {str(u): int(str(u)[1]) for u in texts["user_id"].unique()}, [])

    result = run_suite(suite_path, tmp_path / "runs", pipeline, data_dir=tmp_path / "data")
    assert seen and all("newsgroup" not in cols for cols in seen)
    assert result.passed and result.reports[0].metrics["ari"] == pytest.approx(1.0)


def test_a_withheld_column_the_data_set_does_not_load_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text('name = "s"\n[[datasets]]\nsource = "20newsgroups"\nwithheld = ["gender"]\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="withheld"):
        load_suite(path)
