"""The surrogate engine compiled with numba (see `backend.CompiledSurrogateBackend`)."""

from andes_gym.surrogate.compiled.backend import CompiledSurrogateBackend, EngineSnapshot

__all__ = ["CompiledSurrogateBackend", "EngineSnapshot"]
