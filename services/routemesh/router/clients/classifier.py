"""Request features for the router: the classifier service, or the same code in-process when it is down."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence

import grpc

from routemesh.classifier.features import classify, last_user_text
from routemesh.classifier.wire import features_from_proto
from routemesh.common.channels import CALL_IDLE_MS, TracedChannel, call_timeout, open_channel
from routemesh.common.errors import InvalidRequest
from routemesh.common.messages import messages_to_tuples
from routemesh.quality.serving import PolicyQuality
from routemesh.router.clients.classify_stream import ClassifyFailed, ClassifyStreams
from routemesh.router.request import Classified
from routemesh.v1 import classifier_pb2, classifier_pb2_grpc, common_pb2

log = logging.getLogger(__name__)
FALLBACK_SOURCE = "router-fallback"
LOCAL_SOURCE = "router"
CLASSIFY_TIMEOUT_S = 0.5
STREAMS_ENV = "ROUTEMESH_CLASSIFY_STREAMS"
# Two streams share the load between two replicas at a time; renewed this often, they follow the replicas DNS
# names (a new replica, one gone), as unary calls do connection by connection.
DEFAULT_STREAMS = 2
STREAM_MAX_AGE_S = 30.0


def streams_from_env() -> int:
    """How many ClassifyStream calls a router keeps open (env ROUTEMESH_CLASSIFY_STREAMS; 0: unary calls)."""
    text = os.environ.get(STREAMS_ENV, str(DEFAULT_STREAMS))
    if not text.isdigit() or int(text) > 16:
        raise SystemExit(f"router: {STREAMS_ENV} must be 0 (unary calls) to 16 streams, got {text!r}")
    return int(text)


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

    Requests go as messages on `streams` long-lived ClassifyStream calls (ClassifyStreams), which saves a unary
    call's per-call cost before every first token; 0 (env ROUTEMESH_CLASSIFY_STREAMS=0) makes one unary Classify
    call each. A classifier that does not serve ClassifyStream (an older version, in a rolling upgrade) is asked
    with unary calls from then on (grpc may report the refused stream as INTERNAL when a write races the
    refusal: those requests are asked again with unary calls, as any a stream fails).
    """

    def __init__(self, address: str, timeout_s: float = CLASSIFY_TIMEOUT_S, streams: int | None = None,
                 stream_max_age_s: float = STREAM_MAX_AGE_S, idle_s: float = CALL_IDLE_MS / 1000):
        self.local = address == "local"
        self.address = address
        self.timeout_s = timeout_s
        self.stream_count = streams_from_env() if streams is None else streams
        self.stream_max_age_s = stream_max_age_s
        self.idle_s = idle_s
        self._channel: TracedChannel | None = None
        self._stub: classifier_pb2_grpc.ClassifierServiceStub | None = None
        self.streams: ClassifyStreams | None = None
        self._last_warning = 0.0

    def start(self) -> None:
        if not self.local:
            self._channel = open_channel(self.address)
            self._stub = classifier_pb2_grpc.ClassifierServiceStub(self._channel)
            if self.stream_count:
                self.streams = ClassifyStreams(self._stub.ClassifyStream, self.stream_count, self.stream_max_age_s,
                                               self.idle_s)

    async def stop(self) -> None:
        if self.streams is not None:
            await self.streams.close()
        if self._channel is not None:
            await self._channel.close()

    async def classify(self, messages: Sequence[common_pb2.Message], quality: PolicyQuality | None = None) -> Classified:
        """The request's features; `quality` is the policy's predictor, used when classifying in-process."""
        if self._stub is None:
            return classify_here(messages, LOCAL_SOURCE, quality)
        try:
            response = await self._ask(messages)
        except ClassifyFailed as exc:
            if exc.code == grpc.StatusCode.INVALID_ARGUMENT:
                raise InvalidRequest(f"the classifier rejected the messages: {exc.details}") from None
            now = time.monotonic()
            if now - self._last_warning > 10:
                self._last_warning = now
                log.warning("classifier at %s unavailable (%s); classifying in-process", self.address, exc.code.name)
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

    async def _ask(self, messages: Sequence[common_pb2.Message]) -> classifier_pb2.ClassifyResponse:
        """The classifier's answer, over a stream when one serves, else with a unary call; ClassifyFailed if none.

        The stream is the fast path, not a new way to fail: a request its stream could not carry (broken,
        drained, not open during a backoff) is asked again with a unary call in the time it has left, which
        another replica may answer and which fails fast when the classifier is down.
        """
        assert self._stub is not None
        timeout_s = call_timeout(self.timeout_s)
        streams = self.streams
        if streams is not None:
            started = time.monotonic()
            try:
                return await streams.classify(messages, timeout_s)
            except ClassifyFailed as exc:
                if exc.answered or exc.code == grpc.StatusCode.DEADLINE_EXCEEDED:
                    raise
                if exc.code == grpc.StatusCode.UNIMPLEMENTED and self.streams is streams:  # the first to learn it
                    self.streams = None
                    log.warning("the classifier at %s does not serve ClassifyStream (an older version); classifying "
                                "with unary calls", self.address)
                    await streams.close()
            if timeout_s is not None:
                timeout_s -= time.monotonic() - started
        try:
            return await self._stub.Classify(classifier_pb2.ClassifyRequest(messages=messages), timeout=timeout_s)
        except grpc.aio.AioRpcError as exc:
            raise ClassifyFailed(exc.code(), exc.details() or "") from None
