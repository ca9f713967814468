"""vLLM's OpenAI-compatible server with the andes_gym scheduler hook: its command line, checked.

`check_policy` builds the policy (and reads the hook config) the server would, so a bad one
fails before vLLM starts; `build_command` returns the server's argv and the environment
variables that configure the hook (`ANDES_GYM_POLICY`, `ANDES_GYM_HOOK_CONFIG`). Without a
model it builds the tiny local Llama (`tiny_model`: no tokenizer, random weights). The
command is `python -m andes_gym.serve`; importing this module does not import vLLM.
"""

from __future__ import annotations

import sys
from pathlib import Path

from andes_gym.agents.learned import load_policy
from andes_gym.agents.registry import registered_policies
from andes_gym.engine_bridge.hook_config import ENV_CONFIG, ENV_POLICY, HookConfig
from andes_gym.engine_bridge.runtime import SERVE_SCHEDULER, build_policy, load_latency_model
from andes_gym.engine_bridge.tiny_model import build_tiny_model

# Files of a Hugging Face tokenizer; a model directory with none of them gets
# --skip-tokenizer-init (vLLM could not load a tokenizer from it).
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "tokenizer.model",
    "vocab.json",
    "spiece.model",
)


def has_tokenizer(model_dir: str | Path) -> bool:
    """Whether a local model directory holds tokenizer files (`TOKENIZER_FILES`)."""
    return any((Path(model_dir) / name).is_file() for name in TOKENIZER_FILES)


def _is_local_path(model: str) -> bool:
    """A path (not a model hub id such as `org/name`): absolute, relative, or existing."""
    return model.startswith(("/", "./", "../", "~")) or Path(model).exists()


def check_policy(policy: str, hook_config: str | None = None) -> HookConfig:
    """Builds the policy the server would build, so a bad one fails before vLLM starts.

    Args:
        policy: Registered name, exported `.onnx` path or `package.module:Class`.
        hook_config: The `ANDES_GYM_HOOK_CONFIG` YAML (its policy kwargs and latency
            profile are checked too), or None.

    Returns:
        The hook config the server will read.

    Raises:
        ValueError: Naming the policy or config and the problem; for an unknown name,
            listing the registered policies.
    """
    env = {ENV_POLICY: policy}
    if hook_config is not None:
        env[ENV_CONFIG] = hook_config
    try:
        config = HookConfig.from_env(env)
    except FileNotFoundError as exc:
        raise ValueError(str(exc)) from None
    try:
        build_policy(config.policy, config.policy_kwargs)
    except KeyError:
        raise ValueError(
            f"unknown policy {policy!r}: not a registered policy, an exported .onnx file or "
            f"package.module:Class; registered policies: {', '.join(registered_policies())}"
        ) from None
    except (ImportError, AttributeError, TypeError, ValueError) as exc:
        raise ValueError(f"policy {policy!r} cannot be built: {exc}") from None
    try:
        load_latency_model(config.latency_profile)
    except (FileNotFoundError, ValueError) as exc:
        raise ValueError(f"latency_profile {config.latency_profile!r}: {exc}") from None
    return config


def build_command(
    policy: str,
    model: str | None = None,
    host: str = "127.0.0.1",
    port: int = 8000,
    gpu_memory_utilization: float = 0.3,
    hook_config: str | None = None,
    extra: list[str] | None = None,
) -> tuple[list[str], dict[str, str]]:
    """The server's argv and the environment variables it needs.

    Args:
        policy: Registered policy name or exported `.onnx` path.
        model: Model directory (or a model hub id); None builds the tiny local model
            (random weights, no tokenizer).
        host: Listen address.
        port: Listen port.
        gpu_memory_utilization: vLLM's memory fraction (on CPU: the reserved memory).
        hook_config: `ANDES_GYM_HOOK_CONFIG` YAML path (defaults of the hook when None).
        extra: More vLLM arguments.

    Returns:
        `(argv, env)`: run `argv` with `os.environ` updated by `env`.

    Raises:
        ValueError: When the policy is an `.onnx` file that `load_policy` rejects, or a
            local `model` path is not a directory.
    """
    if policy.endswith(".onnx"):
        load_policy(policy)  # fail fast, naming the problem
        policy = str(Path(policy).resolve())
    argv = [sys.executable, "-m", "vllm.entrypoints.openai.api_server"]
    if model is None:
        argv += ["--model", str(build_tiny_model()), "--load-format", "dummy"]
        argv += ["--skip-tokenizer-init"]
    else:
        argv += ["--model", model]
        if _is_local_path(model):
            if not Path(model).expanduser().is_dir():
                raise ValueError(f"--model {model}: no such model directory")
            if not has_tokenizer(Path(model).expanduser()):
                argv += ["--skip-tokenizer-init"]
    argv += [
        "--scheduler-cls",
        SERVE_SCHEDULER,  # vLLM's async default holds; --no-async-scheduling turns it off
        "--gpu-memory-utilization",
        str(gpu_memory_utilization),
        "--host",
        host,
        "--port",
        str(port),
        *(extra or []),
    ]
    env = {ENV_POLICY: policy}
    if hook_config is not None:
        env[ENV_CONFIG] = str(Path(hook_config).resolve())
    return argv, env
