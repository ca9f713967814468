"""Train a scheduling policy with stable-baselines3 and compare it with the baselines.

Usage:
    python -m andes_gym.train --config quickstart
    python -m andes_gym.train --config quickstart --set algo.learning_rate=1e-4 --set seed=3
    python -m andes_gym.train --resume runs/andes_gym-Surrogate-v0__quickstart__0__20250101-120000

A run writes `{run_root}/{env}__{exp}__{seed}__{time}/` (see `andes_gym.training.run_dir`):
the resolved config, the command, TensorBoard logs (`tensorboard --logdir runs`) with
`qoe/*` metrics besides the reward, periodic checkpoints, `policy.onnx`, and the final
evaluation table (`eval.csv`). Ctrl-C (or SIGTERM) saves a checkpoint before exiting;
`--resume RUN_DIR` continues from the newest intact checkpoint (timesteps, weights, optimizer,
normalization statistics; new episodes start from fresh resets; a broken newer one is
skipped with a warning naming it).

The config, the env and the model are all checked and built before anything is written: a
config error (exit status 2, naming the key and where it came from) leaves no run
directory behind, and a rejected `--resume` leaves its run directory as it was. The run
itself is `andes_gym.training.run.run_training` (`resume_training` for `--resume`).
"""

from __future__ import annotations

import argparse
import sys

from andes_gym.extras import MissingExtraError
from andes_gym.training.config import (
    ConfigError,
    add_config_arguments,
    describe_keys,
    load_config,
)
from andes_gym.training.run import require_training_extras, resume_training, run_training
from andes_gym.training.run_dir import CheckpointError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m andes_gym.train",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="config keys (override any with --set KEY=VALUE; values are parsed as YAML):\n"
        + "\n".join(describe_keys()),
    )
    add_config_arguments(parser)
    parser.add_argument(
        "--resume", metavar="RUN_DIR", help="continue a run from its newest checkpoint"
    )
    return parser


def main(argv: list[str] | None = None, callbacks: list | None = None) -> int:
    """Entry point; returns the exit code (2 for a config error, 130 when interrupted).

    Args:
        argv: Command-line arguments (default: `sys.argv[1:]`).
        callbacks: Extra SB3 callbacks (tests use one to simulate Ctrl-C).
    """
    args = _parser().parse_args(argv)
    command = argv if argv is not None else sys.argv[1:]
    try:
        require_training_extras()
        if args.resume:
            if args.config:
                raise ConfigError("--resume takes the run's own config; pass overrides with --set")
            result = resume_training(
                args.resume, args.overrides, command=command, callbacks=callbacks or []
            )
        else:
            cfg = load_config(args.config, args.overrides)
            result = run_training(cfg, command=command, callbacks=callbacks or [])
    except (MissingExtraError, ConfigError, CheckpointError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return result.exit_status


if __name__ == "__main__":
    sys.exit(main())
