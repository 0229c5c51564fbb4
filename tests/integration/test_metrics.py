"""Every service's /metrics on a real mesh: the contract's names, with values equal to what the chats reported."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from routemesh.cli import SERVICES
from routemesh.client import RouterClient, RoutemeshError
from routemesh.mesh import Mesh, MeshLayout
from tests.integration.conftest import SIM_TIME_SCALE

pytestmark = pytest.mark.integration
CHATS = 4
TENANT = "metrics-tenant"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture(scope="module")
def metered(tmp_path_factory) -> Iterator[tuple[Mesh, dict[str, int]]]:
    """A mesh with metrics on every service (as Mesh runs it: its layout's metrics ports), and telemetry's ledger
    in SQLite for the ledger's metrics."""
    ledger = tmp_path_factory.mktemp("metrics-ledger") / "ledger.db"
    mesh = Mesh(MeshLayout.free(), sim_time_scale=SIM_TIME_SCALE, log_dir=tmp_path_factory.mktemp("metrics-logs"),
                extra_args={"telemetry": ["--ledger-url", f"sqlite:///{ledger}"]})
    assert set(mesh.layout.metrics_ports) == set(SERVICES)
    mesh.start()
    yield mesh, mesh.layout.metrics_ports
    mesh.stop()


def scrape(port: int) -> Samples:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of `name` over the series whose labels include `labels`."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= ls)


def names(samples: Samples) -> set[str]:
    return {name for name, _ in samples}


def eventually(read: Callable[[], Samples], check: Callable[[Samples], bool], timeout_s: float = 15.0) -> Samples:
    deadline = time.monotonic() + timeout_s
    while True:
        samples = read()
        if check(samples) or time.monotonic() > deadline:
            return samples
        time.sleep(0.25)


def test_every_service_exposes_the_contracts_metrics_with_the_chats_values(metered) -> None:
    mesh, ports = metered
    finals = []
    with RouterClient(mesh.layout.address("router")) as client:
        for i in range(CHATS):
            for event in client.chat(f"Say something about lighthouses, number {i}.", metadata={"tenant": TENANT},
                                     max_tokens=24):
                if event.WhichOneof("event") == "final":
                    finals.append(event.final)
        with pytest.raises(RoutemeshError):
            list(client.chat("Which model is this?", model="no-such-model", metadata={"tenant": TENANT}))
    assert len(finals) == CHATS
    gateway = f"http://{mesh.layout.address('gateway')}"
    assert httpx.get(f"{gateway}/v1/models", timeout=5).status_code == 200
    assert httpx.get(f"{gateway}/v1/models/no-such-model", timeout=5).status_code == 404

    # Budget gauges come from a loop reading, taken within half a second of the router's first policy.
    router = eventually(lambda: scrape(ports["router"]), lambda s: "routemesh_budget_limit_usd" in names(s))
    served = sum(total(router, "routemesh_requests_total", tenant=TENANT, status=s) for s in ("complete", "length"))
    assert served == CHATS
    for model in {f.model for f in finals}:
        count = sum(1 for f in finals if f.model == model)
        assert total(router, "gen_ai_server_request_duration_seconds_count", gen_ai_response_model=model) == count
        assert total(router, "gen_ai_server_time_to_first_token_seconds_count", gen_ai_response_model=model) == count
        assert total(router, "gen_ai_client_token_usage_sum", gen_ai_token_type="input", gen_ai_response_model=model,
                     tenant=TENANT) == sum(f.usage.input_tokens for f in finals if f.model == model)
        assert total(router, "gen_ai_client_token_usage_sum", gen_ai_token_type="output",
                     gen_ai_response_model=model, tenant=TENANT) == \
            sum(f.usage.output_tokens for f in finals if f.model == model)
        assert total(router, "routemesh_spend_usd_total", model=model, tenant=TENANT) == \
            pytest.approx(sum(f.cost_usd for f in finals if f.model == model))
    assert total(router, "routemesh_requests_total", status="rejected", model="", tenant=TENANT) == 1
    assert total(router, "routemesh_rejections_total", reason="unknown_model", tenant=TENANT) == 1
    assert total(router, "gen_ai_server_time_per_output_token_seconds_count") == \
        sum(1 for f in finals if f.usage.output_tokens > 1)
    assert router[("routemesh_inflight_streams", frozenset())] == 0
    assert router[("routemesh_policy_version", frozenset())] == 1
    assert {"routemesh_breaker_state", "routemesh_budget_limit_usd", "routemesh_budget_remaining_usd",
            "process_cpu_seconds_total", "process_resident_memory_bytes"} <= names(router)
    assert total(router, "routemesh_errors_total") == 0

    executor = scrape(ports["executor"])
    assert total(executor, "routemesh_provider_attempts_total", outcome="success") == CHATS
    assert total(executor, "gen_ai_client_operation_duration_seconds_count", error_type="") == CHATS
    assert executor[("routemesh_executor_inflight_streams", frozenset())] == 0

    classifier = scrape(ports["classifier"])
    assert total(classifier, "routemesh_classifications_total") == CHATS + 1  # the refused one was classified too
    assert total(classifier, "routemesh_classify_duration_seconds_count") == CHATS + 1

    # Refused requests are ledger rows too; the snapshot behind the breakers is read every few seconds.
    telemetry = eventually(lambda: scrape(ports["telemetry"]), lambda s: total(
        s, "routemesh_ledger_written_rows_total") == CHATS + 1 and "routemesh_breaker_state" in names(s))
    assert total(telemetry, "routemesh_ledger_written_rows_total") == CHATS + 1
    assert total(telemetry, "routemesh_ledger_backlog_rows") == 0
    assert total(telemetry, "routemesh_ledger_dropped_rows_total") == 0
    assert total(telemetry, "routemesh_ledger_healthy") == 1
    assert {f.model for f in finals} <= {dict(ls)["model"] for n, ls in telemetry if n == "routemesh_breaker_state"}

    control = scrape(ports["control"])
    assert control[("routemesh_policy_changes_total", frozenset({("action", "applied")}))] == 1

    http = scrape(ports["gateway"])
    assert total(http, "routemesh_http_requests_total", path="/v1/models", code="200") == 1
    assert total(http, "routemesh_http_requests_total", path="/v1/models/{model}", code="404") == 1
    for name, port in ports.items():
        samples = scrape(port)
        assert samples[("routemesh_policy_version", frozenset())] == 1, name
        assert samples[("process_cpu_seconds_total", frozenset())] > 0, name

