"""One router's share of the budget contest: concurrent reserve/settle cycles, one JSON line per request."""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time

from routemesh.router.admission.budget import BudgetExceeded, BudgetScope, BudgetUnavailable
from routemesh.router.admission.budget_redis import RedisBudgetLedger


async def hammer(args: argparse.Namespace) -> None:
    scope = BudgetScope(args.budget, args.key, "month", limit_usd=args.limit)
    ledger = RedisBudgetLedger(args.url, prefix=args.prefix)
    rng = random.Random(args.seed)
    pending = list(range(args.requests))
    out: list[str] = []

    async def worker() -> None:
        while pending:
            pending.pop()
            # Whole micro-dollars, so the ledger's sum can be compared to ours exactly.
            estimate = round(rng.uniform(0.002, 0.02), 6)
            actual = round(rng.uniform(0.0, estimate), 6)
            try:
                reservation = await ledger.reserve([scope], estimate)
            except BudgetUnavailable:
                out.append(json.dumps({"estimate": estimate, "actual": 0, "allowed": False, "unavailable": True}))
                continue
            except BudgetExceeded:
                out.append(json.dumps({"estimate": estimate, "actual": 0, "allowed": False}))
                continue
            await asyncio.sleep(rng.uniform(0.001, 0.005))
            await ledger.settle(reservation, actual)
            out.append(json.dumps({"estimate": estimate, "actual": actual, "allowed": True}))

    # Both processes start together, so their requests really interleave rather than run back to back.
    await asyncio.sleep(max(0.0, args.start_at - time.time()))
    try:
        await asyncio.gather(*(worker() for _ in range(args.concurrency)))
    finally:
        await ledger.close()
    sys.stdout.write("".join(line + "\n" for line in out))
    print(json.dumps({"failed_settlements": ledger.failed_settlements}))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--budget", default="contested")
    parser.add_argument("--key", default="tenant=acme")
    parser.add_argument("--limit", type=float, default=1.0)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--start-at", type=float, default=0.0)
    asyncio.run(hammer(parser.parse_args()))


if __name__ == "__main__":
    main()
