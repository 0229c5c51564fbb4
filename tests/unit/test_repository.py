"""Repository invariants: generated code in sync, buf lint clean, compose.yaml valid, packaging complete."""

from __future__ import annotations

import json
import pathlib
import shutil
import subprocess
import sys

import jsonschema
import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_generated_code_is_up_to_date():
    result = subprocess.run([sys.executable, "scripts/gen_protos.py", "--check"], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def _buf() -> str:
    found = shutil.which("buf") or str(pathlib.Path(sys.executable).parent / "buf")
    if not pathlib.Path(found).exists():
        pytest.fail("buf not installed: pip install -e '.[test]' installs buf-bin")
    return found


def test_buf_lint_is_clean():
    result = subprocess.run([_buf(), "lint"], cwd=ROOT / "protos", capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_file_matches_the_compose_schema():
    schema = json.loads((ROOT / "tests/data/compose-spec.json").read_text())
    document = yaml.safe_load((ROOT / "compose.yaml").read_text())
    jsonschema.Draft7Validator(schema).validate(document)
    services = document["services"]
    for name in ("control", "telemetry", "classifier", "executor", "router", "sim", "redis", "jaeger"):
        assert name in services
    for name in ("control", "telemetry", "classifier", "executor", "router"):
        assert "routemesh" in " ".join(services[name]["healthcheck"]["test"])
        assert services[name]["deploy"]["resources"]["limits"]["memory"]
    # Scaled services must not publish one fixed host port, or `--scale` fails.
    for name in ("executor", "classifier", "telemetry"):
        assert "ports" not in services[name]
    assert all("-" in port.split(":")[-2] for port in services["router"]["ports"]), "router needs a port range"


def test_compose_runs_every_routemesh_service_with_mutual_tls():
    from routemesh.certs import CA_CERT, IDENTITIES
    from routemesh.cli import SERVICES
    from routemesh.common.tls import ENV_CA, ENV_CERT, ENV_KEY

    document = yaml.safe_load((ROOT / "compose.yaml").read_text())
    services = document["services"]
    assert "certs" in document["volumes"]
    # The one-shot certs service: writes the volume once, and is never restarted after it succeeds.
    certs = services["certs"]
    assert certs["restart"] == "no" and "certs:/certs" in certs["volumes"]
    script = certs["entrypoint"] + certs["command"]
    assert script[:2] == ["sh", "-c"] and "routemesh certs --out" in script[2]
    assert f"if [ -f /certs/{CA_CERT} ]" in script[2], "the certs service must keep existing certificates"
    assert script[2].rstrip().endswith(f"/certs/{CA_CERT}"), "ca.pem last: its presence means the rest is there"
    for name in SERVICES:
        service = services[name]
        assert name in IDENTITIES
        env = service["environment"]
        # The identity is the compose service name, which `routemesh certs` always puts in the certificate.
        assert (env[ENV_CERT], env[ENV_KEY], env[ENV_CA]) == (
            f"/certs/{name}.pem", f"/certs/{name}-key.pem", f"/certs/{CA_CERT}"), name
        # Only its own directory of the volume: no service holds another's key, the admin's or the pepper.
        mounts = [v for v in service["volumes"] if isinstance(v, dict) and v.get("source") == "certs"]
        assert mounts == [{"type": "volume", "source": "certs", "target": "/certs", "read_only": True,
                           "volume": {"subpath": name}}], name
        assert f"cp /tmp/mesh/$$id.pem /tmp/mesh/$$id-key.pem /tmp/mesh/{CA_CERT} /certs/$$id/" in script[2]
        assert name in script[2].split("for id in ", 1)[1].split(";", 1)[0], f"{name}: no directory of its own"
        pepper = "ROUTEMESH_KEY_PEPPER_FILE" in env
        assert pepper == (name in ("control", "router")), f"{name}: the pepper is for control and the router only"
        assert service["depends_on"]["certs"] == {"condition": "service_completed_successfully"}, name
        assert service.get("user") is None, f"{name}: the keys belong to the image's user"
        # Every address a service dials is a TLS service's own name, so its certificate answers to it.
        for key, value in env.items():
            if key.startswith("ROUTEMESH_") and key.endswith("_ADDR"):
                assert value.partition(":")[0] in SERVICES, f"{name} {key}"
        if name != "gateway":  # the gateway's health check is HTTP
            port = service["command"][service["command"].index("--listen") + 1].rpartition(":")[2]
            assert service["healthcheck"]["test"] == ["CMD", "routemesh", "health", f"127.0.0.1:{port}"], name
    for name in set(services) - set(SERVICES):
        assert not {ENV_CERT, ENV_KEY, ENV_CA} & set(services[name].get("environment", {})), name


def test_compose_keeps_the_ledger_in_postgres_with_a_generated_password():
    document = yaml.safe_load((ROOT / "compose.yaml").read_text())
    services = document["services"]
    telemetry, postgres = services["telemetry"], services["postgres"]
    assert telemetry["environment"]["ROUTEMESH_LEDGER_URL"].startswith("postgresql://routemesh@postgres:5432/")
    assert telemetry["environment"]["PGPASSFILE"] == "/certs/pgpass"  # in telemetry's own certs directory
    assert telemetry["depends_on"]["postgres"] == {"condition": "service_healthy"}
    assert postgres["environment"]["POSTGRES_PASSWORD_FILE"].startswith("/run/ledger/")
    assert "POSTGRES_PASSWORD" not in postgres["environment"], "no password in the file"
    script = services["certs"]["command"][0]
    assert "> /certs/telemetry/pgpass" in script and "chmod 600 /certs/telemetry/pgpass" in script
    assert "ledger" in document["volumes"]


def test_every_package_is_listed_in_pyproject():
    import tomllib

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {
        "routemesh." + ".".join(p.parent.relative_to(ROOT / "services/routemesh").parts)
        for p in (ROOT / "services/routemesh").rglob("__init__.py")
    }
    found = {name.rstrip(".") for name in found}
    assert found - {"routemesh.client"} <= listed, f"add to pyproject: {sorted(found - listed)}"


def test_the_consoles_page_is_package_data():
    """A non-editable install has the console's HTML, script and style (gateway/console/static)."""
    import fnmatch
    import tomllib

    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    patterns = data.get("routemesh.gateway.console", [])
    folder = ROOT / "services/routemesh/gateway/console"
    files = [p.relative_to(folder).as_posix() for p in (folder / "static").rglob("*") if p.is_file()]
    assert files, "the console's static folder is empty"
    missing = [f for f in files if not any(fnmatch.fnmatch(f, pattern) for pattern in patterns)]
    assert not missing, f"add to [tool.setuptools.package-data] routemesh.gateway.console: {missing}"


def test_ruff_is_clean():
    ruff = shutil.which("ruff") or str(pathlib.Path(sys.executable).parent / "ruff")
    result = subprocess.run([ruff, "check", "--output-format", "concise", "services", "clients", "tests"],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_error_reason_in_the_code_is_documented_in_the_proto():
    import re

    from routemesh.v1 import common_pb2

    documented = {name.removeprefix("ERROR_REASON_") for name in common_pb2.ErrorReason.keys()}
    used = set()
    for path in (ROOT / "services/routemesh").rglob("*.py"):
        if "/v1/" in str(path):
            continue
        used |= set(re.findall(r'reason ?= ?"([A-Z_]+)"', path.read_text()))
    assert used, "no reasons found: the pattern is wrong"
    assert used <= documented, f"add to ErrorReason in protos/routemesh/v1/common.proto: {sorted(used - documented)}"
