"""`routemesh bench`: command-line options, the run, the table on stdout and the JSON file."""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import signal
import sys
import threading
import time
from pathlib import Path

from routemesh.bench.measure import METRICS_SCRAPE_S, STAGGER_S, BenchConfig, BenchError, arm_names, run_all
from routemesh.bench.progress import Progress
from routemesh.bench.report import build_figures, print_sizing, print_table, sizing, targets_for
from routemesh.bench.system import Pinning
from routemesh.bench.workload import MAX_TOKENS, PINNED_MODEL, PROFILES, UPSTREAM_MODEL

SCHEMA = "routemesh-bench/1"
_DEFAULTS = {"rounds": 5, "requests": 1000, "realistic_requests": 20, "concurrency": [1, 16, 64, 256],
             "tracing": "both"}
# A CI smoke run: both modes, tiny counts, under a minute on a busy 2-core machine. Tracing on only, the
# path with more parts (sink, exporters); each tracing setting costs a mesh start (~10 s when busy).
_QUICK = {"rounds": 2, "requests": 8, "realistic_requests": 1, "concurrency": [1, 8], "tracing": "on",
          "sweep": [], "waves": 2, "realistic_waves": 1, "settle_s": 0.25, "decision_iterations": 1000,
          "classifier_iterations": 200, "key_check_iterations": 2000}


def _concurrency_list(text: str) -> list[int]:
    try:
        values = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list of integers, got {text!r}") from None
    if not values or values[0] < 1 or values[-1] > 4096:
        raise argparse.ArgumentTypeError("each concurrency must be between 1 and 4096")
    return values


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _port(text: str) -> int:
    value = _positive(text)
    if value > 65535:
        raise argparse.ArgumentTypeError("must be a port number, 1 to 65535")
    return value


_VIAS = ("grpc", "gateway")


def _via_list(text: str) -> list[str]:
    values = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [v for v in values if v not in _VIAS]
    if not values or unknown:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list of {', '.join(_VIAS)}, got {text!r}")
    return [v for v in _VIAS if v in values]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--mode", choices=("zero", "realistic", "both"), default="both",
                        help="provider: zero-delay (isolates routemesh's overhead), realistic (TTFT 200 ms, "
                             "20 ms/token, 64 tokens) or both (default)")
    parser.add_argument("--rounds", type=_positive, default=None,
                        help=f"interleaved rounds of both arms (default {_DEFAULTS['rounds']})")
    parser.add_argument("--requests", type=_positive, default=None,
                        help=f"zero mode: requests per round per arm at each concurrency, at least 4x the "
                             f"concurrency (default {_DEFAULTS['requests']})")
    parser.add_argument("--realistic-requests", type=_positive, default=None,
                        help=f"realistic mode: the same, at least twice the concurrency (streams start spread over "
                             f"one answer's 1.5 s, as independent callers do) "
                             f"(default {_DEFAULTS['realistic_requests']})")
    parser.add_argument("--concurrency", type=_concurrency_list, default=None,
                        help="streams in flight, a comma-separated list (default 1,16,64,256); zero mode also runs "
                             "4 and 8 streams, where the highest rate with added p99 ≤ 50 ms is usually found")
    parser.add_argument("--tracing", choices=("on", "off", "both"), default=None,
                        help="OpenTelemetry tracing of every mesh process, 100%% sampled into a local sink "
                             "(default both)")
    parser.add_argument("--classifier", choices=("service", "local"), default="service",
                        help="service: the router asks the classifier service on every request (the default "
                             "mesh); local: the router classifies in-process (ROUTEMESH_CLASSIFIER_ADDR=local)")
    parser.add_argument("--tls", action="store_true",
                        help="mutual TLS between the mesh's services (certificates from routemesh certs, made for the "
                             "run) and TLS from the bench to the router; compare with a run without it")
    parser.add_argument("--ledger", metavar="sqlite|URL", default="",
                        help="telemetry writes the outcome ledger (sqlite: a file of the run; or a postgresql:// URL); "
                             "compare with a run without it")
    parser.add_argument("--metrics", choices=("on", "off"), default="on",
                        help="every mesh service serves Prometheus metrics, scraped every "
                             f"{METRICS_SCRAPE_S:g} s as a Prometheus would (default on, as deployed); run pairs "
                             "with off to measure what they cost")
    parser.add_argument("--predictor", choices=("on", "off"), default="on",
                        help="on: the default policy, whose quality predictor the classifier runs on every request; "
                             "off: the same policy without it (default on)")
    parser.add_argument("--keys", action="store_true",
                        help="the router requires API keys, kept in Redis at --redis-url under a prefix of the run's "
                             "own (deleted after); every routemesh arm sends one")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0",
                        help="the Redis of --keys (default redis://127.0.0.1:6379/0)")
    parser.add_argument("--via", type=_via_list, default=None,
                        help="routemesh's arms, a comma-separated list: grpc (the router, as the SDKs call it) and "
                             "gateway (the OpenAI-compatible HTTP gateway in front of it) (default grpc,gateway)")
    parser.add_argument("--gateway", choices=("router", "service"), default="router",
                        help="the gateway arm's HTTP API: router (the router serves it itself, `serve router "
                             "--http-listen`: no gRPC hop) or service (the separate gateway process in front of the "
                             "router, as `routemesh up` runs it) (default router)")
    parser.add_argument("--compare-url", metavar="URL", default="",
                        help="one more arm: any OpenAI-compatible proxy (its base URL, such as "
                             "http://127.0.0.1:4000/v1), configured to serve --compare-model from the bench's sim at "
                             "http://127.0.0.1:<--sim-port>/v1; ROUTEMESH_COMPARE_KEY, when set, is sent as its "
                             "bearer key. The proxy is yours to start before the bench and to stop after it")
    parser.add_argument("--compare-model", metavar="NAME", default=UPSTREAM_MODEL,
                        help=f"the model the compared proxy is asked for; it must reach the sim's {UPSTREAM_MODEL} "
                             f"(default {UPSTREAM_MODEL})")
    parser.add_argument("--compare-pid", metavar="PID", type=_positive, default=None,
                        help="the compared proxy's process: its CPU (with its children's) is measured, and --pin "
                             "moves it to the system-under-test cores")
    parser.add_argument("--sim-port", metavar="PORT", type=_port, default=None,
                        help="the simulated provider listens here (default: a free port); needed with --compare-url")
    parser.add_argument("--floor", action="store_true",
                        help="one more arm: routemesh's hops and messages in bare Python gRPC, with no routemesh code "
                             "(python -m routemesh.bench.floor), on the same sim in the same rounds; it shows what "
                             "the hops alone cost on this machine, and the gRPC arm against it what routemesh's own "
                             "code adds. Without the classifier hop with --classifier local; never traced")
    parser.add_argument("--pin", metavar="auto|LOAD:SUT", nargs="?", const="auto", default=None,
                        help="give the load generator (this process and the sim) and the system under test "
                             "(routemesh's processes, the compared proxy) their own CPUs: auto splits the CPUs in "
                             "half (0:1 on two cores), or name them, such as 0:1 or 0-1:2-3 (Linux)")
    parser.add_argument("--json", metavar="PATH", default=None, help="write every figure and raw number here")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run for CI: both modes, tracing on, 2 rounds, concurrency 1,8, tiny counts, "
                             "under a minute (explicit options still apply); the numbers mean nothing")


def config_from_args(args: argparse.Namespace) -> BenchConfig:
    """The run's settings: explicit options, else --quick's, else the defaults; ValueError on a bad combination."""
    base = {**_DEFAULTS, **(_QUICK if args.quick else {})}

    def pick(name: str):
        value = getattr(args, name, None)
        return base[name] if value is None else value

    tracing = pick("tracing")
    extra = {k: v for k, v in base.items() if k in ("sweep", "waves", "realistic_waves", "settle_s",
                                                    "decision_iterations", "classifier_iterations",
                                                    "key_check_iterations")}
    cfg = BenchConfig(
        modes=["zero", "realistic"] if args.mode == "both" else [args.mode],
        tracings=["off", "on"] if tracing == "both" else [tracing],
        rounds=pick("rounds"), requests=pick("requests"), realistic_requests=pick("realistic_requests"),
        concurrency=pick("concurrency"), quick=args.quick, classifier=args.classifier, tls=args.tls, ledger=args.ledger,
        metrics=args.metrics, **extra,
    )
    if args.via is not None:
        cfg.via = args.via
    cfg.predictor, cfg.keys, cfg.redis_url, cfg.gateway = args.predictor, args.keys, args.redis_url, args.gateway
    if args.compare_url:
        if not args.compare_url.startswith(("http://", "https://")):
            raise ValueError(f"--compare-url {args.compare_url!r}: expected an http:// or https:// base URL")
        if args.sim_port is None:
            raise ValueError("--compare-url needs --sim-port: the compared proxy must call the bench's sim, at "
                             "http://127.0.0.1:<PORT>/v1")
        cfg.compare_url, cfg.compare_model = args.compare_url, args.compare_model
        cfg.compare_key = os.environ.get("ROUTEMESH_COMPARE_KEY", "")
    elif args.compare_pid is not None:
        raise ValueError("--compare-pid goes with --compare-url")
    cfg.compare_pid = args.compare_pid or 0
    if args.compare_pid is not None and not Path(f"/proc/{args.compare_pid}").exists():
        raise ValueError(f"--compare-pid {args.compare_pid}: no such process")
    cfg.sim_port = args.sim_port or 0
    if args.floor and args.tls:
        raise ValueError("--floor has no TLS: compare it with a run without --tls")
    if args.floor and "grpc" not in cfg.via:
        raise ValueError("--floor is measured against the gRPC arm: --via must include grpc")
    cfg.floor = args.floor
    if args.pin is not None:
        cfg.pin = Pinning.parse(args.pin)
    return cfg


def _config_json(cfg: BenchConfig) -> dict:
    return {
        "modes": cfg.modes, "tracing": cfg.tracings, "rounds": cfg.rounds, "concurrency": cfg.concurrency,
        "sweep": cfg.sweep,
        "requests_per_phase": {mode: {str(c): cfg.requests_at(mode, c) for c in cfg.levels(mode)}
                               for mode in cfg.modes},
        "stagger_s": {mode: STAGGER_S[mode] for mode in cfg.modes},
        "settle_s": cfg.settle_s, "quick": cfg.quick, "classifier": cfg.classifier, "tls": cfg.tls, "ledger": cfg.ledger,
        "metrics": cfg.metrics, "metrics_scrape_s": METRICS_SCRAPE_S,
        "pinned_model": PINNED_MODEL, "upstream_model": UPSTREAM_MODEL, "max_tokens": MAX_TOKENS,
        "sim_profiles": {mode: PROFILES[mode] for mode in cfg.modes},
        "decision_iterations": cfg.decision_iterations, "classifier_iterations": cfg.classifier_iterations,
        "key_check_iterations": cfg.key_check_iterations,
        "via": cfg.via, "arms": arm_names(cfg), "predictor": cfg.predictor, "keys": cfg.keys, "gateway": cfg.gateway,
        "floor": cfg.floor,
        "compare": {"url": cfg.compare_url, "model": cfg.compare_model, "cpu_measured": bool(cfg.compare_pid)}
        if cfg.compare_url else None,
        "pin": cfg.pin.describe() if cfg.pin else None,
    }


def _interrupt(signum: int, frame: object) -> None:
    # SIGTERM takes the same path as Ctrl-C, so every `finally` stops its mesh.
    raise KeyboardInterrupt


def run(args: argparse.Namespace) -> int:
    try:
        cfg = config_from_args(args)
    except ValueError as exc:
        print(f"routemesh bench: {exc}", file=sys.stderr)
        return 2
    progress = Progress()
    started = datetime.datetime.now(datetime.UTC)
    load_before = os.getloadavg()
    clock = time.monotonic()
    previous = signal.getsignal(signal.SIGTERM)
    in_main_thread = threading.current_thread() is threading.main_thread()
    if in_main_thread:
        signal.signal(signal.SIGTERM, _interrupt)
    try:
        micro, phases, sink = run_all(cfg, progress)
    except KeyboardInterrupt:
        progress.close()
        print("routemesh bench: interrupted; every mesh process was stopped", file=sys.stderr)
        return 130
    except BenchError as exc:
        progress.close()
        print(f"routemesh bench: {exc}", file=sys.stderr)
        return 1
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)
    progress.close()
    figures = build_figures(phases, micro, cfg.modes, cfg.tracings, cfg.concurrency, cfg.sweep, cfg.classifier)
    print_table(figures, sys.stdout)
    sized = {tracing: sizing(phases, tracing) for tracing in cfg.tracings}
    print_sizing(sized, sys.stdout)
    failed = sum(p["failed"] for p in phases)
    if "on" in cfg.tracings:
        print(f"\ntrace sink: {sink['exports']} OTLP exports, {sink['bytes']:,} bytes received", file=sys.stdout)
    if failed:
        print(f"\n{failed} measured request(s) failed; see 'errors' in the phases", file=sys.stderr)
    if args.json:
        result = {
            "schema": SCHEMA,
            "started_at": started.isoformat(timespec="seconds"),
            "duration_s": round(time.monotonic() - clock, 3),
            # CPU figures come from /proc utime+stime, counted in clock ticks of this many milliseconds.
            "machine": {"cpus": os.cpu_count(), "clock_tick_ms": 1000 / os.sysconf("SC_CLK_TCK"),
                        "loadavg_before": load_before, "loadavg_after": os.getloadavg(),
                        "python": platform.python_version(), "platform": platform.platform()},
            "config": _config_json(cfg),
            "targets": {fid: {"op": t.op, "limit": t.limit, "unit": t.unit}
                        for fid, t in targets_for(cfg.classifier).items()},
            "figures": figures,
            "sizing": sized,
            "micro": micro,
            "trace_sink": sink,
            "failed_requests": failed,
            "phases": phases,
        }
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
        print(f"results written to {args.json}", file=sys.stderr)
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="routemesh bench", description=__doc__)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
