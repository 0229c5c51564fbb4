"""API keys against a real Redis: made, verified, revoked, rotated, expired; secrets never stored."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from routemesh.common.errors import InvalidRequest, NotFound
from routemesh.common.keys import KeyCache, KeyConfigError, KeySpec, KeyStore, parse_token, pepper_from_env
from routemesh.common.redis_client import create_client

from tests.conftest import REDIS_URL

PEPPER = b"p" * 32


@pytest.fixture
async def store(redis_prefix):
    client = create_client(REDIS_URL, timeout_s=1.0)
    yield KeyStore(client, f"{redis_prefix}{uuid.uuid4().hex[:6]}:", PEPPER)
    await client.aclose()


async def test_a_key_verifies_and_its_secret_is_stored_only_as_a_keyed_hash(store) -> None:
    token, record = await store.create(KeySpec(tenant="acme", name="ci", project="web", allowed_models=("strong",),
                                               rpm=60, budget_usd=5.0))
    key_id, secret = parse_token(token)
    assert key_id == record.key_id and len(secret) == 43
    assert (await store.verify(token)) == record
    stored = await store._redis.get(store._key(key_id))
    assert secret not in stored and token not in stored
    assert record.spec.tenant == "acme" and record.spec.allowed_models == ("strong",)
    # A wrong secret for a real id, a malformed token, an unknown id: all nothing.
    assert await store.verify(f"rmk_{key_id}_{'A' * 43}") is None
    assert await store.verify("rmk_nope") is None
    assert await store.verify(f"rmk_{'0' * 16}_{secret}") is None
    # The same secret under another pepper does not verify (a copy of Redis alone is not enough).
    assert await KeyStore(store._redis, store._prefix, b"q" * 32).verify(token) is None


async def test_revoke_rotate_and_expiry(store) -> None:
    token, record = await store.create(KeySpec(tenant="acme"))
    new_token, rotated = await store.rotate(record.key_id)
    assert rotated.key_id == record.key_id and rotated.rotated_at_ms
    assert await store.verify(token) is None and (await store.verify(new_token)).key_id == record.key_id
    revoked = await store.revoke(record.key_id)
    assert revoked.state(revoked.revoked_at_ms) == "revoked"
    assert await store.verify(new_token) is None
    with pytest.raises(InvalidRequest, match="is revoked"):
        await store.rotate(record.key_id)
    with pytest.raises(NotFound):
        await store.revoke("0" * 16)
    short, _ = await store.create(KeySpec(tenant="acme", expires_in_s=0.2))
    assert await store.verify(short) is not None
    await asyncio.sleep(0.3)
    assert await store.verify(short) is None
    assert [r.key_id for r in await store.list()][:1] == [record.key_id]


async def test_a_cached_verdict_lasts_at_most_its_ttl(store) -> None:
    token, record = await store.create(KeySpec(tenant="acme"))
    cache = KeyCache(store, ttl_s=0.3)
    assert (await cache.verify(token)).key_id == record.key_id
    await store.revoke(record.key_id)
    assert (await cache.verify(token)) is not None  # within the staleness bound
    await asyncio.sleep(0.35)
    assert await cache.verify(token) is None
    assert all(token.encode() not in digest for digest in cache._entries)


@pytest.mark.parametrize(("spec", "field"), [
    (KeySpec(tenant=""), "tenant"), (KeySpec(tenant="a b"), "tenant"), (KeySpec(tenant="a", role="root"), "role"),
    (KeySpec(tenant="a", rpm=-1), "rpm"), (KeySpec(tenant="a", budget_usd=float("nan")), "budget_usd"),
    (KeySpec(tenant="a", budget_period="week"), "budget_period"),
    (KeySpec(tenant="a", allowed_models=("ok", "not ok")), "allowed_models"),
])
async def test_bad_settings_name_the_field(store, spec, field) -> None:
    with pytest.raises(InvalidRequest) as raised:
        await store.create(spec)
    assert field in dict(raised.value.field_violations)


def test_the_pepper_must_be_set_and_long() -> None:
    with pytest.raises(KeyConfigError, match="ROUTEMESH_KEY_PEPPER"):
        pepper_from_env({})
    with pytest.raises(KeyConfigError):
        pepper_from_env({"ROUTEMESH_KEY_PEPPER": "short"})
    assert pepper_from_env({"ROUTEMESH_KEY_PEPPER": "x" * 32}) == b"x" * 32


def test_the_pepper_can_come_from_a_mounted_file(tmp_path) -> None:
    path = tmp_path / "pepper"
    path.write_text("y" * 40 + "\n")
    assert pepper_from_env({"ROUTEMESH_KEY_PEPPER_FILE": str(path)}) == b"y" * 40
    with pytest.raises(KeyConfigError, match="cannot read ROUTEMESH_KEY_PEPPER_FILE"):
        pepper_from_env({"ROUTEMESH_KEY_PEPPER_FILE": str(tmp_path / "missing")})
