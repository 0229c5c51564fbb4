"""One Chat is one trace across every hop; spans carry GenAI and routing attributes, never secrets or prompts."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import redis
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from routemesh.client import RouterClient
from routemesh.common import semconv
from routemesh.common.policy import load_default_policy_text
from routemesh.mesh import Mesh, MeshLayout
from routemesh.v1 import common_pb2
from tests.integration.conftest import REDIS_URL, SIM_TIME_SCALE
from tests.otlp_receiver import serve_trace_receiver

pytestmark = pytest.mark.integration

SECRET = "sk-test-DO-NOT-LEAK-4f1c2e"
PROMPT = "Please summarize the zebra migration memo for the board"

# Expected service-to-service edges of one Chat: (parent service, parent span, child service, child span).
# The router's pipeline stages are children of its Chat span; each downstream call is a child of its stage.
SERVICE_EDGES = [
    ("routemesh-router", "routemesh.v1.RouterService/Chat", "routemesh-router", "routemesh.classify"),
    # Classify travels as a message on a long-lived stream (ClassifyStream): no client span, but the classifier's
    # span of the request is a child of the stage that asked.
    ("routemesh-router", "routemesh.classify", "routemesh-classifier", "routemesh.v1.ClassifierService/Classify"),
    ("routemesh-router", "routemesh.v1.RouterService/Chat", "routemesh-router", "routemesh.decide"),
    ("routemesh-router", "routemesh.v1.RouterService/Chat", "routemesh-router", "routemesh.admit"),
    ("routemesh-router", "routemesh.v1.RouterService/Chat", "routemesh-router", "routemesh.execute"),
    ("routemesh-router", "routemesh.execute", "routemesh-router", "routemesh.v1.ExecutorService/Execute"),
    ("routemesh-router", "routemesh.v1.ExecutorService/Execute", "routemesh-executor", "routemesh.v1.ExecutorService/Execute"),
    ("routemesh-executor", "routemesh.v1.ExecutorService/Execute", "routemesh-executor", "chat {model}"),
    ("routemesh-router", "routemesh.v1.RouterService/Chat", "routemesh-router", "routemesh.settle"),
]
# With --health-source query the router also asks telemetry on every request; with watch (the default)
# health is pushed and read in-process, so telemetry is not a hop of the request.
QUERY_EDGES = [
    ("routemesh-router", "routemesh.v1.RouterService/Chat", "routemesh-router", "routemesh.v1.TelemetryService/GetSnapshot"),
    ("routemesh-router", "routemesh.v1.TelemetryService/GetSnapshot", "routemesh-telemetry", "routemesh.v1.TelemetryService/GetSnapshot"),
]


@dataclass
class Span:
    service: str
    name: str
    trace_id: str
    span_id: str
    parent_id: str
    kind: int
    attributes: dict[str, object]
    start_ns: int = 0


class OtlpReceiver(trace_service_pb2_grpc.TraceServiceServicer):
    """A real OTLP/gRPC trace receiver that keeps what it is sent."""

    def __init__(self) -> None:
        self.spans: list[Span] = []
        self.raw: list[bytes] = []
        self.lock = threading.Lock()

    def Export(self, request, context):  # noqa: N802 - gRPC method name
        with self.lock:
            self.raw.append(request.SerializeToString())
            for resource_spans in request.resource_spans:
                service = next(a.value.string_value for a in resource_spans.resource.attributes
                               if a.key == "service.name")
                for scope in resource_spans.scope_spans:
                    for s in scope.spans:
                        attrs = {a.key: getattr(a.value, a.value.WhichOneof("value")) for a in s.attributes}
                        self.spans.append(Span(service, s.name, s.trace_id.hex(), s.span_id.hex(),
                                               s.parent_span_id.hex(), s.kind, attrs, s.start_time_unix_nano))
        return trace_service_pb2.ExportTraceServiceResponse()


@pytest.fixture(scope="module")
def receiver() -> Iterator[tuple[OtlpReceiver, int]]:
    servicer = OtlpReceiver()
    with serve_trace_receiver(servicer, workers=4) as port:
        yield servicer, port


@pytest.fixture(scope="module", params=["watch", "query"])
def traced_mesh(request, receiver, tmp_path_factory, redis_prefix) -> Iterator[Mesh]:
    _, port = receiver
    policy = tmp_path_factory.mktemp("traced") / "policy.yaml"
    # The sim provider ignores keys, so a keyed provider shows where a secret could leak.
    policy.write_text(load_default_policy_text().replace(
        "    timeouts: {connect_s: 2, first_token_s: 10, between_tokens_s: 10}",
        "    timeouts: {connect_s: 2, first_token_s: 10, between_tokens_s: 10}\n"
        "    api_key_env: ROUTEMESH_TEST_SIM_KEY", 1))
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
        "OTEL_EXPORTER_OTLP_INSECURE": "true",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        "ROUTEMESH_TEST_SIM_KEY": SECRET,
        "ROUTEMESH_LOG_LEVEL": "DEBUG",
        "ROUTEMESH_HEALTH_SOURCE": request.param,
    }
    log_dir = tmp_path_factory.mktemp("traced-logs")
    mesh = Mesh(MeshLayout.free(), policy=str(policy), redis_url=REDIS_URL,
                redis_prefix=f"{redis_prefix}traced-{request.param}:",
                sim_time_scale=SIM_TIME_SCALE, log_dir=log_dir, extra_env=env)
    mesh.start()
    yield mesh
    mesh.stop()


def test_one_chat_is_one_trace_with_every_hop(receiver, traced_mesh):
    servicer, _ = receiver
    with RouterClient(traced_mesh.layout.address("router")) as client:
        # A tenant with a rate limit and a budget: admission and settling have work to do, so they have spans.
        result = client.complete(PROMPT, metadata={"tenant": "acme"})
    assert result.final.status == common_pb2.FINISH_STATUS_COMPLETE
    model = result.decision.model
    health_source = traced_mesh.extra_env["ROUTEMESH_HEALTH_SOURCE"]
    query = health_source == "query"
    expected_edges = [tuple(part.format(model=model) for part in edge)
                      for edge in SERVICE_EDGES + (QUERY_EDGES if query else [])]
    trace_id = result.final.trace_id
    assert len(trace_id) == 32 and trace_id == result.decision.trace_id

    def spans_of_trace() -> list[Span]:
        with servicer.lock:
            return [s for s in servicer.spans if s.trace_id == trace_id]

    deadline = time.monotonic() + 15
    wanted = {"routemesh-router", "routemesh-classifier", "routemesh-executor", *(["routemesh-telemetry"] * query)}
    while {s.service for s in spans_of_trace()} < wanted or not any(s.name == f"chat {model}" for s in spans_of_trace()):
        assert time.monotonic() < deadline, f"spans so far: {[(s.service, s.name) for s in spans_of_trace()]}"
        time.sleep(0.1)
    time.sleep(0.3)
    spans = spans_of_trace()
    by_id = {s.span_id: s for s in spans}
    roots = [s for s in spans if not s.parent_id]
    assert [(r.service, r.name) for r in roots] == [("routemesh-router", "routemesh.v1.RouterService/Chat")]
    edges = {(by_id[s.parent_id].service, by_id[s.parent_id].name, s.service, s.name)
             for s in spans if s.parent_id in by_id}
    missing = [e for e in expected_edges if e not in edges]
    assert not missing, f"missing edges {missing}; have {sorted(edges)}"

    stages = sorted((s for s in spans if s.name in semconv.ROUTER_STAGES), key=lambda s: s.start_ns)
    assert [s.name for s in stages] == list(semconv.ROUTER_STAGES), "one span per pipeline stage, in order"
    decide = next(s for s in spans if s.name == "routemesh.decide")
    assert decide.attributes["routemesh.decision.model"] == model
    assert decide.attributes["routemesh.decision.id"] == result.decision.decision_id
    assert decide.attributes["routemesh.request.task_type"] == "summarization"
    assert decide.attributes["routemesh.quality.predictor_sha256"] == result.decision.features.quality_predictor_sha256
    assert decide.attributes["routemesh.health.source"] == health_source
    assert 0 <= decide.attributes["routemesh.health.age_ms"] < 2000
    if not query:
        assert not [s for s in spans if "Telemetry" in s.name], "pushed health must not add a hop"
    chat = next(s for s in spans if s.name == f"chat {model}")
    assert chat.kind == 3  # SPAN_KIND_CLIENT
    assert chat.attributes["gen_ai.operation.name"] == "chat"
    assert chat.attributes["gen_ai.request.model"].startswith("sim-")
    assert chat.attributes["gen_ai.usage.output_tokens"] == result.final.usage.output_tokens
    assert chat.attributes["gen_ai.provider.name"] == "sim"
    assert chat.attributes["routemesh.attempt.outcome"] == "success", "span attributes carry the lowercase label"


def read_any(client: redis.Redis, key: bytes) -> object:
    kind = client.type(key)
    if kind == b"list":
        return client.lrange(key, 0, -1)
    if kind == b"hash":
        return list(client.hgetall(key).items())
    if kind == b"zset":
        return client.zrange(key, 0, -1)
    return [client.get(key)]


def test_no_secret_or_prompt_text_in_spans_logs_or_redis(receiver, traced_mesh, redis_prefix):
    servicer, _ = receiver
    with RouterClient(traced_mesh.layout.address("router")) as client:
        client.complete(PROMPT)
    time.sleep(1.0)
    with servicer.lock:
        exported = b"".join(servicer.raw)
    assert exported, "no spans were exported"
    assert SECRET.encode() not in exported
    assert b"zebra migration" not in exported
    for path in traced_mesh.log_dir.glob("*.log"):
        text = path.read_text(errors="replace")
        assert SECRET not in text, f"secret in {path.name}"
    client = redis.Redis.from_url(REDIS_URL)
    for key in client.scan_iter(match=redis_prefix + "traced:*"):
        assert SECRET.encode() not in key
        values = read_any(client, key)
        assert SECRET.encode() not in repr(values).encode()
        assert b"zebra" not in repr(values).encode()
