"""A key's usage on a real mesh: chats through the router show up in ListKeys and `routemesh report --keys`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator

import grpc
import pytest

from routemesh.client import RoutemeshError
from routemesh.common.keys import KeySpec
from routemesh.mesh import Mesh, MeshLayout
from routemesh.v1 import control_pb2, control_pb2_grpc
from tests.integration.conftest import REDIS_URL, SIM_TIME_SCALE
from tests.integration.test_api_keys import FAQ, PEPPER, store_call, with_key

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def usage_mesh(tmp_path_factory, redis_prefix) -> Iterator[tuple[Mesh, str]]:
    prefix = f"{redis_prefix}keyusage:"
    mesh = Mesh(MeshLayout.free(), redis_url=REDIS_URL, redis_prefix=prefix, sim_time_scale=SIM_TIME_SCALE,
                log_dir=tmp_path_factory.mktemp("key-usage-logs"), extra_env={"ROUTEMESH_KEY_PEPPER": PEPPER},
                extra_args={"router": ["--require-keys"]})
    mesh.start()
    yield mesh, prefix
    mesh.stop()


def list_keys(mesh: Mesh) -> dict[str, control_pb2.ApiKey]:
    with mesh.channel("control") as channel:
        reply = control_pb2_grpc.ControlPlaneServiceStub(channel).ListKeys(control_pb2.ListKeysRequest(), timeout=10)
    return {key.key_id: key for key in reply.keys}


def test_chats_with_a_key_show_as_its_usage_in_list_keys_and_the_report(usage_mesh) -> None:
    mesh, prefix = usage_mesh
    budgeted_token, budgeted = store_call(prefix, "create", KeySpec(tenant="acme", name="shop", budget_usd=5.0,
                                                                    budget_period="day", rpm=100))
    plain_token, plain = store_call(prefix, "create", KeySpec(tenant="globex", allowed_models=("fast-cheap",)))
    finals = {budgeted.key_id: [], plain.key_id: []}
    with with_key(mesh, budgeted_token) as client:
        for _ in range(3):
            finals[budgeted.key_id].append(client.complete(FAQ, max_tokens=32).final)
        client.explain(FAQ)  # Explain runs no model: not usage
    with with_key(mesh, plain_token) as client:
        for _ in range(2):
            finals[plain.key_id].append(client.complete(FAQ, max_tokens=32).final)
        with pytest.raises(RoutemeshError) as refused:
            client.complete(FAQ, model="strong")  # the key may not use it: a request, and an error
        assert refused.value.code == grpc.StatusCode.PERMISSION_DENIED
    assert all(f.status in (1, 2) and f.cost_usd > 0 for fs in finals.values() for f in fs)  # complete or length

    # The router writes its sums about once a second, off the requests' path.
    deadline = time.monotonic() + 15
    while True:
        keys = list_keys(mesh)
        if keys[budgeted.key_id].today.requests == 3 and keys[plain.key_id].today.requests == 3:
            break
        assert time.monotonic() < deadline, f"usage not recorded: {keys}"
        time.sleep(0.2)

    for key_id, errors in ((budgeted.key_id, 0), (plain.key_id, 1)):
        today, cost = keys[key_id].today, sum(f.cost_usd for f in finals[key_id])
        assert today.errors == errors and today.cost_usd == pytest.approx(cost, rel=1e-9, abs=1e-12)
        assert today.input_tokens == sum(f.usage.input_tokens for f in finals[key_id])
        assert today.output_tokens == sum(f.usage.output_tokens for f in finals[key_id]) > 0
        assert keys[key_id].this_month.requests >= today.requests
    assert keys[budgeted.key_id].budget_spent_usd == pytest.approx(keys[budgeted.key_id].today.cost_usd)

    result = subprocess.run([sys.executable, "-m", "routemesh", "report", "--keys", "--json",
                             "--control", mesh.layout.address("control")],
                            capture_output=True, text=True, timeout=60, env=os.environ.copy())
    assert result.returncode == 0, result.stderr
    rows = {row["key_id"]: row for row in json.loads(result.stdout)["keys"]}
    row = rows[budgeted.key_id]
    assert (row["tenant"], row["name"], row["rpm"], row["budget_usd"], row["budget_period"]) == \
        ("acme", "shop", 100, 5.0, "day")
    assert row["today"]["requests"] == 3 and row["today"]["cost_usd"] == pytest.approx(
        sum(f.cost_usd for f in finals[budgeted.key_id]), rel=1e-9, abs=1e-12)
    assert row["budget_used"] == pytest.approx(row["budget_spent_usd"] / 5.0) and row["budget_used"] > 0
    assert rows[plain.key_id]["today"]["errors"] == 1 and rows[plain.key_id]["budget_used"] is None

    table = subprocess.run([sys.executable, "-m", "routemesh", "report", "--keys",
                            "--control", mesh.layout.address("control")],
                           capture_output=True, text=True, timeout=60, env=os.environ.copy())
    assert table.returncode == 0 and budgeted.key_id in table.stdout and "acme" in table.stdout
    listed = subprocess.run([sys.executable, "-m", "routemesh", "keys", "--control", mesh.layout.address("control"),
                             "list"], capture_output=True, text=True, timeout=60, env=os.environ.copy())
    assert listed.returncode == 0 and "today 3 req (0 failed)" in listed.stdout, listed.stdout


def test_the_report_says_when_control_has_no_keys(tmp_path) -> None:
    mesh = Mesh(MeshLayout.free(), services=("control",), log_dir=tmp_path)
    with mesh:
        result = subprocess.run([sys.executable, "-m", "routemesh", "report", "--keys",
                                 "--control", mesh.layout.address("control")],
                                capture_output=True, text=True, timeout=60, env=os.environ.copy())
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "API keys are not configured" in result.stderr, result.stderr
