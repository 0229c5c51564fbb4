"""The control plane's policy registry and file source: versioning, history, hot reload, last good kept."""

from __future__ import annotations

import argparse
import asyncio
import logging
import time
from pathlib import Path

import pytest

from routemesh.common.policy import PolicyError, load_default_policy_text
from routemesh.control.file_source import BUILTIN_SOURCE, PolicyFileSource, PolicyStartupError
from routemesh.control.main import add_arguments, build
from routemesh.control.registry import PolicyRegistry, PolicyVersionRecord

DEFAULT_TEXT = load_default_policy_text()
CHEAPER_TEXT = DEFAULT_TEXT.replace("input_per_mtok: 0.10", "input_per_mtok: 0.08", 1)
PRICIER_TEXT = DEFAULT_TEXT.replace("input_per_mtok: 0.10", "input_per_mtok: 0.12", 1)
BROKEN_TEXT = DEFAULT_TEXT.replace(
    "provider: sim\n    upstream_model: sim-fast", "provider: nope\n    upstream_model: sim-fast"
)
assert len({DEFAULT_TEXT, CHEAPER_TEXT, PRICIER_TEXT, BROKEN_TEXT}) == 4


async def wait_for_version(
    registry: PolicyRegistry, version: int, timeout_s: float = 1.5
) -> PolicyVersionRecord:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if registry.current and registry.current.version >= version:
            return registry.current
        await asyncio.sleep(0.02)
    raise AssertionError(f"version {version} not reached in {timeout_s}s; current {registry.current}")


def test_first_load_is_version_1() -> None:
    registry = PolicyRegistry()
    assert registry.current is None
    record, changed = registry.load(DEFAULT_TEXT, "test")
    assert (record.version, changed, record.source) == (1, True, "test")
    assert len(record.digest) == 64
    assert registry.current is record


def test_same_content_makes_no_new_version() -> None:
    registry = PolicyRegistry()
    first, _ = registry.load(DEFAULT_TEXT, "a")
    reformatted = DEFAULT_TEXT + "\n# only a comment differs\n"
    again, changed = registry.load(reformatted, "b")
    assert changed is False
    assert again is first
    assert [r.version for r in registry.history()] == [1]


def test_changes_get_increasing_versions_and_bounded_history() -> None:
    registry = PolicyRegistry(history_size=3)
    texts = [DEFAULT_TEXT, CHEAPER_TEXT, PRICIER_TEXT, DEFAULT_TEXT, CHEAPER_TEXT]
    versions = [registry.load(text, f"step{i}")[0].version for i, text in enumerate(texts)]
    assert versions == [1, 2, 3, 4, 5]
    assert [(r.version, r.source) for r in registry.history()] == [(3, "step2"), (4, "step3"), (5, "step4")]


def test_invalid_load_keeps_the_current_policy() -> None:
    registry = PolicyRegistry()
    good, _ = registry.load(DEFAULT_TEXT, "good")
    with pytest.raises(PolicyError) as caught:
        registry.load(BROKEN_TEXT, "bad")
    expected = ("models.fast-cheap.provider", "unknown provider 'nope'; defined: ['sim']")
    assert expected in caught.value.violations
    assert registry.current is good


def test_dry_run_validates_without_applying() -> None:
    registry = PolicyRegistry()
    record, changed = registry.dry_run(DEFAULT_TEXT)
    assert (record.version, changed, registry.current) == (0, True, None)
    registry.load(DEFAULT_TEXT, "file")
    same, changed = registry.dry_run(DEFAULT_TEXT)
    assert (same.version, changed) == (0, False)
    other, changed = registry.dry_run(CHEAPER_TEXT)
    assert (other.version, changed, registry.current.version) == (0, True, 1)
    with pytest.raises(PolicyError):
        registry.dry_run(BROKEN_TEXT)


async def test_waiters_get_every_new_version_in_order() -> None:
    registry = PolicyRegistry()
    registry.load(DEFAULT_TEXT, "a")
    waiter = asyncio.create_task(registry.wait_for_version_after(1))
    await asyncio.sleep(0.01)
    assert not waiter.done()
    registry.load(CHEAPER_TEXT, "b")
    registry.load(PRICIER_TEXT, "c")
    assert (await asyncio.wait_for(waiter, 1)).version == 2
    assert (await asyncio.wait_for(registry.wait_for_version_after(2), 1)).version == 3


def test_builtin_default_when_no_path() -> None:
    registry = PolicyRegistry()
    record = PolicyFileSource(None, registry).load_initial()
    assert (record.version, record.source) == (1, BUILTIN_SOURCE)


def test_invalid_file_at_start_up_is_fatal_and_lists_every_problem(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(BROKEN_TEXT.replace("route: auto", "route: fastest", 1))
    with pytest.raises(PolicyStartupError) as caught:
        PolicyFileSource(str(path), PolicyRegistry()).load_initial()
    message = str(caught.value)
    assert isinstance(caught.value, SystemExit)
    assert "(2 problems)" in message
    assert "models.fast-cheap.provider: unknown provider 'nope'" in message
    assert "defaults.route: unknown route 'fastest'" in message


def test_missing_file_at_start_up_is_fatal(tmp_path: Path) -> None:
    with pytest.raises(PolicyStartupError, match="cannot read policy file .*missing.yaml"):
        PolicyFileSource(str(tmp_path / "missing.yaml"), PolicyRegistry()).load_initial()


def test_bad_edit_is_reported_once_and_retried_only_after_the_next_edit(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(DEFAULT_TEXT)
    registry = PolicyRegistry()
    source = PolicyFileSource(str(path), registry)
    source.load_initial()
    path.write_text(BROKEN_TEXT)
    with caplog.at_level(logging.ERROR, logger="routemesh.control.file_source"):
        assert source.check_once() is None
        assert source.check_once() is None
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 2, errors
    assert "keeping version 1" in errors[0]
    assert "models.fast-cheap.provider: unknown provider 'nope'" in errors[1]
    path.write_bytes(b"\xff\xfe not utf-8")
    assert source.check_once() is None
    path.write_text(CHEAPER_TEXT)
    assert source.check_once().version == 2


async def test_file_source_hot_reloads(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(DEFAULT_TEXT)
    registry = PolicyRegistry()
    source = PolicyFileSource(str(path), registry, interval_s=0.1)
    await source.start()
    try:
        assert registry.current.version == 1
        assert registry.current.source == str(path)
        path.write_text(CHEAPER_TEXT)
        changed = await wait_for_version(registry, 2)
        assert changed.policy.models["fast-cheap"].pricing.input_per_mtok == 0.08

        path.write_text(BROKEN_TEXT)
        await asyncio.sleep(0.35)
        assert registry.current is changed

        path.write_text(PRICIER_TEXT)
        fixed = await wait_for_version(registry, 3)
        assert fixed.policy.models["fast-cheap"].pricing.input_per_mtok == 0.12
    finally:
        await source.stop()


async def test_build_from_arguments(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(CHEAPER_TEXT)
    monkeypatch.setenv("ROUTEMESH_POLICY", str(path))
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--poll-interval-s", "0.5"])
    assert (args.policy, args.poll_interval_s) == (str(path), 0.5)
    service = await build(args)
    assert (service.name, list(service.grpc_services)) == ("control", ["routemesh.v1.ControlPlaneService"])
    assert service.ready()
    await service.on_start()
    await service.on_stop()

    path.write_text(BROKEN_TEXT)
    with pytest.raises(SystemExit):
        await build(parser.parse_args([]))
    with pytest.raises(SystemExit):
        parser.parse_args(["--poll-interval-s", "0"])
