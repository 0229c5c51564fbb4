"""The gRPC core settings `routemesh serve` applies before grpc starts."""

import os
import subprocess
import sys

from routemesh.common.grpc_env import GRPC_EXPERIMENTS_VAR, SERVICE_GRPC_EXPERIMENTS, apply_service_defaults

# What a service process sees: `routemesh serve --help` builds the whole parser, which imports every service
# (and with them grpc), then exits; the script reports the variable and whether grpc was imported after it.
_PROBE = """
import os, sys
from routemesh import cli
assert "grpc" not in sys.modules, "grpc imported before main()"
try:
    cli.main(["serve", "--help"])
except SystemExit:
    pass
print(repr(os.environ.get("GRPC_EXPERIMENTS")), "grpc" in sys.modules)
"""


def _probe(extra_env: dict[str, str]) -> str:
    env = {k: v for k, v in os.environ.items() if k != GRPC_EXPERIMENTS_VAR}
    env.update(extra_env)
    done = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


def test_defaults_are_set_when_the_operator_set_nothing():
    environ: dict[str, str] = {}
    apply_service_defaults(environ)
    assert environ == {GRPC_EXPERIMENTS_VAR: SERVICE_GRPC_EXPERIMENTS}


def test_the_operators_value_wins_even_when_empty():
    for chosen in ("", "-event_engine_client"):
        environ = {GRPC_EXPERIMENTS_VAR: chosen}
        apply_service_defaults(environ)
        assert environ[GRPC_EXPERIMENTS_VAR] == chosen


def test_serve_sets_them_before_grpc_is_imported():
    assert _probe({}) == f"{SERVICE_GRPC_EXPERIMENTS!r} True"


def test_serve_keeps_the_operators_value():
    assert _probe({GRPC_EXPERIMENTS_VAR: ""}) == "'' True"
