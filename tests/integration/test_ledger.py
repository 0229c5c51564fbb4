"""The outcome ledger on real databases: PostgreSQL in a schema of the test's own, SQLite in a file, and a mesh
whose telemetry writes one row per request (decision and outcome, never the prompt's text)."""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
import time

import asyncpg
import pytest

from routemesh.client import RouterClient
from routemesh.mesh import Mesh, MeshLayout
from routemesh.telemetry.ledger.rows import row_from_summary
from routemesh.telemetry.ledger.stores import SCHEMA_VERSION, PostgresLedger
from tests.integration.conftest import SIM_TIME_SCALE
from tests.unit.test_ledger import summary

pytestmark = pytest.mark.integration
PROMPT = "Which planet in our solar system has the most moons, zebrafish aside?"


async def test_postgres_migrates_once_and_keeps_one_row_per_decision(pg_ledger_url) -> None:
    for _ in range(2):
        store = PostgresLedger(pg_ledger_url)
        await store.open()
        await store.insert([row_from_summary(summary(f"d{i}")) for i in range(300)])
        await store.insert([row_from_summary(summary("d1", cost=9.0))])
        assert await store.count() == 300
        await store.close()
    conn = await asyncpg.connect(pg_ledger_url.partition("?")[0])
    try:
        schema = pg_ledger_url.rpartition("schema=")[2]
        assert await conn.fetchval(f'SELECT max(version) FROM "{schema}".routemesh_schema_migrations') == \
            SCHEMA_VERSION
        row = await conn.fetchrow(f'SELECT cost_usd, candidates, features FROM "{schema}".ledger_requests '
                                  "WHERE decision_id = 'd1'")
    finally:
        await conn.close()
    assert row["cost_usd"] == 0.002
    assert json.loads(row["candidates"])[0]["model"] == "fast-cheap"  # JSONB, queryable


def ledger_rows(path) -> list[dict]:
    with sqlite3.connect(path) as db:
        db.row_factory = sqlite3.Row
        return [dict(r) for r in db.execute("SELECT * FROM ledger_requests")]


def test_a_mesh_records_each_request_and_sigterm_writes_what_is_buffered(tmp_path_factory) -> None:
    path = tmp_path_factory.mktemp("ledger") / "ledger.db"
    # Batches gather for a minute here: nothing is written before SIGTERM but by it.
    mesh = Mesh(MeshLayout.free(), sim_time_scale=SIM_TIME_SCALE, log_dir=tmp_path_factory.mktemp("ledger-logs"),
                extra_args={"telemetry": ["--ledger-url", f"sqlite:///{path}", "--ledger-interval-s", "60"]})
    mesh.start()
    try:
        with RouterClient(mesh.layout.address("router")) as client:
            results = [client.complete(PROMPT, metadata={"tenant": "acme", "project": "web", "user": f"u{i}"})
                       for i in range(5)]
        time.sleep(1.0)  # the router's reports reach telemetry within 0.05 s
        assert not path.exists() or not ledger_rows(path), "rows were written before the batch interval"
        mesh.processes["telemetry"].send_signal(signal.SIGTERM)
        mesh.processes["telemetry"].wait(timeout=30)
        rows = ledger_rows(path)
    finally:
        mesh.stop()
    by_id = {row["decision_id"]: row for row in rows}
    assert len(rows) == 5
    for i, result in enumerate(results):
        row = by_id[result.decision.decision_id]
        assert (row["tenant"], row["project"], row["user_id"]) == ("acme", "web", f"u{i}")
        assert row["chosen_model"] == result.decision.model and row["serving_model"] == result.final.model
        assert row["strategy"] == result.decision.strategy and row["route"] == result.decision.route
        assert row["policy_version"] == result.decision.policy_version
        assert row["cost_usd"] == pytest.approx(result.final.cost_usd)
        assert (row["input_tokens"], row["output_tokens"]) == (result.final.usage.input_tokens,
                                                               result.final.usage.output_tokens)
        assert row["status"] == "complete" and row["attempts"] == len(result.final.attempts)
        assert len(json.loads(row["candidates"])) == len(result.decision.candidates)
        assert row["ttft_ms"] > 0 and row["duration_ms"] >= row["ttft_ms"] and len(row["prompt_sha256"]) == 64
    assert len({row["prompt_sha256"] for row in rows}) == 1  # the same conversation, the same hash
    assert not [row for row in rows if any("zebrafish" in str(value) for value in row.values())]


def test_ledger_rows_never_repeat_when_a_report_is_delivered_twice(pg_ledger_url) -> None:
    async def run() -> int:
        store = PostgresLedger(pg_ledger_url)
        await store.open()
        try:
            rows = [row_from_summary(summary("same"))] * 3
            await asyncio.gather(*(store.insert(rows) for _ in range(3)))
            return await store.count()
        finally:
            await store.close()

    assert asyncio.run(run()) == 1


def test_the_ledger_benchmark_runs(capsys) -> None:
    """A smoke run of `python -m routemesh.telemetry.ledger.bench` (the figure is the benchmark's, not CI's)."""
    from routemesh.telemetry.ledger import bench

    bench.main(["--rows", "1000"])
    out = capsys.readouterr().out
    assert "sqlite      1,000 rows" in out and "rows/s" in out


@pytest.fixture(scope="module")
def ledger_mesh(tmp_path_factory) -> Mesh:
    path = tmp_path_factory.mktemp("feedback") / "ledger.db"
    mesh = Mesh(MeshLayout.free(), sim_time_scale=SIM_TIME_SCALE, log_dir=tmp_path_factory.mktemp("feedback-logs"),
                extra_args={"telemetry": ["--ledger-url", f"sqlite:///{path}"]})
    mesh.start()
    yield mesh
    mesh.stop()


def test_feedback_by_grpc_and_by_the_gateway_lands_in_the_ledger_once(ledger_mesh) -> None:
    import httpx

    from routemesh.client import RoutemeshError

    with RouterClient(ledger_mesh.layout.address("router")) as client:
        answer = client.complete(PROMPT)
        receipt = client.feedback(answer.decision.decision_id, thumbs="down", label="wrong-answer",
                                  comment="it is Saturn")
        assert (receipt.score, receipt.model) == (0.0, answer.final.model)
        with pytest.raises(RoutemeshError) as again:
            client.feedback(answer.decision.decision_id, score=1.0)
        assert (again.value.code.name, again.value.reason) == ("ALREADY_EXISTS", "FEEDBACK_EXISTS")
        with pytest.raises(RoutemeshError) as unknown:
            client.feedback("f" * 32, score=1.0)
        assert (unknown.value.code.name, unknown.value.reason) == ("NOT_FOUND", "UNKNOWN_DECISION")
        with pytest.raises(RoutemeshError) as bad:
            client.feedback(answer.decision.decision_id, score=2.0)
        assert bad.value.code.name == "INVALID_ARGUMENT" and bad.value.field_violations[0][0] == "feedback.score"

    base = f"http://{ledger_mesh.layout.address('gateway')}/v1"
    with httpx.Client(timeout=30) as http:
        completion = http.post(f"{base}/chat/completions", json={
            "model": "auto", "messages": [{"role": "user", "content": PROMPT}]}).json()
        ok = http.post(f"{base}/feedback", json={"id": completion["id"], "score": 0.9, "label": "helpful"})
        assert ok.status_code == 200, ok.text
        assert ok.json()["id"] == completion["id"] and ok.json()["score"] == 0.9
        twice = http.post(f"{base}/feedback", json={"id": completion["id"], "thumbs": "up"})
        assert twice.status_code == 409 and twice.json()["error"]["code"] == "feedback_exists"
        for body, status, param in (({"id": "chatcmpl-" + "0" * 32, "score": 1}, 404, "id"),
                                    ({"id": completion["id"], "score": "high"}, 400, "score"),
                                    ({"id": completion["id"], "thumbs": "sideways"}, 400, "thumbs"),
                                    ({"score": 1}, 400, "id"),
                                    ({"id": completion["id"], "score": 1, "extra": 1}, 400, "extra")):
            reply = http.post(f"{base}/feedback", json=body)
            assert (reply.status_code, reply.json()["error"]["param"]) == (status, param), reply.text


def test_routemesh_report_reads_the_ledger(ledger_mesh, tmp_path) -> None:
    import os
    import subprocess
    import sys

    with RouterClient(ledger_mesh.layout.address("router")) as client:
        sent = [client.complete(PROMPT, metadata={"tenant": tenant}) for tenant in ("acme", "acme", "globex")]
    telemetry_args = ledger_mesh.extra_args["telemetry"]
    url = telemetry_args[telemetry_args.index("--ledger-url") + 1]
    env = {**os.environ, "ROUTEMESH_CONTROL_ADDR": ledger_mesh.layout.address("control")}
    deadline = time.monotonic() + 10
    while True:
        done = subprocess.run([sys.executable, "-m", "routemesh", "report", "--ledger-url", url, "--json",
                               "--chart", str(tmp_path / "spend.png")], capture_output=True, text=True,
                              timeout=60, env=env)
        assert done.returncode == 0, done.stderr
        report = json.loads(done.stdout)
        if report["tenant"].get("globex", {}).get("requests") == 1 or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert report["tenant"]["globex"]["requests"] == 1 and report["tenant"]["acme"]["requests"] >= 2
    acme_sent = sum(r.final.cost_usd for r in sent[:2])
    assert report["tenant"]["globex"]["cost_usd"] == pytest.approx(sent[2].final.cost_usd)
    assert report["tenant"]["acme"]["cost_usd"] >= acme_sent - 1e-12
    assert report["total"]["all_strongest_usd"] >= report["total"]["cost_usd"] > 0
    assert (tmp_path / "spend.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = subprocess.run([sys.executable, "-m", "routemesh", "report", "--ledger-url", url], capture_output=True,
                           text=True, timeout=60, env=env)
    assert table.returncode == 0 and "vs strongest" in table.stdout and "globex" in table.stdout
    as_csv = subprocess.run([sys.executable, "-m", "routemesh", "report", "--ledger-url", url, "--format", "csv"],
                            capture_output=True, text=True, timeout=60, env=env)
    assert as_csv.stdout.startswith("dimension,key,requests,")
    missing = subprocess.run([sys.executable, "-m", "routemesh", "report", "--ledger-url", "sqlite:///x.db",
                              "--since", "yesterday"], capture_output=True, text=True, timeout=60, env=env)
    assert missing.returncode == 1 and "--since must look like" in missing.stderr and "Traceback" not in missing.stderr


def test_replay_decides_recorded_requests_again_under_another_policy(ledger_mesh, tmp_path) -> None:
    import os
    import subprocess
    import sys

    import yaml

    from routemesh.common.policy import load_default_policy_text

    prompts = [PROMPT, "Prove that there are infinitely many primes, step by step, rigorously.",
               "What is 2 + 2?"]
    with RouterClient(ledger_mesh.layout.address("router")) as client:
        answers = [client.complete(p, metadata={"tenant": "replay"}) for p in prompts]
    telemetry_args = ledger_mesh.extra_args["telemetry"]
    url = telemetry_args[telemetry_args.index("--ledger-url") + 1]
    deadline = time.monotonic() + 10
    while not {a.decision.decision_id for a in answers} <= {r["decision_id"] for r in ledger_rows(
            url.removeprefix("sqlite:///"))}:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    cheapest = yaml.safe_load(load_default_policy_text())
    cheapest["routes"]["auto"] = {"strategy": "cost", "models": ["fast-cheap", "strong"]}
    path = tmp_path / "cheapest.yaml"
    path.write_text(yaml.safe_dump(cheapest))
    done = subprocess.run([sys.executable, "-m", "routemesh", "replay", "--policy", str(path), "--ledger-url", url,
                           "--route", "auto", "--json"], capture_output=True, text=True, timeout=60,
                          env={**os.environ})
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    auto = result["routes"]["auto"]
    assert auto["requests"] >= 3 and auto["refused"] == 0
    # Everything goes to the cheapest model: whatever strong served moves, spend and expected quality fall.
    assert all(move.endswith("-> fast-cheap") for move in auto["moves"]), auto["moves"]
    assert sum(auto["moves"].values()) >= sum(a.final.model == "strong" for a in answers)
    assert auto["new_cost_usd"] <= auto["old_cost_usd"] + 1e-12
    assert auto["new_mean_quality"] <= auto["old_mean_quality"] + 1e-9
    text = subprocess.run([sys.executable, "-m", "routemesh", "replay", "--policy", str(path), "--ledger-url", url],
                          capture_output=True, text=True, timeout=60)
    assert text.returncode == 0 and "route auto:" in text.stdout and "no provider calls" in text.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("routes: {}\n")
    refused = subprocess.run([sys.executable, "-m", "routemesh", "replay", "--policy", str(bad), "--ledger-url", url],
                             capture_output=True, text=True, timeout=60)
    assert refused.returncode == 1 and "invalid policy" in refused.stderr and "Traceback" not in refused.stderr


def test_a_route_that_opts_in_keeps_conversations_and_data_classes_are_honoured(tmp_path_factory) -> None:
    import yaml

    from routemesh.common.policy import load_default_policy_text

    doc = yaml.safe_load(load_default_policy_text())
    doc["routes"]["auto"]["store_text"] = {"retention_days": 7}
    policy = tmp_path_factory.mktemp("texts") / "policy.yaml"
    policy.write_text(yaml.safe_dump(doc))
    path = tmp_path_factory.mktemp("texts-ledger") / "ledger.db"
    mesh = Mesh(MeshLayout.free(), policy=str(policy), sim_time_scale=SIM_TIME_SCALE,
                log_dir=tmp_path_factory.mktemp("texts-logs"),
                extra_args={"telemetry": ["--ledger-url", f"sqlite:///{path}"]})
    mesh.start()
    try:
        with RouterClient(mesh.layout.address("router")) as client:
            kept = client.complete("Remember the zebra migration plan", metadata={})
            confidential = client.complete("The merger closes Friday", metadata={"data_class": "confidential"})
            pinned = client.complete("Pinned, so no route", model="fast-cheap")
            client.feedback(kept.decision.decision_id, thumbs="up")
            client.feedback(pinned.decision.decision_id, thumbs="down")  # no text kept: teaches nothing
        deadline = time.monotonic() + 10
        while len(ledger_rows(path)) < 3:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        time.sleep(0.5)
        with sqlite3.connect(path) as db:
            texts = dict(db.execute("SELECT decision_id, conversation FROM ledger_texts").fetchall())
        # What-if with execution: the kept request runs again, pinned to the model the policy now picks.
        import subprocess
        import sys

        rerun = subprocess.run([sys.executable, "-m", "routemesh", "replay", "--policy", str(policy),
                                "--ledger-url", f"sqlite:///{path}", "--execute", "5", "--json",
                                "--router", mesh.layout.address("router")], capture_output=True, text=True,
                               timeout=120)
        assert rerun.returncode == 0, rerun.stderr
        executed = json.loads(rerun.stdout)["executed"]
        assert [e["decision_id"] for e in executed] == [kept.decision.decision_id]
        assert executed[0]["new_status"] == 1 and executed[0]["new_cost_usd"] > 0
    finally:
        mesh.stop()
    assert set(texts) == {kept.decision.decision_id}
    assert json.loads(texts[kept.decision.decision_id]) == [
        {"role": "user", "content": "Remember the zebra migration plan"}]
    assert confidential.decision.decision_id not in texts and pinned.decision.decision_id not in texts
    # The text is in the ledger's text table only: spans and logs never carry it.
    for log in mesh.log_dir.glob("*.log"):
        assert "zebra migration" not in log.read_text(errors="replace"), log.name

    # Retraining takes the kept conversation with its feedback on top of the shipped outcomes.
    import subprocess
    import sys

    from routemesh.quality.artifact import load_artifact

    out = path.parent / "predictor.json.gz"
    trained = subprocess.run([sys.executable, "-m", "routemesh", "router", "train", "--from-ledger",
                              "--ledger-url", f"sqlite:///{path}", "--policy", str(policy), "--out", str(out)],
                             capture_output=True, text=True, timeout=300)
    assert trained.returncode == 0, trained.stderr
    served = {"fast-cheap": "weak", "strong": "strong"}.get(kept.final.model)
    assert f"ledger: {1 if served else 0} requests with kept text and feedback" in trained.stdout
    artifact = load_artifact(out)
    assert artifact.training["ledger_rows"] == ({served: 1} if served else {})


def test_a_request_refused_before_its_decision_is_a_ledger_row_with_the_reason(ledger_mesh) -> None:
    from routemesh.client import RoutemeshError
    from routemesh.v1 import router_pb2

    with RouterClient(ledger_mesh.layout.address("router")) as client:
        with pytest.raises(RoutemeshError) as refused:
            client.complete(PROMPT, metadata={"tenant": "thrifty"},
                            routing=router_pb2.RoutingOptions(max_cost_usd=1e-12))
    assert refused.value.reason == "NO_ELIGIBLE_MODEL"
    telemetry_args = ledger_mesh.extra_args["telemetry"]
    path = telemetry_args[telemetry_args.index("--ledger-url") + 1].removeprefix("sqlite:///")
    deadline = time.monotonic() + 10
    while not (rows := [r for r in ledger_rows(path) if r["tenant"] == "thrifty"]):
        assert time.monotonic() < deadline, "no ledger row for the refused request"
        time.sleep(0.2)
    (row,) = rows
    assert (row["status"], row["serving_model"], row["cost_usd"], row["route"]) == ("unspecified", "", 0.0, "auto")
    assert row["error"].startswith("NO_ELIGIBLE_MODEL: ")
