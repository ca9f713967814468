"""Calibrate the surrogate against a live vLLM engine: profile it, fit, write an engine profile.

    python -m andes_gym.calibrate --engine configs/engines/cpu_live.yaml \\
        --out configs/engines/cpu_tiny_fitted.yaml

Steps:

1. Start the live engine of `--engine` in-process (`engine_bridge.engine.create_engine`).
2. Run the profiling plan (`calibration.profiler.default_plan`: decode batch sizes x
   context lengths, prefill chunk sizes, mixed prefill + decode steps, a KV-overflow run
   with recompute preemption and re-prefill) `--warmup` times untimed, then `--repeats`
   times, timing every `engine.step()`; the median per distinct step is kept (the
   machine may be shared, so a robust statistic).
3. Fit the surrogate's linear latency model by non-negative least squares on relative
   error (`calibration.latency_fit`).
4. Write an engine profile in the surrogate's format (KV cache and limits copied from the
   live engine) with the fit's error in its header comments, and a sidecar
   `<out>.fit.json` (fit statistics per step kind, coefficients, the machine's load, the
   aggregated samples) because the profile loader accepts no extra keys.
5. With `--env-workloads`, run those workloads through the live environment
   (`andes_gym/VLLM-v0`, policies `--env-policies`), fit what it adds to each iteration
   beyond the engine model (`calibration.overhead`) and write the serving terms into the
   profile's `overhead:` section (per prefill sequence, per request in the engine, per
   decision and candidate), so the surrogate pays what a scheduler in the loop pays.

The procedure itself is `andes_gym.calibration.calibrate.calibrate`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from andes_gym.calibration.calibrate import calibrate
from andes_gym.calibration.latency_fit import COEF_FIELDS


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m andes_gym.calibrate",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--engine", required=True, help="live engine config (name or YAML path)")
    parser.add_argument("--out", required=True, type=Path, help="engine profile to write")
    parser.add_argument("--name", default=None, help="profile name (default: file stem)")
    parser.add_argument("--repeats", type=int, default=5, help="timed passes (median)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed passes first")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--decode-steps", type=int, default=24, help="output tokens of each decode scenario"
    )
    parser.add_argument(
        "--no-quadratic", action="store_true", help="fix per_prefill_token_sq_s at 0"
    )
    parser.add_argument(
        "--env-workloads",
        default="",
        help="also measure the live environment's overhead on these workloads "
        "(';'-separated specs, e.g. 'steady_poisson_cpu@arrivals.rate_rps=200') and write "
        "its serving terms into the profile's overhead section",
    )
    parser.add_argument(
        "--no-env-overhead",
        action="store_true",
        help="with --env-workloads: report the serving terms without writing them",
    )
    parser.add_argument(
        "--env-policies", default="fcfs,andes", help="policies of the overhead runs"
    )
    parser.add_argument(
        "--fold-env-overhead",
        action="store_true",
        help="add the measured per-iteration environment overhead to base_s",
    )
    args = parser.parse_args(argv)
    spec, stats, _ = calibrate(
        args.engine,
        args.out,
        name=args.name,
        repeats=args.repeats,
        warmup=args.warmup,
        seed=args.seed,
        quadratic=not args.no_quadratic,
        decode_steps=args.decode_steps,
        env_workloads=[w.strip() for w in args.env_workloads.split(";") if w.strip()] or None,
        env_policies=tuple(p for p in args.env_policies.split(",") if p),
        fold_env_overhead=args.fold_env_overhead,
        apply_env_overhead=not args.no_env_overhead,
    )
    coef = ", ".join(f"{f}={getattr(spec, f):.3e}" for f in COEF_FIELDS)
    print(f"wrote {args.out}: {coef}")
    print(
        f"fit on {stats.num_samples} steps: median rel. error {100 * stats.median_rel_error:.1f}%, "
        f"p90 {100 * stats.p90_rel_error:.1f}%, R^2 {stats.r2:.3f}"
    )
    return 0


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    raise SystemExit(main())
