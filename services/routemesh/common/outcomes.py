"""How requests, attempts and circuit breakers end up: the proto's enums as Python enums, one definition."""

from __future__ import annotations

from enum import IntEnum
from typing import Self


class ProtoEnum(IntEnum):
    """An enum whose members are a proto enum's, prefix dropped, numbers kept (tests/unit/test_outcomes.py).

    Members are ints equal to the proto's values, so a proto field takes a member as it is and
    `FinishStatus(value)` reads one back. `label` is the lowercase name spans, logs and the CLI show.
    """

    def __init__(self, *_: object) -> None:
        # Computed once per member: labels are read on every attempt.
        self._label = self._name_.lower()

    @property
    def label(self) -> str:
        return self._label

    @classmethod
    def from_proto(cls, value: int) -> Self | int:
        """The member for a proto value, or the plain int when a newer peer sent one this build lacks."""
        try:
            return cls(value)
        except ValueError:
            return int(value)

    @classmethod
    def label_of(cls, value: int) -> str:
        """The label of a proto value; the number itself for one this build lacks."""
        member = cls.from_proto(value)
        return member.label if isinstance(member, cls) else str(member)


class FinishStatus(ProtoEnum):
    """How a whole request ended (routemesh.v1.FinishStatus)."""

    UNSPECIFIED = 0
    COMPLETE = 1
    LENGTH = 2
    TRUNCATED_UPSTREAM = 3
    FAILED = 4
    CONTENT_FILTER = 5
    CANCELLED = 6
    CONTINUED = 7
    TOOL_CALLS = 8


# Requests that failed; UNSPECIFIED is what a router reports for one that failed before its first token.
REQUEST_ERROR_STATUSES = frozenset({FinishStatus.UNSPECIFIED, FinishStatus.TRUNCATED_UPSTREAM, FinishStatus.FAILED})


class AttemptOutcome(ProtoEnum):
    """How one try of one candidate model ended (routemesh.v1.AttemptOutcome)."""

    UNSPECIFIED = 0
    SUCCESS = 1
    RATE_LIMITED = 2
    UPSTREAM_ERROR = 3
    CONNECT_ERROR = 4
    TIMEOUT = 5
    TRUNCATED = 6
    CANCELLED = 7
    CONFIG_ERROR = 8
    HEDGE_LOST = 9
    CIRCUIT_OPEN = 10
    RETRY_BUDGET_EXHAUSTED = 11


class ObservationPhase(ProtoEnum):
    """Whether an observation opens or closes an attempt (routemesh.v1.ObservationPhase)."""

    UNSPECIFIED = 0
    STARTED = 1
    FINISHED = 2


class CircuitState(ProtoEnum):
    """A circuit breaker's state (routemesh.v1.CircuitState)."""

    UNSPECIFIED = 0
    CLOSED = 1
    OPEN = 2
    HALF_OPEN = 3
