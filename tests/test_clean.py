"""Tests for persona_llm.segment.clean, persona_llm.segment.pii and persona_llm.language."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from persona_llm.errors import ConfigError
from persona_llm.schema.frames import REJECT_COLUMNS
from persona_llm.segment.clean import COUNT_KEYS, TextCleaner, binary_reason, strip_html, strip_quotes, strip_signature
from persona_llm.segment.language import detect_language
from persona_llm.segment.pii import find_pii, redact
from tests.pii_cases import NUMERIC_RANGES, ORDINARY_NUMBERS

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def frame(texts: list[str], ids: list[str] | None = None, users: list[str] | None = None) -> pd.DataFrame:
    n = len(texts)
    return pd.DataFrame(
        {
            "text_id": ids or [f"t{i + 1}" for i in range(n)],
            "user_id": users or [f"u{i % 3}" for i in range(n)],
            "text": texts,
            "source_row": list(range(1, n + 1)),
            "plan": ["pro"] * n,
        }
    )


# --------------------------------------------------------------------------- realistic posts

BRAKES_POST = """In article <1993May2.114501.2201@quartz.example.edu>, mwalsh@quartz.example.edu (Mara Walsh) writes:
> Has anyone tried the new ceramic brake pads on a 1988 Civic?
> They cost $79.99 at the shop near me.
>> Older quote from someone else about rotors.

I put them on my '88 last spring. Stopping is smoother and there is far less dust on the wheels.
The only downside is a faint squeal in the first 10 minutes on cold mornings.

|> and what about wet weather?
Wet braking feels the same as the stock pads to me.

Good luck,
Tom Reilly
Reilly Auto Parts, Springfield
tom@reilly-auto.example.com  (555) 201-7788
"""

RELEASE_POST = """On Tue, Mar 3, 2020 at 9:14 AM Priya <priya@example.org> wrote:
> Is the export feature coming back?

Yes, it ships in version 4.2.1 next week. I'll post the release notes here.

--\x20
Sam Ortega | Product team
https://example.org/team
"""

TWO_LINE_ATTRIBUTION = """In article <C5sK1D.C1p@news.example.com>
  jdoe@example.com (Jane Doe) writes:
>The fan on my tower makes a grinding noise.

Mine did that too until I cleaned the dust out of the bearing and added a drop of oil.
"""

COLON_QUOTES = """kim@lab.example.edu writes:
: Is it possible to do a wheelie on a shaft-drive bike?
: I keep hearing it cannot be done.

Yes, it is possible. The shaft just makes the bike lift a little differently.
"""

WRAPPED_ENDING = """I need only one with a Mac interface; the others will be used with IBM-PC
compatibles."""

STATS_ENDING = """Here are the batting numbers so far this season:

Name        AB   H  HR
Alvarez     54  23   2
Brook       28   9   0"""

OUTLOOK_REPLY = """Thanks, the replacement charger works perfectly and arrived a day early.

-----Original Message-----
From: Support Team
Sent: Monday
Subject: Your replacement order

We have shipped your charger.
"""


def test_quotes_and_attributions_are_removed() -> None:
    out = strip_quotes(BRAKES_POST)
    assert "In article" not in out and "Mara Walsh" not in out
    assert "ceramic brake pads" not in out and "rotors" not in out and "wet weather" not in out
    assert "Stopping is smoother" in out and "Wet braking feels the same" in out
    out = strip_quotes(RELEASE_POST)
    assert "wrote:" not in out and "export feature" not in out and "ships in version 4.2.1" in out
    out = strip_quotes(TWO_LINE_ATTRIBUTION)
    assert "Jane Doe" not in out and "grinding" not in out and "cleaned the dust" in out
    out = strip_quotes(COLON_QUOTES)
    assert "wheelie" not in out and "writes:" not in out and "Yes, it is possible." in out
    out = strip_quotes(OUTLOOK_REPLY)
    assert "arrived a day early" in out and "Original Message" not in out and "shipped your charger" not in out


def test_plain_text_with_colons_and_arrows_is_left_alone() -> None:
    text = "My doctor says:\nrest for a week.\nScore: 10 > 9 so we won.\n: not a quote without an attribution"
    assert strip_quotes(text) == text


def test_signatures_are_removed() -> None:
    out = strip_signature(strip_quotes(BRAKES_POST))
    assert out.rstrip().endswith("Good luck,")
    assert "Tom Reilly" not in out and "reilly-auto" not in out and "Springfield" not in out
    out = strip_signature(RELEASE_POST)
    assert "Sam Ortega" not in out and "example.org/team" not in out
    assert strip_signature("Could you send me the manual please?\n\nThanks,\nJason Freund\n").endswith("Thanks,")
    assert strip_signature("The card works fine in my 486.\n\n-Rob\n--\n") == "The card works fine in my 486."
    pgp = (
        "-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA1\n\nThe keys on the public server are current.\n"
        "-----BEGIN PGP SIGNATURE-----\niQCVAwUBK9s8ZK2dsAAA\n=xY1z\n-----END PGP SIGNATURE-----\n"
    )
    assert strip_signature(pgp) == "\nThe keys on the public server are current."


def test_signature_stripping_is_conservative() -> None:
    assert strip_signature(WRAPPED_ENDING) == WRAPPED_ENDING
    assert strip_signature(STATS_ENDING) == STATS_ENDING
    # a last sentence that merely holds an address is content
    text = "If you want the old manuals, mail me at lee@example.com and I will send them on Friday."
    assert strip_signature(text) == text
    # nothing is left if the "signature" is all there is: keep it
    assert strip_signature("Dana Whitfield\nAcme Labs") == "Dana Whitfield\nAcme Labs"


def test_html_is_stripped_but_usenet_angle_brackets_are_not_html() -> None:
    page = (
        "<p>I <b>love</b> the new&nbsp;app &amp; its dark mode.</p><blockquote>Someone else said this.</blockquote>"
        "<p>Battery life is still <i>meh</i>.<br>Overall 4/5.</p><script>var x = 1;</script>"
    )
    out = " ".join(strip_html(page).split())
    assert out == "I love the new app & its dark mode. Battery life is still meh. Overall 4/5."
    usenet = "In <1993Apr1.22@host.example.edu> you said <insert name here> would work."
    assert strip_html(usenet) == usenet


def test_cleaner_on_forum_posts_end_to_end() -> None:
    result = TextCleaner().transform(frame([BRAKES_POST, RELEASE_POST, TWO_LINE_ATTRIBUTION]))
    texts = result.texts["text"].tolist()
    assert texts[0] == (
        "I put them on my '88 last spring. Stopping is smoother and there is far less dust on the wheels. "
        "The only downside is a faint squeal in the first 10 minutes on cold mornings. "
        "Wet braking feels the same as the stock pads to me. Good luck,"
    )
    assert texts[1] == "Yes, it ships in version 4.2.1 next week. I'll post the release notes here."
    assert result.counts["quotes_stripped"] == 3
    assert result.counts["signatures_stripped"] == 2
    assert result.texts["language"].tolist() == ["en", "en", "en"]
    assert result.texts["plan"].tolist() == ["pro"] * 3  # attributes carried through
    for text in texts:
        assert find_pii(text) == []


# --------------------------------------------------------------------------- PII


@pytest.mark.parametrize(
    ("text", "kind", "expected"),
    [
        ("write to jane.roe+news@mail.example.co.uk today", "email", "write to [EMAIL] today"),
        ("old address: DCOLEMAN@UTXVMS or ...!uunet!seas.gwu.edu!louray", "email", "old address: [EMAIL] or [EMAIL]"),
        ("call (555) 123-4567 now", "phone", "call [PHONE] now"),
        ("London office +44 20 7946 0958.", "phone", "London office [PHONE]."),
        ("or 555.123.4567 or 1-800-555-0199", "phone", "or [PHONE] or [PHONE]"),
        ("手机13812345678，随时联系", "phone", "手机[PHONE]，随时联系"),
        ("Tel: +431-391621-283 Fax: (040) 8998-3560", "phone", "Tel: [PHONE] Fax: [PHONE]"),
        ("see https://shop.example.com/item?id=7, it's cheap", "url", "see [URL], it's cheap"),
        ("visit www.example.org/faq.", "url", "visit [URL]."),
        # a mistyped scheme (seen in the blog corpus; the eval's independent detector found it)
        ("SAS website at hppt://support.example.com/rnd/intro/index.html) 5.", "url", "SAS website at [URL]) 5."),
        ("old mirror htttp://ftp.example.org/pub and svn+ssh://code.example.net/x", "url", "old mirror [URL] and [URL]"),
        ("the manual is at example.com/docs/v2 and cs.example.edu", "url", "the manual is at [URL] and [URL]"),
        ("urlLink My trip photos urlLink", "url", "[URL] My trip photos [URL]"),
        ("（e-mail:tony7015@yahoo.com.cn可以了解更多）", "email", "（e-mail:[EMAIL]可以了解更多）"),
        ("访问我的网站www.example-shop.com交流", "url", "访问我的网站[URL]交流"),
        ("电话555-123-4567联系", "phone", "电话[PHONE]联系"),
        ("order 123456789012 was lost", "number", "order [NUMBER] was lost"),
        ("card 4111 1111 1111 1111 declined", "number", "card [NUMBER] declined"),
        ("IBAN DE89 3704 0044 0532 0130 00, thanks", "number", "IBAN [NUMBER], thanks"),
        ("IBAN GB82WEST12345698765432 thanks", "number", "IBAN [NUMBER] thanks"),
        ("left over: DE89 [NUMBER] 00.", "number", "left over: [NUMBER]."),
        ("IP 192.168.1.20, gateway 10.0.0.1.", "number", "IP [NUMBER], gateway [NUMBER]."),
        ("the number here is 940-7222, we", "phone", "the number here is [PHONE], we"),
        ("ring 940-2222222 after six", "phone", "ring [PHONE] after six"),
    ],
)
def test_each_pii_kind_is_redacted(text: str, kind: str, expected: str) -> None:
    out, counts = redact(text)
    assert out == expected
    assert counts[kind] >= 1
    assert find_pii(text) and all(k == kind for k, _ in find_pii(text))
    assert find_pii(out) == []
    assert redact(out)[0] == out  # idempotent


@pytest.mark.parametrize(
    "text",
    [
        "Back in 1993 it cost $19.99, now 24.50 EUR.",
        "Upgrade to version 3.1.2 or v10.0.19045 first.",
        "The store opens at 10:30 and closes at 18:00 on 2021-04-15 (04/15/2021).",
        "We sold 1,000,000 units; pi is 3.14159265358979.",
        "A 486DX2-66 with 16MB, 1280*1024 at 76Hz, 3.5mm jack, pH 7.5.",
        "Files: autoexec.bat, config.sys, notes.txt, e.g. and i.e. are fine; yes.No",
        "ISBN 0-201-63361-2, zip 12345-6789, score 7-0.",
        "In 2024 Python 3.11 cost $19.99; build 1.5.9.1, v1.2.3.4, pages 100-1000, $250-1000.",
        "Product codes A4-2210, SKU 4410-22, XR-450-2210, part 12-3456.",
    ],
)
def test_ordinary_numbers_and_words_are_left_alone(text: str) -> None:
    assert redact(text)[0] == text
    assert find_pii(text) == []


# Emails glued to punctuation: the whole address becomes [EMAIL], the punctuation around it stays.
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("(mail me:john.doe@example.com)", "(mail me:[EMAIL])"),
        ("contact<jane_r@mail.co.uk>", "contact<[EMAIL]>"),
        ("x,bob@foo.org,y", "x,[EMAIL],y"),
        ("email:ann@x.io.", "email:[EMAIL]."),
        ("Mail:JOHN.DOE@EXAMPLE.COM;thanks", "Mail:[EMAIL];thanks"),
        ("write to _john.doe@example.com_ or **ann@x.io**", "write to _[EMAIL]_ or **[EMAIL]**"),
        ("__bob@foo.org__ is my work address", "__[EMAIL]__ is my work address"),
        ("mail:-bob@foo.org or --ann@x.io", "mail:-[EMAIL] or --[EMAIL]"),
        ("so write me...bob@foo.org", "so write me...[EMAIL]"),
        ("and also ...ann@x.io!", "and also ...[EMAIL]!"),
        ("typo .john@example.com here", "typo .[EMAIL] here"),
        ("reach bob@foo.org_ asap", "reach [EMAIL]_ asap"),
        # from the 20 Newsgroups data: a route through hosts is one address; a line break inside one
        ("email@bferrell@uceng.uc.edu\nU. of Cincy", "[EMAIL]\nU. of Cincy"),
        ("* --- jdmooney@kocrsv01@delcoelect.com ---*", "* --- [EMAIL] ---*"),
        ("peter.m@insane.apana.org.a\nu (Peter) writes", "[EMAIL].a\nu (Peter) writes"),
    ],
)
def test_emails_glued_to_punctuation_are_redacted_whole(text: str, expected: str) -> None:
    out, counts = redact(text)
    assert out == expected
    assert counts["email"] == expected.count("[EMAIL]")
    assert all(kind == "email" and "@" in match and match[0].isalnum() for kind, match in find_pii(text))
    assert find_pii(out) == []


# Phone layouts with odd spacing or brackets, and the forms that already worked (kept working).
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Auckland office +64 -9 373 7410.", "Auckland office [PHONE]."),
        ("Fax: +64 -9 373 7410 Auckland", "Fax: [PHONE] Auckland"),
        ("or +64 - 9 - 373 7410, ask for Tom", "or [PHONE], ask for Tom"),
        ("Tokyo 81(3)3280-8339, ask for Ken", "Tokyo [PHONE], ask for Ken"),
        ("call 81(3)3280 8339 today", "call [PHONE] today"),
        ("US +1 (555) 010-9999 or 555.010.9999", "US [PHONE] or [PHONE]"),
        ("dialing either 940-7222 ... or 940-2222222", "dialing either [PHONE] ... or [PHONE]"),
    ],
)
def test_phones_with_odd_spacing_and_brackets_are_redacted(text: str, expected: str) -> None:
    out, counts = redact(text)
    assert out == expected
    assert counts["phone"] == expected.count("[PHONE]")
    assert find_pii(out) == []


@pytest.mark.parametrize("text", NUMERIC_RANGES)
def test_numeric_ranges_are_not_phones(text: str) -> None:
    assert redact(text)[0] == text
    assert find_pii(text) == []


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("the number here is 940-7222, we", "the number here is [PHONE], we"),
        ("ring 940-2222222 after six", "ring [PHONE] after six"),
        ("the desk is 737-1000, the lab 940-7250", "the desk is [PHONE], the lab [PHONE]"),
        ("front desk 350-7222 or 250-1001", "front desk [PHONE] or [PHONE]"),
        ("call 250-1000 today, Tel. 300-4000", "call [PHONE] today, Tel. [PHONE]"),
        # from the 20 Newsgroups data: round business numbers after an area code or another phone
        ("BBS phone number is (408)\n730-1100.  Their", "BBS phone number is (408)\n[PHONE].  Their"),
        ("Durham, NC  27710   (919) 660-5111 or 660-5100", "Durham, NC  27710   [PHONE] or [PHONE]"),
        ("ring 940-7222 about the budget: 250-1000 dollars", "ring [PHONE] about the budget: [PHONE] dollars"),
    ],
)
def test_local_phones_that_look_like_ranges_stay_redacted(text: str, expected: str) -> None:
    """Round ends (250-1000) or a quantity word make a range, but phone context before it (a phone word,
    an area code, another phone) makes it a phone: over-redacting a range next to a phone is the safe side."""
    assert redact(text)[0] == expected


@pytest.mark.parametrize("text", ORDINARY_NUMBERS)
def test_new_email_and_phone_rules_leave_ordinary_numbers_alone(text: str) -> None:
    assert redact(text)[0] == text
    assert find_pii(text) == []


def test_cleaner_counts_pii_per_row() -> None:
    texts = [
        "Email me at first.last@example.com about the refund, it has been three weeks already.",
        "Two addresses a@example.com and b@example.com plus https://example.com/help for the record.",
        "No personal data in this one at all, just a long complaint about slow delivery times.",
    ]
    result = TextCleaner(dedupe="none").transform(frame(texts))
    assert result.counts["pii_emails"] == 2
    assert result.counts["pii_urls"] == 1
    assert result.counts["pii_phones"] == 0
    assert "[EMAIL]" in result.texts["text"].iloc[1]


# --------------------------------------------------------------------------- language


@pytest.mark.parametrize(
    ("text", "lang"),
    [
        ("这款耳机音质很好，低音很足，佩戴也舒服。就是充电盒有点大。", "zh"),
        ("很好", "zh"),
        ("The delivery was fast and the packaging kept everything safe.", "en"),
        ("Das Paket kam pünktlich an und die Qualität ist wirklich sehr gut.", "de"),
        ("Le service client a été très rapide et vraiment aimable avec moi.", "fr"),
        ("日本語のレビューです。とても使いやすいです。", "ja"),
        ("!!! 123 ???", "und"),
        ("ok", "und"),
        ("", "und"),
    ],
)
def test_detect_language(text: str, lang: str) -> None:
    assert detect_language(text) == lang


def test_chinese_text_survives_cleaning_intact() -> None:
    reviews = [
        "这款耳机音质很好，低音很足，佩戴也舒服。就是充电盒有点大，放口袋里不太方便。",
        "物流很快，第二天就到了。包装完好，书的印刷质量也不错，推荐购买！",
    ]
    result = TextCleaner().transform(frame(reviews))
    assert result.texts["text"].tolist() == reviews
    assert result.texts["language"].tolist() == ["zh", "zh"]


def test_language_filter_rejects_with_reason() -> None:
    texts = [
        "The battery lasts two full days and charging is quick.",
        "这款手机电池很耐用，充电速度也很快，整体非常满意。",
    ]
    result = TextCleaner(languages=["en-US"]).transform(frame(texts))
    assert result.texts["text_id"].tolist() == ["t1"]
    assert result.rejects["reason"].tolist() == ["language 'zh' not in ['en']"]
    assert result.counts["wrong_language"] == 1


# --------------------------------------------------------------------------- duplicates

LONG_REVIEW = (
    "I have used this vacuum for six months in a flat with two cats. Suction is strong on carpets and it "
    "picks up litter from the tiles without scattering it. The bin is small, so I empty it after every "
    "room, and the filter needs a rinse every two weeks or the motor starts to whine. Battery lasts about "
    "forty minutes on the normal setting, twenty on turbo. For the price I would buy it again."
)


def test_exact_duplicates_ignore_case_whitespace_and_punctuation() -> None:
    texts = [LONG_REVIEW, "  " + LONG_REVIEW.upper().replace(",", "").replace(".", "!") + "  ", "Something else entirely, a short note on shipping."]
    result = TextCleaner().transform(frame(texts, ids=["a", "b", "c"]))
    assert result.texts["text_id"].tolist() == ["a", "c"]
    assert result.rejects["reason"].tolist() == ["exact duplicate of text 'a'"]
    assert result.rejects["text"].tolist() == [texts[1]]  # the original text
    assert result.counts["exact_duplicates"] == 1 and result.counts["near_duplicates"] == 0


def test_near_duplicates_are_found_and_name_the_kept_text() -> None:
    edited_start = "Update: " + LONG_REVIEW.replace("six months", "seven months")
    longer = (
        "Our old stick vacuum finally died after eight years, so after a lot of reading we picked this model "
        "over the two big brands because the spare parts are cheap and the dock fits under the stairs. Setup "
        "took five minutes and the app is optional, which I appreciated. " + LONG_REVIEW
    )
    edited_middle = longer.replace("Suction is strong on carpets", "The suction is very strong on rugs")
    different = (
        "This vacuum is loud and the battery died after a month. Suction on carpets is weak and the brush "
        "tangles with hair every single day. Customer service never answered my emails, so I returned it."
    )
    texts = [LONG_REVIEW, edited_start, longer, edited_middle, different]
    result = TextCleaner(dedupe="near").transform(frame(texts, ids=["k", "s", "l", "m", "d"]))
    assert result.texts["text_id"].tolist() == ["k", "l", "d"]
    reasons = dict(zip(result.rejects["text_id"], result.rejects["reason"], strict=True))
    assert reasons["s"].startswith("near duplicate of text 'k' (Jaccard")
    assert reasons["m"] == "near duplicate of text 'l' (same first and last 200 characters)"
    assert result.counts["near_duplicates"] == 2

    exact_only = TextCleaner(dedupe="exact").transform(frame(texts, ids=["k", "s", "l", "m", "d"]))
    assert exact_only.texts["text_id"].tolist() == ["k", "s", "l", "m", "d"]
    none = TextCleaner(dedupe="none").transform(frame([LONG_REVIEW, LONG_REVIEW]))
    assert len(none.texts) == 2


# --------------------------------------------------------------------------- binary, length, cap


def test_binary_content_is_rejected() -> None:
    uu = "Here is the driver you asked for.\n\nbegin 644 driver.zip\n" + "M" + "4$L#!!0" * 8 + "(0\n"
    uu += ("M" + "5&AI<R!I<R!N;W0@82!R96%L(&9I;&4@8G5T(&ET(&QO;VMS(&QI:V4@:70" + "\n") * 6 + "end\n"
    b64 = "Attached below.\n" + ("QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlqa2xtbm9wcXJzdHV2d3h5" + "\n") * 8
    art = "\n".join(["+--------+--------+", "| 12 | 34 | 56 |", "|-----+-----|", "| 78 | 90 | 11 |"] * 4)
    assert binary_reason(uu) == "binary content (uuencoded block)"
    assert binary_reason(b64) == "binary content (base64 block)"
    assert binary_reason(art) is not None and binary_reason(art).startswith("mostly non-letters")  # type: ignore[union-attr]
    assert binary_reason(LONG_REVIEW) is None
    assert binary_reason(STATS_ENDING + "\nThe bullpen has been great and the rookies are hitting well.") is None
    result = TextCleaner().transform(frame([uu, b64, art, LONG_REVIEW]))
    assert result.texts["text_id"].tolist() == ["t4"]
    assert result.counts["binary"] == 3


def test_too_short_after_cleaning() -> None:
    texts = ["> all of this is quoted\n> and nothing else\n\nAgreed!", "", "Short but long enough to stay in."]
    result = TextCleaner().transform(frame(texts))
    assert result.texts["text_id"].tolist() == ["t3"]
    assert result.rejects["reason"].tolist() == ["too short after cleaning (7 chars)", "too short after cleaning (0 chars)"]
    assert result.counts["too_short"] == 2


def test_cap_counts_and_cuts_at_a_word() -> None:
    long_text = ("Mail me at someone@example.com about the warranty terms please. " * 60).strip()
    result = TextCleaner(max_chars=300, dedupe="none").transform(frame([long_text, "A short and sweet review text."]))
    capped = result.texts["text"].iloc[0]
    assert len(capped) <= 300 and capped.endswith(("please.", "[EMAIL]", "terms", "warranty", "about", "the", "at"))
    assert not capped.endswith("[")
    assert result.counts["capped"] == 1
    assert find_pii(capped) == []
    zh = "质量很好" * 200
    out = TextCleaner(max_chars=50).transform(frame([zh]))
    assert out.texts["text"].iloc[0] == zh[:50]


def test_whitespace_is_collapsed_without_gluing_words() -> None:
    text = "First line\nsecond\tline\r\n\r\nthird\u00a0line   with  gaps\u200b."
    result = TextCleaner().transform(frame([text]))
    assert result.texts["text"].iloc[0] == "First line second line third line with gaps."


# --------------------------------------------------------------------------- the frame contract


def test_counts_and_rejects_add_up() -> None:
    texts = [
        BRAKES_POST,
        BRAKES_POST,  # exact duplicate
        "tiny",  # too short
        "这款手机电池很耐用，充电速度也很快，整体非常满意。",
        "<div>Nice <b>shoes</b>, they run a size small though.</div>",
    ]
    result = TextCleaner().transform(frame(texts))
    assert set(result.counts) == set(COUNT_KEYS)
    assert len(result.texts) + len(result.rejects) == len(texts)
    assert result.counts["kept"] == len(result.texts) == 3
    assert result.counts["html_stripped"] == 1
    rj = result.rejects
    assert list(rj.columns) == list(REJECT_COLUMNS)
    assert set(rj["stage"]) == {"clean"} and set(rj["field"]) == {"text"}
    assert rj["source_row"].tolist() == [2, 3]
    assert rj["text"].tolist() == [BRAKES_POST, "tiny"]
    assert list(result.texts.columns) == ["text_id", "user_id", "text", "source_row", "plan", "language"]


def test_switching_steps_off() -> None:
    cleaner = TextCleaner(strip_quotes=False, strip_signatures=False, redact_pii=False, dedupe="none")
    out = cleaner.transform(frame([RELEASE_POST])).texts["text"].iloc[0]
    assert "priya@example.org" in out and "> Is the export feature coming back?" in out and "Sam Ortega" in out


def test_parameters_are_checked_when_transform_runs() -> None:
    cleaner = TextCleaner(dedupe="fuzzy")  # no work (and no check) in __init__
    assert cleaner.dedupe == "fuzzy"
    with pytest.raises(ConfigError, match="dedupe must be one of none, exact, near"):
        cleaner.transform(frame(["some text that is long enough"]))
    with pytest.raises(ConfigError, match="max_chars"):
        TextCleaner(max_chars=10, min_chars=20).transform(frame(["some text that is long enough"]))
    with pytest.raises(ConfigError, match="languages"):
        TextCleaner(languages="en").transform(frame(["some text that is long enough"]))  # type: ignore[arg-type]


def test_missing_text_values_are_rejected_not_crashing() -> None:
    df = frame(["a perfectly normal sentence here", "x"])
    df.loc[1, "text"] = None
    result = TextCleaner().transform(df)
    assert result.texts["text_id"].tolist() == ["t1"]
    assert result.rejects["reason"].tolist() == ["too short after cleaning (0 chars)"]


# --------------------------------------------------------------------------- real data


@pytest.mark.slow
def test_real_20newsgroups_slice_has_no_pii_or_quotes_left() -> None:
    path = SHARED / "20newsgroups" / "posts.csv.gz"
    if not path.exists():
        pytest.skip("shared 20newsgroups data not available")
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    sl = df.iloc[::30].head(500).rename(columns={"doc_id": "text_id", "body": "text"}).reset_index(drop=True)
    sl["source_row"] = range(1, len(sl) + 1)
    result = TextCleaner().transform(sl)
    assert len(result.texts) + len(result.rejects) == 500
    assert len(result.texts) > 450
    assert result.counts["quotes_stripped"] > 200 and result.counts["signatures_stripped"] > 200
    original = dict(zip(sl["text_id"], sl["text"], strict=True))
    quoted = survived = 0
    for text_id, text in zip(result.texts["text_id"], result.texts["text"], strict=True):
        assert find_pii(text) == [], text_id
        assert "writes:" not in text and "wrote:" not in text and "In article <" not in text
        for line in original[text_id].split("\n"):
            stripped = line.lstrip()
            if stripped.startswith(">"):
                content = " ".join(stripped.lstrip("> ").split())
                if len(content) >= 40:
                    quoted += 1
                    survived += redact(content)[0] in text
    assert quoted > 1000
    # a handful of authors re-type a line they quoted; quoted lines themselves are all gone
    assert survived <= 0.01 * quoted


def test_short_chinese_review_is_long_enough() -> None:
    # 9 Chinese characters say as much as ~30 Latin ones: not "too short" at the default min_chars
    df = pd.DataFrame({"text_id": ["a", "b"], "user_id": ["u", "v"], "text": ["质量很好，送货也快", "ok thx"],
                       "source_row": [1, 2]})
    res = TextCleaner().transform(df)
    assert res.texts["text"].tolist() == ["质量很好，送货也快"]
    assert res.rejects["reason"].str.startswith("too short").tolist() == [True]
