"""The floor: routemesh's hops and messages in bare Python gRPC, with none of routemesh's work.

`routemesh bench --floor` runs these three processes beside the mesh and measures them as one more arm ("floor"),
in the same rounds and against the same simulated provider as routemesh's arms:

- a router: RouterService.Chat; sends one message on an open ClassifyStream and waits for its answer, opens
  ExecutorService.Execute, sends a Decision, relays each executor message as a Delta, then a Final;
- a classifier: answers each ClassifyStream message with an empty ClassifyResponse;
- an executor: Execute calls the provider's chat completions (aiohttp, SSE), and sends the text of each read from
  the socket as one message, then the usage.

The same protos, gRPC settings (`common/grpc_env.py`, the servers' options), event loop (uvloop) and gc settings as
the services; no classification, decision, policy, admission, health, accounting, reports, metrics, interceptors or
tracing. What routemesh adds above this arm is what its own code costs; what this arm adds over the provider is
what three Python gRPC hops cost on the machine, which no routemesh change below that architecture removes.

With `--classifier local` (the router classifies in-process) the floor has no classifier hop either.

    python -m routemesh.bench.floor classifier --port P
    python -m routemesh.bench.floor executor --port P --provider-url URL [--upstream-model NAME]
    python -m routemesh.bench.floor router --port P --executor ADDR [--classifier ADDR]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import subprocess
import sys
import time

# Nothing here imports grpc at module level: grpc reads its settings once, when it starts (`common/grpc_env.py`).
ROLES = ("classifier", "executor", "router")
READY_TIMEOUT_S = 30.0


async def _server(port: int):
    import grpc

    from routemesh.common.serve import SERVER_OPTIONS

    # Without the services' connection age: the router's classify stream lives as long as the run (routemesh's
    # router renews its streams every 30 s for new replicas; the floor has one of each process).
    options = [(name, value) for name, value in SERVER_OPTIONS if not name.startswith("grpc.max_connection_age")]
    server = grpc.aio.server(options=options)
    try:
        server.add_insecure_port(f"127.0.0.1:{port}")
    except RuntimeError:  # grpc's "Failed to bind": the port is taken
        raise SystemExit(f"floor: cannot listen on 127.0.0.1:{port}") from None
    return server


async def serve_classifier(port: int) -> None:
    from routemesh.v1 import classifier_pb2, classifier_pb2_grpc

    class Classifier(classifier_pb2_grpc.ClassifierServiceServicer):
        async def ClassifyStream(self, requests, context):  # noqa: N802 - the RPC's name
            async for request in requests:
                yield classifier_pb2.ClassifyStreamResponse(id=request.id, response=classifier_pb2.ClassifyResponse())

    server = await _server(port)
    classifier_pb2_grpc.add_ClassifierServiceServicer_to_server(Classifier(), server)
    await server.start()
    await server.wait_for_termination()


async def serve_executor(port: int, provider_url: str, upstream_model: str) -> None:
    import aiohttp
    import orjson

    from routemesh.v1 import common_pb2, executor_pb2, executor_pb2_grpc

    server = await _server(port)  # first: a port it cannot take ends it before anything else exists
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
    url = provider_url.rstrip("/") + "/chat/completions"

    class Executor(executor_pb2_grpc.ExecutorServiceServicer):
        async def Execute(self, request, context):  # noqa: N802
            body = {"model": upstream_model, "stream": True, "max_tokens": request.max_tokens,
                    "stream_options": {"include_usage": True},
                    "messages": [{"role": "user", "content": m.content} for m in request.messages]}
            usage = common_pb2.Usage()
            rest = b""
            async with session.post(url, data=orjson.dumps(body),
                                    headers={"content-type": "application/json"}) as response:
                async for data in response.content.iter_any():
                    events = (rest + data).split(b"\n\n")
                    rest = events.pop()
                    text = []
                    for event in events:
                        if not event.startswith(b"data: ") or event == b"data: [DONE]":
                            continue
                        chunk = orjson.loads(event[6:])
                        for choice in chunk.get("choices") or ():
                            text.append((choice.get("delta") or {}).get("content") or "")
                        if chunk.get("usage"):
                            usage = common_pb2.Usage(input_tokens=chunk["usage"]["prompt_tokens"],
                                                     output_tokens=chunk["usage"]["completion_tokens"])
                    if any(text):
                        yield executor_pb2.ExecuteResponse(delta=common_pb2.Delta(text="".join(text)))
            yield executor_pb2.ExecuteResponse(result=executor_pb2.ExecutionResult(
                status=common_pb2.FINISH_STATUS_COMPLETE, usage=usage, model=request.plan[0]))

    executor_pb2_grpc.add_ExecutorServiceServicer_to_server(Executor(), server)
    await server.start()
    try:
        await server.wait_for_termination()
    finally:
        await session.close()


async def serve_router(port: int, classifier: str, executor: str) -> None:
    """`classifier` empty: no classify hop."""
    import grpc

    from routemesh.common.channels import CHANNEL_OPTIONS
    from routemesh.v1 import (classifier_pb2, classifier_pb2_grpc, executor_pb2, executor_pb2_grpc, router_pb2,
                              router_pb2_grpc)

    execute_channel = grpc.aio.insecure_channel(executor, options=CHANNEL_OPTIONS)
    executor_stub = executor_pb2_grpc.ExecutorServiceStub(execute_channel)
    outbox: asyncio.Queue = asyncio.Queue()
    waiting: dict[int, asyncio.Future] = {}
    ids = itertools.count(1)

    async def requests():
        while True:
            yield await outbox.get()

    async def answers() -> None:  # one ClassifyStream, opened at start as the router's are, reopened if it ends
        channel = grpc.aio.insecure_channel(classifier, options=CHANNEL_OPTIONS)
        stub = classifier_pb2_grpc.ClassifierServiceStub(channel)
        while True:
            ended: Exception = RuntimeError("the classify stream ended")
            try:
                async for answer in stub.ClassifyStream(requests()):
                    future = waiting.pop(answer.id, None)
                    if future is not None and not future.done():
                        future.set_result(answer)
            except grpc.aio.AioRpcError as exc:
                ended = exc
            # Requests waiting on it fail now instead of hanging; the next ones go to a new stream.
            for future in waiting.values():
                if not future.done():
                    future.set_exception(ended)
            waiting.clear()
            await asyncio.sleep(0.1)

    class Router(router_pb2_grpc.RouterServiceServicer):
        async def Chat(self, request, context):  # noqa: N802
            ident = next(ids)
            if classifier:
                waiting[ident] = answered = asyncio.get_running_loop().create_future()
                outbox.put_nowait(classifier_pb2.ClassifyStreamRequest(
                    id=ident, request=classifier_pb2.ClassifyRequest(messages=request.messages)))
                await answered
            model = request.model or "floor"
            call = executor_stub.Execute(executor_pb2.ExecuteRequest(
                messages=request.messages, plan=[model], max_tokens=request.max_tokens or 64))
            yield router_pb2.ChatResponse(decision=router_pb2.Decision(decision_id=str(ident), model=model))
            async for event in call:
                if event.HasField("delta"):
                    yield router_pb2.ChatResponse(delta=event.delta)
                else:
                    result = event.result
                    yield router_pb2.ChatResponse(final=router_pb2.Final(
                        status=result.status, usage=result.usage, model=result.model, decision_id=str(ident)))

    server = await _server(port)
    router_pb2_grpc.add_RouterServiceServicer_to_server(Router(), server)
    await server.start()
    reader = asyncio.ensure_future(answers()) if classifier else None
    try:
        await server.wait_for_termination()
    finally:
        if reader is not None:
            reader.cancel()


class FloorError(RuntimeError):
    """A floor process did not start or exited."""


class Floor:
    """The three floor processes, started beside a mesh on free ports; `stop()` ends them."""

    def __init__(self, provider_url: str, upstream_model: str, classifier: bool = True):
        from routemesh.mesh import free_port

        self.roles = ROLES if classifier else tuple(role for role in ROLES if role != "classifier")
        self.ports = {role: free_port() for role in self.roles}
        self.provider_url = provider_url
        self.upstream_model = upstream_model
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def address(self, role: str = "router") -> str:
        return f"127.0.0.1:{self.ports[role]}"

    def _args(self, role: str) -> list[str]:
        args = [sys.executable, "-m", "routemesh.bench.floor", role, "--port", str(self.ports[role])]
        if role == "executor":
            args += ["--provider-url", self.provider_url, "--upstream-model", self.upstream_model]
        if role == "router":
            args += ["--executor", self.address("executor")]
            if "classifier" in self.ports:
                args += ["--classifier", self.address("classifier")]
        return args

    def start(self) -> None:
        for role in self.roles:  # the router last: it opens its classify stream at start
            if role == "router":
                self._wait_ready(self.roles[:-1])
            self.processes[role] = subprocess.Popen(self._args(role), stdin=subprocess.DEVNULL,
                                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self._wait_ready(self.roles)

    def _wait_ready(self, roles: tuple[str, ...]) -> None:
        import socket

        deadline = time.monotonic() + READY_TIMEOUT_S
        for role in roles:
            while True:
                dead = self.dead()
                if dead:
                    raise FloorError(f"floor {', '.join(dead)} exited: {self._stderr(dead[0])}")
                try:
                    with socket.create_connection(("127.0.0.1", self.ports[role]), timeout=1):
                        break
                except OSError:
                    if time.monotonic() > deadline:
                        raise FloorError(f"floor {role} did not listen within {READY_TIMEOUT_S:g} s") from None
                    time.sleep(0.05)

    def _stderr(self, role: str) -> str:
        """The last line a dead process wrote to stderr (its error)."""
        stream = self.processes[role].stderr
        lines = stream.read().decode(errors="replace").strip().splitlines() if stream is not None else []
        return lines[-1] if lines else "no output"

    def dead(self) -> list[str]:
        return [role for role, process in self.processes.items() if process.poll() is not None]

    def pids(self) -> dict[str, int]:
        """CPU groups for the bench's meter: floor-router, floor-classifier, floor-executor."""
        from routemesh.bench.report import FLOOR_PREFIX

        return {FLOOR_PREFIX + role: process.pid for role, process in self.processes.items()}

    def stop(self, timeout_s: float = 5.0) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.terminate()
        for process in self.processes.values():
            try:
                process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            if process.stderr is not None:
                process.stderr.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m routemesh.bench.floor", description=__doc__.split("\n")[0])
    parser.add_argument("role", choices=ROLES)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--provider-url", default="", help="executor: the provider's OpenAI base URL (…/v1)")
    parser.add_argument("--upstream-model", default="sim-fast", help="executor: the model asked of the provider")
    parser.add_argument("--classifier", default="", help="router: the floor classifier's address (none: no hop)")
    parser.add_argument("--executor", default="", help="router: the floor executor's address")
    args = parser.parse_args(argv)

    from routemesh.common.grpc_env import apply_service_defaults

    apply_service_defaults()
    import aiohttp  # noqa: F401 - imported before tune_gc freezes what start-up made
    import grpc  # noqa: F401

    from routemesh.common.channels import CHANNEL_OPTIONS  # noqa: F401
    from routemesh.common.loop import run
    from routemesh.common.serve import tune_gc
    from routemesh.v1 import classifier_pb2_grpc, executor_pb2_grpc, router_pb2_grpc  # noqa: F401

    tune_gc()
    if args.role == "classifier":
        run(serve_classifier(args.port))
    elif args.role == "executor":
        run(serve_executor(args.port, args.provider_url, args.upstream_model))
    else:
        run(serve_router(args.port, args.classifier, args.executor))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    try:
        main()
    except KeyboardInterrupt:
        pass
