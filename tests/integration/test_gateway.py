"""The OpenAI-compatible gateway in front of a real mesh, driven by the official openai client."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace

import httpx
import openai
import pytest
import yaml

from routemesh.gateway.main import start_gateway

pytestmark = pytest.mark.integration

HELLO = [{"role": "user", "content": "What are your opening hours on Sunday?"}]


@pytest.fixture(scope="module", params=["gateway", "router"])
async def gateway(request, mesh):
    """The gateway in front of the router over gRPC, or the router serving the API itself (no gRPC hop)."""
    if request.param == "router":
        yield SimpleNamespace(url=mesh.router_http_url)
        return
    server = await start_gateway(mesh.layout.address("router"), control_address=mesh.layout.address("control"),
                                 grace_s=5)
    if server.policy.current is None:
        assert await server.policy.wait_for_change(10), "the gateway got no policy from control"
    yield server
    await server.close()


@pytest.fixture
async def client(gateway):
    # No client retries: each test sees the gateway's first answer.
    async with openai.AsyncOpenAI(base_url=gateway.url + "/v1", api_key="unused", max_retries=0,
                                  timeout=30) as c:
        yield c


async def test_completion(client, policy_file):
    completion = await client.chat.completions.create(
        model="auto", max_tokens=64,
        messages=[{"role": "system", "content": "Be brief."},
                  {"role": "user", "content": [{"type": "text", "text": "What are your opening hours on Sunday?"}]}])
    assert completion.object == "chat.completion"
    assert completion.id.startswith("chatcmpl-")
    assert completion.model in yaml.safe_load(policy_file.read_text())["models"]
    choice = completion.choices[0]
    assert choice.message.role == "assistant" and choice.message.content
    assert choice.finish_reason in ("stop", "length")
    usage = completion.usage
    assert usage.prompt_tokens > 0 and usage.completion_tokens > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


async def test_headers_name_the_decision_and_traceparent_is_continued(client):
    trace_id = "0af7651916cd43dd8448eb211c80319c"
    raw = await client.chat.completions.with_raw_response.create(
        model="auto", messages=HELLO, max_tokens=32,
        extra_headers={"traceparent": f"00-{trace_id}-b7ad6b7169203331-01"})
    completion = raw.parse()
    assert completion.id == "chatcmpl-" + raw.headers["x-routemesh-decision-id"]
    assert raw.headers["x-routemesh-route"] == "auto"
    assert raw.headers["x-routemesh-model"] == completion.model
    assert raw.headers["x-routemesh-trace-id"] == trace_id
    pinned = await client.chat.completions.with_raw_response.create(model="balanced", messages=HELLO, max_tokens=8)
    assert pinned.headers["x-routemesh-model"] == "balanced"
    assert pinned.headers["x-routemesh-route"] == ""


async def test_stream_with_usage(client):
    raw = await client.chat.completions.with_raw_response.create(
        model="auto", messages=HELLO, max_tokens=48, stream=True, stream_options={"include_usage": True})
    assert raw.headers["content-type"].startswith("text/event-stream")
    decision_id = raw.headers["x-routemesh-decision-id"]
    chunks = [chunk async for chunk in raw.parse()]
    assert {c.id for c in chunks} == {"chatcmpl-" + decision_id}
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip()
    reasons = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert reasons in (["stop"], ["length"])
    assert chunks[-1].choices == []
    assert chunks[-1].usage.completion_tokens > 0
    assert all(c.usage is None for c in chunks[:-1])


async def test_models_lists_auto_routes_and_models(client, policy_file):
    policy = yaml.safe_load(policy_file.read_text())
    ids = [model.id async for model in client.models.list()]
    assert ids[0] == "auto"
    assert set(ids) == {"auto", *policy["routes"], *policy["models"]}
    assert (await client.models.retrieve("balanced")).owned_by == "sim"
    with pytest.raises(openai.NotFoundError):
        await client.models.retrieve("no-such-model")


@pytest.mark.parametrize(("changes", "error", "param", "code"), [
    ({"model": "no-such-model"}, openai.NotFoundError, "model", "model_not_found"),
    ({"max_tokens": -5}, openai.BadRequestError, "max_tokens", "invalid_value"),
    ({"max_completion_tokens": -5}, openai.BadRequestError, "max_completion_tokens", "invalid_value"),
    ({"messages": []}, openai.BadRequestError, "messages", "invalid_value"),
    ({"tools": [{"type": "file_search"}]}, openai.BadRequestError, "tools[0].type", "unsupported_parameter"),
    ({"functions": [{"name": "f"}]}, openai.BadRequestError, "functions", "unsupported_parameter"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}}},
     openai.BadRequestError, "response_format.type", "unsupported_parameter"),
    ({"extra_body": {"routemesh": {"strategy": "bogus"}}}, openai.BadRequestError, "routemesh.strategy",
     "invalid_value"),
    # "flaky" has no json capability: the pinned model cannot serve the response format.
    ({"model": "flaky", "response_format": {"type": "json_object"}}, openai.BadRequestError, None,
     "no_eligible_model"),
])
async def test_bad_requests_are_openai_errors(client, changes, error, param, code):
    with pytest.raises(error) as err:
        await client.chat.completions.create(**{"model": "auto", "messages": HELLO, **changes})
    assert err.value.param == param
    assert err.value.code == code


TOOLS = [{"type": "function", "function": {
    "name": "get_opening_hours", "description": "Opening hours of the shop on a day",
    "parameters": {"type": "object", "properties": {"day": {"type": "string"}}, "required": ["day"]}}}]
TOOL_TURNS = [
    *HELLO,
    {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "get_opening_hours", "arguments": '{"day":"sun"}'}}]},
    {"role": "tool", "tool_call_id": "call_1", "content": "closed"},
]


async def test_tools_reach_the_router_and_are_served(client):
    # The simulated provider may answer with text rather than a tool call: what matters is that the
    # gateway takes tools, tool_choice and tool turns, and the answer is a well-formed completion.
    completion = await client.chat.completions.create(model="balanced", messages=TOOL_TURNS, tools=TOOLS,
                                                      tool_choice="auto", max_tokens=32)
    choice = completion.choices[0]
    assert choice.finish_reason in ("stop", "length", "tool_calls")
    assert choice.message.content or choice.message.tool_calls
    for call in choice.message.tool_calls or ():
        assert call.type == "function" and call.id and call.function.name == "get_opening_hours"
    stream = await client.chat.completions.create(
        model="balanced", messages=HELLO, tools=TOOLS, max_tokens=32, stream=True,
        tool_choice={"type": "function", "function": {"name": "get_opening_hours"}})
    chunks = [c async for c in stream]
    reasons = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert reasons in (["stop"], ["length"], ["tool_calls"])
    pieces = [t for c in chunks if c.choices for t in c.choices[0].delta.tool_calls or ()]
    if reasons == ["tool_calls"]:
        assert pieces[0].id and pieces[0].type == "function" and pieces[0].function.name == "get_opening_hours"
        assert all(p.id is None for p in pieces[1:] if p.index == 0)
        json.loads("".join(p.function.arguments or "" for p in pieces if p.index == 0))


async def test_tools_pinned_to_a_model_without_the_tools_capability_is_400(client):
    # "fast-cheap" has [streaming, json]: the router must refuse rather than drop the tools.
    with pytest.raises(openai.BadRequestError) as err:
        await client.chat.completions.create(model="fast-cheap", messages=HELLO, tools=TOOLS, max_tokens=16)
    assert err.value.code == "no_eligible_model"
    assert "tools" in err.value.message


async def test_bad_json_and_unknown_paths(gateway):
    async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as http:
        response = await http.post("/v1/chat/completions", content=b"{not json")
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "invalid_json"
        response = await http.post("/v1/embeddings", json={})
        assert response.status_code == 404
        assert set(response.json()["error"]) == {"message", "type", "param", "code"}
        response = await http.get("/healthz")
        assert (response.status_code, response.text) == (200, "ok")


async def test_pinned_model_whose_provider_is_down_is_503(client, sim):
    # A model no other test pins, and fewer failures than trip its shared circuit breaker (5 in a row).
    sim.patch("sim-long", outage=True)
    for stream in (False, True):
        with pytest.raises(openai.APIStatusError) as err:
            await client.chat.completions.create(model="long-context", messages=HELLO, max_tokens=16, stream=stream)
        assert err.value.status_code == 503
        assert err.value.code == "all_candidates_failed"
    # This test runs once per gateway mode: a success ends the failure streak, so the two runs together do not
    # open the breaker for the tests after them (which would then see long-context's requests fail over).
    sim.patch("sim-long", outage=False)
    answer = await client.chat.completions.create(model="long-context", messages=HELLO, max_tokens=16)
    assert answer.choices[0].message.content


async def test_cut_upstream_stream_is_an_error_never_a_clean_end(client, gateway, sim):
    sim.patch("sim-balanced", fault="cut")
    stream = await client.chat.completions.create(model="balanced", messages=HELLO, max_tokens=64, stream=True)
    texts = []
    with pytest.raises(openai.APIError) as err:
        async for chunk in stream:
            texts.append(chunk.choices[0].delta.content or "")
    assert err.value.code == "truncated_upstream"
    assert "".join(texts), "the cut came after the first token"
    with pytest.raises(openai.APIStatusError) as err:
        await client.chat.completions.create(model="balanced", messages=HELLO, max_tokens=64)
    assert (err.value.status_code, err.value.code) == (502, "truncated_upstream")
    async with httpx.AsyncClient(timeout=10) as http:
        response = await http.post(gateway.url + "/v1/chat/completions",
                                   json={"model": "balanced", "messages": HELLO, "stream": True})
    events = [line.removeprefix("data: ") for line in response.text.splitlines() if line.startswith("data: ")]
    assert "[DONE]" not in events
    assert json.loads(events[-1])["error"]["type"] == "upstream_error"


async def test_close_lets_an_open_stream_finish(mesh, sim):
    # About 50 ms per token at the test time scale: the stream is still open when close() starts.
    sim.patch("sim-fast", tokens_per_s=1.0)
    server = await start_gateway(mesh.layout.address("router"), control_address=mesh.layout.address("control"),
                                 grace_s=10)
    body = {"model": "fast-cheap", "messages": HELLO, "max_tokens": 12, "stream": True}
    async with httpx.AsyncClient(timeout=30) as http:
        async with http.stream("POST", server.url + "/v1/chat/completions", json=body) as response:
            lines = response.aiter_lines()
            assert (await anext(lines)).startswith("data: ")
            closing = asyncio.create_task(server.close())
            await asyncio.sleep(0.1)
            assert not closing.done()
            with pytest.raises(httpx.ConnectError):
                await http.get(server.url + "/healthz")
            rest = [line async for line in lines]
        await asyncio.wait_for(closing, 10)
    assert "data: [DONE]" in rest


async def test_explain_returns_the_decision_chat_would_make(gateway):
    body = {"model": "auto", "messages": [{"role": "user", "content": "Write a Python function that sorts a list"}]}
    async with httpx.AsyncClient(timeout=10) as http:
        response = await http.post(gateway.url + "/v1/routemesh/explain", json=body)
        assert response.status_code == 200
        decision = response.json()["decision"]
        assert decision["model"] == response.headers["x-routemesh-model"]
        assert decision["rule"] == "code"
        assert any(c["eligible"] for c in decision["candidates"])
        response = await http.post(gateway.url + "/v1/routemesh/explain", json={**body, "model": "nope"})
        assert response.status_code == 404


async def test_caller_hanging_up_stops_the_upstream_call(gateway, sim):
    sim.patch("sim-fast", tokens_per_s=1.0)
    body = {"model": "fast-cheap", "messages": HELLO, "max_tokens": 60, "stream": True}
    async with httpx.AsyncClient(timeout=30) as http:
        async with http.stream("POST", gateway.url + "/v1/chat/completions", json=body) as response:
            assert (await anext(response.aiter_lines())).startswith("data: ")
    # gateway -> router -> executor -> provider: the provider sees its client go away.
    for _ in range(60):
        if sim.stats()["models"].get("sim-fast", {}).get("outcomes", {}).get("disconnected"):
            break
        await asyncio.sleep(0.05)
    else:
        pytest.fail(f"the provider stream was not cancelled: {sim.stats()}")
