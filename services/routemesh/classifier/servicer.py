"""ClassifierService over gRPC, plus the message and features conversions the router reuses."""

from __future__ import annotations


import grpc

from routemesh.classifier.features import RequestFeatures, classify
from routemesh.common.messages import messages_to_tuples, validate_messages
from routemesh.v1 import classifier_pb2, classifier_pb2_grpc, common_pb2

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
