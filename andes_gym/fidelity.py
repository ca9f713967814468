"""How well the surrogate reproduces the live vLLM engine, per request, per policy and workload.

    python -m andes_gym.fidelity --profile configs/engines/cpu_tiny_fitted.yaml \\
        --workloads steady_poisson_cpu,bursty_2x_cpu,gamma_overload_cpu \\
        --policies fcfs,andes --rank-policies lqf,edf,round_robin --seeds 0 \\
        --out benchmarks/results/fidelity

Each workload (a preset, optionally with overrides `name@key=value,...`, or a project-
format CSV trace with `--trace FILE`) is drawn once per seed; the same `Workload` then runs
under each policy on the surrogate (engine profile `--profile`) and on the live engine
(`--live-engine`, its latency prediction switched to the same profile), both through
`PolicyAgent` + `run_episode`. Per request it compares TTFT, mean time between tokens,
completion time, QoE and preemptions; reports median / p90 relative errors and the mean
absolute QoE error per (workload, policy); and Kendall's tau between the policies' mean-QoE
rankings on the two engines (per workload, and over all (workload, policy) pairs).

Writes `<out>/fidelity.json`, `<out>/fidelity.md` (the table), `<out>/fidelity.png`
(surrogate vs live scatter per request) and `<out>/requests.csv` (every request of every
run, for further analysis).

Targets (issue 8): mean |QoE error| <= 0.03 and median TTFT error <= 10% on every workload.
The benchmark itself is `andes_gym.calibration.fidelity`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from andes_gym.calibration.fidelity import (
    DEFAULT_WORKLOADS,
    markdown_table,
    run_fidelity,
    write_outputs,
)
from andes_gym.calibration.fidelity_run import EnvArgs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m andes_gym.fidelity",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--workloads",
        default=DEFAULT_WORKLOADS,
        help="workload presets separated by ',' (or by ';' when a preset "
        "has overrides: name@key=value,key=value)",
    )
    parser.add_argument("--trace", default=None, help="a project-format CSV trace instead")
    parser.add_argument(
        "--trace-time-scale",
        type=float,
        default=0.02,
        help="targets.time_scale for traces without targets",
    )
    parser.add_argument("--policies", default="fcfs,andes")
    parser.add_argument(
        "--rank-policies", default="", help="more policies, run for the ranking comparison"
    )
    parser.add_argument("--seeds", default="0", help="comma-separated episode seeds")
    parser.add_argument("--profile", default="cpu_tiny_fitted", help="surrogate engine profile")
    parser.add_argument("--live-engine", default="cpu_live", help="live engine config")
    parser.add_argument("--k-slots", type=int, default=64)
    parser.add_argument("--lookahead-s", type=float, default=0.05)
    parser.add_argument("--iters-per-decision", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("fidelity_out"))
    parser.add_argument("--no-plot", action="store_true")
    parser.add_argument(
        "--no-warmup", action="store_true", help="skip the untimed live warm-up episode"
    )
    parser.add_argument(
        "--noise-floor-policies",
        default="",
        help="policies run twice on the live engine for the noise floor (default: --policies)",
    )
    parser.add_argument(
        "--no-noise-floor",
        action="store_true",
        help="skip the second live runs (the live-vs-live errors)",
    )
    args = parser.parse_args(argv)
    sep = ";" if ";" in args.workloads else ("," if "@" not in args.workloads else ";")
    specs = [s.strip() for s in args.workloads.split(sep) if s.strip()]
    compared = [p for p in args.policies.split(",") if p]
    policies = compared + [p for p in args.rank_policies.split(",") if p]
    policies = list(dict.fromkeys(policies))
    env_args = EnvArgs(
        k_slots=args.k_slots,
        lookahead_s=args.lookahead_s,
        iters_per_decision=args.iters_per_decision,
    )
    report, pairs = run_fidelity(
        specs,
        args.trace,
        policies,
        [int(s) for s in args.seeds.split(",")],
        args.profile,
        args.live_engine,
        env_args,
        trace_time_scale=args.trace_time_scale,
        log=lambda m: print(m, file=sys.stderr, flush=True),
        warmup=not args.no_warmup,
        noise_floor=not args.no_noise_floor,
        noise_floor_policies=[p for p in args.noise_floor_policies.split(",") if p] or compared,
    )
    report["command"] = " ".join(["python -m andes_gym.fidelity", *(argv or sys.argv[1:])])
    write_outputs(report, pairs, args.out, plot=not args.no_plot)
    print(markdown_table(report))
    print(f"wrote {args.out / 'fidelity.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
