"""ClassifierService over gRPC: validate, classify, predict per-model success, convert."""

from __future__ import annotations

import time
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

    def __init__(self, quality: Callable[[], PolicyQuality | None] = lambda: None,
                 classified: Callable[[str, float], None] | None = None) -> None:
        self._quality = quality
        # Called with each request's task type and seconds taken (the metrics; None: metrics off).
        self._classified = classified

    async def Classify(
        self, request: classifier_pb2.ClassifyRequest, context: grpc.aio.ServicerContext
    ) -> classifier_pb2.ClassifyResponse:
        started = time.perf_counter()
        validate_messages(request.messages)
        messages = messages_to_tuples(request.messages)
        features = classify(messages)
        quality = self._quality()
        if quality is None:
            response = classifier_pb2.ClassifyResponse(features=features_to_proto(features, SOURCE_CLASSIFIER))
        else:
            predicted = quality.predict(last_user_text(messages), features)
            response = classifier_pb2.ClassifyResponse(
                features=features_to_proto(features, SOURCE_CLASSIFIER, predicted, quality.sha256))
        if self._classified is not None:
            self._classified(features.task_type, time.perf_counter() - started)
        return response
