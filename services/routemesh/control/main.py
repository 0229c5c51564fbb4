"""`routemesh serve control`: arguments and the Service wiring of the control plane."""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

import grpc

from routemesh.common import admin
from routemesh.common.serve import Service
from routemesh.common.keys import KeyConfigError, KeyStore, pepper_from_env
from routemesh.common.metrics import new_registry
from routemesh.common.redis_client import create_client
from routemesh.control.audit import AuditLog
from routemesh.control.keys_api import KeysApi
from routemesh.control.file_source import PolicyFileSource
from routemesh.control.metrics import register_control_metrics
from routemesh.control.registry import PolicyRegistry
from routemesh.control.servicer import ControlPlaneServicer
from routemesh.v1 import control_pb2_grpc

log = logging.getLogger(__name__)
SERVICE_NAME = "control"
GRPC_SERVICE = "routemesh.v1.ControlPlaneService"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The control plane's command-line options."""
    parser.add_argument(
        "--policy",
        default=os.environ.get("ROUTEMESH_POLICY", ""),
        metavar="PATH",
        help="policy YAML file, reloaded when it changes "
        "(default: $ROUTEMESH_POLICY; empty means the built-in policy)",
    )
    parser.add_argument(
        "--poll-interval-s",
        type=_positive_seconds,
        default=1.0,
        help="how often to check the policy file for changes, in seconds (default: 1.0)",
    )
    parser.add_argument(
        "--audit-log",
        default=os.environ.get("ROUTEMESH_AUDIT_LOG", ""),
        metavar="PATH",
        help="append every applied or refused policy change to this file as JSON lines (who, when, version, "
        "digest, what changed; env ROUTEMESH_AUDIT_LOG); the newest 500 are also kept in memory for "
        "routemesh policy history",
    )
    parser.add_argument("--redis-url", default=os.environ.get("ROUTEMESH_REDIS_URL", ""),
                        help="where caller API keys are kept (env ROUTEMESH_REDIS_URL; empty: no key management "
                             "here); needs ROUTEMESH_KEY_PEPPER, the same secret as the services checking keys")
    parser.add_argument("--redis-prefix", default=os.environ.get("ROUTEMESH_REDIS_PREFIX", "routemesh:"))
    admin.add_arguments(parser)


def _positive_seconds(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text!r}")
    return value


def control_service(
    registry: PolicyRegistry, file_source: PolicyFileSource | None = None, keys: KeyStore | None = None,
    admin_auth: admin.AdminAuth | None = None,
) -> tuple[Service, ControlPlaneServicer]:
    """The control plane Service over `registry`; with `file_source`, polling runs between start and stop.

    With `keys`, it manages caller API keys (CreateKey, ListKeys, RevokeKey, RotateKey); with `admin_auth`,
    admin RPCs need its credential (or the admin certificate).
    """
    servicer = ControlPlaneServicer(registry, KeysApi(keys))

    def register(server: grpc.aio.Server) -> None:
        control_pb2_grpc.add_ControlPlaneServiceServicer_to_server(servicer, server)

    async def on_start() -> None:
        if file_source is not None:
            await file_source.start()

    async def on_stop() -> None:
        servicer.stop()
        if file_source is not None:
            await file_source.stop()
        if keys is not None:
            await keys.close()

    service = Service(
        name=SERVICE_NAME,
        register=register,
        grpc_services=[GRPC_SERVICE],
        on_start=on_start,
        on_stop=on_stop,
        on_drain=servicer.stop,
        ready=lambda: registry.current is not None,
        admin=admin_auth,
    )
    return service, servicer


async def build(args: argparse.Namespace) -> Service:
    """The control plane from parsed arguments; an unusable policy ends start-up with every violation."""
    registry = PolicyRegistry(audit=AuditLog(Path(args.audit_log) if args.audit_log else None))
    file_source = PolicyFileSource(args.policy or None, registry, interval_s=args.poll_interval_s)
    file_source.load_initial()
    keys = None
    if args.redis_url:
        try:
            keys = KeyStore(create_client(args.redis_url, timeout_s=1.0), args.redis_prefix, pepper_from_env())
        except KeyConfigError as exc:
            log.warning("API key management is off: %s", exc)
    service, _ = control_service(registry, file_source, keys, admin.from_args(SERVICE_NAME, args, keys))
    if getattr(args, "metrics_listen", ""):
        service.metrics = new_registry()
        register_control_metrics(service.metrics, registry)
    return service
