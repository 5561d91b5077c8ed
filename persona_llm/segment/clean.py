"""Clean raw texts so that what gets embedded is what the customer wrote, with no personal data.

Per text, in this order:
  1. strip HTML markup, quoted replies (+ their attribution lines) and signatures (+ PGP armour);
  2. reject binary content (uuencoded / base64 blocks, text that is mostly non-letters);
  3. collapse whitespace, redact PII (emails, phones, URLs, long digit ids), cap the length;
  4. reject texts left too short, then texts in a language not asked for;
  5. drop exact and near duplicates, keeping the first occurrence.
Every dropped row lands in the rejects frame with its original text and the reason.
"""

from __future__ import annotations

import html
import re
import string
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from persona_llm.errors import ConfigError
from persona_llm.schema.frames import LANGUAGE, TEXT, TEXT_ID, empty_rejects, make_rejects
from persona_llm.segment.base import BaseCleaner, StageResult
from persona_llm.segment.language import detect_language
from persona_llm.segment.pii import PII_KINDS, find_pii, redact

__all__ = [
    "COUNT_KEYS",
    "TextCleaner",
    "strip_html",
    "strip_quotes",
    "strip_signature",
    "binary_reason",
]

COUNT_KEYS = (
    "html_stripped",
    "quotes_stripped",
    "signatures_stripped",
    "pii_emails",
    "pii_phones",
    "pii_urls",
    "pii_numbers",
    "capped",
    "too_short",
    "binary",
    "wrong_language",
    "exact_duplicates",
    "near_duplicates",
    "kept",
)
_PII_COUNT = {"email": "pii_emails", "phone": "pii_phones", "url": "pii_urls", "number": "pii_numbers"}
_DEDUPE_MODES = ("none", "exact", "near")

# --------------------------------------------------------------------------- characters

# control characters other than \t \n \r, zero-width characters, soft hyphen, BOM
_INVISIBLE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\u00ad\u200b-\u200d\u2060\ufeff]")

# --------------------------------------------------------------------------- HTML

_HTML_TAGS = (
    "a|abbr|address|article|aside|audio|b|big|blockquote|body|br|button|caption|center|cite|code|col|"
    "colgroup|dd|del|details|div|dl|dt|em|embed|figcaption|figure|font|footer|form|h[1-6]|head|header|"
    "hr|html|i|iframe|img|input|ins|kbd|label|li|link|main|mark|meta|nav|nobr|noscript|object|ol|"
    "option|p|param|picture|pre|q|s|samp|section|select|small|source|span|strike|strong|sub|summary|"
    "sup|table|tbody|td|textarea|tfoot|th|thead|title|tr|tt|u|ul|var|video|wbr"
)
_BLOCK_TAGS = (
    "address|article|aside|blockquote|body|br|caption|center|dd|details|div|dl|dt|figcaption|figure|"
    "footer|form|h[1-6]|head|header|hr|html|li|main|nav|ol|p|pre|section|summary|table|tbody|td|tfoot|"
    "th|thead|title|tr|ul"
)
_TAG = re.compile(r"</?(?:" + _HTML_TAGS + r")(?:\s[^<>]*)?/?>", re.I)
_BLOCK_TAG = re.compile(r"</?(?:" + _BLOCK_TAGS + r")(?:\s[^<>]*)?/?>", re.I)
_ENTITY = re.compile(r"&(?:[a-z][a-z0-9]{1,9}|#\d{1,7}|#x[0-9a-f]{1,6});", re.I)
_HTML_DROP = re.compile(
    r"<!--.*?-->|<!doctype[^>]*>|<(script|style|head)\b[^>]*>.*?</\1\s*>", re.I | re.S
)
_BLOCKQUOTE = re.compile(r"<blockquote\b[^>]*>.*?</blockquote\s*>", re.I | re.S)


def strip_html(text: str, *, drop_blockquotes: bool = True) -> str:
    """Remove known HTML tags and decode entities; block tags become line breaks.

    Only real HTML tag names are touched, so Usenet "<msgid@host>" and "<insert name>" stay.
    `drop_blockquotes` removes <blockquote> elements whole (they hold quoted replies).
    """
    if "<" not in text and "&" not in text:
        return text
    has_tag = _TAG.search(text) is not None
    if not has_tag and _ENTITY.search(text) is None:
        return text
    if has_tag:
        text = _HTML_DROP.sub(" ", text)
        if drop_blockquotes:
            text = _BLOCKQUOTE.sub("\n", text)
        text = _BLOCK_TAG.sub("\n", text)
        text = _TAG.sub("", text)
    return html.unescape(text)


# --------------------------------------------------------------------------- quoted replies

_QUOTE_LINE = re.compile(r"[ \t]*(?:>|\|[ \t]?>)")
_COLON_QUOTE_LINE = re.compile(r"[ \t]*:(?:[ \t]|$|[:>])")
_ATTRIB_END = re.compile(r"\b(?:writes|wrote|writ|says|said|schrieb|a écrit)\s*:\s*$", re.I)
_IN_ARTICLE = re.compile(r"[ \t]*In (?:article |message )?<[^<>\n]*>")
_NAMED = re.compile(r"<[^<>]+>|\([^()]+\)")
_ORIGINAL_MESSAGE = re.compile(r"[ \t]*-{3,}\s*Original Message\s*-{3,}\s*$", re.I)


def _is_quote(line: str, colon_quotes: bool) -> bool:
    head = line.lstrip(" \t")[:1]
    if head == ">" or (head == "|" and _QUOTE_LINE.match(line) is not None):
        return True
    return colon_quotes and head == ":" and _COLON_QUOTE_LINE.match(line) is not None


def _is_attribution(line: str) -> bool:
    """ "X writes:" naming an address, a message id or "(Full Name)", or "On <date>, X wrote:"."""
    if not line.endswith(":") or len(line) > 200 or not _ATTRIB_END.search(line):
        return False
    return "@" in line or line.startswith(("On ", "on ", "In ")) or _NAMED.search(line) is not None


def strip_quotes(text: str) -> str:
    """Drop quoted reply lines ("> ...", "|> ...") and attribution lines ("In article <...> X writes:",
    "X wrote:", "On <date>, X wrote:"); also everything from an "-----Original Message-----" line on.

    Lines quoted with ": " (tin/trn style) count as quotes only when the text has an attribution line.
    """
    if ">" not in text and "wrote" not in text and "writes" not in text and "Original" not in text:
        return text
    lines = text.split("\n")
    colon_quotes = ":" in text and any(_is_attribution(line.strip()) for line in lines if line.rstrip().endswith(":"))
    n = len(lines)
    keep = [True] * n
    for i, line in enumerate(lines):
        if not keep[i]:
            continue
        if _is_quote(line, colon_quotes):
            keep[i] = False
            continue
        stripped = line.strip()
        if not stripped:
            continue
        if "Original" in line and _ORIGINAL_MESSAGE.match(line) and any(keep[j] and lines[j].strip() for j in range(i)):
            for j in range(i, n):
                keep[j] = False
            break
        if stripped.startswith("In ") and _IN_ARTICLE.match(line):
            keep[i] = False
            # "In article <id>, someone\n  (Some One) writes:" continues on the next line
            if not _ATTRIB_END.search(line) and i + 1 < n and _ATTRIB_END.search(lines[i + 1]):
                keep[i + 1] = False
            continue
        if stripped[-1] == ":" and len(stripped) <= 200 and _ATTRIB_END.search(stripped):
            nxt = next((lines[j] for j in range(i + 1, n) if lines[j].strip()), "")
            if _is_attribution(stripped) or _is_quote(nxt, colon_quotes):
                keep[i] = False
    if all(keep):
        return text
    return "\n".join(line for line, k in zip(lines, keep, strict=True) if k)


# --------------------------------------------------------------------------- signatures

_PGP_BLOCK = re.compile(r"-----BEGIN PGP (?:SIGNATURE|PUBLIC KEY BLOCK|MESSAGE)-----.*?-----END PGP [A-Z ]+-----", re.S)
_PGP_HEADER = re.compile(r"-----BEGIN PGP SIGNED MESSAGE-----[ \t]*\n(?:Hash:[^\n]*\n)?")
_SIG_DELIM = re.compile(r"--[ \t]*")
_SIG_STRONG = re.compile(
    r"\S@\S|[a-z0-9]![a-z]|https?://|\bwww\.|\b\d{3}[-. )]{1,2}\d{3}[-. ]\d{4}\b|\+\d[\d ()./-]{7,}"
    r"|\.(?:com|edu|org|net|gov|mil)\b|\b[A-Z]{2}\.?,? {1,2}\d{5}(?:-\d{4})?\b",
    re.I,
)
_SIG_LABEL = re.compile(
    r"(?:e-?mail|internet|bitnet|decnet|uucp|arpa|compuserve|cis|phone|tel|telex|fax|voice|"
    r"address|office|home|work|www|web|url|snail ?mail|ph|mobile|cell|mail|domain|path)\b[ \t]*[:.]",
    re.I,
)
_SIG_ORG = re.compile(
    r"\b(?:University|Univ\.|College|Institute|Inst\.|Inc\.?|Corp\.?|Corporation|Ltd\.?|GmbH|"
    r"Laborator(?:y|ies)|Labs?|Dept\.?|Department|School|Company|Research|Cent(?:er|re)|Systems|"
    r"Technolog(?:y|ies)|Associates|Division|Electronics|Engineering|Software|Networks?|Services|"
    r"Solutions|Telecom\w*|Agency|Hospital|Society|Foundation|Association|Academy|Polytechnic|"
    r"Computing|Computer Science|Sciences?|Group|Project|Administration|Observatory)\b"
)
_SIG_DISCLAIMER = re.compile(
    r"disclaim|opinions? (?:are|is|expressed)|my own opinion|not (?:necessarily )?(?:those|the views)|"
    r"speak(?:ing)? for|views (?:expressed|are)|standard .{0,20}apply",
    re.I,
)
_NAME_LINE = re.compile(r"[A-Z][A-Za-z'’-]*\.?,?(?:[ \t]+(?:[A-Z][A-Za-z'’-]*\.?,?|[A-Z]\.)){0,3}")
_HANDLE_LINE = re.compile(r"[a-z][a-z0-9_.-]{1,15}")
_DECORATION = " \t|/\\*#=+-_~^<>()[]{}:;.'\"`!@$%&"
_WIDE_GAP = re.compile(r"\S(?: {6,}|\t+ *)\S")
# words that make a short line a closing or a remark rather than a sign-off name
_NOT_NAMES = frozenset(
    {
        "thanks", "thank", "you", "thanx", "thx", "tia", "cheers", "regards", "best", "bye", "later",
        "ciao", "enjoy", "sincerely", "yours", "peace", "help", "please", "hi", "hello", "yes", "no", "ok",
        "okay", "amen", "nope", "yep", "sure", "good", "luck", "again", "anyone", "what", "why", "how",
        "hmm", "oh", "wow", "indeed", "exactly", "agreed", "right", "true", "well", "done", "fine", "none",
        "nothing", "the", "a", "an", "and", "or", "of", "to", "in", "is", "it", "i", "me", "my", "we",
        "all", "god", "bless", "wishes", "take", "care", "see", "ya", "soon", "cya", "hope", "this", "that",
        "not", "so", "too", "also", "more", "less", "etc", "end", "ps", "p.s", "note", "nb", "update",
        "edit", "edited", "sorry", "oops", "really", "maybe", "perhaps", "great", "nice", "cool", "anyway",
        "correct", "wrong", "definitely", "absolutely", "happy", "hunting", "lol",
    }
)
_MAX_SIG_LINES = 20
_MAX_DELIM_LINES = 25


def _line_kind(line: str) -> str | None:
    """Kind of a line near the end of a text: 'strong' (contact details, organisation, disclaimer),
    'name' (a sign-off name), 'soft' (short title-case line: place, job title), 'weak' (ascii art,
    separators, "-- credits") or None (prose)."""
    s = line.strip()
    if len(s) > 110:
        return None
    # box-drawing and ascii-art decoration around the words does not count
    core = s.strip(_DECORATION)
    if not core:
        return "weak"
    words = core.split()
    if _SIG_LABEL.match(core):
        return "strong"
    if _SIG_STRONG.search(core):
        # "name  email" or "e-mail: x@y", not a sentence that happens to hold an address
        plain = [w for w in words if not _SIG_STRONG.search(w)]
        return "strong" if len(plain) <= 6 or _WIDE_GAP.search(core) else None
    if len(words) <= 12 and _SIG_DISCLAIMER.search(core):
        return "strong"
    if _SIG_ORG.search(core) and len(words) <= 8 and not core.endswith(("?", "!")):
        return "strong"
    tokens = [w.strip(".,!?:;-~").lower() for w in words]
    if len(core) <= 40 and (_NAME_LINE.fullmatch(core) or _HANDLE_LINE.fullmatch(core)):
        return None if any(t in _NOT_NAMES for t in tokens) else "name"
    non_space = len(s) - s.count(" ") - s.count("\t")
    letters = sum(map(str.isalpha, s))
    if non_space >= 3 and letters < 0.4 * non_space:
        return "weak"  # ascii art, separators, "CI$: 70262,3610"
    if _WIDE_GAP.search(core) or len(line) - len(line.lstrip()) >= 16:
        return "weak"  # multi-column or right-aligned signature layout
    if s.startswith("-") and len(words) <= 6:
        return "weak"  # "-- Raymond Egan", "-attributed to Hannibal"
    if (
        len(words) <= 8
        and len(core) <= 70
        and not core.endswith(("?", "!", ":"))
        and sum(w[:1].isupper() or w[:1].isdigit() for w in words) >= 0.5 * len(words)
        and not any(t in _NOT_NAMES for t in tokens[:1])
    ):
        return "soft"  # "Philips Consumer Electronics, Eindhoven", "Systems Engineer"
    return None


_SENTENCE_END = (".", ",", "!", "?", ":", ";", ")", '"', "'", "-", "~", "*")


def _continues(line: str) -> bool:
    """True if `line` is prose that runs on into the next line (no closing punctuation)."""
    s = line.rstrip()
    return bool(s) and not s.endswith(_SENTENCE_END) and _line_kind(line) is None


def _has_body(lines: Sequence[str]) -> bool:
    return sum(len(line.split()) for line in lines) >= 3 or sum(len(line.strip()) for line in lines) >= 20


def _signature_start(lines: list[str]) -> int:
    """Index where a trailing signature block starts (len(lines) if there is none)."""
    end = len(lines)
    start = end
    strong = False
    names = count = 0
    prev_blank = False  # a blank line lies between this line and the block below it
    i = end - 1
    while i >= 0:
        line = lines[i]
        if not line.strip():
            prev_blank = True
            i -= 1
            continue
        kind = _line_kind(line)
        # a 'soft' line belongs to a signature only right next to its contact/organisation lines
        if kind is None or (kind == "soft" and (prev_blank or start == end)):
            break
        if kind in ("name", "soft") and i > 0 and _continues(lines[i - 1]):
            break  # the end of a wrapped sentence ("...off track\nhere...."), not a name
        count += 1
        if count > _MAX_SIG_LINES:
            return end
        strong = strong or kind == "strong"
        names += kind == "name"
        start = i
        prev_blank = False
        i -= 1
    if start == end:
        return end
    if not _has_body(lines[:start]):
        return end
    if strong:
        return start
    # no contact details: only a sign-off name or two (plus letterless separators), set apart from
    # the prose before it; "...are for IBM-PC\ncompatibles." is a wrapped sentence, not a name
    block = [line for line in lines[start:] if line.strip()]
    if not 0 < names <= 2 or any(_line_kind(b) != "name" and any(map(str.isalpha, b)) for b in block):
        return end
    return start


def strip_signature(text: str) -> str:
    """Remove PGP armour, everything after a "-- " delimiter, and a trailing signature-like block.

    The trailing block (no delimiter needed) goes only if it is short (<= 20 non-blank lines), every
    line in it looks like a signature line (name, contact details, organisation, disclaimer, ascii
    art), it holds contact details / an organisation or is just a name or two, and some words remain.
    """
    if "-----BEGIN PGP" in text:
        text = _PGP_HEADER.sub("", _PGP_BLOCK.sub("", text))
    lines = text.rstrip().split("\n")
    # 1. "-- " delimiter: the last one with a body before it and a short tail after it
    for i in range(len(lines) - 1, 0, -1):
        if _SIG_DELIM.fullmatch(lines[i]):
            tail = sum(1 for line in lines[i + 1 :] if line.strip())
            if tail <= _MAX_DELIM_LINES and _has_body(lines[:i]):
                lines = lines[:i]
            break
    # 2. trailing signature-like block
    while lines and not lines[-1].strip():
        lines.pop()
    lines = lines[: _signature_start(lines)]
    return "\n".join(lines).rstrip()


# --------------------------------------------------------------------------- binary content

_UU_BEGIN = re.compile(r"^begin [0-7]{3,4} \S", re.M)
_UU_LINE = re.compile(r"M[ -`]{40,61}")  # uuencode: "M" + 60 chars from 0x20-0x60 (no lowercase)
_B64_LINE = re.compile(r"[A-Za-z0-9+/]{40,}={0,2}")
_MIN_BINARY_RUN = 5
_MIN_LETTER_SHARE = 0.25  # of non-space characters
_MIN_WORD_SHARE = 0.3  # of whitespace-separated tokens that look like words
_SAMPLE = 6000
_TOKEN_EDGE = "\"'.,;:!?()[]{}<>*_-"


def _is_word(token: str) -> bool:
    core = token.strip(_TOKEN_EDGE)
    letters = sum(map(str.isalpha, core))
    if not letters:
        return False
    # CJK runs have no spaces, so any length goes; else a word is short and mostly letters
    return not core.isascii() or (len(core) <= 25 and letters >= 0.6 * len(core))


def binary_reason(text: str) -> str | None:
    """Why `text` is binary or non-text junk (uuencode, base64, mostly non-letters), or None."""
    run_uu = run_b64 = 0
    for line in text.split("\n"):
        if len(line) < 40:
            run_uu = run_b64 = 0
            continue
        run_uu = run_uu + 1 if line[0] == "M" and _UU_LINE.fullmatch(line.rstrip()) else 0
        run_b64 = run_b64 + 1 if " " not in line.strip() and _B64_LINE.fullmatch(line.strip()) else 0
        if run_uu >= _MIN_BINARY_RUN:
            return "binary content (uuencoded block)"
        if run_b64 >= _MIN_BINARY_RUN:
            return "binary content (base64 block)"
    if "begin " in text and _UU_BEGIN.search(text) and "\nM" in text:
        return "binary content (uuencoded block)"
    sample = text[:_SAMPLE]
    tokens = sample.split()
    non_space = sum(map(len, tokens))
    letters = sum(map(str.isalpha, sample))
    if non_space >= 40 and letters < _MIN_LETTER_SHARE * non_space:
        return f"mostly non-letters ({round(100 * letters / non_space)}% letters)"
    # prose is ~75-85% letters; only letter-poor text can be mostly non-words (tables, ascii art)
    if len(tokens) >= 10 and letters < 0.6 * non_space:
        words = sum(map(_is_word, tokens))
        if words < _MIN_WORD_SHARE * len(tokens):
            return f"mostly non-letters (only {round(100 * words / len(tokens))}% of tokens are words)"
    return None


# --------------------------------------------------------------------------- capping

_PARTIAL_PLACEHOLDER = re.compile(r"\[[A-Z]*$")


def _cap(text: str, max_chars: int) -> str:
    """Cut to at most `max_chars`, at a space when one is near the end (CJK text has none)."""
    cut = text[:max_chars]
    if len(text) > max_chars and not text[max_chars].isspace():
        space = cut.rfind(" ")
        if space >= max_chars * 0.8:
            cut = cut[:space]
    return _PARTIAL_PLACEHOLDER.sub("", cut).rstrip()


# --------------------------------------------------------------------------- duplicates

_CJK_CHARS = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff"
_CJK = re.compile(r"[" + _CJK_CHARS + r"]")
_NON_WORD = re.compile(r"[\W_]+")
_ASCII_PUNCT = str.maketrans({ch: " " for ch in string.punctuation})
_EDGE = 200  # "same first and last 200 normalised characters" is a near duplicate
_JACCARD = 0.9  # character-shingle Jaccard at or above this is a near duplicate
_BANDS, _ROWS = 8, 8  # LSH: 64 one-permutation MinHash bins in 8 bands of 8
_BINS = _BANDS * _ROWS
_MIN_SHINGLES = 16
_U = np.uint64
_BIN_SHIFT = _U(58)  # top 6 bits pick the bin (64 bins)
_M1 = _U(0x100000001B3)
_M2 = _U((0x100000001B3 * 0x100000001B3) % (1 << 64))
_BIN_IDS = np.arange(_BINS, dtype=np.uint64)
_BIN_STARTS = _BIN_IDS << _BIN_SHIFT
_LOW = _U((1 << 58) - 1)


def _normalise(text: str) -> str:
    """Case-folded words separated by single spaces: punctuation and whitespace differences vanish."""
    low = text.casefold()
    if low.isascii():
        return " ".join(low.translate(_ASCII_PUNCT).split())
    return " ".join(_NON_WORD.sub(" ", low).split())


def duplicate_key(text: str) -> str:
    """What two texts share when one is an exact duplicate of the other (case, punctuation and spacing
    ignored): the cleaner's rule, which a refresh applies between new texts and those it already holds."""
    return _normalise(text).replace(" ", "")


def _mix(h: np.ndarray) -> np.ndarray:
    """Multiplicative hash step: spreads the polynomial hash over all 64 bits (top bits pick the bin)."""
    h = h * _U(0x9E3779B97F4A7C15)
    return h ^ (h >> _U(29))


def _shingle_hashes(norm: str) -> np.ndarray:
    """Sorted unique hashes of character k-grams (k=3 for CJK-heavy text, else 6)."""
    cjk = not norm.isascii() and len(_CJK.findall(norm)) * 3 > len(norm)
    codes = np.frombuffer(norm.encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
    if len(codes) < 6:
        return np.empty(0, dtype=np.uint64)
    # polynomial hash of each k-gram by doubling (uint64 arithmetic wraps, which a hash wants)
    h2 = codes[:-1] * _M1 + codes[1:]
    h = h2[:-1] * _M1 + codes[2:] if cjk else (h2[:-4] * _M2 + h2[2:-2]) * _M2 + h2[4:]
    h = np.sort(_mix(h))
    # np.unique is far slower than sort + mask for these sizes
    return h[np.concatenate(([True], h[1:] != h[:-1]))]


def _oph_signature(h: np.ndarray) -> np.ndarray:
    """One-permutation MinHash: the smallest hash in each of 64 bins, empty bins densified."""
    idx = np.searchsorted(h, _BIN_STARTS)
    vals = h[np.minimum(idx, len(h) - 1)]
    full = (idx < len(h)) & ((vals >> _BIN_SHIFT) == _BIN_IDS)
    sig = vals & _LOW
    if not full.all():
        filled = np.flatnonzero(full)
        bins = np.arange(_BINS)
        # borrow from the next non-empty bin (cyclically), salted by the distance
        pos = np.searchsorted(filled, bins) % len(filled)
        src = filled[pos]
        dist = ((src - bins) % _BINS).astype(np.uint64)
        sig = np.where(full, sig, _mix(sig[src] + dist * _U(0x9E3779B97F4A7C15)) & _LOW)
    return sig


@dataclass
class _Deduper:
    """First-come duplicate finder: exact normalised text, first+last 200 chars, shingle Jaccard (LSH)."""

    near: bool
    exact_keys: dict[str, str] = field(default_factory=dict)
    edge_keys: dict[str, list[tuple[str, int]]] = field(default_factory=dict)
    buckets: dict[bytes, list[int]] = field(default_factory=dict)
    shingles: list[np.ndarray] = field(default_factory=list)
    kept_ids: list[str] = field(default_factory=list)

    def check(self, text_id: str, text: str) -> tuple[str, str] | None:
        """("exact"|"near", reason) if `text` duplicates a text kept earlier; else remember it, None."""
        norm = _normalise(text)
        key = norm.replace(" ", "")  # = duplicate_key(text), without normalising twice
        if not key:
            return None
        first = self.exact_keys.get(key)
        if first is not None:
            return "exact", f"exact duplicate of text {first!r}"
        edge_key: str | None = None
        band_keys: list[bytes] = []
        sh: np.ndarray | None = None
        if self.near:
            edge_key = key[:_EDGE] + "\x00" + key[-_EDGE:]
            for other_id, other_len in self.edge_keys.get(edge_key, ()):
                if min(other_len, len(key)) >= 0.8 * max(other_len, len(key)):
                    return "near", f"near duplicate of text {other_id!r} (same first and last {_EDGE} characters)"
            sh = _shingle_hashes(norm)
            if len(sh) >= _MIN_SHINGLES:
                sig = _oph_signature(sh)
                raw, width = sig.tobytes(), _ROWS * 8
                band_keys = [bytes([b]) + raw[b * width : (b + 1) * width] for b in range(_BANDS)]
                seen: set[int] = set()
                for bk in band_keys:
                    for j in self.buckets.get(bk, ()):
                        if j in seen:
                            continue
                        seen.add(j)
                        other = self.shingles[j]
                        inter = len(np.intersect1d(sh, other, assume_unique=True))
                        jac = inter / (len(sh) + len(other) - inter)
                        if jac >= _JACCARD:
                            return "near", f"near duplicate of text {self.kept_ids[j]!r} (Jaccard {jac:.2f})"
        self.exact_keys[key] = text_id
        if edge_key is not None:
            self.edge_keys.setdefault(edge_key, []).append((text_id, len(key)))
        if band_keys and sh is not None:
            j = len(self.shingles)
            self.shingles.append(sh)
            self.kept_ids.append(text_id)
            for bk in band_keys:
                self.buckets.setdefault(bk, []).append(j)
        return None


# --------------------------------------------------------------------------- the cleaner


class TextCleaner(BaseCleaner):
    """Markup, quotes, signatures, binary junk, PII, length, language and duplicates, in that order.

    Parameters are stored as given; they are checked when `transform` runs (scikit-learn style).
    """

    def __init__(
        self,
        *,
        strip_html: bool = True,
        strip_quotes: bool = True,
        strip_signatures: bool = True,
        max_chars: int | None = 2000,
        min_chars: int = 20,
        dedupe: str = "near",
        redact_pii: bool = True,
        languages: list[str] | None = None,
        drop_binary: bool = True,
    ) -> None:
        self.strip_html = strip_html
        self.strip_quotes = strip_quotes
        self.strip_signatures = strip_signatures
        self.max_chars = max_chars
        self.min_chars = min_chars
        self.dedupe = dedupe
        self.redact_pii = redact_pii
        self.languages = languages
        self.drop_binary = drop_binary

    def _check_params(self) -> list[str] | None:
        if self.dedupe not in _DEDUPE_MODES:
            raise ConfigError(f"dedupe must be one of {', '.join(_DEDUPE_MODES)}, not {self.dedupe!r}")
        if self.min_chars < 0:
            raise ConfigError(f"min_chars must be >= 0, not {self.min_chars}")
        if self.max_chars is not None and self.max_chars < max(1, self.min_chars):
            raise ConfigError(f"max_chars ({self.max_chars}) must be >= min_chars ({self.min_chars}) and >= 1")
        if self.languages is None:
            return None
        if isinstance(self.languages, str):
            raise ConfigError(f"languages must be a list of codes such as ['en', 'zh'], not {self.languages!r}")
        # "zh-CN", "en_US" -> "zh", "en": detection gives bare ISO 639-1 codes
        langs = [str(code).strip().lower().replace("_", "-").split("-")[0] for code in self.languages]
        langs = [code for code in langs if code]
        if not langs:
            raise ConfigError("languages is empty: give at least one code (e.g. 'en') or leave it unset")
        return langs

    def clean_text(self, text: str, counts: dict[str, int] | None = None) -> tuple[str | None, str | None]:
        """Clean one text: (cleaned text, None) or (None, reject reason). Adds to `counts` if given."""
        c = counts if counts is not None else dict.fromkeys(COUNT_KEYS, 0)
        t = text.replace("\r\n", "\n").replace("\r", "\n")
        if not t.replace("\n", "").replace("\t", "").isprintable():
            t = _INVISIBLE.sub("", t)
        if self.strip_html:
            new = strip_html(t, drop_blockquotes=self.strip_quotes)
            if new != t:
                c["html_stripped"] += 1
                t = new
        if self.strip_quotes:
            new = strip_quotes(t)
            if new != t:
                c["quotes_stripped"] += 1
                t = new
        if self.strip_signatures:
            new = strip_signature(t)
            if new != t.rstrip():
                c["signatures_stripped"] += 1
            t = new
        if self.drop_binary:
            reason = binary_reason(t)
            if reason is not None:
                c["binary"] += 1
                return None, reason
        t = " ".join(t.split())
        capped = False
        if self.max_chars is not None and len(t) > 2 * self.max_chars + 500:
            # PII redaction is the slow step: skip the part the cap will cut anyway
            t = _cap(t, 2 * self.max_chars + 500)
            capped = True
        if self.redact_pii:
            t, found = redact(t)
            for kind in PII_KINDS:
                if found[kind]:
                    c[_PII_COUNT[kind]] += 1
        if self.max_chars is not None and len(t) > self.max_chars:
            t = _cap(t, self.max_chars)
            capped = True
            if self.redact_pii and find_pii(t):  # a cut can expose "1234567890" from "1234567890.5"
                t = redact(t)[0]
        c["capped"] += capped
        if _weighted_length(t) < self.min_chars:
            c["too_short"] += 1
            return None, f"too short after cleaning ({len(t)} chars)"
        return t, None

    def transform(self, texts: pd.DataFrame) -> StageResult:
        """Clean a texts frame: kept rows (text replaced, `language` added), rejects, action counts."""
        langs = self._check_params()
        missing = [col for col in (TEXT_ID, TEXT) if col not in texts.columns]
        if missing:
            raise ValueError(f"texts frame lacks column(s) {', '.join(missing)}; it has {', '.join(map(str, texts.columns))}")
        counts = dict.fromkeys(COUNT_KEYS, 0)
        allowed = set(langs) if langs is not None else None
        dedupe = _Deduper(near=self.dedupe == "near") if self.dedupe != "none" else None

        kept_pos: list[int] = []
        kept_text: list[str] = []
        kept_lang: list[str] = []
        rej_pos: list[int] = []
        rej_reason: list[str] = []
        ids = texts[TEXT_ID].astype(str).tolist()
        for pos, raw in enumerate(texts[TEXT].tolist()):
            raw_text = raw if isinstance(raw, str) else ""
            cleaned, reason = self.clean_text(raw_text, counts)
            if cleaned is None:
                rej_pos.append(pos)
                rej_reason.append(reason or "rejected")
                continue
            lang = detect_language(cleaned)
            if allowed is not None and lang not in allowed:
                counts["wrong_language"] += 1
                rej_pos.append(pos)
                rej_reason.append(f"language {lang!r} not in {sorted(allowed)}")
                continue
            if dedupe is not None:
                dup = dedupe.check(ids[pos], cleaned)
                if dup is not None:
                    counts["exact_duplicates" if dup[0] == "exact" else "near_duplicates"] += 1
                    rej_pos.append(pos)
                    rej_reason.append(dup[1])
                    continue
            kept_pos.append(pos)
            kept_text.append(cleaned)
            kept_lang.append(lang)

        out = texts.iloc[kept_pos].copy()
        out[TEXT] = pd.Series(kept_text, index=out.index)
        out[LANGUAGE] = pd.Series(kept_lang, index=out.index)
        out = out.reset_index(drop=True)
        counts["kept"] = len(out)
        if rej_pos:  # in input order
            rejects = make_rejects(texts.iloc[rej_pos], stage="clean", reason=rej_reason, field="text")
        else:
            rejects = empty_rejects()
        return StageResult(texts=out, rejects=rejects, counts=counts)


_CJK_CHAR = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")


def _weighted_length(text: str) -> int:
    """Length in Latin-character equivalents: a CJK character says about as much as a short word.

    A plain `len` rejected 22% of real Chinese shopping reviews (10-19 characters is a normal review)
    at the same `min_chars` that suits English.
    """
    return len(text) + 2 * len(_CJK_CHAR.findall(text))
