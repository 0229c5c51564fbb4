"""Micro-benchmark of one Python gRPC hop on this machine: the floor under every figure of `routemesh bench`.

    python -m routemesh.bench.hop [--calls 2000] [--messages 500] [--json]

A grpc.aio server in a child process (with the services' gRPC settings, `common/grpc_env.py`), and a grpc.aio
client in this one, on uvloop as the services run:
- an empty unary call, one at a time: wall time per call (p50, p99) and CPU per call on each side;
- a server stream whose messages are paced 2 ms apart, as tokens are: CPU per message on each side. Every message
  wakes both event loops, which is what a relayed token costs a hop when streams are not busy enough for
  messages to queue up.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import statistics
import time

# Nothing here imports grpc at module level: grpc reads its settings once, when it starts (`common/grpc_env.py`).
_TICK_MS = 1000.0 / os.sysconf("SC_CLK_TCK")
_SERVICE = "routemesh.bench.Hop"
_PACE_S = 0.002


def _serve(port_out, ready) -> None:  # runs in the child process
    from routemesh.common.grpc_env import apply_service_defaults

    apply_service_defaults()
    import grpc

    from routemesh.common.loop import run

    async def unary(request: bytes, context) -> bytes:
        return request

    async def paced(request: bytes, context):
        for _ in range(int(request or b"1")):
            await asyncio.sleep(_PACE_S)
            yield b"token"

    async def echo(requests, context):
        async for request in requests:
            yield request

    async def main() -> None:
        server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(_SERVICE, {
            "Unary": grpc.unary_unary_rpc_method_handler(unary),
            "Paced": grpc.unary_stream_rpc_method_handler(paced),
            "Echo": grpc.stream_stream_rpc_method_handler(echo),
        }),))
        port_out.value = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        ready.set()
        await server.wait_for_termination()

    run(main())


async def _client(port: int, server_pid: int, calls: int, messages: int) -> dict:
    import grpc

    from routemesh.common.stats import percentile
    from routemesh.bench.system import process_ticks

    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    unary = channel.unary_unary(f"/{_SERVICE}/Unary")
    paced = channel.unary_stream(f"/{_SERVICE}/Paced")
    for _ in range(200):  # warm-up: connection, caches
        await unary(b"x")

    walls: list[float] = []
    server_before, client_before = process_ticks(server_pid), time.process_time()
    for _ in range(calls):
        start = time.perf_counter()
        await unary(b"x")
        walls.append((time.perf_counter() - start) * 1000)
    server_ms = ((process_ticks(server_pid) or 0) - (server_before or 0)) * _TICK_MS
    client_ms = (time.process_time() - client_before) * 1000
    result = {
        "unary_wall_p50_ms": round(statistics.median(walls), 4), "unary_wall_p99_ms": round(percentile(sorted(walls), 0.99), 4),
        "unary_client_cpu_ms": round(client_ms / calls, 4), "unary_server_cpu_ms": round(server_ms / calls, 4),
    }

    # The same request and answer as a message each way on one open bidirectional stream (a multiplexed call).
    echo = channel.stream_stream(f"/{_SERVICE}/Echo")()
    for _ in range(200):
        await echo.write(b"x")
        await echo.read()
    walls = []
    server_before, client_before = process_ticks(server_pid), time.process_time()
    for _ in range(calls):
        start = time.perf_counter()
        await echo.write(b"x")
        await echo.read()
        walls.append((time.perf_counter() - start) * 1000)
    server_ms = ((process_ticks(server_pid) or 0) - (server_before or 0)) * _TICK_MS
    client_ms = (time.process_time() - client_before) * 1000
    await echo.done_writing()
    result.update({
        "stream_wall_p50_ms": round(statistics.median(walls), 4),
        "stream_wall_p99_ms": round(percentile(sorted(walls), 0.99), 4),
        "stream_client_cpu_ms": round(client_ms / calls, 4), "stream_server_cpu_ms": round(server_ms / calls, 4),
    })

    server_before, client_before = process_ticks(server_pid), time.process_time()
    received = 0
    async for _ in paced(str(messages).encode()):
        received += 1
    server_ms = ((process_ticks(server_pid) or 0) - (server_before or 0)) * _TICK_MS
    client_ms = (time.process_time() - client_before) * 1000
    # The server's figure includes waking up for its 2 ms timer once per message, as a provider-paced relay does.
    result.update({
        "paced_messages": received,
        "paced_client_cpu_us_per_message": round(client_ms / received * 1000, 1),
        "paced_server_cpu_us_per_message": round(server_ms / received * 1000, 1),
    })
    await channel.close()
    return result


def measure(calls: int = 2000, messages: int = 500) -> dict:
    """Start the server process, measure, stop it. The client side runs with this process's gRPC settings."""
    from routemesh.common.loop import run

    spawn = multiprocessing.get_context("spawn")
    port, ready = spawn.Value("i", 0), spawn.Event()
    server = spawn.Process(target=_serve, args=(port, ready), daemon=True)
    server.start()
    try:
        if not ready.wait(30):
            raise RuntimeError("the benchmark's gRPC server did not start")
        return run(_client(port.value, server.pid, calls, messages))
    finally:
        server.terminate()
        server.join(10)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m routemesh.bench.hop", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=2000, help="unary calls, one at a time (default 2000)")
    parser.add_argument("--messages", type=int, default=500, help="paced stream messages (default 500)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    if args.calls < 1 or args.messages < 1:
        parser.error("--calls and --messages must be at least 1")
    from routemesh.common.grpc_env import apply_service_defaults

    apply_service_defaults()  # the client side as the router's channels run, before grpc starts here
    result = measure(args.calls, args.messages)
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    print(f"empty unary call, one at a time ({args.calls} calls)")
    print(f"  wall p50 / p99            {result['unary_wall_p50_ms']:.3f} / {result['unary_wall_p99_ms']:.3f} ms")
    print(f"  CPU client / server       {result['unary_client_cpu_ms']:.3f} / {result['unary_server_cpu_ms']:.3f} ms")
    print(f"the same as a message each way on one open bidirectional stream ({args.calls} round trips)")
    print(f"  wall p50 / p99            {result['stream_wall_p50_ms']:.3f} / {result['stream_wall_p99_ms']:.3f} ms")
    print(f"  CPU client / server       {result['stream_client_cpu_ms']:.3f} / {result['stream_server_cpu_ms']:.3f} ms")
    print(f"server stream, messages {_PACE_S * 1000:g} ms apart ({result['paced_messages']} messages)")
    print(f"  CPU per message client / server  {result['paced_client_cpu_us_per_message']:.0f} / "
          f"{result['paced_server_cpu_us_per_message']:.0f} µs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
