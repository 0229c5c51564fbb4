"""Admin RPCs on a plaintext mesh with --require-admin: the bootstrap key, admin API keys, nothing else.

Real control and telemetry processes, real Redis; the CLI runs as a subprocess, as an operator runs it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator

import grpc
import pytest

from routemesh.client import RoutemeshError
from routemesh.mesh import Mesh, MeshLayout
from routemesh.v1 import control_pb2, control_pb2_grpc, telemetry_pb2, telemetry_pb2_grpc
from tests.integration.conftest import REDIS_URL

pytestmark = pytest.mark.integration
PEPPER = "p" * 40
BOOTSTRAP = "bootstrap-admin-key-" + "b" * 30


@pytest.fixture(scope="module")
def mesh(tmp_path_factory, redis_prefix) -> Iterator[Mesh]:
    prefix = f"{redis_prefix}admin:"
    redis = ["--redis-url", REDIS_URL, "--redis-prefix", prefix]
    started = Mesh(MeshLayout.free(), services=("control", "telemetry"), log_dir=tmp_path_factory.mktemp("admin"),
                   extra_env={"ROUTEMESH_KEY_PEPPER": PEPPER, "ROUTEMESH_ADMIN_KEY": BOOTSTRAP,
                              "ROUTEMESH_REQUIRE_ADMIN": "true"},
                   extra_args={"control": redis, "telemetry": redis})
    started.start()
    yield started
    started.stop()


def bearer(token: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}")]


def control(mesh: Mesh) -> control_pb2_grpc.ControlPlaneServiceStub:
    return control_pb2_grpc.ControlPlaneServiceStub(mesh.channel("control"))


def refused(call, *args, **kwargs) -> RoutemeshError:
    with pytest.raises(grpc.RpcError) as caught:
        call(*args, timeout=10, **kwargs)
    return RoutemeshError.from_rpc_error(caught.value)


def make_key(mesh: Mesh, role: str) -> str:
    reply = control(mesh).CreateKey(control_pb2.CreateKeyRequest(tenant="ops", role=role), timeout=10,
                                    metadata=bearer(BOOTSTRAP))
    return reply.secret


def test_admin_rpcs_refuse_callers_without_an_admin_credential(mesh) -> None:
    stub = control(mesh)
    user = make_key(mesh, "user")
    for metadata in ([], bearer(user), bearer("rmk_" + "0" * 16 + "_" + "x" * 43), bearer(BOOTSTRAP[:-1])):
        for call, request in ((stub.GetPolicy, control_pb2.GetPolicyRequest()),
                              (stub.ApplyPolicy, control_pb2.ApplyPolicyRequest(policy_yaml="models: {}")),
                              (stub.ListPolicyChanges, control_pb2.ListPolicyChangesRequest()),
                              (stub.ListKeys, control_pb2.ListKeysRequest()),
                              (stub.CreateKey, control_pb2.CreateKeyRequest(tenant="x", role="admin"))):
            error = refused(call, request, metadata=metadata)
            assert error.code == grpc.StatusCode.UNAUTHENTICATED and error.reason == "ADMIN_REQUIRED", error
            assert BOOTSTRAP not in error.message and "admin role" in error.message
    telemetry = telemetry_pb2_grpc.TelemetryServiceStub(mesh.channel("telemetry"))
    for call, request in ((telemetry.GetSnapshot, telemetry_pb2.GetSnapshotRequest()),
                          (telemetry.GetExperimentReport, telemetry_pb2.GetExperimentReportRequest())):
        assert refused(call, request, metadata=bearer(user)).reason == "ADMIN_REQUIRED"
    # The data plane's own streams are not admin RPCs: telemetry holds the policy it watches.
    assert mesh.is_healthy("telemetry")


def test_admin_key_is_admitted_named_in_the_audit_log_and_revocable(mesh) -> None:
    stub = control(mesh)
    token = make_key(mesh, "admin")
    key_id = token.split("_")[1]
    policy = stub.GetPolicy(control_pb2.GetPolicyRequest(), timeout=10, metadata=bearer(token)).policy
    assert policy.version >= 1
    made = stub.CreateKey(control_pb2.CreateKeyRequest(tenant="acme", name="by-admin-key"), timeout=10,
                          metadata=bearer(token))
    changes = stub.ListPolicyChanges(control_pb2.ListPolicyChangesRequest(), timeout=10, metadata=bearer(token))
    actors = {c.actor for c in changes.changes if made.key.key_id in c.summary}
    assert actors == {f"admin-key:{key_id}"}
    telemetry = telemetry_pb2_grpc.TelemetryServiceStub(mesh.channel("telemetry"))
    assert telemetry.GetSnapshot(telemetry_pb2.GetSnapshotRequest(), timeout=10, metadata=bearer(token)) is not None
    stub.RevokeKey(control_pb2.RevokeKeyRequest(key_id=key_id), timeout=10, metadata=bearer(BOOTSTRAP))
    deadline = time.monotonic() + 10  # verdicts are cached for 2 s
    while time.monotonic() < deadline:
        try:
            stub.ListKeys(control_pb2.ListKeysRequest(), timeout=10, metadata=bearer(token))
        except grpc.RpcError as exc:
            assert RoutemeshError.from_rpc_error(exc).reason == "ADMIN_REQUIRED"
            break
        time.sleep(0.2)
    else:
        pytest.fail("a revoked admin key still worked after 10 s")


def cli(mesh: Mesh, api_key: str | None, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "ROUTEMESH_API_KEY"}
    env["ROUTEMESH_CONTROL_ADDR"] = mesh.layout.address("control")
    if api_key:
        env["ROUTEMESH_API_KEY"] = api_key
    return subprocess.run([sys.executable, "-m", "routemesh", *args], capture_output=True, text=True, timeout=60,
                          env=env)


def test_cli_sends_the_operators_key(mesh) -> None:
    without = cli(mesh, None, "keys", "list")
    assert without.returncode == 1 and "UNAUTHENTICATED" in without.stderr and "ROUTEMESH_API_KEY" in without.stderr
    assert "Traceback" not in without.stderr
    admin = make_key(mesh, "admin")
    listed = cli(mesh, admin, "keys", "list")
    assert listed.returncode == 0 and "tenant ops" in listed.stdout, listed.stderr
    env_telemetry = ("--telemetry", mesh.layout.address("telemetry"))
    refused_top = cli(mesh, None, "top", "--once", *env_telemetry)
    assert refused_top.returncode == 1 and "needs an admin credential" in refused_top.stderr
    assert "unreachable" not in refused_top.stderr
    top = cli(mesh, admin, "top", "--once", *env_telemetry)
    assert top.returncode == 0 and "routemesh top" in top.stdout, top.stderr
    shown = cli(mesh, admin, "policy", "show")
    assert shown.returncode == 0 and '"models"' in shown.stdout, shown.stderr
    assert cli(mesh, None, "policy", "show").returncode == 1
