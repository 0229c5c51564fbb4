"""The console's answers: each /console/api document built from the sources, the history and the held policy."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from routemesh.common.policy import PolicyVersion
from routemesh.gateway.console import tables
from routemesh.gateway.console.auth import ConsoleAuth
from routemesh.gateway.console.history import SnapshotHistory
from routemesh.gateway.console.policy_diff import policy_diff
from routemesh.gateway.console.sources import ConsoleSources, Metadata

DECISIONS = 100


def _policy_facts(policy: Any) -> dict[str, Any]:
    return {"version": policy.version, "digest": policy.digest, "source": policy.source,
            "created_at_ms": policy.created_at_ms}


class Console:
    """What the console's endpoints return; `held` is the gateway's watched policy (None before the first)."""

    def __init__(self, sources: ConsoleSources, auth: ConsoleAuth, held: Callable[[], PolicyVersion | None],
                 history: SnapshotHistory | None = None):
        self.sources = sources
        self.auth = auth
        self.held = held
        self.history = history or SnapshotHistory()

    async def overview(self, metadata: Metadata) -> dict[str, Any]:
        """Models (with their history), routes, and the policy version: what the page polls every 2 s."""
        snapshot = await self.sources.snapshot(metadata)
        recent = await self.sources.recent(metadata)
        held = self.held()
        now_ms = int(time.time() * 1000)
        models = tables.model_rows(snapshot, held.policy if held else None)
        self.history.add(snapshot.taken_at_ms or now_ms, models)
        ledger = snapshot.ledger if snapshot.HasField("ledger") else None
        return {
            "now_ms": now_ms, "window_seconds": snapshot.window_seconds,
            "policy": {"version": held.version, "digest": held.digest} if held else None,
            "models": models, "routes": tables.route_rows(recent), "recent_requests": len(recent),
            "history": self.history.series(), "route_timeline": tables.route_timeline(recent, now_ms),
            "ledger": {"written": ledger.written, "buffered": ledger.buffered, "dropped": ledger.dropped,
                       "healthy": ledger.healthy, "last_error": ledger.last_error} if ledger else None,
        }

    async def decisions(self, metadata: Metadata, limit: int = DECISIONS) -> dict[str, Any]:
        recent = await self.sources.recent(metadata)
        return {"decisions": [tables.decision_row(s) for s in recent[:limit]]}

    async def decision(self, decision_id: str, metadata: Metadata) -> dict[str, Any] | None:
        """One decision's Explain, or None when telemetry no longer holds it."""
        found = tables.find(await self.sources.recent(metadata), decision_id)
        if found is None:
            found = await self.sources.one_request(decision_id, metadata)
        return tables.explain(found) if found is not None else None

    async def policy(self, metadata: Metadata) -> dict[str, Any]:
        """The policy in force, its diff against the version before (when control still keeps it), the audit log."""
        current = await self.sources.policy(0, metadata)
        assert current is not None  # version 0 is the one in force: NOT_FOUND never
        previous = await self.sources.policy(current.version - 1, metadata) if current.version > 1 else None
        changes = await self.sources.policy_changes(metadata)
        note = ""
        if current.version == 1:
            note = "version 1 is the first: nothing to compare it with"
        elif previous is None:
            note = f"control no longer keeps version {current.version - 1}"
        return {
            "current": _policy_facts(current), "previous": _policy_facts(previous) if previous else None,
            "diff": policy_diff(previous.policy_json, current.policy_json, previous.version, current.version)
            if previous else None,
            "note": note,
            "changes": [{"at_ms": c.at_ms, "actor": c.actor, "action": c.action, "version": c.version,
                         "digest": c.digest, "summary": c.summary} for c in changes],
        }

    async def alerts(self, metadata: Metadata) -> dict[str, Any]:
        reply = await self.sources.alerts(metadata)
        return {"firing": [tables.alert_row(a) for a in reply.firing],
                "resolved": [tables.alert_row(a) for a in reply.resolved]}

    async def ledger(self, metadata: Metadata) -> dict[str, Any]:
        report = await self.sources.ledger_report(metadata)
        if report is None:
            return {"configured": False, "message": "no ledger: telemetry runs without --ledger-url"}
        return {"configured": True, "report": json.loads(report)}

    async def close(self) -> None:
        await self.sources.close()


def build_console(telemetry_address: str, control_address: str, held: Callable[[], PolicyVersion | None], *,
                  redis_url: str = "", redis_prefix: str = "routemesh:") -> Console:
    """The gateway's console (create inside the running loop: it opens channels); KeyConfigError when
    ROUTEMESH_ADMIN_KEY is set but unusable."""
    auth = ConsoleAuth.from_env(redis_url, redis_prefix)
    return Console(ConsoleSources(telemetry_address, control_address), auth, held)
