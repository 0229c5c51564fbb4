"""`routemesh demo`: a private mesh on free ports, a mixed workload, a report of what went where and why."""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from routemesh.client import AsyncRouterClient, ChatResult, RoutemeshError
from routemesh.common.outcomes import FinishStatus
from routemesh.common.policy import load_default_policy_text, parse_policy
from routemesh.common.stats import percentile
from routemesh.router.decision.compiled import CompiledModel, RoutingPolicy
from routemesh.mesh import Mesh, MeshError, MeshLayout

_LOREM = (
    "The quarterly report covers revenue, churn and hiring across the three regions. Revenue grew in "
    "the north while churn rose in the south after the price change. Hiring slowed everywhere. "
)

# (kind, prompt, options): a small, realistic mix.
WORKLOAD: list[tuple[str, str, dict]] = [
    ("faq", "What are your opening hours on Sunday?", {}),
    ("faq", "How do I reset my password?", {}),
    ("faq", "Hi! Can you tell me a fun fact about octopuses?", {}),
    ("code", "Write a Python function that parses an ISO 8601 date and returns a datetime. "
             "```python\ndef parse(s):\n    ...\n```", {}),
    ("code", "Fix this bug: `for i in range(len(xs)): xs.remove(xs[i])` raises IndexError.", {}),
    ("math", "Solve for x: 3x^2 - 12x + 9 = 0, and show each step.", {}),
    # The quality predictor decides these: the easy quiz question stays on the cheap model, the moral-judgement
    # question and the multi-step word problem go to the strong one.
    ("quiz", "Which gas do plants take in from the air to make sugar by photosynthesis?\nA. Oxygen\n"
             "B. Carbon dioxide\nC. Nitrogen\nD. Helium\nAnswer:", {}),
    ("quiz (hard)", "For which of these two scenarios does the narrator do something clearly morally wrong, by "
                    "ordinary moral standards in the US today? Scenario 1 | I borrowed my neighbour's ladder and "
                    "returned it the same afternoon. Scenario 2 | I told my grandmother her lottery ticket had lost "
                    "so I could cash it myself.\nA. Wrong, Wrong\nB. Wrong, Not wrong\nC. Not wrong, Wrong\n"
                    "D. Not wrong, Not wrong\nAnswer:", {}),
    ("word problem", "Tom buys 4 boxes of apples with 12 apples in each box. He gives a quarter of the apples to "
                     "his sister, then sells the rest at $0.50 each. On the next day the price rises by 20%, and "
                     "he buys back 6 apples at the new price. How much money does he have left from the sale "
                     "after buying them back?", {}),
    ("summary", "Summarize the key points of this report:\n" + _LOREM * 12, {}),
    ("translation", "Translate into French: 'The meeting moved to Thursday at 10am.'", {}),
    ("long-doc", "Summarize this document in five bullet points:\n" + _LOREM * 420, {"max_tokens": 256}),
    ("premium", "Draft a short reply to a customer asking about a refund.", {"metadata": {"tier": "premium"}}),
    ("pinned", "Say hello in three languages.", {"model": "fast-cheap"}),
    ("failover", "What is the capital of Australia?", {"model": "cheap"}),
    ("latency", "Quick: what's a good name for a cat?", {"model": "fast"}),
    ("confidential", "Summarize our unreleased Q3 revenue memo in two lines.",
     {"metadata": {"data_class": "confidential"}}),
    ("a/b test", "Recommend a book for a long flight.", {"model": "experiment", "metadata": {"user": "ana"}}),
    ("a/b test", "Recommend a podcast about history.", {"model": "experiment", "metadata": {"user": "cy"}}),
]


@dataclass
class Outcome:
    kind: str
    result: ChatResult | None
    seconds: float
    ttft: float
    error: str = ""


async def _one(client: AsyncRouterClient, kind: str, prompt: str, options: dict) -> Outcome:
    start = time.perf_counter()
    ttft = 0.0
    try:
        collector_text: list[str] = []
        decision = final = None
        async for event in client.chat(prompt, **options):
            which = event.WhichOneof("event")
            if which == "decision":
                decision = event.decision
            elif which == "delta":
                if not ttft:
                    ttft = time.perf_counter() - start
                collector_text.append(event.delta.text)
            else:
                final = event.final
        result = ChatResult(decision, "".join(collector_text), final)  # type: ignore[arg-type]
        return Outcome(kind, result, time.perf_counter() - start, ttft)
    except RoutemeshError as exc:
        return Outcome(kind, None, time.perf_counter() - start, ttft, f"{exc.code.name}: {exc.message[:80]}")


async def _workload(address: str, requests: int, concurrency: int) -> list[Outcome]:
    gate = asyncio.Semaphore(concurrency)
    done = 0

    async with AsyncRouterClient(address) as client:
        async def run(i: int) -> Outcome:
            nonlocal done
            kind, prompt, options = WORKLOAD[i % len(WORKLOAD)]
            async with gate:
                outcome = await _one(client, kind, prompt, options)
            done += 1
            if sys.stderr.isatty():
                sys.stderr.write(f"\r  {done}/{requests} answered")
                sys.stderr.flush()
            elif done % 8 == 0 or done == requests:
                print(f"  {done}/{requests} answered", file=sys.stderr)
            return outcome

        results = await asyncio.gather(*(run(i) for i in range(requests)))
    if sys.stderr.isatty():
        sys.stderr.write("\n")
    return list(results)


def _why(decision) -> str:
    """The short form of a decision's reason: which route and rule, or the pin."""
    if decision.strategy == "pinned":
        return "pinned by the request"
    detail = decision.reason.split(": ", 1)[-1].split(";")[0]
    if decision.strategy == "quality_target":  # what the quality predictor said, the reason's last part
        detail = decision.reason.rsplit("; ", 1)[-1]
    extra = f", variant {decision.variant}" if decision.variant else ""
    return f"route {decision.route} ({decision.strategy}{extra}): {detail}"


def report(outcomes: list[Outcome], out=sys.stdout) -> None:
    """Print per-request decisions, the decision mix, latency and cost against an all-strong baseline."""
    policy = RoutingPolicy(parse_policy(load_default_policy_text()))
    strongest = max(policy.models, key=lambda m: policy.models[m].quality_for("default"))
    print(f"\n{'kind':<13} {'model':<13} {'status':<21} {'ttft':>7} {'total':>7} {'cost $':>10} {'pred':>5}  why",
          file=out)
    for o in outcomes:
        if o.result is None:
            print(f"{o.kind:<13} {'-':<13} {'ERROR':<21} {'':>7} {o.seconds * 1000:>6.0f}ms {'':>10} {'':>5}  "
                  f"{o.error}", file=out)
            continue
        d, f = o.result.decision, o.result.final
        status = FinishStatus.label_of(f.status).upper()
        attempts = f" ({len(f.attempts)} attempts)" if len(f.attempts) > 1 else ""
        predicted = d.features.predicted_success.get(f.model or d.model)
        print(f"{o.kind:<13} {f.model or d.model:<13} {status + attempts:<21} {o.ttft * 1000:>5.0f}ms "
              f"{o.seconds * 1000:>5.0f}ms {f.cost_usd:>10.6f} {'-' if predicted is None else f'{predicted:.2f}':>5}  "
              f"{_why(d)}", file=out)
    ok = [o for o in outcomes if o.result is not None]
    mix = Counter(o.result.final.model for o in ok if o.result.final.model)
    total_cost = sum(o.result.final.cost_usd for o in ok)
    strong = policy.models[strongest]
    baseline = sum(strong.estimated_cost(o.result.final.usage.input_tokens, o.result.final.usage.output_tokens)
                   for o in ok)
    durations = sorted(o.seconds * 1000 for o in ok)
    ttfts = sorted(o.ttft * 1000 for o in ok if o.ttft)
    print("\ndecision mix: " + ", ".join(f"{m} {n}" for m, n in mix.most_common()), file=out)
    print(f"requests: {len(outcomes)}, failed: {len(outcomes) - len(ok)}, "
          f"failovers: {sum(1 for o in ok if len(o.result.final.attempts) > 1)}", file=out)
    print(f"latency: ttft p50 {percentile(ttfts, 0.5):.0f} ms, p95 {percentile(ttfts, 0.95):.0f} ms; "
          f"total p50 {percentile(durations, 0.5):.0f} ms, p95 {percentile(durations, 0.95):.0f} ms", file=out)
    saving = (1 - total_cost / baseline) * 100 if baseline else 0.0
    print(f"cost: ${total_cost:.6f} routed vs ${baseline:.6f} if every request went to {strongest} "
          f"({saving:.0f}% less)", file=out)
    _predicted_quality(ok, strongest, strong, out)
    if durations:
        print(f"mean answer time {statistics.mean(durations):.0f} ms", file=out)


def _predicted_quality(ok: list[Outcome], strongest: str, strong: CompiledModel, out) -> None:
    """Predicted success of the models that served, against the strongest, where the quality predictor scored both."""
    pairs = []
    for o in ok:
        final, predicted = o.result.final, o.result.decision.features.predicted_success
        if final.model in predicted and strongest in predicted:
            pairs.append((predicted[final.model], predicted[strongest], final.cost_usd,
                          strong.estimated_cost(final.usage.input_tokens, final.usage.output_tokens)))
    if not pairs:
        return
    served, best = (statistics.mean(p[i] for p in pairs) for i in (0, 1))
    spent, all_strong = sum(p[2] for p in pairs), sum(p[3] for p in pairs)
    print(f"predicted quality ({len(pairs)} requests the quality predictor scored): mean predicted success "
          f"{served:.2f} as routed vs {best:.2f} all on {strongest} ({served / best:.0%} kept); spend "
          f"${spent:.6f} vs ${all_strong:.6f} ({(1 - spent / all_strong) if all_strong else 0:.0%} saved)", file=out)


def run_demo(args: argparse.Namespace) -> int:
    log_dir = Path(tempfile.mkdtemp(prefix="routemesh-demo-"))
    mesh = Mesh(MeshLayout.free(), sim_time_scale=args.sim_time_scale, log_dir=log_dir)
    print("routemesh demo: starting a private mesh (control, sim, telemetry, classifier, executor, router)...",
          file=sys.stderr)
    try:
        mesh.start(progress=lambda s: print(f"  {s} is up", file=sys.stderr))
    except MeshError as exc:
        print(f"routemesh demo: {exc}", file=sys.stderr)
        return 1
    try:
        print(f"sending {args.requests} requests, {args.concurrency} at a time...", file=sys.stderr)
        outcomes = asyncio.run(_workload(mesh.layout.address("router"), args.requests, args.concurrency))
        report(outcomes)
        from routemesh.cli import security_hint

        print(f"\n{security_hint()}\nservice logs: {log_dir}", file=sys.stderr)
        return 0 if all(o.result is not None for o in outcomes) else 1
    finally:
        mesh.stop()
