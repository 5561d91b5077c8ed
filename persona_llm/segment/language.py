"""Fast language identification: "en", "zh", other ISO 639-1 codes, or "und" (undetermined).

1. Scripts first: a text whose letters are mostly Han characters is "zh" (with kana: "ja"; Hangul:
   "ko"). Counting characters is fast and, for these scripts, more reliable than n-gram models.
2. English shortcut: Latin text where common English function words make up a large share of the
   words is "en" without running a model (most texts in practice; py3langid costs ~1 ms a text).
3. Otherwise py3langid (its model ships inside the package; no download) on the first few hundred
   characters.
Texts with too few letters to judge (numbers, placeholders, "ok!!") are "und".
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

__all__ = ["UNDETERMINED", "detect_language"]

UNDETERMINED = "und"

_SAMPLE_CHARS = 1200  # characters looked at for the script share
_MODEL_CHARS = 400  # characters handed to py3langid
_MIN_LATIN_LETTERS = 12  # fewer letters (non-CJK) than this: "und"
_MIN_CJK = 1

_HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002ffff]")
_KANA = re.compile(r"[\u3040-\u30ff\u31f0-\u31ff\uff66-\uff9f]")
_HANGUL = re.compile(r"[\uac00-\ud7af\u1100-\u11ff\u3130-\u318f]")
_PLACEHOLDER = re.compile(r"\[(?:EMAIL|PHONE|URL|NUMBER)\]")
_WORD = re.compile(r"[a-z']+")

# Frequent English function words that are rare as words in other Latin-script languages
# ("a", "in", "is", "on", "de" and the like are left out on purpose).
_EN_WORDS = frozenset(
    ["the", "and", "of", "to", "that", "it", "for", "you", "with", "was", "have", "this", "are", "not", "but", "be", "they", "what", "will", "would", "there", "their", "if", "or", "from", "by", "an", "can", "we", "he", "she", "do", "just", "my", "me", "so", "about", "your", "all", "which", "when", "been", "has", "had", "were", "them", "some", "could", "should", "more", "than", "then", "its", "our", "into", "only", "other", "also", "how", "any", "these", "those", "because", "very", "there's", "it's", "i'm", "don't", "doesn't", "can't", "i've", "isn't", "you're"]
)
_EN_MIN_WORDS = 6
_EN_SHARE = 0.2


@lru_cache(maxsize=1)
def _identifier() -> Any:
    """py3langid's identifier, loaded once on first use (about half a second)."""
    from py3langid import langid

    # a private instance: another caller's py3langid.set_languages() must not change our answers
    loader = getattr(langid.LanguageIdentifier, "from_model_file", None)
    if loader is not None:
        return loader(langid.MODEL_FILE, norm_probs=False)
    return langid.LanguageIdentifier.from_pickled_model(langid.MODEL_FILE, norm_probs=False)


def _looks_english(sample: str) -> bool:
    words = _WORD.findall(sample.lower())
    if len(words) < _EN_MIN_WORDS:
        return False
    hits = sum(1 for w in words if w in _EN_WORDS)
    return hits / len(words) >= _EN_SHARE


def detect_language(text: str) -> str:
    """ISO 639-1 code of `text` ("en", "zh", "de"...), or "und" when there is too little to judge."""
    if not text:
        return UNDETERMINED
    sample = _PLACEHOLDER.sub(" ", text[:_SAMPLE_CHARS])
    letters = sum(map(str.isalpha, sample))
    if letters == 0:
        return UNDETERMINED
    if not sample.isascii():
        han = len(_HAN.findall(sample))
        kana = len(_KANA.findall(sample))
        hangul = len(_HANGUL.findall(sample))
        cjk = han + kana + hangul
        if cjk >= _MIN_CJK and cjk / letters >= 0.3:
            if kana >= max(2, 0.1 * cjk):
                return "ja"
            if hangul > han:
                return "ko"
            return "zh"
        if letters - cjk < _MIN_LATIN_LETTERS:
            return UNDETERMINED
    elif letters < _MIN_LATIN_LETTERS:
        return UNDETERMINED
    if _looks_english(sample[:_MODEL_CHARS * 2]):
        return "en"
    lang, _score = _identifier().classify(sample[:_MODEL_CHARS])
    # py3langid says "zxx" for "no linguistic content"
    return UNDETERMINED if lang == "zxx" else str(lang)

