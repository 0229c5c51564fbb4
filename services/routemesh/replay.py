"""`routemesh replay --policy new.yaml`: what a policy would have done to recorded traffic, with no provider call.

Each ledger row is decided again by the router's own planner under the new policy. The row supplies:
- **the request:** the recorded features (tokens, task, language, complexity, code, the predictor's per-model
  success), and its tenant, project and user as metadata;
- **the target:** its route, or the pinned model;
- **the health of the time:** error rate, samples and in-flight per candidate, from the decision's factors.

Its recorded tokens price the new choice, and its predicted success (or the new policy's static quality) scores
it. Not replayed:
- **The prompt's text.** The ledger keeps none, so regex and keyword rules see an empty message.
- **The request's own max_tokens and routing options.** The policy's defaults stand in.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, TextIO

from routemesh.common.errors import RoutemeshError
from routemesh.common.policy import Policy, PolicyError, PolicyVersion, digest, parse_policy
from routemesh.router.decision.compiled import RoutingPolicy
from routemesh.router.decision.filters import RoutingFeatures
from routemesh.router.decision.planner import DecisionState, plan_request
from routemesh.router.decision.strategies import ModelHealthView

COLUMNS = ("decision_id", "ended_at_ms", "tenant", "project", "user_id", "route", "chosen_model",
           "serving_model", "features", "candidates", "input_tokens", "output_tokens", "cost_usd")


@dataclass
class Replayed:
    """One row decided again: old and new model, their cost on the row's tokens and their expected quality."""

    decision_id: str
    route: str
    old_model: str
    new_model: str  # "" when the new policy refuses the request
    old_cost: float
    new_cost: float
    old_quality: float
    new_quality: float
    refused: str = ""


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def features_of(row: dict[str, Any]) -> RoutingFeatures:
    f = _json(row["features"]) or {}
    return RoutingFeatures(
        input_tokens=int(f.get("input_tokens", row["input_tokens"]) or row["input_tokens"]),
        task_type=str(f.get("task_type", "TASK_TYPE_CHAT")).removeprefix("TASK_TYPE_").lower(),
        language=f.get("language", "und") or "und", complexity=float(f.get("complexity", 0.0)),
        has_code=bool(f.get("has_code", False)),
        predicted_success={k: float(v) for k, v in (f.get("predicted_success") or {}).items()})


def health_of(row: dict[str, Any]) -> dict[str, ModelHealthView]:
    """What the decision saw of each candidate's health, as far as its factors tell."""
    health = {}
    for candidate in _json(row["candidates"]) or []:
        factors = candidate.get("factors") or {}
        if "samples" in factors:
            health[candidate["model"]] = ModelHealthView(samples=int(factors["samples"]),
                                                         error_rate=float(factors.get("error_rate", 0.0)),
                                                         in_flight=int(factors.get("in_flight", 0)))
    return health


def _quality(policy: RoutingPolicy, features: RoutingFeatures, model: str) -> float:
    if model in features.predicted_success:
        return features.predicted_success[model]
    compiled = policy.models.get(model)
    return compiled.quality_for(features.task_type) if compiled is not None else 0.0


def _cost(policy: RoutingPolicy, model: str, row: dict[str, Any]) -> float:
    compiled = policy.models.get(model)
    if compiled is None:
        return 0.0
    return row["input_tokens"] * compiled.in_price + row["output_tokens"] * compiled.out_price


def replay_row(policy: RoutingPolicy, row: dict[str, Any], state: DecisionState) -> Replayed:
    features = features_of(row)
    keys = policy.request_keys
    metadata = {name: value for name, value in ((keys.tenant, row["tenant"]), (keys.project, row["project"]),
                                                (keys.user, row["user_id"])) if value}
    old = row["serving_model"] or row["chosen_model"]
    target = row["route"] or row["chosen_model"]
    replayed = Replayed(row["decision_id"], row["route"] or "(pinned)", old, "", row["cost_usd"], 0.0,
                        _quality(policy, features, old), 0.0)
    try:
        plan = plan_request(policy, features, target, 0, metadata, health_of(row), state=state,
                            now_ms=row["ended_at_ms"])
    except RoutemeshError as exc:
        replayed.refused = f"{exc.reason}: {exc.message}"[:200]
        return replayed
    new = plan.models[0]
    replayed.new_model, replayed.new_cost = new, _cost(policy, new, row)
    replayed.new_quality = _quality(policy, features, new)
    return replayed


def summarize(results: list[Replayed], top: int) -> dict[str, Any]:
    routes: dict[str, dict[str, Any]] = defaultdict(lambda: {"requests": 0, "changed": 0, "refused": 0,
                                                             "old_cost_usd": 0.0, "new_cost_usd": 0.0,
                                                             "old_quality_sum": 0.0, "new_quality_sum": 0.0,
                                                             "moves": defaultdict(int)})
    for r in results:
        line = routes[r.route]
        line["requests"] += 1
        line["old_cost_usd"] += r.old_cost
        line["old_quality_sum"] += r.old_quality
        if r.refused:
            line["refused"] += 1
            continue
        line["new_cost_usd"] += r.new_cost
        line["new_quality_sum"] += r.new_quality
        if r.new_model != r.old_model:
            line["changed"] += 1
            line["moves"][f"{r.old_model} -> {r.new_model}"] += 1
    out = {}
    for name, line in sorted(routes.items()):
        served = line["requests"] - line["refused"]
        out[name] = {
            "requests": line["requests"], "changed": line["changed"], "refused": line["refused"],
            "old_cost_usd": line["old_cost_usd"], "new_cost_usd": line["new_cost_usd"],
            "old_mean_quality": line["old_quality_sum"] / line["requests"] if line["requests"] else 0.0,
            "new_mean_quality": line["new_quality_sum"] / served if served else 0.0,
            "moves": dict(sorted(line["moves"].items(), key=lambda item: -item[1])),
        }
    changed = sorted((r for r in results if r.refused or r.new_model != r.old_model),
                     key=lambda r: -abs(r.new_cost - r.old_cost) if not r.refused else float("-inf"))
    return {"routes": out, "top_changes": [vars(r) for r in changed[:top]]}


def format_text(summary: dict[str, Any], policy_name: str, rows: int) -> str:
    lines = [f"replay of {rows:,} recorded requests under {policy_name} (no provider calls)"]
    for route, line in summary["routes"].items():
        delta = line["new_cost_usd"] - line["old_cost_usd"]
        lines.append(
            f"route {route}: {line['requests']:,} requests, {line['changed']:,} would change model"
            + (f", {line['refused']:,} would be refused" if line["refused"] else "")
            + f"; spend ${line['old_cost_usd']:.6f} -> ${line['new_cost_usd']:.6f} ({delta:+.6f})"
            + f"; mean expected quality {line['old_mean_quality']:.3f} -> {line['new_mean_quality']:.3f}")
        for move, count in list(line["moves"].items())[:5]:
            lines.append(f"    {move}: {count:,}")
    if summary["top_changes"]:
        lines.append("rows that change most (by cost):")
        for r in summary["top_changes"]:
            after = f"refused ({r['refused']})" if r["refused"] else \
                f"{r['new_model']} ${r['new_cost']:.6f} q {r['new_quality']:.2f}"
            lines.append(f"    {r['decision_id']}  {r['route']}: {r['old_model']} ${r['old_cost']:.6f} "
                         f"q {r['old_quality']:.2f} -> {after}")
    return "\n".join(lines) + "\n"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--policy", required=True, metavar="FILE", help="the policy to replay recorded traffic under")
    parser.add_argument("--ledger-url", default="", help="the ledger (default: $ROUTEMESH_LEDGER_URL, else "
                                                         "routemesh up's ~/.local/state/routemesh/ledger.db)")
    parser.add_argument("--since", default="7d", help="how far back: 24h, 7d, or a date YYYY-MM-DD (UTC)")
    parser.add_argument("--route", default="", help="replay only requests recorded on this route")
    parser.add_argument("--top", type=int, default=10, help="list this many of the rows that change most")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument("--execute", type=int, default=0, metavar="N",
                        help="also re-run the newest N replayed requests whose text the ledger kept (route "
                             "store_text) through a running router, pinned to the model the new policy chose, and "
                             "compare status, cost and latency with what was recorded")
    parser.add_argument("--router", default=os.environ.get("ROUTEMESH_ROUTER_ADDR", "127.0.0.1:50051"),
                        help="the router --execute calls (env ROUTEMESH_ROUTER_ADDR; its key: ROUTEMESH_API_KEY)")


def run(args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    from routemesh.ledger_report import ledger_url, read_rows, since_ms

    try:
        with open(args.policy, encoding="utf-8") as handle:
            text = handle.read()
        policy: Policy = parse_policy(text)
        compiled = RoutingPolicy.compile(PolicyVersion(policy=policy, version=0, digest=digest(text)))
        start = since_ms(args.since)
        rows = asyncio.run(read_rows(ledger_url(args), start, int(time.time() * 1000) + 1, COLUMNS))
    except PolicyError as exc:
        print(f"routemesh replay: {args.policy}: invalid policy:", file=sys.stderr)
        for field, what in exc.violations:
            print(f"  {field or '(document)'}: {what}", file=sys.stderr)
        return 1
    except (ValueError, OSError) as exc:
        print(f"routemesh replay: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # noqa: BLE001 - a database's error, said in one line
        print(f"routemesh replay: cannot read the ledger: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    if args.route:
        rows = [row for row in rows if row["route"] == args.route]
    state = DecisionState(seed=0)
    results = [replay_row(compiled, row, state) for row in rows]
    summary = summarize(results, args.top)
    executed: list[dict[str, Any]] = []
    if args.execute > 0:
        try:
            executed = execute_sample(ledger_url(args), rows, results, args.execute, args.router)
        except Exception as exc:  # noqa: BLE001 - the ledger's or the router's trouble, in one line
            print(f"routemesh replay --execute: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 1
    if args.json:
        print(json.dumps({"policy": args.policy, "requests": len(rows), **summary,
                          **({"executed": executed} if args.execute > 0 else {})}, indent=2), file=out)
    else:
        out.write(format_text(summary, args.policy, len(rows)))
        if args.execute > 0:
            out.write(format_executed(executed))
    return 0


def execute_sample(url: str, rows: list[dict[str, Any]], results: list[Replayed], count: int,
                   router: str) -> list[dict[str, Any]]:
    """Re-run the newest `count` replayed requests with kept text, each pinned to its new model."""
    from routemesh.client import RouterClient
    from routemesh.client import RoutemeshError as ClientError
    from routemesh.telemetry.ledger.stores import ledger_store

    async def texts() -> dict[str, str]:
        store = ledger_store(url)
        await store.open()
        try:
            return await store.kept_texts([row["decision_id"] for row in rows])
        finally:
            await store.close()

    kept = asyncio.run(texts())
    chosen = [(row, r) for row, r in zip(rows, results, strict=True)
              if row["decision_id"] in kept and r.new_model][-count:]
    out = []
    with RouterClient(router, timeout=120) as client:
        for row, replayed in chosen:
            messages = [(m["role"], m["content"]) for m in json.loads(kept[row["decision_id"]])]
            entry: dict[str, Any] = {"decision_id": row["decision_id"], "old_model": replayed.old_model,
                                     "old_cost_usd": row["cost_usd"], "new_model": replayed.new_model}
            try:
                answer = client.complete(messages, model=replayed.new_model, metadata={"replay_of": row["decision_id"]})
                entry.update(new_status=answer.final.status, new_cost_usd=answer.final.cost_usd,
                             new_output_tokens=answer.final.usage.output_tokens)
            except ClientError as exc:
                entry.update(new_status=-1, new_error=f"{exc.code.name}: {exc.message}"[:200])
            out.append(entry)
    return out


def format_executed(executed: list[dict[str, Any]]) -> str:
    if not executed:
        return "executed: none (no replayed request has kept text: a route must opt in with store_text)\n"
    ok = [e for e in executed if e.get("new_status", -1) >= 0 and "new_error" not in e]
    old, new = sum(e["old_cost_usd"] for e in ok), sum(e["new_cost_usd"] for e in ok)
    lines = [f"executed {len(executed)} recorded request(s) again: {len(ok)} answered, "
             f"{len(executed) - len(ok)} failed; cost ${old:.6f} as recorded -> ${new:.6f} now"]
    for e in executed:
        after = e.get("new_error") or f"{e['new_model']} ${e['new_cost_usd']:.6f}, {e['new_output_tokens']} tokens out"
        lines.append(f"    {e['decision_id']}: {e['old_model']} ${e['old_cost_usd']:.6f} -> {after}")
    return "\n".join(lines) + "\n"
