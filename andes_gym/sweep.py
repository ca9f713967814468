"""Training sweeps: a grid of config overrides x seeds, each trial one training run.

    python -m andes_gym.sweep --config quickstart --grid algo.learning_rate=[1e-4,3e-4] \\
        --seeds 0 1 2 --ray

`--ray` runs the trials as Ray Tune trials on a local Ray (`--ray`), the cluster started
on this machine (`--ray auto`) or a head node (`--ray HOST:PORT`); without it they run
one after another here. The sweep ends with the trials ranked by held-out mean QoE
against andes (`sweep.md` in `--out`). See `andes_gym.scale.sweep` and docs/SCALE_OUT.md.

Exit status: 0 when every trial finished, 2 when some failed, 1 on a usage error.
"""

from __future__ import annotations

import argparse
import sys

from andes_gym.scale.sweep import SweepSpec, parse_grid_item, run_sweep
from andes_gym.training.config import ConfigError


def parse_args(argv: list[str] | None = None) -> SweepSpec:
    """Parses the command line into a `SweepSpec`."""
    p = argparse.ArgumentParser(
        prog="python -m andes_gym.sweep",
        description="Train a grid of configs x seeds and rank the runs against andes.",
    )
    p.add_argument("--config", required=True, help="training config: name or YAML path")
    p.add_argument(
        "--grid",
        action="append",
        default=[],
        metavar="KEY=[V1,V2]",
        help="a swept config key and its values (YAML list); repeat for a product",
    )
    p.add_argument("--seeds", nargs="+", type=int, default=[0], help="training seeds")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a config override applied to every trial (repeatable)",
    )
    p.add_argument("--out", help="output directory (default runs/sweeps/<exp>__<time>)")
    p.add_argument(
        "--ray",
        nargs="?",
        const="local",
        metavar="ADDRESS",
        help="run trials on Ray Tune: alone, a local Ray; 'auto' or HOST:PORT joins a cluster",
    )
    p.add_argument(
        "--cpus-per-trial", type=int, help="CPUs Ray reserves per trial (default: env.n_envs)"
    )
    p.add_argument("--num-cpus", type=int, help="CPUs of a local Ray (default: all)")
    ns = p.parse_args(argv)
    grid: dict[str, list] = {}
    for item in ns.grid:
        try:
            key, values = parse_grid_item(item)
        except ValueError as exc:
            p.error(str(exc))
        if key in grid:
            p.error(f"--grid {key} given twice")
        grid[key] = values
    for name in ("cpus_per_trial", "num_cpus"):
        value = getattr(ns, name)
        if value is not None and value < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    return SweepSpec(
        config=ns.config,
        grid=grid,
        seeds=ns.seeds,
        overrides=ns.overrides,
        out=ns.out,
        ray=ns.ray,
        cpus_per_trial=ns.cpus_per_trial,
        num_cpus=ns.num_cpus,
    )


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    spec = parse_args(argv)
    try:
        result = run_sweep(spec)
    except (ConfigError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(result.markdown)
    failed = f", {result.num_failed} FAILED" if result.num_failed else ""
    print(f"{len(result.rows)} trials{failed}; table: {result.out_dir / 'sweep.md'}")
    return 2 if result.num_failed else 0


if __name__ == "__main__":
    sys.exit(main())
