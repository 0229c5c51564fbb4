"""Which replica notifies: with replicas sharing Redis, the first to claim a transition sends it."""

from __future__ import annotations

import json
import logging
from typing import Any, Protocol

from routemesh.common.redis_client import FailFast, RedisUnavailable, create_client
from routemesh.telemetry.alerting.tracker import Alert

log = logging.getLogger(__name__)

# Touch an entry's refreshed_ms only while it exists: a replica still firing must not bring back an alert
# another replica resolved.
_TOUCH = """
local out = 0
for i = 2, #ARGV do
  local entry = redis.call('HGET', KEYS[1], ARGV[i])
  if entry then
    local decoded = cjson.decode(entry)
    decoded['refreshed_ms'] = tonumber(ARGV[1])
    redis.call('HSET', KEYS[1], ARGV[i], cjson.encode(decoded))
    out = out + 1
  end
end
return out
"""


def entry_of(alert: Alert, now_ms: int) -> dict[str, Any]:
    return {"rule": alert.rule, "kind": alert.kind, "severity": alert.severity, "subject": alert.subject,
            "started_at_ms": alert.started_at_ms, "summary": alert.summary, "value": alert.value,
            "threshold": alert.threshold, "webhooks": list(alert.webhooks), "refreshed_ms": now_ms}


class Claims(Protocol):
    async def claim_firing(self, alert: Alert, now_ms: int) -> tuple[bool, int]:
        """(whether this replica notifies, the alert's start time as the replicas agree on it)."""

    async def claim_resolved(self, fingerprint: str) -> bool:
        """Whether this replica notifies the resolution."""

    async def touch(self, alerts: list[Alert], now_ms: int) -> None:
        """Say that this replica still sees these alerts firing."""

    async def shared(self) -> dict[str, dict[str, Any]]:
        """Every alert firing by any replica's claim (fingerprint -> entry)."""

    async def close(self) -> None: ...


class LocalClaims:
    """One replica, no Redis: it notifies every transition."""

    async def claim_firing(self, alert: Alert, now_ms: int) -> tuple[bool, int]:
        return True, alert.started_at_ms

    async def claim_resolved(self, fingerprint: str) -> bool:
        return True

    async def touch(self, alerts: list[Alert], now_ms: int) -> None:
        pass

    async def shared(self) -> dict[str, dict[str, Any]]:
        return {}

    async def close(self) -> None:
        pass


class RedisClaims:
    """Firing alerts in one Redis hash, `{prefix}alerts:firing` (fingerprint -> entry): HSETNX claims a firing,
    HDEL a resolution, so of the replicas that see a transition exactly one notifies it.

    When Redis cannot be reached, the replica notifies anyway: a duplicate is better than a lost alert.
    """

    def __init__(self, url: str, prefix: str):
        self._redis = create_client(url, max_connections=4)
        self._key = f"{prefix}alerts:firing"
        self._touch = self._redis.register_script(_TOUCH)
        self._guard = FailFast(log)

    async def claim_firing(self, alert: Alert, now_ms: int) -> tuple[bool, int]:
        try:
            won = await self._guard.run(self._redis.hsetnx(self._key, alert.fingerprint,
                                                           json.dumps(entry_of(alert, now_ms))))
            if won:
                return True, alert.started_at_ms
            held = await self._guard.run(self._redis.hget(self._key, alert.fingerprint))
        except RedisUnavailable as exc:
            self._guard.warn(f"alerting: cannot claim notifications, sending them anyway: {exc}")
            return True, alert.started_at_ms
        started = json.loads(held).get("started_at_ms", alert.started_at_ms) if held else alert.started_at_ms
        return False, int(started)

    async def claim_resolved(self, fingerprint: str) -> bool:
        try:
            return bool(await self._guard.run(self._redis.hdel(self._key, fingerprint)))
        except RedisUnavailable as exc:
            self._guard.warn(f"alerting: cannot claim notifications, sending them anyway: {exc}")
            return True

    async def touch(self, alerts: list[Alert], now_ms: int) -> None:
        if not alerts:
            return
        try:
            await self._guard.run(self._touch(keys=[self._key], args=[now_ms, *(a.fingerprint for a in alerts)]))
        except RedisUnavailable as exc:
            self._guard.warn(f"alerting: cannot refresh firing alerts: {exc}")

    async def shared(self) -> dict[str, dict[str, Any]]:
        try:
            entries = await self._guard.run(self._redis.hgetall(self._key))
        except RedisUnavailable:
            return {}
        out = {}
        for fp, text in entries.items():
            try:
                out[fp] = json.loads(text)
            except ValueError:
                continue
        return out

    async def close(self) -> None:
        await self._redis.aclose()
