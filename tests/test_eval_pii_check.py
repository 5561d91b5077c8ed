"""The eval's independent PII detector (evaluation/pii_check.py): each leak kind, ordinary text, and
that the privacy metric is not 0 by construction on what the redactor leaves."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from persona_llm.evaluation import metrics as M
from persona_llm.evaluation.pii_check import find_leaks, iban_valid, luhn_valid
from persona_llm.segment.pii import find_pii, redact
from tests.pii_cases import NUMERIC_RANGES, ORDINARY_NUMBERS

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("text", "kind", "match"),
    [
        ("write to jane.roe+news@mail.example.co.uk today", "email", "jane.roe+news@mail.example.co.uk"),
        ("see https://shop.example.com/item?id=7 now", "url", "https://shop.example.com/item?id=7"),
        ("visit www.example.org for more", "url", "www.example.org"),
        ("docs at example.com/docs today", "url", "example.com/docs"),
        ("call (555) 123-4567 now", "phone", "(555) 123-4567"),
        ("London office +44 20 7946 0958", "phone", "+44 20 7946 0958"),
        ("the number here is 940-7222, we", "phone", "940-7222"),
        ("ring 940-2222222 after six", "phone", "940-2222222"),
        ("手机13812345678随时联系", "phone", "13812345678"),
        ("Tel: 391621-283 in the office", "phone", "391621-283"),
        ("the server at 192.168.1.20 is down", "ipv4", "192.168.1.20"),
        ("ping 10.0.0.1.", "ipv4", "10.0.0.1"),
        ("pay to DE89 3704 0044 0532 0130 00 please", "iban", "DE89 3704 0044 0532 0130 00"),
        ("pay to GB82WEST12345698765432 please", "iban", "GB82WEST12345698765432"),
        ("pay to DE89 [NUMBER] 00 please", "iban_remnant", "DE89 [NUMBER]"),
        ("card 4111 1111 1111 1111 declined", "card", "4111 1111 1111 1111"),
        ("card 4111-1111-1111-1111 declined", "card", "4111-1111-1111-1111"),
        ("card 378282246310005 declined", "card", "378282246310005"),
    ],
)
def test_each_leak_kind_is_caught(text: str, kind: str, match: str) -> None:
    assert (kind, match) in find_leaks(text)


@pytest.mark.parametrize(
    "text",
    [
        "Back in 1993 it cost $19.99, now 24.50 EUR; in 2024 it is 3.11 times more.",
        "Upgrade to version 3.1.2, v10.0.19045 or Evolution (1.5.9.1) first.",
        "The store opens at 10:30 and closes at 18:00 on 2021-04-15 (04/15/2021).",
        "ISBN 0-201-63361-2, zip 12345-6789, score 7-0, pages 100-1000, $250-1000.",
        "Product codes A4-2210, SKU 4410-22, XR-450-2210 and part 12-3456 are fine.",
        "A 16-digit number that fails Luhn: 1234 5678 9012 3456.",
        "Not an IBAN: DE12 3704 0044 0532 0130 00 fails its checksum.",
        "Newsgroups comp.org.acm and comp.org.eff.talk; files notes.txt, e.g. and i.e.",
        "already redacted: [EMAIL] [PHONE] [URL] [NUMBER]",
        "没有个人信息的评论，质量很好，价格199元。",
    ],
)
def test_ordinary_text_is_not_a_leak(text: str) -> None:
    assert find_leaks(text) == []


@pytest.mark.parametrize(
    ("text", "kind", "match"),
    [
        ("(mail me:john.doe@example.com)", "email", "john.doe@example.com"),
        ("contact<jane_r@mail.co.uk>", "email", "jane_r@mail.co.uk"),
        ("x,bob@foo.org,y", "email", "bob@foo.org"),
        ("email:ann@x.io.", "email", "ann@x.io"),
        ("write to _john.doe@example.com_ now", "email", "john.doe@example.com"),
        ("mail:-bob@foo.org", "email", "bob@foo.org"),
        ("so write me...bob@foo.org", "email", "bob@foo.org"),
        ("Auckland office +64 -9 373 7410.", "phone", "+64 -9 373 7410"),
        ("or +64 - 9 - 373 7410, ask for Tom", "phone", "+64 - 9 - 373 7410"),
        ("Tokyo 81(3)3280-8339, ask for Ken", "phone", "81(3)3280-8339"),
        ("US +1 (555) 010-9999 today", "phone", "+1 (555) 010-9999"),
        ("or 555.010.9999 today", "phone", "555.010.9999"),
        ("or (555)-010-9999 today", "phone", "(555)-010-9999"),
        ("dialing either 940-7222 ... or", "phone", "940-7222"),
        ("or 940-2222222 after six", "phone", "940-2222222"),
        ("the desk is 737-1000, thanks", "phone", "737-1000"),
        ("the lab is 350-7222, thanks", "phone", "350-7222"),
        ("call 250-1000 today", "phone", "250-1000"),
        ("Tel. 300-4000 today", "phone", "300-4000"),
        ("BBS phone number is (408)\n730-1100.  Their", "phone", "730-1100"),
        ("Durham, NC  27710   (919) 660-5111 or 660-5100", "phone", "660-5100"),
        ("redacted: [PHONE] or 660-5100", "phone", "660-5100"),
    ],
)
def test_glued_emails_and_odd_phone_layouts_are_caught(text: str, kind: str, match: str) -> None:
    assert (kind, match) in find_leaks(text)


@pytest.mark.parametrize(
    "text",
    [
        *NUMERIC_RANGES,
        *ORDINARY_NUMBERS,
    ],
)
def test_ranges_and_ordinary_numbers_are_not_phones(text: str) -> None:
    assert find_leaks(text) == []


@pytest.mark.parametrize(
    "text",
    [
        "(mail me:john.doe@example.com) or _ann@x.io_ or me...bob@foo.org",
        "+64 -9 373 7410, 81(3)3280-8339, +1 (555) 010-9999, 555.010.9999",
        "dialing either 940-7222 ... or 940-2222222, budget 250-1000 dollars, pages 250-1000",
        "email@bferrell@uceng.uc.edu, peter.m@insane.apana.org.a\nu writes; phone (408)\n730-1100",
        # the full suite's blog run (2026-11-30): a mistyped scheme let the domain and path through
        "scalability (SAS website at hppt://support.example.com/rnd/scalability/intro/index.html) 5.",
    ],
)
def test_what_the_redactor_leaves_of_the_new_cases_is_clean(text: str) -> None:
    """Both rule sets agree on the new cases: the redacted text holds no leak for the eval's detector,
    and the ranges the redactor keeps are not flagged."""
    redacted = redact(text)[0]
    assert redacted != text
    assert find_leaks(redacted) == [], redacted


def test_checksums() -> None:
    assert luhn_valid("4111111111111111") and not luhn_valid("4111111111111112")
    assert iban_valid("DE89 3704 0044 0532 0130 00") and not iban_valid("DE12 3704 0044 0532 0130 00")


def test_the_eval_detector_does_not_import_the_redactor() -> None:
    """Independence: the privacy check must not reuse the rules it is checking."""
    tree = ast.parse((ROOT / "persona_llm" / "evaluation" / "pii_check.py").read_text(encoding="utf-8"))
    imported = {
        node.module if isinstance(node, ast.ImportFrom) else alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }
    assert not any(name and "pii" in name for name in imported), imported


@pytest.mark.parametrize(
    "text",
    [
        "server 192.168.1.20 is down",
        "IBAN DE89 3704 0044 0532 0130 00 please",
        "left over: DE89 [NUMBER] 00.",
        "Fax: +64 -9 373 7410 Auckland",  # a phone layout the redactor missed before its spaced-dash rule
    ],
)
def test_the_privacy_metric_counts_what_the_redactors_own_check_would_miss(text: str) -> None:
    """Not 0 by construction: a leak in stored text counts even where the redactor's rules see none."""
    found = M.pii_findings([("texts.parquet:t1", text)])
    assert len(found) >= 1 and found[0]["where"] == "texts.parquet:t1"
    assert all("192.168.1.20" not in f["match"] for f in found)  # masked


def test_the_redactor_output_is_checked_by_the_other_detector() -> None:
    """What the old redactor left of an IBAN ("DE89 [NUMBER] 00") is a finding; the fixed one leaves none."""
    assert M.pii_findings([("t", "DE89 [NUMBER] 00")])
    for text in ("IBAN DE89 3704 0044 0532 0130 00", "host 10.0.0.12", "call 940-7222 or 940-2222222"):
        redacted = redact(text)[0]
        assert M.pii_findings([("t", redacted)]) == [], redacted
        assert find_pii(redacted) == []
