"""Caller API keys ("virtual keys"): a tenant and project, what they may use, limits, budget and expiry.

A key reads `rmk_<id>_<secret>`. The id is public (lists, logs, reports name it); the secret is shown once,
when the key is made or rotated, and stored only as HMAC-SHA256 under a server-side pepper
(ROUTEMESH_KEY_PEPPER), so a copy of Redis does not yield usable keys. Records live in Redis, shared by every
replica; readers cache a verdict for at most KeyCache.ttl_s, which bounds how long a revoked key still works.
Usage (requests, errors, tokens, cost) is kept per key and UTC day: routers add to it, control reads it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import os
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import date
from typing import Any

from redis import asyncio as aioredis

from routemesh.common.errors import InvalidRequest, NotFound

TOKEN_PREFIX = "rmk_"
PEPPER_ENV = "ROUTEMESH_KEY_PEPPER"
PEPPER_FILE_ENV = "ROUTEMESH_KEY_PEPPER_FILE"  # or the file that holds it (a mounted secret)
MIN_PEPPER_CHARS = 32
ROLES = ("user", "admin")
PERIODS = ("day", "month")
_TOKEN = re.compile(r"^rmk_([0-9a-f]{16})_([A-Za-z0-9_-]{43})$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@-]{0,127}$")
# A day's usage outlives it by about 13 months, so this month and the same month a year ago can be read.
USAGE_TTL_S = 400 * 86_400
_USAGE_COUNTS = ("requests", "errors", "input_tokens", "output_tokens")
# Hashes per add-usage script call: a bound on how long one call holds the caller's event loop and Redis.
USAGE_BATCH = 100
# KEYS: one usage hash per (key, day). ARGV: requests, errors, input_tokens, output_tokens, cost_usd per hash,
# then the TTL. One command for a whole batch: a pipeline of HINCRBYs (up to six per hash) costs the router
# several times the CPU, all of it encoding commands and parsing replies.
_ADD_USAGE = """
local counts = {'requests', 'errors', 'input_tokens', 'output_tokens'}
for i, key in ipairs(KEYS) do
  local at = 5 * (i - 1)
  for c = 1, 4 do
    if ARGV[at + c] ~= '0' then redis.call('HINCRBY', key, counts[c], ARGV[at + c]) end
  end
  if tonumber(ARGV[at + 5]) ~= 0 then redis.call('HINCRBYFLOAT', key, 'cost_usd', ARGV[at + 5]) end
  redis.call('EXPIRE', key, ARGV[#ARGV])
end
return #KEYS
"""


class KeyConfigError(ValueError):
    """Key settings that cannot be used (no pepper, a short one); the message says what to set."""


def secret_from_env(name: str, file_name: str, environ: Mapping[str, str] | None = None) -> str:
    """A secret from the variable `name`, or from the file the variable `file_name` names (a mounted secret;
    surrounding whitespace ignored); "" when neither is set. KeyConfigError when the file cannot be read."""
    env = os.environ if environ is None else environ
    value = env.get(name, "")
    path = env.get(file_name, "")
    if not value and path:
        try:
            with open(path, encoding="utf-8") as handle:
                value = handle.read().strip()
        except OSError as exc:
            raise KeyConfigError(f"cannot read {file_name} {path}: {exc.strerror or exc}") from None
    return value


def pepper_from_env(environ: Mapping[str, str] | None = None) -> bytes:
    """The server-side secret keys are hashed under; KeyConfigError when it is missing or short.

    From ROUTEMESH_KEY_PEPPER, or the file ROUTEMESH_KEY_PEPPER_FILE names.
    """
    value = secret_from_env(PEPPER_ENV, PEPPER_FILE_ENV, environ)
    if len(value) < MIN_PEPPER_CHARS:
        raise KeyConfigError(f"API keys need {PEPPER_ENV} (or {PEPPER_FILE_ENV}): a secret of at least "
                             f"{MIN_PEPPER_CHARS} characters "
                             "(for example: python -c 'import secrets; print(secrets.token_urlsafe(32))'), "
                             "the same on every service that checks keys")
    return value.encode()


@dataclass(frozen=True)
class KeySpec:
    """What a new key may do; empty lists mean every model or route the tenant may use."""

    tenant: str
    name: str = ""
    project: str = ""
    role: str = "user"
    allowed_models: tuple[str, ...] = ()
    allowed_routes: tuple[str, ...] = ()
    rpm: int = 0  # requests per minute, 0 = no limit of the key's own
    tpm: int = 0  # tokens per minute
    budget_usd: float = 0.0  # spend per budget_period, 0 = none
    budget_period: str = "month"
    expires_in_s: float = 0.0  # 0 = never

    def problems(self) -> list[tuple[str, str]]:
        out = []
        for label, value in (("tenant", self.tenant), ("project", self.project), ("name", self.name)):
            if (value or label == "tenant") and not _NAME.match(value):
                out.append((label, f"must match {_NAME.pattern}"))
        if self.role not in ROLES:
            out.append(("role", f"must be one of {list(ROLES)}"))
        if self.budget_period not in PERIODS:
            out.append(("budget_period", f"must be one of {list(PERIODS)}"))
        for label, number in (("rpm", self.rpm), ("tpm", self.tpm)):
            if number < 0:
                out.append((label, "must not be negative"))
        for label, amount in (("budget_usd", self.budget_usd), ("expires_in_s", self.expires_in_s)):
            if not (math.isfinite(amount) and amount >= 0):
                out.append((label, "must be a finite number, not negative"))
        for label, names in (("allowed_models", self.allowed_models), ("allowed_routes", self.allowed_routes)):
            bad = [n for n in names if not _NAME.match(n)]
            if bad or len(names) > 256:
                out.append((label, "at most 256 names, each matching " + _NAME.pattern))
        return out


@dataclass(frozen=True)
class KeyRecord:
    """A key as stored: its settings, its state, and its secret's keyed hash (never the secret)."""

    key_id: str
    spec: KeySpec
    secret_hash: str
    created_at_ms: int
    expires_at_ms: int = 0
    revoked_at_ms: int = 0
    rotated_at_ms: int = 0

    def state(self, now_ms: int) -> str:
        if self.revoked_at_ms:
            return "revoked"
        if self.expires_at_ms and now_ms >= self.expires_at_ms:
            return "expired"
        return "active"

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> KeyRecord:
        raw: dict[str, Any] = json.loads(text)
        spec = raw.pop("spec")
        spec["allowed_models"], spec["allowed_routes"] = tuple(spec["allowed_models"]), tuple(spec["allowed_routes"])
        return cls(spec=KeySpec(**spec), **raw)


def _hash(pepper: bytes, secret: str) -> str:
    return hmac.new(pepper, secret.encode(), hashlib.sha256).hexdigest()


def parse_token(token: str) -> tuple[str, str] | None:
    """(key id, secret) of a well-formed key, else None."""
    match = _TOKEN.match(token.strip())
    return (match.group(1), match.group(2)) if match else None


@dataclass(frozen=True, slots=True)
class KeyUsage:
    """What the requests made with one key used, over one UTC day or summed over several."""

    requests: int = 0
    errors: int = 0  # requests that failed: refused by a limit, failed upstream, or ended before an answer
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0

    def __add__(self, other: KeyUsage) -> KeyUsage:
        return KeyUsage(self.requests + other.requests, self.errors + other.errors,
                        self.input_tokens + other.input_tokens, self.output_tokens + other.output_tokens,
                        self.cost_usd + other.cost_usd)

    @classmethod
    def from_hash(cls, raw: Mapping[Any, Any]) -> KeyUsage:
        """A day's usage from its Redis hash (str or bytes fields; missing ones are 0)."""
        fields = {(k.decode() if isinstance(k, bytes) else k): v for k, v in raw.items()}
        return cls(*(int(fields.get(name, 0)) for name in _USAGE_COUNTS), float(fields.get("cost_usd", 0.0)))


@dataclass(frozen=True, slots=True)
class KeyUsageSummary:
    """A key's usage today and this month so far (UTC), as control reports it."""

    today: KeyUsage
    this_month: KeyUsage

    def budget_spent_usd(self, period: str) -> float:
        """The spend of the key's current budget period ("day" or "month")."""
        return (self.today if period == "day" else self.this_month).cost_usd


def usage_key(prefix: str, key_id: str, day: date) -> str:
    """The Redis hash of one key's usage on one UTC day: requests, errors, input_tokens, output_tokens, cost_usd."""
    return f"{prefix}keyusage:{key_id}:{day.isoformat()}"


def month_days(day: date) -> list[date]:
    """The days of `day`'s month up to and including it."""
    return [day.replace(day=d) for d in range(1, day.day + 1)]


class KeyStore:
    """Keys in Redis under `prefix`: one JSON record per key and a set of every id, and each key's daily usage."""

    def __init__(self, client: aioredis.Redis, prefix: str, pepper: bytes):
        self._redis = client
        self._prefix = prefix
        self._pepper = pepper
        self._add_usage = client.register_script(_ADD_USAGE)

    async def close(self) -> None:
        await self._redis.aclose()

    def _key(self, key_id: str) -> str:
        return f"{self._prefix}apikey:{key_id}"

    def _token(self, record: KeyRecord) -> tuple[str, KeyRecord]:
        secret = secrets.token_urlsafe(32)
        return f"{TOKEN_PREFIX}{record.key_id}_{secret}", replace(record, secret_hash=_hash(self._pepper, secret))

    async def create(self, spec: KeySpec) -> tuple[str, KeyRecord]:
        """A new key: (the token, shown once, and its record)."""
        problems = spec.problems()
        if problems:
            raise InvalidRequest("invalid key settings", field_violations=problems)
        now = int(time.time() * 1000)
        record = KeyRecord(key_id=secrets.token_hex(8), spec=spec, secret_hash="", created_at_ms=now,
                           expires_at_ms=now + int(spec.expires_in_s * 1000) if spec.expires_in_s else 0)
        token, record = self._token(record)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.set(self._key(record.key_id), record.to_json())
            pipe.sadd(f"{self._prefix}apikeys", record.key_id)
            await pipe.execute()
        return token, record

    async def get(self, key_id: str) -> KeyRecord | None:
        text = await self._redis.get(self._key(key_id))
        return KeyRecord.from_json(text) if text else None

    async def _require(self, key_id: str) -> KeyRecord:
        record = await self.get(key_id) if re.fullmatch(r"[0-9a-f]{16}", key_id) else None
        if record is None:
            raise NotFound(f"no API key {key_id!r}", field_violations=[("key_id", "no such key")])
        return record

    async def list(self) -> list[KeyRecord]:
        ids = sorted(await self._redis.smembers(f"{self._prefix}apikeys"))
        texts = await self._redis.mget([self._key(i) for i in ids]) if ids else []
        return sorted((KeyRecord.from_json(t) for t in texts if t), key=lambda r: r.created_at_ms)

    async def revoke(self, key_id: str) -> KeyRecord:
        record = await self._require(key_id)
        if not record.revoked_at_ms:
            record = replace(record, revoked_at_ms=int(time.time() * 1000))
            await self._redis.set(self._key(key_id), record.to_json())
        return record

    async def rotate(self, key_id: str) -> tuple[str, KeyRecord]:
        """A new secret for the same key (settings, spend and id kept); the old secret stops working now."""
        record = await self._require(key_id)
        if record.revoked_at_ms:
            raise InvalidRequest(f"API key {key_id} is revoked; create a new one",
                                 field_violations=[("key_id", "revoked")])
        token, record = self._token(replace(record, rotated_at_ms=int(time.time() * 1000)))
        await self._redis.set(self._key(key_id), record.to_json())
        return token, record

    async def add_usage(self, usage: Mapping[tuple[str, date], KeyUsage]) -> None:
        """Add each (key id, UTC day)'s usage to its hash: one script call per USAGE_BATCH hashes, each atomic.

        The hashes of one call share a script, so with Redis Cluster the prefix needs a hash tag (as budgets do).
        """
        items = list(usage.items())
        for start in range(0, len(items), USAGE_BATCH):
            names: list[str] = []
            args: list[int | float] = []
            for (key_id, day), amount in items[start:start + USAGE_BATCH]:
                names.append(usage_key(self._prefix, key_id, day))
                args += [amount.requests, amount.errors, amount.input_tokens, amount.output_tokens, amount.cost_usd]
            await self._add_usage(keys=names, args=[*args, USAGE_TTL_S])

    async def usage(self, key_ids: Sequence[str], today: date) -> dict[str, KeyUsageSummary]:
        """Each key's usage on `today` and over its month up to it, in one round trip."""
        days = month_days(today)
        async with self._redis.pipeline(transaction=False) as pipe:
            for key_id in key_ids:
                for day in days:
                    pipe.hgetall(usage_key(self._prefix, key_id, day))
            replies = await pipe.execute() if key_ids else []
        out = {}
        for i, key_id in enumerate(key_ids):
            daily = [KeyUsage.from_hash(reply) for reply in replies[i * len(days):(i + 1) * len(days)]]
            out[key_id] = KeyUsageSummary(today=daily[-1], this_month=sum(daily, KeyUsage()))
        return out

    async def verify(self, token: str) -> KeyRecord | None:
        """The active key `token` is, or None (malformed, unknown, wrong secret, revoked or expired)."""
        parsed = parse_token(token)
        if parsed is None:
            return None
        record = await self.get(parsed[0])
        if record is None or not hmac.compare_digest(record.secret_hash, _hash(self._pepper, parsed[1])):
            return None
        return record if record.state(int(time.time() * 1000)) == "active" else None


@dataclass
class KeyCache:
    """Verdicts of KeyStore.verify by token digest, each trusted for ttl_s: the bound on a revocation's delay.

    The token itself is never a cache key (a digest is), so a heap dump of the cache yields no keys.
    """

    store: KeyStore
    ttl_s: float = 2.0
    size: int = 10_000
    _entries: OrderedDict[bytes, tuple[float, KeyRecord | None]] = field(default_factory=OrderedDict)

    async def verify(self, token: str) -> KeyRecord | None:
        digest = hashlib.sha256(token.encode()).digest()
        now = time.monotonic()
        hit = self._entries.get(digest)
        if hit is not None and hit[0] > now:
            record = hit[1]
            if record is not None and record.expires_at_ms and time.time() * 1000 >= record.expires_at_ms:
                return None
            return record
        record = await self.store.verify(token)
        self._entries[digest] = (now + self.ttl_s, record)
        self._entries.move_to_end(digest)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)
        return record
