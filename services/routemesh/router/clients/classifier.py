"""Request features for the router: the classifier service, or the same code in-process when it is down."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import grpc

from routemesh.classifier.features import classify, last_user_text
from routemesh.classifier.wire import features_from_proto
from routemesh.common.channels import TracedChannel, open_channel
from routemesh.common.errors import InvalidRequest
from routemesh.common.messages import messages_to_tuples
from routemesh.quality.serving import PolicyQuality
from routemesh.router.request import Classified
from routemesh.v1 import classifier_pb2, classifier_pb2_grpc, common_pb2

log = logging.getLogger(__name__)
FALLBACK_SOURCE = "router-fallback"
LOCAL_SOURCE = "router"
CLASSIFY_TIMEOUT_S = 0.5


def classify_here(messages: Sequence[common_pb2.Message], source: str, quality: PolicyQuality | None) -> Classified:
    """What the classifier service computes, computed in this process (with the policy's quality predictor)."""
    pairs = messages_to_tuples(messages)
    features = classify(pairs)
    if quality is None:
        return Classified(features, source)
    return Classified(features, source, quality.predict(last_user_text(pairs), features), quality.sha256)


class FeatureSource:
    """Asks the classifier; on any failure classifies locally and says so in the source.

    The address "local" classifies in-process on every request (no classifier hop; the classifier service
    then only serves other callers). Both in-process paths predict with the router's own copy of the
    policy's quality predictor, so a fallback keeps learned routing.
    """

    def __init__(self, address: str, timeout_s: float = CLASSIFY_TIMEOUT_S):
        self.local = address == "local"
        self.address = address
        self.timeout_s = timeout_s
        self._channel: TracedChannel | None = None
        self._stub: classifier_pb2_grpc.ClassifierServiceStub | None = None
        self._last_warning = 0.0

    def start(self) -> None:
        if not self.local:
            self._channel = open_channel(self.address)
            self._stub = classifier_pb2_grpc.ClassifierServiceStub(self._channel)

    async def stop(self) -> None:
        if self._channel is not None:
            await self._channel.close()

    async def classify(self, messages: Sequence[common_pb2.Message], quality: PolicyQuality | None = None) -> Classified:
        """The request's features; `quality` is the policy's predictor, used when classifying in-process."""
        if self._stub is None:
            return classify_here(messages, LOCAL_SOURCE, quality)
        try:
            response = await self._stub.Classify(classifier_pb2.ClassifyRequest(messages=messages),
                                                 timeout=self.timeout_s)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.INVALID_ARGUMENT:
                raise InvalidRequest(f"the classifier rejected the messages: {exc.details()}") from None
            now = time.monotonic()
            if now - self._last_warning > 10:
                self._last_warning = now
                log.warning("classifier at %s unavailable (%s); classifying in-process", self.address,
                            exc.code().name)
            return classify_here(messages, FALLBACK_SOURCE, quality)
        message = response.features
        features = features_from_proto(message)
        if quality is None:  # the classifier may still hold a policy with a predictor: this one names none
            return Classified(features, message.source)
        if message.quality_predictor_sha256 != quality.sha256:
            # The classifier holds another artifact (a rollout under way): predictions and thresholds must come
            # from one artifact, so predict with the router's own.
            text = last_user_text(messages_to_tuples(messages))
            return Classified(features, message.source, quality.predict(text, features), quality.sha256)
        return Classified(features, message.source, dict(message.predicted_success), message.quality_predictor_sha256)
