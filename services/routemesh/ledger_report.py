"""`routemesh report --ledger-url URL`: what the ledger's requests did and cost, by tenant, route, model and day,
with the savings against two counterfactuals priced from the same rows' tokens.

- all-strongest: every request of a route on the route's strongest model (highest static quality);
- all-first: every request of a route on the route's first model (what a fixed routing table would do).
Prices and routes come from the policy (control's, or --policy FILE). Requests with no route (a pinned model)
count in both counterfactuals at their actual cost.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import datetime
import io
import json
import os
import sys
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TextIO

from routemesh.common.policy import Policy
from routemesh.common.stats import percentile

if TYPE_CHECKING:
    from routemesh.telemetry.ledger.stores import LedgerStore

COLUMNS = ("ended_at_ms", "tenant", "route", "serving_model", "chosen_model", "status", "attempts",
           "input_tokens", "output_tokens", "cost_usd", "ttft_ms", "duration_ms")
DIMENSIONS = ("tenant", "route", "model", "day")
ERROR_STATUSES = frozenset({"failed", "truncated_upstream", "unspecified"})


@dataclass
class Group:
    """Everything a report line needs of its requests."""

    requests: int = 0
    errors: int = 0
    failovers: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    all_strongest_usd: float = 0.0
    all_first_usd: float = 0.0
    ttfts: list[float] = field(default_factory=list)
    durations: list[float] = field(default_factory=list)

    def add(self, row: dict[str, Any], strongest_usd: float, first_usd: float) -> None:
        self.requests += 1
        self.errors += row["status"] in ERROR_STATUSES
        self.failovers += row["attempts"] > 1
        self.input_tokens += row["input_tokens"]
        self.output_tokens += row["output_tokens"]
        self.cost_usd += row["cost_usd"]
        self.all_strongest_usd += strongest_usd
        self.all_first_usd += first_usd
        if row["ttft_ms"] > 0:
            self.ttfts.append(row["ttft_ms"])
        self.durations.append(row["duration_ms"])

    def summary(self) -> dict[str, Any]:
        ttfts, durations = sorted(self.ttfts), sorted(self.durations)
        return {
            "requests": self.requests, "errors": self.errors, "failovers": self.failovers,
            "error_rate": self.errors / self.requests if self.requests else 0.0,
            "failover_rate": self.failovers / self.requests if self.requests else 0.0,
            "input_tokens": self.input_tokens, "output_tokens": self.output_tokens,
            "cost_usd": self.cost_usd, "all_strongest_usd": self.all_strongest_usd,
            "all_first_usd": self.all_first_usd,
            "saved_vs_strongest": 1 - self.cost_usd / self.all_strongest_usd if self.all_strongest_usd else 0.0,
            "saved_vs_first": 1 - self.cost_usd / self.all_first_usd if self.all_first_usd else 0.0,
            "ttft_p50_ms": percentile(ttfts, 0.50), "ttft_p99_ms": percentile(ttfts, 0.99),
            "duration_p50_ms": percentile(durations, 0.50), "duration_p99_ms": percentile(durations, 0.99),
        }


def _strength(policy: Policy, model: str) -> float:
    quality = policy.models[model].quality
    return quality if isinstance(quality, float) else quality.get("default", sum(quality.values()) / len(quality))


class Pricer:
    """What a request's tokens would have cost on its route's strongest and first models."""

    def __init__(self, policy: Policy):
        self.policy = policy
        self.strongest: dict[str, str] = {}
        self.first: dict[str, str] = {}
        for name, route in policy.routes.items():
            models = [m for m in route.models if m in policy.models]
            if models:
                self.strongest[name] = max(models, key=lambda m: (_strength(policy, m), -models.index(m)))
                self.first[name] = models[0]

    def counterfactuals(self, row: dict[str, Any]) -> tuple[float, float]:
        route = row["route"]
        if route not in self.strongest:
            return row["cost_usd"], row["cost_usd"]
        tokens = (row["input_tokens"], row["output_tokens"])
        return (self.policy.models[self.strongest[route]].estimated_cost(*tokens),
                self.policy.models[self.first[route]].estimated_cost(*tokens))


def day_of(ended_at_ms: int) -> str:
    return datetime.datetime.fromtimestamp(ended_at_ms / 1000, datetime.UTC).strftime("%Y-%m-%d")


def aggregate(rows: Iterable[dict[str, Any]], pricer: Pricer) -> dict[str, Any]:
    """The report: totals, and one line per value of each dimension (tenant, route, model, day)."""
    total = Group()
    by: dict[str, dict[str, Group]] = {d: defaultdict(Group) for d in DIMENSIONS}
    per_model_day: dict[tuple[str, str], float] = defaultdict(float)
    for row in rows:
        strongest, first = pricer.counterfactuals(row)
        model = row["serving_model"] or row["chosen_model"] or "(none)"
        day = day_of(row["ended_at_ms"])
        total.add(row, strongest, first)
        for dimension, key in (("tenant", row["tenant"] or "(none)"), ("route", row["route"] or "(pinned)"),
                               ("model", model), ("day", day)):
            by[dimension][key].add(row, strongest, first)
        per_model_day[(model, day)] += row["cost_usd"]
    return {
        "total": total.summary(),
        **{dimension: {key: group.summary() for key, group in sorted(groups.items())}
           for dimension, groups in by.items()},
        "spend_by_model_day": [{"model": m, "day": d, "cost_usd": c} for (m, d), c in sorted(per_model_day.items())],
        "counterfactuals": {"all_strongest": pricer.strongest, "all_first": pricer.first},
    }


_TABLE = [("requests", "{:,}", "requests"), ("spend", "${:.4f}", "cost_usd"), ("in tok", "{:,}", "input_tokens"),
          ("out tok", "{:,}", "output_tokens"), ("ttft p50", "{:.0f} ms", "ttft_p50_ms"),
          ("ttft p99", "{:.0f} ms", "ttft_p99_ms"), ("dur p50", "{:.0f} ms", "duration_p50_ms"),
          ("dur p99", "{:.0f} ms", "duration_p99_ms"), ("errors", "{:.1%}", "error_rate"),
          ("failover", "{:.1%}", "failover_rate"), ("saved vs strongest", "{:.0%}", "saved_vs_strongest"),
          ("saved vs first", "{:.0%}", "saved_vs_first")]


def format_tables(report: dict[str, Any]) -> str:
    out = []
    for dimension in ("total", *DIMENSIONS):
        lines = {"all": report["total"]} if dimension == "total" else report[dimension]
        header = [dimension] + [title for title, _, _ in _TABLE]
        cells = [[key] + [fmt.format(values[name]) for _, fmt, name in _TABLE] for key, values in lines.items()]
        widths = [max(len(r[i]) for r in [header, *cells]) for i in range(len(header))]
        out.append("  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(header, widths,
                                                                                                   strict=True))))
        out += ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths,
                                                                                               strict=True)))
                for row in cells]
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def format_csv(report: dict[str, Any]) -> str:
    """One CSV line per (dimension, key): the total, then each tenant, route, model and day."""
    buffer = io.StringIO()
    fields = list(report["total"])
    writer = csv.writer(buffer)
    writer.writerow(["dimension", "key", *fields])
    writer.writerow(["total", "all", *(report["total"][f] for f in fields)])
    for dimension in DIMENSIONS:
        for key, values in report[dimension].items():
            writer.writerow([dimension, key, *(values[f] for f in fields)])
    return buffer.getvalue()


def chart(report: dict[str, Any], path: str) -> None:
    """A PNG of spend per model per day (stacked bars); needs matplotlib (pip install 'routemesh[train]')."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    days = sorted({item["day"] for item in report["spend_by_model_day"]})
    models = sorted({item["model"] for item in report["spend_by_model_day"]})
    spend = {(item["model"], item["day"]): item["cost_usd"] for item in report["spend_by_model_day"]}
    figure, axes = plt.subplots(figsize=(max(6, len(days) * 0.8), 4))
    bottoms = [0.0] * len(days)
    for model in models:
        values = [spend.get((model, day), 0.0) for day in days]
        axes.bar(days, values, bottom=bottoms, label=model)
        bottoms = [b + v for b, v in zip(bottoms, values, strict=True)]
    axes.set_ylabel("spend (USD)")
    axes.set_title("spend per model per day")
    axes.legend(fontsize="small")
    figure.autofmt_xdate()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


async def store_rows(store: LedgerStore, since_ms: int, until_ms: int,
                     columns: Sequence[str] = COLUMNS) -> list[dict[str, Any]]:
    """`columns` of the requests an open store holds that ended in [since_ms, until_ms), oldest first."""
    return [dict(zip(columns, row, strict=True)) for row in await store.rows(columns, since_ms, until_ms)]


async def read_rows(url: str, since_ms: int, until_ms: int,
                    columns: Sequence[str] = COLUMNS) -> list[dict[str, Any]]:
    from routemesh.telemetry.ledger.stores import ledger_store

    store = ledger_store(url)
    await store.open()
    try:
        return await store_rows(store, since_ms, until_ms, columns)
    finally:
        await store.close()


def ledger_report(rows: Iterable[dict[str, Any]], policy: Policy, since: str) -> dict[str, Any]:
    """The whole report, as `--format json` prints it and telemetry's GetLedgerReport returns it."""
    report = aggregate(rows, Pricer(policy))
    report["since"] = since
    return report


def report_json(report: dict[str, Any]) -> str:
    return json.dumps(report, indent=2)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ledger options of `routemesh report` (with --ledger-url it reads the ledger, not experiments)."""
    parser.add_argument("--ledger", action="store_true",
                        help="report from the outcome ledger instead: requests, spend, latency, errors and savings by "
                             "tenant, route, model and day (the database of --ledger-url, else $ROUTEMESH_LEDGER_URL, "
                             "else the one `routemesh up` keeps in ~/.local/state/routemesh/ledger.db)")
    parser.add_argument("--ledger-url", default="", help="the ledger's database (implies --ledger)")
    parser.add_argument("--since", default="7d", help="how far back: 24h, 7d, 30d, or a date YYYY-MM-DD (UTC)")
    parser.add_argument("--format", choices=("table", "json", "csv"), default="table",
                        help="with --ledger-url: a table per dimension, JSON, or CSV (--json is --format json)")
    parser.add_argument("--chart", metavar="PNG", help="also draw spend per model per day into this PNG file")
    parser.add_argument("--policy", metavar="FILE",
                        help="price the counterfactuals with this policy (default: the policy control serves)")


def since_ms(text: str, now: float | None = None) -> int:
    now = time.time() if now is None else now
    units = {"h": 3600, "d": 86_400}
    if text[-1:] in units and text[:-1].isdigit():
        return int((now - int(text[:-1]) * units[text[-1]]) * 1000)
    try:
        day = datetime.datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=datetime.UTC)
    except ValueError:
        raise ValueError(f"--since must look like 24h, 7d or 2026-12-01, got {text!r}") from None
    return int(day.timestamp() * 1000)


def read_policy(args: argparse.Namespace) -> Policy:
    """The policy --policy FILE names, else the one control serves (its ${VAR} URLs stand unexpanded)."""
    if args.policy:
        from routemesh.common.policy import parse_policy

        with open(args.policy, encoding="utf-8") as handle:
            return parse_policy(handle.read())
    import grpc

    from routemesh.common.tls import blocking_channel
    from routemesh.v1 import control_pb2, control_pb2_grpc

    address = args.control
    with blocking_channel(address) as channel:
        try:
            reply = control_pb2_grpc.ControlPlaneServiceStub(channel).GetPolicy(control_pb2.GetPolicyRequest(),
                                                                                timeout=5)
        except grpc.RpcError as exc:
            raise RuntimeError(f"cannot read the policy from control at {address} ({exc.code().name}); "
                               "pass --policy FILE") from None
    document = json.loads(reply.policy.policy_json)
    for provider in document.get("providers", {}).values():  # only prices matter here
        if str(provider.get("base_url", "")).startswith("${"):
            provider["base_url"] = "http://unexpanded.invalid/v1"
    return Policy.model_validate(document)


def ledger_url(args: argparse.Namespace) -> str:
    """The ledger a command reads: --ledger-url, else $ROUTEMESH_LEDGER_URL, else routemesh up's (ValueError: none)."""
    if args.ledger_url:
        return args.ledger_url
    if os.environ.get("ROUTEMESH_LEDGER_URL"):
        return os.environ["ROUTEMESH_LEDGER_URL"]
    from routemesh.cli import default_ledger_path

    path = default_ledger_path()
    if not path.exists():
        raise ValueError(f"no ledger at {path} (routemesh up's); name one with --ledger-url")
    return f"sqlite:///{path}"


def run(args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    try:
        start = since_ms(args.since)
        url = ledger_url(args)
        policy = read_policy(args)
        rows = asyncio.run(read_rows(url, start, int(time.time() * 1000) + 1))
    except (ValueError, RuntimeError, OSError) as exc:
        print(f"routemesh report: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # noqa: BLE001 - a database's error, said in one line
        print(f"routemesh report: cannot read the ledger: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    report = ledger_report(rows, policy, args.since)
    if args.format == "json" or getattr(args, "json", False):
        print(report_json(report), file=out)
    elif args.format == "csv":
        out.write(format_csv(report))
    else:
        print(f"ledger: {len(rows):,} requests since {args.since} (UTC days); saved: spend below every request of "
              "a route on its strongest model, and on its first model (negative: spent more)", file=out)
        out.write(format_tables(report))
    if args.chart:
        try:
            chart(report, args.chart)
        except ImportError:
            print("routemesh report: --chart needs matplotlib: pip install 'routemesh[train]'", file=sys.stderr)
            return 1
        print(f"chart: {args.chart}", file=sys.stderr)
    return 0
