"""The policy audit log: every applied or refused change with who, when, version, digest and what changed."""

from __future__ import annotations

import copy
import json

import pytest
import yaml
from routemesh.common.policy import PolicyError, load_default_policy_text
from routemesh.control.audit import APPLIED, REFUSED, AuditLog
from routemesh.control.registry import PolicyRegistry

DEFAULT = load_default_policy_text()


def changed(edit) -> str:
    doc = yaml.safe_load(DEFAULT)
    edit(doc)
    return yaml.safe_dump(doc, sort_keys=False)


def test_applied_and_refused_changes_are_recorded_with_actor_version_digest_and_a_diff(tmp_path) -> None:
    path = tmp_path / "audit.jsonl"
    registry = PolicyRegistry(audit=AuditLog(path))
    registry.load(DEFAULT, "builtin", "file:builtin")
    second = changed(lambda d: (d["models"].pop("flaky"), d["routes"]["cheap"].update(models=["fast-cheap"]),
                                d["models"]["strong"]["pricing"].update(input_per_mtok=2.5),
                                d["models"].update(extra=copy.deepcopy(d["models"]["balanced"]))))
    record, _ = registry.load(second, "api", "admin")
    with pytest.raises(PolicyError):
        registry.load("models: {}", "api", "127.0.0.1:5555")
    registry.load(second, "api", "admin")  # the same document again: no change, nothing recorded
    newest = registry.audit.newest(10)
    assert [(e.action, e.actor, e.version) for e in newest] == [
        (REFUSED, "127.0.0.1:5555", 2), (APPLIED, "admin", 2), (APPLIED, "file:builtin", 1)]
    assert newest[1].digest == record.digest
    assert newest[1].summary == "models: +extra, -flaky, ~strong; routes: ~cheap"
    assert newest[0].summary.endswith("problem(s)") and newest[0].digest == ""
    assert newest[2].summary == "first version"
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [line["action"] for line in lines] == [APPLIED, APPLIED, REFUSED]
    assert set(lines[0]) == {"at_ms", "actor", "action", "version", "digest", "summary"}


def test_an_unwritable_audit_file_does_not_stop_a_change(tmp_path) -> None:
    registry = PolicyRegistry(audit=AuditLog(tmp_path / "missing-folder" / "audit.jsonl"))
    record, changed_ = registry.load(DEFAULT, "builtin")
    assert changed_ and record.version == 1
    assert registry.audit.newest(1)[0].actor == "builtin"


def test_whole_sections_are_named_when_they_change() -> None:
    registry = PolicyRegistry()
    registry.load(DEFAULT, "builtin")
    registry.load(changed(lambda d: d["defaults"].update(max_tokens=1024)), "api", "admin")
    assert registry.audit.newest(1)[0].summary == "defaults changed"
