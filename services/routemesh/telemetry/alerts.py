"""Alerting: the policy's alert rules, evaluated off the request path, delivered to webhooks (firing and
resolved, deduplicated, retried with backoff)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from routemesh.common.policy_alerts import Alerts, BudgetRule, ErrorRateRule, FailoverRateRule, LatencyRule, OutageRule
from routemesh.common.policy_schema import Policy
from routemesh.common.policy_watch import PolicyHolder
from routemesh.telemetry.alerting import readings
from routemesh.telemetry.alerting.claims import Claims, LocalClaims
from routemesh.telemetry.alerting.delivery import WebhookSender
from routemesh.telemetry.alerting.payloads import body
from routemesh.telemetry.alerting.spend import SharedSpend
from routemesh.telemetry.alerting.tallies import FailoverTally, SpendTally, known_scopes, utc
from routemesh.telemetry.alerting.tracker import FIRING, RESOLVED, Alert, AlertTracker, Reading, RuleRef, Transition
from routemesh.telemetry.store import HealthStore, ModelStats
from routemesh.v1 import telemetry_pb2

log = logging.getLogger(__name__)

# Evaluation waits this long for a policy; once it holds one, `alerts.evaluate_every_s` (10 s by default) even
# when the policy has no rules (an evaluation then only resolves what stopped replicas left claimed), so a
# quiet mesh without rules is not woken every second, nor Redis asked.
IDLE_S = 1.0
# A claimed alert no replica has said it still sees for this many evaluation intervals (plus a margin) is
# resolved by any replica whose own reading says it no longer holds (its replica stopped).
STALE_INTERVALS = 3
STALE_MARGIN_MS = 5000
_STATES = {FIRING: telemetry_pb2.ALERT_STATE_FIRING, RESOLVED: telemetry_pb2.ALERT_STATE_RESOLVED}
_HEALTH_KINDS = (OutageRule, ErrorRateRule, LatencyRule)


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


def alert_to_proto(alert: Alert) -> telemetry_pb2.Alert:
    return telemetry_pb2.Alert(
        rule=alert.rule, kind=alert.kind, severity=alert.severity, subject=alert.subject,
        state=_STATES.get(alert.state, telemetry_pb2.ALERT_STATE_UNSPECIFIED), value=alert.value,
        threshold=alert.threshold, started_at_ms=alert.started_at_ms, resolved_at_ms=alert.resolved_at_ms,
        summary=alert.summary, fingerprint=alert.fingerprint)


class AlertEngine:
    """Evaluates the policy's alert rules; the telemetry servicer feeds it request summaries.

    Model health comes from the store (shared by replicas through Redis), failovers and spend from the
    request summaries this replica receives, and spend also from the routers' Redis budget ledger when
    `spend` is given. Evaluation runs every `alerts.evaluate_every_s` in its own task; notifications go
    to `sender`, which never blocks it; `claims` decide which replica sends a transition.
    """

    def __init__(self, holder: PolicyHolder, store: HealthStore, *, sender: WebhookSender | None = None,
                 claims: Claims | None = None, spend: SharedSpend | None = None,
                 clock_ms: Callable[[], int] = wall_clock_ms):
        self.holder = holder
        self.store = store
        self.sender = sender or WebhookSender()
        self.claims = claims or LocalClaims()
        self.spend = spend
        self.clock_ms = clock_ms
        self.tracker = AlertTracker()
        self.failovers = FailoverTally()
        self.spend_tally = SpendTally()
        self.evaluations = 0
        # (rule, severity) -> alerts firing, replaced whole after each evaluation (read by metrics' thread).
        self.firing_counts: dict[tuple[str, str], int] = {}
        self._task: asyncio.Task[None] | None = None

    def observe_requests(self, summaries: Sequence[telemetry_pb2.RequestSummary]) -> None:
        """Take note of finished requests (failovers, spend); cheap and never waits."""
        held = self.holder.current
        if held is None or not held.policy.alerts.rules:
            return
        now_ms = self.clock_ms()
        now_s, now = now_ms // 1000, utc(now_ms)
        policy = held.policy
        costs: dict[tuple[str, str], float] = {}
        for summary in summaries:
            if summary.route:
                self.failovers.add(summary.route, len(summary.final.attempts) > 1, now_s)
            if summary.tenant:
                pair = (summary.tenant, summary.project)
                costs[pair] = costs.get(pair, 0.0) + summary.cost_usd
        if policy.budgets:
            # Per tenant and project once per report: finding a request's budget accounts is the costly part.
            for (tenant, project), cost in costs.items():
                self.spend_tally.add(policy, tenant, project, cost, now)

    def list(self, resolved_limit: int) -> telemetry_pb2.ListAlertsResponse:
        """Alerts firing now, and the newest `resolved_limit` resolved ones."""
        firing = sorted(self.tracker.firing(), key=lambda a: (a.started_at_ms, a.rule, a.subject))
        resolved = list(self.tracker.resolved)[:resolved_limit]
        return telemetry_pb2.ListAlertsResponse(firing=[alert_to_proto(a) for a in firing],
                                                resolved=[alert_to_proto(a) for a in resolved])

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="alert-evaluation")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.sender.stop()
        await self.claims.close()
        if self.spend is not None:
            await self.spend.close()

    async def _run(self) -> None:
        while True:
            held = self.holder.current
            settings = held.policy.alerts if held is not None else None
            try:
                await self.evaluate()
            except Exception:  # the next evaluation may succeed; alerting must not die with one bad one
                log.exception("alert evaluation failed")
            await asyncio.sleep(settings.evaluate_every_s if settings is not None else IDLE_S)

    async def evaluate(self) -> list[Transition]:
        """One evaluation of every rule; the transitions it notified (tests call this directly)."""
        held = self.holder.current
        if held is None:
            return []
        policy, settings = held.policy, held.policy.alerts
        self.sender.configure(settings.webhooks)
        now_ms = self.clock_ms()
        self.evaluations += 1
        measured = await self._measure(policy, settings, now_ms)
        transitions: list[Transition] = []
        for rule in settings.rules:
            ref = RuleRef(rule.name, rule.kind, rule.severity, rule.for_s, rule.webhooks)
            transitions += self.tracker.update(ref, measured.get(rule.name), now_ms)
        transitions += self.tracker.retire({rule.name for rule in settings.rules}, now_ms)
        sent = [t for t in transitions if await self._claim(t, now_ms)]
        await self.claims.touch(self.tracker.firing(), now_ms)
        sent += await self._adopt(settings, measured, now_ms)
        for transition in sent:
            self._notify(transition, settings)
        counts = {(rule.name, rule.severity): 0 for rule in settings.rules}
        for alert in self.tracker.firing():
            counts[(alert.rule, alert.severity)] = counts.get((alert.rule, alert.severity), 0) + 1
        self.firing_counts = counts
        return sent

    async def _measure(self, policy: Policy, settings: Alerts, now_ms: int) -> dict[str, list[Reading] | None]:
        """Each rule's readings by rule name; None for a rule whose data could not be read."""
        stats = None
        if any(isinstance(rule, _HEALTH_KINDS) for rule in settings.rules):
            stats = await self._health(policy, now_ms)
        budget = None
        if any(isinstance(rule, BudgetRule) for rule in settings.rules):
            budget = await self._budgets(policy, now_ms)
        window_s = self.store.window_s
        out: dict[str, list[Reading] | None] = {}
        for rule in settings.rules:
            if isinstance(rule, FailoverRateRule):
                out[rule.name] = readings.failover_rate(rule, policy, self.failovers, now_ms // 1000)
            elif isinstance(rule, BudgetRule):
                out[rule.name] = readings.budget(rule, *budget) if budget is not None else None
            elif stats is None:
                out[rule.name] = None
            elif isinstance(rule, OutageRule):
                out[rule.name] = readings.outage(rule, policy, stats)
            elif isinstance(rule, ErrorRateRule):
                out[rule.name] = readings.error_rate(rule, policy, stats, window_s)
            else:
                out[rule.name] = readings.latency(rule, policy, stats, window_s)
        return out

    async def _health(self, policy: Policy, now_ms: int) -> dict[str, ModelStats] | None:
        stats = await self.store.snapshot(list(policy.models), now_ms, policy.health.circuit)
        # A stale snapshot is the last one the store could read: unknown, not healthy.
        return None if any(entry.stale for entry in stats.values()) else stats

    async def _budgets(self, policy: Policy, now_ms: int) -> tuple[Any, ...] | None:
        now = utc(now_ms)
        pairs = set(self.spend_tally.pairs)
        if self.spend is not None:
            pairs = await self.spend.pairs(pairs)
        scopes = known_scopes(policy, pairs)
        self.spend_tally.prune(scopes, now)
        spent = {scope.account: self.spend_tally.spent(scope, now) for scope in scopes}
        if self.spend is not None:
            shared = await self.spend.spent(scopes)
            if shared is None:
                return None
            # This replica's sum is a floor (other replicas got other summaries; routers may keep budgets in
            # memory); the ledger's is the whole when routers share it.
            spent = {account: max(usd, shared.get(account, 0.0)) for account, usd in spent.items()}
        return scopes, spent, {scope.account: scope.period_id(now) for scope in scopes}

    async def _claim(self, transition: Transition, now_ms: int) -> bool:
        alert = transition.alert
        if transition.status == RESOLVED:
            return await self.claims.claim_resolved(alert.fingerprint)
        won, started = await self.claims.claim_firing(alert, now_ms)
        if not won:  # another replica notified; show its start time
            local = self.tracker.alerts.get(alert.fingerprint)
            if local is not None:
                local.started_at_ms = started
        return won

    async def _adopt(self, settings: Alerts, measured: dict[str, list[Reading] | None],
                     now_ms: int) -> list[Transition]:
        """Resolve alerts another replica claimed and stopped refreshing, when this replica sees them over."""
        shared = await self.claims.shared()
        if not shared:
            return []
        rules = {rule.name: rule for rule in settings.rules}
        stale_ms = now_ms - STALE_INTERVALS * settings.evaluate_every_s * 1000 - STALE_MARGIN_MS
        active = {(name, r.subject) for name, found in measured.items() for r in found or () if r.active}
        out = []
        for fp, entry in shared.items():
            rule, subject = entry.get("rule", ""), entry.get("subject", "")
            if fp in self.tracker.alerts or entry.get("refreshed_ms", 0) > stale_ms:
                continue
            if rule in rules and (measured.get(rule) is None or (rule, subject) in active):
                continue
            if not await self.claims.claim_resolved(fp):
                continue
            alert = Alert(rule, entry.get("kind", ""), entry.get("severity", ""), subject, fp, RESOLVED,
                          float(entry.get("value", 0.0)), float(entry.get("threshold", 0.0)),
                          str(entry.get("summary", "")), 0, int(entry.get("started_at_ms", 0)), now_ms,
                          tuple(entry.get("webhooks") or ()))
            self.tracker.resolved.appendleft(alert)
            out.append(Transition(RESOLVED, alert))
        return out

    def _notify(self, transition: Transition, settings: Alerts) -> None:
        alert = transition.alert
        names = alert.webhooks or tuple(hook.name for hook in settings.webhooks)
        formats = {hook.name: hook.format for hook in settings.webhooks}
        log.info("alert %s: %s", transition.status, alert.summary)
        for name in names:
            if name in formats:
                what = f"{transition.status} {alert.rule} {alert.subject}"
                self.sender.submit(name, body(transition, name, formats[name]), what)

