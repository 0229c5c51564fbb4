"""The admin credential of the control plane and telemetry's operator RPCs, on a mesh without mutual TLS.

With mutual TLS the operator is the certificate named "admin" (common.interceptors.CALLERS). Without it,
a service started with --require-admin (env ROUTEMESH_REQUIRE_ADMIN) answers its admin RPCs (policy, keys,
audit, snapshots, reports) only to a caller that sends `authorization: Bearer <credential>`; with mutual TLS
that credential admits a caller whose certificate is not "admin" as well. The credential is either
- an API key with the admin role (`routemesh keys create --admin`), checked as the router checks keys; or
- the bootstrap admin key, ROUTEMESH_ADMIN_KEY or the file ROUTEMESH_ADMIN_KEY_FILE names: the one
  credential that exists before any key does (LiteLLM calls it the master key). Compared by digest in
  constant time, never logged.
The CLI sends ROUTEMESH_API_KEY (common.tls.blocking_channel).
"""

from __future__ import annotations

import argparse
import contextvars
import hashlib
import hmac
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from routemesh.common.keys import (
    MIN_PEPPER_CHARS,
    KeyCache,
    KeyConfigError,
    KeyStore,
    pepper_from_env,
    secret_from_env,
)
from routemesh.common.tls import TlsFiles

log = logging.getLogger(__name__)

ADMIN_KEY_ENV = "ROUTEMESH_ADMIN_KEY"
ADMIN_KEY_FILE_ENV = "ROUTEMESH_ADMIN_KEY_FILE"
REQUIRE_ADMIN_ENV = "ROUTEMESH_REQUIRE_ADMIN"
MIN_ADMIN_KEY_CHARS = MIN_PEPPER_CHARS
BOOTSTRAP_ACTOR = "admin-key:bootstrap"

# Who the current admin RPC was admitted as ("admin-key:<id>", BOOTSTRAP_ACTOR); set by the server
# interceptor, read by the audit log. Each RPC runs in its own context copy.
ADMIN_ACTOR: contextvars.ContextVar[str] = contextvars.ContextVar("routemesh_admin_actor", default="")


def bearer(metadata: Sequence[tuple[str, str | bytes]] | None) -> str:
    """The token of an "authorization: Bearer TOKEN" metadata entry ("" when there is none)."""
    for name, value in metadata or ():
        if name == "authorization" and isinstance(value, str) and value[:7].lower() == "bearer ":
            return value[7:].strip()
    return ""


def admin_key_from_env(environ: Mapping[str, str] | None = None) -> str:
    """The bootstrap admin key ("" when none is set); KeyConfigError when it is set but unusable."""
    value = secret_from_env(ADMIN_KEY_ENV, ADMIN_KEY_FILE_ENV, environ)
    if value and len(value) < MIN_ADMIN_KEY_CHARS:
        raise KeyConfigError(f"{ADMIN_KEY_ENV} must be at least {MIN_ADMIN_KEY_CHARS} characters "
                             "(for example: python -c 'import secrets; print(secrets.token_urlsafe(32))')")
    return value


@dataclass
class AdminAuth:
    """Checks a caller's admin credential: an API key with the admin role, or the bootstrap key."""

    keys: KeyCache | None = None
    bootstrap_digest: bytes = b""

    @classmethod
    def create(cls, keys: KeyCache | None, bootstrap_key: str) -> AdminAuth:
        digest = hashlib.sha256(bootstrap_key.encode()).digest() if bootstrap_key else b""
        return cls(keys=keys, bootstrap_digest=digest)

    async def actor(self, metadata: Sequence[tuple[str, str | bytes]] | None) -> str:
        """Who the caller's admin credential names, or "" (none sent, not valid, or not an admin key)."""
        token = bearer(metadata)
        if not token:
            return ""
        if self.bootstrap_digest and hmac.compare_digest(hashlib.sha256(token.encode()).digest(),
                                                         self.bootstrap_digest):
            return BOOTSTRAP_ACTOR
        if self.keys is None:
            return ""
        record = await self.keys.verify(token)
        return f"admin-key:{record.key_id}" if record is not None and record.spec.role == "admin" else ""

    def describe(self) -> str:
        """How an operator gets in, for the error a refused caller sees."""
        ways = [way for way, on in (("an API key with the admin role", self.keys is not None),
                                    (f"the bootstrap key {ADMIN_KEY_ENV}", bool(self.bootstrap_digest))) if on]
        return " or ".join(ways)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """--require-admin, for the services with admin RPCs (control, telemetry)."""
    parser.add_argument(
        "--require-admin", action="store_true",
        default=os.environ.get(REQUIRE_ADMIN_ENV, "").lower() in ("1", "true", "yes", "on"),
        help="without mutual TLS, admin RPCs need authorization: Bearer <an admin API key or "
        f"{ADMIN_KEY_ENV}> (env {REQUIRE_ADMIN_ENV}=true); with TLS they need the admin certificate or one of "
        "those")


def wanted(args: argparse.Namespace) -> bool:
    """Whether admin RPCs are closed to callers without an admin credential: --require-admin, or TLS on."""
    return bool(args.require_admin) or TlsFiles.from_env() is not None


def from_args(service: str, args: argparse.Namespace, keys: KeyStore | None) -> AdminAuth | None:
    """What admits an operator besides the admin certificate; None when nothing does.

    Without TLS and without --require-admin, admin RPCs are open (routemesh up's default) and this is None.
    SystemExit when --require-admin is on without TLS and no credential could ever pass.
    """
    try:
        bootstrap = admin_key_from_env()
    except KeyConfigError as exc:
        raise SystemExit(f"{service}: {exc}") from None
    if not wanted(args):
        return None
    if keys is None and not bootstrap:
        if not args.require_admin:
            return None  # the admin certificate is the only way in
        raise SystemExit(f"{service}: --require-admin needs {ADMIN_KEY_ENV} (or {ADMIN_KEY_FILE_ENV}), or "
                         "--redis-url with ROUTEMESH_KEY_PEPPER so admin API keys can be checked")
    return AdminAuth.create(KeyCache(keys) if keys is not None else None, bootstrap)


def key_store(redis_url: str, prefix: str) -> KeyStore | None:
    """The KeyStore admin keys are checked in, when Redis and the pepper are both configured."""
    if not redis_url:
        return None
    try:
        pepper = pepper_from_env()
    except KeyConfigError:
        return None
    from routemesh.common.redis_client import create_client

    return KeyStore(create_client(redis_url, timeout_s=1.0), prefix, pepper)
