"""The outcome enums against the proto's: same members, same numbers, so a proto change cannot drift silently."""

from __future__ import annotations

import pytest
from google.protobuf.descriptor import EnumDescriptor

from routemesh.common import outcomes
from routemesh.common.outcomes import AttemptOutcome, CircuitState, FinishStatus, ObservationPhase, ProtoEnum
from routemesh.v1 import common_pb2, telemetry_pb2

MIRRORS: dict[type[ProtoEnum], EnumDescriptor] = {
    FinishStatus: common_pb2.FinishStatus.DESCRIPTOR,
    AttemptOutcome: common_pb2.AttemptOutcome.DESCRIPTOR,
    ObservationPhase: telemetry_pb2.ObservationPhase.DESCRIPTOR,
    CircuitState: telemetry_pb2.CircuitState.DESCRIPTOR,
}


def proto_members(descriptor: EnumDescriptor) -> dict[str, int]:
    # Buf's STANDARD lint makes every value carry the enum's name in UPPER_SNAKE_CASE as its prefix.
    prefix = "".join(f"_{c}" if c.isupper() else c.upper() for c in descriptor.name).lstrip("_") + "_"
    assert all(v.name.startswith(prefix) for v in descriptor.values), f"{descriptor.full_name}: prefix {prefix}"
    return {v.name.removeprefix(prefix): v.number for v in descriptor.values}


@pytest.mark.parametrize("enum", MIRRORS, ids=lambda e: e.__name__)
def test_every_enum_has_exactly_the_proto_members(enum: type[ProtoEnum]):
    assert {m.name: m.value for m in enum} == proto_members(MIRRORS[enum])


def test_every_enum_of_the_module_is_checked_against_the_proto():
    declared = {v for v in vars(outcomes).values()
                if isinstance(v, type) and issubclass(v, ProtoEnum) and v is not ProtoEnum}
    assert declared == set(MIRRORS)


def test_members_are_the_proto_ints_both_ways():
    attempt = common_pb2.Attempt(outcome=AttemptOutcome.TIMEOUT)
    assert attempt.outcome == common_pb2.ATTEMPT_OUTCOME_TIMEOUT
    assert AttemptOutcome(attempt.outcome) is AttemptOutcome.TIMEOUT
    health = telemetry_pb2.ModelHealth(circuit_state=CircuitState.HALF_OPEN)
    assert CircuitState(health.circuit_state) is CircuitState.HALF_OPEN


def test_labels_are_the_lowercase_names_spans_and_the_cli_show():
    assert FinishStatus.TOOL_CALLS.label == "tool_calls"
    assert AttemptOutcome.RETRY_BUDGET_EXHAUSTED.label == "retry_budget_exhausted"
    assert CircuitState.HALF_OPEN.label == "half_open"


def test_values_from_a_newer_peer_stay_plain_ints():
    assert FinishStatus.from_proto(common_pb2.FINISH_STATUS_TOOL_CALLS) is FinishStatus.TOOL_CALLS
    unknown = FinishStatus.from_proto(99)
    assert unknown == 99 and type(unknown) is int
    assert FinishStatus.label_of(99) == "99"
    assert AttemptOutcome.label_of(common_pb2.ATTEMPT_OUTCOME_HEDGE_LOST) == "hedge_lost"
