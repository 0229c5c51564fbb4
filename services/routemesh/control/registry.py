"""The versioned policy store: validates documents, numbers real changes and wakes watchers."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass

from routemesh.common.policy import Policy, PolicyError, canonical_json, digest, parse_policy, public_json
from routemesh.control.audit import APPLIED, REFUSED, AuditLog, summarize_change
from routemesh.quality.serving import policy_quality

log = logging.getLogger(__name__)

DEFAULT_HISTORY_SIZE = 20


@dataclass(frozen=True)
class PolicyVersionRecord:
    """One policy version as the control plane serves it (version 0 means "not applied": a dry run)."""

    version: int
    digest: str
    policy_json: str
    source: str
    created_at_ms: int
    policy: Policy
    # What an operator reads back (GetPolicy, ApplyPolicy): no value a ${VAR} expanded, no URL password.
    # The data plane (WatchPolicy) gets policy_json, which it needs to reach the providers.
    public_json: str = ""


class PolicyRegistry:
    """Holds the policy in force and the last `history_size` versions; versions only grow."""

    def __init__(self, history_size: int = DEFAULT_HISTORY_SIZE, audit: AuditLog | None = None):
        if history_size < 1:
            raise ValueError("history_size must be at least 1")
        # Every applied or refused load() is recorded here (dry runs are not: they change nothing).
        self.audit = audit or AuditLog()
        # load()s applied and refused since start (routemesh_policy_changes_total); an unchanged one is neither.
        self.changes: dict[str, int] = {APPLIED: 0, REFUSED: 0}
        self._history: deque[PolicyVersionRecord] = deque(maxlen=history_size)
        # Replaced on every change so each waiter wakes once per version (set() then a fresh Event).
        self._changed = asyncio.Event()

    @property
    def current(self) -> PolicyVersionRecord | None:
        """The policy in force, or None before the first load."""
        return self._history[-1] if self._history else None

    @property
    def history_size(self) -> int:
        """How many versions are kept."""
        return self._history.maxlen or 0

    def version(self, version: int) -> PolicyVersionRecord | None:
        """The kept version `version`, or None (older than the history reaches, or never made)."""
        return next((record for record in self._history if record.version == version), None)

    def history(self) -> list[PolicyVersionRecord]:
        """The retained versions, oldest first."""
        return list(self._history)

    def dry_run(self, text: str, source: str = "") -> tuple[PolicyVersionRecord, bool]:
        """Validate `text` without applying it: (record with version 0, whether it differs from current)."""
        record = self._record(text, source, version=0)
        current = self.current
        return record, current is None or current.digest != record.digest

    def load(self, text: str, source: str, actor: str = "") -> tuple[PolicyVersionRecord, bool]:
        """Validate and apply `text`; a new version only when the canonical content differs from current.

        Raises PolicyError (with every violation) and leaves the policy in force untouched when invalid.
        `actor` (who asked; the source when empty) goes into the audit log with what changed.
        """
        current = self.current
        try:
            candidate, changed = self.dry_run(text, source)
        except PolicyError as exc:
            self.changes[REFUSED] += 1
            self.audit.record(actor or source, REFUSED, current.version if current else 0, "",
                              f"{len(exc.violations)} problem(s)")
            raise
        if not changed and current is not None:
            log.info("policy from %s equals version %d; nothing to apply", source, current.version)
            return current, False
        version = current.version + 1 if current else 1
        record = PolicyVersionRecord(
            version=version,
            digest=candidate.digest,
            policy_json=candidate.policy_json,
            source=source,
            created_at_ms=candidate.created_at_ms,
            policy=candidate.policy,
            public_json=candidate.public_json,
        )
        self._history.append(record)
        self.changes[APPLIED] += 1
        self.audit.record(actor or source, APPLIED, version, record.digest,
                          summarize_change(current.policy if current else None, record.policy))
        log.info("policy version %d in force from %s (%s)", version, source, record.digest[:12])
        self._changed.set()
        self._changed = asyncio.Event()
        return record, True

    async def wait_for_version_after(self, version: int) -> PolicyVersionRecord:
        """The first retained version newer than `version`, waiting for one if there is none yet.

        Versions are handed out in order so a watcher sees each one; a watcher that fell further
        behind than the history reaches resumes at the oldest retained version.
        """
        while True:
            for record in self._history:
                if record.version > version:
                    return record
            await self._changed.wait()

    @staticmethod
    def _record(text: str, source: str, version: int) -> PolicyVersionRecord:
        templates: dict[str, str] = {}
        policy = parse_policy(text, templates=templates)
        # The quality predictor it names must load here with its digest, so a bad artifact is refused when
        # submitted; the classifier and router check again when they load it, and keep their last good one.
        policy_quality(policy)
        policy_json = canonical_json(policy)
        return PolicyVersionRecord(
            version=version,
            digest=digest(policy_json),
            policy_json=policy_json,
            source=source,
            created_at_ms=int(time.time() * 1000),
            policy=policy,
            public_json=public_json(policy, templates),
        )
