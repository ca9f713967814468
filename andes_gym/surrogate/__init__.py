"""The surrogate engine: engine profiles, latency models and the iteration-level simulator.

`compiled.CompiledSurrogateBackend` is the engine the environments run (numba, imported on
demand); `SurrogateBackend` is its specification in plain numpy (slow, readable, the test
oracle); both share `base.SurrogateEngine` and the cost formulas of `costs`.
"""

from andes_gym.surrogate.latency import (
    LatencyModel,
    LinearLatencyModel,
    RooflineLatencyModel,
    make_latency_model,
)
from andes_gym.surrogate.profile import (
    EngineProfile,
    ProfileError,
    engine_profile_from_dict,
    load_engine_profile,
)
from andes_gym.surrogate.simulator import SurrogateBackend

__all__ = [
    "EngineProfile",
    "LatencyModel",
    "LinearLatencyModel",
    "ProfileError",
    "RooflineLatencyModel",
    "SurrogateBackend",
    "engine_profile_from_dict",
    "load_engine_profile",
    "make_latency_model",
]
