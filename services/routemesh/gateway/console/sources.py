"""The console's reads from telemetry and control: deadlines, the operator's credential passed on, short caches.

Several consoles polling every 2 s cost telemetry one call of each kind per second at most: answers are reused
for CACHE_S (the ledger report, a database query, for LEDGER_CACHE_S). The page asks for the policy only
when its version changes, and every 30 s for the audit log.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import grpc

from routemesh.common.channels import open_channel
from routemesh.gateway.errors import RpcDetails
from routemesh.gateway.openai_api import GatewayError
from routemesh.v1 import control_pb2, control_pb2_grpc, telemetry_pb2, telemetry_pb2_grpc

T = TypeVar("T")
CALL_TIMEOUT_S = 3.0
LEDGER_TIMEOUT_S = 12.0
CACHE_S = 1.0
LEDGER_CACHE_S = 5.0
RECENT_LIMIT = 500
Metadata = Sequence[tuple[str, str]]


def console_error(service: str, address: str, exc: grpc.RpcError) -> GatewayError:
    """A failed read as the console's JSON error: what failed and where, never a trace."""
    d = RpcDetails(exc)
    if d.code == grpc.StatusCode.UNAVAILABLE and not d.reason:
        return GatewayError(503, f"{service} at {address} does not answer ({d.message or 'unavailable'})",
                            type="service_unavailable", code=f"{service}_unavailable")
    if d.code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return GatewayError(504, f"{service} at {address} did not answer in time", type="timeout",
                            code="deadline_exceeded")
    if d.code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
        return GatewayError(401 if d.code == grpc.StatusCode.UNAUTHENTICATED else 403,
                            f"{service} refused the console's read: {d.message}", type="authentication_error",
                            code=d.reason.lower() or None)
    if d.code == grpc.StatusCode.UNAVAILABLE:
        return GatewayError(503, f"{service}: {d.message}", type="service_unavailable", code=d.reason.lower())
    if d.code in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN):
        return GatewayError(502, f"{service} failed ({d.code.name}); its log has the details", type="server_error",
                            code="upstream_error")
    return GatewayError(502, f"{service}: {d.code.name}: {d.message}", type="server_error",
                        code=d.reason.lower() or d.code.name.lower())


class _Cached:
    """One answer kept for `ttl_s`."""

    def __init__(self, ttl_s: float):
        self.ttl_s = ttl_s
        self._value: Any = None
        self._at = -float("inf")

    async def get(self, fetch: Callable[[], Awaitable[T]]) -> T:
        if time.monotonic() - self._at < self.ttl_s:
            return self._value
        value = await fetch()
        self._value, self._at = value, time.monotonic()
        return value


class ConsoleSources:
    """Telemetry's snapshot, recent requests, alerts and ledger report; control's policy versions and audit log."""

    def __init__(self, telemetry_address: str, control_address: str):
        self.telemetry_address = telemetry_address
        self.control_address = control_address
        self._telemetry_channel = open_channel(telemetry_address)
        self._control_channel = open_channel(control_address)
        self.telemetry = telemetry_pb2_grpc.TelemetryServiceStub(self._telemetry_channel)
        self.control = control_pb2_grpc.ControlPlaneServiceStub(self._control_channel)
        self._snapshot, self._recent, self._alerts = _Cached(CACHE_S), _Cached(CACHE_S), _Cached(CACHE_S)
        self._changes, self._ledger = _Cached(CACHE_S), _Cached(LEDGER_CACHE_S)

    async def _call(self, service: str, call: Callable[[], Awaitable[T]]) -> T:
        try:
            return await call()
        except grpc.RpcError as exc:
            address = self.telemetry_address if service == "telemetry" else self.control_address
            raise console_error(service, address, exc) from None

    async def snapshot(self, metadata: Metadata) -> telemetry_pb2.GetSnapshotResponse:
        return await self._snapshot.get(lambda: self._call("telemetry", lambda: self.telemetry.GetSnapshot(
            telemetry_pb2.GetSnapshotRequest(), timeout=CALL_TIMEOUT_S, metadata=metadata)))

    async def recent(self, metadata: Metadata) -> list[telemetry_pb2.RequestSummary]:
        async def fetch() -> list[telemetry_pb2.RequestSummary]:
            reply = await self._call("telemetry", lambda: self.telemetry.ListRecentRequests(
                telemetry_pb2.ListRecentRequestsRequest(limit=RECENT_LIMIT), timeout=CALL_TIMEOUT_S,
                metadata=metadata))
            return list(reply.requests)

        return await self._recent.get(fetch)

    async def one_request(self, decision_id: str, metadata: Metadata) -> telemetry_pb2.RequestSummary | None:
        reply = await self._call("telemetry", lambda: self.telemetry.ListRecentRequests(
            telemetry_pb2.ListRecentRequestsRequest(limit=1, decision_id=decision_id), timeout=CALL_TIMEOUT_S,
            metadata=metadata))
        return reply.requests[0] if reply.requests else None

    async def alerts(self, metadata: Metadata) -> telemetry_pb2.ListAlertsResponse:
        return await self._alerts.get(lambda: self._call("telemetry", lambda: self.telemetry.ListAlerts(
            telemetry_pb2.ListAlertsRequest(resolved_limit=20), timeout=CALL_TIMEOUT_S, metadata=metadata)))

    async def ledger_report(self, metadata: Metadata) -> str | None:
        """The report's JSON, or None when telemetry keeps no ledger (LEDGER_NOT_CONFIGURED)."""
        async def fetch() -> str | None:
            try:
                reply = await self.telemetry.GetLedgerReport(telemetry_pb2.GetLedgerReportRequest(),
                                                              timeout=LEDGER_TIMEOUT_S, metadata=metadata)
            except grpc.RpcError as exc:
                if RpcDetails(exc).reason == "LEDGER_NOT_CONFIGURED":
                    return None
                raise console_error("telemetry", self.telemetry_address, exc) from None
            return reply.report_json

        return await self._ledger.get(fetch)

    async def policy(self, version: int, metadata: Metadata) -> control_pb2.Policy | None:
        """Version `version` (0: the one in force), or None when control does not keep it (any more)."""
        try:
            reply = await self.control.GetPolicy(control_pb2.GetPolicyRequest(version=version),
                                                 timeout=CALL_TIMEOUT_S, metadata=metadata)
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                return None
            raise console_error("control", self.control_address, exc) from None
        return reply.policy

    async def policy_changes(self, metadata: Metadata) -> list[control_pb2.PolicyChange]:
        async def fetch() -> list[control_pb2.PolicyChange]:
            reply = await self._call("control", lambda: self.control.ListPolicyChanges(
                control_pb2.ListPolicyChangesRequest(limit=20), timeout=CALL_TIMEOUT_S, metadata=metadata))
            return list(reply.changes)

        return await self._changes.get(fetch)

    async def close(self) -> None:
        await self._telemetry_channel.close()
        await self._control_channel.close()
