"""The policy audit log: who changed the policy, when, to which version, and what changed."""

from __future__ import annotations

import json
import logging
import time
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from routemesh.common.policy import Policy

log = logging.getLogger(__name__)
DEFAULT_KEPT = 500
APPLIED, REFUSED = "applied", "refused"
# Sections whose entries are named (a diff lists the names); the rest are compared whole.
_NAMED = ("providers", "models", "routes", "tenants")
_WHOLE = ("defaults", "health", "request_keys", "budgets", "quality_predictor", "alerts")


@dataclass(frozen=True)
class AuditEntry:
    """One policy change as the audit log keeps it (the PolicyChange message)."""

    at_ms: int
    actor: str
    action: str
    version: int
    digest: str
    summary: str


def summarize_change(before: Policy | None, after: Policy) -> str:
    """What changed between two policies, by section: "models: +a, -b, ~c; quality_predictor changed"."""
    if before is None:
        return "first version"
    old, new = before.model_dump(mode="json"), after.model_dump(mode="json")
    parts = []
    for section in _NAMED:
        a, b = old.get(section) or {}, new.get(section) or {}
        names = [f"+{n}" for n in sorted(set(b) - set(a))] + [f"-{n}" for n in sorted(set(a) - set(b))]
        names += [f"~{n}" for n in sorted(set(a) & set(b)) if a[n] != b[n]]
        if names:
            parts.append(f"{section}: {', '.join(names)}")
    parts += [f"{section} changed" for section in _WHOLE if old.get(section) != new.get(section)]
    return "; ".join(parts) or "no change"


class AuditLog:
    """Entries in memory (the newest `kept`) and, when a path is given, appended to it as JSON lines.

    The file is the durable record (ship it with the other logs); a write that fails is logged, and the
    change it records still happens: the policy is the control plane's job, the file an account of it.
    """

    def __init__(self, path: Path | None = None, kept: int = DEFAULT_KEPT) -> None:
        self.path = path
        self._entries: deque[AuditEntry] = deque(maxlen=kept)

    def record(self, actor: str, action: str, version: int, digest: str, summary: str) -> AuditEntry:
        entry = AuditEntry(int(time.time() * 1000), actor or "unknown", action, version, digest, summary)
        self._entries.append(entry)
        log.info("policy %s by %s: version %d %s (%s)", action, entry.actor, version, digest[:12], summary)
        if self.path is not None:
            try:
                with self.path.open("a", encoding="utf-8") as handle:
                    handle.write(json.dumps(asdict(entry), sort_keys=True) + "\n")
            except OSError as exc:
                log.error("cannot append to the policy audit log %s: %s", self.path, exc.strerror or exc)
        return entry

    def newest(self, limit: int) -> list[AuditEntry]:
        """The newest `limit` entries, newest first."""
        return list(reversed(self._entries))[:limit]

    def as_dicts(self, limit: int) -> list[dict[str, Any]]:
        return [asdict(e) for e in self.newest(limit)]
