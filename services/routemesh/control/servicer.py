"""ControlPlaneService over gRPC: serves, streams and applies the registry's policy."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import grpc

from routemesh.common.admin import ADMIN_ACTOR
from routemesh.common.errors import InvalidRequest, NotFound, NotReady
from routemesh.common.policy import PolicyError
from routemesh.common.tls import peer_identity
from routemesh.control.keys_api import KeysApi
from routemesh.control.registry import PolicyRegistry, PolicyVersionRecord
from routemesh.v1 import control_pb2, control_pb2_grpc

log = logging.getLogger(__name__)

API_SOURCE = "api"
DEFAULT_CHANGES = 50


def policy_message(record: PolicyVersionRecord, public: bool = False) -> control_pb2.Policy:
    """The wire form of a policy version: as the data plane needs it, or (`public`) as an operator reads it."""
    return control_pb2.Policy(
        version=record.version,
        digest=record.digest,
        policy_json=record.public_json if public else record.policy_json,
        source=record.source,
        created_at_ms=record.created_at_ms,
    )


def _actor(context: grpc.aio.ServicerContext) -> str:
    """Who made a change, for the audit log: the admin key it came with, else the certificate, else the address."""
    return ADMIN_ACTOR.get() or peer_identity(context) or context.peer()


def invalid_policy(exc: PolicyError) -> InvalidRequest:
    """The INVALID_ARGUMENT error for a policy document, one BadRequest field violation per problem."""
    count = len(exc.violations)
    # A problem with no field path is about the document as a whole, i.e. the request field.
    violations = [(field or "policy_yaml", message) for field, message in exc.violations]
    return InvalidRequest(f"invalid policy: {count} problem(s)", field_violations=violations)


class ControlPlaneServicer(control_pb2_grpc.ControlPlaneServiceServicer):
    """GetPolicy, WatchPolicy and ApplyPolicy over one PolicyRegistry."""

    def __init__(self, registry: PolicyRegistry, keys: KeysApi | None = None):
        self.registry = registry
        self.keys = keys or KeysApi(None)
        self._stopping = asyncio.Event()
        self.open_watches = 0

    def stop(self) -> None:
        """End every open watch stream now (later ones end after sending the current policy); for shutdown."""
        self._stopping.set()

    async def GetPolicy(
        self, request: control_pb2.GetPolicyRequest, context: grpc.aio.ServicerContext
    ) -> control_pb2.GetPolicyResponse:
        if request.version < 0:
            raise InvalidRequest("version must not be negative",
                                 field_violations=[("version", f"got {request.version}; 0 means the policy in force")])
        record = self._current() if request.version == 0 else self.registry.version(request.version)
        if record is None:
            kept = self.registry.history()
            held = f"versions {kept[0].version} to {kept[-1].version}" if kept else "no version"
            raise NotFound(f"policy version {request.version} is not kept here: control keeps the last "
                           f"{self.registry.history_size} versions ({held} now)",
                           field_violations=[("version", "not kept")])
        return control_pb2.GetPolicyResponse(policy=policy_message(record, public=True))

    async def WatchPolicy(
        self, request: control_pb2.WatchPolicyRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[control_pb2.WatchPolicyResponse]:
        current = self._current()
        watcher = request.watcher or context.peer()
        self.open_watches += 1
        log.info("policy watch opened by %s (knows version %d, current %d)", watcher, request.known_version,
                 current.version)
        try:
            # Headers now, so the watcher knows the stream is up even when it already has the current version.
            await context.send_initial_metadata(())
            if (current.version, current.digest) != (request.known_version, request.known_digest):
                yield control_pb2.WatchPolicyResponse(policy=policy_message(current))
            sent = current.version
            while True:
                record = await self._next_version(sent)
                if record is None:
                    return
                yield control_pb2.WatchPolicyResponse(policy=policy_message(record))
                sent = record.version
        finally:
            self.open_watches -= 1
            log.info("policy watch by %s closed", watcher)

    async def ApplyPolicy(
        self, request: control_pb2.ApplyPolicyRequest, context: grpc.aio.ServicerContext
    ) -> control_pb2.ApplyPolicyResponse:
        if not request.policy_yaml.strip():
            raise InvalidRequest(
                "policy_yaml is empty",
                field_violations=[("policy_yaml", "must be a policy document (YAML or JSON)")],
            )
        try:
            if request.dry_run:
                record, changed = self.registry.dry_run(request.policy_yaml, API_SOURCE)
            else:
                record, changed = self.registry.load(request.policy_yaml, API_SOURCE, _actor(context))
        except PolicyError as exc:
            log.warning("ApplyPolicy%s rejected: %s", " (dry run)" if request.dry_run else "", exc)
            raise invalid_policy(exc) from None
        return control_pb2.ApplyPolicyResponse(policy=policy_message(record, public=True), changed=changed)

    async def ListPolicyChanges(
        self, request: control_pb2.ListPolicyChangesRequest, context: grpc.aio.ServicerContext
    ) -> control_pb2.ListPolicyChangesResponse:
        if request.limit < 0:
            raise InvalidRequest("limit must not be negative", field_violations=[("limit", f"got {request.limit}")])
        entries = self.registry.audit.newest(request.limit or DEFAULT_CHANGES)
        return control_pb2.ListPolicyChangesResponse(changes=[
            control_pb2.PolicyChange(at_ms=e.at_ms, actor=e.actor, action=e.action, version=e.version, digest=e.digest,
                                     summary=e.summary) for e in entries])

    async def CreateKey(self, request: control_pb2.CreateKeyRequest,
                        context: grpc.aio.ServicerContext) -> control_pb2.CreateKeyResponse:
        response = await self.keys.create(request)
        self._audit_key(context, "key created", response.key)
        return response

    async def ListKeys(self, request: control_pb2.ListKeysRequest,
                       context: grpc.aio.ServicerContext) -> control_pb2.ListKeysResponse:
        return await self.keys.list()

    async def RevokeKey(self, request: control_pb2.RevokeKeyRequest,
                        context: grpc.aio.ServicerContext) -> control_pb2.RevokeKeyResponse:
        response = await self.keys.revoke(request.key_id)
        self._audit_key(context, "key revoked", response.key)
        return response

    async def RotateKey(self, request: control_pb2.RotateKeyRequest,
                        context: grpc.aio.ServicerContext) -> control_pb2.RotateKeyResponse:
        response = await self.keys.rotate(request.key_id)
        self._audit_key(context, "key rotated", response.key)
        return response

    def _audit_key(self, context: grpc.aio.ServicerContext, action: str, key: control_pb2.ApiKey) -> None:
        current = self.registry.current
        self.registry.audit.record(_actor(context), action,
                                   current.version if current else 0, "",
                                   f"key {key.key_id} ({key.name or 'unnamed'}) of tenant {key.tenant}, role {key.role}")

    def _current(self) -> PolicyVersionRecord:
        current = self.registry.current
        if current is None:
            raise NotReady("the control plane has not loaded a policy yet")
        return current

    async def _next_version(self, after: int) -> PolicyVersionRecord | None:
        """The next version after `after`, or None once the servicer is stopping."""
        if self._stopping.is_set():
            return None
        next_version = asyncio.ensure_future(self.registry.wait_for_version_after(after))
        stopping = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait((next_version, stopping), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in (next_version, stopping):
                if not waiter.done():
                    waiter.cancel()
        if next_version.done() and not next_version.cancelled():
            return next_version.result()
        return None
