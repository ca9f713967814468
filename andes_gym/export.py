"""Export a trained policy's deterministic scoring network to ONNX.

Usage:
    python -m andes_gym.export RUN_DIR --out policy.onnx [--checkpoint CKPT_DIR]

Writes the ONNX graph `obs` -> `slot_scores` (observation normalization baked in, the
policy's deterministic action clipped to the action space) with the `andes_gym.*`
metadata that `andes_gym.agents.learned.load_policy` checks; the format and the export
are `andes_gym.training.export_onnx`.
"""

from __future__ import annotations

import argparse
import sys

from andes_gym.extras import MissingExtraError, require
from andes_gym.training.config import ConfigError
from andes_gym.training.export_onnx import export_run
from andes_gym.training.run_dir import CheckpointError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m andes_gym.export", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("run_dir", help="training run directory")
    parser.add_argument("--out", required=True, help="output .onnx path")
    parser.add_argument(
        "--checkpoint",
        help="checkpoint directory (default: checkpoints/best if kept, else the newest)",
    )
    args = parser.parse_args(argv)
    try:
        require("torch", "exporting a policy (python -m andes_gym.export)", "train")
    except MissingExtraError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        path = export_run(args.run_dir, args.out, args.checkpoint)
    except (CheckpointError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
