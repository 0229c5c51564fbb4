"""Request features on the wire, for the classifier service and the router (which also classifies in-process)."""

from __future__ import annotations

from collections.abc import Mapping

from routemesh.classifier.features import RequestFeatures
from routemesh.v1 import common_pb2

TASK_TYPE_VALUES: dict[str, int] = {
    "chat": common_pb2.TASK_TYPE_CHAT,
    "code": common_pb2.TASK_TYPE_CODE,
    "math": common_pb2.TASK_TYPE_MATH,
    "summarization": common_pb2.TASK_TYPE_SUMMARIZATION,
    "translation": common_pb2.TASK_TYPE_TRANSLATION,
    "extraction": common_pb2.TASK_TYPE_EXTRACTION,
    "creative_writing": common_pb2.TASK_TYPE_CREATIVE_WRITING,
    "question_answering": common_pb2.TASK_TYPE_QUESTION_ANSWERING,
}
TASK_TYPE_NAMES: dict[int, str] = {value: name for name, value in TASK_TYPE_VALUES.items()}
_INT32_MAX = 2**31 - 1


def features_to_proto(features: RequestFeatures, source: str, predicted_success: Mapping[str, float] | None = None,
                      predictor_sha256: str = "") -> common_pb2.Features:
    """The wire form of `features`; `source` says who computed them ("classifier", "router", ...).

    `predicted_success` is the quality predictor's per-model success, `predictor_sha256` its artifact's digest.
    """
    return common_pb2.Features(
        input_tokens=min(features.input_tokens, _INT32_MAX),
        task_type=TASK_TYPE_VALUES[features.task_type],
        task_confidence=features.task_confidence,
        language=features.language,
        complexity=features.complexity,
        has_code=features.has_code,
        signals=features.signals,
        source=source,
        predicted_success=predicted_success or {},
        quality_predictor_sha256=predictor_sha256,
    )


def features_from_proto(message: common_pb2.Features) -> RequestFeatures:
    """The features a classifier sent; an unspecified or newer task type reads as chat."""
    return RequestFeatures(
        input_tokens=message.input_tokens,
        task_type=TASK_TYPE_NAMES.get(message.task_type, "chat"),
        task_confidence=message.task_confidence,
        language=message.language or "und",
        complexity=message.complexity,
        has_code=message.has_code,
        signals=tuple(message.signals),
    )
