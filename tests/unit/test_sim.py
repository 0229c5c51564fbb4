"""Tests for the simulated OpenAI-compatible provider, over real HTTP."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import subprocess
import sys
import time

import aiohttp
import httpx
import pytest

from routemesh.sim import start_sim
from routemesh.sim.profiles import ModelProfile, ProfileError, apply_changes, load_profiles_file
from routemesh.sim.text import generate_tokens, looks_like_code_request, split_tokens, topic_words

PROMPT = [{"role": "user", "content": "Explain how Roman aqueducts carried water into cities"}]


@pytest.fixture(scope="module")
async def sim():
    server = await start_sim(time_scale=0)
    yield server
    await server.close()


@pytest.fixture
async def client(sim):
    sim.state.reset()
    async with httpx.AsyncClient(base_url=sim.root_url, timeout=10) as http:
        yield http


def chat_body(model="sim-fast", stream=False, **extra):
    return {"model": model, "messages": PROMPT, "stream": stream, **extra}


async def sse_payloads(client: httpx.AsyncClient, body: dict, headers: dict | None = None) -> list:
    """Every `data:` payload of a streamed answer, JSON-decoded except [DONE]."""
    payloads = []
    async with client.stream("POST", "/v1/chat/completions", json=body, headers=headers) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        async for line in response.aiter_lines():
            if line.startswith("data: "):
                data = line[len("data: "):]
                payloads.append(data if data == "[DONE]" else json.loads(data))
    return payloads


async def test_healthz_and_models(client):
    assert (await client.get("/healthz")).text == "ok"
    models = (await client.get("/v1/models")).json()
    assert models["object"] == "list"
    names = {m["id"] for m in models["data"]}
    assert names == {"sim-fast", "sim-balanced", "sim-strong", "sim-long", "sim-flaky"}


async def test_non_streaming_completion_shape_and_usage(client):
    response = await client.post("/v1/chat/completions", json=chat_body())
    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "chat.completion"
    choice = body["choices"][0]
    assert choice["message"]["role"] == "assistant" and choice["message"]["content"]
    assert choice["finish_reason"] == "stop"
    usage = body["usage"]
    chars = len(PROMPT[0]["content"])
    assert usage["prompt_tokens"] == max(1, round(chars / 4)) + 3
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert 15 <= usage["completion_tokens"] <= 100


async def test_streaming_chunk_sequence(client):
    body = chat_body(stream=True, stream_options={"include_usage": True})
    payloads = await sse_payloads(client, body)
    assert payloads[-1] == "[DONE]"
    first, *content, final, usage_chunk, _ = payloads
    assert first["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert all(c["object"] == "chat.completion.chunk" for c in content)
    assert all(c["choices"][0]["finish_reason"] is None for c in content)
    tokens = [c["choices"][0]["delta"]["content"] for c in content]
    assert all(tokens) and all(" " not in t.strip() or "\n" in t for t in tokens[1:])
    assert final["choices"][0]["finish_reason"] == "stop"
    assert usage_chunk["choices"] == [] and usage_chunk["usage"]["completion_tokens"] == len(tokens)
    assert len({p["id"] for p in payloads[:-1]}) == 1
    whole = (await client.post("/v1/chat/completions", json=chat_body())).json()
    assert "".join(tokens) == whole["choices"][0]["message"]["content"]


async def test_streaming_without_usage_option_sends_no_usage_chunk(client):
    payloads = await sse_payloads(client, chat_body(stream=True))
    assert all("usage" not in p for p in payloads[:-1])
    assert payloads[-2]["choices"][0]["finish_reason"] == "stop"


@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens"])
async def test_max_tokens_cap_gives_length(client, field):
    body = chat_body(stream=True, stream_options={"include_usage": True}, **{field: 4})
    payloads = await sse_payloads(client, body)
    assert payloads[-3]["choices"][0]["finish_reason"] == "length"
    assert payloads[-2]["usage"]["completion_tokens"] == 4
    assert len(payloads) == 1 + 4 + 3


async def test_unknown_model_is_404_in_openai_shape(client):
    response = await client.post("/v1/chat/completions", json=chat_body(model="gpt-nope"))
    assert response.status_code == 404
    assert response.json()["error"] | {"message": None} == {
        "message": None, "type": "invalid_request_error", "param": "model", "code": "model_not_found",
    }


@pytest.mark.parametrize(
    "content, headers",
    [
        (b"{not json", {}),
        (json.dumps({"model": "sim-fast"}).encode(), {}),
        (json.dumps({"model": "sim-fast", "messages": []}).encode(), {}),
        (json.dumps({"model": "sim-fast", "messages": [{"content": "x"}]}).encode(), {}),
        (json.dumps({"model": "sim-fast", "messages": PROMPT, "max_tokens": 0}).encode(), {}),
        (json.dumps({"model": "sim-fast", "messages": PROMPT}).encode(), {"x-sim-fault": "explode"}),
        (json.dumps({"model": "sim-fast", "messages": PROMPT}).encode(), {"x-sim-delay-scale": "fast"}),
    ],
)
async def test_bad_requests_are_400(client, content, headers):
    response = await client.post("/v1/chat/completions", content=content, headers=headers)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["message"]


async def test_multipart_content_and_traceparent_are_accepted(client):
    body = chat_body(messages=[{"role": "user", "content": [{"type": "text", "text": "hello world"}]}])
    headers = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
    response = await client.post("/v1/chat/completions", json=body, headers=headers)
    assert response.status_code == 200


@pytest.mark.parametrize("fault, status", [("500", 500), ("503", 503), ("429", 429)])
async def test_status_faults(client, fault, status):
    response = await client.post("/v1/chat/completions", json=chat_body(), headers={"x-sim-fault": fault})
    assert response.status_code == status
    assert response.json()["error"]["message"]
    if status == 429:
        assert response.headers["retry-after"] == "1"


async def test_cut_fault_ends_the_body_early(client):
    with pytest.raises(httpx.RemoteProtocolError):
        await sse_payloads(client, chat_body(stream=True), headers={"x-sim-fault": "cut"})


async def test_no_done_fault_omits_only_done(client):
    payloads = await sse_payloads(client, chat_body(stream=True), headers={"x-sim-fault": "no-done"})
    assert payloads[-1] != "[DONE]" and payloads[-1]["choices"][0]["finish_reason"] == "stop"


async def test_admin_profiles_patch_and_reset(client):
    profiles = (await client.get("/admin/profiles")).json()["profiles"]
    assert profiles["sim-strong"]["ttft_ms"] == 400 and profiles["sim-flaky"]["error_rate"] == 0.25
    patched = await client.patch("/admin/profiles/sim-fast", json={"outage": True, "retry_after_s": 3})
    assert patched.status_code == 200 and patched.json()["outage"] is True
    assert (await client.post("/v1/chat/completions", json=chat_body())).status_code == 503
    await client.patch("/admin/profiles/sim-fast", json={"outage": False, "rate_limit_rate": 1.0})
    limited = await client.post("/v1/chat/completions", json=chat_body())
    assert limited.status_code == 429 and limited.headers["retry-after"] == "3"
    await client.patch("/admin/profiles/sim-fast", json={"rate_limit_rate": 0, "error_rate": 1})
    assert (await client.post("/v1/chat/completions", json=chat_body())).status_code == 500
    await client.post("/admin/reset")
    assert (await client.post("/v1/chat/completions", json=chat_body())).status_code == 200
    assert (await client.get("/admin/stats")).json() == {
        "models": {"sim-fast": {"requests": 1, "outcomes": {"ok": 1}}}
    }


@pytest.mark.parametrize(
    "changes, expected",
    [
        ({"ttft": 5}, "unknown profile field 'ttft'"),
        ({"error_rate": "high"}, "error_rate must be a number"),
        ({"error_rate": 1.5}, "between 0 and 1"),
        ({"outage": 1}, "outage must be a boolean"),
        ({"max_tokens": 2.5}, "max_tokens must be an integer"),
        ({"min_tokens": 500}, "exceeds max_tokens"),
        ({"name": "other"}, "name cannot be changed"),
        ({"fault": "explode"}, "fault must be empty or one of"),
        ({"fault": 503}, "fault must be a string"),
        ({"fault_rate": 1.5}, "fault_rate must be between 0 and 1"),
        ([1, 2], "JSON object"),
    ],
)
async def test_admin_patch_validation(client, changes, expected):
    response = await client.patch("/admin/profiles/sim-fast", json=changes)
    assert response.status_code == 400
    assert expected in response.json()["error"]["message"]


async def test_profile_fault_applies_to_every_request_until_reset(client):
    patched = await client.patch("/admin/profiles/sim-fast", json={"fault": " 503 "})
    assert patched.json()["fault"] == "503" and patched.json()["fault_rate"] == 1.0
    for _ in range(3):
        assert (await client.post("/v1/chat/completions", json=chat_body())).status_code == 503
    assert (await client.post("/v1/chat/completions", json=chat_body("sim-long"))).status_code == 200
    # The per-request header still wins over the profile's fault.
    limited = await client.post("/v1/chat/completions", json=chat_body(), headers={"x-sim-fault": "429"})
    assert limited.status_code == 429
    await client.patch("/admin/profiles/sim-fast", json={"fault": "cut"})
    with pytest.raises(httpx.RemoteProtocolError):
        await sse_payloads(client, chat_body(stream=True))
    await client.patch("/admin/profiles/sim-fast", json={"fault": "malformed"})
    with pytest.raises(json.JSONDecodeError):
        await sse_payloads(client, chat_body(stream=True))
    await client.patch("/admin/profiles/sim-fast", json={"fault": "no-done"})
    assert (await sse_payloads(client, chat_body(stream=True)))[-1] != "[DONE]"
    await client.post("/admin/reset")
    assert (await client.get("/admin/profiles")).json()["profiles"]["sim-fast"]["fault"] == ""
    assert (await client.post("/v1/chat/completions", json=chat_body())).status_code == 200


async def test_profile_fault_rate_is_a_seeded_probability(client):
    await client.patch("/admin/profiles/sim-fast", json={"fault": "500", "fault_rate": 0.5})
    statuses = [(await client.post("/v1/chat/completions", json=chat_body())).status_code for _ in range(40)]
    assert 8 <= statuses.count(500) <= 32 and statuses.count(200) == 40 - statuses.count(500)
    await client.post("/admin/reset")
    await client.patch("/admin/profiles/sim-fast", json={"fault": "500", "fault_rate": 0.5})
    again = [(await client.post("/v1/chat/completions", json=chat_body())).status_code for _ in range(40)]
    assert again == statuses
    await client.patch("/admin/profiles/sim-fast", json={"fault_rate": 0})
    assert (await client.post("/v1/chat/completions", json=chat_body())).status_code == 200


async def test_admin_patch_unknown_model_is_404(client):
    assert (await client.patch("/admin/profiles/nope", json={"outage": True})).status_code == 404


async def test_admin_stats_count_outcomes(client):
    for fault in ("", "500", "429", "no-done"):
        headers = {"x-sim-fault": fault} if fault else {}
        await client.post("/v1/chat/completions", json=chat_body(model="sim-long"), headers=headers)
    stats = (await client.get("/admin/stats")).json()["models"]["sim-long"]
    assert stats == {"requests": 4, "outcomes": {"429": 1, "500": 1, "no-done": 1, "ok": 1}}


async def _flaky_session(server) -> tuple[list[str], list[int]]:
    texts, statuses = [], []
    async with httpx.AsyncClient(base_url=server.url) as http:
        for i in range(12):
            body = {"model": "sim-flaky", "messages": [{"role": "user", "content": f"question {i}"}]}
            try:
                response = await http.post("/chat/completions", json=body)
            except httpx.RemoteProtocolError:  # a simulated cut
                statuses.append(0)
                continue
            statuses.append(response.status_code)
            if response.status_code == 200 and response.content.startswith(b'{"id"'):
                texts.append(response.json()["choices"][0]["message"]["content"])
    return texts, statuses


async def test_same_seed_same_text_and_faults():
    servers = [await start_sim(time_scale=0, seed=seed) for seed in (7, 7, 8)]
    try:
        first, again, other_seed = [await _flaky_session(server) for server in servers]
    finally:
        for server in servers:
            await server.close()
    assert first == again
    assert first != other_seed
    assert {500, 200} <= set(first[1])


async def test_delays_follow_the_profile_and_scale(sim):
    async with httpx.AsyncClient(base_url=sim.url) as http:
        started = time.monotonic()
        body = {"model": "sim-fast", "messages": PROMPT, "max_tokens": 10}
        response = await http.post("/chat/completions", json=body, headers={"x-sim-delay-scale": "1"})
        elapsed = time.monotonic() - started
    assert response.status_code == 200
    # 60 ms to the first token and 9 more at 200 tokens/s, each within 20% jitter.
    assert 0.09 <= elapsed < 2.0


async def test_client_disconnect_mid_stream_is_quiet(sim, caplog):
    caplog.set_level(logging.WARNING)
    async with httpx.AsyncClient(base_url=sim.url) as http:
        body = {"model": "sim-strong", "messages": PROMPT, "stream": True}
        headers = {"x-sim-delay-scale": "1"}
        async with http.stream("POST", "/chat/completions", json=body, headers=headers) as r:
            async for _ in r.aiter_lines():
                break
    for _ in range(50):
        if sim.state.outcomes["sim-strong"]["disconnected"]:
            break
        await asyncio.sleep(0.02)
    assert sim.state.outcomes["sim-strong"]["disconnected"] == 1
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


async def test_256_concurrent_streams(sim):
    sim.state.reset()
    # aiohttp's client, because httpx's connection pool is slow to open hundreds of connections at once.
    connector = aiohttp.TCPConnector(limit=300)
    async with aiohttp.ClientSession(base_url=sim.root_url, connector=connector) as session:

        async def one(i: int) -> bool:
            body = {"model": "sim-fast", "messages": [{"role": "user", "content": f"n{i}"}], "stream": True}
            headers = {"x-sim-delay-scale": "0.2"}
            async with session.post("/v1/chat/completions", json=body, headers=headers) as r:
                return (await r.read()).endswith(b"data: [DONE]\n\n")

        assert all(await asyncio.gather(*(one(i) for i in range(256))))
    assert sim.state.stats()["models"]["sim-fast"] == {"requests": 256, "outcomes": {"ok": 256}}


def test_text_is_deterministic_and_on_topic():
    prompt = "Explain how Roman aqueducts carried water"
    first = generate_tokens(random.Random(3), prompt, 60)
    assert first == generate_tokens(random.Random(3), prompt, 60)
    assert first != generate_tokens(random.Random(4), prompt, 60)
    text = "".join(first)
    assert len(first) >= 60 and text.endswith(".")
    assert any(word in text.lower() for word in ("roman", "aqueducts", "carried", "water"))
    assert topic_words(prompt) == ["roman", "aqueducts", "carried", "water"]


def test_code_prompts_get_a_fenced_block():
    assert looks_like_code_request("Write a Python function that parses dates")
    assert not looks_like_code_request("What is the capital of France?")
    text = "".join(generate_tokens(random.Random(1), "Write a Python function that parses dates", 50))
    assert "```python\ndef " in text and text.count("```") == 2


def test_split_tokens_round_trips_and_splits_long_words():
    text = "Internationalization matters.\n\n  Indented code"
    tokens = split_tokens(text)
    assert "".join(tokens) == text
    assert tokens[:2] == ["Internatio", "nalization"]


def test_profiles_file_merges_over_defaults(tmp_path):
    path = tmp_path / "profiles.yaml"
    path.write_text("sim-fast: {ttft_ms: 5}\nsim-custom: {tokens_per_s: 10, outage: true}\n")
    profiles = load_profiles_file(path)
    assert profiles["sim-fast"].ttft_ms == 5 and profiles["sim-fast"].tokens_per_s == 200
    assert profiles["sim-custom"] == ModelProfile("sim-custom", tokens_per_s=10, outage=True)
    path.write_text("sim-fast: {ttft_ms: -1}\n")
    with pytest.raises(ProfileError, match="sim-fast: ttft_ms must be a non-negative number"):
        load_profiles_file(path)
    with pytest.raises(ProfileError, match="tokens_per_s must be greater than 0"):
        apply_changes(ModelProfile("x"), {"tokens_per_s": 0})


def test_main_prints_listen_line_and_stops_on_sigterm(tmp_path):
    script = (
        "import asyncio, argparse, sys\nfrom routemesh.sim import main\np = argparse.ArgumentParser()\n"
        "main.add_arguments(p)\nasyncio.run(main.run(p.parse_args(sys.argv[1:])))\n"
    )
    env = {**os.environ, "ROUTEMESH_SIM_LISTEN": "127.0.0.1:0"}
    with subprocess.Popen([sys.executable, "-c", script, "--time-scale", "0"], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, env=env) as proc:
        try:
            line = proc.stdout.readline().strip()
            assert line.startswith("routemesh sim listening on http://127.0.0.1:")
            url = line.rsplit(" ", 1)[1]
            assert httpx.get(f"{url}/healthz").text == "ok"
            proc.terminate()
            _, stderr = proc.communicate(timeout=10)
            assert proc.returncode == 0 and stderr == ""
        finally:
            proc.kill()
