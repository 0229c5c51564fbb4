"""Caller API keys on a real mesh: no key no answer, the tenant comes from the key, scopes hold, revocation bites."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import grpc
import httpx
import pytest

from routemesh.client import RoutemeshError, RouterClient
from routemesh.common.keys import KeySpec, KeyStore
from routemesh.common.redis_client import create_client
from routemesh.mesh import Mesh, MeshLayout
from tests.integration.conftest import REDIS_URL, SIM_TIME_SCALE

pytestmark = pytest.mark.integration
PEPPER = "p" * 40
FAQ = "What are your opening hours on Sunday?"


@pytest.fixture(scope="module")
def keyed_mesh(tmp_path_factory, redis_prefix) -> Iterator[tuple[Mesh, str]]:
    prefix = f"{redis_prefix}apikeys:"
    mesh = Mesh(MeshLayout.free(), redis_url=REDIS_URL, redis_prefix=prefix, sim_time_scale=SIM_TIME_SCALE,
                log_dir=tmp_path_factory.mktemp("keys-mesh-logs"), extra_env={"ROUTEMESH_KEY_PEPPER": PEPPER},
                extra_args={"router": ["--require-keys"]})
    mesh.start()
    yield mesh, prefix
    mesh.stop()


def store_call(prefix: str, method: str, *args):
    async def call():
        client = create_client(REDIS_URL, timeout_s=1.0)
        try:
            return await getattr(KeyStore(client, prefix, PEPPER.encode()), method)(*args)
        finally:
            await client.aclose()
    return asyncio.run(call())


def with_key(mesh: Mesh, token: str | None) -> RouterClient:
    channel = grpc.insecure_channel(mesh.layout.address("router"))
    if token is not None:
        channel = grpc.intercept_channel(channel, _Bearer(token))
    return RouterClient(channel=channel)


class _Bearer(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):
    def __init__(self, token: str):
        self.token = token

    def _details(self, details):
        metadata = [*(details.metadata or ()), ("authorization", f"Bearer {self.token}")]
        return details._replace(metadata=metadata) if hasattr(details, "_replace") else _Details(details, metadata)

    def intercept_unary_unary(self, continuation, details, request):
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation, details, request):
        return continuation(self._details(details), request)


class _Details(grpc.ClientCallDetails):
    def __init__(self, base, metadata):
        self.method, self.timeout, self.credentials = base.method, base.timeout, base.credentials
        self.wait_for_ready, self.compression, self.metadata = base.wait_for_ready, base.compression, metadata


def test_no_key_or_a_wrong_key_is_unauthenticated(keyed_mesh) -> None:
    mesh, _ = keyed_mesh
    for token in (None, "rmk_0123456789abcdef_" + "x" * 43, "not-a-key"):
        with with_key(mesh, token) as client, pytest.raises(RoutemeshError) as raised:
            client.explain(FAQ)
        assert raised.value.code == grpc.StatusCode.UNAUTHENTICATED
        assert raised.value.reason == "INVALID_API_KEY"
        with with_key(mesh, token) as client, pytest.raises(RoutemeshError) as raised:
            client.feedback("a" * 32, score=1.0)
        assert raised.value.reason == "INVALID_API_KEY"


def test_the_tenant_comes_from_the_key_not_from_metadata(keyed_mesh) -> None:
    mesh, prefix = keyed_mesh
    token, _ = store_call(prefix, "create", KeySpec(tenant="acme", name="web"))
    with with_key(mesh, token) as client:
        # acme may use fast-cheap, balanced and long-context (default policy): claiming another tenant in
        # metadata does not step out of that allow-list.
        with pytest.raises(RoutemeshError) as raised:
            client.explain(FAQ, model="strong", metadata={"tenant": "somebody-else"})
        assert raised.value.code == grpc.StatusCode.FAILED_PRECONDITION
        assert "strong: not allowed for tenant 'acme'" in raised.value.message
        assert client.complete(FAQ).final.status == 1
        # A valid key gets past the router to telemetry, which keeps no ledger in this mesh: a clear refusal.
        with pytest.raises(RoutemeshError) as raised:
            client.feedback("a" * 32, thumbs="up")
        assert (raised.value.code, raised.value.reason) == (grpc.StatusCode.FAILED_PRECONDITION,
                                                            "LEDGER_NOT_CONFIGURED")


def test_a_keys_models_and_routes_are_its_limits(keyed_mesh) -> None:
    mesh, prefix = keyed_mesh
    token, _ = store_call(prefix, "create", KeySpec(tenant="globex", allowed_models=("fast-cheap",),
                                                    allowed_routes=("auto",)))
    with with_key(mesh, token) as client:
        with pytest.raises(RoutemeshError) as raised:
            client.explain(FAQ, model="cheap")
        assert (raised.value.code, raised.value.reason) == (grpc.StatusCode.PERMISSION_DENIED, "KEY_NOT_ALLOWED")
        with pytest.raises(RoutemeshError) as raised:
            client.explain(FAQ, model="strong")
        assert raised.value.reason == "KEY_NOT_ALLOWED"
        decision = client.explain("Prove that there are infinitely many primes, step by step.").decision
        assert decision.model == "fast-cheap"
        assert {c.model: c.rejection_reason for c in decision.candidates if not c.eligible}.get("strong") == \
            "not allowed for the request's API key"


def test_a_revoked_key_stops_working_within_seconds(keyed_mesh) -> None:
    mesh, prefix = keyed_mesh
    token, record = store_call(prefix, "create", KeySpec(tenant="acme"))
    with with_key(mesh, token) as client:
        assert client.explain(FAQ).decision.model
        store_call(prefix, "revoke", record.key_id)
        revoked_at = time.monotonic()
        while True:
            try:
                client.explain(FAQ)
            except RoutemeshError as exc:
                assert exc.code == grpc.StatusCode.UNAUTHENTICATED
                break
            assert time.monotonic() - revoked_at < 5, "a revoked key kept working"
            time.sleep(0.1)


def test_the_gateway_passes_the_bearer_key_on(keyed_mesh) -> None:
    mesh, prefix = keyed_mesh
    token, _ = store_call(prefix, "create", KeySpec(tenant="acme"))
    body = {"model": "auto", "max_tokens": 16, "messages": [{"role": "user", "content": FAQ}]}
    with httpx.Client(base_url=f"http://{mesh.layout.address('gateway')}", timeout=30) as http:
        assert http.post("/v1/chat/completions", json=body).status_code == 401
        ok = http.post("/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {token}"})
    assert ok.status_code == 200 and ok.json()["choices"][0]["message"]["content"]


def test_a_keys_own_rate_limit_holds_across_requests(keyed_mesh) -> None:
    mesh, prefix = keyed_mesh
    token, record = store_call(prefix, "create", KeySpec(tenant="globex", rpm=2))
    with with_key(mesh, token) as client:
        for _ in range(2):
            assert client.complete(FAQ).final.status == 1
        with pytest.raises(RoutemeshError) as raised:
            client.complete(FAQ)
    assert (raised.value.code, raised.value.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "RATE_LIMITED")
    assert "the API key is over its rate limit" in raised.value.message
