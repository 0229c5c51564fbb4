"""Hostile gateway bodies (issue 13): nesting past the cap, NaN and infinity anywhere, numbers past a double."""

from __future__ import annotations

import json
import math

import pytest

from routemesh.gateway.openai_api import MAX_JSON_DEPTH, GatewayError, load_json, parse_chat

USER = [{"role": "user", "content": "hi"}]


def _nested(depth: int) -> str:
    """`depth` nested arrays, the innermost empty: depth 1 is `[]`."""
    return "[" * depth + "]" * depth


def _error(raw: str | bytes) -> GatewayError:
    with pytest.raises(GatewayError) as caught:
        load_json(raw.encode() if isinstance(raw, str) else raw)
    return caught.value


def test_nesting_up_to_the_cap_is_accepted_and_one_more_level_is_a_400():
    assert load_json(_nested(MAX_JSON_DEPTH).encode()) is not None
    # The cap counts the body itself as level 1, so a key under the top object sits at level 2.
    assert load_json(json.dumps({"metadata": json.loads(_nested(MAX_JSON_DEPTH - 1))}).encode())
    error = _error(_nested(MAX_JSON_DEPTH + 1))
    assert (error.status, error.type, error.code) == (400, "invalid_request_error", "json_too_deep")
    assert f"deeper than {MAX_JSON_DEPTH} levels" in error.message
    error = _error(json.dumps({"tools": [{"function": {"parameters": json.loads(_nested(MAX_JSON_DEPTH))}}]}))
    assert error.code == "json_too_deep"
    assert error.param.startswith("tools[0].function.parameters[0][0]")


@pytest.mark.parametrize("depth", [1_000, 10_000, 1_000_000])
def test_nesting_past_the_parsers_recursion_limit_is_a_400_not_a_500(depth):
    # The stdlib parser raises RecursionError near 1,000 levels (a 500 before issue 13).
    for raw in (_nested(depth), '{"a":' * depth + "1" + "}" * depth):
        error = _error(raw)
        assert (error.status, error.code) == (400, "json_too_deep")


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e999", "-1e999"])
@pytest.mark.parametrize(("template", "param"), [
    ('{{"temperature": {}}}', "temperature"),
    ('{{"top_p": {}}}', "top_p"),
    ('{{"routemesh": {{"max_cost_usd": {}}}}}', "routemesh.max_cost_usd"),
    ('{{"routemesh": {{"latency_target_ms": {}}}}}', "routemesh.latency_target_ms"),
    ('{{"tools": [{{"type": "function", "function": {{"name": "f", "parameters": {{"maximum": {}}}}}}}]}}',
     "tools[0].function.parameters.maximum"),
    ('{{"messages": [1, 2, {}]}}', "messages[2]"),
])
def test_non_finite_numbers_are_a_400_naming_the_parameter(template, param, literal):
    error = _error(template.format(literal))
    assert (error.status, error.type, error.code, error.param) == (400, "invalid_request_error", "invalid_value",
                                                                   param)
    assert f"`{param}` must be a finite number" in error.message


def test_a_non_finite_body_and_bad_json_are_400s():
    assert _error("NaN").code == "invalid_value"
    assert _error("{not json").code == "invalid_json"
    assert _error(b'{"a": "\xff"}').code == "invalid_json"
    # Python refuses to parse ints of more than 4,300 digits (a ValueError): a 400 as well.
    assert _error('{"max_tokens": 1' + "0" * 5000 + "}").code == "invalid_json"


def test_a_long_key_is_cut_in_the_param_it_is_named_in():
    key = "k" * 10_000
    error = _error(json.dumps({key: math.inf}).replace("Infinity", "1e999"))
    assert error.param == "k" * 64 + "..."


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, 10**400])
def test_parse_chat_refuses_non_finite_floats_given_as_objects(value):
    # parse_chat is also reached with Python objects; an int past a double's range raised OverflowError.
    for body, param in (({"messages": USER, "temperature": value}, "temperature"),
                        ({"messages": USER, "routemesh": {"max_cost_usd": value}}, "routemesh.max_cost_usd"),
                        ({"messages": USER, "routemesh": {"latency_target_ms": value}},
                         "routemesh.latency_target_ms")):
        with pytest.raises(GatewayError) as caught:
            parse_chat(body)
        assert (caught.value.status, caught.value.param) == (400, param)
        assert "finite" in caught.value.message


def test_finite_numbers_still_pass():
    parsed = parse_chat(load_json(json.dumps({
        "messages": USER, "temperature": 0.5, "top_p": 1e308,
        "routemesh": {"max_cost_usd": 2, "latency_target_ms": 1.5e3}}).encode()))
    assert parsed.request.temperature == 0.5
    assert (parsed.request.routing.max_cost_usd, parsed.request.routing.latency_target_ms) == (2.0, 1500.0)
