"""Weighted keyword and structure signals that score each task type, and complexity markers."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from routemesh.classifier.language import text_words
from routemesh.common.policy import TASK_TYPES

# Chat wins only when nothing else scores above this floor.
CHAT_BASELINE = 0.6


def _word_set(*lines: str) -> frozenset[bytes]:
    """The space-separated words of `lines` as UTF-8 bytes, the form TextView.word_set holds."""
    return frozenset(word.encode() for line in lines for word in line.split())


def _weights(task: str, spec: str) -> dict[bytes, tuple[str, float]]:
    """Parse "word:weight word:weight ..." into {word: (task, weight)}."""
    table = {}
    for item in spec.split():
        word, _, weight = item.rpartition(":")
        table[word.encode()] = (task, float(weight))
    return table


# Single words, matched against the set of words of the text. Weights: 2.5 names the task outright,
# 1.0-1.5 is a strong hint, below 1.0 a word that other tasks use too.
_KEYWORD_SPECS = {
    "code": (
        "implement:1 implementation:0.8 function:0.8 functions:0.8 refactor:1.5 refactoring:1.5 bug:1"
        " bugs:1 debug:1.5 debugging:1.5 compile:1 compiler:1 python:1.5 javascript:1.5 typescript:1.5"
        " java:1.5 rust:1 golang:1.5 kotlin:1.5 php:1.5 sql:1.5 postgres:1.2 postgresql:1.2 mysql:1.2"
        " sqlite:1.2 regex:1.2 api:0.8 endpoint:0.8 script:0.8 code:1 coding:1 programming:1"
        " program:0.6 algorithm:0.8 traceback:1.5 stacktrace:1.5 exception:1 segfault:1.5 unittest:1.2"
        " pytest:1.5 html:1 css:1.5 react:1.5 vue:1.5 angular:1.5 flexbox:1.5 div:1 component:0.8"
        " django:1.5 docker:1 dockerfile:1.5 kubernetes:1.2 terraform:1.5 nodejs:1.5 quicksort:1.5"
        " mergesort:1.5 bash:1.2 git:1 npm:1.2 variable:0.8 variables:0.8 method:0.5 class:0.5 async:1"
        " recursion:1 recursive:0.8 array:0.8 query:0.6 database:0.6 runtime:0.8 syntax:0.8 lambda:0.8"
        " repository:0.6 repo:0.8 backend:0.8 frontend:0.8 snippet:1 generator:0.8 generators:0.8"
        " goroutine:1.5 goroutines:1.5 thread:0.8 threads:0.8 parse:0.5 compiles:1 error:0.4 fix:0.4"
        " codigo:1 código:1 programm:1 funktion:0.8 fonction:0.8 función:0.8 funzione:0.8"
    ),
    "math": (
        "solve:1.5 equation:2 equations:2 integral:2 integrate:1.2 derivative:2 differentiate:1.5"
        " prove:1.5 proof:1.5 theorem:2 lemma:2 calculate:1.5 compute:0.8 probability:1.5 matrix:1.2"
        " eigenvalue:2 eigenvalues:2 polynomial:2 factorial:1.5 factorize:2 simplify:1 arithmetic:1.5"
        " algebra:1.5 geometry:1.5 calculus:2 triangle:1 percent:0.8 percentage:0.8 sqrt:1.5"
        " logarithm:1.5 fraction:1 integer:1 integers:1 prime:0.8 primes:1 modulo:1 divisible:1.5"
        " sum:0.8 variance:1 median:0.5 vector:0.6 area:0.8 circle:0.8 radius:1.2 diameter:1.2"
        " perimeter:1.2 permutations:1.5 combinations:1 injective:2 surjective:2 bijective:2"
        " deviation:1 converge:1 converges:1 inequality:1.5 math:1.5 maths:1.5 mathematical:1.2"
        " formula:1 multiply:1.2 divide:1 digits:0.5 ecuación:2 équation:2 gleichung:2 calcula:1.5"
        " calcule:1.5"
    ),
    "summarization": (
        "summarize:2.5 summarise:2.5 summary:2 summarizing:2.5 summarization:2 tldr:2.5 condense:1.5"
        " recap:1.5 gist:1.5 synopsis:1.5 abstract:0.5 overview:0.8 takeaways:1.2 shorten:1 resume:1.5"
        " resumen:2.5 resumir:2.5 résumé:1.5 résumer:2.5 zusammenfassung:2.5 zusammenfassen:2.5"
        " riassumi:2.5 riassunto:2.5 resuma:2.5 samenvatting:2.5 samenvatten:2.5"
    ),
    "translation": (
        "translate:2.5 translation:2 translated:1.5 translating:2 translator:1 traduce:2.5"
        " traducir:2.5 traduis:2.5 traduire:2.5 traduction:2 übersetze:2.5 übersetzen:2.5"
        " übersetzung:2 traduci:2.5 tradurre:2.5 traduza:2.5 traduzir:2.5 vertaal:2.5 vertalen:2.5"
        " переведи:2.5 перевод:2 перевести:2.5"
    ),
    "extraction": (
        "extract:2 extracting:2 extraction:2 json:1 fields:1 field:0.5 parse:1 parsing:0.8"
        " entities:1.2 entity:0.8 structured:0.8 csv:0.8 yaml:0.6 table:0.4 columns:0.6 attributes:0.5"
        " identify:0.5 dates:0.5 emails:0.5 addresses:0.5 invoice:0.6 urls:0.8 links:0.5 hashtags:0.8"
        " extrae:2 extraire:2 extrahiere:2"
    ),
    "creative_writing": (
        "story:1.5 stories:1.5 poem:2 poems:2 poetry:1.5 haiku:2.5 limerick:2.5 sonnet:2.5 lyrics:2"
        " song:1 imagine:1 fiction:1.5 fictional:1.5 character:0.6 characters:0.5 plot:0.6 tale:1"
        " fantasy:0.8 rhyme:1.5 rhyming:1.5 verse:1 creative:1 novel:0.6 screenplay:2 dialogue:0.6"
        " narrative:0.8 villain:1 dragon:0.6 slogan:1 tagline:1 joke:1 jokes:1 bedtime:1 poema:2"
        " cuento:1.5 historia:0.8 poème:2 histoire:0.8 gedicht:2 geschichte:0.8 poesia:1.5"
    ),
    "question_answering": (
        "explain:0.5 difference:0.6 meaning:0.5 define:0.8 definition:0.8 capital:0.3 who:0.3"
        " when:0.2 where:0.3"
    ),
    "chat": "chat:0.8 lol:1 haha:1",
}


def _keyword_table() -> dict[bytes, tuple[tuple[str, float], ...]]:
    """{word: ((task, weight), ...)}; a word may hint at several tasks ("parse": code and extraction)."""
    table: dict[bytes, tuple[tuple[str, float], ...]] = {}
    for task, spec in _KEYWORD_SPECS.items():
        for word, entry in _weights(task, spec).items():
            table[word] = (*table.get(word, ()), entry)
    return table


_KEYWORDS = _keyword_table()
_KEYWORD_SET = frozenset(_KEYWORDS)

# Substrings of the lower-cased text: phrases, and keywords of scripts written without spaces.
_PHRASES: tuple[tuple[str, str, float], ...] = (
    ("tl;dr", "summarization", 2.5), ("key points", "summarization", 1.5),
    ("main points", "summarization", 1.5), ("in a nutshell", "summarization", 1.0),
    ("list all", "extraction", 1.5), ("pull out", "extraction", 1.0), ("key-value", "extraction", 1.0),
    ("named entit", "extraction", 1.5), ("write a story", "creative_writing", 1.5),
    ("write a poem", "creative_writing", 1.5), ("short story", "creative_writing", 1.5),
    ("once upon a time", "creative_writing", 1.5), ("fairy tale", "creative_writing", 1.0),
    ("stack trace", "code", 1.5), ("unit test", "code", 1.5), ("pull request", "code", 1.0),
    ("c++", "code", 1.5), ("c#", "code", 1.5), ("time complexity", "code", 1.5),
    ("key takeaways", "summarization", 1.5), ("get all", "extraction", 1.0), ("find all", "extraction", 1.0),
    ("as a list", "extraction", 0.8), ("how many ways", "math", 2.0), ("show that", "math", 1.0),
    ("f(x)", "math", 1.0), ("how are you", "chat", 1.5), ("what's up", "chat", 1.0),
    ("good morning", "chat", 1.0), ("nice to meet", "chat", 1.0), ("tell me about yourself", "chat", 1.5),
    ("linked list", "code", 1.0), ("how do you say", "translation", 1.5),
    ("bullet points", "summarization", 0.5),
)  # fmt: skip
_WIDE_PHRASES: tuple[tuple[str, str, float], ...] = (
    ("翻译", "translation", 2.5), ("翻譯", "translation", 2.5), ("翻訳", "translation", 2.5),
    ("번역", "translation", 2.5), ("总结", "summarization", 2.5), ("摘要", "summarization", 2.0),
    ("要約", "summarization", 2.5), ("요약", "summarization", 2.5), ("代码", "code", 1.5), ("コード", "code", 1.5),
    ("코드", "code", 1.5), ("诗", "creative_writing", 1.5), ("故事", "creative_writing", 1.5),
    ("物語", "creative_writing", 1.5), ("计算", "math", 1.0), ("計算", "math", 1.0), ("方程", "math", 2.0),
    ("提取", "extraction", 2.0), ("抽出", "extraction", 2.0), ("∫", "math", 1.5), ("√", "math", 1.0),
    ("∑", "math", 1.5), ("≤", "math", 0.5), ("≥", "math", 0.5),
)  # fmt: skip


def _guarded(phrases: tuple[tuple[str, str, float], ...]) -> tuple[tuple[bytes, str, str, float], ...]:
    """Prefix each phrase with its first word: a cheap set test that skips most substring searches."""
    return tuple((text_words(phrase)[0], phrase, task, weight) for phrase, task, weight in phrases)


_GUARDED_PHRASES = _guarded(_PHRASES)
_LANGUAGE_NAMES = _word_set(
    "english french spanish german italian portuguese dutch russian chinese mandarin cantonese japanese",
    "korean arabic hindi greek turkish polish swedish hebrew ukrainian vietnamese thai indonesian",
)
_LATEX = ("\\frac", "\\int", "\\sum", "\\sqrt", "\\begin{", "\\cdot", "\\lim", "\\infty", "$$", "\\(", "\\[")

# Question openers in the supported Latin-script languages (first word of the message).
_WH_WORDS = _word_set(
    "what who whom whose when where why how which",
    "qué cuál cómo quién dónde cuándo quoi quel quelle pourquoi comment où quand wer warum wo wann welche",
    "cosa perché chi dove quale qual quem onde wat hoe waarom waar wanneer что как почему где когда кто",
)
# Opening words of small talk; only the first word counts, so a quoted "Hi team" in an email does not.
_GREETINGS = _word_set(
    "hi hello hey heya yo thanks thank thx bye goodbye ok okay cool great morning evening hola bonjour",
    "salut ciao hallo",
)
_QUESTION_MARKS = ("?", "？", "؟")
_YES_NO_WORDS = _word_set("is are was were do does did can could should would will has have")

# Source code that is not fenced still leaves these marks at a density prose does not reach: statement
# ends and operators (counted) and keywords of common languages (present or not).
_CODE_PUNCTUATION = (
    ";\n", "{\n", "}\n", "):\n", "),\n", "},\n", ":\n    ", "();", "=>", "!=", "</", "::", "#include",
)  # fmt: skip
_CODE_WORDS = _word_set(
    "def elif self const null nullptr void printf println struct impl fn func lambda async await namespace",
    "typedef bool sizeof malloc std console stdout stdin argv kwargs args len dict enumerate isinstance",
    "foreach override elseif endif var",
)
_SQL_CLAUSES = _word_set("where join group order having limit")

_REASONING_WORDS = _word_set(
    "prove proof derive derivation optimize optimise optimization optimal analyze analyse analysis",
    "compare comparison justify design architecture evaluate reasoning tradeoff tradeoffs complexity",
    "scalable scalability concurrency thorough thoroughly rigorous rigorously comprehensive rationale",
    "implications",
)
_REASONING_PHRASES = tuple(
    (text_words(phrase)[0], phrase)
    for phrase in (
        "step by step", "step-by-step", "trade-off", "pros and cons", "edge case", "explain why",
        "in depth", "in detail", "first principles", "think carefully",
    )
)  # fmt: skip
_CONSTRAINT_WORDS = _word_set(
    "must should without only exactly ensure require requires required requirement requirements",
    "constraint constraints limit never always avoid maximum minimum strictly",
)
_CONSTRAINT_PHRASES = tuple(
    (text_words(phrase)[0], phrase)
    for phrase in ("at least", "at most", "no more than", "do not", "don't", "less than", "within ")
)
_LIST_ITEM = re.compile(r"\n[ \t]*(?:\d{1,2}[.)]|[-*•])[ \t]")

# Digits around an operator, once whitespace is dropped: "3 * (4+5)" -> "0+(0+0)".
_MATH_CLASSES = bytes(
    ord("0") if chr(b).isdigit() and b < 128 else ord("+") if chr(b) in "+*/^=" else ord("o")
    for b in range(256)
)
_WHITESPACE = b" \t\r\n"


@dataclass(frozen=True)
class TextView:
    """A text prepared once for every signal: lower-cased, and its words as UTF-8 bytes."""

    lowered: str
    words: list[bytes]
    word_set: frozenset[bytes]


@dataclass
class Scores:
    """Per-task scores and the signals that produced them, in firing order."""

    by_task: dict[str, float]
    signals: list[str]

    @classmethod
    def empty(cls) -> Scores:
        return cls(dict.fromkeys(TASK_TYPES, 0.0) | {"chat": CHAT_BASELINE}, [])

    def add(self, task: str, weight: float, signal: str) -> None:
        self.by_task[task] += weight
        self.signals.append(signal)


def score_keywords(view: TextView, scores: Scores, weight: float = 1.0, prefix: str = "") -> None:
    """Add keyword, phrase and translation-target signals of `view`, scaled by `weight`."""
    for word in sorted(view.word_set & _KEYWORD_SET):
        for task, value in _KEYWORDS[word]:
            scores.add(task, value * weight, f"{prefix}keyword:{word.decode()}")
    lowered = view.lowered
    for guard, phrase, task, value in _GUARDED_PHRASES:
        if guard in view.word_set and phrase in lowered:
            scores.add(task, value * weight, f"{prefix}keyword:{phrase}")
    if not lowered.isascii():
        for phrase, task, value in _WIDE_PHRASES:
            if phrase in lowered:
                scores.add(task, value * weight, f"{prefix}keyword:{phrase}")
    targets = 0
    for name in sorted(_LANGUAGE_NAMES & view.word_set):
        target = name.decode()
        if f"into {target}" in lowered or f"in {target}" in lowered or f"to {target}" in lowered:
            scores.add("translation", 1.5 * weight, f"{prefix}target:{target}")
            targets += 1
        else:
            scores.add("translation", 0.3 * weight, f"{prefix}language-name:{target}")
    # "What is 'good night' in Korean?": a quoted phrase plus a target language asks for a translation.
    if targets and (lowered.count("'") >= 2 or lowered.count('"') >= 2 or "“" in lowered):
        scores.add("translation", 1.0 * weight, f"{prefix}translation:quoted-text")


def code_marks(view: TextView) -> int:
    """How many code-like marks the text holds: statement ends and operators, plus distinct keywords."""
    lowered = view.lowered
    marks = sum(lowered.count(mark) for mark in _CODE_PUNCTUATION) + len(_CODE_WORDS & view.word_set)
    if b"select" in view.word_set and b"from" in view.word_set and _SQL_CLAUSES & view.word_set:
        marks += 2
    return marks


def has_inline_code(lowered: str, marks: int) -> bool:
    """Backtick-quoted snippets with at least one code mark."""
    return marks > 0 and lowered.count("`") >= 2


def is_dense_code(lowered: str, marks: int) -> bool:
    """Whether code marks are dense enough to call the text source code."""
    # Six marks settle it even in a long message; fewer must come at least one per four lines.
    return marks >= 6 or (marks >= 3 and marks * 4 >= lowered.count("\n") + 1)


def score_structure(view: TextView, scores: Scores, marks: int, fenced: bool, message_chars: int) -> None:
    """Add the structural signals of the last user message: code, math notation, questions, length."""
    lowered = view.lowered
    if fenced:
        scores.add("code", 2.5, "code:fence")
    if is_dense_code(lowered, marks):
        scores.add("code", 2.0, "code:lines")
    elif marks >= 2:
        scores.add("code", 0.8, "code:syntax")
    if not fenced and lowered.count("`") >= 2:
        if has_inline_code(lowered, marks):
            scores.add("code", 0.8, "code:inline")
        else:
            scores.add("code", 0.5, "code:backticks")
    math_classes = lowered.encode("utf-8", "surrogatepass").translate(_MATH_CLASSES, _WHITESPACE)
    expressions = math_classes.count(b"0+0")
    if expressions:
        scores.add("math", 1.2 if expressions < 2 else 2.0, "math:expression")
    elif _asks_a_question(lowered):
        # A question carrying several numbers is usually a word problem ("3 workers ... 12 days ...").
        numbers = math_classes.count(b"o0") + math_classes.startswith(b"0")
        if numbers >= 2:
            scores.add("math", 0.8 if numbers < 3 else 1.2, "math:numbers")
    if ("\\" in lowered or "$$" in lowered) and any(command in lowered for command in _LATEX):
        scores.add("math", 2.0, "math:latex")
    if message_chars >= 1500 and "summar" in lowered:
        scores.add("summarization", 1.5, "summarization:long-text")
    _score_question(view, scores, message_chars)


def _asks_a_question(lowered: str) -> bool:
    return lowered.rstrip().endswith(_QUESTION_MARKS)


def _score_question(view: TextView, scores: Scores, message_chars: int) -> None:
    stripped = view.lowered.rstrip()
    ends_with_question = stripped.endswith(_QUESTION_MARKS)
    first = view.words[0] if view.words else b""
    if first in _GREETINGS:
        scores.add("chat", 1.0, "chat:greeting")
    # A bare question is the fallback for asking; topic keywords of the other tasks outweigh it.
    wh_start = first in _WH_WORDS
    if wh_start:
        scores.add("question_answering", 0.7, "question:wh")
    elif first in _YES_NO_WORDS and ends_with_question:
        scores.add("question_answering", 0.5, "question:yes-no")
    if ends_with_question:
        scores.add("question_answering", 0.6, "question:mark")
    elif "?" in stripped:
        scores.add("question_answering", 0.3, "question:mark")
    if message_chars <= 200 and (ends_with_question or wh_start):
        scores.add("question_answering", 0.3, "question:short")


def reasoning_markers(view: TextView) -> list[str]:
    """The reasoning markers ("step by step", "prove", "trade-off", ...) present in the text."""
    found = [word.decode() for word in sorted(_REASONING_WORDS & view.word_set)]
    found += [
        phrase for guard, phrase in _REASONING_PHRASES if guard in view.word_set and phrase in view.lowered
    ]
    return found


def constraint_count(view: TextView) -> int:
    """How many distinct constraint words and phrases ("must", "at most", "without") the text holds."""
    count = len(_CONSTRAINT_WORDS & view.word_set)
    return count + sum(
        1 for guard, phrase in _CONSTRAINT_PHRASES if guard in view.word_set and phrase in view.lowered
    )


def part_count(lowered: str) -> int:
    """Questions plus list items: the number of things asked for at once."""
    marks = lowered.count("?")
    if not lowered.isascii():
        marks += lowered.count("？") + lowered.count("؟")
    return marks + len(_LIST_ITEM.findall(lowered))


def pick_task(by_task: dict[str, float]) -> tuple[str, float]:
    """The best-scoring task and its confidence, the margin over the runner-up normalised to 0..1."""
    ranked = sorted(TASK_TYPES, key=lambda task: -by_task[task])
    best, runner_up = by_task[ranked[0]], by_task[ranked[1]]
    # The +1 keeps a single weak signal from claiming certainty.
    return ranked[0], min(1.0, max(0.0, (best - runner_up) / (best + 1.0)))


def distinct(items: Iterable[str]) -> tuple[str, ...]:
    """Items without repeats, first occurrence kept."""
    return tuple(dict.fromkeys(items))
