"""Telemetry as the router calls it for feedback: one RecordFeedback per caller's feedback, errors relayed."""

from __future__ import annotations

import grpc

from routemesh.client import RoutemeshError as ClientError
from routemesh.common.channels import TracedChannel, call_timeout, open_channel
from routemesh.common.errors import LedgerUnavailable, RoutemeshError
from routemesh.v1 import common_pb2, telemetry_pb2, telemetry_pb2_grpc

TIMEOUT_S = 5.0


def relayed(exc: grpc.aio.AioRpcError) -> RoutemeshError:
    """Telemetry's error as the router's caller sees it: the same code, reason and field problems.

    A telemetry that does not answer is LEDGER_UNAVAILABLE (the caller may retry), not telemetry's transport text.
    """
    parsed = ClientError.from_rpc_error(exc)  # the client library's reading of routemesh's rich statuses
    if not parsed.reason:
        return LedgerUnavailable(f"telemetry, which keeps the ledger, did not answer ({exc.code().name}); "
                                 "retry later", retry_after_s=1.0)
    error = RoutemeshError(parsed.message or parsed.reason, reason=parsed.reason, metadata=parsed.metadata,
                           field_violations=parsed.field_violations)
    error.code = parsed.code
    return error


class FeedbackClient:
    """RecordFeedback calls to telemetry over one channel; start() inside the running loop."""

    def __init__(self, address: str):
        self.address = address
        self._channel: TracedChannel | None = None
        self._stub: telemetry_pb2_grpc.TelemetryServiceStub | None = None

    def start(self) -> None:
        self._channel = open_channel(self.address)
        self._stub = telemetry_pb2_grpc.TelemetryServiceStub(self._channel)

    async def stop(self) -> None:
        if self._channel is not None:
            await self._channel.close()

    async def record(self, feedback: common_pb2.Feedback, tenant: str) -> common_pb2.FeedbackReceipt:
        assert self._stub is not None, "start() first"
        try:
            response = await self._stub.RecordFeedback(
                telemetry_pb2.RecordFeedbackRequest(feedback=feedback, tenant=tenant),
                timeout=call_timeout(TIMEOUT_S))
        except grpc.aio.AioRpcError as exc:
            raise relayed(exc) from None
        return response.receipt
