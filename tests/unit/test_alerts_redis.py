"""Alerting across telemetry replicas sharing Redis: one notification per transition, spend from the routers' ledger."""

from __future__ import annotations

import uuid

from routemesh.router.admission.budget import BudgetScope
from routemesh.router.admission.budget_redis import RedisBudgetLedger
from routemesh.telemetry.alerting.claims import RedisClaims
from routemesh.telemetry.alerting.spend import SharedSpend
from routemesh.telemetry.alerts import AlertEngine
from routemesh.telemetry.store import InMemoryHealthStore
from tests.conftest import REDIS_URL
from tests.unit.test_alerts import Clock, RecordingSender, fail, holder_with, summaries

OUTAGE = {"evaluate_every_s": 1, "webhooks": [{"name": "ops", "url": "http://127.0.0.1:9/h"}],
          "rules": [{"name": "down", "kind": "outage", "severity": "critical"}]}


def replica(prefix: str, store: InMemoryHealthStore, clock: Clock, alerts=OUTAGE, **changes) -> tuple[AlertEngine,
                                                                                                     RecordingSender]:
    sender = RecordingSender()
    engine = AlertEngine(holder_with(alerts, **changes), store, sender=sender,  # type: ignore[arg-type]
                         claims=RedisClaims(REDIS_URL, prefix), spend=SharedSpend(REDIS_URL, prefix), clock_ms=clock)
    return engine, sender


def statuses(*senders: RecordingSender) -> list[str]:
    return [body["status"] for sender in senders for _, body in sender.sent]


async def test_two_replicas_seeing_the_same_outage_notify_it_once(redis_prefix):
    prefix = f"{redis_prefix}alerts:{uuid.uuid4().hex[:6]}:"
    store, clock = InMemoryHealthStore(window_s=60, cache_ttl_s=0), Clock()
    (a, sent_a), (b, sent_b) = replica(prefix, store, clock), replica(prefix, store, clock)
    await fail(store, "strong", 5, clock.ms)
    await a.evaluate()
    await b.evaluate()
    assert statuses(sent_a, sent_b) == ["firing"]
    # Both show it firing, with the start time of the replica that notified.
    assert [x.started_at_ms for x in a.list(5).firing] == [x.started_at_ms for x in b.list(5).firing] == [clock.ms]
    clock.ms += 1000
    await b.evaluate()
    await a.evaluate()
    assert statuses(sent_a, sent_b) == ["firing"]
    clock.ms += 120_000  # the failures leave the window: the breaker closes
    await b.evaluate()
    await a.evaluate()
    assert statuses(sent_a, sent_b) == ["firing", "resolved"]
    for engine in (a, b):
        await engine.stop()


async def test_a_restarted_replica_does_not_notify_again_and_one_that_outlives_the_notifier_resolves(redis_prefix):
    prefix = f"{redis_prefix}alerts:{uuid.uuid4().hex[:6]}:"
    store, clock = InMemoryHealthStore(window_s=60, cache_ttl_s=0), Clock()
    first, sent_first = replica(prefix, store, clock)
    await fail(store, "strong", 5, clock.ms)
    await first.evaluate()
    await first.stop()  # it stops while the alert fires
    restarted, sent_restarted = replica(prefix, store, clock)
    clock.ms += 1000
    await restarted.evaluate()
    assert statuses(sent_first, sent_restarted) == ["firing"]  # still firing: no second notification
    await restarted.stop()
    # Now the condition clears while no replica holds the alert: a fresh one resolves it once it is stale.
    clock.ms += 120_000
    late, sent_late = replica(prefix, store, clock)
    await late.evaluate()
    assert statuses(sent_first, sent_restarted, sent_late) == ["firing", "resolved"]
    assert [x.rule for x in late.list(5).resolved] == ["down"]
    await late.evaluate()
    assert len(sent_late.sent) == 1
    await late.stop()


async def test_budget_spend_is_read_from_the_routers_ledger(redis_prefix):
    prefix = f"{redis_prefix}alerts:{uuid.uuid4().hex[:6]}:"
    store, clock = InMemoryHealthStore(window_s=60, cache_ttl_s=0), Clock()
    rules = {"evaluate_every_s": 1, "rules": [{"name": "budget", "kind": "budget", "fraction": 0.5}]}
    budgets = [{"name": "acme-day", "tenant": "acme", "period": "day", "limit_usd": 2.0}]
    engine, _ = replica(prefix, store, clock, rules, budgets=budgets)
    assert await engine.evaluate() == []
    # A router charges the account; this replica saw none of those requests.
    ledger = RedisBudgetLedger(REDIS_URL, prefix)
    scope = BudgetScope("acme-day", "tenant=acme", "day", 2.0)
    await ledger.settle(await ledger.reserve([scope], 1.5), 1.2)
    await ledger.close()
    fired = await engine.evaluate()
    assert [(t.alert.subject, round(t.alert.value, 2)) for t in fired] == [("budget=acme-day/tenant=acme", 0.6)]
    await engine.stop()


async def test_accounts_of_star_budgets_seen_by_one_replica_are_known_to_all(redis_prefix):
    prefix = f"{redis_prefix}alerts:{uuid.uuid4().hex[:6]}:"
    store, clock = InMemoryHealthStore(window_s=60, cache_ttl_s=0), Clock()
    rules = {"evaluate_every_s": 1, "rules": [{"name": "budget", "kind": "budget", "fraction": 0.5}]}
    (a, _), (b, _) = replica(prefix, store, clock, rules), replica(prefix, store, clock, rules)
    a.observe_requests(summaries("auto", 1, 1, tenant="zeta", cost=0.0))
    await a.evaluate()  # shares the pair
    ledger = RedisBudgetLedger(REDIS_URL, prefix)
    scope = BudgetScope("per-tenant-daily", "tenant=zeta", "day", 25.0)
    await ledger.settle(await ledger.reserve([scope], 20.0), 20.0)
    await ledger.close()
    fired = await b.evaluate()  # b never saw tenant zeta
    assert [t.alert.subject for t in fired] == ["budget=per-tenant-daily/tenant=zeta"]
    for engine in (a, b):
        await engine.stop()
