"""A second, independent PII detector for the privacy metric.

The redactor (`persona_llm.segment.pii`) cannot check its own output: whatever its rules miss, the same
rules miss again, so scanning redacted text with them scores 0 by construction. This module is a
separately written rule set that never imports the redactor; the eval's `pii` metric counts what it
finds in what a run shows or stores. Each rule is a plain regular expression, with a validator where a
shape alone would flag ordinary text (Luhn for card numbers, ISO 13616 mod-97 for IBANs, the words
around a phone-shaped range).

Kinds: email, url, ipv4, iban, iban_remnant (a country code and check digits left in front of a
redaction placeholder: "DE89 [NUMBER] 00"), card, phone (international, also "+64 -9 373 7410",
a country code before a bracketed area code "81(3)3280-8339", North American, 7-digit local "940-7222",
"940-2222222", Chinese mobiles, and digits after a phone keyword). Emails are found inside punctuation
("_bob@x.org_", "me...bob@x.org"). Numeric ranges are not phones: a local-phone shape with round ends
("250-1000"), a quantity word or currency sign before it or a unit after it ("pages 345-1012"), unless a
phone word, an area code or a [PHONE] stands in the 40 characters before it.

What it cannot catch: names, street addresses, dates of birth, national ids without a fixed shape,
phone numbers written with spaces only and no keyword ("940 7222"), a local phone that reads as a
range ("940-2000", "about 940-7222"; "call 940-2000" is caught), numbers spelt out in words,
IPv6 addresses, and IPv4 addresses whose four parts are all single digits (left alone: "1.5.9.1" is
far more often a version than an address).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["KINDS", "find_leaks", "iban_valid", "luhn_valid"]

KINDS = ("email", "url", "ipv4", "iban", "iban_remnant", "card", "phone")


def luhn_valid(digits: str) -> bool:
    """The Luhn checksum every payment card number satisfies (digits only, 13-19 of them)."""
    if not digits.isdigit() or not 13 <= len(digits) <= 19:
        return False
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def iban_valid(candidate: str) -> bool:
    """ISO 13616: country letters, two check digits, and the whole, rotated and lettered, is 1 mod 97."""
    s = "".join(candidate.split()).upper()
    if not 15 <= len(s) <= 34 or not s[:2].isalpha() or not s[2:4].isdigit() or not s.isalnum():
        return False
    rotated = s[4:] + s[:4]
    number = "".join(str(int(ch, 36)) for ch in rotated)
    return int(number) % 97 == 1


def _digit_count(s: str) -> int:
    return sum(ch.isdigit() for ch in s)


def _phone_digits(low: int, high: int) -> Callable[[str], bool]:
    return lambda match: low <= _digit_count(match) <= high


def _card(match: str) -> bool:
    return luhn_valid(re.sub(r"[ -]", "", match))


_ALNUM = re.compile(r"[A-Za-z0-9]")


def _address_offset(match: str) -> int | None:
    """Where an email address starts in its match: after "_", "-", "." or an ellipsis glued before it
    ("_bob@x.org_", "mail:-bob@x.org", "me...bob@x.org"); None when the local part has no letter or digit."""
    local = match[: match.index("@")]
    after_ellipsis = local.rfind("..") + 2 if ".." in local else 0
    for begin in (after_ellipsis, 0):  # "a...@x.org": nothing after the dots, the address is all of it
        first = _ALNUM.search(local, begin)
        if first is not None:
            return first.start()
    return None


def _ipv4(match: str) -> bool:
    parts = match.split(".")
    return all(int(p) <= 255 for p in parts) and any(len(p) > 1 for p in parts)


@dataclass(frozen=True)
class _Rule:
    kind: str
    pattern: re.Pattern[str]
    check: Callable[[str], bool] | None = None
    group: int = 0  # the part that is the leak ("Tel: " before a number is not)
    veto: Callable[[str, int, int], bool] | None = None  # (text, start, end) -> not a leak after all
    offset: Callable[[str], int | None] | None = None  # where in the match the leak starts; None: no leak


def _rx(pattern: str, flags: int = 0) -> re.Pattern[str]:
    # ASCII classes: a Chinese character next to an address is not part of it
    return re.compile(pattern, flags | re.ASCII)


# A dash between a 3-digit and a 4- (or 7-) digit number is a local phone ("940-7222") unless it reads as
# a range of quantities: both ends round, a quantity word or currency sign just before it, or a unit
# just after it; and phone context before it (a phone word, an area code, a phone or its placeholder)
# makes it a phone again. These lists are this module's own, not the redactor's.
_RANGE_WORD_BEFORE = _rx(
    r"(?:\b(?:pages?|pp|between|budget|range|ranging|approx|approximately|about|around|roughly|circa|ca)\.?"
    r"|[$€£¥])\s*$",
    re.I,
)
_RANGE_UNIT_AFTER = _rx(
    r"\s*(?:dollars?|euros?|pounds?|usd|eur|gbp|yuan|rmb|yen|pages?|words?|characters?|km|miles?|m|cm|mm|ft|feet|"
    r"kg|lbs?|g|mg|ml|hz|khz|mhz|kb|mb|gb|ms|people|persons|users|units|items|copies|times|rpm|mah|calories|kcal)\b",
    re.I,
)
_PHONE_NEARBY = _rx(
    r"\b(?:tel|tele|telephone|phone|ph|fax|call|dial|voice|cell|mobile)\b|\[PHONE\]|\(\d{3}\)",
    re.I,
)


def _is_range(text: str, start: int, end: int) -> bool:
    """True where the phone-shaped text[start:end] ("250-1000") is a range of numbers, not a phone."""
    low, high = text[start:end].split("-")
    if _PHONE_NEARBY.search(text[max(0, start - 40) : start]):  # "(408)\n730-1100", "Fax 250-1000"
        return False
    if int(low) % 10 == 0 and int(high) % 100 == 0:  # round ends: 250-1000, 750-1500, 300-4000
        return True
    before, after = text[max(0, start - 20) : start], text[end : end + 20]
    return bool(_RANGE_WORD_BEFORE.search(before) or _RANGE_UNIT_AFTER.match(after))


_NOT_AFTER = r"(?<![\w.$€£¥/+-])"  # a phone number does not continue a word, a decimal, a price or a path
_NOT_BEFORE = r"(?![\w-]|[./]\d)"

_RULES: tuple[_Rule, ...] = (
    # a whole run of local-part characters before the "@" (starting only where a run starts keeps it linear
    # on long tokens); `_address_offset` then drops the punctuation glued before the address
    _Rule(
        "email",
        _rx(r"(?<![A-Za-z0-9._%+'-])[A-Za-z0-9._%+'-]+@[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*\.[A-Za-z]{2,}"),
        offset=_address_offset,
    ),
    _Rule("url", _rx(r"\b(?:https?|ftp)://[^\s<>\"']+|\bwww\d?\.[A-Za-z0-9-]+\.[^\s<>\"']+", re.I)),
    _Rule(
        "url",
        _rx(
            r"(?<![\w.@-])(?:[A-Za-z0-9-]+\.)+(?:com|org|net|edu|gov|io|info|biz|co\.uk|de|cn|fr|jp|ru)"
            r"(?![\w-]|\.\w)(?:/[^\s<>\"']*)?",  # "comp.org.acm" is a newsgroup, not a host
            re.I,
        ),
    ),
    _Rule("ipv4", _rx(r"(?<![\w.])\d{1,3}(?:\.\d{1,3}){3}(?![\w]|\.\d)"), _ipv4),
    _Rule("iban", _rx(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b"), iban_valid),
    _Rule("iban_remnant", _rx(r"\b[A-Z]{2}\d{2}[ -]?\[(?:NUMBER|PHONE|IBAN)\]")),
    _Rule(
        "card",
        _rx(r"(?<![\d.-])(?:\d{13,19}|\d{4}([ -])\d{4}\1\d{4}\1\d{1,7}|\d{4}([ -])\d{6}\2\d{5})(?![\d]|[.-]\d)"),
        _card,
    ),
    # international: +44 20 7946 0958, +1 (555) 123-4567, +64 -9 373 7410, +64 - 9 - 373 7410
    _Rule(
        "phone",
        _rx(r"(?<![\w+])\+\d{1,3}(?: ?[./-]? ?\(?\d{1,5}\)?){2,6}" + _NOT_BEFORE),
        _phone_digits(8, 15),
    ),
    # a country code written without "+", right before a bracketed area code: 81(3)3280-8339
    _Rule("phone", _rx(r"(?<![\w.+-])\d{1,3}\(\d{1,4}\)\d[\d .-]{5,14}\d" + _NOT_BEFORE), _phone_digits(8, 15)),
    # North American: (555) 123-4567, (555)-123-4567, 555-123-4567, 555.123.4567
    _Rule("phone", _rx(_NOT_AFTER + r"(?:\(\d{3}\)[ -]?|\d{3}[ .-])\d{3}[ .-]\d{4}" + _NOT_BEFORE)),
    # 7-digit local numbers with a dash: 940-7222; and 3 + 7 digits: 940-2222222; not ranges (250-1000)
    _Rule("phone", _rx(_NOT_AFTER + r"[2-9]\d{2}-(?:\d{4}|\d{7})" + _NOT_BEFORE), veto=_is_range),
    # Chinese mobiles: 13812345678
    _Rule("phone", _rx(r"(?<![\d.])1[3-9]\d{9}(?![\d]|\.\d)")),
    # digits after a phone keyword: "Tel: 391621-283", "phone 5551234"
    _Rule(
        "phone",
        _rx(r"\b(?:tel|phone|fax|mobile|cell|call)\b[.:#]?\s*(\+?\d[\d ()./-]{4,20}\d)" + _NOT_BEFORE, re.I),
        _phone_digits(6, 15),
        group=1,
    ),
)


def find_leaks(text: str) -> list[tuple[str, str]]:
    """Every (kind, matched text) this detector finds, rule by rule; a span found by an earlier rule
    is not reported again by a later one (a URL's host is not also an email, a card not also a phone)."""
    found: list[tuple[str, str]] = []
    taken: list[tuple[int, int]] = []
    for rule in _RULES:
        for m in rule.pattern.finditer(text):
            start, end = m.span(rule.group)
            match = m.group(rule.group)
            if rule.check is not None and not rule.check(match):
                continue
            if rule.veto is not None and rule.veto(text, start, end):
                continue
            if rule.offset is not None:
                cut = rule.offset(match)
                if cut is None:
                    continue
                start, match = start + cut, match[cut:]
            if any(start < e and s < end for s, e in taken):
                continue
            taken.append((start, end))
            found.append((rule.kind, match))
    return found
