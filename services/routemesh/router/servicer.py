"""The RouterService servicer: protos to the request pipeline and its events back; errors map in the interceptor."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from routemesh.common.admin import bearer
from routemesh.router.convert import chat_input, decision_to_proto, final_to_proto
from routemesh.router.pipeline import RequestPipeline
from routemesh.router.request import Decision, Delta
from routemesh.v1 import common_pb2, router_pb2, router_pb2_grpc


class RouterServicer(router_pb2_grpc.RouterServiceServicer):
    """Thin over RequestPipeline: convert in, run, convert out."""

    def __init__(self, pipeline: RequestPipeline):
        self.pipeline = pipeline
        # Chat streams in progress (routemesh_inflight_streams reads it at scrape time).
        self.streams = 0

    async def Explain(self, request: router_pb2.ExplainRequest,
                      context: grpc.aio.ServicerContext) -> router_pb2.ExplainResponse:
        decision = await self.pipeline.explain(chat_input(request, bearer(context.invocation_metadata())))
        return router_pb2.ExplainResponse(decision=decision_to_proto(decision))

    async def SubmitFeedback(self, request: router_pb2.SubmitFeedbackRequest,
                             context: grpc.aio.ServicerContext) -> router_pb2.SubmitFeedbackResponse:
        receipt = await self.pipeline.feedback(request.feedback, bearer(context.invocation_metadata()))
        return router_pb2.SubmitFeedbackResponse(receipt=receipt)

    async def Chat(self, request: router_pb2.ChatRequest,
                   context: grpc.aio.ServicerContext) -> AsyncIterator[router_pb2.ChatResponse]:
        decision: Decision | None = None
        self.streams += 1
        try:
            async for event in self.pipeline.chat(chat_input(request, bearer(context.invocation_metadata()))):
                if type(event) is Delta:
                    yield router_pb2.ChatResponse(delta=common_pb2.Delta(text=event.text,
                                                                         tool_calls=event.tool_calls))
                elif type(event) is Decision:
                    decision = event
                    yield router_pb2.ChatResponse(decision=decision_to_proto(event))
                else:
                    assert decision is not None
                    yield router_pb2.ChatResponse(final=final_to_proto(event, decision))
        finally:
            self.streams -= 1

