"""The data plane's copy of the policy: watched from control, compiled once per version, swapped atomically."""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from typing import Generic, TypeVar, cast

import grpc

from routemesh.common.channels import TracedChannel
from routemesh.common.policy import PolicyError, PolicyVersion, policy_from_json
from routemesh.common.watch import WatchStream
from routemesh.v1 import control_pb2, control_pb2_grpc

log = logging.getLogger(__name__)
Held = TypeVar("Held")
# Versions a holder keeps unless told otherwise (the executor keeps more: executor/policy_versions.py).
DEFAULT_KEEP = 1


class PolicyHolder(Generic[Held]):
    """Holds the policy in force, in the form its service applies; readers take `current` (no lock).

    `compile` turns each new version into that form once, when it arrives (the router's RoutingPolicy; by
    default the PolicyVersion itself). A version that does not parse or compile is rejected and the last
    good one stays. The newest `keep` versions stay reachable through `get(version, digest)`.
    """

    def __init__(self, compile: Callable[[PolicyVersion], Held] | None = None, keep: int = DEFAULT_KEEP) -> None:
        self.current: Held | None = None
        self.current_version: PolicyVersion | None = None
        self._compile = compile or cast(Callable[[PolicyVersion], Held], lambda version: version)
        self._keep = max(1, keep)
        self._versions: OrderedDict[tuple[int, str], Held] = OrderedDict()
        self._listeners: list[Callable[[Held], None]] = []
        self._changed = asyncio.Event()

    def on_change(self, listener: Callable[[Held], None]) -> None:
        """Call `listener` with every new policy (and now, if one is held)."""
        self._listeners.append(listener)
        if self.current is not None:
            listener(self.current)

    def held(self) -> list[tuple[int, str]]:
        """(version, digest) of every kept version, oldest first."""
        return list(self._versions)

    def get(self, version: int, digest: str) -> Held | None:
        """A kept version by number and digest, or None when it is not (or no longer) held."""
        return self._versions.get((version, digest))

    def apply(self, message: control_pb2.Policy) -> bool:
        """Validate, compile and swap in a pushed policy; keep the last good one when it does not validate."""
        held = self.current_version
        if held and (message.version, message.digest) == (held.version, held.digest):
            return False
        try:
            version = PolicyVersion(policy=policy_from_json(message.policy_json), version=message.version,
                                    digest=message.digest, source=message.source)
            compiled = self._compile(version)
        except (PolicyError, ValueError) as exc:
            log.error("policy version %d rejected, keeping version %s: %s", message.version,
                      held.version if held else "none", exc)
            return False
        self.current, self.current_version = compiled, version
        self._versions[(version.version, version.digest)] = compiled
        while len(self._versions) > self._keep:
            self._versions.popitem(last=False)
        log.info("policy version %d in force (%s)", message.version, message.digest[:12])
        for listener in self._listeners:
            listener(compiled)
        self._changed.set()
        self._changed = asyncio.Event()
        return True

    async def wait_for_change(self, timeout: float) -> bool:
        """Wait until a new policy arrives (for tests and start-up)."""
        try:
            await asyncio.wait_for(self._changed.wait(), timeout)
            return True
        except TimeoutError:
            return False


class PolicyWatcher:
    """Keeps a WatchPolicy stream open to control, reconnecting with backoff; never drops the held policy."""

    def __init__(self, holder: PolicyHolder, control_address: str, watcher_name: str):
        self.holder = holder
        self.address = control_address
        self.name = watcher_name
        self._watch = WatchStream(f"policy-{watcher_name}", control_address, self._open, self._apply, self._lost)

    @property
    def connected(self) -> bool:
        return self._watch.connected

    def start(self) -> None:
        self._watch.start()

    async def stop(self) -> None:
        await self._watch.stop()

    def _open(self, channel: TracedChannel) -> AsyncIterator[control_pb2.WatchPolicyResponse]:
        held = self.holder.current_version
        request = control_pb2.WatchPolicyRequest(known_version=held.version if held else 0,
                                                 known_digest=held.digest if held else "", watcher=self.name)
        return control_pb2_grpc.ControlPlaneServiceStub(channel).WatchPolicy(request, wait_for_ready=True)

    def _apply(self, response: control_pb2.WatchPolicyResponse) -> None:
        self.holder.apply(response.policy)

    def _lost(self, code: grpc.StatusCode) -> None:
        if self._watch.connected:
            held = self.holder.current_version
            log.warning("policy watch to %s lost (%s); serving policy version %s", self.address, code.name,
                        held.version if held else "none")
