"""Policy rollouts under load: every plan runs against the version the router made it with, or is told POLICY_SKEW."""

from __future__ import annotations

import asyncio
import json
import copy
import pathlib
import time
from collections.abc import Iterator

import grpc
import pytest
import yaml
from grpc_status import rpc_status

from routemesh.client import AsyncRouterClient
from routemesh.common.errors import error_info
from routemesh.common.policy import load_default_policy_text, parse_policy, policy_from_json
from routemesh.common.policy_schema import Policy
from routemesh.mesh import Mesh, MeshLayout
from routemesh.v1 import common_pb2, control_pb2, control_pb2_grpc, executor_pb2, executor_pb2_grpc, router_pb2
from tests.integration.conftest import REDIS_URL, SIM_TIME_SCALE, SimAdmin, write_atomically

pytestmark = pytest.mark.integration
STREAMS = 64
ROLLOUTS = 5
# A stream's length with the sim slowed as below, and how long each version stays in force: shorter, so
# streams span rollouts.
STREAM_S = 2.0
VERSION_IN_FORCE_S = 0.8
# Between the two control planes loading a version; well inside the router's POLICY_SKEW retries (~1.3 s).
PUSH_GAP_S = 0.3
CONTROL_POLL = ["--poll-interval-s", "0.1"]
ANSWERED = (common_pb2.FINISH_STATUS_COMPLETE, common_pb2.FINISH_STATUS_LENGTH)
PROMPT = "Tell me about lighthouses and their keepers."


def policy_version_text(step: int) -> str:
    """The default policy, changed a little more at each step: fast-cheap's price, and one more model."""
    doc = yaml.safe_load(load_default_policy_text())
    doc["models"]["fast-cheap"]["pricing"]["output_per_mtok"] = 0.40 + 0.25 * step
    for extra in range(1, step + 1):
        doc["models"][f"rollout-{extra}"] = {**copy.deepcopy(doc["models"]["fast-cheap"]),
                                             "description": f"added by step {extra}"}
    text = yaml.safe_dump(doc, sort_keys=False)
    parse_policy(text)
    return text


# The executor here watches a control plane of its own, fed the same policy file a moment before or after the
# router's, so each rollout reaches one side first: when the executor leads, it serves plans made with the
# older version from the versions it keeps; when it lags, it answers POLICY_SKEW and the router asks again.
@pytest.fixture(scope="module")
def policy_files(tmp_path_factory) -> dict[str, pathlib.Path]:
    """The policy file of the router's control plane and of the executor's, with the same first version."""
    folder = tmp_path_factory.mktemp("rollout")
    files = {side: folder / side / "policy.yaml" for side in ("router", "executor")}
    for path in files.values():
        path.parent.mkdir()
        path.write_text(policy_version_text(0))
    return files


@pytest.fixture(scope="module")
def layout() -> MeshLayout:
    return MeshLayout.free()


@pytest.fixture(scope="module")
def executor_control(tmp_path_factory, policy_files, layout) -> Iterator[Mesh]:
    """A control plane of the executor's own (the only service of a layout of its own)."""
    # The policy names the mesh's sim through ROUTEMESH_SIM_URL: both sides must expand it alike.
    control = Mesh(MeshLayout.free(), policy=str(policy_files["executor"]), services=("control",),
                   log_dir=tmp_path_factory.mktemp("executor-control-logs"), extra_args={"control": CONTROL_POLL},
                   extra_env={"ROUTEMESH_SIM_URL": layout.sim_url})
    control.start()
    yield control
    control.stop()


@pytest.fixture(scope="module")
def rollout_mesh(tmp_path_factory, redis_prefix, policy_files, layout, executor_control) -> Iterator[Mesh]:
    mesh = Mesh(layout, policy=str(policy_files["router"]), redis_url=REDIS_URL,
                redis_prefix=redis_prefix + "rollout:", sim_time_scale=SIM_TIME_SCALE,
                log_dir=tmp_path_factory.mktemp("rollout-logs"),
                extra_args={"control": CONTROL_POLL,
                            "executor": ["--control", executor_control.layout.address("control")]})
    mesh.start()
    yield mesh
    mesh.stop()


def skews_logged(mesh: Mesh) -> int:
    return (mesh.log_dir / "executor.log").read_text().count("POLICY_SKEW")


def expected_cost(policy: Policy, final: router_pb2.Final) -> float:
    """What the attempts cost at the prices of `policy`."""
    return sum(policy.models[a.model].estimated_cost(a.usage.input_tokens, a.usage.output_tokens)
               for a in final.attempts)


def priced(message: control_pb2.Policy) -> Policy:
    """The policy GetPolicy shows, for its prices: base URLs a ${VAR} named stay unexpanded there."""
    document = json.loads(message.policy_json)
    for provider in document["providers"].values():
        if provider["base_url"].startswith("${"):
            provider["base_url"] = "http://unexpanded.invalid/v1"
    return policy_from_json(json.dumps(document))


class Rollout:
    """Writes each new version to both control planes' files, the router's first or the executor's first."""

    def __init__(self, files: dict[str, pathlib.Path], router: AsyncRouterClient,
                 controls: dict[str, control_pb2_grpc.ControlPlaneServiceStub]):
        self.files = files
        self.router = router
        self.controls = controls
        self.policies: dict[int, Policy] = {}

    async def policy_after(self, side: str, version: int) -> control_pb2.Policy:
        """The policy of one side's control plane once it is newer than `version`."""
        deadline = time.monotonic() + 10
        request = control_pb2.GetPolicyRequest()
        while (policy := (await self.controls[side].GetPolicy(request, timeout=5)).policy).version <= version:
            assert time.monotonic() < deadline, f"{side} control did not load a version after {version} in 10 s"
            await asyncio.sleep(0.02)
        return policy

    async def step(self, step: int, version: int, first: str) -> int:
        """Roll out the step's version (one side PUSH_GAP_S before the other); return its number."""
        text = policy_version_text(step)
        second = "executor" if first == "router" else "router"
        write_atomically(self.files[first], text)
        leading = await self.policy_after(first, version)
        await asyncio.sleep(PUSH_GAP_S)
        write_atomically(self.files[second], text)
        lagging = await self.policy_after(second, version)
        assert (leading.version, leading.digest) == (lagging.version, lagging.digest), "the sides disagree"
        new = leading.version
        self.policies[new] = priced(leading)
        deadline = time.monotonic() + 10
        while (await self.router.explain(PROMPT)).decision.policy_version < new:
            assert time.monotonic() < deadline, f"the router did not plan with version {new} in 10 s"
            await asyncio.sleep(0.05)
        return new


async def _rollout_under_load(mesh: Mesh, executor_control: Mesh,
                              files: dict[str, pathlib.Path]) -> tuple[list, Rollout, int]:
    addresses = {"router": mesh.layout.address("control"), "executor": executor_control.layout.address("control")}
    channels = {side: grpc.aio.insecure_channel(address) for side, address in addresses.items()}
    async with AsyncRouterClient(mesh.layout.address("router"), timeout=30) as client:
        rollout = Rollout(files, client, {side: control_pb2_grpc.ControlPlaneServiceStub(channel)
                                          for side, channel in channels.items()})
        first = await rollout.policy_after("router", 0)
        rollout.policies[first.version] = priced(first)
        rolled = asyncio.Event()
        results: list = []

        async def stream(worker: int) -> None:
            # Staggered, so requests start (and are planned) all the time; pinned, so each is priced by one
            # known model; kept going until the rollouts end.
            await asyncio.sleep(worker * STREAM_S / STREAMS)
            while not rolled.is_set():
                try:
                    results.append(await client.complete(f"{PROMPT} ({worker})", model="fast-cheap", max_tokens=64))
                except Exception as exc:  # noqa: BLE001 - every failure is reported by the assertion
                    results.append(exc)

        workers = [asyncio.create_task(stream(i)) for i in range(STREAMS)]
        await asyncio.sleep(STREAM_S)  # every stream under way before the first rollout
        try:
            version = first.version
            for step in range(1, ROLLOUTS + 1):
                version = await rollout.step(step, version, first="router" if step % 2 else "executor")
                await asyncio.sleep(VERSION_IN_FORCE_S)
        finally:
            rolled.set()
            await asyncio.gather(*workers)
            for channel in channels.values():
                await channel.close()
    return results, rollout, first.version


def test_64_streams_run_through_five_rollouts_and_none_fails(rollout_mesh, executor_control, policy_files):
    sim = SimAdmin(rollout_mesh.layout.sim_url)
    # 40 tokens at 20 tokens/s (1 token/s at this time scale): each stream spans two or three versions.
    sim.patch("sim-fast", tokens_per_s=1.0, min_tokens=40, max_tokens=40)
    skews_before = skews_logged(rollout_mesh)
    try:
        results, rollout, first_version = asyncio.run(
            _rollout_under_load(rollout_mesh, executor_control, policy_files))
    finally:
        sim.reset()
    failures = [r if isinstance(r, Exception) else (r.final.status, r.final.error) for r in results
                if isinstance(r, Exception) or r.final.status not in ANSWERED]
    assert not failures, f"{len(failures)} of {len(results)} requests failed: {failures[:5]}"
    assert len(results) >= 2 * STREAMS
    versions = {r.decision.policy_version for r in results}
    assert set(range(first_version + 1, first_version + ROLLOUTS + 1)) <= versions, versions
    # Each answer is priced by the version its plan was made with, though most finished under a newer one.
    mispriced = [(r.decision.policy_version, r.final.cost_usd, expected)
                 for r in results
                 if r.final.cost_usd != pytest.approx(
                     expected := expected_cost(rollout.policies[r.decision.policy_version], r.final), rel=1e-6)]
    assert not mispriced, mispriced[:5]
    skews = skews_logged(rollout_mesh) - skews_before
    assert skews > 0, "the router should have planned with versions the executor did not hold yet"
    print(f"\n{len(results)} streams over {ROLLOUTS} rollouts; the executor answered POLICY_SKEW {skews} time(s)")


# ---- the executor called directly --------------------------------------------------------------------------


def _apply(control: Mesh, text: str) -> control_pb2.Policy:
    with grpc.insecure_channel(control.layout.address("control")) as channel:
        reply = control_pb2_grpc.ControlPlaneServiceStub(channel).ApplyPolicy(
            control_pb2.ApplyPolicyRequest(policy_yaml=text), timeout=5)
    assert reply.changed
    return reply.policy


def _execute(mesh: Mesh, plan: list[str], version: int, digest: str) -> executor_pb2.ExecutionResult:
    request = executor_pb2.ExecuteRequest(
        messages=[common_pb2.Message(role=common_pb2.ROLE_USER, content=PROMPT)], plan=plan, max_tokens=16,
        policy_version=version, policy_digest=digest)
    with grpc.insecure_channel(mesh.layout.address("executor")) as channel:
        responses = list(executor_pb2_grpc.ExecutorServiceStub(channel).Execute(request, timeout=10))
    return responses[-1].result


def _rejection(mesh: Mesh, plan: list[str], version: int, digest: str) -> tuple[grpc.StatusCode, str, dict, str]:
    """The status code, ErrorInfo reason and metadata, and message of an Execute that fails."""
    with pytest.raises(grpc.RpcError) as err:
        _execute(mesh, plan, version, digest)
    status = rpc_status.from_call(err.value)
    assert status is not None, "the executor should answer with a rich status"
    info = error_info(list(status.details))
    assert info is not None
    return err.value.code(), info.reason, dict(info.metadata), status.message


def _wait_until_held(mesh: Mesh, version: control_pb2.Policy) -> None:
    deadline = time.monotonic() + 10
    while True:
        try:
            _execute(mesh, ["fast-cheap"], version.version, version.digest)
            return
        except grpc.RpcError:
            assert time.monotonic() < deadline, f"the executor did not receive version {version.version}"
            time.sleep(0.05)


def test_the_executor_serves_a_kept_version_and_answers_policy_skew_for_one_it_lacks(rollout_mesh,
                                                                                      executor_control):
    doc = yaml.safe_load(policy_version_text(0))
    doc["models"]["vanishing"] = {**copy.deepcopy(doc["models"]["fast-cheap"]), "description": "only in one version"}
    with_model = _apply(executor_control, yaml.safe_dump(doc))
    _wait_until_held(rollout_mesh, with_model)
    del doc["models"]["vanishing"]
    doc["models"]["fast-cheap"]["pricing"]["output_per_mtok"] = 9.0
    without = _apply(executor_control, yaml.safe_dump(doc))
    _wait_until_held(rollout_mesh, without)

    # A plan made with the older version still resolves a model the newer one dropped...
    kept = _execute(rollout_mesh, ["vanishing"], with_model.version, with_model.digest)
    assert kept.status in ANSWERED and kept.model == "vanishing"
    # ...while a caller that names no version gets the current policy, which has no such model.
    code, reason, _, message = _rejection(rollout_mesh, ["vanishing"], 0, "")
    assert code == grpc.StatusCode.UNAVAILABLE and reason == "ALL_CANDIDATES_FAILED"
    assert f"not in policy version {without.version}" in message

    code, reason, metadata, message = _rejection(rollout_mesh, ["fast-cheap"], without.version + 100, "f" * 64)
    assert code == grpc.StatusCode.FAILED_PRECONDITION and reason == "POLICY_SKEW"
    assert f"policy version {without.version + 100}" in message
    held = [int(v) for v in metadata["held_versions"].split(",")]
    assert {with_model.version, without.version} <= set(held) and len(held) <= 8
    code, reason, _, _ = _rejection(rollout_mesh, ["fast-cheap"], without.version, "0" * 64)
    assert code == grpc.StatusCode.FAILED_PRECONDITION and reason == "POLICY_SKEW"
