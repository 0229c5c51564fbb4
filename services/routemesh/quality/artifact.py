"""The quality predictor's artifact: versioned gzip-compressed JSON with its weights, settings and calibration."""

from __future__ import annotations

import gzip
import hashlib
import json
import math
import zlib
from bisect import bisect_left
from itertools import pairwise
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from routemesh.quality.features import DENSE_NAMES, FeatureError, FeatureSettings

FORMAT = "routemesh-quality-predictor"
VERSION = 1
# Weights are written with float32's ~7 significant digits; more would only grow the file.
_SIGNIFICANT_DIGITS = 7


class ArtifactError(ValueError):
    """An artifact that cannot be used: missing, corrupt, of another version, or not the digest expected."""


@dataclass(frozen=True)
class ModelWeights:
    """One model's logistic regression: logit = bias + n-gram part . bucket weights + dense . dense weights."""

    bias: float
    # One weight per DENSE_NAMES entry, for the raw (unscaled) dense features.
    dense: tuple[float, ...]
    # Sparse n-gram weights: ascending column numbers (a bucket, or a bucket in a format's copy,
    # features.NgramHasher.vector) and their weights; absent columns weigh 0.
    buckets: tuple[int, ...]
    weights: tuple[float, ...]


@dataclass(frozen=True)
class ThresholdCurve:
    """Where to switch from the weaker to the stronger model of a pair to keep a share of the stronger's quality.

    score = P(stronger answers well) - P(weaker answers well). Routing a prompt to the stronger model
    when score > thresholds[i] reached, on the validation split, targets[i] x the stronger model's
    accuracy there (quality = mean outcome of the model each prompt was routed to) with the fewest
    stronger calls; stronger_shares[i] is the share of validation prompts that went to it.
    """

    weaker: str
    stronger: str
    targets: tuple[float, ...]
    thresholds: tuple[float, ...]
    stronger_shares: tuple[float, ...]

    def threshold(self, target: float) -> float:
        """The threshold for `target`, taken at the next grid target up so the quality kept is not less."""
        at = bisect_left(self.targets, target - 1e-9)
        if at == len(self.targets):
            raise ValueError(f"target {target} is above the calibrated grid (up to {self.targets[-1]})")
        return self.thresholds[at]


@dataclass(frozen=True)
class QualityArtifact:
    """Everything serving needs to predict per-model success, and where it came from."""

    features: FeatureSettings
    dense_names: tuple[str, ...]
    # Per model, in the order of the training data's outcome columns.
    models: dict[str, ModelWeights]
    calibration: tuple[ThresholdCurve, ...]
    # sha256 of the outcomes file the weights were trained on.
    data_sha256: str
    # Seed, row counts, regularisation chosen, validation metrics: JSON values, for people and reports.
    training: dict[str, Any] = field(default_factory=dict)
    # sha256 of the artifact file's bytes: set by load_artifact and save_artifact, empty before.
    sha256: str = ""

    def curve(self, weaker: str, stronger: str) -> ThresholdCurve:
        for curve in self.calibration:
            if (curve.weaker, curve.stronger) == (weaker, stronger):
                return curve
        raise KeyError(f"no calibration for {weaker} -> {stronger}")


def stored(value: float) -> float:
    """A number as the artifact stores it (float32's precision); storing it again changes nothing."""
    return float(f"{value:.{_SIGNIFICANT_DIGITS}g}")


def _document(artifact: QualityArtifact) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "version": VERSION,
        "data_sha256": artifact.data_sha256,
        "features": artifact.features.to_dict(),
        "dense_names": list(artifact.dense_names),
        # A list: JSON objects are written with sorted keys, and the models keep the data's order.
        "models": [
            {"name": name, "bias": stored(m.bias), "dense": [stored(w) for w in m.dense],
             "buckets": list(m.buckets), "weights": [stored(w) for w in m.weights]}
            for name, m in artifact.models.items()
        ],
        "calibration": [
            {"weaker": c.weaker, "stronger": c.stronger, "targets": list(c.targets),
             "thresholds": [stored(t) for t in c.thresholds], "stronger_shares": list(c.stronger_shares)}
            for c in artifact.calibration
        ],
        "training": artifact.training,
    }


def artifact_bytes(artifact: QualityArtifact) -> bytes:
    """The file's bytes: the same artifact always gives the same bytes (sorted keys, no gzip timestamp)."""
    text = json.dumps(_document(artifact), sort_keys=True, separators=(",", ":"), allow_nan=False)
    return gzip.compress(text.encode(), compresslevel=9, mtime=0)


def save_artifact(artifact: QualityArtifact, path: str | Path) -> str:
    """Write the artifact to `path` and return the sha256 of the bytes written."""
    data = artifact_bytes(artifact)
    Path(path).write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def _require(condition: bool, path: Path, what: str) -> None:
    if not condition:
        raise ArtifactError(f"{path}: {what}")


def _floats(values: Any, path: Path, what: str) -> tuple[float, ...]:
    _require(isinstance(values, list) and all(isinstance(v, int | float) and not isinstance(v, bool)
                                               and math.isfinite(v) for v in values),
             path, f"{what} must be a list of finite numbers")
    return tuple(float(v) for v in values)


def _model(raw: dict[str, Any], name: str, buckets: int, path: Path) -> ModelWeights:
    indices = raw.get("buckets")
    _require(isinstance(indices, list) and all(type(i) is int and 0 <= i < buckets for i in indices)
             and all(a < b for a, b in pairwise(indices)), path,
             f"model {name!r}: buckets must be ascending integers below {buckets}")
    weights = _floats(raw.get("weights"), path, f"model {name!r} weights")
    _require(len(weights) == len(indices), path, f"model {name!r}: {len(indices)} buckets, {len(weights)} weights")
    dense = _floats(raw.get("dense"), path, f"model {name!r} dense weights")
    _require(len(dense) == len(DENSE_NAMES), path, f"model {name!r}: {len(dense)} dense weights for "
             f"{len(DENSE_NAMES)} dense features")
    bias = _floats([raw.get("bias")], path, f"model {name!r} bias")[0]
    return ModelWeights(bias=bias, dense=dense, buckets=tuple(indices), weights=weights)


def _curve(raw: Any, models: dict[str, ModelWeights], path: Path) -> ThresholdCurve:
    _require(isinstance(raw, dict) and raw.get("weaker") in models and raw.get("stronger") in models,
             path, "a calibration entry must name two of the artifact's models")
    targets = _floats(raw.get("targets"), path, "calibration targets")
    thresholds = _floats(raw.get("thresholds"), path, "calibration thresholds")
    shares = _floats(raw.get("stronger_shares"), path, "calibration shares")
    _require(len(targets) == len(thresholds) == len(shares) > 0, path, "calibration lists differ in length")
    _require(list(targets) == sorted(targets), path, "calibration targets must ascend")
    return ThresholdCurve(weaker=raw["weaker"], stronger=raw["stronger"], targets=targets,
                          thresholds=thresholds, stronger_shares=shares)


def parse_artifact(data: bytes, path: str | Path = "artifact") -> QualityArtifact:
    """The artifact in `data` (the file's bytes); ArtifactError says what is wrong."""
    path = Path(path)
    try:
        document = json.loads(gzip.decompress(data))
    except (OSError, EOFError, zlib.error) as exc:
        raise ArtifactError(f"{path}: not a gzip-compressed file ({exc})") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{path}: not JSON ({exc})") from None
    _require(isinstance(document, dict) and document.get("format") == FORMAT, path,
             f"not a {FORMAT} artifact")
    _require(document.get("version") == VERSION, path,
             f"artifact version {document.get('version')!r}; this routemesh reads version {VERSION}")
    try:
        features = FeatureSettings.from_dict(document.get("features"))
    except (FeatureError, TypeError) as exc:
        raise ArtifactError(f"{path}: feature settings: {exc}") from None
    dense_names = document.get("dense_names")
    _require(dense_names == list(DENSE_NAMES), path, "built with other dense features than this routemesh "
             f"computes ({dense_names!r} against {list(DENSE_NAMES)!r}); retrain it")
    raw_models = document.get("models")
    _require(isinstance(raw_models, list) and raw_models, path, "no models")
    _require(all(isinstance(raw, dict) and isinstance(raw.get("name"), str) and raw["name"] for raw in raw_models),
             path, "every model needs a name")
    names = [raw["name"] for raw in raw_models]
    _require(len(set(names)) == len(names), path, f"model names repeat: {names}")
    models = {raw["name"]: _model(raw, raw["name"], features.ngram_columns, path) for raw in raw_models}
    raw_curves = document.get("calibration")
    _require(isinstance(raw_curves, list), path, "calibration must be a list")
    training = document.get("training")
    _require(isinstance(training, dict), path, "training metadata must be an object")
    data_sha256 = document.get("data_sha256")
    _require(isinstance(data_sha256, str), path, "data_sha256 must be a string")
    return QualityArtifact(
        features=features, dense_names=tuple(dense_names), models=models,
        calibration=tuple(_curve(raw, models, path) for raw in raw_curves), data_sha256=data_sha256,
        training=training, sha256=hashlib.sha256(data).hexdigest())


def load_artifact(path: str | Path, expected_sha256: str | None = None) -> QualityArtifact:
    """Read and check an artifact file; with expected_sha256, its bytes must have that digest."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ArtifactError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    if expected_sha256 is not None:
        actual = hashlib.sha256(data).hexdigest()
        if actual != expected_sha256.strip().lower():
            raise ArtifactError(f"{path}: sha256 is {actual}, expected {expected_sha256}")
    return parse_artifact(data, path)
