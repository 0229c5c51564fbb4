"""ClassifierService over gRPC: validate, classify, predict per-model success, convert."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from functools import partial

import grpc

from routemesh.classifier.features import classify, last_user_text
from routemesh.classifier.wire import features_to_proto
from routemesh.common.interceptors import serve_message
from routemesh.common.messages import messages_to_tuples, validate_messages
from routemesh.quality.serving import PolicyQuality
from routemesh.v1 import classifier_pb2, classifier_pb2_grpc

SOURCE_CLASSIFIER = "classifier"
# What a multiplexed request is served as: its span is named after the unary method, as if it were one.
CLASSIFY_METHOD = "/routemesh.v1.ClassifierService/Classify"


class ClassifierServicer(classifier_pb2_grpc.ClassifierServiceServicer):
    """Classify runs in the event loop: classify() and the prediction take well under a millisecond together.

    `quality` returns the predictor of the policy in force (None when the policy names none).
    """

    def __init__(self, quality: Callable[[], PolicyQuality | None] = lambda: None,
                 classified: Callable[[str, float], None] | None = None) -> None:
        self._quality = quality
        # Called with each request's task type and seconds taken (the metrics; None: metrics off).
        self._classified = classified
        # The tasks serving ClassifyStream, ended by stop() when the service drains.
        self._streams: set[asyncio.Task] = set()
        self._stopping = False

    def stop(self) -> None:
        """End every open ClassifyStream (the service drains): its caller opens another, on another replica.

        A stream only ends when its caller closes it, so it would hold the drain for its whole grace period.
        A stream cancelled while it waits for its next message (where it spends its time: each answer takes
        well under a millisecond) ends cleanly; its caller falls back for what it sent meanwhile, unanswered.
        """
        self._stopping = True
        for task in self._streams:
            task.cancel()

    def classify(self, request: classifier_pb2.ClassifyRequest) -> classifier_pb2.ClassifyResponse:
        """What Classify answers (InvalidRequest for messages it cannot classify), for both methods."""
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

    async def Classify(
        self, request: classifier_pb2.ClassifyRequest, context: grpc.aio.ServicerContext
    ) -> classifier_pb2.ClassifyResponse:
        return self.classify(request)

    async def ClassifyStream(
        self, requests: AsyncIterator[classifier_pb2.ClassifyStreamRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[classifier_pb2.ClassifyStreamResponse]:
        if self._stopping:
            return
        task = asyncio.current_task()
        assert task is not None
        self._streams.add(task)
        try:
            async for message in requests:
                answer = serve_message(CLASSIFY_METHOD, message.traceparent, partial(self.classify, message.request))
                if isinstance(answer, classifier_pb2.ClassifyResponse):
                    yield classifier_pb2.ClassifyStreamResponse(id=message.id, response=answer)
                else:
                    yield classifier_pb2.ClassifyStreamResponse(id=message.id, error=classifier_pb2.RpcStatus(
                        code=answer.code, message=answer.message, details=answer.details))
        except asyncio.CancelledError:
            if not self._stopping:
                raise  # the caller went away
            task.uncancel()  # stop() cancelled it: end the stream with OK
        finally:
            self._streams.discard(task)
