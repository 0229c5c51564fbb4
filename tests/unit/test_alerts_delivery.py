"""Webhook delivery against a local receiver: order, retries with backoff, give-up, drops, no secret in logs."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from routemesh.common.policy_alerts import Webhook
from routemesh.telemetry.alerting.delivery import WebhookSender, backoff_s, resolve, retryable
from tests.webhook_receiver import WebhookReceiver

ENV = {"ROUTEMESH_POLICY_HOOK_TOKEN": "t0ken-value", "ROUTEMESH_POLICY_HOOK_PATH": "secret-path"}


@pytest.fixture
def receiver():
    with WebhookReceiver() as started:
        yield started


def sender_for(receiver: WebhookReceiver, **hook_fields) -> WebhookSender:
    sender = WebhookSender(base_delay_s=0.05, max_delay_s=0.2, environ=ENV)
    fields = {"name": "ops", "url": f"{receiver.url}/${{ROUTEMESH_POLICY_HOOK_PATH}}",
              "headers": {"Authorization": "Bearer ${ROUTEMESH_POLICY_HOOK_TOKEN}"}, **hook_fields}
    sender.configure([Webhook(**fields)])
    return sender


async def until(condition, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


def test_backoff_doubles_from_its_base_and_is_capped():
    assert [backoff_s(n) for n in range(1, 9)] == [0.5, 1, 2, 4, 8, 16, 30, 30]
    assert retryable(500) and retryable(503) and retryable(429) and retryable(408)
    assert not retryable(400) and not retryable(404) and not retryable(301)


def test_references_expand_from_telemetrys_environment_and_problems_name_the_variable():
    target = resolve(Webhook(name="a", url="http://h/${ROUTEMESH_POLICY_HOOK_PATH}",
                             headers={"X": "${ROUTEMESH_POLICY_HOOK_TOKEN}"}), ENV)
    assert target.url == "http://h/secret-path" and target.headers == (("X", "t0ken-value"),)
    with pytest.raises(ValueError, match="ROUTEMESH_POLICY_UNSET is not set"):
        resolve(Webhook(name="a", url="http://h/${ROUTEMESH_POLICY_UNSET}"), ENV)
    with pytest.raises(ValueError, match="HOME may not be read"):
        resolve(Webhook(name="a", url="http://h/${HOME}"), {"HOME": "/root"})


async def test_delivers_in_order_with_expanded_url_and_headers(receiver):
    sender = sender_for(receiver)
    for i in range(5):
        assert sender.submit("ops", {"n": i}, f"n{i}")
    await until(lambda: len(receiver.accepted()) == 5)
    assert [d.body["n"] for d in receiver.accepted()] == [0, 1, 2, 3, 4]
    first = receiver.accepted()[0]
    assert first.path == "/secret-path" and first.headers["Authorization"] == "Bearer t0ken-value"
    assert first.headers["Content-Type"] == "application/json"
    assert sender.counts["delivered"] == 5 and sender.counts["retried"] == 0
    await sender.stop()


async def test_a_failing_receiver_is_retried_with_backoff_until_it_answers(receiver):
    receiver.fail_next = 3
    sender = sender_for(receiver)
    sender.submit("ops", {"n": 1}, "n1")
    await until(lambda: len(receiver.accepted()) == 1)
    tries = receiver.attempts()
    assert [d.status for d in tries] == [500, 500, 500, 200]
    gaps = [b.at - a.at for a, b in zip(tries, tries[1:], strict=False)]
    # 0.05, 0.1, 0.2 (the cap): each wait at least its backoff.
    assert gaps[0] >= 0.045 and gaps[1] >= 0.095 and gaps[2] >= 0.19, gaps
    assert sender.counts["retried"] == 3 and sender.counts["delivered"] == 1 and sender.counts["failed"] == 0
    await sender.stop()


async def test_gives_up_after_max_attempts_and_never_logs_the_secret(receiver, caplog):
    receiver.down = 503
    sender = sender_for(receiver, max_attempts=3)
    with caplog.at_level(logging.INFO):
        sender.submit("ops", {"n": 1}, "firing x")
        await until(lambda: sender.counts["failed"] == 1)
    assert len(receiver.attempts()) == 3 and sender.counts["retried"] == 2
    assert "not delivered after 3 attempt(s) (last: HTTP 503)" in caplog.text
    assert "secret-path" not in caplog.text and "t0ken-value" not in caplog.text
    await sender.stop()


async def test_a_refusal_that_would_repeat_is_not_retried(receiver):
    receiver.down = 404
    sender = sender_for(receiver)
    sender.submit("ops", {"n": 1}, "n1")
    await until(lambda: sender.counts["failed"] == 1)
    assert len(receiver.attempts()) == 1 and sender.counts["retried"] == 0
    await sender.stop()


async def test_connection_refused_is_retried_and_counted(caplog):
    sender = WebhookSender(base_delay_s=0.01, max_delay_s=0.02, environ={})
    sender.configure([Webhook(name="gone", url="http://127.0.0.1:9/secret-path", max_attempts=2)])
    sender.submit("gone", {"n": 1}, "n1")
    await until(lambda: sender.counts["failed"] == 1)
    assert sender.counts["retried"] == 1 and "secret-path" not in caplog.text
    await sender.stop()


async def test_submit_never_waits_and_a_full_queue_drops(receiver):
    receiver.delay_s = 0.5
    sender = WebhookSender(queue_size=3, environ=ENV)
    sender.configure([Webhook(name="ops", url=f"{receiver.url}/slow")])
    started = time.perf_counter()
    results = [sender.submit("ops", {"n": i}, f"n{i}") for i in range(10)]
    assert time.perf_counter() - started < 0.05
    # One is taken by the worker only once the loop runs; the queue holds three.
    assert results.count(True) == 3 and sender.counts["dropped"] == 7
    assert sender.submit("unknown", {}, "x") is False
    await sender.stop(drain_s=0)


async def test_an_unusable_webhook_is_logged_without_values_and_its_notifications_dropped(caplog):
    sender = WebhookSender(environ={})
    with caplog.at_level(logging.ERROR):
        sender.configure([Webhook(name="ops", url="${ROUTEMESH_POLICY_HOOK_URL}")])
    assert "ops cannot be used" in caplog.text and "ROUTEMESH_POLICY_HOOK_URL is not set" in caplog.text
    assert sender.submit("ops", {}, "x") is False and sender.counts["dropped"] == 1
