"""The ledger's rows, its SQLite store (a real file) and the writer's buffering, without gRPC."""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3

import pytest

from routemesh.telemetry.ledger.rows import NAMES, row_from_summary
from routemesh.telemetry.ledger.stores import SCHEMA_VERSION, PostgresLedger, SqliteLedger, ledger_store
from routemesh.telemetry.ledger.writer import LedgerWriter
from routemesh.v1 import common_pb2, router_pb2, telemetry_pb2


def summary(decision_id: str = "d1", cost: float = 0.002) -> telemetry_pb2.RequestSummary:
    features = common_pb2.Features(input_tokens=120, task_type=common_pb2.TASK_TYPE_CODE, language="en")
    features.predicted_success["fast-cheap"] = 0.81
    decision = router_pb2.Decision(
        decision_id=decision_id, model="fast-cheap", strategy="quality_target", route="auto", rule="",
        fallbacks=["strong"], features=features, policy_version=3, trace_id="ab" * 16, estimated_cost_usd=0.001,
        candidates=[router_pb2.Candidate(model="fast-cheap", eligible=True, rank=1, score=0.9, factors={"cost": 1.0}),
                    router_pb2.Candidate(model="tiny", rejection_reason="context too small")])
    final = router_pb2.Final(status=common_pb2.FINISH_STATUS_COMPLETE, cost_usd=cost, model="fast-cheap",
                             usage=common_pb2.Usage(input_tokens=120, output_tokens=40, cached_input_tokens=100),
                             attempts=[common_pb2.Attempt(model="strong"), common_pb2.Attempt(model="fast-cheap")])
    return telemetry_pb2.RequestSummary(
        decision_id=decision_id, route="auto", model="fast-cheap", status=common_pb2.FINISH_STATUS_COMPLETE,
        ttft_ms=35.0, duration_ms=180.0, cost_usd=cost, tenant="acme", timestamp_ms=1_700_000_000_000,
        decision=decision, final=final, project="web", user="u-42", api_key_id="0123456789abcdef",
        prompt_sha256="f" * 64)


def test_a_row_holds_the_decision_and_the_outcome_and_no_text() -> None:
    row = dict(zip(NAMES, row_from_summary(summary()), strict=True))
    assert (row["tenant"], row["project"], row["user_id"], row["api_key_id"]) == ("acme", "web", "u-42",
                                                                                  "0123456789abcdef")
    assert (row["chosen_model"], row["serving_model"], row["strategy"], row["policy_version"]) == (
        "fast-cheap", "fast-cheap", "quality_target", 3)
    assert (row["status"], row["attempts"], row["input_tokens"], row["output_tokens"], row["cached_tokens"]) == (
        "complete", 2, 120, 40, 100)
    assert row["predicted_success"] == pytest.approx(0.81)
    candidates = json.loads(row["candidates"])
    assert candidates[0]["factors"] == {"cost": 1.0} and candidates[1]["rejected"] == "context too small"
    assert json.loads(row["features"])["task_type"] == "TASK_TYPE_CODE" and json.loads(row["fallbacks"]) == ["strong"]
    # A summary from a router that sent no decision (older, or failed before one) still makes a row.
    bare = dict(zip(NAMES, row_from_summary(telemetry_pb2.RequestSummary(decision_id="d2")), strict=True))
    assert bare["predicted_success"] is None and bare["candidates"] == "[]" and bare["status"] == "unspecified"


async def test_sqlite_migrates_once_and_keeps_one_row_per_decision(tmp_path) -> None:
    path = tmp_path / "ledger.db"
    for _ in range(2):  # a second open finds the schema in place
        store = SqliteLedger(path)
        await store.open()
        await store.insert([row_from_summary(summary("d1")), row_from_summary(summary("d2"))])
        await store.insert([row_from_summary(summary("d1", cost=9.0))])  # delivered twice: the first stays
        assert await store.count() == 2
        await store.close()
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT max(version) FROM routemesh_schema_migrations").fetchone()[0] == SCHEMA_VERSION
        assert db.execute("SELECT cost_usd FROM ledger_requests WHERE decision_id = 'd1'").fetchone()[0] == 0.002


def test_ledger_urls() -> None:
    assert isinstance(ledger_store("sqlite:///var/ledger.db"), SqliteLedger)
    assert str(ledger_store("sqlite:////tmp/x/ledger.db").path) == "/tmp/x/ledger.db"  # type: ignore[attr-defined]
    assert str(ledger_store("sqlite:///rel/ledger.db").path) == "rel/ledger.db"  # type: ignore[attr-defined]
    pg = ledger_store("postgresql://me:secret-pw@db.internal:5433/test?schema=run_1")
    assert isinstance(pg, PostgresLedger) and pg.schema == "run_1"
    assert "secret-pw" not in pg.url_for_humans and "db.internal:5433" in pg.url_for_humans
    for bad in ("mysql://x/y", "sqlite://", "postgresql://h/db?schema=Robert'); DROP"):
        with pytest.raises(ValueError):
            ledger_store(bad)


class Flaky:
    """A SQLite ledger whose inserts fail while `down` is set: the database stopped, then back."""

    def __init__(self, inner: SqliteLedger):
        self.inner = inner
        self.url_for_humans = inner.url_for_humans
        self.down = False

    async def open(self) -> None:
        if self.down:
            raise ConnectionRefusedError("connection refused")
        await self.inner.open()

    async def insert(self, rows, texts=()) -> None:
        if self.down:
            raise ConnectionRefusedError("connection refused")
        await self.inner.insert(rows, texts)

    async def purge_texts(self, now_ms: int) -> int:
        return await self.inner.purge_texts(now_ms)

    async def count(self) -> int:
        return await self.inner.count()

    async def close(self) -> None:
        await self.inner.close()


async def eventually(condition, timeout_s: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def test_rows_wait_while_the_database_is_down_and_drain_when_it_returns(tmp_path, caplog) -> None:
    caplog.set_level(logging.WARNING)
    store = Flaky(SqliteLedger(tmp_path / "ledger.db"))
    store.down = True
    writer = LedgerWriter(store, max_buffered=50, batch_rows=7, interval_s=0.02, max_backoff_s=0.05)
    writer.start()
    writer.add([row_from_summary(summary(f"d{i}")) for i in range(40)])
    await asyncio.sleep(0.3)
    assert (writer.stats.written, writer.stats.buffered, writer.stats.healthy) == (0, 40, False)
    writer.add([row_from_summary(summary(f"e{i}")) for i in range(20)])  # 10 fit, 10 dropped
    assert (writer.stats.buffered, writer.stats.dropped) == (50, 10)
    assert "ledger buffer full" in caplog.text or "unavailable" in caplog.text
    store.down = False
    await eventually(lambda: writer.stats.written == 50)
    assert writer.stats.healthy and writer.stats.buffered == 0
    writer.add([row_from_summary(summary("last"))])
    await writer.stop()  # what is buffered is written before the store closes
    check = SqliteLedger(tmp_path / "ledger.db")
    await check.open()
    assert await check.count() == 51
    await check.close()


async def test_stop_counts_what_it_could_not_write(tmp_path, caplog) -> None:
    store = Flaky(SqliteLedger(tmp_path / "ledger.db"))
    store.down = True
    writer = LedgerWriter(store, interval_s=0.02, max_backoff_s=0.05, write_timeout_s=0.1)
    writer.start()
    writer.add([row_from_summary(summary("d1"))])
    await writer.stop(deadline_s=0.3)
    assert writer.stats.dropped == 1 and "not written at shutdown" in caplog.text


def test_docs_show_the_schema_the_code_makes() -> None:
    from pathlib import Path

    from routemesh.telemetry.ledger.stores import schema_markdown

    docs = (Path(__file__).resolve().parents[2] / "docs" / "ledger.md").read_text()
    assert schema_markdown() in docs, "docs/ledger.md: paste schema_markdown() into the Schema section"


def feedback(decision_id: str = "a" * 32, **fields) -> common_pb2.Feedback:
    message = common_pb2.Feedback(decision_id=decision_id, **{k: v for k, v in fields.items() if k != "score"})
    if "score" in fields:
        message.score = fields["score"]
    return message


def test_feedback_is_checked_before_anything_is_looked_up() -> None:
    from routemesh.common.errors import InvalidRequest
    from routemesh.telemetry.ledger.feedback import checked

    assert checked(feedback(score=0.25)) == ("a" * 32, 0.25)
    assert checked(feedback("chatcmpl-" + "b" * 32, thumbs=common_pb2.THUMBS_DOWN)) == ("b" * 32, 0.0)
    assert checked(feedback(thumbs=common_pb2.THUMBS_UP, label="too-long:ok", comment="x" * 2000))[1] == 1.0
    for bad, field in ((feedback("nope", score=1.0), "feedback.decision_id"),
                       (feedback(), "feedback.score"),
                       (feedback(score=0.5, thumbs=common_pb2.THUMBS_UP), "feedback.score"),
                       (feedback(score=float("nan")), "feedback.score"),
                       (feedback(score=1.5), "feedback.score"),
                       (feedback(score=1.0, label="has space"), "feedback.label"),
                       (feedback(score=1.0, comment="x" * 2001), "feedback.comment")):
        with pytest.raises(InvalidRequest) as raised:
            checked(bad)
        assert [f for f, _ in raised.value.field_violations] == [field], bad


async def test_feedback_needs_a_known_decision_of_the_callers_tenant_once(tmp_path) -> None:
    from routemesh.common.errors import FeedbackExists, LedgerNotConfigured, NotFound
    from routemesh.telemetry.ledger.feedback import FeedbackBook

    with pytest.raises(LedgerNotConfigured):
        await FeedbackBook(None).record(feedback(score=1.0))
    store = SqliteLedger(tmp_path / "ledger.db")
    writer = LedgerWriter(store, interval_s=60)  # nothing written unless asked: rows stay buffered
    writer.start()
    await eventually(lambda: writer.opened)
    book = FeedbackBook(writer)
    written, buffered = "1" * 32, "2" * 32
    await store.insert([row_from_summary(summary(written))])
    writer.add([row_from_summary(summary(buffered))])
    receipt = await book.record(feedback(written, thumbs=common_pb2.THUMBS_UP, label="helpful"), tenant="acme")
    assert (receipt.decision_id, receipt.score, receipt.model) == (written, 1.0, "fast-cheap")
    assert (await book.record(feedback("chatcmpl-" + buffered, score=0.3))).score == pytest.approx(0.3)
    with pytest.raises(FeedbackExists):
        await book.record(feedback(written, score=0.0), tenant="acme")
    with pytest.raises(NotFound) as raised:
        await book.record(feedback("3" * 32, score=1.0))
    assert raised.value.reason == "UNKNOWN_DECISION"
    with pytest.raises(NotFound):  # another tenant's request is as unknown as a made-up one
        await book.record(feedback(buffered, score=1.0), tenant="globex")
    await writer.stop()
    with sqlite3.connect(tmp_path / "ledger.db") as db:
        assert db.execute("SELECT decision_id, score, label FROM ledger_feedback ORDER BY score").fetchall() == [
            (buffered, 0.3, ""), (written, 1.0, "helpful")]


async def test_kept_conversations_are_written_with_their_rows_and_deleted_after_retention(tmp_path) -> None:
    from routemesh.telemetry.ledger.rows import texts_from_summaries

    store = SqliteLedger(tmp_path / "ledger.db")
    writer = LedgerWriter(store, interval_s=0.02)
    writer.start()
    kept = summary("k" * 32)
    kept.conversation_json, kept.text_retention_days = '[{"role": "user", "content": "hi"}]', 1
    now = 1_800_000_000_000
    writer.add([row_from_summary(kept), row_from_summary(summary("n" * 32))],
               texts_from_summaries([kept, summary("n" * 32)], now))
    await eventually(lambda: writer.stats.written == 2)
    await writer.stop()
    with sqlite3.connect(tmp_path / "ledger.db") as db:
        assert db.execute("SELECT decision_id, conversation, expires_at_ms FROM ledger_texts").fetchall() == [
            ("k" * 32, '[{"role": "user", "content": "hi"}]', now + 86_400_000)]
    await store.open()
    assert await store.purge_texts(now + 86_400_000 - 1) == 0
    assert await store.purge_texts(now + 86_400_000) == 1
    await store.close()


def test_text_is_kept_only_where_the_route_opts_in_and_the_data_class_allows() -> None:
    import yaml

    from routemesh.common.policy import PolicyVersion, load_default_policy_text, parse_policy
    from routemesh.router.decision.compiled import RoutingPolicy
    from routemesh.router.pipeline import stored_text

    doc = yaml.safe_load(load_default_policy_text())
    doc["routes"]["auto"]["store_text"] = {"retention_days": 14, "data_classes": ["internal"]}
    policy = RoutingPolicy.compile(PolicyVersion(policy=parse_policy(yaml.safe_dump(doc)), version=1, digest="x"))
    messages = [common_pb2.Message(role=common_pb2.ROLE_USER, content="héllo")]
    kept = stored_text(policy, "auto", "", messages)
    assert json.loads(kept["conversation_json"]) == [{"role": "user", "content": "héllo"}]
    assert kept["text_retention_days"] == 14
    assert stored_text(policy, "auto", "internal", messages)
    assert stored_text(policy, "auto", "confidential", messages) == {}
    assert stored_text(policy, "code", "", messages) == {} and stored_text(policy, "", "", messages) == {}
