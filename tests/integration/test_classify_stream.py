"""The router's classify over long-lived ClassifyStream calls, against real classifier processes."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

import grpc
import httpx
import pytest

from google.rpc import error_details_pb2, status_pb2

from routemesh.common.errors import ERROR_DOMAIN, InvalidRequest
from routemesh.mesh import free_port
from routemesh.router.clients.classifier import FALLBACK_SOURCE, FeatureSource, classify_here
from routemesh.v1 import classifier_pb2, classifier_pb2_grpc, common_pb2

pytestmark = pytest.mark.integration

PROMPTS = [
    "Translate into French: good night",
    "What is 7 times 8?",
    "Why does this raise?\n```python\ndef f(d):\n    return d['x']\n```",
    "Write a short poem about the sea",
    "Summarize this memo: the zebra migration starts in July and ends in October.",
    "Extract every date from: 3 May 2024, 9 June 2025",
]


def user(text: str) -> list[common_pb2.Message]:
    return [common_pb2.Message(role=common_pb2.ROLE_USER, content=text)]


class ClassifierProcess:
    """`routemesh serve classifier` on a port of its own, with its metrics on another (no control plane: it
    classifies without a policy, so without a quality predictor)."""

    def __init__(self, port: int | None = None):
        self.port = port or free_port()
        self.metrics_port = free_port()
        self.process: subprocess.Popen | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "routemesh", "serve", "classifier", "--listen", self.address,
             "--control", f"127.0.0.1:{free_port()}", "--metrics-listen", f"127.0.0.1:{self.metrics_port}"],
            env={**os.environ, "PYTHONUNBUFFERED": "1"}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        with grpc.insecure_channel(self.address) as channel:
            stub = classifier_pb2_grpc.ClassifierServiceStub(channel)
            while True:
                try:
                    stub.Classify(classifier_pb2.ClassifyRequest(messages=user("hi")), timeout=1)
                    return
                except grpc.RpcError:
                    assert self.process.poll() is None, "the classifier exited"
                    assert time.monotonic() < deadline, "the classifier did not start"
                    time.sleep(0.1)

    def stop(self, sig: int = signal.SIGTERM) -> float:
        """Stop it with `sig`; the seconds it took to exit."""
        assert self.process is not None
        started = time.monotonic()
        self.process.send_signal(sig)
        self.process.wait(40)
        return time.monotonic() - started

    def classified(self) -> float:
        """Requests it classified (its routemesh_classifications counter), the start-up probe included."""
        text = httpx.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).text
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith("routemesh_classifications_total{"))


@contextmanager
def classifiers(count: int = 1) -> Iterator[list[ClassifierProcess]]:
    started = [ClassifierProcess() for _ in range(count)]
    try:
        for process in started:
            process.start()
        yield started
    finally:
        for process in started:
            if process.process is not None and process.process.poll() is None:
                process.process.kill()
                process.process.wait(10)


@asynccontextmanager
async def feature_source(address: str, **settings) -> AsyncIterator[FeatureSource]:
    source = FeatureSource(address, **settings)
    source.start()
    try:
        yield source
    finally:
        await source.stop()


async def test_the_router_classifies_over_a_stream_as_over_unary_calls() -> None:
    with classifiers() as (classifier,):
        async with feature_source(classifier.address, streams=2) as streamed, \
                feature_source(classifier.address, streams=0) as unary:
            before = classifier.classified()
            for prompt in PROMPTS:
                over_stream, over_unary = await streamed.classify(user(prompt)), await unary.classify(user(prompt))
                assert over_stream.source == over_unary.source == "classifier"
                assert over_stream.features == over_unary.features == classify_here(user(prompt), "", None).features
            assert streamed.streams is not None and len(streamed.streams.streams) == 2, "both streams in use"
            assert unary.streams is None
            assert classifier.classified() - before == 2 * len(PROMPTS), "the metrics count stream requests too"


async def test_concurrent_requests_each_get_their_own_answer() -> None:
    prompts = [f"{PROMPTS[i % len(PROMPTS)]} {'and more words ' * (i % 13)}" for i in range(300)]
    with classifiers() as (classifier,):
        async with feature_source(classifier.address, streams=2, timeout_s=5) as source:
            results = await asyncio.gather(*(source.classify(user(p)) for p in prompts))
    assert {r.source for r in results} == {"classifier"}
    for prompt, result in zip(prompts, results, strict=True):
        assert result.features == classify_here(user(prompt), "", None).features


async def test_a_bad_request_fails_alone_and_the_stream_stays_open() -> None:
    bad = [common_pb2.Message(role=common_pb2.ROLE_USER, content="hi"),
           common_pb2.Message(role=common_pb2.ROLE_UNSPECIFIED, content="who am I?")]
    with classifiers() as (classifier,):
        async with feature_source(classifier.address, streams=1) as source:
            first = await source.classify(user(PROMPTS[0]))
            assert source.streams is not None
            stream = source.streams.streams[0]
            results = await asyncio.gather(source.classify(user(PROMPTS[1])), source.classify(bad),
                                           source.classify(user(PROMPTS[2])), return_exceptions=True)
            assert isinstance(results[1], InvalidRequest) and "unknown role" in results[1].message
            assert [r.source for r in (first, results[0], results[2])] == ["classifier"] * 3
            assert source.streams.streams == [stream], "the same stream serves on"
            assert (await source.classify(user(PROMPTS[3]))).source == "classifier"


async def test_each_message_is_answered_by_id_and_an_error_carries_the_details_classify_gives() -> None:
    bad = [common_pb2.Message(role=common_pb2.ROLE_UNSPECIFIED, content="who am I?")]
    requests = [classifier_pb2.ClassifyStreamRequest(id=7, request=classifier_pb2.ClassifyRequest(messages=user("hi"))),
                classifier_pb2.ClassifyStreamRequest(id=3, request=classifier_pb2.ClassifyRequest(messages=bad)),
                classifier_pb2.ClassifyStreamRequest(id=9, request=classifier_pb2.ClassifyRequest(messages=bad[:0]))]
    with classifiers() as (classifier,):
        async with grpc.aio.insecure_channel(classifier.address) as channel:
            call = classifier_pb2_grpc.ClassifierServiceStub(channel).ClassifyStream(iter(requests), timeout=10)
            answers = {answer.id: answer async for answer in call}
            assert await call.code() == grpc.StatusCode.OK
    assert answers[7].response.features.source == "classifier"
    for key, field in ((3, "messages[0].role"), (9, "messages")):
        status = status_pb2.Status.FromString(answers[key].error.SerializeToString())  # the same message
        assert status.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
        info, bad_request = error_details_pb2.ErrorInfo(), error_details_pb2.BadRequest()
        assert status.details[0].Unpack(info) and (info.reason, info.domain) == ("INVALID_REQUEST", ERROR_DOMAIN)
        assert status.details[1].Unpack(bad_request)
        assert [v.field for v in bad_request.field_violations] == [field]


async def test_a_killed_classifier_means_local_features_in_time_until_it_is_back() -> None:
    with classifiers() as (classifier,):
        async with feature_source(classifier.address, timeout_s=0.5) as source:
            assert (await source.classify(user(PROMPTS[0]))).source == "classifier"
            classifier.stop(signal.SIGKILL)
            for _ in range(5):
                started = time.monotonic()
                result = await source.classify(user(PROMPTS[1]))
                assert result.source == FALLBACK_SOURCE and time.monotonic() - started < 0.6
                assert result.features == classify_here(user(PROMPTS[1]), "", None).features
            classifier.start()  # the same port (the channel reconnects within its backoff, at most 2 s)
            deadline = time.monotonic() + 10
            while not (source.streams is not None and any(s.answered for s in source.streams.streams)):
                assert time.monotonic() < deadline, "the router never went back to streams"
                await source.classify(user(PROMPTS[2]))
                await asyncio.sleep(0.05)
            assert (await source.classify(user(PROMPTS[2]))).source == "classifier"


async def test_a_draining_classifier_ends_its_streams_instead_of_holding_its_grace_period() -> None:
    with classifiers() as (classifier,):
        async with feature_source(classifier.address) as source:
            assert (await source.classify(user(PROMPTS[0]))).source == "classifier"
            assert source.streams is not None and source.streams.streams
            # SIGTERM drains with a 30 s grace: open streams would hold it that long.
            assert classifier.stop(signal.SIGTERM) < 10
            assert (await source.classify(user(PROMPTS[1]))).source == FALLBACK_SOURCE


async def test_streams_renewed_at_their_max_age_reach_every_replica() -> None:
    with classifiers(2) as replicas:
        before = [r.classified() for r in replicas]
        address = f"ipv4:{replicas[0].address},{replicas[1].address}"
        async with feature_source(address, streams=1, stream_max_age_s=0.1) as source:
            for _ in range(40):
                assert (await source.classify(user(PROMPTS[0]))).source == "classifier"
                await asyncio.sleep(0.02)
        served = [r.classified() - b for r, b in zip(replicas, before, strict=True)]
    assert sum(served) == 40 and min(served) >= 5, f"requests per replica: {served}"


async def test_one_stream_without_renewal_stays_on_one_replica() -> None:
    with classifiers(2) as replicas:
        before = [r.classified() for r in replicas]
        address = f"ipv4:{replicas[0].address},{replicas[1].address}"
        async with feature_source(address, streams=1) as source:
            for _ in range(20):
                assert (await source.classify(user(PROMPTS[0]))).source == "classifier"
        served = sorted(r.classified() - b for r, b in zip(replicas, before, strict=True))
    assert served == [0, 20], "why max age matters"


async def test_idle_streams_are_closed_and_reopened_on_the_next_request() -> None:
    with classifiers() as (classifier,):
        async with feature_source(classifier.address, idle_s=0.3) as source:
            assert (await source.classify(user(PROMPTS[0]))).source == "classifier"
            assert source.streams is not None and len(source.streams.streams) == 1
            await asyncio.sleep(0.15)
            assert (await source.classify(user(PROMPTS[1]))).source == "classifier"
            await asyncio.sleep(0.2)  # 0.35 s after the first request, 0.2 after the last
            assert len(source.streams.streams) == 2, "a request within idle_s keeps them open"
            await asyncio.sleep(0.4)
            assert source.streams.streams == [] and not source.streams._closing, "closed, and ended"
            assert (await source.classify(user(PROMPTS[2]))).source == "classifier"
            assert len(source.streams.streams) == 1


class UnaryOnlyClassifier:
    """A classifier from before ClassifyStream: its server knows Classify alone."""

    def __init__(self) -> None:
        self.calls = 0

    async def classify(self, request: classifier_pb2.ClassifyRequest, context) -> classifier_pb2.ClassifyResponse:
        self.calls += 1
        return classifier_pb2.ClassifyResponse(features=common_pb2.Features(source="old-classifier", language="en"))


async def test_a_classifier_without_classify_stream_is_asked_with_unary_calls() -> None:
    old = UnaryOnlyClassifier()
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("routemesh.v1.ClassifierService", {
        "Classify": grpc.unary_unary_rpc_method_handler(
            old.classify, request_deserializer=classifier_pb2.ClassifyRequest.FromString,
            response_serializer=classifier_pb2.ClassifyResponse.SerializeToString)})])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with feature_source(f"127.0.0.1:{port}") as source:
            results = await asyncio.gather(*(source.classify(user(p)) for p in PROMPTS))
            assert {r.source for r in results} == {"old-classifier"}
            # Concurrent first requests can see grpc's INTERNAL instead of UNIMPLEMENTED (a write racing the
            # refusal): each is still answered by a unary call, and a later clean refusal switches the source.
            asked = len(PROMPTS)
            deadline = asyncio.get_running_loop().time() + 3
            while source.streams is not None:
                assert asyncio.get_running_loop().time() < deadline, "still trying streams"
                await asyncio.sleep(0.1)  # past the reopen backoff
                assert (await source.classify(user(PROMPTS[0]))).source == "old-classifier"
                asked += 1
            assert (await source.classify(user(PROMPTS[0]))).source == "old-classifier"
        assert old.calls == asked + 1  # every request answered by a unary call
    finally:
        await server.stop(None)
