"""The simulator's HTTP server: the OpenAI routes, the admin API, and in-process start-up."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from aiohttp import web

from routemesh.sim.chat import chat_completions, error_response
from routemesh.sim.profiles import ModelProfile, ProfileError, apply_changes
from routemesh.sim.state import STATE, SimState

log = logging.getLogger(__name__)


async def list_models(request: web.Request) -> web.Response:
    state = request.app[STATE]
    data = [{"id": name, "object": "model", "created": 0, "owned_by": "routemesh-sim"}
            for name in state.profiles]
    return web.json_response({"object": "list", "data": data})


async def healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok")


async def get_profiles(request: web.Request) -> web.Response:
    state = request.app[STATE]
    profiles = {name: profile.as_dict() for name, profile in state.profiles.items()}
    return web.json_response({"seed": state.seed, "time_scale": state.time_scale, "profiles": profiles})


async def patch_profile(request: web.Request) -> web.Response:
    state = request.app[STATE]
    name = request.match_info["model"]
    profile = state.profiles.get(name)
    if profile is None:
        message = f"no simulated model named {name!r}"
        return error_response(404, message, param="model", code="model_not_found")
    try:
        changes = await request.json()
    except ValueError:
        return error_response(400, "body must be a JSON object of profile fields")
    try:
        state.profiles[name] = apply_changes(profile, changes)
    except ProfileError as err:
        return error_response(400, str(err))
    log.info("sim profile %s changed: %s", name, changes)
    return web.json_response(state.profiles[name].as_dict())


async def reset(request: web.Request) -> web.Response:
    request.app[STATE].reset()
    return web.json_response({"status": "reset"})


async def get_stats(request: web.Request) -> web.Response:
    return web.json_response(request.app[STATE].stats())


def create_app(state: SimState) -> web.Application:
    # Request bodies can hold long prompts; the default 1 MiB limit is too small for long-context tests.
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app[STATE] = state
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_get("/v1/models", list_models)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/admin/profiles", get_profiles)
    app.router.add_patch("/admin/profiles/{model}", patch_profile)
    app.router.add_post("/admin/reset", reset)
    app.router.add_get("/admin/stats", get_stats)
    return app


@dataclass
class SimServer:
    """A running simulator; `url` is the OpenAI base URL (ending in /v1)."""

    runner: web.AppRunner
    host: str
    port: int

    @property
    def app(self) -> web.Application:
        return self.runner.app

    @property
    def state(self) -> SimState:
        return self.runner.app[STATE]

    @property
    def root_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.root_url}/v1"

    async def close(self) -> None:
        await self.runner.cleanup()


async def start_sim(
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    seed: int = 7,
    time_scale: float = 1.0,
    profiles: dict[str, ModelProfile] | None = None,
    shutdown_timeout_s: float = 1.0,
) -> SimServer:
    """Start the simulator on host:port (0 picks a free port) in the running event loop."""
    state = SimState(seed=seed, time_scale=time_scale, profiles=profiles)
    # handler_cancellation stops stalled or hung handlers as soon as their client disconnects.
    runner = web.AppRunner(create_app(state), handle_signals=False, access_log=None,
                           handler_cancellation=True, shutdown_timeout=shutdown_timeout_s)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=1024)
    try:
        await site.start()
    except OSError:
        await runner.cleanup()
        raise
    bound_port = runner.addresses[0][1]
    return SimServer(runner=runner, host=host, port=bound_port)
