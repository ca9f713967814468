"""`andes-gym COMMAND [ARGS...]`: one entry point for every andes_gym command.

    andes-gym train --config quickstart
    andes-gym leaderboard --suite smoke --out runs/board-smoke
    andes-gym serve --policy andes --dry-run

Each command is the module `andes_gym.<command>`, the same as `python -m andes_gym.<command>`;
its arguments are passed on unchanged (`andes-gym train --help` lists them). A command's
module is imported only when that command runs, so `andes-gym --help` imports nothing
heavy.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# Command -> what it does; each is the module `andes_gym.<command>` with a `main(argv)`.
COMMANDS: dict[str, str] = {
    "train": "train a policy with stable-baselines3 and compare it with the baselines",
    "export": "export a trained policy's scoring network to ONNX",
    "leaderboard": "rank policies by QoE on a suite of workloads",
    "calibrate": "fit the surrogate's latency model to a live vLLM engine",
    "fidelity": "compare the surrogate with the live engine, request by request",
    "loadgen": "replay a workload against an OpenAI-compatible server and score its QoE",
    "serve": "start vLLM's OpenAI server with the scheduler hook and a policy",
    "sweep": "train a grid of configs x seeds and rank the runs against andes",
    "train_rllib": "train a policy with RLlib PPO on Ray",
    "smoke": "check the scheduler hook in serving mode on this machine's vLLM",
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="andes-gym",
        description="One entry point for every andes_gym command.",
        epilog="commands:\n"
        + "\n".join(f"  {name:12s} {job}" for name, job in COMMANDS.items())
        + "\n\n`andes-gym COMMAND --help` lists a command's arguments.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "command", choices=list(COMMANDS), metavar="COMMAND", help="one of the commands below"
    )
    parser.add_argument("args", nargs=argparse.REMAINDER, help="the command's own arguments")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Runs `andes_gym.<command>.main` with the remaining arguments; returns its exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    # Only the first word is ours (`--help` prints the commands and exits); the rest is
    # the command's own.
    command = _parser().parse_args(argv[:1]).command
    module = importlib.import_module(f"andes_gym.{command}")
    return int(module.main(argv[1:]) or 0)


if __name__ == "__main__":
    sys.exit(main())
