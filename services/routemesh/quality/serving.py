"""The quality predictor a policy names, as the services serve it: found, checked, loaded once, mapped to models."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from routemesh.classifier.features import RequestFeatures
from routemesh.common.policy import Policy, PolicyError
from routemesh.common.policy_schema import QualityPredictorRef
from routemesh.quality.artifact import ArtifactError, ThresholdCurve
from routemesh.quality.predictor import QualityPredictor

# "routemesh:NAME" names an artifact shipped in the routemesh package (under routemesh/NAME's data folder).
SHIPPED_PREFIX = "routemesh:"
SHIPPED_DIRS = {"quality/": "quality/data/"}
# Predictors kept loaded: the one in force and the one before it (a rollback loads nothing).
CACHED_PREDICTORS = 2


def artifact_path(reference: str) -> Path:
    """The file a policy's `artifact` names: "routemesh:quality/NAME" is shipped with routemesh, else a path."""
    if not reference.startswith(SHIPPED_PREFIX):
        return Path(reference)
    name = reference.removeprefix(SHIPPED_PREFIX)
    for prefix, folder in SHIPPED_DIRS.items():
        if name.startswith(prefix) and "/" not in name.removeprefix(prefix) and name != prefix:
            return Path(str(resources.files("routemesh").joinpath(folder + name.removeprefix(prefix))))
    raise ArtifactError(f"{reference}: routemesh ships artifacts only as routemesh:quality/<file name>")


class _PredictorCache:
    """Loaded predictors by (file, sha256): a policy change that keeps the artifact loads nothing."""

    def __init__(self, size: int = CACHED_PREDICTORS) -> None:
        self._size = size
        self._loaded: OrderedDict[tuple[str, str], QualityPredictor] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, ref: QualityPredictorRef) -> QualityPredictor:
        path = artifact_path(ref.artifact)
        key = (str(path.resolve()), ref.sha256)
        with self._lock:
            if key in self._loaded:
                self._loaded.move_to_end(key)
                return self._loaded[key]
        predictor = QualityPredictor.from_artifact(path, ref.sha256)
        with self._lock:
            self._loaded[key] = predictor
            while len(self._loaded) > self._size:
                self._loaded.popitem(last=False)
        return predictor


_CACHE = _PredictorCache()


@dataclass(frozen=True)
class PolicyQuality:
    """A policy's predictor with its models mapped to the predictor's outputs."""

    predictor: QualityPredictor
    # Policy model -> predictor output, for every model with a prediction.
    outputs: Mapping[str, str]

    @property
    def sha256(self) -> str:
        return self.predictor.sha256

    def predict(self, text: str, features: RequestFeatures | None = None) -> dict[str, float]:
        """Predicted success per policy model with a prediction."""
        by_output = self.predictor.predict(text, features)
        return {model: by_output[output] for model, output in self.outputs.items()}

    def curve(self, weaker: str, stronger: str) -> ThresholdCurve | None:
        """The calibrated thresholds between two policy models, when the artifact calibrated their outputs."""
        first, second = self.outputs.get(weaker), self.outputs.get(stronger)
        if first is None or second is None:
            return None
        for curve in self.predictor.artifact.calibration:
            if (curve.weaker, curve.stronger) == (first, second):
                return curve
        return None


def policy_quality(policy: Policy) -> PolicyQuality | None:
    """The policy's predictor, loaded (or from cache) and checked; PolicyError when it cannot be used.

    None when the policy names no predictor. A missing, unreadable, corrupt or differently-digested
    artifact, and a model mapped to an output the artifact does not have, are policy errors.
    """
    ref = policy.quality_predictor
    if ref is None:
        return None
    try:
        predictor = _CACHE.get(ref)
    except ArtifactError as exc:
        raise PolicyError([("quality_predictor.artifact", str(exc))]) from None
    known = set(predictor.models)
    outputs, problems = {}, []
    for name, model in policy.models.items():
        output = model.predicted_as or name
        if output in known:
            outputs[name] = output
        elif model.predicted_as:
            problems.append((f"models.{name}.predicted_as",
                             f"the quality predictor has no output {output!r}; it predicts {sorted(known)}"))
    if problems:
        raise PolicyError(problems)
    return PolicyQuality(predictor=predictor, outputs=outputs)
