"""The simulated OpenAI-compatible provider used for demos and tests."""

from routemesh.sim.profiles import DEFAULT_PROFILES, ModelProfile
from routemesh.sim.server import SimServer, start_sim

__all__ = ["DEFAULT_PROFILES", "ModelProfile", "SimServer", "start_sim"]
