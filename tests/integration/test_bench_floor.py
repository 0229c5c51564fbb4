"""The bench's floor (routemesh.bench.floor): three bare gRPC processes relaying the simulated provider's answer.

`test_bench_smoke` measures it as an arm beside the mesh; here its processes are checked on their own: the
answer arrives whole with and without the classifier hop, and a process that cannot start is an error that
says why, not a hang.
"""

from __future__ import annotations

import socket
import time

import pytest

from routemesh.bench.floor import Floor, FloorError
from routemesh.bench.workload import UPSTREAM_MODEL, ThroughArm
from routemesh.mesh import Mesh, MeshLayout

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    mesh = Mesh(MeshLayout.free(), sim_time_scale=0.0, log_dir=tmp_path_factory.mktemp("floor-sim"))
    mesh.start_service("sim")
    try:
        mesh.wait_healthy("sim", time.monotonic() + 30)
        yield mesh.layout.sim_url
    finally:
        mesh.stop(timeout_s=10)


@pytest.mark.parametrize("classifier", [True, False], ids=["classifier-hop", "no-classifier-hop"])
async def test_the_floor_relays_the_whole_answer(sim, classifier):
    floor = Floor(sim, UPSTREAM_MODEL, classifier=classifier)
    floor.start()
    try:
        expected = {"floor-router", "floor-executor"} | ({"floor-classifier"} if classifier else set())
        assert set(floor.pids()) == expected
        arm = ThroughArm(floor.address(), 10, name="floor")
        try:
            samples = [await arm.one(index) for index in range(5)]
        finally:
            await arm.aclose()
        assert all(s.ok and s.tokens > 0 and s.chunks >= 1 and s.ttft_ms > 0 for s in samples), samples
        assert not floor.dead()
    finally:
        floor.stop()
    assert all(process.poll() is not None for process in floor.processes.values())


def test_a_floor_process_that_cannot_listen_is_an_error_with_its_reason(sim):
    floor = Floor(sim, UPSTREAM_MODEL, classifier=False)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", floor.ports["executor"]))  # bound, not listening: nothing answers there either
        try:
            with pytest.raises(FloorError, match="floor executor exited: .*cannot listen on 127.0.0.1"):
                floor.start()
        finally:
            floor.stop()


async def test_requests_fail_rather_than_hang_when_the_classifier_goes_away(sim):
    floor = Floor(sim, UPSTREAM_MODEL)
    floor.start()
    try:
        arm = ThroughArm(floor.address(), 10, name="floor")
        try:
            assert (await arm.one(0)).ok
            floor.processes["classifier"].kill()
            floor.processes["classifier"].wait(5)
            started = time.monotonic()
            sample = await arm.one(1)
            assert not sample.ok and sample.error and time.monotonic() - started < 5, sample
        finally:
            await arm.aclose()
    finally:
        floor.stop()
