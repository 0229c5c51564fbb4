"""Micro-benchmark of the router's per-request API-key check, its verdict cached, and of counting the key's usage."""

from __future__ import annotations

import argparse
import json
import statistics
import time

from routemesh.common.keys import KeyCache, KeyRecord, KeySpec
from routemesh.common.loop import run as run_loop
from routemesh.common.outcomes import FinishStatus
from routemesh.common.policy import parse_policy
from routemesh.router.bench import twenty_model_policy
from routemesh.router.decision.compiled import RoutingPolicy
from routemesh.router.key_usage import KeyUsageRecorder
from routemesh.router.pipeline import RequestPipeline
from routemesh.router.request import ChatInput, Finished
from routemesh.v1 import common_pb2

WARM_UP = 500
TOKEN = "rmk_0123456789abcdef_" + "s" * 43


class FixedKeyStore:
    """Stands in for KeyStore (no Redis): every token is one fixed key. Only the cache's first miss asks it."""

    def __init__(self, record: KeyRecord):
        self.record = record
        self.verified = 0

    async def verify(self, token: str) -> KeyRecord | None:
        self.verified += 1
        return self.record


def _summary(timings: list[float]) -> dict[str, float]:
    timings.sort()
    return {"p50_us": round(statistics.median(timings), 1), "p99_us": round(timings[int(len(timings) * 0.99) - 1], 1),
            "max_us": round(timings[-1], 1)}


async def _measure(iterations: int) -> dict:
    policy = RoutingPolicy(parse_policy(twenty_model_policy()))
    record = KeyRecord(key_id="0123456789abcdef", secret_hash="", created_at_ms=int(time.time() * 1000),
                       spec=KeySpec(tenant="acme", name="bench", project="web", allowed_models=("m01", "m02", "m03"),
                                    rpm=600, tpm=100_000, budget_usd=50.0))
    store = FixedKeyStore(record)
    # A long ttl: this measures the cached path only (in service a verdict is re-read from Redis every 2 s).
    cache = KeyCache(store, ttl_s=3600)  # type: ignore[arg-type]
    usage = KeyUsageRecorder(store)  # type: ignore[arg-type]  # add() never touches the store
    # authenticate and count_key_usage read only the key cache and the usage recorder.
    pipeline = RequestPipeline(None, None, None, None, None, None,  # type: ignore[arg-type]
                               keys=cache, key_usage=usage)
    request = ChatInput(messages=[common_pb2.Message(role=common_pb2.ROLE_USER, content="refactor this")],
                        metadata={"tenant": "someone-else", "user": "u1"}, api_key=TOKEN)
    finished = Finished(status=FinishStatus.COMPLETE, model="m01", cost_usd=0.00123,
                        usage=common_pb2.Usage(input_tokens=1800, output_tokens=512))
    check, count = [], []
    for i in range(iterations + WARM_UP):
        start = time.perf_counter_ns()
        keyed = await pipeline.authenticate(policy, request)
        middle = time.perf_counter_ns()
        pipeline.count_key_usage(keyed, finished)
        end = time.perf_counter_ns()
        if i >= WARM_UP:
            check.append((middle - start) / 1000)
            count.append((end - middle) / 1000)
    assert keyed.quota is not None and keyed.metadata["tenant"] == "acme" and store.verified == 1
    return {"key_check": {"iterations": iterations, **_summary(check)},
            "key_usage": {"iterations": iterations, **_summary(count)}}


def run_benchmark(iterations: int = 20_000) -> dict[str, dict]:
    """p50, p99 and max in µs of the key check as served with a warm verdict cache ("key_check"), and of counting
    the request's usage in memory ("key_usage"; it is written to Redis in the background, once per interval)."""
    return run_loop(_measure(iterations))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--iterations", type=int, default=20_000)
    print(json.dumps(run_benchmark(parser.parse_args().iterations)))


if __name__ == "__main__":
    main()
