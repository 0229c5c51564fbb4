"""ClassifierService over gRPC, plus the message and features conversions the router reuses."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import grpc

from routemesh.classifier.features import RequestFeatures, classify
from routemesh.common.errors import InvalidRequest
from routemesh.v1 import classifier_pb2, classifier_pb2_grpc, common_pb2

ROLE_NAMES: dict[int, str] = {
    common_pb2.ROLE_SYSTEM: "system",
    common_pb2.ROLE_USER: "user",
    common_pb2.ROLE_ASSISTANT: "assistant",
    common_pb2.ROLE_TOOL: "tool",
}
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
SOURCE_CLASSIFIER = "classifier"
_INT32_MAX = 2**31 - 1


def validate_messages(messages: Sequence[common_pb2.Message], field: str = "messages") -> None:
    """Raise InvalidRequest (with one violation per bad field) unless the messages can be classified."""
    if not messages:
        raise InvalidRequest(
            f"{field} must not be empty", field_violations=[(field, "at least one message is required")]
        )
    violations = [
        (f"{field}[{index}].role", "role must be one of SYSTEM, USER, ASSISTANT, TOOL")
        for index, message in enumerate(messages)
        if message.role not in ROLE_NAMES
    ]
    if violations:
        raise InvalidRequest(f"{field} have an unspecified or unknown role", field_violations=violations)


def messages_to_tuples(messages: Iterable[common_pb2.Message]) -> list[tuple[str, str]]:
    """(role, content) pairs for classify(); call validate_messages first (unknown roles raise ValueError)."""
    pairs = []
    for message in messages:
        role = ROLE_NAMES.get(message.role)
        if role is None:
            raise ValueError(f"message role {message.role} has no name; validate_messages rejects it")
        pairs.append((role, message.content))
    return pairs


def features_to_proto(features: RequestFeatures, source: str) -> common_pb2.Features:
    """The wire form of `features`; `source` is "classifier" or "router-fallback"."""
    return common_pb2.Features(
        input_tokens=min(features.input_tokens, _INT32_MAX),
        task_type=TASK_TYPE_VALUES[features.task_type],
        task_confidence=features.task_confidence,
        language=features.language,
        complexity=features.complexity,
        has_code=features.has_code,
        signals=features.signals,
        source=source,
    )


class ClassifierServicer(classifier_pb2_grpc.ClassifierServiceServicer):
    """Classify runs in the event loop: classify() takes well under a millisecond, so no executor hop."""

    async def Classify(
        self, request: classifier_pb2.ClassifyRequest, context: grpc.aio.ServicerContext
    ) -> classifier_pb2.ClassifyResponse:
        validate_messages(request.messages)
        features = classify(messages_to_tuples(request.messages))
        return classifier_pb2.ClassifyResponse(features=features_to_proto(features, SOURCE_CLASSIFIER))
