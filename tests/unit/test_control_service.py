"""ControlPlaneService over a real in-process gRPC server, and the data-plane PolicyWatcher against it."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import _async as rpc_status_async

from routemesh.common.errors import error_info
from routemesh.common.policy import load_default_policy_text, policy_from_json
from routemesh.common.policy_watch import PolicyHolder, PolicyWatcher
from routemesh.common.serve import RunningServer, create_server
from routemesh.control.main import control_service
from routemesh.control.registry import PolicyRegistry
from routemesh.control.servicer import ControlPlaneServicer
from routemesh.v1 import control_pb2, control_pb2_grpc

DEFAULT_TEXT = load_default_policy_text()
CHEAPER_TEXT = DEFAULT_TEXT.replace("input_per_mtok: 0.10", "input_per_mtok: 0.08", 1)
PRICIER_TEXT = DEFAULT_TEXT.replace("input_per_mtok: 0.10", "input_per_mtok: 0.12", 1)
# Field errors and cross-reference errors are found in two passes (references once fields are valid).
BAD_FIELDS_TEXT = DEFAULT_TEXT.replace(
    "pricing: {input_per_mtok: 3.00", "pricing: {input_per_mtok: -3.00", 1
).replace("task_types: [code]", "task_types: [code, poetry]", 1)
BAD_REFERENCES_TEXT = DEFAULT_TEXT.replace(
    "provider: sim\n    upstream_model: sim-fast", "provider: nope\n    upstream_model: sim-fast"
).replace("fallbacks: [balanced]", "fallbacks: [balancd]", 1)


@dataclass
class Control:
    registry: PolicyRegistry
    servicer: ControlPlaneServicer
    running: RunningServer
    stub: control_pb2_grpc.ControlPlaneServiceStub

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.running.port}"

    def apply(self, text: str, dry_run: bool = False) -> grpc.aio.UnaryUnaryCall:
        request = control_pb2.ApplyPolicyRequest(policy_yaml=text, dry_run=dry_run)
        return self.stub.ApplyPolicy(request, timeout=5)

    def watch(self, known_version: int = 0) -> grpc.aio.UnaryStreamCall:
        current = self.registry.current
        digest = current.digest if current and current.version == known_version else ""
        request = control_pb2.WatchPolicyRequest(known_version=known_version, known_digest=digest, watcher="test")
        return self.stub.WatchPolicy(request, timeout=30)


@pytest.fixture
async def control() -> AsyncIterator[Control]:
    registry = PolicyRegistry()
    registry.load(DEFAULT_TEXT, "test")
    service, servicer = control_service(registry)
    running = await create_server(service, "127.0.0.1:0")
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{running.port}")
    try:
        yield Control(registry, servicer, running, control_pb2_grpc.ControlPlaneServiceStub(channel))
    finally:
        await channel.close()
        await running.server.stop(0)


async def eventually(condition: Callable[[], bool], timeout_s: float = 3.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


async def test_get_policy(control: Control) -> None:
    response = await control.stub.GetPolicy(control_pb2.GetPolicyRequest(), timeout=5)
    current = control.registry.current
    policy = response.policy
    assert (policy.version, policy.digest, policy.source) == (1, current.digest, "test")
    assert response.policy.created_at_ms == current.created_at_ms
    # What the operator reads back names the variable, not its value; the data plane gets the value.
    public = json.loads(response.policy.policy_json)
    assert public["providers"]["sim"]["base_url"].startswith("${ROUTEMESH_SIM_URL")
    assert policy_from_json(current.policy_json) == current.policy
    public["providers"]["sim"]["base_url"] = current.policy.providers["sim"].base_url
    assert policy_from_json(json.dumps(public)) == current.policy


async def test_get_policy_by_version_reads_kept_versions_and_says_which_are_kept(control: Control) -> None:
    await control.apply(CHEAPER_TEXT)
    current = await control.stub.GetPolicy(control_pb2.GetPolicyRequest(), timeout=5)
    before = await control.stub.GetPolicy(control_pb2.GetPolicyRequest(version=1), timeout=5)
    assert (current.policy.version, before.policy.version) == (2, 1)
    assert "0.08" in current.policy.policy_json and "0.08" not in before.policy.policy_json
    assert "${ROUTEMESH_SIM_URL" in before.policy.policy_json  # the operator's view, as for the current one
    for version, code in ((3, grpc.StatusCode.NOT_FOUND), (-1, grpc.StatusCode.INVALID_ARGUMENT)):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await control.stub.GetPolicy(control_pb2.GetPolicyRequest(version=version), timeout=5)
        assert caught.value.code() == code
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await control.stub.GetPolicy(control_pb2.GetPolicyRequest(version=7), timeout=5)
    assert "control keeps the last 20 versions (versions 1 to 2 now)" in caught.value.details()


async def test_get_and_apply_never_return_expanded_values_or_url_passwords(control: Control,
                                                                           monkeypatch) -> None:
    monkeypatch.setenv("ROUTEMESH_POLICY_SIM_URL", "http://canary-host-1234.internal:8080/v1")
    text = DEFAULT_TEXT.replace("${ROUTEMESH_SIM_URL:-http://127.0.0.1:50056/v1}", "${ROUTEMESH_POLICY_SIM_URL}")
    text = text.replace("providers:\n", "providers:\n  other: {api: openai, base_url: 'https://u:pw-canary@x.test/v1'}\n", 1)
    applied = await control.apply(text)
    got = await control.stub.GetPolicy(control_pb2.GetPolicyRequest(), timeout=5)
    for policy in (applied.policy, got.policy):
        assert "canary" not in policy.policy_json and "${ROUTEMESH_POLICY_SIM_URL}" in policy.policy_json
        assert "https://u:***@x.test/v1" in policy.policy_json
    assert "canary-host-1234" in control.registry.current.policy_json  # what WatchPolicy pushes


async def test_watch_sends_current_then_each_applied_version(control: Control) -> None:
    call = control.watch()
    try:
        first = await asyncio.wait_for(call.read(), 3)
        assert first.policy.version == 1
        applied = await control.apply(CHEAPER_TEXT)
        assert (applied.policy.version, applied.changed, applied.policy.source) == (2, True, "api")
        second = await asyncio.wait_for(call.read(), 3)
        assert (second.policy.version, second.policy.digest) == (applied.policy.version, applied.policy.digest)
        assert second.policy.policy_json == control.registry.current.policy_json
    finally:
        call.cancel()
    await eventually(lambda: control.servicer.open_watches == 0)


async def test_watch_skips_the_version_the_watcher_already_has(control: Control) -> None:
    call = control.watch(known_version=1)
    try:
        await asyncio.wait_for(call.initial_metadata(), 3)
        control.registry.load(CHEAPER_TEXT, "test")
        assert (await asyncio.wait_for(call.read(), 3)).policy.version == 2
    finally:
        call.cancel()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (BAD_FIELDS_TEXT, {"models.strong.pricing.input_per_mtok": "greater than or equal to 0",
                           "routes.auto.rules.2.when.task_types": "unknown task type(s) ['poetry']"}),
        (BAD_REFERENCES_TEXT, {"models.fast-cheap.provider": "unknown provider 'nope'",
                               "routes.fast.fallbacks": "unknown model 'balancd'"}),
    ],
    ids=["fields", "references"],
)
async def test_apply_invalid_policy_is_invalid_argument_naming_the_fields(
    control: Control, text: str, expected: dict[str, str]
) -> None:
    call = control.apply(text)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details() == "invalid policy: 2 problem(s)"
    status = await rpc_status_async.from_call(call)
    bad_request = error_details_pb2.BadRequest()
    assert any(detail.Unpack(bad_request) for detail in status.details)
    fields = {v.field: v.description for v in bad_request.field_violations}
    assert set(fields) == set(expected)
    for field, message in expected.items():
        assert message in fields[field]
    assert error_info(list(status.details)).reason == "INVALID_REQUEST"
    assert control.registry.current.version == 1


@pytest.mark.parametrize("text", ["", "  \n", "[1, 2", "just text"])
async def test_apply_empty_or_unparsable_document_names_policy_yaml(control: Control, text: str) -> None:
    call = control.apply(text)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = await rpc_status_async.from_call(call)
    bad_request = error_details_pb2.BadRequest()
    assert any(detail.Unpack(bad_request) for detail in status.details)
    assert [v.field for v in bad_request.field_violations] == ["policy_yaml"]


async def test_dry_run_does_not_change_the_version(control: Control) -> None:
    same = await control.apply(DEFAULT_TEXT, dry_run=True)
    assert (same.policy.version, same.changed) == (0, False)
    other = await control.apply(CHEAPER_TEXT, dry_run=True)
    assert (other.policy.version, other.changed) == (0, True)
    assert control.registry.current.version == 1
    reapplied = await control.apply(DEFAULT_TEXT)
    assert (reapplied.policy.version, reapplied.changed) == (1, False)


async def test_server_stop_ends_idle_watch_streams_promptly(control: Control) -> None:
    call = control.watch(known_version=1)
    await asyncio.wait_for(call.initial_metadata(), 3)
    started = time.monotonic()
    control.servicer.stop()  # what serve() does through Service.on_drain before the grace period
    await asyncio.wait_for(control.running.server.stop(30), 5)
    assert time.monotonic() - started < 2
    assert await call.code() == grpc.StatusCode.OK


async def test_policy_watcher_follows_the_server_and_keeps_the_last_good_policy(control: Control) -> None:
    holder = PolicyHolder()
    watcher = PolicyWatcher(holder, control.address, "router-test")
    watcher.start()
    try:
        await eventually(lambda: holder.current is not None)
        assert (holder.current.version, holder.current.digest) == (1, control.registry.current.digest)

        await control.apply(CHEAPER_TEXT)
        await eventually(lambda: holder.current.version == 2)
        control.registry.load(PRICIER_TEXT, "file")
        await eventually(lambda: holder.current.version == 3)
        assert holder.current.policy.models["fast-cheap"].pricing.input_per_mtok == 0.12

        kept = holder.current
        await control.running.server.stop(1)
        await asyncio.sleep(0.3)
        assert holder.current is kept
        assert not watcher.connected
    finally:
        await watcher.stop()


async def test_watch_sends_the_policy_when_the_version_matches_but_the_digest_does_not(control: Control) -> None:
    # A control plane that restarted counts from version 1 again; the digest tells the policies apart.
    request = control_pb2.WatchPolicyRequest(known_version=1, known_digest="0" * 64, watcher="test")
    call = control.stub.WatchPolicy(request, timeout=30)
    try:
        first = await asyncio.wait_for(call.read(), 3)
        assert first.policy.digest == control.registry.current.digest
    finally:
        call.cancel()
