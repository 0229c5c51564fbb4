"""ClassifierService over gRPC: validate, classify, predict per-model success, convert."""

from __future__ import annotations

from collections.abc import Callable

import grpc

from routemesh.classifier.features import classify, last_user_text
from routemesh.classifier.wire import features_to_proto
from routemesh.common.messages import messages_to_tuples, validate_messages
from routemesh.quality.serving import PolicyQuality
from routemesh.v1 import classifier_pb2, classifier_pb2_grpc

SOURCE_CLASSIFIER = "classifier"


class ClassifierServicer(classifier_pb2_grpc.ClassifierServiceServicer):
    """Classify runs in the event loop: classify() and the prediction take well under a millisecond together.

    `quality` returns the predictor of the policy in force (None when the policy names none).
    """

    def __init__(self, quality: Callable[[], PolicyQuality | None] = lambda: None) -> None:
        self._quality = quality

    async def Classify(
        self, request: classifier_pb2.ClassifyRequest, context: grpc.aio.ServicerContext
    ) -> classifier_pb2.ClassifyResponse:
        validate_messages(request.messages)
        messages = messages_to_tuples(request.messages)
        features = classify(messages)
        quality = self._quality()
        if quality is None:
            return classifier_pb2.ClassifyResponse(features=features_to_proto(features, SOURCE_CLASSIFIER))
        predicted = quality.predict(last_user_text(messages), features)
        return classifier_pb2.ClassifyResponse(
            features=features_to_proto(features, SOURCE_CLASSIFIER, predicted, quality.sha256))
