"""The classifier service over real gRPC: a Classify round trip and rich INVALID_ARGUMENT errors."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import _async as rpc_status_async
from routemesh.classifier import main
from routemesh.classifier.features import RequestFeatures, classify
from routemesh.classifier.wire import features_from_proto, features_to_proto
from routemesh.common.messages import messages_to_tuples
from routemesh.common.errors import ERROR_DOMAIN
from routemesh.classifier.servicer import ClassifierServicer
from routemesh.common.policy import load_default_policy_text, parse_policy
from routemesh.common.serve import Service, create_server
from routemesh.quality.serving import PolicyQuality, policy_quality
from routemesh.v1 import classifier_pb2, classifier_pb2_grpc, common_pb2

CODE_QUESTION = "Why does this raise?\n```python\ndef f(d):\n    return d['x']\n```"


@asynccontextmanager
async def classifier_server(quality: PolicyQuality | None = None) -> AsyncIterator[str]:
    """The address of a classifier server started in this event loop; the server stops on exit.

    The servicer is served without the service's policy watch (the integration tests run that), holding
    `quality` as the predictor of its policy.
    """
    servicer = ClassifierServicer(quality=lambda: quality)
    service = Service(name="classifier", grpc_services=[main.GRPC_SERVICE_NAME],
                      register=lambda server: classifier_pb2_grpc.add_ClassifierServiceServicer_to_server(
                          servicer, server))
    running = await create_server(service, "127.0.0.1:0")
    try:
        yield f"127.0.0.1:{running.port}"
    finally:
        await running.server.stop(None)


@asynccontextmanager
async def classifier_channel(quality: PolicyQuality | None = None) -> AsyncIterator[grpc.aio.Channel]:
    """A channel to a classifier server started in this event loop (classifier_server)."""
    async with classifier_server(quality) as address, grpc.aio.insecure_channel(address) as channel:
        yield channel


def _message(role: int, content: str) -> common_pb2.Message:
    return common_pb2.Message(role=role, content=content)


async def _bad_request(call: grpc.aio.UnaryUnaryCall) -> error_details_pb2.BadRequest:
    """Await a call that must fail with INVALID_ARGUMENT and return its BadRequest detail."""
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = await rpc_status_async.from_call(call)
    assert status is not None
    bad_request = error_details_pb2.BadRequest()
    infos = [d for d in status.details if d.Is(error_details_pb2.ErrorInfo.DESCRIPTOR)]
    assert len(infos) == 1
    info = error_details_pb2.ErrorInfo()
    infos[0].Unpack(info)
    assert (info.reason, info.domain) == ("INVALID_REQUEST", ERROR_DOMAIN)
    assert any(d.Unpack(bad_request) for d in status.details if d.Is(bad_request.DESCRIPTOR))
    return bad_request


async def test_classify_round_trip() -> None:
    request = classifier_pb2.ClassifyRequest(
        messages=[
            _message(common_pb2.ROLE_SYSTEM, "You are a careful senior engineer."),
            _message(common_pb2.ROLE_USER, CODE_QUESTION),
        ]
    )
    async with classifier_channel() as channel:
        response = await classifier_pb2_grpc.ClassifierServiceStub(channel).Classify(request, timeout=5)
    features = response.features
    assert features.source == "classifier"
    assert features.task_type == common_pb2.TASK_TYPE_CODE
    assert features.has_code is True
    assert features.language == "en"
    assert features.input_tokens > 20
    assert 0.0 < features.task_confidence <= 1.0
    assert 0.0 < features.complexity <= 1.0
    assert "code:fence" in features.signals


async def test_the_policy_predictor_adds_predicted_success_per_policy_model() -> None:
    quality = policy_quality(parse_policy(load_default_policy_text()))
    assert quality is not None
    request = classifier_pb2.ClassifyRequest(messages=[_message(common_pb2.ROLE_USER, "What is 7 times 8?")])
    async with classifier_channel(quality) as channel:
        response = await classifier_pb2_grpc.ClassifierServiceStub(channel).Classify(request, timeout=5)
    features = response.features
    expected = quality.predict("What is 7 times 8?", classify([("user", "What is 7 times 8?")]))
    assert set(features.predicted_success) == set(quality.outputs) and len(expected) >= 2
    assert dict(features.predicted_success) == pytest.approx(expected)
    assert all(0.0 < p < 1.0 for p in features.predicted_success.values())
    assert features.quality_predictor_sha256 == quality.sha256


async def test_invalid_requests_get_bad_request_details_and_the_server_keeps_serving() -> None:
    async with classifier_channel() as channel:
        stub = classifier_pb2_grpc.ClassifierServiceStub(channel)
        empty = await _bad_request(stub.Classify(classifier_pb2.ClassifyRequest(), timeout=5))
        assert [(v.field, v.description) for v in empty.field_violations] == [
            ("messages", "at least one message is required")
        ]

        unspecified = classifier_pb2.ClassifyRequest(
            messages=[
                _message(common_pb2.ROLE_USER, "hi"),
                _message(common_pb2.ROLE_UNSPECIFIED, "who am I?"),
            ]
        )
        bad_role = await _bad_request(stub.Classify(unspecified, timeout=5))
        assert [v.field for v in bad_role.field_violations] == ["messages[1].role"]

        ok = classifier_pb2.ClassifyRequest(
            messages=[_message(common_pb2.ROLE_USER, "Translate 'hello' into French.")]
        )
        response = await stub.Classify(ok, timeout=5)
        assert response.features.task_type == common_pb2.TASK_TYPE_TRANSLATION


async def test_health_reports_serving() -> None:
    async with classifier_channel() as channel:
        health = health_pb2_grpc.HealthStub(channel)
        reply = await health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_features_to_proto_maps_every_field() -> None:
    features = RequestFeatures(
        input_tokens=2**40,
        task_type="creative_writing",
        task_confidence=0.25,
        language="fr",
        complexity=0.5,
        has_code=False,
        signals=("keyword:poem",),
    )
    proto = features_to_proto(features, "router-fallback")
    assert proto.input_tokens == 2**31 - 1
    assert proto.task_type == common_pb2.TASK_TYPE_CREATIVE_WRITING
    assert (proto.task_confidence, proto.language, proto.complexity) == (0.25, "fr", 0.5)
    assert list(proto.signals) == ["keyword:poem"]
    assert proto.source == "router-fallback"


def test_messages_to_tuples_names_every_role() -> None:
    roles = [common_pb2.ROLE_SYSTEM, common_pb2.ROLE_USER, common_pb2.ROLE_ASSISTANT, common_pb2.ROLE_TOOL]
    pairs = messages_to_tuples(_message(role, str(role)) for role in roles)
    assert pairs == [("system", "1"), ("user", "2"), ("assistant", "3"), ("tool", "4")]
    with pytest.raises(ValueError):
        messages_to_tuples([_message(common_pb2.ROLE_UNSPECIFIED, "x")])


async def test_router_local_classification_needs_no_classifier_service() -> None:
    from routemesh.router.clients.classifier import LOCAL_SOURCE, FeatureSource

    messages = [common_pb2.Message(role=common_pb2.ROLE_USER, content="Translate into French: good night")]
    source = FeatureSource("local")  # no server anywhere: it must not try to connect
    source.start()
    classified = await source.classify(messages)
    assert classified.source == LOCAL_SOURCE
    assert classified.features == classify(messages_to_tuples(messages))
    assert classified.routing().task_type == "translation"
    await source.stop()


def test_features_survive_the_wire() -> None:
    features = classify(messages_to_tuples([_message(common_pb2.ROLE_USER, "Write a Python function to sort")]))
    assert features_from_proto(features_to_proto(features, "classifier")) == features


async def test_the_router_uses_the_classifier_predictions_only_from_its_own_artifact(tmp_path) -> None:
    from routemesh.quality.predictor import QualityPredictor
    from routemesh.quality.serving import PolicyQuality
    from routemesh.quality.train import train_file
    from routemesh.router.clients.classifier import FeatureSource

    from tests.planted import planted_csv

    shipped = policy_quality(parse_policy(load_default_policy_text()))
    planted = train_file(planted_csv(tmp_path / "planted.csv"), tmp_path / "planted.json.gz").artifact
    other = PolicyQuality(QualityPredictor(planted), {"fast-cheap": "weak", "strong": "strong"})
    prompt = "Explain the quantum river garden?"
    messages = [_message(common_pb2.ROLE_USER, prompt)]
    async with classifier_server(shipped) as address:
        source = FeatureSource(address)
        source.start()
        try:
            same = await source.classify(messages, shipped)
            rollout = await source.classify(messages, other)  # the router already holds the next artifact
            none = await source.classify(messages, None)  # the router's policy names no predictor
        finally:
            await source.stop()
    features = classify([("user", prompt)])
    assert same.source == rollout.source == none.source == "classifier"
    assert same.predicted_success == pytest.approx(shipped.predict(prompt, features))
    assert (rollout.predictor_sha256, rollout.predicted_success) == (other.sha256, other.predict(prompt, features))
    assert (none.predictor_sha256, none.predicted_success) == ("", {})
