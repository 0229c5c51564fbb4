"""gRPC statuses of the router, with their google.rpc details, as OpenAI-shaped HTTP errors."""

from __future__ import annotations

import math
from collections.abc import Callable

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from routemesh.gateway.openai_api import GatewayError


class RpcDetails:
    """The details routemesh attaches to a status: ErrorInfo, BadRequest, RetryInfo."""

    def __init__(self, error: grpc.RpcError):
        self.code: grpc.StatusCode = error.code()
        self.message: str = error.details() or ""
        self.reason = ""
        self.metadata: dict[str, str] = {}
        self.violations: list[tuple[str, str]] = []
        self.retry_after_s: float | None = None
        try:
            status = rpc_status.from_call(error)
        except ValueError:
            # A status whose message disagrees with its details: keep the plain code and message.
            status = None
        for detail in status.details if status else ():
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                self.reason, self.metadata = info.reason, dict(info.metadata)
            elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad = error_details_pb2.BadRequest()
                detail.Unpack(bad)
                self.violations = [(v.field, v.description) for v in bad.field_violations]
            elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
                retry = error_details_pb2.RetryInfo()
                detail.Unpack(retry)
                self.retry_after_s = retry.retry_delay.ToMilliseconds() / 1000


def http_error(error: grpc.RpcError, param_of: Callable[[str], str] = lambda f: f) -> GatewayError:
    """The HTTP error for a router status; `param_of` maps router field names to OpenAI parameters."""
    d = RpcDetails(error)
    code, reason = d.code, d.reason
    param = param_of(d.violations[0][0]) if d.violations else None
    reason_code = reason.lower() or None
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        # Name each field as the caller spelled it (max_completion_tokens, routemesh.strategy...).
        named = "; ".join(f"{param_of(f)}: {why}" for f, why in d.violations if why not in d.message)
        return GatewayError(400, f"{d.message} ({named})" if named else d.message, param=param, code="invalid_value")
    if code == grpc.StatusCode.NOT_FOUND:
        if reason in ("UNKNOWN_MODEL", "NOT_FOUND", ""):
            return GatewayError(404, d.message, param=param or "model", code="model_not_found")
        return GatewayError(404, d.message, param=param, code=reason_code)
    if code == grpc.StatusCode.FAILED_PRECONDITION:
        return GatewayError(400, d.message, param=param,
                            code="no_eligible_model" if reason in ("NO_ELIGIBLE_MODEL", "") else reason_code)
    if code == grpc.StatusCode.ALREADY_EXISTS:
        return GatewayError(409, d.message, param=param, code=reason_code)
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        headers = {}
        if d.retry_after_s is not None:
            headers["retry-after"] = str(max(1, math.ceil(d.retry_after_s)))
            headers["retry-after-ms"] = str(int(d.retry_after_s * 1000))
        if reason == "BUDGET_EXHAUSTED":
            return GatewayError(429, d.message, type="insufficient_quota", code="insufficient_quota",
                                headers=headers)
        return GatewayError(429, d.message, type="rate_limit_error", code="rate_limit_exceeded", headers=headers)
    if code == grpc.StatusCode.UNAVAILABLE:
        # No details: the router itself could not be reached (a routemesh status always carries ErrorInfo).
        message = d.message if reason else f"the router is unavailable: {d.message}"
        return GatewayError(503, message, type="service_unavailable", code=reason_code or "router_unavailable")
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return GatewayError(504, d.message or "the request took too long", type="timeout",
                            code="deadline_exceeded")
    if code == grpc.StatusCode.UNAUTHENTICATED:
        return GatewayError(401, d.message, type="authentication_error", code=reason_code)
    if code == grpc.StatusCode.PERMISSION_DENIED:
        return GatewayError(403, d.message, type="permission_error", code=reason_code)
    if code == grpc.StatusCode.CANCELLED:
        return GatewayError(499, "the request was cancelled", type="cancelled", code="cancelled")
    # INTERNAL, UNKNOWN and the rest: the router's text may describe internals, so it stays in the logs.
    return GatewayError(500, f"internal error in the router ({code.name})", type="server_error",
                        code=reason_code or code.name.lower())
