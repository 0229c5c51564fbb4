"""What recording a request for the ledger costs the router: `python -m routemesh.router.ledger_bench`.

The router's request summary now carries the decision (the message the caller already received, copied), the
final event, the identity fields and a SHA-256 of the conversation. This times building and serialising that
summary against the summary without them, on a default-policy decision (every candidate with its factors)
and a 2,000-token conversation, after the answer: nothing of it is on the token path.
"""

from __future__ import annotations

import json
import statistics
import time

from routemesh.router.request import conversation_sha256
from routemesh.v1 import common_pb2, router_pb2, telemetry_pb2


def _decision() -> tuple[router_pb2.Decision, router_pb2.Final]:
    features = common_pb2.Features(input_tokens=2000, task_type=common_pb2.TASK_TYPE_CHAT, language="en",
                                   complexity=0.3, source="classifier")
    features.predicted_success.update({"fast-cheap": 0.78, "strong": 0.86})
    candidates = [router_pb2.Candidate(model=m, provider="sim", eligible=i < 4, rank=i + 1 if i < 4 else 0,
                                       score=0.9 - i / 10, estimated_cost_usd=0.0001 * (i + 1),
                                       rejection_reason="" if i < 4 else "not in the selected pool",
                                       factors={"estimated_cost_usd": 0.0001, "expected_ttft_ms": 40.0,
                                                "expected_total_ms": 300.0, "quality_score": 0.8,
                                                "error_rate": 0.0, "samples": 100.0, "in_flight": 1.0})
                  for i, m in enumerate(("fast-cheap", "strong", "balanced", "long-context", "tiny", "coder"))]
    decision = router_pb2.Decision(decision_id="a" * 32, model="fast-cheap", provider="sim",
                                   strategy="quality_target", reason="route 'auto': " + "x" * 160, route="auto",
                                   fallbacks=["strong"], features=features, policy_version=3, trace_id="b" * 32,
                                   candidates=candidates, estimated_cost_usd=0.0001)
    final = router_pb2.Final(status=common_pb2.FINISH_STATUS_COMPLETE, cost_usd=0.00012, model="fast-cheap",
                             provider="sim", usage=common_pb2.Usage(input_tokens=2000, output_tokens=200),
                             attempts=[common_pb2.Attempt(model="fast-cheap", outcome=1, ttft_ms=40.0)],
                             decision_id="a" * 32, trace_id="b" * 32)
    return decision, final


def _summary(timings: list[float]) -> dict[str, float]:
    timings.sort()
    return {"p50_us": round(statistics.median(timings), 1), "p99_us": round(timings[int(len(timings) * 0.99) - 1], 1)}


def run_benchmark(iterations: int = 20_000) -> dict[str, dict]:
    """p50/p99 µs of the ledger's part of a request summary (with and without its fields, the difference)."""
    from routemesh.common.serve import tune_gc

    decision, final = _decision()
    messages = [common_pb2.Message(role=common_pb2.ROLE_USER, content="word " * 1600)]
    base = {"decision_id": "a" * 32, "route": "auto", "model": "fast-cheap", "status": 1, "ttft_ms": 40.0,
            "duration_ms": 300.0, "cost_usd": 0.00012, "tenant": "acme", "timestamp_ms": 1}
    before, after = [], []
    tune_gc()  # as the router runs
    for _ in range(iterations):
        started = time.perf_counter()
        telemetry_pb2.RequestSummary(**base).SerializeToString()
        middle = time.perf_counter()
        telemetry_pb2.RequestSummary(**base, decision=decision, final=final, project="web", user="u-1",
                                     api_key_id="0123456789abcdef",
                                     prompt_sha256=conversation_sha256(messages)).SerializeToString()
        ended = time.perf_counter()
        before.append((middle - started) * 1e6)
        after.append((ended - middle) * 1e6)
    added = [a - b for a, b in zip(after, before, strict=True)]
    return {"ledger_record": {"iterations": iterations, **_summary(added)}}


def main() -> None:
    print(json.dumps(run_benchmark(), indent=2))


if __name__ == "__main__":
    main()
