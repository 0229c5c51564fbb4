"""API-key usage: the math, the router's in-memory counting and background writes, Redis round trips, the report."""

from __future__ import annotations

import argparse
import io
import json
import socket
import uuid
from datetime import UTC, date, datetime

import pytest

from routemesh import keys_report, report
from routemesh.common.keys import KeySpec, KeyStore, KeyUsage, KeyUsageSummary, month_days, usage_key
from routemesh.common.outcomes import FinishStatus
from routemesh.common.redis_client import create_client
from routemesh.control.keys_api import KeysApi
from routemesh.router.admission.guard import KeyQuota
from routemesh.router.key_usage import KeyUsageRecorder
from routemesh.router.keys_bench import run_benchmark
from routemesh.router.pipeline import RequestPipeline
from routemesh.router.request import ChatInput, Finished
from routemesh.v1 import common_pb2, control_pb2
from tests.conftest import REDIS_URL

DAY = 86_400


def utc_today() -> date:
    return datetime.now(UTC).date()


# ---- the math, without Redis or gRPC ------------------------------------------------------------------------


def test_usage_adds_up_and_reads_back_from_a_redis_hash_of_either_type():
    one = KeyUsage(requests=1, errors=0, input_tokens=10, output_tokens=5, cost_usd=0.25)
    two = KeyUsage(requests=2, errors=1, input_tokens=3, output_tokens=0, cost_usd=0.5)
    assert one + two == KeyUsage(3, 1, 13, 5, 0.75)
    assert sum([one, two, two], KeyUsage()) == KeyUsage(5, 2, 16, 5, 1.25)
    stored = {"requests": "3", "errors": "1", "input_tokens": "13", "output_tokens": "5", "cost_usd": "0.75"}
    assert KeyUsage.from_hash(stored) == KeyUsage(3, 1, 13, 5, 0.75)
    assert KeyUsage.from_hash({k.encode(): v.encode() for k, v in stored.items()}) == KeyUsage(3, 1, 13, 5, 0.75)
    assert KeyUsage.from_hash({}) == KeyUsage() and KeyUsage.from_hash({"requests": "2"}).requests == 2


def test_the_budget_period_picks_today_or_the_month():
    summary = KeyUsageSummary(today=KeyUsage(cost_usd=1.0), this_month=KeyUsage(cost_usd=7.5))
    assert summary.budget_spent_usd("day") == 1.0 and summary.budget_spent_usd("month") == 7.5


def test_the_redis_layout_is_one_hash_per_key_and_utc_day():
    assert usage_key("rm:", "0123456789abcdef", date(2026, 12, 5)) == "rm:keyusage:0123456789abcdef:2026-12-05"
    assert month_days(date(2026, 12, 3)) == [date(2026, 12, 1), date(2026, 12, 2), date(2026, 12, 3)]
    assert len(month_days(date(2026, 2, 28))) == 28 and month_days(date(2026, 1, 1)) == [date(2026, 1, 1)]


class RecordingStore:
    """A KeyStore stand-in that keeps what would be written, or fails."""

    def __init__(self, fail: bool = False):
        self.fail = fail
        self.writes: list[dict] = []

    async def add_usage(self, usage):
        if self.fail:
            raise ConnectionError("Redis is down")
        self.writes.append(dict(usage))


async def test_the_recorder_sums_per_key_and_utc_day_and_writes_once_per_flush():
    now = [date(2026, 12, 5).toordinal() - date(1970, 1, 1).toordinal()]  # days since the epoch
    store = RecordingStore()
    recorder = KeyUsageRecorder(store, clock=lambda: now[0] * DAY + 86_399.5)  # type: ignore[arg-type]
    recorder.add("a", KeyUsage(1, 0, 10, 20, 0.001))
    recorder.add("a", KeyUsage(1, 1, 5, 0, 0.0))
    recorder.add("b", KeyUsage(1, 0, 1, 1, 0.002))
    now[0] += 1  # half a second later it is tomorrow (UTC)
    recorder.add("a", KeyUsage(1, 0, 1, 1, 0.003))
    await recorder.flush()
    assert store.writes == [{("a", date(2026, 12, 5)): KeyUsage(2, 1, 15, 20, 0.001),
                             ("b", date(2026, 12, 5)): KeyUsage(1, 0, 1, 1, 0.002),
                             ("a", date(2026, 12, 6)): KeyUsage(1, 0, 1, 1, 0.003)}]
    await recorder.flush()  # nothing pending: no write
    assert len(store.writes) == 1


async def test_a_failed_write_is_dropped_counted_and_never_raised(caplog):
    store = RecordingStore(fail=True)
    recorder = KeyUsageRecorder(store)  # type: ignore[arg-type]
    recorder.add("a", KeyUsage(requests=1))
    recorder.add("b", KeyUsage(requests=1))
    await recorder.flush()
    assert recorder.lost_requests == 2 and "not recorded" in caplog.text
    store.fail = False
    recorder.add("a", KeyUsage(requests=1))
    await recorder.stop()  # writes what is pending, without a started task
    assert store.writes == [{("a", utc_today()): KeyUsage(requests=1)}]


def _pipeline(recorder: KeyUsageRecorder | None) -> RequestPipeline:
    return RequestPipeline(None, None, None, None, None, None, key_usage=recorder)  # type: ignore[arg-type]


def test_each_keyed_request_counts_once_failures_and_refusals_as_errors():
    store = RecordingStore()
    recorder = KeyUsageRecorder(store)  # type: ignore[arg-type]
    pipeline = _pipeline(recorder)
    keyed = ChatInput(messages=[], quota=KeyQuota("k1"))
    answered = Finished(status=FinishStatus.COMPLETE, cost_usd=0.002,
                        usage=common_pb2.Usage(input_tokens=100, output_tokens=40))
    pipeline.count_key_usage(keyed, answered)
    pipeline.count_key_usage(keyed, Finished(status=FinishStatus.LENGTH, cost_usd=0.001,
                                             usage=common_pb2.Usage(input_tokens=10, output_tokens=4)))
    pipeline.count_key_usage(keyed, Finished(status=FinishStatus.FAILED))  # every model failed
    pipeline.count_key_usage(keyed, None)  # refused before the call, or the caller went away
    pipeline.count_key_usage(ChatInput(messages=[]), answered)  # no key: not counted
    (usage,) = recorder._pending.values()
    assert (usage.requests, usage.errors, usage.input_tokens, usage.output_tokens) == (4, 2, 110, 44)
    assert usage.cost_usd == pytest.approx(0.003)
    _pipeline(None).count_key_usage(keyed, answered)  # keys off: nothing to count into, no error


def test_the_key_check_benchmark_needs_no_redis_and_reports_microseconds():
    result = run_benchmark(iterations=300)
    for name in ("key_check", "key_usage"):
        figures = result[name]
        assert figures["iterations"] == 300 and 0 < figures["p50_us"] <= figures["p99_us"] <= figures["max_us"]


# ---- the report, from a ListKeysResponse ---------------------------------------------------------------------


def _listed() -> control_pb2.ListKeysResponse:
    budgeted = control_pb2.ApiKey(
        key_id="0123456789abcdef", name="web", tenant="acme", project="shop", role="user", rpm=60, tpm=0,
        budget_usd=2.0, budget_period="day", state="active",
        today=control_pb2.KeyUsage(requests=3, errors=1, input_tokens=30, output_tokens=90, cost_usd=0.5),
        this_month=control_pb2.KeyUsage(requests=10, errors=1, input_tokens=100, output_tokens=300, cost_usd=1.5),
        budget_spent_usd=0.5)
    plain = control_pb2.ApiKey(key_id="fedcba9876543210", tenant="globex", role="admin", state="revoked")
    return control_pb2.ListKeysResponse(keys=[budgeted, plain], usage_day="2026-12-05")


def test_report_rows_carry_limits_usage_and_the_budget_share():
    budgeted, plain = keys_report.rows(_listed())
    assert budgeted["budget_used"] == 0.25 and budgeted["today"]["requests"] == 3
    assert budgeted["this_month"] == {"requests": 10, "errors": 1, "input_tokens": 100, "output_tokens": 300,
                                      "cost_usd": 1.5}
    assert plain["budget_used"] is None and plain["this_month"]["cost_usd"] == 0.0


def test_report_table_and_json():
    out = io.StringIO()
    keys_report.print_report(_listed(), as_json=False, out=out)
    lines = out.getvalue().splitlines()
    assert "2026-12-05" in lines[0]
    assert lines[1].split()[:6] == ["key", "name", "tenant/project", "role", "state", "limits"]
    assert "acme/shop" in lines[2] and "rpm 60, $2/day" in lines[2] and "$1.500000" in lines[2]
    assert lines[2].rstrip().endswith("25.0%") and lines[3].rstrip().endswith("-")
    out = io.StringIO()
    keys_report.print_report(_listed(), as_json=True, out=out)
    document = json.loads(out.getvalue())
    assert document["usage_day"] == "2026-12-05" and [k["key_id"] for k in document["keys"]] == \
        ["0123456789abcdef", "fedcba9876543210"]
    out = io.StringIO()
    keys_report.print_report(control_pb2.ListKeysResponse(), as_json=False, out=out)
    assert "no API keys yet" in out.getvalue()


def test_an_unreachable_control_is_one_clear_line(capsys):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again before the report dials it
    parser = argparse.ArgumentParser()
    report.add_arguments(parser)
    args = parser.parse_args(["--keys", "--control", f"127.0.0.1:{port}"])
    assert report.run(args) == 1
    err = capsys.readouterr().err
    assert "control unreachable at" in err and "Traceback" not in err and len(err.splitlines()) == 1


# ---- against a real Redis --------------------------------------------------------------------------------------


@pytest.fixture
async def store(redis_prefix):
    client = create_client(REDIS_URL, timeout_s=1.0)
    yield KeyStore(client, f"{redis_prefix}{uuid.uuid4().hex[:6]}:", b"p" * 32)
    await client.aclose()


async def test_usage_written_by_days_reads_back_as_today_and_this_month(store):
    await store.add_usage({("a", date(2026, 11, 30)): KeyUsage(5, 0, 5, 5, 9.0),  # last month: not counted
                           ("a", date(2026, 12, 1)): KeyUsage(2, 1, 20, 10, 0.1),
                           ("a", date(2026, 12, 3)): KeyUsage(1, 0, 10, 5, 0.2)})
    await store.add_usage({("a", date(2026, 12, 3)): KeyUsage(1, 1, 1, 1, 0.05)})
    usage = await store.usage(["a", "b"], date(2026, 12, 3))
    assert usage["a"].today == KeyUsage(2, 1, 11, 6, pytest.approx(0.25))
    assert usage["a"].this_month == KeyUsage(4, 2, 31, 16, pytest.approx(0.35))
    assert usage["b"] == KeyUsageSummary(KeyUsage(), KeyUsage())
    ttl = await store._redis.ttl(usage_key(store._prefix, "a", date(2026, 12, 3)))
    assert 399 * DAY < ttl <= 400 * DAY
    assert await store.usage([], date(2026, 12, 3)) == {}


async def test_usage_of_many_keys_is_written_in_batches_and_small_costs_keep_their_digits(store, monkeypatch):
    import routemesh.common.keys as keys_module

    monkeypatch.setattr(keys_module, "USAGE_BATCH", 2)
    day = date(2026, 12, 5)
    await store.add_usage({(f"k{i}", day): KeyUsage(1, 0, 3, 4, 1.41e-05) for i in range(5)})
    await store.add_usage({("k0", day): KeyUsage(1, 1, 0, 0, 0.0)})
    usage = await store.usage([f"k{i}" for i in range(5)], day)
    assert [usage[f"k{i}"].today.requests for i in range(5)] == [2, 1, 1, 1, 1]
    assert usage["k0"].today == KeyUsage(2, 1, 3, 4, pytest.approx(1.41e-05, rel=1e-12))


async def test_list_keys_carries_each_keys_usage_and_budget_spend(store):
    _, daily = await store.create(KeySpec(tenant="acme", budget_usd=1.0, budget_period="day"))
    _, monthly = await store.create(KeySpec(tenant="acme", budget_usd=10.0))
    today = utc_today()
    recorder = KeyUsageRecorder(store)
    for record in (daily, monthly):
        recorder.add(record.key_id, KeyUsage(1, 0, 100, 50, 0.125))
    await recorder.flush()
    if today.day > 1:  # an earlier day this month counts towards the month only
        await store.add_usage({(monthly.key_id, today.replace(day=1)): KeyUsage(1, 0, 1, 1, 0.5),
                               (daily.key_id, today.replace(day=1)): KeyUsage(1, 0, 1, 1, 0.5)})
    listed = await KeysApi(store).list()
    assert listed.usage_day == today.isoformat()
    by_id = {k.key_id: k for k in listed.keys}
    earlier = 0.5 if today.day > 1 else 0.0
    assert by_id[daily.key_id].today.requests == 1 and by_id[daily.key_id].today.cost_usd == 0.125
    assert by_id[daily.key_id].budget_spent_usd == 0.125
    assert by_id[monthly.key_id].this_month.cost_usd == pytest.approx(0.125 + earlier)
    assert by_id[monthly.key_id].budget_spent_usd == pytest.approx(0.125 + earlier)
