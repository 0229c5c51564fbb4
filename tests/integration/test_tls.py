"""Mutual TLS between the services: each its own certificate, internal RPCs only for the mesh identities
that need them, plaintext and foreign-CA callers refused, certificates reloaded when their files change."""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator

import grpc
import pytest
from grpc_status import rpc_status
from google.rpc import error_details_pb2

from routemesh.certs import issue, tls_env
from routemesh.client import RouterClient
from routemesh.common.tls import TlsFiles, channel_credentials
from routemesh.mesh import Mesh, MeshLayout
from routemesh.v1 import classifier_pb2, classifier_pb2_grpc, common_pb2, control_pb2, control_pb2_grpc, executor_pb2, \
    executor_pb2_grpc, telemetry_pb2, telemetry_pb2_grpc
from tests.integration.conftest import SIM_TIME_SCALE

pytestmark = pytest.mark.integration
ADMIN_KEY = "the-operators-bootstrap-key-" + "a" * 20


@pytest.fixture(scope="module")
def tls_mesh(tmp_path_factory) -> Iterator[Mesh]:
    mesh = Mesh(MeshLayout.free(), tls_dir=tmp_path_factory.mktemp("certs"), sim_time_scale=SIM_TIME_SCALE,
                log_dir=tmp_path_factory.mktemp("tls-logs"), extra_env={"ROUTEMESH_ADMIN_KEY": ADMIN_KEY})
    mesh.start()
    yield mesh
    mesh.stop()


def as_identity(mesh: Mesh, identity: str, service: str) -> grpc.Channel:
    files = TlsFiles.from_env(tls_env(mesh.tls_dir, identity))
    return grpc.secure_channel(mesh.layout.address(service), channel_credentials(files))


def reason_of(exc: grpc.RpcError) -> str:
    status = rpc_status.from_call(exc)
    info = error_details_pb2.ErrorInfo()
    return next((info.reason for d in (status.details if status else []) if d.Unpack(info)), "")


def test_applications_chat_over_tls_without_a_mesh_certificate(tls_mesh) -> None:
    with RouterClient(tls_mesh.layout.address("router"), tls_ca=str(tls_mesh.tls_dir / "ca.pem")) as client:
        result = client.complete("What is the capital of France?")
    assert result.final.status == common_pb2.FINISH_STATUS_COMPLETE and result.text
    # The whole path ran over mutual TLS: classifier, executor, telemetry and control each checked the caller.
    assert result.decision.features.source == "classifier"


@pytest.mark.parametrize("service", ["router", "classifier", "executor", "telemetry", "control"])
def test_plaintext_callers_are_refused(tls_mesh, service) -> None:
    with grpc.insecure_channel(tls_mesh.layout.address(service)) as channel:
        with pytest.raises(grpc.RpcError) as raised:
            control_pb2_grpc.ControlPlaneServiceStub(channel).GetPolicy(control_pb2.GetPolicyRequest(), timeout=3)
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE


def test_a_certificate_of_another_ca_is_refused(tls_mesh, tmp_path) -> None:
    issue(tmp_path, "router")  # a "router" certificate, but from a CA of its own
    files = TlsFiles(tmp_path / "router.pem", tmp_path / "router-key.pem", tls_mesh.tls_dir / "ca.pem")
    with grpc.secure_channel(tls_mesh.layout.address("executor"), channel_credentials(files)) as channel:
        with pytest.raises(grpc.RpcError) as raised:
            next(executor_pb2_grpc.ExecutorServiceStub(channel).Execute(executor_pb2.ExecuteRequest(), timeout=3))
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE


@pytest.mark.parametrize(("identity", "service", "call"), [
    ("admin", "executor", lambda ch: next(executor_pb2_grpc.ExecutorServiceStub(ch).Execute(
        executor_pb2.ExecuteRequest(), timeout=3))),
    ("gateway", "telemetry", lambda ch: telemetry_pb2_grpc.TelemetryServiceStub(ch).Report(
        telemetry_pb2.ReportRequest(), timeout=3)),
    ("router", "control", lambda ch: control_pb2_grpc.ControlPlaneServiceStub(ch).ApplyPolicy(
        control_pb2.ApplyPolicyRequest(policy_yaml="x: 1", dry_run=True), timeout=3)),
    ("executor", "telemetry", lambda ch: telemetry_pb2_grpc.TelemetryServiceStub(ch).GetSnapshot(
        telemetry_pb2.GetSnapshotRequest(), timeout=3)),
    ("router", "control", lambda ch: control_pb2_grpc.ControlPlaneServiceStub(ch).ListPolicyChanges(
        control_pb2.ListPolicyChangesRequest(), timeout=3)),
    ("executor", "classifier", lambda ch: classifier_pb2_grpc.ClassifierServiceStub(ch).Classify(
        classifier_pb2.ClassifyRequest(), timeout=3)),
    ("executor", "classifier", lambda ch: next(classifier_pb2_grpc.ClassifierServiceStub(ch).ClassifyStream(
        iter([classifier_pb2.ClassifyStreamRequest(id=1)]), timeout=3))),
])
def test_mesh_identities_call_only_what_they_need(tls_mesh, identity, service, call) -> None:
    with as_identity(tls_mesh, identity, service) as channel:
        with pytest.raises(grpc.RpcError) as raised:
            call(channel)
    assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert reason_of(raised.value) == "CALLER_NOT_ALLOWED"
    assert f"identity {identity!r} may not call" in raised.value.details()


def test_an_admin_credential_admits_a_mesh_identity_to_admin_rpcs(tls_mesh) -> None:
    with as_identity(tls_mesh, "executor", "control") as channel:
        stub = control_pb2_grpc.ControlPlaneServiceStub(channel)
        reply = stub.GetPolicy(control_pb2.GetPolicyRequest(), timeout=3,
                               metadata=[("authorization", f"Bearer {ADMIN_KEY}")])
        assert reply.policy.version >= 1
        with pytest.raises(grpc.RpcError) as raised:
            stub.GetPolicy(control_pb2.GetPolicyRequest(), timeout=3,
                           metadata=[("authorization", f"Bearer {ADMIN_KEY}x")])
    assert reason_of(raised.value) == "CALLER_NOT_ALLOWED" and ADMIN_KEY not in raised.value.details()


def test_the_admin_reads_the_policy_and_the_cli_uses_the_environments_certificate(tls_mesh) -> None:
    with as_identity(tls_mesh, "admin", "control") as channel:
        reply = control_pb2_grpc.ControlPlaneServiceStub(channel).GetPolicy(control_pb2.GetPolicyRequest(), timeout=3)
    assert reply.policy.version >= 1
    with as_identity(tls_mesh, "admin", "control") as channel:
        changes = control_pb2_grpc.ControlPlaneServiceStub(channel).ListPolicyChanges(
            control_pb2.ListPolicyChangesRequest(), timeout=3).changes
    assert (changes[-1].action, changes[-1].version, changes[-1].summary) == ("applied", 1, "first version")
    env = {**os.environ, **tls_env(tls_mesh.tls_dir, "admin")}
    health = subprocess.run([sys.executable, "-m", "routemesh", "health", tls_mesh.layout.address("executor")],
                            env=env, capture_output=True, text=True, timeout=30)
    assert health.returncode == 0 and "SERVING" in health.stdout


def _served_serial(mesh: Mesh, service: str) -> int:
    """The serial number of the certificate the service presents to a new connection."""
    context = ssl.create_default_context(cafile=str(mesh.tls_dir / "ca.pem"))
    context.load_cert_chain(mesh.tls_dir / "admin.pem", mesh.tls_dir / "admin-key.pem")
    context.set_alpn_protocols(["h2"])
    host, port = mesh.layout.address(service).rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as raw, \
            context.wrap_socket(raw, server_hostname="localhost") as tls:
        from cryptography import x509

        return x509.load_der_x509_certificate(tls.getpeercert(binary_form=True)).serial_number


def test_a_renewed_certificate_is_served_to_new_connections_without_a_restart(tls_mesh) -> None:
    before = _served_serial(tls_mesh, "telemetry")
    issue(tls_mesh.tls_dir, "telemetry")  # renewed in place, as cert-manager or a cron job would
    deadline = time.monotonic() + 10
    while (after := _served_serial(tls_mesh, "telemetry")) == before:
        assert time.monotonic() < deadline, "the new certificate was not picked up"
        time.sleep(0.2)
    assert after != before
    with RouterClient(tls_mesh.layout.address("router"), tls_ca=(tls_mesh.tls_dir / "ca.pem").read_bytes()) as client:
        assert client.complete("Say hi").final.status == common_pb2.FINISH_STATUS_COMPLETE


def test_the_console_reads_the_mesh_over_mutual_tls_for_an_admin_only(tls_mesh) -> None:
    import httpx

    base = f"https://{tls_mesh.layout.address('gateway')}/console/api"
    with httpx.Client(verify=ssl.create_default_context(cafile=str(tls_mesh.tls_dir / "ca.pem")), timeout=30) as http:
        refused = http.get(f"{base}/overview")
        assert refused.status_code == 401 and "mutual TLS" in refused.json()["error"]["message"]
        admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
        # The gateway's certificate admits it to telemetry's and control's reads; the key admitted the caller.
        for path in ("overview", "decisions", "policy", "alerts", "ledger"):
            answer = http.get(f"{base}/{path}", headers=admin)
            assert answer.status_code == 200, (path, answer.text)
        assert http.get(f"{base}/overview", headers=admin).json()["models"]


def test_the_gateway_serves_https_with_its_certificate(tls_mesh) -> None:
    import httpx

    address = tls_mesh.layout.address("gateway")
    body = {"model": "auto", "max_tokens": 16, "messages": [{"role": "user", "content": "Say hi"}]}
    with httpx.Client(verify=ssl.create_default_context(cafile=str(tls_mesh.tls_dir / "ca.pem")), timeout=30) as http:
        reply = http.post(f"https://{address}/v1/chat/completions", json=body)
    assert reply.status_code == 200 and reply.json()["choices"][0]["message"]["content"]
    with httpx.Client(timeout=5) as http, pytest.raises(httpx.HTTPError):
        http.post(f"http://{address}/v1/chat/completions", json=body)
