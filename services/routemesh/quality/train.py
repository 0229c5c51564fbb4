"""Train the quality predictor: one logistic regression per model on hashed n-grams and classifier features."""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from routemesh.classifier.features import classify
from routemesh.quality.artifact import ModelWeights, QualityArtifact, ThresholdCurve, save_artifact, stored
from routemesh.quality.features import DENSE_NAMES, FeatureSettings, NgramHasher, dense_features
from routemesh.quality.outcomes import UNKNOWN, OutcomeTable, OutcomesError, load_outcomes, split
from routemesh.quality.predictor import QualityPredictor

# Calibrated quality targets: 0.80, 0.81, ... 1.00 of the stronger model's accuracy.
TARGETS = tuple(round(0.80 + 0.01 * i, 2) for i in range(21))


class TrainingError(ValueError):
    """Data or settings the predictor cannot be trained on; the message says why."""


@dataclass(frozen=True)
class TrainingSettings:
    """How the regressions are fitted; everything here is recorded in the artifact."""

    seed: int = 0
    # Cross-validation folds inside the training split, to choose C (never the validation split).
    folds: int = 5
    # Inverse L2 regularisation strengths tried; the one with the lowest cross-validated log-loss wins.
    c_grid: tuple[float, ...] = (0.25, 0.5, 1.0)
    # Dense features are standardised on the training split and then scaled by this: an L2-normalised
    # n-gram vector has entries near 0.05, and dense columns on a far larger scale slow liblinear's
    # solver badly (and escape the regularisation).
    dense_scale: float = 0.1
    # N-gram weights smaller than this in magnitude are dropped from the artifact: a term's value is
    # around 0.05 in a typical prompt, so one dropped weight moves a logit by well under 0.001.
    prune_below: float = 0.01


@dataclass
class TrainingResult:
    """The trained artifact and what training found on the way."""

    artifact: QualityArtifact
    seconds: float
    # The validation split, and per model its rows' predicted success from the artifact's weights.
    validation: OutcomeTable
    validation_predictions: dict[str, list[float]] = field(default_factory=dict)


def _libraries() -> tuple[Any, Any, Any]:
    try:
        import numpy
        import scipy.sparse
        import sklearn
    except ImportError as exc:
        raise TrainingError(f"training needs numpy, scipy and scikit-learn ({exc.name} is missing): "
                            "pip install -e '.[train]'") from None
    return numpy, scipy.sparse, sklearn


def _matrices(table: OutcomeTable, hasher: NgramHasher) -> tuple[Any, Any]:
    """(n-gram CSR matrix, raw dense feature array) of the table's prompts."""
    numpy, sparse, _ = _libraries()
    indptr, indices, values, dense = [0], [], [], []
    for prompt in table.prompts:
        view = hasher.view(prompt)
        vector = hasher.vector(view)
        indices.extend(vector)
        values.extend(vector.values())
        indptr.append(len(indices))
        dense.append(dense_features(prompt, classify([("user", prompt)]), view))
    ngrams = sparse.csr_matrix((numpy.array(values, dtype=numpy.float64), numpy.array(indices, dtype=numpy.int32),
                                numpy.array(indptr, dtype=numpy.int64)), shape=(len(table), hasher.settings.ngram_columns))
    ngrams.sum_duplicates()
    return ngrams, numpy.array(dense, dtype=numpy.float64).reshape(len(table), len(DENSE_NAMES))


def _check(table: OutcomeTable, validation: OutcomeTable, settings: TrainingSettings) -> None:
    if len(table) < 2 * settings.folds:
        raise TrainingError(f"{len(table)} training rows; cross-validation needs at least {2 * settings.folds}")
    if not len(validation):
        raise TrainingError("no row fell into the validation split; calibration needs some (add rows)")
    for model in table.models:
        known = [v for v in table.outcomes[model] if v != UNKNOWN]
        ones = sum(known)
        if ones in (0, len(known)):
            raise TrainingError(f"model {model!r}: every training outcome is {int(ones > 0)}; nothing to learn")
        if min(ones, len(known) - ones) < settings.folds:
            raise TrainingError(f"model {model!r}: {ones} training outcomes of 1 and {len(known) - ones} of 0; "
                                f"cross-validation needs at least {settings.folds} of each")
    if not _complete_rows(validation):
        raise TrainingError("no validation row has every model's outcome; calibration needs some")
    if not settings.c_grid or min(settings.c_grid) <= 0 or settings.dense_scale <= 0:
        raise TrainingError("c_grid must be positive values and dense_scale positive")


def _known(values: Sequence[int]) -> list[int]:
    """Row numbers whose outcome is known (ledger rows know only the model that served them)."""
    return [i for i, v in enumerate(values) if v != UNKNOWN]


def _complete_rows(table: OutcomeTable) -> list[int]:
    return [i for i in range(len(table)) if all(table.outcomes[m][i] != UNKNOWN for m in table.models)]


def _regression(c: float, seed: int) -> Any:
    from sklearn.linear_model import LogisticRegression

    # The dual solver is the fast one when columns outnumber rows; the seed fixes its coordinate order.
    return LogisticRegression(C=c, solver="liblinear", dual=True, max_iter=2000, random_state=seed)


def _fit(x: Any, y: Any, settings: TrainingSettings) -> tuple[Any, float, float]:
    """(fitted regression, chosen C, its cross-validated log-loss) for one model."""
    numpy, _, _ = _libraries()
    from sklearn.metrics import log_loss
    from sklearn.model_selection import StratifiedKFold

    folds = StratifiedKFold(settings.folds, shuffle=True, random_state=settings.seed)
    best: tuple[float, float] | None = None
    for c in settings.c_grid:
        held_out = numpy.zeros(len(y))
        for fit_rows, test_rows in folds.split(x, y):
            held_out[test_rows] = _regression(c, settings.seed).fit(x[fit_rows], y[fit_rows]).predict_proba(
                x[test_rows])[:, 1]
        loss = log_loss(y, held_out, labels=[0, 1])
        if best is None or loss < best[0] - 1e-9:
            best = (loss, c)
    assert best is not None
    return _regression(best[1], settings.seed).fit(x, y), best[1], best[0]


def _weights(regression: Any, columns: int, mean: Any, scale: Any, settings: TrainingSettings) -> ModelWeights:
    """The fitted coefficients as raw-feature weights: standardisation folded into dense weights and bias."""
    coef = regression.coef_[0]
    ngram, dense = coef[:columns], coef[columns:] * settings.dense_scale / scale
    kept = [int(i) for i in (abs(ngram) >= settings.prune_below).nonzero()[0]]
    bias = float(regression.intercept_[0]) - float((dense * mean).sum())
    return ModelWeights(bias=stored(bias), dense=tuple(stored(float(w)) for w in dense), buckets=tuple(kept),
                        weights=tuple(stored(float(ngram[i])) for i in kept))


def threshold_curve(scores: Sequence[float], weaker: Sequence[int], stronger: Sequence[int],
                    targets: Sequence[float] = TARGETS) -> tuple[list[float], list[float]]:
    """(thresholds, stronger shares) per target, as ThresholdCurve defines them; cuts fall between scores."""
    n = len(scores)
    if not n or not len(weaker) == len(stronger) == n:
        raise ValueError(f"threshold_curve needs scores and outcomes of one length, not {n}, {len(weaker)}, "
                         f"{len(stronger)} (and not 0)")
    order = sorted(range(n), key=lambda i: -scores[i])
    ranked = [scores[i] for i in order]
    goal_base = sum(stronger) / n
    # Quality with the first k prompts of `order` sent to the stronger model, at cuts between distinct scores.
    cuts, gain = [(0, sum(weaker) / n)], 0
    for k in range(1, n + 1):
        gain += stronger[order[k - 1]] - weaker[order[k - 1]]
        if k == n or ranked[k - 1] > ranked[k]:
            cuts.append((k, (sum(weaker) + gain) / n))
    thresholds, shares = [], []
    for target in targets:
        k = next(k for k, quality in cuts if quality >= target * goal_base - 1e-12 or k == n)
        thresholds.append(1.0 if k == 0 else -1.0 if k == n else stored((ranked[k - 1] + ranked[k]) / 2))
        shares.append(round(k / n, 4))
    return thresholds, shares


def _calibration(validation: OutcomeTable, predictions: dict[str, list[float]],
                 training: OutcomeTable) -> tuple[ThresholdCurve, ...]:
    """A threshold curve for every pair of models, weaker = lower accuracy on the training split."""
    def accuracy(model: str) -> float:
        known = [v for v in training.outcomes[model] if v != UNKNOWN]
        return sum(known) / len(known)

    ranked = sorted(training.models, key=accuracy)
    # Only prompts with every model's outcome say how much quality a cut keeps.
    rows = _complete_rows(validation)
    curves = []
    for i, weaker in enumerate(ranked):
        for stronger in ranked[i + 1:]:
            scores = [predictions[stronger][r] - predictions[weaker][r] for r in rows]
            thresholds, shares = threshold_curve(scores, [validation.outcomes[weaker][r] for r in rows],
                                                 [validation.outcomes[stronger][r] for r in rows])
            curves.append(ThresholdCurve(weaker=weaker, stronger=stronger, targets=TARGETS,
                                         thresholds=tuple(thresholds), stronger_shares=tuple(shares)))
    return tuple(curves)


def _metrics(y: Sequence[int], p: Sequence[float]) -> dict[str, Any]:
    from sklearn.metrics import log_loss, roc_auc_score

    return {"log_loss": round(float(log_loss(y, p, labels=[0, 1])), 4),
            "auc": round(float(roc_auc_score(y, p)), 4) if 0 < sum(y) < len(y) else None,
            "accuracy": round(sum(y) / len(y), 4)}


def train(table: OutcomeTable, features: FeatureSettings | None = None,
          settings: TrainingSettings | None = None, data_sha256: str = "") -> TrainingResult:
    """Fit one regression per model on the training split and calibrate thresholds on the validation split."""
    features = features or FeatureSettings()
    settings = settings or TrainingSettings()
    started = time.perf_counter()
    numpy, sparse, sklearn = _libraries()
    training, validation = split(table)
    _check(training, validation, settings)
    hasher = NgramHasher(features)
    ngrams, dense = _matrices(training, hasher)
    mean, scale = dense.mean(axis=0), dense.std(axis=0)
    # A column constant in training (up to rounding) carries nothing; dividing by its tiny spread would
    # blow its weight up and leave the bias to cancel it, which rounding in the artifact would break.
    constant = scale < 1e-9 * (1.0 + abs(mean))
    mean[constant], scale[constant] = 0.0, 1.0
    dense[:, constant] = 0.0
    x = sparse.hstack([ngrams, sparse.csr_matrix((dense - mean) / scale * settings.dense_scale)]).tocsr()
    models, chosen = {}, {}
    for model in table.models:
        rows = _known(training.outcomes[model])
        y = numpy.array([training.outcomes[model][r] for r in rows])
        regression, c, loss = _fit(x[rows], y, settings)
        models[model] = _weights(regression, features.ngram_columns, mean, scale, settings)
        chosen[model] = {"c": c, "cv_log_loss": round(loss, 4), "buckets_kept": len(models[model].buckets)}
    uncalibrated = QualityArtifact(features=features, dense_names=DENSE_NAMES, models=models, calibration=(),
                                   data_sha256=data_sha256)
    predictor = QualityPredictor(uncalibrated)
    per_row = [predictor.predict(prompt) for prompt in validation.prompts]
    predictions = {m: [row[m] for row in per_row] for m in table.models}
    metadata = {
        "seed": settings.seed, "folds": settings.folds, "c_grid": list(settings.c_grid),
        "dense_scale": settings.dense_scale, "prune_below": settings.prune_below,
        "rows": len(table), "training_rows": len(training), "validation_rows": len(validation),
        "models": list(table.models), "fit": chosen, "scikit_learn": sklearn.__version__,
        "validation": {m: _metrics([validation.outcomes[m][r] for r in _known(validation.outcomes[m])],
                                   [predictions[m][r] for r in _known(validation.outcomes[m])])
                       for m in table.models},
    }
    artifact = QualityArtifact(features=features, dense_names=DENSE_NAMES, models=models,
                               calibration=_calibration(validation, predictions, training),
                               data_sha256=data_sha256, training=metadata)
    return TrainingResult(artifact=artifact, seconds=time.perf_counter() - started, validation=validation,
                          validation_predictions=predictions)


def train_file(data: str | Path, out: str | Path, seed: int = 0) -> TrainingResult:
    """Train on an outcomes CSV (plain or gzip) and write the artifact; the result's artifact carries its sha256."""
    table = load_outcomes(data)
    digest = hashlib.sha256(Path(data).read_bytes()).hexdigest()
    result = train(table, settings=TrainingSettings(seed=seed), data_sha256=digest)
    sha256 = save_artifact(result.artifact, out)
    result.artifact = replace(result.artifact, sha256=sha256)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", required=True, help="outcomes CSV: prompt and <model>_correct columns")
    parser.add_argument("--out", required=True, help="where to write the artifact (.json.gz)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        result = train_file(args.data, args.out, args.seed)
    except (OutcomesError, TrainingError, OSError) as exc:
        print(f"routemesh: {exc}", file=sys.stderr)
        return 2
    summary = {"artifact": str(args.out), "sha256": result.artifact.sha256,
               "bytes": Path(args.out).stat().st_size, "seconds": round(result.seconds, 1),
               "validation": result.artifact.training["validation"], "fit": result.artifact.training["fit"]}
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
