"""Optional dependencies: which extra provides a module, and a clear error when it is missing.

The core install (`pip install andes_gym`) holds what the environments, the baselines and
the surrogate leaderboard need. Training, serving, the live engine and plots live in extras;
a command that needs one imports it through `require`, so a missing extra fails with the
`pip install` line that fixes it instead of a bare `ModuleNotFoundError`.
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

#: Top-level module -> the extra of `pyproject.toml` that installs it.
EXTRA_OF_MODULE: dict[str, str] = {
    "torch": "train",
    "stable_baselines3": "train",
    "tensorboard": "train",
    "safetensors": "train",
    "onnx": "train",
    "onnxruntime": "serve",
    "openai": "serve",
    "aiohttp": "serve",
    "vllm": "vllm",
    "matplotlib": "plots",
    "ray": "ray",
}


class MissingExtraError(ImportError):
    """An optional dependency is not installed; the message names the extra to install."""


def install_hint(extra: str) -> str:
    """The command that installs `extra`, e.g. ``pip install 'andes_gym[train]'``."""
    return f"pip install 'andes_gym[{extra}]'"


def is_available(module: str) -> bool:
    """Whether `module` can be imported, without importing it."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def require(module: str, purpose: str, extra: str | None = None) -> ModuleType:
    """Imports `module`, or raises `MissingExtraError` naming the extra that provides it.

    Args:
        module: Module to import, e.g. ``"torch"`` or ``"matplotlib.figure"``.
        purpose: What needs it, for the message, e.g. ``"training"``.
        extra: The extra that installs it (default: looked up in `EXTRA_OF_MODULE` by the
            top-level package name).

    Returns:
        The imported module.

    Raises:
        MissingExtraError: `module` (or a package it imports) is not installed.
    """
    extra = extra or EXTRA_OF_MODULE.get(module.partition(".")[0])
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        hint = f"; install it with: {install_hint(extra)}" if extra else ""
        raise MissingExtraError(
            f"{purpose} needs the '{exc.name}' package, which is not installed{hint}"
        ) from exc
