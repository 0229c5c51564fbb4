"""protos/buf.gen.yaml: a buf v2 template generating Go, Java and TypeScript stubs with remote plugins."""

from __future__ import annotations

import pathlib
import shutil
import subprocess
import sys

import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "protos" / "buf.gen.yaml"

# Which remote plugins generate each language's messages and gRPC stubs.
EXPECTED = {
    "go": {"buf.build/protocolbuffers/go", "buf.build/grpc/go"},
    "java": {"buf.build/protocolbuffers/java", "buf.build/grpc/java"},
    "ts": {"buf.build/community/stephenh-ts-proto"},
}


def _plugins() -> list[dict]:
    document = yaml.safe_load(TEMPLATE.read_text())
    assert document["version"] == "v2"
    assert document["inputs"] == [{"directory": "."}]
    return document["plugins"]


def test_template_lists_pinned_remote_plugins_for_go_java_and_typescript():
    by_language: dict[str, set[str]] = {}
    for plugin in _plugins():
        name, _, version = plugin["remote"].partition(":")
        assert version.startswith("v"), f"pin a version of {name}: unpinned plugins change the output"
        assert plugin["out"].startswith("../gen/"), plugin
        by_language.setdefault(plugin["out"].removeprefix("../gen/"), set()).add(name)
    assert by_language == EXPECTED


def test_go_plugins_share_an_output_and_source_relative_paths():
    go = [p for p in _plugins() if p["out"] == "../gen/go"]
    assert {p["opt"] for p in go} == {"paths=source_relative"}


def test_ts_proto_emits_grpc_js_clients():
    (ts,) = [p for p in _plugins() if p["out"] == "../gen/ts"]
    assert "outputServices=grpc-js" in ts["opt"]


def test_buf_accepts_the_template(tmp_path):
    """buf decodes and checks the template before it contacts buf.build, so offline the only error
    left is the unreachable remote; with network access the stubs are generated (in a copy)."""
    buf = shutil.which("buf") or str(pathlib.Path(sys.executable).parent / "buf")
    if not pathlib.Path(buf).exists():
        pytest.fail("buf not installed: pip install -e '.[test]' installs buf-bin")
    shutil.copytree(ROOT / "protos", tmp_path / "protos")
    result = subprocess.run([buf, "generate"], cwd=tmp_path / "protos", capture_output=True, text=True, timeout=120)
    if result.returncode == 0:
        assert {p.name for p in (tmp_path / "gen").iterdir()} == set(EXPECTED)
    else:
        assert "remote is unavailable" in result.stderr, result.stderr
