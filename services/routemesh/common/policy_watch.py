"""The data plane's copy of the policy: watched from control, swapped atomically, last good kept."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import grpc

from routemesh.common.channels import aio_channel
from routemesh.common.policy import PolicyError, PolicyVersion, policy_from_json
from routemesh.common.tasks import cancel_and_wait
from routemesh.v1 import control_pb2, control_pb2_grpc

log = logging.getLogger(__name__)


class PolicyHolder:
    """Holds the policy in force; readers take `current` (one attribute read, no lock)."""

    def __init__(self) -> None:
        self.current: PolicyVersion | None = None
        self._listeners: list[Callable[[PolicyVersion], None]] = []
        self._changed = asyncio.Event()

    def on_change(self, listener: Callable[[PolicyVersion], None]) -> None:
        """Call `listener` with every new policy (and now, if one is held)."""
        self._listeners.append(listener)
        if self.current:
            listener(self.current)

    def apply(self, message: control_pb2.Policy) -> bool:
        """Validate and swap in a pushed policy; keep the last good one when it does not validate."""
        if self.current and (message.version, message.digest) == (self.current.version, self.current.digest):
            return False
        try:
            policy = policy_from_json(message.policy_json)
        except PolicyError as exc:
            log.error("policy version %d rejected, keeping version %s: %s", message.version,
                      self.current.version if self.current else "none", exc)
            return False
        self.current = PolicyVersion(policy=policy, version=message.version, digest=message.digest,
                                     source=message.source)
        log.info("policy version %d in force (%s)", message.version, message.digest[:12])
        for listener in self._listeners:
            listener(self.current)
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
        self._task: asyncio.Task[None] | None = None
        self.connected = False

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"policy-watch-{self.name}")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)

    async def _run(self) -> None:
        backoff = 0.1
        channel = aio_channel(self.address)
        stub = control_pb2_grpc.ControlPlaneServiceStub(channel)
        try:
            while True:
                held = self.holder.current
                known = held.version if held else 0
                try:
                    call = stub.WatchPolicy(
                        control_pb2.WatchPolicyRequest(known_version=known, known_digest=held.digest if held else "",
                                                       watcher=self.name),
                        wait_for_ready=True,
                    )
                    async for response in call:
                        self.connected = True
                        backoff = 0.1
                        self.holder.apply(response.policy)
                except grpc.aio.AioRpcError as exc:
                    if self.connected:
                        log.warning("policy watch to %s lost (%s); serving policy version %s", self.address,
                                    exc.code().name, known or "none")
                self.connected = False
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
        finally:
            await channel.close()
