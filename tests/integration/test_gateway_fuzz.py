"""Fuzzing the OpenAI-compatible gateway's JSON: any body gets a clear 4xx or an answer, never a 500."""

from __future__ import annotations

import json
import math

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.integration

scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.text(max_size=50),
                    st.floats(allow_nan=True, allow_infinity=True))
anything = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=5),
                                                         st.dictionaries(st.text(max_size=12), inner, max_size=5)),
                        max_leaves=30)
roles = st.one_of(st.sampled_from(["user", "system", "assistant", "tool", "developer"]), st.text(max_size=10))
messages = st.lists(st.fixed_dictionaries({"role": roles}, optional={
    "content": st.one_of(st.text(max_size=200), anything), "name": anything, "tool_calls": anything}), max_size=6)
bodies = st.fixed_dictionaries({}, optional={
    "model": st.one_of(st.sampled_from(["auto", "fast-cheap", "nope"]), anything),
    "messages": st.one_of(messages, anything),
    "temperature": st.one_of(st.floats(allow_nan=True, allow_infinity=True), anything),
    "max_tokens": st.one_of(st.integers(-10, 2**40), anything),
    "stream": st.booleans(),
    "tools": anything, "tool_choice": anything, "response_format": anything,
    "routemesh": st.one_of(st.fixed_dictionaries({}, optional={
        "strategy": st.text(max_size=20), "max_cost_usd": st.floats(allow_nan=True, allow_infinity=True),
        "latency_target_ms": anything}), anything),
    "extra": anything,
})
raw = st.one_of(st.binary(max_size=300), st.just(b"[" * 50_000), st.just(b'{"messages": ' + b"[" * 3000))


@pytest.fixture(scope="module")
def gateway_url(mesh) -> str:
    return f"http://{mesh.layout.address('gateway')}"


def _check(response: httpx.Response) -> None:
    assert response.status_code < 500 or response.status_code == 503, response.text[:300]
    if response.status_code >= 400:
        error = response.json()["error"]
        assert error["message"] and error["type"]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow, HealthCheck.data_too_large])
@given(body=st.one_of(bodies, anything), path=st.sampled_from(["/v1/chat/completions", "/v1/routemesh/explain"]))
def test_any_json_body_gets_a_clear_answer(gateway_url, body, path) -> None:
    # Python's json writes NaN and Infinity as literals, as a careless client would.
    data = json.dumps(body, allow_nan=True).encode()
    with httpx.Client(base_url=gateway_url, timeout=30) as http:
        _check(http.post(path, content=data, headers={"content-type": "application/json"}))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=raw)
def test_any_bytes_get_a_clear_answer(gateway_url, data) -> None:
    with httpx.Client(base_url=gateway_url, timeout=30) as http:
        _check(http.post("/v1/chat/completions", content=data, headers={"content-type": "application/json"}))


def test_the_gateway_serves_a_normal_completion_after_the_fuzzing(gateway_url) -> None:
    with httpx.Client(base_url=gateway_url, timeout=30) as http:
        response = http.post("/v1/chat/completions", json={"model": "auto", "max_tokens": 16,
                                                            "messages": [{"role": "user", "content": "Say hi"}]})
    assert response.status_code == 200 and response.json()["choices"][0]["message"]["content"]
    assert not math.isnan(response.json()["usage"]["total_tokens"])
