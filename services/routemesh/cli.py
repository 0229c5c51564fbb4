"""The `routemesh` command: up, serve, sim, chat, explain, demo, policy."""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

SERVICES = ("router", "classifier", "executor", "telemetry", "control", "gateway")


# `routemesh up` and `demo` run without API keys or TLS; compose and the Kubernetes manifests run with both.
def security_hint(environ: dict[str, str] | None = None) -> str:
    """What of the mesh's security this local mesh runs without, and how to turn each on ("" when all is on)."""
    env = os.environ if environ is None else environ

    def on(name: str) -> bool:
        return env.get(name, "").lower() in ("1", "true", "yes", "on")

    off = [(what, how) for what, how, enabled in (
        ("API keys", "ROUTEMESH_REQUIRE_KEYS=true, ROUTEMESH_KEY_PEPPER=<32+ characters> and --redis-url URL, then "
         "`routemesh keys create --tenant T`", on("ROUTEMESH_REQUIRE_KEYS")),
        ("admin credentials", "ROUTEMESH_REQUIRE_ADMIN=true and ROUTEMESH_ADMIN_KEY=<32+ characters>",
         on("ROUTEMESH_REQUIRE_ADMIN")),
        ("TLS", "`routemesh certs`, as compose and the manifests run it", False),
    ) if not enabled]
    names = ", ".join(what for what, _ in off[:-1]) + (" and " if len(off) > 1 else "") + off[-1][0]
    return (f"{names} {'are' if len(off) > 1 else 'is'} off in this local mesh (README: Security). "
            + "; ".join(f"{what}: {how}" for what, how in off))


def _env(name: str, default: str) -> str:
    return os.environ.get(name, default)


def _add_serve(sub: argparse._SubParsersAction) -> None:
    serve = sub.add_parser("serve", help="run one service (what a container runs)")
    services = serve.add_subparsers(dest="service", required=True, metavar="SERVICE")
    from routemesh.mesh import PORT_OFFSETS, DEFAULT_PORT_BASE

    for name in SERVICES:
        module = importlib.import_module(f"routemesh.{name}.main")
        p = services.add_parser(name, help=f"the {name} service")
        default_listen = f"127.0.0.1:{DEFAULT_PORT_BASE + PORT_OFFSETS[name]}"
        p.add_argument("--listen", default=_env(f"ROUTEMESH_{name.upper()}_LISTEN", default_listen),
                       help=f"address to listen on (env ROUTEMESH_{name.upper()}_LISTEN, default {default_listen})")
        if name != "control":
            p.add_argument("--control", default=_env("ROUTEMESH_CONTROL_ADDR", "127.0.0.1:50055"),
                           help="control-plane address (env ROUTEMESH_CONTROL_ADDR)")
        p.add_argument("--grace-s", type=float, default=float(_env("ROUTEMESH_GRACE_S", "30")),
                       help="seconds in-flight streams get to finish on SIGTERM")
        metrics_env = f"ROUTEMESH_{name.upper()}_METRICS_LISTEN"
        p.add_argument("--metrics-listen", default=_env(metrics_env, ""), metavar="HOST:PORT",
                       help=f"serve Prometheus metrics at http://HOST:PORT/metrics (env {metrics_env}; "
                            "default: off, and nothing is recorded)")
        module.add_arguments(p)


def _client_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("prompt", help="the user message")
    p.add_argument("--router", default=_env("ROUTEMESH_ROUTER_ADDR", "127.0.0.1:50051"),
                   help="router address (env ROUTEMESH_ROUTER_ADDR)")
    p.add_argument("--model", default="auto", help="'auto', a route name, or a model name to pin")
    p.add_argument("--max-tokens", type=int, default=0, help="0 = the policy default")
    p.add_argument("--system", help="a system message")
    p.add_argument("--meta", action="append", default=[], metavar="KEY=VALUE", help="request metadata")
    p.add_argument("--timeout", type=float, default=120.0)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="routemesh", description="Smart LLM routing as a gRPC mesh.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    up = sub.add_parser("up", help="run the whole mesh on this machine until Ctrl-C")
    up.add_argument("--port-base", type=int, default=int(_env("ROUTEMESH_PORT_BASE", "50050")),
                    help="router on BASE+1, classifier +2, telemetry +3, executor +4, control +5, sim +6, gateway +7; "
                         "their Prometheus metrics on BASE+11 (router) to +17 (gateway)")
    up.add_argument("--host", default="127.0.0.1")
    up.add_argument("--policy", default=_env("ROUTEMESH_POLICY", ""), help="policy YAML (default: built-in)")
    up.add_argument("--redis-url", default=_env("ROUTEMESH_REDIS_URL", ""),
                    help="share telemetry through Redis (default: in-process store)")
    up.add_argument("--sim-time-scale", type=float, default=1.0, help="scale simulated latencies (0 = none)")
    up.add_argument("--replicas", default=_env("ROUTEMESH_REPLICAS", ""), metavar="SERVICE=N,...",
                    help="run several replicas of executor, router, classifier or telemetry (with --redis-url), "
                    "e.g. executor=2,router=2: each on its own port; the router balances over executors and "
                    "classifiers, the gateway over routers (env ROUTEMESH_REPLICAS)")
    up.add_argument("--gateway", choices=("service", "router"), default=_env("ROUTEMESH_UP_GATEWAY", "service"),
                    help="who serves the OpenAI-compatible API on BASE+7: service (a gateway process in front of the "
                         "routers, balancing over router replicas) or router (the router itself, `serve router "
                         "--http-listen`: no gRPC hop, one process fewer; without router replicas) "
                         "(env ROUTEMESH_UP_GATEWAY, default service)")
    up.add_argument("--log-dir", help="write each service's log to DIR/SERVICE.log instead of the terminal")
    up.add_argument("--ledger-url", default=_env("ROUTEMESH_LEDGER_URL", ""),
                    help="the outcome ledger, one row per request (env ROUTEMESH_LEDGER_URL; default: SQLite in "
                         "$XDG_STATE_HOME/routemesh/ledger.db, ~/.local/state when unset; 'off' for none)")

    _add_serve(sub)

    sim = sub.add_parser("sim", help="run the simulated OpenAI-compatible provider")
    importlib.import_module("routemesh.sim.main").add_arguments(sim)

    chat = sub.add_parser("chat", help="stream an answer and print the decision and final status")
    _client_args(chat)
    explain = sub.add_parser("explain", help="print the ranked candidates for a prompt, and why")
    _client_args(explain)

    demo = sub.add_parser("demo", help="start a private mesh, send a mixed workload, report, stop")
    demo.add_argument("--requests", type=int, default=32)
    demo.add_argument("--concurrency", type=int, default=4)
    demo.add_argument("--sim-time-scale", type=float, default=0.5)

    report = sub.add_parser("report", help="per-variant requests, latency, errors and cost of experiments; "
                                           "--keys: API keys; --ledger: the outcome ledger")
    importlib.import_module("routemesh.report").add_arguments(report)
    replay = sub.add_parser("replay", help="what a policy would have done to recorded traffic (the ledger), "
                                           "with no provider calls")
    importlib.import_module("routemesh.replay").add_arguments(replay)

    bench = sub.add_parser("bench", help="measure routemesh against calling the provider directly")
    importlib.import_module("routemesh.bench.main").add_arguments(bench)

    router = sub.add_parser("router", help="train and evaluate the router's quality predictor")
    importlib.import_module("routemesh.quality.commands").add_arguments(router)

    top = sub.add_parser("top", help="live per-model health, latency, errors, circuits and spend (refreshing)")
    importlib.import_module("routemesh.top").add_arguments(top)
    alerts = sub.add_parser("alerts", help="the alerts firing now and those resolved lately (the policy's alert rules)")
    importlib.import_module("routemesh.alerts_cli").add_arguments(alerts)

    keys = sub.add_parser("keys", help="caller API keys: create, list, revoke, rotate (through control, as admin)")
    importlib.import_module("routemesh.keys_cli").add_arguments(keys)

    certs = sub.add_parser("certs", help="make a development CA and a certificate per mesh identity (mutual TLS)")
    importlib.import_module("routemesh.certs").add_arguments(certs)

    health = sub.add_parser("health", help="exit 0 if the gRPC service at ADDRESS reports SERVING")
    health.add_argument("address")
    health.add_argument("--timeout", type=float, default=2.0)

    policy = sub.add_parser("policy", help="validate or apply a policy file")
    psub = policy.add_subparsers(dest="policy_command", required=True)
    validate = psub.add_parser("validate", help="check a policy file and print what is wrong")
    validate.add_argument("file")
    apply = psub.add_parser("apply", help="send a policy file to the control plane")
    apply.add_argument("file")
    apply.add_argument("--control", default=_env("ROUTEMESH_CONTROL_ADDR", "127.0.0.1:50055"))
    apply.add_argument("--dry-run", action="store_true")
    history = psub.add_parser("history", help="who changed the policy, when, and what changed (the audit log)")
    history.add_argument("--control", default=_env("ROUTEMESH_CONTROL_ADDR", "127.0.0.1:50055"))
    history.add_argument("--limit", type=int, default=20)
    show = psub.add_parser("show", help="the policy in force: version, digest, source and the document (as JSON)")
    show.add_argument("--control", default=_env("ROUTEMESH_CONTROL_ADDR", "127.0.0.1:50055"))
    return parser


def _serve(args: argparse.Namespace) -> int:
    from routemesh.common.logs import setup_logging
    from routemesh.common.loop import run as run_loop
    from routemesh.common.serve import serve
    from routemesh.common.tracing import init_tracing, shutdown_tracing

    setup_logging(args.service)
    if args.service == "gateway":  # HTTP, not gRPC: it runs (and traces) itself
        run_loop(importlib.import_module("routemesh.gateway.main").run(args))
        return 0
    init_tracing(f"routemesh-{args.service}")
    module = importlib.import_module(f"routemesh.{args.service}.main")

    async def run() -> None:
        service = await module.build(args)
        await serve(service, args.listen, grace_s=args.grace_s, metrics_listen=args.metrics_listen)

    try:
        run_loop(run())
    except SystemExit as exc:
        print(f"routemesh {args.service}: {exc}", file=sys.stderr)
        return 2
    finally:
        shutdown_tracing()
    return 0


def _sim(args: argparse.Namespace) -> int:
    from routemesh.common.logs import setup_logging

    setup_logging("sim")
    from routemesh.common.loop import run as run_loop

    run_loop(importlib.import_module("routemesh.sim.main").run(args))
    return 0


class Supervisor:
    """Restarts a service of `routemesh up` that exits, as compose's `restart:` would: after a backoff that
    doubles with each quick death (0.5 s up to 30 s) and resets once the service has lived a minute."""

    MIN_BACKOFF_S, MAX_BACKOFF_S, STABLE_S = 0.5, 30.0, 60.0

    def __init__(self, mesh: Any):
        self.mesh = mesh
        self.failures: dict[str, int] = {}
        self.started_at: dict[str, float] = {}
        self.due: dict[str, float] = {}  # service -> when to start it again

    def tick(self, now: float) -> None:
        for service in self.mesh.dead():
            if service in self.due:
                continue
            lived = now - self.started_at.get(service, now - self.STABLE_S)
            self.failures[service] = 1 if lived >= self.STABLE_S else self.failures.get(service, 0) + 1
            backoff = min(self.MIN_BACKOFF_S * 2 ** (self.failures[service] - 1), self.MAX_BACKOFF_S)
            code = self.mesh.processes[service].returncode
            print(f"routemesh up: {service} exited (code {code}); restarting it in {backoff:g} s", file=sys.stderr,
                  flush=True)
            self.due[service] = now + backoff
        for service, when in list(self.due.items()):
            if now >= when:
                del self.due[service]
                self.mesh.start_service(service)
                self.started_at[service] = now
                print(f"routemesh up: {service} restarted", file=sys.stderr, flush=True)


def default_ledger_path() -> Path:
    """Where `routemesh up` keeps its ledger when told nothing: the user's state directory (XDG)."""
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "routemesh" / "ledger.db"


def _ledger_label(url: str) -> str:
    if not url:
        return "off"
    if url.startswith("sqlite:///"):
        return f"SQLite {url.removeprefix('sqlite:///')}"
    return url.partition("://")[0] + " (" + url.rpartition("@")[2].partition("?")[0] + ")"


def _replica_counts(args: argparse.Namespace) -> dict[str, int]:
    """--replicas as counts; SystemExit with the problem when it cannot be run."""
    from routemesh.mesh import parse_replicas

    try:
        counts = parse_replicas(args.replicas)
    except ValueError as exc:
        raise SystemExit(f"routemesh up: --replicas {exc}") from None
    if counts.get("telemetry", 1) > 1 and not args.redis_url:
        raise SystemExit("routemesh up: --replicas telemetry=N needs --redis-url: replicas share health through Redis")
    return counts


def replica_warnings(counts: dict[str, int], redis_url: str) -> list[str]:
    """What an operator should know about the replicas asked for."""
    if counts.get("router", 1) > 1 and not redis_url:
        return ["routemesh up: without --redis-url each router replica keeps its own rate limits and budgets "
                "(each admits up to the limit)"]
    return []


def _up(args: argparse.Namespace) -> int:
    from routemesh.mesh import Mesh, MeshError, MeshLayout

    counts = _replica_counts(args)
    layout = MeshLayout.from_base(args.port_base, args.host, replicas=counts)
    ledger = "" if args.ledger_url == "off" else args.ledger_url or f"sqlite:///{default_ledger_path()}"
    try:
        mesh = Mesh(layout, policy=args.policy or None, redis_url=args.redis_url or None,
                    sim_time_scale=args.sim_time_scale, log_dir=Path(args.log_dir) if args.log_dir else None,
                    extra_args={"telemetry": ["--ledger-url", ledger]} if ledger else None, gateway=args.gateway)
    except ValueError as exc:
        raise SystemExit(f"routemesh up: {exc}") from None
    stop = {"now": False}

    def request_stop(signum: int, _frame: object) -> None:
        stop["now"] = True

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    try:
        mesh.start(progress=lambda s: print(f"  {s:<11} healthy at {layout.address(s)}"
                                            + (f", metrics at {layout.metrics_url(s)}" if layout.metrics_url(s) else ""),
                                            flush=True))
    except MeshError as exc:
        print(f"routemesh up: {exc}", file=sys.stderr)
        return 1
    routers = " and ".join(layout.address(name) for name in layout.replicas("router"))
    print(f"routemesh is up: router at {routers}, OpenAI-compatible endpoint at "
          f"http://{layout.address('gateway')}/v1, console at http://{layout.address('gateway')}/console "
          f"(telemetry: {'redis ' + args.redis_url if args.redis_url else 'in-process store'}; "
          f"ledger: {_ledger_label(ledger)}); Ctrl-C stops it", flush=True)
    print(security_hint(), flush=True)
    for warning in replica_warnings(counts, args.redis_url):
        print(warning, file=sys.stderr, flush=True)
    supervisor = Supervisor(mesh)
    while not stop["now"]:
        supervisor.tick(time.monotonic())
        time.sleep(0.2)
    print("stopping...", flush=True)
    mesh.stop()
    print("stopped", flush=True)
    return 0


def _meta(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"--meta takes KEY=VALUE, got {pair!r}")
        out[key] = value
    return out


def _client_call(args: argparse.Namespace) -> int:
    from routemesh.client import RouterClient, RoutemeshError
    from routemesh.clitext import print_decision, print_explain, print_final

    options = dict(model=args.model, max_tokens=args.max_tokens, metadata=_meta(args.meta), system=args.system,
                   timeout=args.timeout)
    with RouterClient(args.router, tls_ca=os.environ.get("ROUTEMESH_TLS_CA") or None) as client:
        try:
            if args.command == "explain":
                print_explain(client.explain(args.prompt, **options))
                return 0
            for event in client.chat(args.prompt, **options):
                kind = event.WhichOneof("event")
                if kind == "decision":
                    print_decision(event.decision)
                elif kind == "delta":
                    sys.stdout.write(event.delta.text)
                    sys.stdout.flush()
                elif kind == "final":
                    print()
                    print_final(event.final)
        except RoutemeshError as exc:
            print(f"\nerror: {exc.code.name}: {exc.message}", file=sys.stderr)
            for field, what in exc.field_violations:
                print(f"  {field}: {what}", file=sys.stderr)
            if exc.code.name == "UNAVAILABLE" and not exc.reason:
                print(f"  is the mesh running? start it with: routemesh up (router at {args.router})",
                      file=sys.stderr)
            return 1
    return 0


def _policy(args: argparse.Namespace) -> int:
    from routemesh.common.policy import PolicyError, canonical_json, digest, parse_policy

    if args.policy_command == "history":
        return _policy_history(args)
    if args.policy_command == "show":
        return _policy_show(args)
    try:
        text = Path(args.file).read_text()
    except OSError as exc:
        print(f"routemesh policy: cannot read {args.file}: {exc.strerror}", file=sys.stderr)
        return 2
    if args.policy_command == "validate":
        from routemesh.quality.serving import policy_quality

        try:
            policy = parse_policy(text)
            policy_quality(policy)
        except PolicyError as exc:
            print(f"{args.file}: invalid policy ({len(exc.violations)} problem(s)):", file=sys.stderr)
            for field, what in exc.violations:
                print(f"  {field or '(document)'}: {what}", file=sys.stderr)
            return 1
        print(f"{args.file}: valid: {len(policy.providers)} provider(s), {len(policy.models)} model(s), "
              f"{len(policy.routes)} route(s); digest {digest(canonical_json(policy))[:12]}")
        return 0
    import grpc

    from routemesh.v1 import control_pb2, control_pb2_grpc

    from routemesh.clitext import print_rpc_error
    from routemesh.common.tls import blocking_channel

    with blocking_channel(args.control) as channel:
        try:
            reply = control_pb2_grpc.ControlPlaneServiceStub(channel).ApplyPolicy(
                control_pb2.ApplyPolicyRequest(policy_yaml=text, dry_run=args.dry_run), timeout=10)
        except grpc.RpcError as exc:
            return print_rpc_error("routemesh policy apply", exc)
    verb = "would apply" if args.dry_run else ("applied" if reply.changed else "unchanged")
    print(f"{verb}: policy version {reply.policy.version} ({reply.policy.digest[:12]})")
    return 0


def _policy_show(args: argparse.Namespace) -> int:
    import json

    import grpc

    from routemesh.clitext import print_rpc_error
    from routemesh.common.tls import blocking_channel
    from routemesh.v1 import control_pb2, control_pb2_grpc

    with blocking_channel(args.control) as channel:
        try:
            policy = control_pb2_grpc.ControlPlaneServiceStub(channel).GetPolicy(
                control_pb2.GetPolicyRequest(), timeout=10).policy
        except grpc.RpcError as exc:
            return print_rpc_error("routemesh policy show", exc)
    print(f"# policy version {policy.version}, digest {policy.digest}, from {policy.source}")
    print(json.dumps(json.loads(policy.policy_json), indent=2))
    return 0


def _policy_history(args: argparse.Namespace) -> int:
    import datetime

    import grpc

    from routemesh.clitext import print_rpc_error
    from routemesh.common.tls import blocking_channel
    from routemesh.v1 import control_pb2, control_pb2_grpc

    with blocking_channel(args.control) as channel:
        try:
            reply = control_pb2_grpc.ControlPlaneServiceStub(channel).ListPolicyChanges(
                control_pb2.ListPolicyChangesRequest(limit=args.limit), timeout=10)
        except grpc.RpcError as exc:
            return print_rpc_error("routemesh policy history", exc)
    for change in reply.changes:
        when = datetime.datetime.fromtimestamp(change.at_ms / 1000, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S")
        print(f"{when}Z  {change.action:<8} v{change.version:<4} {change.digest[:12]:<12}  {change.actor}: "
              f"{change.summary}")
    return 0


def _health(args: argparse.Namespace) -> int:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from routemesh.common.tls import blocking_channel

    with blocking_channel(args.address) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=args.timeout)
        except grpc.RpcError as exc:
            print(f"{args.address}: {exc.code().name}", file=sys.stderr)
            return 1
    name = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    print(f"{args.address}: {name}")
    return 0 if reply.status == health_pb2.HealthCheckResponse.SERVING else 1


def main(argv: list[str] | None = None) -> int:
    command = (sys.argv[1:] if argv is None else argv)[:1]
    if command == ["serve"]:
        # Before build_parser: it imports the services, and with them grpc, which reads its settings once.
        from routemesh.common.grpc_env import apply_service_defaults

        apply_service_defaults()
    args = build_parser().parse_args(argv)
    try:
        if args.command == "serve":
            return _serve(args)
        if args.command == "sim":
            return _sim(args)
        if args.command == "up":
            return _up(args)
        if args.command in ("chat", "explain"):
            return _client_call(args)
        if args.command == "demo":
            from routemesh.demo import run_demo

            return run_demo(args)
        if args.command == "policy":
            return _policy(args)
        if args.command == "health":
            return _health(args)
        if args.command == "bench":
            return importlib.import_module("routemesh.bench.main").run(args)
        if args.command == "top":
            return importlib.import_module("routemesh.top").run(args)
        if args.command == "alerts":
            return importlib.import_module("routemesh.alerts_cli").run(args)
        if args.command == "router":
            return importlib.import_module("routemesh.quality.commands").run(args)
        if args.command == "report":
            return importlib.import_module("routemesh.report").run(args)
        if args.command == "replay":
            return importlib.import_module("routemesh.replay").run(args)
        if args.command == "keys":
            return importlib.import_module("routemesh.keys_cli").run(args)
        if args.command == "certs":
            return importlib.import_module("routemesh.certs").run(args)
    except KeyboardInterrupt:
        return 130
    return 2


if __name__ == "__main__":
    sys.exit(main())
