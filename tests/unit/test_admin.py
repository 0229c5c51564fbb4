"""The admin credential: the bootstrap key, admin-role API keys, and when a service asks for one."""

from __future__ import annotations

import argparse

import pytest

from routemesh.common import admin
from routemesh.common.keys import KeyCache, KeyConfigError, KeyRecord, KeySpec

BOOTSTRAP = "b" * 40


class Store:
    """What KeyCache asks of a KeyStore: a verdict per token."""

    def __init__(self, records: dict[str, KeyRecord]):
        self.records = records

    async def verify(self, token: str) -> KeyRecord | None:
        return self.records.get(token)


def record(key_id: str, role: str) -> KeyRecord:
    return KeyRecord(key_id=key_id, spec=KeySpec(tenant="ops", role=role), secret_hash="", created_at_ms=1)


def bearer(token: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}")]


async def test_the_bootstrap_key_and_admin_keys_pass_and_nothing_else_does() -> None:
    auth = admin.AdminAuth.create(KeyCache(Store({"rmk_a": record("a" * 16, "admin"),
                                                  "rmk_u": record("u" * 16, "user")})), BOOTSTRAP)
    assert await auth.actor(bearer(BOOTSTRAP)) == admin.BOOTSTRAP_ACTOR
    assert await auth.actor([("authorization", f"bearer  {BOOTSTRAP} ")]) == admin.BOOTSTRAP_ACTOR
    assert await auth.actor(bearer("rmk_a")) == f"admin-key:{'a' * 16}"
    for metadata in ([], bearer("rmk_u"), bearer("rmk_unknown"), bearer(BOOTSTRAP[:-1]),
                     [("authorization", BOOTSTRAP)], [("x-api-key", BOOTSTRAP)]):
        assert await auth.actor(metadata) == "", metadata
    assert "admin role" in auth.describe() and admin.ADMIN_KEY_ENV in auth.describe()


async def test_without_keys_only_the_bootstrap_key_passes() -> None:
    auth = admin.AdminAuth.create(None, BOOTSTRAP)
    assert await auth.actor(bearer("rmk_a")) == ""
    assert auth.describe() == f"the bootstrap key {admin.ADMIN_KEY_ENV}"


def test_the_bootstrap_key_comes_from_the_environment_or_a_file(tmp_path) -> None:
    assert admin.admin_key_from_env({}) == ""
    assert admin.admin_key_from_env({admin.ADMIN_KEY_ENV: BOOTSTRAP}) == BOOTSTRAP
    path = tmp_path / "admin-key"
    path.write_text(f"  {BOOTSTRAP}\n")
    assert admin.admin_key_from_env({admin.ADMIN_KEY_FILE_ENV: str(path)}) == BOOTSTRAP
    with pytest.raises(KeyConfigError, match="at least 32"):
        admin.admin_key_from_env({admin.ADMIN_KEY_ENV: "short"})
    with pytest.raises(KeyConfigError, match="cannot read"):
        admin.admin_key_from_env({admin.ADMIN_KEY_FILE_ENV: str(tmp_path / "missing")})


def test_require_admin_without_a_credential_is_a_clear_start_up_error(monkeypatch) -> None:
    for name in (admin.ADMIN_KEY_ENV, admin.ADMIN_KEY_FILE_ENV, "ROUTEMESH_TLS_CERT", "ROUTEMESH_TLS_KEY",
                 "ROUTEMESH_TLS_CA"):
        monkeypatch.delenv(name, raising=False)
    assert admin.from_args("control", argparse.Namespace(require_admin=False), None) is None
    with pytest.raises(SystemExit, match="control: --require-admin needs ROUTEMESH_ADMIN_KEY"):
        admin.from_args("control", argparse.Namespace(require_admin=True), None)
    monkeypatch.setenv(admin.ADMIN_KEY_ENV, BOOTSTRAP)
    auth = admin.from_args("control", argparse.Namespace(require_admin=True), None)
    assert auth is not None and auth.keys is None


def test_routemesh_up_says_what_is_off_and_only_that() -> None:
    from routemesh.cli import security_hint

    everything = security_hint({})
    assert everything.startswith("API keys, admin credentials and TLS are off")
    assert "ROUTEMESH_REQUIRE_KEYS=true" in everything and "ROUTEMESH_REQUIRE_ADMIN=true" in everything
    keyed = security_hint({"ROUTEMESH_REQUIRE_KEYS": "true", "ROUTEMESH_REQUIRE_ADMIN": "1"})
    assert keyed.startswith("TLS is off") and "REQUIRE_KEYS" not in keyed and "REQUIRE_ADMIN" not in keyed
