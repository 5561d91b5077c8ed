"""Describe stage: what each segment is about, who is in it, and which texts stand for it."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd

from persona_llm.schema.frames import LANGUAGE, SOURCE_ROW, TEXT, TEXT_ID, USER_ID, attribute_columns
from persona_llm.schema.segments import (
    CategoricalSummary,
    CategoryShare,
    Keyword,
    NumericSummary,
    Representative,
)
from persona_llm.segment.base import BaseDescriber, SegmentDescription

_CJK = re.compile(r"[\u3400-\u9fff]")
# Placeholders written by PII redaction must never become keywords.
_PLACEHOLDER = re.compile(r"\[(EMAIL|PHONE|URL|NUMBER)\]")
_CHINESE_STOPWORDS = frozenset(
    [
        "的",
        "了",
        "是",
        "我",
        "也",
        "在",
        "有",
        "就",
        "不",
        "和",
        "都",
        "很",
        "这",
        "还",
        "但",
        "就是",
        "没有",
        "一个",
        "我们",
        "你",
        "他",
        "她",
        "它",
        "啊",
        "吧",
        "呢",
        "吗",
        "着",
        "给",
        "说",
        "没",
        "又",
        "去",
        "到",
        "会",
        "要",
        "可以",
        "不是",
        "因为",
        "所以",
        "非常",
        "比较",
        "感觉",
        "还是",
        "这个",
        "那个",
        "什么",
        "自己",
        "一下",
        "真的",
        "已经",
        "而且",
        "然后",
        "如果",
        "不过",
        "只是",
        "只有",
        "就是",
        "一些",
        "一直",
        "这样",
        "那么",
        "，",
        "。",
        "！",
        "？",
        "、",
        "～",
        "…",
    ]
)


# Contractions and filler words of informal writing that sklearn's list lacks.
_ENGLISH_EXTRA_STOPWORDS = frozenset(
    [
        "dont",
        "doesnt",
        "didnt",
        "isnt",
        "arent",
        "wasnt",
        "werent",
        "cant",
        "couldnt",
        "wouldnt",
        "shouldnt",
        "wont",
        "im",
        "ive",
        "id",
        "youre",
        "youve",
        "theyre",
        "theyve",
        "thats",
        "theres",
        "whats",
        "lets",
        "hes",
        "shes",
        "its",
        "heres",
        "ill",
        "youll",
        "itll",
        "weve",
        "wed",
        "hed",
        "shed",
        "just",
        "like",
        "really",
        "know",
        "think",
        "say",
        "said",
        "does",
        "did",
        "got",
        "get",
        "getting",
        "going",
        "make",
        "way",
        "thing",
        "things",
        "lot",
        "use",
        "used",
        "using",
        "want",
        "need",
        "yes",
        "ok",
        "okay",
        "also",
    ]
)


def _english_stopwords() -> frozenset[str]:
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    return frozenset(w.replace("'", "") for w in ENGLISH_STOP_WORDS)


_STOPWORDS = _english_stopwords() | _ENGLISH_EXTRA_STOPWORDS | _CHINESE_STOPWORDS


def tokenize_mixed(text: str) -> list[str]:
    """Words for keyword extraction: jieba for Chinese runs, lowercase word tokens otherwise."""
    text = _PLACEHOLDER.sub(" ", text)
    if _CJK.search(text):
        import jieba

        jieba.setLogLevel(60)
        tokens = [t.strip().lower() for t in jieba.lcut(text)]
        return [
            t
            for t in tokens
            if t and t not in _CHINESE_STOPWORDS and (len(t) > 1 or _CJK.match(t) is None) and re.search(r"\w", t)
        ]
    # Apostrophes go: "don't" and "dont" are one (stop) word.
    return re.findall(r"(?u)\b[a-z][a-z0-9_-]+\b", text.lower().replace("'", "").replace("\u2019", ""))


class KeywordExtractor:
    """Class-based TF-IDF (BERTopic's c-TF-IDF): all texts of a segment form one document.

    A term's weight in segment c is tf(t, c) * log(1 + A / f(t)), with A the average number of words
    per segment and f(t) the term's frequency over all segments: frequent-everywhere words sink.
    With few segments that idf is weak ("think", "people" topped every segment of 20NG), so it is
    multiplied by the usual text-level idf, log((1 + n) / (1 + df(t))) + 1 over the n texts.
    A term must also be used by at least `min_users` different users, so one person's signature
    or catchphrase never describes a whole segment.
    """

    def __init__(
        self, top_n: int = 10, ngram_range: tuple[int, int] = (1, 2), min_df: int = 2, min_users: int = 2
    ) -> None:
        self.top_n = top_n
        self.ngram_range = ngram_range
        self.min_df = min_df
        self.min_users = min_users

    def _analyzer(self, text: str) -> list[str]:
        stop = _STOPWORDS
        tokens = [t for t in tokenize_mixed(text) if t not in stop]
        lo, hi = self.ngram_range
        out: list[str] = []
        for n in range(lo, hi + 1):
            out.extend(" ".join(tokens[i : i + n]) for i in range(len(tokens) - n + 1))
        return out

    def fit_transform(
        self, texts: Sequence[str], segment_ids: np.ndarray, user_ids: Sequence[str] | None = None
    ) -> dict[int, list[Keyword]]:
        from scipy import sparse
        from sklearn.feature_extraction.text import CountVectorizer

        segment_ids = np.asarray(segment_ids)
        segs = sorted({int(s) for s in segment_ids if s >= 0})
        if not segs:
            return {}
        try:
            counts = CountVectorizer(analyzer=self._analyzer, min_df=min(self.min_df, len(texts))).fit(texts)
            x = counts.transform(texts).tocsr()
        except ValueError:  # only stop words: nothing to say
            return {s: [] for s in segs}
        vocab = np.asarray(counts.get_feature_names_out())
        present = (x > 0).astype(np.float64)
        # Rows of `member` pick each segment's texts: tf per segment in one sparse product.
        seg_index = {s: i for i, s in enumerate(segs)}
        rows = [i for i, s in enumerate(segment_ids) if s >= 0]
        member = sparse.csr_matrix(
            (np.ones(len(rows)), ([seg_index[int(segment_ids[i])] for i in rows], rows)),
            shape=(len(segs), len(texts)),
        )
        tf = np.asarray((member @ x).todense(), dtype=np.float64)
        if user_ids is not None and self.min_users > 1:
            users, inverse = np.unique(np.asarray(user_ids, dtype=str), return_inverse=True)
            by_user = sparse.csr_matrix(
                (np.ones(len(texts)), (inverse, np.arange(len(texts)))), shape=(len(users), len(texts))
            )
            n_users_using = np.asarray(((by_user @ present) > 0).sum(axis=0)).ravel()
            tf[:, n_users_using < min(self.min_users, len(users))] = 0.0
        total = tf.sum(axis=0)
        words_per_seg = tf.sum(axis=1, keepdims=True)
        words_per_seg[words_per_seg == 0] = 1.0
        avg_words = float(tf.sum(axis=1).mean()) or 1.0
        idf = np.log1p(avg_words / np.maximum(total, 1.0))
        text_df = np.asarray(present.sum(axis=0)).ravel()
        text_idf = np.log((1 + len(texts)) / (1 + text_df)) + 1
        ctfidf = (tf / words_per_seg) * idf * text_idf
        out: dict[int, list[Keyword]] = {}
        for row, s in enumerate(segs):
            order = np.argsort(-ctfidf[row])[: self.top_n * 3]
            picked: list[Keyword] = []
            for j in order:
                if ctfidf[row, j] <= 0:
                    break
                term = str(vocab[j])
                # Skip a unigram already covered by a chosen bigram and vice versa: less redundancy.
                if any(term in k.term.split() or k.term in term.split() for k in picked):
                    continue
                picked.append(Keyword(term=term, score=round(float(ctfidf[row, j]), 6)))
                if len(picked) == self.top_n:
                    break
            out[s] = picked
        return out


def summarize_attributes(
    users: pd.DataFrame, labels: np.ndarray, columns: Sequence[str], max_categories: int = 50
) -> dict[int, dict[str, NumericSummary | CategoricalSummary]]:
    """Per-segment summaries of user attribute columns (one row per user, aligned with labels).

    Numeric columns get mean and median (and the overall mean for comparison); categorical columns
    with at most `max_categories` distinct values get their top 3 values with shares. Columns that
    are identifiers or free text (too many distinct values) are skipped.
    """
    out: dict[int, dict[str, NumericSummary | CategoricalSummary]] = {}
    segs = sorted({int(s) for s in labels if s >= 0})
    for s in segs:
        out[s] = {}
    for col in columns:
        values = users[col]
        present = values.notna() & (values.astype(str).str.strip() != "")
        if present.sum() == 0:
            continue
        numeric = pd.to_numeric(values[present], errors="coerce")
        if numeric.notna().mean() >= 0.95:
            num_all = pd.to_numeric(values, errors="coerce")
            overall = float(num_all.mean())
            for s in segs:
                v = num_all[(labels == s)].dropna()
                if len(v):
                    out[s][col] = NumericSummary(
                        count=int(len(v)), mean=float(v.mean()), median=float(v.median()), overall_mean=overall
                    )
            continue
        cats = values[present].astype(str)
        if cats.nunique() > max_categories:
            continue
        overall_share = cats.value_counts(normalize=True)
        for s in segs:
            v = values[(labels == s) & present.to_numpy()].astype(str)
            if not len(v):
                continue
            shares = v.value_counts(normalize=True).head(3)
            out[s][col] = CategoricalSummary(
                count=int(len(v)),
                top=[
                    CategoryShare(
                        value=str(val), share=round(float(sh), 4), overall_share=round(float(overall_share[val]), 4)
                    )
                    for val, sh in shares.items()
                ],
            )
    return out


def summarizable_columns(texts: pd.DataFrame, columns: Sequence[str]) -> list[str]:
    """Drop identifier-like attributes (a distinct value on every row, e.g. a post id or timestamp)."""
    if len(texts) < 3:
        return list(columns)
    return [c for c in columns if not texts[c].is_unique]


def user_attribute_table(texts: pd.DataFrame, user_ids: np.ndarray, columns: Sequence[str]) -> pd.DataFrame:
    """One row per user (in `user_ids` order): each attribute's most frequent value for that user."""
    if not columns:
        return pd.DataFrame(index=pd.Index(user_ids, name=USER_ID))
    grouped = texts[[USER_ID, *columns]].groupby(USER_ID, sort=False)

    def _mode(s: pd.Series) -> object:
        s = s.dropna()
        if s.empty:
            return None
        return s.value_counts().index[0]

    table = grouped.agg(_mode)
    return table.reindex(user_ids)


def select_representatives(
    text_vectors: np.ndarray,
    centroid: np.ndarray,
    k: int = 8,
    diversity: float = 0.3,
    user_ids: np.ndarray | None = None,
    max_per_user: int = 2,
    candidates: int = 200,
) -> list[tuple[int, float]]:
    """Maximal marginal relevance: near the centre, not near each other, few texts per user.

    Returns (row index into text_vectors, cosine to the centroid) for up to k texts.
    """
    if len(text_vectors) == 0:
        return []
    rel = text_vectors @ centroid
    pool = np.argsort(-rel)[:candidates]
    chosen: list[int] = []
    per_user: dict[str, int] = {}
    while len(chosen) < min(k, len(pool)):
        best, best_score = -1, -np.inf
        for i in pool:
            if i in chosen:
                continue
            if user_ids is not None and per_user.get(str(user_ids[i]), 0) >= max_per_user:
                continue
            redundancy = max((float(text_vectors[i] @ text_vectors[j]) for j in chosen), default=0.0)
            score = (1 - diversity) * float(rel[i]) - diversity * redundancy
            if score > best_score:
                best, best_score = int(i), score
        if best < 0:
            break
        chosen.append(best)
        if user_ids is not None:
            per_user[str(user_ids[best])] = per_user.get(str(user_ids[best]), 0) + 1
    return [(i, float(rel[i])) for i in chosen]


def representatives_for(
    texts: pd.DataFrame, text_vectors: np.ndarray, centroid: np.ndarray, k: int = 8, diversity: float = 0.3
) -> list[Representative]:
    """`texts` and `text_vectors` hold one segment's texts, row-aligned."""
    picks = select_representatives(text_vectors, centroid, k=k, diversity=diversity, user_ids=texts[USER_ID].to_numpy())
    out = []
    for i, sim in picks:
        row = texts.iloc[i]
        out.append(
            Representative(
                text_id=str(row[TEXT_ID]),
                user_id=str(row[USER_ID]),
                text=str(row[TEXT]),
                language=str(row[LANGUAGE]) if LANGUAGE in texts.columns else "und",
                similarity=round(sim, 4),
            )
        )
    return out


def segment_keywords(texts: pd.DataFrame, n_keywords: int = 10) -> dict[int, list[Keyword]]:
    """Each segment's keywords as the describe stage finds them: c-TF-IDF over `texts` (one row per text,
    with text, user_id and segment_id columns; -1 for texts of unassigned users). `forget` recomputes a
    run's keywords with it, from the texts that remain."""
    return KeywordExtractor(top_n=n_keywords).fit_transform(
        texts[TEXT].astype(str).tolist(), texts["segment_id"].to_numpy(), user_ids=texts[USER_ID].astype(str).tolist()
    )


def terms_in_use(texts: Sequence[str], user_ids: Sequence[str], terms: Iterable[str], min_users: int = 2) -> set[str]:
    """Those of `terms` (keywords: words or n-grams, as `KeywordExtractor` tokenizes them) that at least
    `min_users` different users still write: the rule every keyword obeys when it is found."""
    wanted = {t for t in terms if t}
    if not wanted:
        return set()
    analyzer = KeywordExtractor(ngram_range=(1, max(len(t.split()) for t in wanted)))._analyzer
    users_of: dict[str, set[str]] = {}
    for text, user in zip(texts, user_ids, strict=True):
        for term in wanted.intersection(analyzer(str(text))):
            users_of.setdefault(term, set()).add(str(user))
    return {t for t, users in users_of.items() if len(users) >= min_users}


class SegmentDescriber(BaseDescriber):
    """The default describe stage: c-TF-IDF keywords, attribute summaries, MMR representative texts.

    Parameters
    ----------
    n_keywords: keywords per segment (`KeywordExtractor`).
    n_representatives: representative texts per segment (`select_representatives`).
    mmr_diversity: 0 picks the texts nearest the centroid; higher trades relevance for variety.
    """

    def __init__(self, n_keywords: int = 10, n_representatives: int = 8, mmr_diversity: float = 0.3) -> None:
        self.n_keywords = n_keywords
        self.n_representatives = n_representatives
        self.mmr_diversity = mmr_diversity

    def describe(
        self,
        texts: pd.DataFrame,
        text_vectors: np.ndarray,
        user_ids: np.ndarray,
        labels: np.ndarray,
        centroids: np.ndarray,
    ) -> dict[int, SegmentDescription]:
        text_labels = texts["segment_id"].to_numpy()
        keywords = segment_keywords(texts, self.n_keywords)
        attrs = attribute_columns(texts.drop(columns=["segment_id"], errors="ignore"))
        attrs = summarizable_columns(texts, [a for a in attrs if a != SOURCE_ROW])
        user_table = user_attribute_table(texts, user_ids, attrs)
        summaries = summarize_attributes(user_table.reset_index(drop=True), labels, attrs)
        out: dict[int, SegmentDescription] = {}
        for segment_id in sorted({int(label) for label in labels if label >= 0}):
            in_segment = text_labels == segment_id
            representatives = representatives_for(
                texts.loc[in_segment].reset_index(drop=True),
                text_vectors[in_segment],
                centroids[segment_id],
                k=self.n_representatives,
                diversity=self.mmr_diversity,
            )
            out[segment_id] = SegmentDescription(
                keywords=keywords.get(segment_id, []),
                representatives=representatives,
                attributes=summaries.get(segment_id, {}),
            )
        return out
