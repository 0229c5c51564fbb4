"""A provider going down at steady load: the breaker opens within 5 failures and there is no retry storm."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator

import grpc
import pytest
import yaml

from routemesh.client import AsyncRouterClient
from routemesh.common.policy import load_default_policy_text
from routemesh.mesh import Mesh, MeshLayout
from routemesh.v1 import common_pb2, telemetry_pb2, telemetry_pb2_grpc
from tests.integration.conftest import SimAdmin

pytestmark = [pytest.mark.chaos, pytest.mark.integration]
RATE_PER_S = 25
SECONDS = 4.0


@pytest.fixture(scope="module")
def breaker_mesh(tmp_path_factory) -> Iterator[Mesh]:
    doc = yaml.safe_load(load_default_policy_text())
    doc["routes"]["steady"] = {"strategy": "ordered", "models": ["fast-cheap"], "fallbacks": ["balanced"],
                               "reliability": {"max_tries_per_model": 3}}
    policy = tmp_path_factory.mktemp("breaker") / "policy.yaml"
    policy.write_text(yaml.safe_dump(doc))
    mesh = Mesh(MeshLayout.free(), policy=str(policy), sim_time_scale=0.05,
                log_dir=tmp_path_factory.mktemp("breaker-logs"))
    mesh.start()
    yield mesh
    mesh.stop()


async def steady_load(address: str, on_time) -> list:
    results = []
    async with AsyncRouterClient(address, timeout=30) as client:
        tasks = []
        started = time.monotonic()
        for i in range(int(RATE_PER_S * SECONDS)):
            await asyncio.sleep(max(0.0, started + i / RATE_PER_S - time.monotonic()))
            await on_time(time.monotonic() - started)
            tasks.append(asyncio.create_task(client.complete(f"status check {i}", model="steady", max_tokens=8)))
        results = await asyncio.gather(*tasks)
    return results


def test_provider_down_at_steady_load(breaker_mesh):
    sim = SimAdmin(breaker_mesh.layout.sim_url)
    down = {"done": False}

    async def outage_at_one_second(elapsed: float) -> None:
        if elapsed >= 1.0 and not down["done"]:
            down["done"] = True
            await asyncio.to_thread(sim.patch, "sim-fast", outage=True)

    try:
        results = asyncio.run(steady_load(breaker_mesh.layout.address("router"), outage_at_one_second))
        stats = sim.stats()["models"]
    finally:
        sim.reset()
    requests = len(results)
    assert all(r.final.status in (common_pb2.FINISH_STATUS_COMPLETE, common_pb2.FINISH_STATUS_LENGTH)
               for r in results), "every request is served (by the fallback while the primary is down)"
    failures = stats["sim-fast"]["outcomes"].get("503", 0)
    provider_calls = sum(m["requests"] for m in stats.values())
    served_by = Counter(r.final.model for r in results)
    print(f"\nprovider down at {RATE_PER_S} req/s: {failures} failed calls before the breaker opened; "
          f"{provider_calls} provider calls for {requests} requests ({provider_calls / requests:.2f}x); "
          f"served by {dict(served_by)}")
    sequence = [common_pb2.AttemptOutcome.Name(a.outcome)[16:] for r in results for a in r.final.attempts
                if a.model == "fast-cheap" and a.outcome != common_pb2.ATTEMPT_OUTCOME_SUCCESS]
    # Five consecutive failures trip the executor's breaker; attempts already in flight at that moment (at
    # this load on two cores, one or two) still fail, so the provider sees at most 5 + 2 failing calls.
    assert failures <= 5 + 2, (failures, sequence)
    assert provider_calls <= 1.2 * requests
    with grpc.insecure_channel(breaker_mesh.layout.address("telemetry")) as channel:
        snap = telemetry_pb2_grpc.TelemetryServiceStub(channel).GetSnapshot(
            telemetry_pb2.GetSnapshotRequest(models=["fast-cheap"]), timeout=2)
    assert snap.models[0].circuit_state == telemetry_pb2.CIRCUIT_STATE_OPEN
