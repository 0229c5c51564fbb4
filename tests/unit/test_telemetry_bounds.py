"""Telemetry's bounds: observations only for the policy's models (parked through a rollout), bounded errors."""

from __future__ import annotations

import logging
import math

import grpc
import pytest
import yaml

from routemesh.common.policy import PolicyVersion, canonical_json, digest, parse_policy
from routemesh.common.policy_watch import PolicyHolder
from routemesh.telemetry.policy_scope import PARK_S, PARKED_MODELS, PARKED_PER_MODEL, PolicyScopedStore
from routemesh.telemetry.servicer import LISTED_VIOLATIONS, MAX_OBSERVATIONS_PER_REPORT, MAX_REQUESTED_MODELS
from routemesh.telemetry.store import InMemoryHealthStore, ObservationRecord
from routemesh.v1 import common_pb2, control_pb2, telemetry_pb2
from tests.unit.test_telemetry_service import field_violations, observation, running_telemetry

NOW = 1_700_000_000_000


def policy_message(version: int, models: list[str]) -> control_pb2.Policy:
    text = canonical_json(parse_policy(yaml.safe_dump({
        "providers": {"p": {"base_url": "http://127.0.0.1:1/v1"}},
        "models": {name: {"provider": "p", "upstream_model": name, "context_window": 8000,
                          "pricing": {"input_per_mtok": 1, "output_per_mtok": 1}} for name in models},
        "routes": {"auto": {"models": models}},
    })))
    return control_pb2.Policy(version=version, digest=digest(text), policy_json=text)


def holder_of(*models: str) -> PolicyHolder[PolicyVersion]:
    holder: PolicyHolder[PolicyVersion] = PolicyHolder()
    if models:
        assert holder.apply(policy_message(1, list(models)))
    return holder


def finished(model: str, ts: int = NOW - 1000, ttft: float = 50.0) -> ObservationRecord:
    return ObservationRecord(model=model, timestamp_ms=ts, ttft_ms=ttft)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def scoped(holder: PolicyHolder[PolicyVersion]) -> tuple[PolicyScopedStore, InMemoryHealthStore, Clock]:
    inner = InMemoryHealthStore(cache_ttl_s=0)
    clock = Clock()
    return PolicyScopedStore(inner, holder, clock=clock), inner, clock


async def test_only_the_policys_models_reach_the_store():
    store, inner, _ = scoped(holder_of("a", "b"))
    await store.record([finished("a"), finished("made-up"), finished("b"), finished("made-up-2")])
    assert await inner.seen_models(NOW) == ["a", "b"]
    stats = await store.snapshot(["a", "made-up"], NOW)
    assert (stats["a"].samples, stats["made-up"].samples) == (1, 0)
    assert store.parked == 2 and store.dropped == 0


async def test_a_model_added_by_a_rollout_keeps_its_first_reports():
    """An executor may run a new model before telemetry's watch delivers the version that names it."""
    holder = holder_of("a")
    store, inner, _ = scoped(holder)
    await store.record([finished("new", NOW - 3000 + i, ttft=10.0 * (i + 1)) for i in range(5)])
    assert await inner.seen_models(NOW) == []
    assert holder.apply(policy_message(2, ["a", "new"]))
    stats = await store.snapshot(["new"], NOW)  # the next read records what waited, with its own timestamps
    assert stats["new"].samples == 5 and stats["new"].last_observation_ms == NOW - 3000 + 4
    assert store.parked == 0 and store.dropped == 0


async def test_reports_before_the_first_policy_are_kept_for_it():
    holder = holder_of()
    store, inner, _ = scoped(holder)
    await store.record([finished("a")])
    assert await inner.seen_models(NOW) == []
    assert holder.apply(policy_message(1, ["a"]))
    await store.record([finished("a")])
    assert (await store.snapshot(["a"], NOW))["a"].samples == 2


async def test_a_name_no_policy_names_is_dropped_counted_and_logged(caplog):
    store, inner, clock = scoped(holder_of("a"))
    with caplog.at_level(logging.WARNING, logger="routemesh.telemetry.policy_scope"):
        await store.record([finished("typo-model") for _ in range(3)])
        clock.now += PARK_S - 1
        await store.record([finished("a")])
        assert store.dropped == 0, "still waiting for a policy naming it"
        clock.now += 2
        await store.record([finished("a")])
    assert store.dropped_by_reason["never named"] == store.dropped == 3 and store.parked == 0
    [warning] = [r.getMessage() for r in caplog.records]
    assert "3 never named" in warning and "'typo-model'" in warning and "policy version 1" in warning
    assert await inner.seen_models(NOW) == ["a"]


async def test_a_flood_of_made_up_names_costs_a_bounded_amount(caplog):
    store, inner, _ = scoped(holder_of("a"))
    with caplog.at_level(logging.WARNING, logger="routemesh.telemetry.policy_scope"):
        for start in range(0, 50_000, 1000):
            await store.record([finished(f"made-up-{start + i}") for i in range(1000)])
        await store.record([finished("made-up-0") for _ in range(PARKED_PER_MODEL + 50)])
    assert store.parked <= PARKED_MODELS * PARKED_PER_MODEL
    assert store.dropped == 50_000 - PARKED_MODELS + 51  # the oldest of a full name goes first (and the first)
    assert len(caplog.records) == 1
    assert await inner.seen_models(NOW) == []
    assert list(inner._models) == []


# ---- over gRPC: bounded batches and errors ------------------------------------------------------------


@pytest.fixture
async def telemetry():
    async with running_telemetry(InMemoryHealthStore(cache_ttl_s=0)) as started:
        yield started


async def test_a_report_beyond_the_batch_bound_is_invalid_naming_the_field(telemetry):
    stub, _ = telemetry
    too_many = [observation("strong")] * (MAX_OBSERVATIONS_PER_REPORT + 1)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Report(telemetry_pb2.ReportRequest(observations=too_many))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(caught.value) == ["observations"]


async def test_many_bad_observations_are_listed_up_to_the_bound(telemetry):
    stub, _ = telemetry
    bad = [observation("strong", ttft=math.nan)] * 5000
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Report(telemetry_pb2.ReportRequest(observations=bad))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert len(field_violations(caught.value)) == LISTED_VIOLATIONS
    assert "5000 invalid field(s)" in caught.value.details()
    assert sum(len(k) + len(v) for k, v in caught.value.trailing_metadata()) < 4096


async def test_a_snapshot_naming_too_many_models_is_invalid(telemetry):
    stub, policy = telemetry
    names = [f"m{i}" for i in range(MAX_REQUESTED_MODELS + len(policy.models) + 1)]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.GetSnapshot(telemetry_pb2.GetSnapshotRequest(models=names))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(caught.value) == ["models"]
    snapshot = await stub.GetSnapshot(telemetry_pb2.GetSnapshotRequest(models=names[:-1]))
    assert len(snapshot.models) == len(names) - 1


async def test_made_up_models_reported_over_grpc_stay_out_of_the_snapshot(telemetry):
    stub, policy = telemetry
    made_up = [observation(f"made-up-{i}", outcome=common_pb2.ATTEMPT_OUTCOME_SUCCESS, ttft=5.0)
               for i in range(5000)]
    reply = await stub.Report(telemetry_pb2.ReportRequest(observations=made_up + [observation("strong", ttft=9.0)]))
    assert reply.accepted == 5001
    snapshot = await stub.GetSnapshot(telemetry_pb2.GetSnapshotRequest())
    assert {health.model for health in snapshot.models} == set(policy.models)
    assert {h.model: h.samples for h in snapshot.models}["strong"] == 1
