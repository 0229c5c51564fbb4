"""Deterministic routing features of a chat request: tokens, task type, language, complexity, code."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from routemesh.classifier import task_signals
from routemesh.classifier.language import detect_language, text_words
from routemesh.classifier.task_signals import Scores, TextView
from routemesh.classifier.tokens import estimate_input_tokens

ROLES = ("system", "user", "assistant", "tool")
TASK_TYPES = task_signals.TASK_TYPES

# Instructions sit at the start or the end of a prompt; pasted material fills the middle. Analysing a
# bounded head and tail keeps the cost flat for long prompts (tokens are still counted over everything).
HEAD_CHARS = 1500
TAIL_CHARS = 500
SYSTEM_CHARS = 1000
# The system message steers the task less than what the user asks for.
SYSTEM_WEIGHT = 0.5
# An earlier message with code makes a follow-up more likely to be about code.
CODE_CONTEXT_WEIGHT = 0.5
SHORT_TOKENS = 40
LONG_TOKENS = 2000
MAX_SIGNALS = 32

# Complexity parts: each is capped, and the sum is clipped to 1.
_LENGTH_SHARE = 0.3
_LENGTH_SATURATION_TOKENS = 8000
_TASK_BASE = {
    "chat": 0.0,
    "code": 0.15,
    "math": 0.2,
    "summarization": 0.08,
    "translation": 0.05,
    "extraction": 0.08,
    "creative_writing": 0.08,
    "question_answering": 0.05,
}
_REASONING_STEP, _REASONING_CAP = 0.07, 0.3
_CONSTRAINT_STEP, _CONSTRAINT_CAP = 0.03, 0.15
_PART_STEP, _PART_CAP = 0.04, 0.2
_CODE_SHARE = 0.1


@dataclass(frozen=True)
class RequestFeatures:
    """What the classifier derives from a request's messages; docs/classifier.md has the details.

    Task type, language and complexity read a head-and-tail window of the last user message; tokens
    and code fences read every message in full.
    """

    # cl100k_base estimate from byte-class counts (tokens.py) plus 3 per message and 3 for the reply.
    input_tokens: int
    # Highest sum of weighted keyword, phrase and structure signals (task_signals.py); chat is the floor.
    task_type: str
    # (best - runner-up) / (best + 1): the winning margin, damped so one weak signal stays uncertain.
    task_confidence: float
    # ISO 639-1 from UTF-8 script ranges, then stopword votes for Latin script; "und" for too little text.
    language: str
    # Sum of capped parts: log length, task base, reasoning markers, parts asked, constraints, code.
    complexity: float
    # A ``` fence in any message, or code marks (statement ends, keywords) dense in the user message.
    has_code: bool
    # Names of the signals that fired ("keyword:translate", "code:fence", "length:long"), first 32.
    signals: tuple[str, ...]


def last_user_text(messages: Sequence[tuple[str, str]]) -> str:
    """The text the task, language and quality prediction read: the last user message, else the last message."""
    for role, content in reversed(messages):
        if role == "user":
            return content
    return messages[-1][1] if messages else ""


def analysis_window(text: str, head: int = HEAD_CHARS, tail: int = TAIL_CHARS) -> str:
    """The first `head` and last `tail` characters of `text` (all of it when short)."""
    if len(text) <= head + tail:
        return text
    return text[:head] + "\n" + text[-tail:]


def _view(text: str) -> TextView:
    lowered = text.lower()
    words = text_words(lowered)
    return TextView(lowered=lowered, words=words, word_set=frozenset(words))


def _complexity(input_tokens: int, task: str, view: TextView, has_code: bool, signals: list[str]) -> float:
    """0 (trivial) .. 1 (hard) from length, task type, reasoning markers, parts, constraints and code."""
    length = _LENGTH_SHARE * min(
        1.0, math.log1p(input_tokens / 30) / math.log1p(_LENGTH_SATURATION_TOKENS / 30)
    )
    markers = task_signals.reasoning_markers(view)
    signals.extend(f"reasoning:{marker}" for marker in markers)
    reasoning = min(_REASONING_CAP, _REASONING_STEP * len(markers))
    parts = task_signals.part_count(view.lowered)
    if parts >= 2:
        signals.append("structure:multi-part")
    multi_part = min(_PART_CAP, _PART_STEP * max(0, parts - 1))
    constraints = task_signals.constraint_count(view)
    if constraints >= 2:
        signals.append(f"constraints:{constraints}")
    constrained = min(_CONSTRAINT_CAP, _CONSTRAINT_STEP * constraints)
    total = (
        length + _TASK_BASE[task] + reasoning + multi_part + constrained + (_CODE_SHARE if has_code else 0)
    )
    return round(min(1.0, max(0.0, total)), 4)


def classify(messages: Sequence[tuple[str, str]]) -> RequestFeatures:
    """Features of a conversation given as (role, content) pairs, oldest first.

    input_tokens counts every message; task type and language come from the last user message (the
    last message of any role when there is none) and, for the task, the system messages at half weight.
    """
    contents = [content for _, content in messages]
    input_tokens = estimate_input_tokens(contents)
    last_user = last_user_text(messages)
    system = "\n".join(content for role, content in messages if role == "system")

    view = _view(analysis_window(last_user))
    fenced = "```" in last_user
    fenced_elsewhere = not fenced and any("```" in content for content in contents)
    marks = task_signals.code_marks(view)
    has_code = (
        fenced
        or fenced_elsewhere
        or task_signals.is_dense_code(view.lowered, marks)
        or task_signals.has_inline_code(view.lowered, marks)
    )

    scores = Scores.empty()
    task_signals.score_keywords(view, scores)
    task_signals.score_structure(view, scores, marks, fenced, len(last_user))
    if fenced_elsewhere:
        scores.add("code", CODE_CONTEXT_WEIGHT, "context:code")
    if system:
        task_signals.score_keywords(_view(system[:SYSTEM_CHARS]), scores, SYSTEM_WEIGHT, "system:")
    task, confidence = task_signals.pick_task(scores.by_task)
    signals = scores.signals
    if task == "chat" and not signals:
        signals.append("fallback:chat")
    if input_tokens < SHORT_TOKENS:
        signals.append("length:short")
    elif input_tokens >= LONG_TOKENS:
        signals.append("length:long")

    return RequestFeatures(
        input_tokens=input_tokens,
        task_type=task,
        task_confidence=round(confidence, 4),
        language=detect_language(view.lowered, view.word_set),
        complexity=_complexity(input_tokens, task, view, has_code, signals),
        has_code=has_code,
        signals=task_signals.distinct(signals)[:MAX_SIGNALS],
    )
