"""Is a question about the run? A rule read from the question's own words, beside the router's guess.

The router (a 1.5B model on the default backend) decides out-of-scope questions right about 3 times in
4, and which one it lets through changes from run to run: a poem about autumn and "Who won the football
World Cup in 2018?" were each answered once ("The Houston Astros won ..."), from texts that happened to
share a word. A model that answers from the texts will always find some text to lean on, so the scope
decision must not rest on the model alone.

Two things are read from the question, in English and Chinese:

* a **reference to the run**: words that only make sense about the data: who wrote it (customers,
  users, posters, fans, reviewers, 用户, 网友 ...), what they wrote (texts, posts, reviews, quotes,
  评论 ...), what they do in it (say, mention, complain, 提到, 吐槽 ...), how the run is cut (segment,
  group, persona, share, 细分, 占比 ...), the run's own attribute columns, "segment 3";
* an **out-of-scope cue**: a task that is not about data (write a poem / an email / code, translate,
  calculate, a recipe, 写一首诗, 翻译), or a question about the world (who won, when did, how fast,
  what is the capital, the weather, how do I ..., 谁赢了, 天气, 怎么修).

The verdict:

| cue | reference | verdict | what happens |
|---|---|---|---|
| yes | no | "out" | refused before any model call |
| no | yes | "in" | the router picks the tools; its "out_of_scope" is overruled (texts are searched) |
| yes | yes | "undecided" | the router decides ("How do I segment a market?", "Write a poem about segment 2") |
| no | no | "undecided" | the router decides ("hockey?") |

What it cannot do: a world question phrased with the run's words ("Do customers know who won the
World Cup?") is "in" and gets answered from the texts, where the answer checks hold it to what they say;
a world question with no cue the lists know ("how many moons does Jupiter have") goes to the router,
which refuses about a quarter of those. Measured on 60 + 60 held-out questions written by someone who
never saw these lists (evals/cases/chat_scope_b.jsonl, bench/results/2026-11-30-chat-scope.md): the
rule refused 37 of 60 out-of-scope questions and 0 of 60 in-scope ones; with the router, 39 of 60.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from persona_llm.chat.records import ScopeDecision, ScopeVerdict

# Whole English words (lower case) that refer to the run's data. Plurals and verb forms are listed:
# stems would let "user" match "useful" and "post" match "postpone".
_ABOUT_RUN_EN = """
    segment segments segmentation cluster clusters group groups persona personas audience audiences
    customer customers client clients user users people poster posters commenter commenters reviewer
    reviewers writer writers author authors blogger bloggers member members buyer buyers shopper shoppers
    fans fan enthusiasts enthusiast owners owner respondents respondent participants folks crowd guests
    consumers consumer readers reader subscribers subscriber guys riders drivers players hobbyists gamers
    patients students visitors travellers travelers they them their theirs these those
    text texts post posts posting postings review reviews comment comments message messages messaging
    ticket tickets complaint complaints feedback quote quotes quotation quotations keyword keywords
    topic topics data dataset corpus run sample demographic demographics breakdown split share shares
    proportion percentage percent
    say says said saying mention mentions mentioned mentioning talk talks talked talking discuss
    discusses discussed discussing complain complains complained complaining praise praises praised
    writes wrote cite cites cited ask asks asked asking
    target targeting campaign campaigns brief briefs
"""
ABOUT_RUN_EN = frozenset(_ABOUT_RUN_EN.split())
# Chinese: substrings (no word boundaries to rely on).
ABOUT_RUN_ZH = (
    "细分", "分群", "群体", "人群", "客群", "用户", "客户", "顾客", "消费者", "买家", "网友", "住客", "读者", "博主",
    "评论", "评价", "差评", "好评", "帖子", "文本", "留言", "反馈", "画像", "数据", "占比", "比例", "关键词",
    "提到", "提及", "说了", "说什么", "怎么说", "抱怨", "吐槽", "讨论", "谈到", "谈论", "引用", "原话",
    "他们", "她们", "这些人", "哪类人", "哪一类", "营销", "目标",
)
_SEGMENT_ID = re.compile(r"\b(?:segment|cluster|group)\s*#?\s*\d+\b|(?:细分|分群|群体)\s*#?\s*\d+", re.IGNORECASE)
_EN_WORD = re.compile(r"[a-z]+(?:'[a-z]+)?")

# Out-of-scope cues: (name, pattern). A task that is not about data, or a question about the world.
_CUES_EN: tuple[tuple[str, str], ...] = (
    ("writing task", r"\b(?:write|compose|draft|generate|create|make|give)\b(?:\s+[\w-]+){0,4}?\s+"
     r"(?:poem|poems|song|songs|story|stories|essay|email|e-mail|letter|function|code|script|program|"
     r"class|query|regex|joke|jokes|haiku|limerick|tweet|speech|resume|cv|cover letter|plan|article|recipe)\b"),
    ("code", r"(?<![a-z])(?:python|javascript|typescript|java|c\+\+|sql|html|css|rust|golang|bash)(?![a-z])"),
    ("translation", r"\btranslate\b|\btranslation of\b|\bin (?:french|german|spanish|italian|japanese|chinese|english)\b"),
    ("arithmetic", r"\b(?:calculate|compute|solve|convert|simplify)\b|\d\s*(?:[-+*/x×^]|times|plus|minus|divided by)\s*\d"
     r"|\bsquare root\b|\bderivative\b|\bintegral\b"),
    ("recipe or advice", r"\b(?:recipe|recipes|how (?:do|can|should|would) (?:i|you|we)|how to|should i|can you help me|"
     r"recommend|is it (?:legal|safe|worth)|explain|summari[sz]e)\b|\bhow does\b.*\bwork\b"),
    ("world fact", r"^\s*(?:who|when|where)\s+(?:is|was|are|were|won|wins|did|does|invented|wrote|discovered|founded|directed|played)\b"
     r"|\bwho won\b|\bwhat year\b|\bwhat caused\b|\bwhat(?:'s| is| was| are) the (?:capital|population|price|cost|distance|height|speed|"
     r"weather|time|date|meaning|name|best|fastest|largest city|tallest|biggest company|average salary)\b"
     r"|\bhow (?:fast|far|tall|high|old|long ago|heavy|big|many calories|much does|much is)\b|\bwhat(?:'s| is) (?:a|an)\b|\bdefine\b|\bdefinition of\b"),
    ("general knowledge", r"\b(?:in general|generally|usually|typically|best practices?|worldwide|globally|companies|"
     r"what(?:'s| is) the difference between)\b"),
    ("news or weather", r"\b(?:weather|forecast|temperature tomorrow|stock market|stock price|share price|exchange rate|news|"
     r"headlines|election|score last night)\b"),
    ("chit-chat", r"\b(?:tell me a joke|how are you|who are you|what's your name|are you (?:human|alive|conscious)|your favou?rite)\b"),
)
_CUES_ZH: tuple[tuple[str, str], ...] = (
    ("writing task", r"写[^，。？！,.?!]{0,12}?(?:诗|文章|邮件|信|代码|程序|函数|故事|歌|作文|笑话|演讲|简历|方案)"),
    ("translation", r"翻译|译成|用英文|用英语"),
    ("arithmetic", r"计算|等于多少|算一下|解方程"),
    ("recipe or advice", r"菜谱|食谱|怎么做|怎么修|如何修|怎么学|如何学|怎么办|怎样才能|教我|怎么提高|如何提高|住哪里|推荐一"),
    ("world fact", r"谁(?:赢|是|发明|获得|写的|导演)|哪一年|什么时候(?:成立|发明|举行|开始)|首都|人口|多高|多快|是什么意思|最好的|哪家"),
    ("general knowledge", r"什么是|一般(?:怎么|如何|来说)|通常|全球|行业"),
    ("news or weather", r"天气|气温|新闻|股价|汇率|股市"),
    ("chit-chat", r"你是谁|讲个笑话|你好吗|你喜欢|你.{0,4}心情"),
)
_CUE_RES = tuple((name, re.compile(p, re.IGNORECASE)) for name, p in (*_CUES_EN, *_CUES_ZH))


def run_references(text: str, extra_words: Iterable[str] = ()) -> list[str]:
    """The words of `text` that refer to the run's data (`extra_words`: the run's attribute columns)."""
    lowered = text.casefold()
    words = set(_EN_WORD.findall(lowered))
    vocabulary = ABOUT_RUN_EN | {w.casefold() for w in extra_words if w}
    found = sorted(words & vocabulary)
    found += [w for w in ABOUT_RUN_ZH if w in text]
    found += [m.group(0) for m in _SEGMENT_ID.finditer(text)]
    return found


def scope_cues(text: str) -> list[str]:
    """Names of the out-of-scope cues in `text`, each once."""
    return [name for name, pattern in _CUE_RES if pattern.search(text)]


def question_scope(question: str, attribute_columns: Iterable[str] = ()) -> ScopeDecision:
    """The verdict for one question (the table in the module docstring)."""
    about, cues = run_references(question, attribute_columns), list(dict.fromkeys(scope_cues(question)))
    verdict: ScopeVerdict = "out" if cues and not about else "in" if about and not cues else "undecided"
    return ScopeDecision(verdict=verdict, about_run=about, cues=cues)
