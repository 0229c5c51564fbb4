"""Feedback on answers: validated against the ledger (the decision must exist, and be the caller's tenant's),
stored once per decision."""

from __future__ import annotations

import asyncio
import json
import math
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

from routemesh.common.errors import FeedbackExists, InvalidRequest, LedgerNotConfigured, LedgerUnavailable, NotFound
from routemesh.telemetry.ledger.rows import NAMES
from routemesh.telemetry.ledger.writer import LedgerWriter
from routemesh.v1 import common_pb2

GATEWAY_ID_PREFIX = "chatcmpl-"
MAX_LABEL_CHARS = 64
MAX_COMMENT_CHARS = 2000
_LABEL = re.compile(r"^[A-Za-z0-9._:-]*$")
_DECISION_ID = re.compile(r"^[0-9a-f]{32}$")
_TENANT, _SERVING, _CHOSEN = NAMES.index("tenant"), NAMES.index("serving_model"), NAMES.index("chosen_model")
_FEATURES = NAMES.index("features")
DB_TIMEOUT_S = 2.0
# Feedback may overtake its own request's summary (routers report in batches every 50 ms): an id not found yet
# is looked for again for this long before it is NOT_FOUND.
ARRIVAL_WAIT_S = 1.0


def checked(feedback: common_pb2.Feedback) -> tuple[str, float]:
    """(decision id, score) of a valid feedback; InvalidRequest naming every bad field otherwise."""
    problems: list[tuple[str, str]] = []
    decision_id = feedback.decision_id.strip().removeprefix(GATEWAY_ID_PREFIX)
    if not _DECISION_ID.match(decision_id):
        problems.append(("feedback.decision_id", "must be a decision id (32 hex digits) or the gateway's "
                                                 "response id chatcmpl-<decision id>"))
    has_score, thumbs = feedback.HasField("score"), feedback.thumbs
    score = 0.0
    if has_score == (thumbs != common_pb2.THUMBS_UNSPECIFIED):
        problems.append(("feedback.score", "give either a score in [0, 1] or thumbs up or down"))
    elif has_score:
        score = feedback.score
        if not (math.isfinite(score) and 0.0 <= score <= 1.0):
            problems.append(("feedback.score", f"must be in [0, 1], got {score}"))
    elif thumbs in (common_pb2.THUMBS_UP, common_pb2.THUMBS_DOWN):
        score = 1.0 if thumbs == common_pb2.THUMBS_UP else 0.0
    else:
        problems.append(("feedback.thumbs", f"unknown value {thumbs}"))
    if len(feedback.label) > MAX_LABEL_CHARS or not _LABEL.match(feedback.label):
        problems.append(("feedback.label", f"at most {MAX_LABEL_CHARS} characters of [A-Za-z0-9._:-]"))
    if len(feedback.comment) > MAX_COMMENT_CHARS:
        problems.append(("feedback.comment", f"at most {MAX_COMMENT_CHARS:,} characters"))
    if problems:
        raise InvalidRequest("invalid feedback", field_violations=problems)
    return decision_id, score


def task_name(task_type: int) -> str:
    """The policy's name of a TaskType ("code" for TASK_TYPE_CODE; the number for one this build lacks)."""
    try:
        return common_pb2.TaskType.Name(task_type).removeprefix("TASK_TYPE_").lower()
    except ValueError:
        return str(task_type)


def _task_of(features: Any) -> str:
    """The task type in a row's features (JSON text, or a dict from a JSONB column)."""
    document = json.loads(features) if isinstance(features, str) else features or {}
    value = document.get("task_type", "TASK_TYPE_UNSPECIFIED") if isinstance(document, dict) else ""
    return str(value).removeprefix("TASK_TYPE_").lower()


class FeedbackBook:
    """Records feedback in the ledger the writer writes to, and passes each score on as a quality signal."""

    def __init__(self, writer: LedgerWriter | None,
                 signal: Callable[[str, str, float], Awaitable[None]] | None = None):
        self.writer = writer
        self.signal = signal

    async def record(self, feedback: common_pb2.Feedback, tenant: str = "") -> common_pb2.FeedbackReceipt:
        decision_id, score = checked(feedback)
        writer = self.writer
        if writer is None:
            raise LedgerNotConfigured("feedback needs the outcome ledger: start telemetry with --ledger-url")
        if not writer.opened:
            raise LedgerUnavailable("the ledger's database has not answered yet; retry later", retry_after_s=1.0)
        facts = await self._facts(writer, decision_id)
        waited_until = time.monotonic() + ARRIVAL_WAIT_S
        while facts is None and time.monotonic() < waited_until:
            await asyncio.sleep(0.05)
            facts = await self._facts(writer, decision_id)
        # Another tenant's request is as unknown as a made-up id: its existence is not the caller's to learn.
        if facts is None or (tenant and facts["tenant"] != tenant):
            raise NotFound(f"no request with decision id {decision_id} in the ledger",
                           reason="UNKNOWN_DECISION", field_violations=[("feedback.decision_id", "not found")])
        now_ms = int(time.time() * 1000)
        try:
            added = await asyncio.wait_for(writer.store.add_feedback(
                decision_id, score, feedback.label, feedback.comment, "caller", now_ms), DB_TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001 - the database's trouble, told as such
            raise LedgerUnavailable(f"the ledger's database did not take the feedback ({type(exc).__name__}); "
                                    "retry later", retry_after_s=1.0) from None
        if not added:
            raise FeedbackExists(f"decision {decision_id} already has feedback",
                                 field_violations=[("feedback.decision_id", "already has feedback")])
        model = facts["serving_model"] or facts["chosen_model"]
        if self.signal is not None and facts["serving_model"]:
            await self.signal(model, _task_of(facts.get("features")), score)
        return common_pb2.FeedbackReceipt(decision_id=decision_id, score=score, recorded_at_ms=now_ms, model=model)

    @staticmethod
    async def _facts(writer: LedgerWriter, decision_id: str) -> dict[str, Any] | None:
        """What feedback needs of the decision's row: from the database, else from the writer's buffer (feedback
        can arrive before its row is written: rows are batched); None when neither has it."""
        try:
            facts = await asyncio.wait_for(writer.store.request_facts(decision_id), DB_TIMEOUT_S)
            database_down = False
        except Exception:  # noqa: BLE001 - the database's trouble: the buffer may still answer
            facts, database_down = None, True
        if facts is not None:
            return facts
        pending = writer.pending(decision_id)
        if pending is not None:
            return {"tenant": pending[_TENANT], "serving_model": pending[_SERVING], "chosen_model": pending[_CHOSEN],
                    "features": pending[_FEATURES]}
        if database_down:
            raise LedgerUnavailable("the ledger's database does not answer; retry later", retry_after_s=1.0)
        return None
