"""Deterministic, plausible-looking completion text, split into streaming tokens."""

from __future__ import annotations

import random
import re

_NOUNS = (
    "system", "approach", "result", "model", "request", "design", "idea", "process", "value",
    "method", "question", "answer", "context", "detail", "pattern", "problem", "solution", "step",
    "example", "reason", "option", "trade-off", "structure", "outcome", "service", "input", "output",
)
_ADJECTIVES = (
    "simple", "useful", "important", "careful", "common", "practical", "clear", "reliable",
    "efficient", "general", "specific", "robust", "small", "larger", "typical", "different",
)
_VERBS = (
    "improves", "explains", "depends on", "changes", "supports", "describes", "shapes",
    "affects", "reduces", "highlights", "clarifies", "requires", "builds on", "balances",
)
_OPENERS = (
    "In short,", "In practice,", "Generally,", "For example,", "Put simply,", "As a rule,",
    "Importantly,", "Overall,", "That said,", "In most cases,",
)
_STOPWORDS = frozenset(
    """about above after again against also because been before being below between both
    could does doing down during each from further have having here into itself just more
    most other over same should some such than that their them then there these they this
    those through under until very what when where which while whom with would your yours
    please write tell give make explain show using want need like know""".split()
)
_CODE_REQUEST = re.compile(
    r"```|\b(code|function|implement\w*|script|class|python|javascript|typescript|rust|golang|java|sql|"
    r"regex|algorithm|program\w*|bug|compile\w*|refactor\w*|def)\b",
    re.IGNORECASE,
)
_WORD = re.compile(r"[A-Za-z][A-Za-z-]{3,}")
# A token is a run of whitespace plus one word or symbol run, so joining tokens restores the text.
_TOKEN = re.compile(r"\s*\S+")
_LONG_WORD = 9


def topic_words(prompt: str, limit: int = 6) -> list[str]:
    """Up to `limit` distinct content words of the prompt, in order of first appearance."""
    seen: dict[str, None] = {}
    for match in _WORD.finditer(prompt):
        word = match.group().lower().strip("-")
        if len(word) >= 4 and word not in _STOPWORDS:
            seen.setdefault(word, None)
            if len(seen) >= limit:
                break
    return list(seen)


def looks_like_code_request(prompt: str) -> bool:
    return _CODE_REQUEST.search(prompt) is not None


def _noun_phrase(rng: random.Random, topics: list[str]) -> str:
    roll = rng.random()
    if topics and roll < 0.35:
        return rng.choice(topics)
    if roll < 0.7:
        return f"the {rng.choice(_ADJECTIVES)} {rng.choice(_NOUNS)}"
    return f"{rng.choice(('a', 'this', 'each'))} {rng.choice(_NOUNS)}"


def _sentence(rng: random.Random, topics: list[str]) -> str:
    words = [_noun_phrase(rng, topics), rng.choice(_VERBS), _noun_phrase(rng, topics)]
    if rng.random() < 0.3:
        words.insert(0, rng.choice(_OPENERS))
    tail = rng.random()
    if tail < 0.25:
        words.append(f"because {_noun_phrase(rng, topics)} {rng.choice(_VERBS)} {_noun_phrase(rng, topics)}")
    elif tail < 0.45:
        words.append(f"in most {rng.choice(_NOUNS)}s")
    text = " ".join(words)
    return text[0].upper() + text[1:] + "."


def _identifier(rng: random.Random, topics: list[str]) -> str:
    names = [t for t in topics if not _CODE_REQUEST.fullmatch(t)]
    base = rng.choice(names) if names else rng.choice(_NOUNS)
    return re.sub(r"[^a-z0-9]+", "_", base.lower()).strip("_") or "value"


def _code_block(rng: random.Random, topics: list[str], lines: int) -> str:
    name = _identifier(rng, topics)
    body = [
        f"def process_{name}(items):",
        f'    """Return the {rng.choice(_ADJECTIVES)} {name} values."""',
        "    result = []",
        "    for item in items:",
        "        if item is None:",
        "            continue",
    ]
    while len(body) < lines:
        var = _identifier(rng, topics)
        body.append(rng.choice((
            f"        {var} = normalize_{var}(item)",
            f"        # keep the {rng.choice(_ADJECTIVES)} {rng.choice(_NOUNS)}s",
            f"        item = item.with_{var}({var}={len(body)})",
        )))
    body += ["        result.append(item)", "    return result"]
    return "```python\n" + "\n".join(body) + "\n```"


def split_tokens(text: str) -> list[str]:
    """Split into streaming tokens: each word with its leading whitespace, long words in two pieces."""
    tokens: list[str] = []
    for match in _TOKEN.finditer(text):
        token = match.group()
        stripped = token.lstrip()
        if len(stripped) >= _LONG_WORD and stripped.isalpha():
            cut = len(token) - len(stripped) + len(stripped) // 2
            tokens.extend((token[:cut], token[cut:]))
        else:
            tokens.append(token)
    return tokens


def generate_tokens(rng: random.Random, prompt: str, target_tokens: int) -> list[str]:
    """A complete answer of about `target_tokens` tokens (it finishes its last sentence or code block)."""
    topics = topic_words(prompt)
    if looks_like_code_request(prompt):
        intro = _sentence(rng, topics)
        code = _code_block(rng, topics, lines=max(8, target_tokens // 4))
        tokens = split_tokens(intro + "\n\n" + code)
        if len(tokens) < target_tokens:
            tokens += split_tokens("\n\n" + _sentence(rng, topics))
        return tokens
    tokens = []
    paragraph_sentences = 0
    while len(tokens) < target_tokens:
        sentence = _sentence(rng, topics)
        if tokens:
            sentence = ("\n\n" if paragraph_sentences >= 4 and rng.random() < 0.5 else " ") + sentence
            paragraph_sentences = 0 if sentence.startswith("\n") else paragraph_sentences
        tokens.extend(split_tokens(sentence))
        paragraph_sentences += 1
    return tokens
