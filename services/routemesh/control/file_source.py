"""Feeds the registry from a policy file (or the built-in default), reloading it when it changes."""

from __future__ import annotations

import asyncio
import hashlib
import logging

from routemesh.common.policy import PolicyError, load_default_policy_text
from routemesh.common.tasks import cancel_and_wait
from routemesh.control.registry import PolicyRegistry, PolicyVersionRecord

log = logging.getLogger(__name__)

BUILTIN_SOURCE = "builtin:default.yaml"


class PolicyStartupError(SystemExit):
    """The policy cannot be loaded at start-up; as a SystemExit it ends the process non-zero, no traceback."""


def format_violations(violations: list[tuple[str, str]]) -> str:
    """One indented line per violation, for logs and start-up errors."""
    return "\n".join(f"  - {field or '(document)'}: {message}" for field, message in violations)


class PolicyFileSource:
    """Loads `path` into the registry at start and polls it every `interval_s`; no path means the default."""

    def __init__(self, path: str | None, registry: PolicyRegistry, interval_s: float = 1.0):
        self.path = path or None
        self.registry = registry
        self.interval_s = interval_s
        self._content_hash: str | None = None
        self._read_error_logged = False
        self._task: asyncio.Task[None] | None = None

    @property
    def source(self) -> str:
        """The name versions loaded from here carry."""
        return self.path or BUILTIN_SOURCE

    def load_initial(self) -> PolicyVersionRecord:
        """Load the policy once; raise PolicyStartupError naming every violation when it is unusable."""
        if self.path is None:
            data = load_default_policy_text().encode()
        else:
            try:
                data = self._read()
            except OSError as exc:
                reason = exc.strerror or exc
                raise PolicyStartupError(f"cannot read policy file {self.path}: {reason}") from None
            self._content_hash = _hash(data)
        try:
            record, _ = self.registry.load(_decode(data), self.source, f"file:{self.source}")
        except PolicyError as exc:
            count = len(exc.violations)
            raise PolicyStartupError(
                f"policy {self.source} is not valid ({count} problem{'s' if count != 1 else ''}):\n"
                f"{format_violations(exc.violations)}"
            ) from None
        return record

    async def start(self) -> None:
        """Load the policy if not yet loaded, then poll the file (the built-in default never changes)."""
        if self.registry.current is None:
            self.load_initial()
        if self.path is not None and self._task is None:
            self._task = asyncio.create_task(self._poll(), name="policy-file-poll")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    def check_once(self) -> PolicyVersionRecord | None:
        """Read the file once; apply it if its content changed and is valid, returning the new version."""
        if self.path is None:
            return None
        try:
            # The content hash alone decides: mtime can be too coarse to see two quick same-size edits,
            # and a policy file is small enough to read every poll.
            data = self._read()
        except OSError as exc:
            # Editors and ConfigMap updates briefly remove or replace the file; keep serving and retry.
            if not self._read_error_logged:
                log.warning("cannot read policy file %s (%s); keeping version %s", self.path,
                            exc.strerror or exc, self._current_version())
                self._read_error_logged = True
            return None
        self._read_error_logged = False
        content_hash = _hash(data)
        if content_hash == self._content_hash:
            return None
        # Remembered even when invalid, so a bad edit is reported once and retried only after the next edit.
        self._content_hash = content_hash
        try:
            record, changed = self.registry.load(_decode(data), self.source, f"file:{self.source}")
        except PolicyError as exc:
            log.error("policy file %s is not valid (%d problem(s)); keeping version %s",
                      self.path, len(exc.violations), self._current_version())
            for field, message in exc.violations:
                log.error("policy file %s: %s: %s", self.path, field or "(document)", message)
            return None
        return record if changed else None

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                self.check_once()
            except Exception:  # noqa: BLE001 - a polling bug must not stop reloads for good
                log.exception("policy file %s: unexpected error while checking for changes", self.path)

    def _read(self) -> bytes:
        assert self.path is not None
        with open(self.path, "rb") as handle:
            return handle.read()

    def _current_version(self) -> str:
        current = self.registry.current
        return str(current.version) if current else "none"


def _hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _decode(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PolicyError([("", f"not UTF-8 text: byte {exc.start} cannot be decoded")]) from None
