"""The attacks issue 13 found, played against one mesh with security on: every one refused, no secret leaks.

The mesh runs as compose and the manifests run it: mutual TLS between services, the router requiring API
keys, provider hosts restricted. Secrets planted as canaries: the provider's API key, the key pepper, the
bootstrap admin key, a control-plane variable no policy may read, and the secret of every key made. After
the attacks, none of them may appear in any service's log (DEBUG), any exported span, any response or
error the attacker saw, or any Redis key or value of the run.
"""

from __future__ import annotations

import json
import ssl
import threading
import time
from collections.abc import Iterator

import grpc
import httpx
import pytest
import redis
from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from routemesh.certs import tls_env
from routemesh.client import RoutemeshError, RouterClient
from routemesh.common.policy import load_default_policy_text
from routemesh.common.tls import TlsFiles, channel_credentials
from routemesh.mesh import Mesh, MeshLayout
from routemesh.v1 import (
    common_pb2,
    control_pb2,
    control_pb2_grpc,
    executor_pb2,
    executor_pb2_grpc,
    router_pb2,
    telemetry_pb2,
    telemetry_pb2_grpc,
)
from tests.integration.conftest import REDIS_URL, SIM_TIME_SCALE
from tests.otlp_receiver import serve_trace_receiver

pytestmark = pytest.mark.integration

PROVIDER_KEY = "sk-canary-provider-key-5b7e0d"
PEPPER = "canary-pepper-" + "q" * 30
ADMIN_KEY = "canary-bootstrap-admin-" + "z" * 20
CONTROL_SECRET = "canary-control-env-secret-93ab"
CANARIES = [PROVIDER_KEY, PEPPER, ADMIN_KEY, CONTROL_SECRET]
EVIL_URL = "http://203.0.113.9:8080/v1"
MiB = 1024 * 1024
SEEN: list[str] = []  # every response and error text the attacker received


class Receiver(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self) -> None:
        self.raw: list[bytes] = []
        self.lock = threading.Lock()

    def Export(self, request, context):  # noqa: N802 - gRPC method name
        with self.lock:
            self.raw.append(request.SerializeToString())
        return trace_service_pb2.ExportTraceServiceResponse()


@pytest.fixture(scope="module")
def receiver() -> Iterator[tuple[Receiver, int]]:
    servicer = Receiver()
    with serve_trace_receiver(servicer, workers=4) as port:
        yield servicer, port


@pytest.fixture(scope="module")
def secure(receiver, tmp_path_factory, redis_prefix) -> Iterator[tuple[Mesh, str, str]]:
    """The mesh, its Redis prefix, and a user key of tenant acme that may use fast-cheap only."""
    _, port = receiver
    policy = tmp_path_factory.mktemp("attacks") / "policy.yaml"
    policy.write_text(keyed_policy())
    prefix = f"{redis_prefix}attacks:"
    mesh = Mesh(MeshLayout.free(), policy=str(policy), redis_url=REDIS_URL, redis_prefix=prefix,
                tls_dir=tmp_path_factory.mktemp("attack-certs"), sim_time_scale=SIM_TIME_SCALE,
                log_dir=tmp_path_factory.mktemp("attack-logs"),
                extra_env={"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
                           "OTEL_EXPORTER_OTLP_INSECURE": "true", "OTEL_BSP_SCHEDULE_DELAY": "100",
                           "ROUTEMESH_LOG_LEVEL": "DEBUG", "ROUTEMESH_TEST_SIM_KEY": PROVIDER_KEY,
                           "ROUTEMESH_KEY_PEPPER": PEPPER, "ROUTEMESH_ADMIN_KEY": ADMIN_KEY,
                           "ROUTEMESH_ATTACK_SECRET": CONTROL_SECRET,
                           "ROUTEMESH_PROVIDER_HOSTS": "127.0.0.1,localhost"},
                extra_args={"router": ["--require-keys"]})
    mesh.start()
    with mesh.channel("control") as channel:
        made = control_pb2_grpc.ControlPlaneServiceStub(channel).CreateKey(
            control_pb2.CreateKeyRequest(tenant="acme", name="app", allowed_models=["fast-cheap"]), timeout=10)
    CANARIES.append(made.secret.split("_", 2)[2])
    yield mesh, prefix, made.secret
    mesh.stop()


def keyed_policy() -> str:
    """The default policy with a keyed provider: the sim ignores keys, so the key shows where it could leak."""
    return load_default_policy_text().replace(
        "    timeouts: {connect_s: 2, first_token_s: 10, between_tokens_s: 10}",
        "    timeouts: {connect_s: 2, first_token_s: 10, between_tokens_s: 10}\n"
        "    api_key_env: ROUTEMESH_TEST_SIM_KEY", 1)


def as_identity(mesh: Mesh, identity: str, service: str) -> grpc.Channel:
    files = TlsFiles.from_env(tls_env(mesh.tls_dir, identity))
    options = [("grpc.max_send_message_length", 64 * MiB), ("grpc.max_metadata_size", 16 * MiB)]
    return grpc.secure_channel(mesh.layout.address(service), channel_credentials(files), options=options)


def app(mesh: Mesh, api_key: str | None) -> RouterClient:
    """An application: the CA to check the router by, no mesh certificate, and maybe a key."""
    return RouterClient(mesh.layout.address("router"), tls_ca=str(mesh.tls_dir / "ca.pem"), api_key=api_key or "")


def refusal(call, *args, **kwargs) -> RoutemeshError:
    """The error `call` must end with; its text goes on record."""
    with pytest.raises((grpc.RpcError, RoutemeshError)) as raised:
        result = call(*args, **kwargs)
        if hasattr(result, "__next__"):
            for _ in result:
                pass
    error = raised.value
    if isinstance(error, grpc.RpcError):
        SEEN.append(repr(error.trailing_metadata()))
        error = RoutemeshError.from_rpc_error(error)
    SEEN.append(f"{error.message} {error.metadata} {error.field_violations}")
    return error


def https(mesh: Mesh) -> httpx.Client:
    return httpx.Client(verify=ssl.create_default_context(cafile=str(mesh.tls_dir / "ca.pem")), timeout=30)


def post(mesh: Mesh, body: object, key: str | None = None, raw: str | None = None) -> httpx.Response:
    headers = {"content-type": "application/json", **({"authorization": f"Bearer {key}"} if key else {})}
    with https(mesh) as http:
        reply = http.post(f"https://{mesh.layout.address('gateway')}/v1/chat/completions", headers=headers,
                          content=raw if raw is not None else json.dumps(body))
    SEEN.append(reply.text)
    return reply


HELLO = {"model": "auto", "max_tokens": 16, "messages": [{"role": "user", "content": "Say hi"}]}


def test_no_key_no_answer_and_the_key_decides_what_may_be_used(secure) -> None:
    mesh, _, key = secure
    for token in (None, key[:-1] + ("A" if key[-1] != "A" else "B"), "rmk_not_a_key"):
        with app(mesh, token) as client:
            error = refusal(client.complete, "hello")
        assert (error.code, error.reason) == (grpc.StatusCode.UNAUTHENTICATED, "INVALID_API_KEY")
    with app(mesh, key) as client:
        # Naming another tenant in metadata changes nothing: the key's tenant and models hold.
        result = client.complete("hello", metadata={"tenant": "someone-else"})
        assert result.final.status == common_pb2.FINISH_STATUS_COMPLETE and result.decision.model == "fast-cheap"
        SEEN.append(result.text)
        error = refusal(client.complete, "hello", model="strong", metadata={"tenant": "someone-else"})
    assert (error.code, error.reason) == (grpc.StatusCode.PERMISSION_DENIED, "KEY_NOT_ALLOWED")
    assert post(mesh, HELLO).status_code == 401
    assert post(mesh, HELLO, key="rmk_wrong").status_code == 401
    assert post(mesh, HELLO, key=key).status_code == 200


@pytest.mark.parametrize("service", ["executor", "telemetry", "control", "classifier"])
def test_internal_services_refuse_callers_without_a_mesh_certificate(secure, service) -> None:
    mesh, _, key = secure
    request = executor_pb2.ExecuteRequest(
        messages=[common_pb2.Message(role=common_pb2.ROLE_USER, content="hi")], plan=["strong"])
    ca_only = grpc.ssl_channel_credentials(root_certificates=(mesh.tls_dir / "ca.pem").read_bytes())
    for channel in (grpc.insecure_channel(mesh.layout.address(service)),
                    grpc.secure_channel(mesh.layout.address(service), ca_only)):
        with channel:
            stub = executor_pb2_grpc.ExecutorServiceStub(channel)
            error = refusal(stub.Execute, request, timeout=5, metadata=[("authorization", f"Bearer {key}")])
        assert error.code == grpc.StatusCode.UNAVAILABLE


def test_mesh_identities_and_user_keys_cannot_reach_what_is_not_theirs(secure) -> None:
    mesh, _, key = secure
    user = [("authorization", f"Bearer {key}")]
    forged = telemetry_pb2.ReportRequest(observations=[telemetry_pb2.Observation(
        model="strong", provider="sim", phase=telemetry_pb2.OBSERVATION_PHASE_FINISHED,
        outcome=common_pb2.ATTEMPT_OUTCOME_UPSTREAM_ERROR)] * 50)
    evil = keyed_policy().replace("${ROUTEMESH_SIM_URL:-http://127.0.0.1:50056/v1}", EVIL_URL)
    attempts = [
        ("gateway", "executor", lambda ch: executor_pb2_grpc.ExecutorServiceStub(ch).Execute(
            executor_pb2.ExecuteRequest(messages=[common_pb2.Message(role=common_pb2.ROLE_USER, content="x")],
                                        plan=["strong"]), timeout=5, metadata=user)),
        ("gateway", "telemetry", lambda ch: telemetry_pb2_grpc.TelemetryServiceStub(ch).Report(
            forged, timeout=5, metadata=user)),
        ("classifier", "telemetry", lambda ch: telemetry_pb2_grpc.TelemetryServiceStub(ch).GetSnapshot(
            telemetry_pb2.GetSnapshotRequest(), timeout=5, metadata=user)),
        ("executor", "control", lambda ch: control_pb2_grpc.ControlPlaneServiceStub(ch).GetPolicy(
            control_pb2.GetPolicyRequest(), timeout=5, metadata=user)),
        ("router", "control", lambda ch: control_pb2_grpc.ControlPlaneServiceStub(ch).ApplyPolicy(
            control_pb2.ApplyPolicyRequest(policy_yaml=evil), timeout=5, metadata=user)),
        ("gateway", "control", lambda ch: control_pb2_grpc.ControlPlaneServiceStub(ch).CreateKey(
            control_pb2.CreateKeyRequest(tenant="acme", role="admin"), timeout=5, metadata=user)),
    ]
    for identity, service, call in attempts:
        with as_identity(mesh, identity, service) as channel:
            error = refusal(call, channel)
        assert (error.code, error.reason) == (grpc.StatusCode.PERMISSION_DENIED, "CALLER_NOT_ALLOWED"), identity
    with as_identity(mesh, "admin", "telemetry") as channel:
        snapshot = telemetry_pb2_grpc.TelemetryServiceStub(channel).GetSnapshot(
            telemetry_pb2.GetSnapshotRequest(), timeout=5)
    assert all(h.circuit_state != telemetry_pb2.CIRCUIT_STATE_OPEN for h in snapshot.models)


def test_even_the_admin_cannot_redirect_a_provider_or_read_the_environment(secure) -> None:
    mesh, _, _ = secure
    with mesh.channel("control") as channel:
        stub = control_pb2_grpc.ControlPlaneServiceStub(channel)
        before = stub.GetPolicy(control_pb2.GetPolicyRequest(), timeout=5).policy
        evil = keyed_policy().replace("${ROUTEMESH_SIM_URL:-http://127.0.0.1:50056/v1}", EVIL_URL)
        error = refusal(stub.ApplyPolicy, control_pb2.ApplyPolicyRequest(policy_yaml=evil), timeout=5)
        assert error.code == grpc.StatusCode.INVALID_ARGUMENT and "203.0.113.9" in str(error.field_violations)
        for dry_run in (True, False):
            reading = keyed_policy().replace("${ROUTEMESH_SIM_URL:-http://127.0.0.1:50056/v1}",
                                             "${ROUTEMESH_ATTACK_SECRET}")
            error = refusal(stub.ApplyPolicy, control_pb2.ApplyPolicyRequest(policy_yaml=reading, dry_run=dry_run),
                            timeout=5)
            assert error.code == grpc.StatusCode.INVALID_ARGUMENT
            assert "ROUTEMESH_ATTACK_SECRET may not be read" in str(error.field_violations)
        bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
            f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n"
            for i in range(8))
        assert refusal(stub.ApplyPolicy, control_pb2.ApplyPolicyRequest(policy_yaml=bomb), timeout=5).code == \
            grpc.StatusCode.INVALID_ARGUMENT
        after = stub.GetPolicy(control_pb2.GetPolicyRequest(), timeout=5).policy
        SEEN.append(after.policy_json)
    assert (after.version, after.digest) == (before.version, before.digest)
    assert "${ROUTEMESH_SIM_URL" in after.policy_json  # the operator reads the reference, not the value


def test_a_catastrophic_regex_cannot_stall_the_router(secure) -> None:
    mesh, _, key = secure
    original = keyed_policy()
    hostile = original.replace("    rules:\n", "    rules:\n      - name: redos\n"
                               "        when: {regex: '^(a+)+$'}\n        model: fast-cheap\n", 1)
    with mesh.channel("control") as channel:
        stub = control_pb2_grpc.ControlPlaneServiceStub(channel)
        applied = stub.ApplyPolicy(control_pb2.ApplyPolicyRequest(policy_yaml=hostile), timeout=5).policy
        try:
            time.sleep(1.5)  # the router's watch brings the new version
            with app(mesh, key) as client, mesh.channel("router") as health_channel:
                started = time.monotonic()
                result = client.complete("a" * 50_000 + "!", max_tokens=8)
                took = time.monotonic() - started
                health = health_pb2_grpc.HealthStub(health_channel).Check(health_pb2.HealthCheckRequest(), timeout=2)
            assert result.final.status in (common_pb2.FINISH_STATUS_COMPLETE, common_pb2.FINISH_STATUS_LENGTH)
            assert result.decision.policy_version >= applied.version
            assert took < 5 and health.status == health_pb2.HealthCheckResponse.SERVING
        finally:
            stub.ApplyPolicy(control_pb2.ApplyPolicyRequest(policy_yaml=original), timeout=5)


def test_oversized_and_malformed_requests_are_clear_errors(secure) -> None:
    mesh, _, key = secure
    with as_identity(mesh, "router", "executor") as channel:
        huge = executor_pb2.ExecuteRequest(messages=[common_pb2.Message(role=common_pb2.ROLE_USER, content="x")],
                                           plan=[f"m{i}" for i in range(100_000)])
        error = refusal(executor_pb2_grpc.ExecutorServiceStub(channel).Execute, huge, timeout=30)
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT and len(str(error.field_violations)) < 4096
    with as_identity(mesh, "executor", "telemetry") as channel:
        stub = telemetry_pb2_grpc.TelemetryServiceStub(channel)
        made_up = [telemetry_pb2.Observation(model=f"made-up-{i}", provider="sim", ttft_ms=5.0,
                                             phase=telemetry_pb2.OBSERVATION_PHASE_FINISHED,
                                             outcome=common_pb2.ATTEMPT_OUTCOME_SUCCESS) for i in range(10_000)]
        stub.Report(telemetry_pb2.ReportRequest(observations=made_up), timeout=10)
    with as_identity(mesh, "admin", "telemetry") as channel:
        models = {h.model for h in telemetry_pb2_grpc.TelemetryServiceStub(channel).GetSnapshot(
            telemetry_pb2.GetSnapshotRequest(), timeout=5).models}
    assert not any(m.startswith("made-up-") for m in models)

    good = router_pb2.ChatRequest(messages=[common_pb2.Message(role=common_pb2.ROLE_USER, content="hi")],
                                  model="PLACEHOLDER").SerializeToString()
    with app(mesh, key) as client:
        error = refusal(client.complete, "hello", routing=router_pb2.RoutingOptions(max_cost_usd=float("nan")))
        assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    ca = grpc.ssl_channel_credentials((mesh.tls_dir / "ca.pem").read_bytes())
    with grpc.secure_channel(mesh.layout.address("router"), ca) as channel:
        raw = channel.unary_stream("/routemesh.v1.RouterService/Chat")
        bad_utf8 = good.replace(b"PLACEHOLDER", b"\xff\xfe\xfdPLACEH")
        error = refusal(raw, bad_utf8, timeout=5, metadata=[("authorization", f"Bearer {key}")])
    assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "UNDECODABLE_MESSAGE")
    deep = post(mesh, None, key=key, raw="[" * 10_000 + "]" * 10_000)
    assert deep.status_code == 400 and deep.json()["error"]["code"] == "json_too_deep"
    with app(mesh, key) as client:  # the mesh still serves
        assert client.complete("hello").final.status == common_pb2.FINISH_STATUS_COMPLETE


def test_no_canary_in_logs_spans_responses_or_redis(receiver, secure) -> None:
    servicer, _ = receiver
    mesh, prefix, _ = secure
    time.sleep(1.0)  # the last spans are exported
    with servicer.lock:
        spans = b"".join(servicer.raw)
    assert spans, "no spans were exported"
    logs = {path.name: path.read_text(errors="replace") for path in mesh.log_dir.glob("*.log")}
    assert set(logs) >= {"router.log", "executor.log", "control.log", "telemetry.log", "gateway.log"}
    client = redis.Redis.from_url(REDIS_URL)
    stored = []
    for name in client.scan_iter(match=prefix + "*"):
        kind = client.type(name)
        value = {b"hash": client.hgetall, b"list": lambda k: client.lrange(k, 0, -1),
                 b"set": client.smembers, b"zset": lambda k: client.zrange(k, 0, -1)}.get(kind, client.get)(name)
        stored.append(repr((name, value)))
    assert stored, "the run wrote nothing to Redis"
    seen = "\n".join(SEEN)
    assert len(SEEN) > 20
    for canary in CANARIES:
        assert canary.encode() not in spans, "a canary in the spans"
        for name, text in logs.items():
            assert canary not in text, f"a canary in {name}"
        assert canary not in seen, "a canary in what a caller received"
        assert not [s for s in stored if canary in s], "a canary in Redis"
