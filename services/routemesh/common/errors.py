"""Domain errors and their mapping to gRPC status codes with google.rpc details."""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2

ERROR_DOMAIN = "routemesh.dev"
# A status travels in the response trailers: however many problems a request has (a million messages with a bad
# role), the caller gets the first few and a count, and the message is cut, so an error stays a few KB.
MAX_FIELD_VIOLATIONS = 20
MAX_MESSAGE_CHARS = 2000


class RoutemeshError(Exception):
    """Base of errors a caller may see; `reason` is a stable UPPER_SNAKE identifier."""

    code = grpc.StatusCode.INTERNAL
    reason = "INTERNAL"

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        metadata: dict[str, str] | None = None,
        field_violations: list[tuple[str, str]] | None = None,
        retry_after_s: float | None = None,
    ):
        if len(message) > MAX_MESSAGE_CHARS:
            message = message[:MAX_MESSAGE_CHARS] + f"... ({len(message) - MAX_MESSAGE_CHARS:,} more characters)"
        super().__init__(message)
        self.message = message
        if reason:
            self.reason = reason
        self.metadata = dict(metadata or {})
        violations = list(field_violations or [])
        if len(violations) > MAX_FIELD_VIOLATIONS:
            more = len(violations) - MAX_FIELD_VIOLATIONS
            violations = [*violations[:MAX_FIELD_VIOLATIONS], ("", f"{more:,} more problem(s) not listed")]
        self.field_violations = violations
        self.retry_after_s = retry_after_s

    def to_status(self) -> status_pb2.Status:
        """The google.rpc.Status carrying ErrorInfo (and BadRequest when fields are named)."""
        details = []
        info = error_details_pb2.ErrorInfo(reason=self.reason, domain=ERROR_DOMAIN, metadata=self.metadata)
        packed = any_pb2.Any()
        packed.Pack(info)
        details.append(packed)
        if self.field_violations:
            bad = error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(field=f, description=d)
                    for f, d in self.field_violations
                ]
            )
            packed = any_pb2.Any()
            packed.Pack(bad)
            details.append(packed)
        if self.retry_after_s is not None:
            retry = error_details_pb2.RetryInfo()
            retry.retry_delay.FromMilliseconds(int(self.retry_after_s * 1000))
            packed = any_pb2.Any()
            packed.Pack(retry)
            details.append(packed)
        return status_pb2.Status(code=self.code.value[0], message=self.message, details=details)


class InvalidRequest(RoutemeshError):
    """The request is malformed; field_violations say which fields."""

    code = grpc.StatusCode.INVALID_ARGUMENT
    reason = "INVALID_REQUEST"


class MessageTooLarge(RoutemeshError):
    """A request message above the size its method accepts (common.interceptors.MAX_REQUEST_BYTES)."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    reason = "MESSAGE_TOO_LARGE"


class Unauthenticated(RoutemeshError):
    """No API key, or one that is unknown, wrong, revoked or expired (keys required by the router)."""

    code = grpc.StatusCode.UNAUTHENTICATED
    reason = "INVALID_API_KEY"


class AdminRequired(RoutemeshError):
    """An admin RPC without an admin credential, on a service that requires one (common.admin)."""

    code = grpc.StatusCode.UNAUTHENTICATED
    reason = "ADMIN_REQUIRED"


class LedgerNotConfigured(RoutemeshError):
    """Feedback without an outcome ledger (telemetry runs without --ledger-url)."""

    code = grpc.StatusCode.FAILED_PRECONDITION
    reason = "LEDGER_NOT_CONFIGURED"


class LedgerUnavailable(RoutemeshError):
    """The ledger's database (or telemetry, which holds it) does not answer now."""

    code = grpc.StatusCode.UNAVAILABLE
    reason = "LEDGER_UNAVAILABLE"


class FeedbackExists(RoutemeshError):
    """A second feedback for one decision."""

    code = grpc.StatusCode.ALREADY_EXISTS
    reason = "FEEDBACK_EXISTS"


class KeyNotAllowed(RoutemeshError):
    """The request's API key may not use the model or route it names."""

    code = grpc.StatusCode.PERMISSION_DENIED
    reason = "KEY_NOT_ALLOWED"


class CallerNotAllowed(RoutemeshError):
    """A mesh identity calling a method it has no business with (common.interceptors.CALLERS)."""

    code = grpc.StatusCode.PERMISSION_DENIED
    reason = "CALLER_NOT_ALLOWED"


class NotFound(RoutemeshError):
    """A named model or route does not exist."""

    code = grpc.StatusCode.NOT_FOUND
    reason = "NOT_FOUND"


class NoEligibleModel(RoutemeshError):
    """No candidate model can serve the request; metadata names why each was rejected."""

    code = grpc.StatusCode.FAILED_PRECONDITION
    reason = "NO_ELIGIBLE_MODEL"


class BudgetExhausted(RoutemeshError):
    """A budget cap would be exceeded (or cannot be checked and budgets fail closed)."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    reason = "BUDGET_EXHAUSTED"


class RateLimited(RoutemeshError):
    """A requests- or tokens-per-minute limit has no headroom; RetryInfo says when to retry."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    reason = "RATE_LIMITED"


class DeadlineExceeded(RoutemeshError):
    """The caller's deadline passed before an answer started."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED
    reason = "DEADLINE_EXCEEDED"


class UpstreamUnavailable(RoutemeshError):
    """Every candidate failed before the first token."""

    code = grpc.StatusCode.UNAVAILABLE
    reason = "ALL_CANDIDATES_FAILED"


class NotReady(RoutemeshError):
    """The service has no policy yet (control plane not reached since start)."""

    code = grpc.StatusCode.UNAVAILABLE
    reason = "NO_POLICY"


class PolicySkew(RoutemeshError):
    """The executor does not hold the policy version a plan was made with (yet): the router asks again shortly."""

    code = grpc.StatusCode.FAILED_PRECONDITION
    reason = "POLICY_SKEW"


class RelayedError(RoutemeshError):
    """A downstream service's rich status, passed on to our caller unchanged."""

    def __init__(self, status: status_pb2.Status):
        super().__init__(status.message)
        self.status = status
        self.code = status_code_of(status)
        info = error_info(list(status.details))
        self.reason = info.reason if info else "UPSTREAM"

    def to_status(self) -> status_pb2.Status:
        return self.status


def status_code_of(status: status_pb2.Status) -> grpc.StatusCode:
    """The grpc.StatusCode for a google.rpc code number."""
    for code in grpc.StatusCode:
        if code.value[0] == status.code:
            return code
    return grpc.StatusCode.UNKNOWN


def error_info(details: list[any_pb2.Any]) -> error_details_pb2.ErrorInfo | None:
    """The first ErrorInfo among status details, if any."""
    for detail in details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info
    return None


__all__ = [
    "ERROR_DOMAIN",
    "BudgetExhausted",
    "DeadlineExceeded",
    "RateLimited",
    "InvalidRequest",
    "NoEligibleModel",
    "NotFound",
    "NotReady",
    "PolicySkew",
    "RoutemeshError",
    "UpstreamUnavailable",
    "RelayedError",
    "error_info",
    "status_code_of",
]
