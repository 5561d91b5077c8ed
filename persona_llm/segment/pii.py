"""Find and redact personal data (emails, phone numbers, URLs, IBANs, IPv4 addresses, long digit ids).

`redact` and `find_pii` share one ordered list of detectors, so whatever `redact` would replace is
exactly what `find_pii` reports, and the privacy scan of a redacted text finds nothing.

Detectors run one after another (URLs before emails before bare domains before phones before
numbers), each on the text the previous ones left, so one span is never reported twice.
Ordinary numbers stay: years (1993), prices ($19.99), versions (3.1.2), times (10:30), dates, and
ranges. A "NNN-NNNN" shaped like a local phone (940-7222) is a range instead when both ends are round
(first a multiple of 10, second of 100: 250-1000), a quantity word stands before it ("pages 345-1012")
or a unit after it ("450-1250 words"), or a currency sign before it; phone context in the 40 characters
before it (a phone word as in "call 250-1000", an area code "(408)", a [PHONE]) still makes it a phone.
Punctuation glued to an email address stays ("(mail:[EMAIL])", "_[EMAIL]_").
IBANs (checksum-valid) and IPv4 addresses are numeric identifiers: kind "number", placeholder [NUMBER].
Four dotted parts that are all single digits ("1.5.9.1") are taken for a version, not an address.

The eval does not trust this module to check itself: its privacy metric uses a separately written
detector (`persona_llm.evaluation.pii_check`).

Speed: Python's `re` is slow at patterns that cannot start with a literal, so each detector has
an *anchor* every match must contain ("@", "://", ".com", a run of digits...). Cheap anchor
searches mark small windows around the anchors (widened to whitespace), and the detectors run only
inside those windows. Since a window starts and ends at whitespace (or the text's ends) and every
match contains an anchor, this gives the same result as running every detector on the whole text.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["PII_KINDS", "PLACEHOLDERS", "find_pii", "redact"]

PII_KINDS = ("email", "phone", "url", "number")
PLACEHOLDERS = {"email": "[EMAIL]", "phone": "[PHONE]", "url": "[URL]", "number": "[NUMBER]"}

# Top-level domains accepted for bare domains ("example.com/path"). English-looking two-letter ones
# ("in", "it", "me", "no", "is", "at", "be", "to", "us", "so") are left out: "yes.No" is no domain.
_TLDS = (
    "com|org|net|edu|gov|mil|int|info|biz|name|pro|io|ai|app|dev|xyz|online|site|shop|store|tech|blog|"
    "co|uk|de|fr|jp|cn|ca|au|ru|nl|se|fi|dk|ch|es|pl|cz|gr|pt|ie|nz|za|br|mx|ar|kr|tw|hk|sg|il|tr|hu|"
    "ro|sk|si|hr|rs|ua|by|ee|lv|lt|cl|pe|ve|uy|th|my|vn|id|ph|pk|eg|ir|sa|ae|ly|tv|fm|cc|eu|asia"
)
_URL_END = ".,;:!?'\")]}>"

# Anchor kinds, each a fast search (literal first character) over the whole text.
_ANCHORS: dict[str, re.Pattern[str]] = {
    "scheme": re.compile(r"://|mailto:|MAILTO:|Mailto:"),
    "www": re.compile(r"www|WWW|Www"),
    "at": re.compile(r"@"),
    "bang": re.compile(r"![a-zA-Z0-9]"),
    "tld": re.compile(r"\.[a-zA-Z]"),  # cheaper than the TLD list; the detector checks the TLD
    "urllink": re.compile(r"urlLink"),
    "digits": re.compile(r"\d{3}|\+\d|\(\d", re.A),
    "dotted": re.compile(r"\.\d{1,3}\.\d", re.A),  # IPv4 addresses ("10.0.0.1" holds no 3-digit run)
    "placeholder": re.compile(r"\[NUMBER\]"),  # an IBAN's country code left before a redacted number
}
# How far (chars) a match may reach from its anchor across whitespace; 0: matches hold no whitespace.
_MARGIN = {"digits": 72, "placeholder": 8}
_GROW = 256  # step when widening a window to the next whitespace


# characters a URL may hold (ASCII only: "www.example.com可以了解" ends before the Chinese)
_URLCH = r"[A-Za-z0-9\-._~:/?#\[\]@!$&()*+,;=%]"


def _re(pattern: str, flags: int = 0) -> re.Pattern[str]:
    """ASCII-only \\w, \\d and \\b: a CJK letter right next to an address is not part of it."""
    return re.compile(pattern, flags | re.ASCII)


@dataclass(frozen=True)
class _Detector:
    kind: str
    anchor: str  # anchor kind(s) a window must hold for this detector to run there, "|"-separated
    pattern: re.Pattern[str]
    group: int = 0  # group to replace; text around it (a "Tel:" keyword) stays
    trim: bool = False  # drop trailing sentence punctuation from the match (URLs)
    min_digits: int = 0
    max_digits: int = 99
    check: Callable[[str], bool] | None = None  # a validator the matched text must pass
    lead: Callable[[str], int] | None = None  # how many leading characters are punctuation, not PII
    # (match, the 40 characters of redacted text before the group) -> True: no PII after all (a range)
    skip: Callable[[re.Match[str], str], bool] | None = None


def _iban_checksum_ok(candidate: str) -> bool:
    """ISO 13616 mod-97: move the first four characters to the end, letters to 10..35, remainder 1."""
    compact = candidate.replace(" ", "").upper()
    if not 15 <= len(compact) <= 34:
        return False
    digits = "".join(str(int(ch, 36)) for ch in compact[4:] + compact[:4])
    return int(digits) % 97 == 1


def _email_lead(match: str) -> int:
    """Length of the punctuation glued before an address: "_" in "_bob@x.org_", "..." in "me...bob@x.org".

    The email pattern may start its local part with punctuation (so that it never has to start inside
    a run of local-part characters, which keeps it linear); the address proper starts at its first
    letter or digit after the last ".." (an ellipsis, not part of an address).
    """
    local = match[: match.index("@")]
    cut = local.rfind("..")
    tail = local[cut + 2 :] if cut >= 0 else local
    if not any(ch.isalnum() for ch in tail):
        tail = local
    return len(local) - len(tail.lstrip("._%+'-"))


# Words that make "250-1250" a quantity range, not a phone: right before it, or a unit right after.
_RANGE_BEFORE = r"pages?|pp\.?|between|budget|range|ranging|approx(?:\.|imately)?|about|around|roughly|circa|ca\."
_RANGE_AFTER = (
    r"dollars|euros?|pounds|usd|eur|gbp|yuan|rmb|yen|pages|words|characters|km|miles|m|cm|mm|ft|feet|kg|lbs?|"
    r"g|mg|ml|hz|khz|mhz|kb|mb|gb|ms|people|users|units|items|copies|times|rpm|mah|calories|kcal"
)
# Phone context in the 40 characters before a range-looking number overrules the range reading: a
# phone word, an area code ("(408)\n730-1100" in a 20 Newsgroups signature), or a phone already
# redacted ("(919) 660-5111 or 660-5100"). Real business numbers are often round.
_PHONE_CONTEXT = _re(r"\b(?:tel|tele|telephone|phone|ph|fax|call|dial|voice|cell|mobile)\b|\[PHONE\]|\(\d{3}\)", re.I)


def _numeric_range(m: re.Match[str], before: str) -> bool:
    """A local-phone-shaped "NNN-NNNN" that reads as a range: a quantity word before it or a unit after
    it, or round ends (the first a multiple of 10, the second of 100: "250-1000", "750-1500"); unless
    phone context precedes it (`_PHONE_CONTEXT` in `before`, the redacted text just before it). A random
    phone number has round ends one time in a thousand, but business numbers are often round."""
    if _PHONE_CONTEXT.search(before):
        return False
    if m.group("before") or m.group("after"):
        return True
    return m.group("low").endswith("0") and m.group("high").endswith("00")


def _ipv4_ok(candidate: str) -> bool:
    """Four parts of at most 255, not all single digits (that is a version: 1.5.9.1)."""
    parts = candidate.split(".")
    return all(int(p) <= 255 for p in parts) and max(len(p) for p in parts) > 1


_DETECTORS: tuple[_Detector, ...] = (
    # URLs with a scheme, then www.* (before emails: a URL may hold an "@"). Any word before "://" is a
    # scheme: people mistype it ("hppt://support.sas.com/..." in the blog corpus got past a list of real
    # schemes, and the bare-domain detector below does not start right after a "/").
    _Detector(
        "url",
        "scheme",
        _re(r"\b[a-z][a-z0-9+.-]{1,15}://" + _URLCH + r"+|\bmailto:" + _URLCH + r"+", re.I),
        trim=True,
    ),
    _Detector(
        "url",
        "www",
        _re(r"\b(?:www|WWW|Www)\d{0,3}\.[a-z0-9-]+(?:\.[a-z0-9-]+)+(?:[/?#:]" + _URLCH + r"*)?", re.I),
        trim=True,
    ),
    # emails (dotless hosts too: Usenet "user@host"), then UUCP bang paths (host!host!user).
    # Punctuation glued before the address ("_bob@x.org_", "mail:-bob@x.org", "me...bob@x.org") is
    # matched and then given back by `lead`. Hosts may hold "_" ("bob@foo.org_x" was cut to "bob@foo");
    # a route through hosts ("jdmooney@kocrsv01@delcoelect.com") is one address; a host may stop before
    # a one-letter label, as a line break leaves it ("peter.m@insane.apana.org.a\nu").
    _Detector(
        "email",
        "at",
        _re(
            r"(?<![a-z0-9._%+'-])[._%+'-]*[a-z0-9][a-z0-9._%+'-]*@(?:[a-z0-9](?:[a-z0-9_-]*[a-z0-9])?\.)*"
            r"[a-z][a-z0-9_-]*[a-z0-9](?:@(?:[a-z0-9](?:[a-z0-9_-]*[a-z0-9])?\.)*[a-z][a-z0-9_-]*[a-z0-9])*"
            r"(?![a-z0-9])",
            re.I,
        ),
        lead=_email_lead,
    ),
    _Detector("email", "bang", _re(r"(?:\.\.\.)?!?[a-z0-9][\w.-]*(?:![a-z0-9][\w.-]*){2,}", re.I)),
    # bare domains with an optional path: example.com/page, cs.cmu.edu
    _Detector(
        "url",
        "tld",
        _re(
            r"(?<![\w.@/-])(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+(?:" + _TLDS + r")\b"
            r"(?![.-]?\w)(?:/" + _URLCH + r"*)?",
            re.I,
        ),
        trim=True,
    ),
    # the blog corpus writes every link as the token "urlLink"
    _Detector("url", "urllink", _re(r"urlLink")),
    # IBANs before card numbers: "DE89 3704 0044 0532 0130 00" would lose only its middle to the
    # 4-4-4-4 card rule and leave "DE89 [NUMBER] 00"
    _Detector(
        "number",
        "digits",
        _re(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b"),
        check=_iban_checksum_ok,
    ),
    # IPv4 addresses: 192.168.1.20 (versions like 3.1.2 have three parts; "v1.2.3.4" follows a letter)
    _Detector("number", "dotted", _re(r"(?<![\w.])\d{1,3}(?:\.\d{1,3}){3}(?![\w]|\.\d)"), check=_ipv4_ok),
    # card numbers and SSN-like ids before phones (4-4-4-4 groups would look like a phone)
    _Detector(
        "number",
        "digits",
        _re(r"(?<![\w.+-])(?:\d{4}(?:[ -]\d{4}){3}|\d{4}[ -]\d{6}[ -]\d{5}|\d{3}-\d{2}-\d{4})(?![\w-]|\.\d)"),
    ),
    # international: +44 20 7946 0958, +1 (555) 123-4567, +86 138 1234 5678, +64 -9 373 7410
    _Detector(
        "phone",
        "digits",
        _re(r"(?<![\w+])\+\d{1,3}(?:(?: ?[.\-/] ?| )?\(?\d{1,5}\)?){2,6}(?![\w-]|\.\d)"),
        min_digits=8,
        max_digits=16,
    ),
    # country code glued to a bracketed area code: 81(3)3280-8339 (no space after the ")": a citation's
    # volume(issue) is followed by ":", "," or a space: "81(3), 1234-1240"); before the
    # North American and local rules, which would take "345-6789" out of "12(1)345-6789"
    _Detector(
        "phone",
        "digits",
        _re(r"(?<![\w+.-])\d{1,3}\(\d{1,4}\)\d{2,5}(?:[ .-]\d{2,5}){1,2}(?![\w-]|\.\d)"),
        min_digits=8,
        max_digits=15,
    ),
    # North American: (555) 123-4567, 555-123-4567, 555.123.4567, 1-800-555-1234
    _Detector(
        "phone",
        "digits",
        _re(r"(?<![\w+.\-/])(?:1[ .-])?(?:\(\d{3}\)[ .-]?|\d{3}[ .-])\d{3}[ .-]\d{4}(?![\w-]|[./]\d)"),
    ),
    # area code in parentheses, elsewhere: (040) 8998-3560, (02) 9876 5432
    _Detector(
        "phone",
        "digits",
        _re(r"(?<![\w+.-])\(\d{2,5}\)[ .-]?\d{2,5}(?:[ .-]\d{2,5}){0,3}(?![\w-]|\.\d)"),
        min_digits=7,
        max_digits=15,
    ),
    # Chinese mobiles: 13812345678, 138-1234-5678, +86 13812345678
    _Detector(
        "phone",
        "digits",
        _re(r"(?<![\d.])(?:\+?86[ -]?)?1[3-9]\d(?:\d{8}|[ -]\d{4}[ -]\d{4})(?!\d|\.\d)"),
    ),
    # what is left after a phone keyword: "Tel: 391621-283", "phone 555-1234" (the keyword stays)
    _Detector(
        "phone",
        "digits",
        _re(
            r"\b(?:tel|tele|telephone|phone|ph|fax|cell|mobile|voice|call)\b\.?\s*(?:no\.?|number|#)?\s*"
            r"[:#=]?\s*(\+?(?:\(\d{1,5}\) ?)?\d(?:[\d.\-/]| (?=\d)){4,20}\d)(?![\w-]|\.\d)",
            re.I,
        ),
        group=1,
        min_digits=6,
        max_digits=16,
    ),
    # 7-digit local numbers, dash only (a space or a dot is too often a list or a decimal): 940-7222,
    # and 3 + 7 digits: 940-2222222. The first digit 2-9 (as in North American exchanges) keeps
    # "100-1000" a range; a currency sign or "." before it keeps prices and decimals; `_numeric_range`
    # keeps "250-1000" (round ends) and "pages 345-1012" / "450-1250 words" (a quantity word), unless
    # phone context precedes it. Last of the phone rules, so that every [PHONE] before it (the other
    # rules' and its own, left of it) is context for it, as it is for the eval's checker.
    _Detector(
        "phone",
        "digits",
        _re(
            r"(?:\b(?P<before>" + _RANGE_BEFORE + r")\s+)?"
            r"(?<![\w+.\-/$€£¥])(?P<phone>(?P<low>[2-9]\d{2})-(?P<high>\d{4}|\d{7}))(?![\w-]|[./]\d)"
            r"(?:\s+(?P<after>" + _RANGE_AFTER + r")\b)?",
            re.I,
        ),
        group=2,
        skip=_numeric_range,
    ),
    # any other run of 9+ digits: account, order, card and message ids
    _Detector("number", "digits", _re(r"(?<![\d.,])\d{9,}(?!\d|[.,]\d)")),
    # what an IBAN that failed its checksum leaves after the rules above: "DE89 [NUMBER] 00"
    _Detector("number", "digits|placeholder", _re(r"\b[A-Z]{2}\d{2} ?\[NUMBER\](?: ?[A-Z0-9]{1,4}\b)?")),
)


def _trim_url(match: str) -> str:
    """Drop trailing sentence punctuation (and an unbalanced ")") from a matched URL."""
    end = len(match)
    while end > 0 and match[end - 1] in _URL_END:
        if match[end - 1] == ")" and match[:end].count("(") >= match[:end].count(")"):
            break
        end -= 1
    return match[:end]


def _digit_count(s: str) -> int:
    return sum(ch.isdigit() for ch in s)


def _widen_left(text: str, pos: int) -> int:
    """Move `pos` left to just after the previous whitespace (or to 0)."""
    while pos > 0 and not text[pos - 1].isspace():
        lo = max(0, pos - _GROW)
        chunk = text[lo:pos]
        head = chunk.rsplit(None, 1)
        if len(head) == 2 or (head and chunk[0].isspace()):
            return pos - len(head[-1])
        if not head:  # chunk is all whitespace
            return pos
        pos = lo
    return pos


def _widen_right(text: str, pos: int) -> int:
    """Move `pos` right to the next whitespace (or to the end)."""
    n = len(text)
    while pos < n and not text[pos].isspace():
        chunk = text[pos : pos + _GROW]
        first = chunk.split(None, 1)
        if len(first) == 2 or (first and chunk[-1].isspace()):
            return pos + len(first[0])
        pos += len(chunk)
    return pos


def _windows(text: str) -> list[tuple[int, int, frozenset[str]]]:
    """Merged (start, end, anchor kinds) windows that hold every possible match."""
    raw: list[tuple[int, int, str]] = []
    for kind, anchor in _ANCHORS.items():
        margin = _MARGIN.get(kind, 0)
        raw.extend((m.start() - margin, m.end() + margin, kind) for m in anchor.finditer(text))
    if not raw:
        return []
    raw.sort()
    n = len(text)
    merged: list[tuple[int, int, set[str]]] = []
    for start, end, kind in raw:
        start = max(0, start)
        # widen left only when the anchor is not already inside the last window: widening first made
        # every anchor of one long whitespace-free token scan back to its start (quadratic)
        if not merged or start > merged[-1][1]:
            start = _widen_left(text, start)
        if merged and start <= merged[-1][1]:
            if end > merged[-1][1]:
                merged[-1] = (merged[-1][0], _widen_right(text, min(n, end)), merged[-1][2])
            merged[-1][2].add(kind)
        else:
            merged.append((start, _widen_right(text, min(n, end)), {kind}))
    return [(s, e, frozenset(k)) for s, e, k in merged]


def _scan_window(chunk: str, kinds: frozenset[str], found: list[tuple[str, str]]) -> str:
    for det in _DETECTORS:
        if kinds.isdisjoint(det.anchor.split("|")):
            continue
        chunk = _apply(det, chunk, found)
    return chunk


_CONTEXT = 40  # characters of (redacted) text before a match that a `skip` rule sees


def _apply(det: _Detector, chunk: str, found: list[tuple[str, str]]) -> str:
    """Replace what `det` finds in `chunk`, left to right, and record each (kind, text) in `found`."""
    placeholder = PLACEHOLDERS[det.kind]
    parts: list[str] = []
    last = 0  # end of the last replacement, in `chunk`
    tail = ""  # the end of the output so far: context for `skip`
    for m in det.pattern.finditer(chunk):
        target = m.group(det.group)
        if det.check is not None and not det.check(target):
            continue
        if det.skip is not None:
            gstart = m.start(det.group)
            before = (tail + chunk[max(last, gstart - _CONTEXT) : gstart])[-_CONTEXT:]
            if det.skip(m, before):
                continue
        if det.min_digits or det.max_digits < 99:
            digits = _digit_count(target)
            if digits < det.min_digits or digits > det.max_digits:
                continue
        # the span to replace: the group, less glued punctuation around it
        start, end = m.span(det.group)
        if det.lead is not None:
            start += det.lead(target)
        if det.trim:
            kept = _trim_url(chunk[start:end])
            if not kept:
                continue
            end = start + len(kept)
        found.append((det.kind, chunk[start:end]))
        parts += (chunk[last:start], placeholder)
        tail = (tail + chunk[max(last, start - _CONTEXT) : start] + placeholder)[-_CONTEXT:]
        last = end
    if not parts:
        return chunk
    parts.append(chunk[last:])
    return "".join(parts)


def _scan(text: str) -> tuple[str, list[tuple[str, str]]]:
    found: list[tuple[str, str]] = []
    windows = _windows(text)
    if not windows:
        return text, found
    parts: list[str] = []
    last = 0
    for start, end, kinds in windows:
        parts.append(text[last:start])
        parts.append(_scan_window(text[start:end], kinds, found))
        last = end
    parts.append(text[last:])
    return ("".join(parts) if found else text), found


def redact(text: str) -> tuple[str, dict[str, int]]:
    """Replace emails, phones, URLs and long digit ids with placeholders; count each kind.

    >>> redact("Mail bob@example.com or call (555) 123-4567 before 10:30.")
    ('Mail [EMAIL] or call [PHONE] before 10:30.', {'email': 1, 'phone': 1, 'url': 0, 'number': 0})
    """
    new, found = _scan(text)
    counts = dict.fromkeys(PII_KINDS, 0)
    for kind, _ in found:
        counts[kind] += 1
    return new, counts


def find_pii(text: str) -> list[tuple[str, str]]:
    """Every (kind, matched text) that `redact` would replace, in detector order; [] once redacted."""
    return _scan(text)[1]
