"""The bridge to a real vLLM engine: engine creation, the scheduler hook and its adapters.

Importing this package does not import vLLM. `hook` (the `Scheduler` subclass) needs vLLM
and imports it; everything else here imports it lazily or not at all.
"""

from andes_gym.agents.learned import LearnedPolicy, PolicyLoadError, load_policy
from andes_gym.engine_bridge.engine import (
    EngineHandle,
    LiveEngineConfig,
    VLLMUnavailableError,
    create_engine,
    load_engine_config,
    release_engine,
)

__all__ = [
    "EngineHandle",
    "LearnedPolicy",
    "LiveEngineConfig",
    "PolicyLoadError",
    "VLLMUnavailableError",
    "create_engine",
    "load_engine_config",
    "load_policy",
    "release_engine",
]
