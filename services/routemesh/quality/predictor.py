"""Predicted success per model for a prompt, from a quality artifact, in pure Python."""

from __future__ import annotations

import copy
import functools
import math
from array import array
from collections import Counter
from collections.abc import Mapping
from itertools import pairwise, repeat
from pathlib import Path

from routemesh.classifier.features import RequestFeatures, classify
from routemesh.quality.artifact import ModelWeights, QualityArtifact, load_artifact
from routemesh.quality.features import FORMATS, NgramHasher, PromptView, dense_features, term_value

# A logit beyond this is certainty to float precision; clamping keeps exp() in range.
_LOGIT_LIMIT = 35.0


def _sigmoid(logit: float) -> float:
    return 1.0 / (1.0 + math.exp(-max(-_LOGIT_LIMIT, min(_LOGIT_LIMIT, logit))))


class QualityPredictor:
    """P(model answers well) for each model of an artifact.

    Computes what training fitted (features.NgramHasher.vector, then each model's weights), but by
    words: a word's n-gram terms always add the same weights, so their per-model sums are cached, and a
    prompt costs about one cache lookup per distinct word, and one bucket read per model per distinct
    adjacent pair (pairs rarely repeat across prompts: a cache of them would mostly miss).
    """

    def __init__(self, artifact: QualityArtifact, cached_words: int = 1 << 15) -> None:
        self.artifact = artifact
        self.models = tuple(artifact.models)
        self.hasher = NgramHasher(artifact.features, cached_words=0)
        weights = [artifact.models[m] for m in self.models]
        # Per prompt format, one flat array per model holding each bucket's shared weight plus its weight in
        # that format's copy: a term is then one read, a word's terms one C-level map per model, and an array
        # read is one memory access where a dict lookup is several.
        self._tables = tuple(tuple(self._table(model, form) for model in weights) for form in range(len(FORMATS)))
        self._biases = tuple(model.bias for model in weights)
        self.offsets: dict[str, float] = dict.fromkeys(self.models, 0.0)
        self._dense = tuple(model.dense for model in weights)
        self._pairs = artifact.features.word_ngram_max > 1
        self._word = functools.lru_cache(maxsize=cached_words)(self._word_uncached)

    def with_offsets(self, offsets: Mapping[str, float]) -> QualityPredictor:
        """This predictor with per-model logit offsets: the seam for correcting calibration from outcome feedback.

        An offset moves a model's logit before the sigmoid (positive: it answers well more often than the
        artifact predicts). The copy shares the weight tables and caches; this predictor is unchanged.
        """
        unknown = sorted(set(offsets) - set(self.models))
        if unknown:
            raise ValueError(f"no prediction for {', '.join(unknown)}; the artifact predicts {', '.join(self.models)}")
        bad = [m for m, v in offsets.items() if not math.isfinite(v)]
        if bad:
            raise ValueError(f"logit offsets must be finite numbers (not for {', '.join(bad)})")
        corrected = copy.copy(self)
        corrected.offsets = {**self.offsets, **{m: float(v) for m, v in offsets.items()}}
        corrected._biases = tuple(model.bias + corrected.offsets[name]
                                  for name, model in zip(self.models, (self.artifact.models[m] for m in self.models),
                                                         strict=True))
        return corrected

    @classmethod
    def from_artifact(cls, artifact: QualityArtifact | str | Path,
                      expected_sha256: str | None = None) -> QualityPredictor:
        """A predictor from an artifact or its path (checked against expected_sha256 when given)."""
        if not isinstance(artifact, QualityArtifact):
            artifact = load_artifact(artifact, expected_sha256)
        return cls(artifact)

    def _table(self, model: ModelWeights, form: int) -> array[float]:
        """Bucket -> the model's weight for a term there in a prompt of this format."""
        buckets = self.hasher.buckets
        copy = self.hasher.copy_offset(form) if self.artifact.features.format_copies else -1
        table = array("f", bytes(4 * buckets))
        for column, weight in zip(model.buckets, model.weights, strict=True):
            if column < buckets:
                table[column] += weight
            elif copy <= column < copy + buckets:
                table[column - copy] += weight
        return table

    @property
    def sha256(self) -> str:
        return self.artifact.sha256

    def _word_uncached(self, word: str, form: int) -> tuple[int, int, tuple[float, ...]]:
        """(the word's hash, how many terms it adds, per model the sum of its terms' weights) in a format."""
        word_hash, buckets = self.hasher.word_terms(word)
        return word_hash, len(buckets), tuple(sum(map(table.__getitem__, buckets)) for table in self._tables[form])

    def _ngram_dots(self, view: PromptView) -> list[float]:
        """Per model, the n-gram weights . the normalised n-gram vector of the prompt.

        Words and pairs are grouped by how often they occur (most occur once): each group's weights are
        summed per model at C speed (zip over the cached per-word sums, map over the pairs' buckets) and
        scaled by the group's term value once.
        """
        form = view.form
        words = Counter(view.words)
        entries = list(map(self._word, words, repeat(form, len(words))))
        # term value -> [terms (for the norm), per-word weight sums]
        groups: dict[int, tuple[list[int], list[tuple[float, ...]]]] = {}
        for (_, terms, sums), count in zip(entries, words.values(), strict=True):
            group = groups.get(count)
            if group is None:
                group = groups[count] = ([], [])
            group[0].append(terms)
            group[1].append(sums)
        dots, squares = [0.0] * len(self.models), 0.0
        for count, (terms, sums) in groups.items():
            value = term_value(count)
            squares += value * value * sum(terms)
            for at, column in enumerate(zip(*sums, strict=True)):
                dots[at] += value * sum(column)
        if self._pairs:
            hashes = dict(zip(words, (entry[0] for entry in entries), strict=True))
            pairs = Counter(pairwise(view.words))
            buckets = self.hasher.pair_buckets([(hashes[first], hashes[second]) for first, second in pairs])
            by_count: dict[int, list[int]] = {}
            for bucket, count in zip(buckets, pairs.values(), strict=True):
                by_count.setdefault(count, []).append(bucket)
            tables = self._tables[form]
            for count, group in by_count.items():
                value = term_value(count)
                squares += value * value * len(group)
                for at, table in enumerate(tables):
                    dots[at] += value * sum(map(table.__getitem__, group))
        if squares:
            scale = 1.0 / math.sqrt(squares)
            dots = [dot * scale for dot in dots]
        return dots

    def predict(self, text: str, features: RequestFeatures | None = None) -> dict[str, float]:
        """P(answers well) per model for a prompt (the last user message).

        `features` are the classifier's features of the request when already computed; training computed
        them from each prompt alone, as one user message, which is what is used when they are not given.
        """
        if features is None:
            features = classify([("user", text)])
        view = self.hasher.view(text)
        dense = dense_features(text, features, view)
        dots = self._ngram_dots(view)
        return {
            model: _sigmoid(bias + dot + sum(w * x for w, x in zip(weights, dense, strict=True)))
            for model, bias, dot, weights in zip(self.models, self._biases, dots, self._dense, strict=True)
        }
