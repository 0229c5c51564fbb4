"""The key-management RPCs of the control plane: KeyStore records to and from the wire."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from routemesh.common.errors import NotReady
from routemesh.common.keys import KeyRecord, KeySpec, KeyStore, KeyUsage, KeyUsageSummary
from routemesh.v1 import control_pb2


def usage_message(usage: KeyUsage) -> control_pb2.KeyUsage:
    return control_pb2.KeyUsage(requests=usage.requests, errors=usage.errors, input_tokens=usage.input_tokens,
                                output_tokens=usage.output_tokens, cost_usd=usage.cost_usd)


def key_message(record: KeyRecord, usage: KeyUsageSummary | None = None) -> control_pb2.ApiKey:
    spec = record.spec
    message = control_pb2.ApiKey(
        key_id=record.key_id, name=spec.name, tenant=spec.tenant, project=spec.project, role=spec.role,
        allowed_models=spec.allowed_models, allowed_routes=spec.allowed_routes, rpm=spec.rpm, tpm=spec.tpm,
        budget_usd=spec.budget_usd, budget_period=spec.budget_period, created_at_ms=record.created_at_ms,
        expires_at_ms=record.expires_at_ms, revoked_at_ms=record.revoked_at_ms, rotated_at_ms=record.rotated_at_ms,
        state=record.state(int(time.time() * 1000)),
    )
    if usage is not None:
        message.today.CopyFrom(usage_message(usage.today))
        message.this_month.CopyFrom(usage_message(usage.this_month))
        message.budget_spent_usd = usage.budget_spent_usd(spec.budget_period)
    return message


def spec_of(request: control_pb2.CreateKeyRequest) -> KeySpec:
    return KeySpec(
        tenant=request.tenant, name=request.name, project=request.project, role=request.role or "user",
        allowed_models=tuple(request.allowed_models), allowed_routes=tuple(request.allowed_routes),
        rpm=request.rpm, tpm=request.tpm, budget_usd=request.budget_usd,
        budget_period=request.budget_period or "month", expires_in_s=request.expires_in_s,
    )


class KeysApi:
    """CreateKey, ListKeys, RevokeKey, RotateKey over a KeyStore (None: keys are not configured here)."""

    def __init__(self, store: KeyStore | None):
        self.store = store

    def _store(self) -> KeyStore:
        if self.store is None:
            raise NotReady("API keys are not configured on this control plane: start it with --redis-url and "
                           "ROUTEMESH_KEY_PEPPER", reason="KEYS_NOT_CONFIGURED")
        return self.store

    async def create(self, request: control_pb2.CreateKeyRequest) -> control_pb2.CreateKeyResponse:
        token, record = await self._store().create(spec_of(request))
        return control_pb2.CreateKeyResponse(key=key_message(record), secret=token)

    async def list(self) -> control_pb2.ListKeysResponse:
        """Every key with its usage today and this month (UTC), as the routers recorded it."""
        store = self._store()
        records = await store.list()
        today = datetime.now(UTC).date()
        usage = await store.usage([r.key_id for r in records], today)
        return control_pb2.ListKeysResponse(keys=[key_message(r, usage[r.key_id]) for r in records],
                                            usage_day=today.isoformat())

    async def revoke(self, key_id: str) -> control_pb2.RevokeKeyResponse:
        return control_pb2.RevokeKeyResponse(key=key_message(await self._store().revoke(key_id)))

    async def rotate(self, key_id: str) -> control_pb2.RotateKeyResponse:
        token, record = await self._store().rotate(key_id)
        return control_pb2.RotateKeyResponse(key=key_message(record), secret=token)
