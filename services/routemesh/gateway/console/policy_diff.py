"""The policy's change against the version before it, as the lines of a unified diff of the YAML documents."""

from __future__ import annotations

import difflib
import json
from typing import Any

import yaml

# A diff longer than this is cut (a whole new policy is thousands of lines of no use on one screen).
MAX_LINES = 1500


def policy_yaml(policy_json: str) -> str:
    """A policy's public JSON as the YAML people write it: keys sorted, block style, nothing expanded."""
    return yaml.safe_dump(json.loads(policy_json), sort_keys=True, default_flow_style=False, allow_unicode=True,
                          width=120)


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def yaml_path(lines: list[str], index: int) -> str:
    """The keys enclosing line `index` of a block-style YAML document, e.g. "models > fast-cheap > pricing"."""
    if not lines:
        return ""
    index = min(index, len(lines) - 1)
    keys: list[str] = []
    depth = _indent(lines[index])
    for line in reversed(lines[:index]):
        stripped = line.strip()
        if stripped and _indent(line) < depth and not stripped.startswith("- ") and ":" in stripped:
            keys.append(stripped.partition(":")[0])
            depth = _indent(line)
            if depth == 0:
                break
    return " > ".join(reversed(keys))


def line_diff(before: str, after: str, context: int = 3) -> list[dict[str, Any]]:
    """[{"op": "+" | "-" | " " | "@", "text"}...] of a unified diff; each hunk opens with an "@" line naming
    where it is ("line 71, models > fast-cheap > pricing"). Empty when the texts are equal."""
    a, b = before.splitlines(), after.splitlines()
    lines: list[dict[str, Any]] = []
    for group in difflib.SequenceMatcher(None, a, b, autojunk=False).get_grouped_opcodes(context):
        tag, i1, _, j1, _ = next(op for op in group if op[0] != "equal")
        where = yaml_path(a, i1) if tag == "delete" else yaml_path(b, j1)
        lines.append({"op": "@", "text": f"line {(i1 if tag == 'delete' else j1) + 1}" + (f", {where}" if where else "")})
        for tag, i1, i2, j1, j2 in group:
            if tag == "equal":
                lines += [{"op": " ", "text": line} for line in a[i1:i2]]
            if tag in ("replace", "delete"):
                lines += [{"op": "-", "text": line} for line in a[i1:i2]]
            if tag in ("replace", "insert"):
                lines += [{"op": "+", "text": line} for line in b[j1:j2]]
        if len(lines) >= MAX_LINES:
            lines = [*lines[:MAX_LINES], {"op": "@", "text": f"... cut at {MAX_LINES} lines"}]
            break
    return lines


def policy_diff(before_json: str, after_json: str, before_version: int, after_version: int) -> dict[str, Any]:
    """The change from one version to the next: diff lines and how many lines each side added or removed."""
    lines = line_diff(policy_yaml(before_json), policy_yaml(after_json))
    return {"from_version": before_version, "to_version": after_version, "lines": lines,
            "added": sum(line["op"] == "+" for line in lines), "removed": sum(line["op"] == "-" for line in lines)}
