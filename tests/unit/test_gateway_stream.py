"""The gateway's streamed events: ChunkStream renders exactly what json.dumps of the chunk dicts rendered."""

from __future__ import annotations

import json

import pytest
from aiohttp import web

from routemesh.common.outcomes import FinishStatus
from routemesh.gateway import chat
from routemesh.gateway.openai_api import DONE, ChunkStream, chunk, delta_of, sse, usage_chunk
from routemesh.v1 import common_pb2, router_pb2

TRICKY = [
    "", "Hel", 'say "hi"', "back\\slash", "line\nbreak\r\ttab", "\x00\x01\x1f\x7f", "café ☕ 日本語",
    "emoji 🎉 and 𝄞", "</script><!--", "\u2028\u2029", "data: [DONE]\n\n", '"delta":{}', "\x00delta",
]


def _decision(decision_id: str = "d1", model: str = "fast-cheap") -> router_pb2.Decision:
    return router_pb2.Decision(decision_id=decision_id, model=model, route="r", strategy="pinned", provider="sim")


def _delta(text: str, *calls: tuple[int, str, str, str]) -> common_pb2.Delta:
    delta = common_pb2.Delta(text=text)
    for index, call_id, name, fragment in calls:
        delta.tool_calls.add(index=index, id=call_id, name=name, arguments_fragment=fragment)
    return delta


def _old(payload: dict) -> bytes:
    """What the gateway sent before ChunkStream: json.dumps of the whole chunk, per chunk."""
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


@pytest.mark.parametrize("usage", [False, True])
@pytest.mark.parametrize("text", TRICKY)
def test_text_deltas_render_as_json_dumps_did(text, usage):
    decision = _decision()
    stream = ChunkStream(decision, 1_700_000_000, usage)
    for first in (False, True):
        delta = _delta(text)
        expected = _old(chunk(decision, 1_700_000_000, delta_of(delta, first=first), include_usage=usage))
        assert stream.delta(delta, first=first) == expected
    assert json.loads(stream.delta(_delta(text))[6:])["choices"][0]["delta"] == {"content": text}


@pytest.mark.parametrize("decision", [
    _decision('id "quoted"', 'model\n"x"'), _decision("\x00delta", "\x00delta"), _decision("é", "日本"),
    _decision("", ""),
])
def test_the_frame_survives_odd_ids_and_models(decision):
    stream = ChunkStream(decision, 5, True)
    for text in TRICKY:
        assert stream.delta(_delta(text)) == _old(chunk(decision, 5, delta_of(_delta(text)), include_usage=True))


@pytest.mark.parametrize("first", [False, True])
def test_tool_call_deltas_render_as_json_dumps_did(first):
    decision = _decision()
    stream = ChunkStream(decision, 7, True)
    for delta in (_delta("", (0, "call_1", "get_weather", "")), _delta("", (0, "", "", '{"city": "Zürich\\n"}')),
                  _delta("Let me check.", (0, "call_1", "f", ""), (1, "call_2", "g", "{}"))):
        assert stream.delta(delta, first=first) == _old(chunk(decision, 7, delta_of(delta, first=first),
                                                              include_usage=True))


@pytest.mark.parametrize("usage", [False, True])
def test_the_end_is_finish_usage_and_done_in_one_piece(usage):
    decision = _decision()
    final = router_pb2.Final(status=FinishStatus.LENGTH, model="sim-fast-2", provider="sim", cost_usd=2.5e-5)
    final.usage.input_tokens, final.usage.output_tokens = 21, 64
    expected = _old(chunk(decision, 9, {}, model="sim-fast-2", finish_reason="length", include_usage=usage))
    if usage:
        expected += _old(usage_chunk(decision, final, 9))
    assert ChunkStream(decision, 9, usage).end(final) == expected + DONE
    assert DONE == b"data: [DONE]\n\n"


def test_sse_frames_compact_json():
    assert sse({"error": {"message": "é \"x\"", "code": None}}) == b'data: {"error":{"message":"\\u00e9 \\"x\\"","code":null}}\n\n'


def test_event_stream_headers_wait_for_the_first_event():
    # The attribute aiohttp reads to buffer a response's headers until its first body write; if a new aiohttp
    # drops it, streams still work but send their headers in a write of their own.
    assert web.StreamResponse._send_headers_immediately is True
    assert web.Response._send_headers_immediately is False
    assert chat._EventStream._send_headers_immediately is False
