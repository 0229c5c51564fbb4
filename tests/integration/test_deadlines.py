"""Deadlines and cancellation cross every hop: no hop keeps a provider call open past its caller."""

from __future__ import annotations

import time

import grpc
import pytest

from routemesh.client import RouterClient, RoutemeshError
from routemesh.client.client import ChatOptions, build_chat_request
from routemesh.v1 import router_pb2_grpc

pytestmark = pytest.mark.integration


def wait_for_disconnect(sim, model: str, before: int, within_s: float) -> float | None:
    started = time.monotonic()
    while time.monotonic() - started < within_s:
        outcomes = sim.stats()["models"].get(model, {}).get("outcomes", {})
        if outcomes.get("disconnected", 0) > before:
            return time.monotonic() - started
        time.sleep(0.02)
    return None


def test_caller_deadline_closes_the_provider_call(router_address, sim):
    sim.patch("sim-strong", ttft_ms=40_000)  # 2 s at the test time scale
    before = sim.stats()["models"].get("sim-strong", {}).get("outcomes", {}).get("disconnected", 0)
    started = time.monotonic()
    with RouterClient(router_address) as client, pytest.raises(RoutemeshError) as err:
        client.complete("hello", model="strong", timeout=0.5)
    assert err.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - started < 1.0
    after = wait_for_disconnect(sim, "sim-strong", before, 1.0)
    assert after is not None, "the provider call outlived the caller's deadline"
    print(f"\nprovider call closed {after * 1000:.0f} ms after the caller's deadline error")


def test_cancelled_stream_closes_the_provider_call_within_500_ms(router_address, sim):
    sim.patch("sim-strong", tokens_per_s=0.5)  # 10 tokens/s at the test time scale: a long answer
    before = sim.stats()["models"].get("sim-strong", {}).get("outcomes", {}).get("disconnected", 0)
    channel = grpc.insecure_channel(router_address)

    call = router_pb2_grpc.RouterServiceStub(channel).Chat(
        build_chat_request("Tell me a long story", ChatOptions(model="strong", max_tokens=400)), timeout=30)
    deltas = 0
    for event in call:
        if event.WhichOneof("event") == "delta":
            deltas += 1
            if deltas == 3:
                break
    cancelled_at = time.monotonic()
    call.cancel()
    after = wait_for_disconnect(sim, "sim-strong", before, 2.0)
    channel.close()
    assert after is not None and time.monotonic() - cancelled_at < 2.0
    print(f"\nprovider call closed {after * 1000:.0f} ms after the caller cancelled")
    assert after <= 0.5
