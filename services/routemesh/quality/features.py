"""What the quality predictor reads from a prompt: hashed word and character n-grams plus classifier features."""

from __future__ import annotations

import functools
import math
import re
import zlib
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields
from itertools import pairwise

from routemesh.classifier.features import TASK_TYPES, RequestFeatures, analysis_window

# Words are runs of letters and digits; "_" splits them so snake_case names share their parts.
_WORD = re.compile(r"[^\W_]+")
_DIGITS = str.maketrans("123456789", "000000000")
# crc32 continues from a start value: a different start per kind of term keeps a word, a pair and a
# character n-gram that spell the same bytes apart without building prefixed strings.
_WORD_SEED = 0
_CHAR_SEED = 0x5BD1E995
# Odd 32-bit multiplier (FNV prime) that mixes the first word's hash before the second is xor-ed in.
_PAIR_MULTIPLIER = 0x01000193
HASHES = ("crc32",)
# Prompt formats (PromptView.form): an open question, or a multiple-choice one with its options listed.
FORMATS = ("open", "multiple_choice")
# An answer option on a line of its own ("\nA. ..." or "\nb) ..."), looked for near the prompt's start.
_OPTION = re.compile(r"\n([A-Da-d])[.)]")
_OPTIONS_WITHIN = 4000


def prompt_format(text: str) -> int:
    """The index in FORMATS of the prompt's format: multiple-choice when three of options A-D are listed."""
    return 1 if len({letter.lower() for letter in _OPTION.findall(text, 0, _OPTIONS_WITHIN)}) >= 3 else 0


class FeatureError(ValueError):
    """Feature settings that cannot be used; the message names the field."""


@dataclass(frozen=True)
class FeatureSettings:
    """How text becomes hashed n-grams; stored in the artifact so serving computes what training did."""

    # The n-gram part has 2**bucket_bits buckets.
    bucket_bits: int = 16
    # Word n-grams 1..word_ngram_max (1: words only, 2: words and adjacent pairs).
    word_ngram_max: int = 2
    # Character n-grams of each word with "<" and ">" marking its ends, lengths char_min..char_max (0: none);
    # taken over the word's UTF-8 bytes, which are its characters in ASCII text.
    char_ngram_min: int = 4
    char_ngram_max: int = 4
    # Only the first head_chars and last tail_chars of a long prompt are read, so cost stays flat.
    head_chars: int = 1500
    tail_chars: int = 500
    # Character n-grams come from at most this many leading characters of a word (hashes, base64, URLs).
    max_word_chars: int = 20
    # Every digit reads as 0 in a word's n-grams, so "37 apples" and "12 apples" share their terms.
    fold_digits: bool = True
    # Each term also counts in a copy of its own for the prompt's format (FORMATS), so a word can weigh
    # differently in a multiple-choice question and an open one.
    format_copies: bool = True
    hash: str = "crc32"

    def __post_init__(self) -> None:
        for setting in fields(self):
            value, default = getattr(self, setting.name), setting.default
            if type(value) is not type(default):
                raise FeatureError(f"{setting.name} must be a {type(default).__name__}, not {value!r}")
        if not 8 <= self.bucket_bits <= 24:
            raise FeatureError(f"bucket_bits must be 8..24, not {self.bucket_bits}")
        if self.word_ngram_max not in (1, 2):
            raise FeatureError(f"word_ngram_max must be 1 or 2, not {self.word_ngram_max}")
        if self.char_ngram_max and not 1 <= self.char_ngram_min <= self.char_ngram_max <= 8:
            raise FeatureError(f"character n-grams must satisfy 1 <= min <= max <= 8, not "
                               f"{self.char_ngram_min}..{self.char_ngram_max}")
        if self.head_chars < 1 or self.tail_chars < 0 or self.max_word_chars < 1:
            raise FeatureError("head_chars and max_word_chars must be positive, tail_chars not negative")
        if self.hash not in HASHES:
            raise FeatureError(f"hash must be one of {', '.join(HASHES)}, not {self.hash!r}")

    @property
    def ngram_columns(self) -> int:
        """Columns of the n-gram part: the buckets, and as many again per format copy."""
        return (1 << self.bucket_bits) * (1 + len(FORMATS) if self.format_copies else 1)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, object]) -> FeatureSettings:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise FeatureError(f"unknown feature settings: {', '.join(unknown)}")
        return cls(**raw)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class PromptView:
    """A prompt as the predictor reads it (NgramHasher.view)."""

    # The lower-cased head-and-tail window of the prompt.
    window: str
    # The window's words, in order.
    words: list[str]
    # prompt_format() of the whole prompt: an index in FORMATS.
    form: int


def term_value(count: int) -> float:
    """Sublinear term frequency: a term seen k times weighs 1 + ln k."""
    return 1.0 + math.log(count) if count > 1 else 1.0


class NgramHasher:
    """The hashed n-gram terms of prompts under one FeatureSettings.

    Terms of a word (its unigram and character n-grams) are a pure function of the word, so they are
    cached: real traffic repeats its vocabulary, and a cached word costs one lookup.
    """

    def __init__(self, settings: FeatureSettings, cached_words: int = 1 << 16) -> None:
        self.settings = settings
        self.buckets = 1 << settings.bucket_bits
        self._mask = self.buckets - 1
        self.word_terms = functools.lru_cache(maxsize=cached_words)(self._word_terms)

    def view(self, text: str) -> PromptView:
        """The prompt read once: its lower-cased head-and-tail window, that window's words, its format."""
        s = self.settings
        window = analysis_window(text, s.head_chars, s.tail_chars).lower()
        return PromptView(window=window, words=_WORD.findall(window), form=prompt_format(text))

    def _word_terms(self, word: str) -> tuple[int, tuple[int, ...]]:
        """(the word's 32-bit hash, its buckets: the unigram's first, then its character n-grams')."""
        s = self.settings
        if s.fold_digits:
            word = word.translate(_DIGITS)
        word_hash = zlib.crc32(word.encode(), _WORD_SEED)
        buckets = [word_hash & self._mask]
        if s.char_ngram_max:
            marked = f"<{word[:s.max_word_chars]}>".encode()
            last = len(marked)
            for n in range(s.char_ngram_min, min(s.char_ngram_max, last) + 1):
                buckets.extend(zlib.crc32(marked[i:i + n], _CHAR_SEED) & self._mask for i in range(last - n + 1))
        return word_hash, tuple(buckets)

    def pair_bucket(self, first_hash: int, second_hash: int) -> int:
        """The bucket of an adjacent word pair, mixed from the two words' hashes."""
        return self.pair_buckets(((first_hash, second_hash),))[0]

    def pair_buckets(self, hash_pairs: Iterable[tuple[int, int]]) -> list[int]:
        """pair_bucket() of each (first word's hash, second word's hash), in one pass (serving's hot loop)."""
        mask = self._mask
        return [(((first * _PAIR_MULTIPLIER) & 0xFFFFFFFF) ^ second ^ 0x9E3779B9) & mask for first, second in hash_pairs]

    def counts(self, words: list[str]) -> tuple[Counter[str], Counter[tuple[str, str]]]:
        """How often each word, and each adjacent word pair (when word_ngram_max is 2), occurs."""
        pairs: Counter[tuple[str, str]] = Counter(pairwise(words)) if self.settings.word_ngram_max > 1 else Counter()
        return Counter(words), pairs

    def copy_offset(self, prompt_format: int) -> int:
        """Where a format's copy of the buckets starts among the n-gram columns."""
        return (1 + prompt_format) * self.buckets

    def vector(self, view: PromptView) -> dict[int, float]:
        """The normalised n-gram part: column -> value.

        Every term carries term_value(count) (a word's character n-grams carry the word's), summed per
        bucket, and the whole is divided by Z = sqrt(sum of squared term values), the L2 norm the vector
        would have if no two terms shared a bucket. Z needs no per-bucket aggregation, which lets serving
        add up cached per-word contributions (predictor.py) and still compute exactly this. With
        format_copies the same values appear again at copy_offset(view.form) + bucket.
        """
        word_counts, pair_counts = self.counts(view.words)
        out: dict[int, float] = {}
        squares = 0.0
        hashes = {}
        for word, count in word_counts.items():
            value = term_value(count)
            word_hash, buckets = self.word_terms(word)
            hashes[word] = word_hash
            squares += value * value * len(buckets)
            for bucket in buckets:
                out[bucket] = out.get(bucket, 0.0) + value
        for (first, second), count in pair_counts.items():
            value = term_value(count)
            bucket = self.pair_bucket(hashes[first], hashes[second])
            squares += value * value
            out[bucket] = out.get(bucket, 0.0) + value
        if not out:
            return out
        scale = 1.0 / math.sqrt(squares)
        vector = {bucket: value * scale for bucket, value in out.items()}
        if self.settings.format_copies:
            offset = self.copy_offset(view.form)
            vector.update({offset + bucket: value for bucket, value in list(vector.items())})
        return vector


# Signals the classifier names with these prefixes are counted, one dense feature per prefix.
SIGNAL_PREFIXES = ("math:", "code:", "reasoning:", "keyword:")
DENSE_NAMES: tuple[str, ...] = (
    "log_input_tokens", "complexity", "has_code", "task_confidence",
    *(f"task:{task}" for task in TASK_TYPES),
    *(f"signals:{prefix.rstrip(':')}" for prefix in SIGNAL_PREFIXES),
    "log_digits", "log_lines", "log_questions", "multiple_choice",
    # Length predicts difficulty differently for multiple-choice and open questions: a slope per format.
    "log_input_tokens:multiple_choice",
)


def dense_features(text: str, features: RequestFeatures, view: PromptView) -> tuple[float, ...]:
    """The classifier's features of the prompt and a few counts of its text, in DENSE_NAMES order (raw).

    Lines and question marks are counted in the whole text, digits in the view's window.
    """
    signal_counts = [0.0] * len(SIGNAL_PREFIXES)
    for signal in features.signals:
        for i, prefix in enumerate(SIGNAL_PREFIXES):
            if signal.startswith(prefix):
                signal_counts[i] += 1.0
    options = float(view.form)
    log_tokens = math.log1p(features.input_tokens)
    return (
        log_tokens, features.complexity, float(features.has_code),
        features.task_confidence,
        *(1.0 if features.task_type == task else 0.0 for task in TASK_TYPES),
        *signal_counts,
        math.log1p(sum(map(view.window.count, "0123456789"))), math.log1p(text.count("\n")),
        math.log1p(text.count("?")), options, log_tokens * options,
    )
