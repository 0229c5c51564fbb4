"""Who may read the console: anyone on an open dev mesh; once keys or TLS are in use, admin credentials only.

The console is open exactly when nothing in the gateway's environment says credentials are in use: no
bootstrap admin key, no API keys (ROUTEMESH_REQUIRE_KEYS, or a key pepper to make them with), no
ROUTEMESH_REQUIRE_ADMIN, no mutual TLS. That is `routemesh up`'s default, where the CLI's admin commands
are open too. Otherwise every /console/api call needs `Authorization: Bearer <credential>`, checked here as
the services check it (common.admin.AdminAuth): the bootstrap key by digest in constant time, an admin API
key in the key store when the gateway can reach it (--keys-redis-url and ROUTEMESH_KEY_PEPPER). The gateway's own
certificate admits it to the console's RPCs, so this check is the one that counts; the credential is passed
on as well, for services run with --require-admin.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from routemesh.common.admin import ADMIN_KEY_ENV, REQUIRE_ADMIN_ENV, AdminAuth, admin_key_from_env, key_store
from routemesh.common.keys import PEPPER_ENV, PEPPER_FILE_ENV, TOKEN_PREFIX, KeyCache
from routemesh.common.tls import ENV_CERT

log = logging.getLogger(__name__)
REQUIRE_KEYS_ENV = "ROUTEMESH_REQUIRE_KEYS"
_ON = ("1", "true", "yes", "on")


def lock_reasons(environ: Mapping[str, str]) -> list[str]:
    """Why the console needs an admin credential, for people; empty when it is open (a dev mesh)."""
    def on(name: str) -> bool:
        return environ.get(name, "").strip().lower() in _ON

    reasons = []
    if environ.get(ADMIN_KEY_ENV) or environ.get(f"{ADMIN_KEY_ENV}_FILE"):
        reasons.append(f"{ADMIN_KEY_ENV} is set")
    if on(REQUIRE_ADMIN_ENV):
        reasons.append(f"{REQUIRE_ADMIN_ENV} is on")
    if on(REQUIRE_KEYS_ENV):
        reasons.append(f"{REQUIRE_KEYS_ENV} is on")
    if environ.get(PEPPER_ENV) or environ.get(PEPPER_FILE_ENV):
        reasons.append(f"API keys can be made ({PEPPER_ENV} is set)")
    if environ.get(ENV_CERT):
        reasons.append("the mesh runs mutual TLS")
    return reasons


def bearer_of(header: str) -> str:
    """The token of an `Authorization: Bearer TOKEN` header ("" when there is none)."""
    return header[7:].strip() if header[:7].lower() == "bearer " else ""


@dataclass(frozen=True)
class Verdict:
    """What the check decided: `status` 200 (admitted), 401 (no or a wrong credential) or 503 (cannot check)."""

    status: int
    message: str = ""
    actor: str = ""

    @property
    def admitted(self) -> bool:
        return self.status == 200


@dataclass
class ConsoleAuth:
    """The console's admission: `reasons` it is locked (none: open) and what checks a credential (None: nothing)."""

    reasons: list[str] = field(default_factory=list)
    admin: AdminAuth | None = None

    @classmethod
    def from_env(cls, redis_url: str = "", redis_prefix: str = "routemesh:",
                 environ: Mapping[str, str] | None = None) -> ConsoleAuth:
        """From the gateway's environment; KeyConfigError when ROUTEMESH_ADMIN_KEY is set but too short."""
        env = os.environ if environ is None else environ
        reasons = lock_reasons(env)
        if not reasons:
            return cls()
        bootstrap = admin_key_from_env(env)
        keys = key_store(redis_url, redis_prefix) if redis_url else None
        if not bootstrap and keys is None:
            log.warning("the console needs an admin credential (%s) but the gateway can check none: set %s, or "
                        "give the gateway --keys-redis-url and %s for admin API keys", "; ".join(reasons), ADMIN_KEY_ENV,
                        PEPPER_ENV)
            return cls(reasons)
        return cls(reasons, AdminAuth.create(KeyCache(keys) if keys is not None else None, bootstrap))

    @property
    def open(self) -> bool:
        return not self.reasons

    async def check(self, authorization: str) -> Verdict:
        """Admit or refuse a console API call by its Authorization header."""
        if self.open:
            return Verdict(200, actor="anyone (no credentials in use)")
        why = "; ".join(self.reasons)
        if self.admin is None:
            return Verdict(401, f"the console needs an admin credential ({why}), but this gateway can check none: "
                                f"set {ADMIN_KEY_ENV}, or give it --keys-redis-url and {PEPPER_ENV} for admin API keys")
        token = bearer_of(authorization)
        if not token:
            return Verdict(401, f"the console needs an admin credential ({why}): sign in with "
                                f"{self.admin.describe()}")
        if token.startswith(TOKEN_PREFIX) and self.admin.keys is None:
            return Verdict(401, "this gateway cannot check API keys (give it --keys-redis-url and "
                                f"{PEPPER_ENV}); sign in with {ADMIN_KEY_ENV}")
        try:
            actor = await self.admin.actor([("authorization", f"Bearer {token}")])
        except Exception as exc:  # noqa: BLE001 - the key store's trouble (Redis down), told as such
            log.warning("console: cannot check an admin API key: %s", type(exc).__name__)
            return Verdict(503, "the key store does not answer, so API keys cannot be checked now; retry, or sign "
                                f"in with {ADMIN_KEY_ENV}")
        if not actor:
            return Verdict(401, f"not an admin credential: sign in with {self.admin.describe()}")
        return Verdict(200, actor=actor)
