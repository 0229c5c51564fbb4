"""Tool calls and JSON mode through every hop: capability routing, streamed tool-call pieces, the answer turn."""

from __future__ import annotations

import grpc
import pytest

from routemesh.client import RouterClient, RoutemeshError
from routemesh.v1 import common_pb2

pytestmark = pytest.mark.integration

WEATHER = common_pb2.Tool(name="get_weather", description="Current weather in a city",
                          parameters_json='{"type": "object", "properties": {"query": {"type": "string"}}}')


def test_a_tool_call_streams_through_and_the_answer_turn_completes(router_address):
    with RouterClient(router_address) as client:
        called = client.complete("What is the weather in Lisbon? Use get_weather.", tools=[WEATHER])
        # Only models with the "tools" capability are candidates.
        rejected = {c.model: c.rejection_reason for c in called.decision.candidates if not c.eligible}
        assert "lacks capability tools" in rejected["fast-cheap"]
        assert called.final.status == common_pb2.FINISH_STATUS_TOOL_CALLS
        assert [c.name for c in called.tool_calls] == ["get_weather"]
        call = called.tool_calls[0]
        assert call.id and '"query"' in call.arguments_json
        follow_up = [
            common_pb2.Message(role=common_pb2.ROLE_USER, content="What is the weather in Lisbon? Use get_weather."),
            common_pb2.Message(role=common_pb2.ROLE_ASSISTANT, tool_calls=[call]),
            common_pb2.Message(role=common_pb2.ROLE_TOOL, tool_call_id=call.id, content='{"celsius": 21}'),
        ]
        answered = client.complete(follow_up, tools=[WEATHER])
    assert answered.final.status in (common_pb2.FINISH_STATUS_COMPLETE, common_pb2.FINISH_STATUS_LENGTH)
    assert answered.text and not answered.tool_calls


def test_pinning_a_model_without_tools_is_refused_with_the_reason(router_address):
    with RouterClient(router_address) as client, pytest.raises(RoutemeshError) as err:
        client.complete("weather please", model="fast-cheap", tools=[WEATHER])
    assert err.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert "tools" in err.value.message


def test_json_mode_requires_the_json_capability(router_address):
    with RouterClient(router_address) as client:
        # The "cheap" route starts with "flaky", which cannot do JSON output.
        result = client.complete("List three colours as JSON", model="cheap", response_format="json_object")
        with pytest.raises(RoutemeshError) as err:
            client.complete("hi", response_format="yaml")
    rejected = {c.model: c.rejection_reason for c in result.decision.candidates if not c.eligible}
    assert "lacks capability json" in rejected["flaky"]
    assert result.final.model != "flaky"
    assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "response_format" in [f for f, _ in err.value.field_violations]
