"""The router's shape as issue 11 left it: short functions, a grpc-free pipeline, no service importing another's servicer."""

from __future__ import annotations

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "services/routemesh"
SERVICES = ("router", "classifier", "executor", "telemetry", "control", "gateway", "sim")
MAX_ROUTER_FUNCTION_LINES = 60
# Domain code of the router: it never sees a ServicerContext or a channel.
GRPC_FREE = ("router/pipeline.py", "router/request.py", "router/decision", "router/admission")


def _modules(under: str) -> list[pathlib.Path]:
    path = PACKAGE / under
    return sorted(path.rglob("*.py")) if path.is_dir() else [path]


def _imports(path: pathlib.Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_no_function_in_the_router_is_longer_than_60_lines():
    long = []
    for path in _modules("router"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_ROUTER_FUNCTION_LINES:
                    long.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name} ({length} lines)")
    assert not long, "split these: " + "; ".join(long)


def test_no_service_imports_another_services_servicer():
    crossing = []
    for service in SERVICES:
        for path in _modules(service):
            for name in _imports(path):
                parts = name.split(".")
                if len(parts) >= 3 and parts[0] == "routemesh" and parts[1] in SERVICES and parts[1] != service \
                        and parts[2] == "servicer":
                    crossing.append(f"{path.relative_to(PACKAGE)} imports {name}")
    assert not crossing, crossing


def test_the_router_pipeline_and_domain_code_do_not_import_grpc():
    offending = [f"{path.relative_to(PACKAGE)} imports {name}"
                 for under in GRPC_FREE for path in _modules(under) for name in _imports(path)
                 if name == "grpc" or name.startswith(("grpc.", "grpc_"))]
    assert not offending, offending
