"""ClassifierService over gRPC: validate, classify, convert."""

from __future__ import annotations

import grpc

from routemesh.classifier.features import classify
from routemesh.classifier.wire import features_to_proto
from routemesh.common.messages import messages_to_tuples, validate_messages
from routemesh.v1 import classifier_pb2, classifier_pb2_grpc

SOURCE_CLASSIFIER = "classifier"


class ClassifierServicer(classifier_pb2_grpc.ClassifierServiceServicer):
    """Classify runs in the event loop: classify() takes well under a millisecond, so no executor hop."""

    async def Classify(
        self, request: classifier_pb2.ClassifyRequest, context: grpc.aio.ServicerContext
    ) -> classifier_pb2.ClassifyResponse:
        validate_messages(request.messages)
        features = classify(messages_to_tuples(request.messages))
        return classifier_pb2.ClassifyResponse(features=features_to_proto(features, SOURCE_CLASSIFIER))
