"""The quality bar of issue 6: the quickstart's trained policy vs fcfs and andes, several seeds.

Usage:
    # train the quickstart with 3 seeds, then evaluate (about 3 x 7 minutes on 2 cores):
    python benchmarks/bench_learned.py --train-seeds 0 1 2
    # the same without PPO (imitation only), to measure what RL adds:
    python benchmarks/bench_learned.py --train-seeds 0 1 2 --set total_timesteps=0 \
        --out benchmarks/results/learned_bc_only.md
    # evaluate run directories that exist already:
    python benchmarks/bench_learned.py --runs runs/andes_gym-Surrogate-v0__quickstart__0__*

Every policy plays the same held-out test seeds (the training config's `eval.seeds`, which
training never used) through `andes_gym.evaluation.run_episode`. The report
(`benchmarks/results/learned.md` by default) has the mean over seeds of each metric per
policy (one learned row per training seed), the ratios learned/andes and learned/fcfs side
by side, per-seed wins, and where the learned policy wins or loses against andes: the mean
per-request QoE difference by output-length tercile and by arrival phase (in a burst or
not).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from andes_gym.training.evaluate import (  # noqa: E402
    AgentSpec,
    evaluate,
    format_table,
    mean_rows,
)

TEST_SEEDS = [1_000_001 + i for i in range(8)]


def train_runs(
    config: str, seeds: list[int], run_root: Path, overrides: list[str] = ()
) -> list[Path]:
    """Trains the config once per seed (held-out test seeds set to TEST_SEEDS), with
    `overrides` (`key=value`) applied too."""
    from andes_gym.train import main as train_main

    runs = []
    for seed in seeds:
        before = set(run_root.glob("*")) if run_root.exists() else set()
        args = [
            "--config",
            config,
            "--set",
            f"seed={seed}",
            "--set",
            f"run_root={run_root}",
            "--set",
            "eval.final=false",
            "--set",
            f"eval.seeds={TEST_SEEDS}",
            "--set",
            "progress_bar=false",
        ]
        for item in overrides:
            args += ["--set", item]
        start = time.monotonic()
        if train_main(args) != 0:
            raise SystemExit(f"training seed {seed} failed")
        new = sorted(set(run_root.glob("*")) - before)
        print(f"trained seed {seed} in {time.monotonic() - start:.0f} s: {new[-1]}")
        runs.append(new[-1])
    return runs


def _phase_and_length(cfg, seed: int):
    """Per-request (in_burst, output_tokens) of the workload a seed draws."""
    from andes_gym.envs.episode_workloads import workload_source

    source = workload_source(cfg.env.kwargs.get("workload", "bursty_2x"))
    wl = source.sample(seed)
    arrivals = getattr(getattr(source, "config", None), "arrivals", None)
    in_burst = np.zeros(len(wl), dtype=bool)
    if arrivals is not None and arrivals.kind == "bursty":
        in_burst = (wl.arrival_s % arrivals.period_s) < arrivals.duty * arrivals.period_s
    return in_burst, wl.output_tokens


def breakdown(rows: list[dict], cfg, learned: str, reference: str) -> list[str]:
    """Where `learned` wins or loses against `reference`: mean per-request QoE differences."""
    diffs, bursts, lengths = [], [], []
    for seed in sorted({r["seed"] for r in rows}):
        a = next((r for r in rows if r["policy"] == learned and r["seed"] == seed), None)
        b = next((r for r in rows if r["policy"] == reference and r["seed"] == seed), None)
        if a is None or b is None or len(a["_qoe"]) != len(b["_qoe"]):
            continue
        in_burst, out_tokens = _phase_and_length(cfg, seed)
        n = len(a["_qoe"])  # requests that arrived (all, for finished episodes)
        diffs.append(np.asarray(a["_qoe"]) - np.asarray(b["_qoe"]))
        bursts.append(in_burst[:n])
        lengths.append(out_tokens[:n])
    if not diffs:
        return []
    d, burst, length = np.concatenate(diffs), np.concatenate(bursts), np.concatenate(lengths)
    cuts = np.quantile(length, [1 / 3, 2 / 3])
    groups = {
        "all requests": np.ones_like(burst),
        "arrived in a burst": burst,
        "arrived off-burst": ~burst,
        f"short outputs (<= {cuts[0]:.0f} tokens)": length <= cuts[0],
        f"medium outputs ({cuts[0]:.0f}-{cuts[1]:.0f})": (length > cuts[0]) & (length <= cuts[1]),
        f"long outputs (> {cuts[1]:.0f} tokens)": length > cuts[1],
    }
    lines = [
        f"| requests | n | mean QoE {learned} - {reference} | share better by > 0.01 | share worse by > 0.01 |",
        "|---|---|---|---|---|",
    ]
    for name, mask in groups.items():
        if mask.sum() == 0:
            continue
        x = d[mask]
        lines.append(
            f"| {name} | {mask.sum()} | {x.mean():+.4f} | {(x > 0.01).mean():.1%} | {(x < -0.01).mean():.1%} |"
        )
    return lines


def _markdown_table(means: list[dict]) -> list[str]:
    text = format_table(means, reference="andes").splitlines()
    header = [c for c in text[0].split("  ") if c]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for line in text[2:]:
        lines.append("| " + " | ".join(c for c in line.split("  ") if c) + " |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", nargs="*", default=[], help="trained run directories to evaluate")
    parser.add_argument(
        "--train-seeds",
        nargs="*",
        type=int,
        default=[],
        help="train the config with these seeds first",
    )
    parser.add_argument(
        "--config", default="quickstart", help="training config (with --train-seeds)"
    )
    parser.add_argument(
        "--run-root", default="runs/bench_learned", help="where --train-seeds runs go"
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="training config override (repeatable), e.g. total_timesteps=0 for imitation only",
    )
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "learned.md"))
    parser.add_argument(
        "--quick", action="store_true", help="without --runs/--train-seeds: train one seed"
    )
    args = parser.parse_args(argv)
    if not args.runs and not args.train_seeds:
        # What `make bench` runs: train the quickstart with several seeds, then compare.
        args.train_seeds = [0] if args.quick else [0, 1, 2]
    from andes_gym.training.run_dir import read_run

    started = time.monotonic()
    runs = [Path(r) for r in args.runs]
    train_s = None
    if args.train_seeds:
        t0 = time.monotonic()
        runs += train_runs(args.config, args.train_seeds, Path(args.run_root), args.overrides)
        train_s = time.monotonic() - t0
    if not runs:
        parser.error("give --runs or --train-seeds")
    cfg, _ = read_run(runs[0])
    seeds = list(cfg.eval.seeds)
    labels = [f"learned(seed {read_run(r)[0].seed})" for r in runs]
    agents = [AgentSpec("run", str(r), label) for r, label in zip(runs, labels, strict=True)]
    agents += [AgentSpec("policy", name, name) for name in ("andes", "fcfs", "lqf", "edf")]
    rows = evaluate(cfg.env.id, cfg.env.kwargs, agents, seeds, cfg.eval.max_steps, args.workers)
    means = {m["policy"]: m for m in mean_rows(rows)}
    table = format_table(list(means.values()), reference="andes")
    print(table)

    lines = [
        "# Learned policy vs baselines (issue 6 quality bar)",
        "",
        f"Generated {datetime.now(UTC):%Y-%m-%d %H:%M UTC} on {platform.node()} "
        f"({platform.processor() or platform.machine()}, {os.cpu_count()} cores) by",
        "",
        f"    python benchmarks/bench_learned.py {' '.join(argv if argv is not None else sys.argv[1:])}",
        "",
        f"Environment `{cfg.env.id}` with `{cfg.env.kwargs}`; training config `{args.config}` "
        f"({cfg.algo.name}, {cfg.total_timesteps} timesteps, behaviour-cloning warm start from "
        f"`{cfg.bc.teacher}`: {cfg.bc.enabled}). Test seeds {seeds} (held out of training).",
        "",
        "## Means over the test seeds",
        "",
        *_markdown_table(list(means.values())),
        "",
        "## Quality bar per training seed",
        "",
        "| run | mean QoE | / andes | / fcfs | beats fcfs | >= 0.9x andes | seeds better than andes | seeds better than fcfs |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for label in labels:
        m = means[label]
        ra, rf = (
            m["mean_qoe"] / means["andes"]["mean_qoe"],
            m["mean_qoe"] / means["fcfs"]["mean_qoe"],
        )

        def per_seed(policy: str) -> dict:
            return {r["seed"]: r["mean_qoe"] for r in rows if r["policy"] == policy}

        mine = per_seed(label)
        won = {ref: sum(mine[s] > q for s, q in per_seed(ref).items()) for ref in ("andes", "fcfs")}
        lines.append(
            f"| {label} | {m['mean_qoe']:.4f} | {ra:.3f} | {rf:.3f} | {'yes' if rf > 1 else 'no'} | "
            f"{'yes' if ra >= 0.9 else 'no'} | {won['andes']}/{len(seeds)} | {won['fcfs']}/{len(seeds)} |"
        )
    for label in labels:
        lines += [
            "",
            f"## Where {label} wins and loses against andes (per request, all test seeds)",
            "",
        ]
        lines += breakdown(rows, cfg, label, "andes")
        lines += ["", "Against fcfs:", ""]
        lines += breakdown(rows, cfg, label, "fcfs")
    total = time.monotonic() - started
    lines += [
        "",
        f"Wall time: {total:.0f} s" + (f" (training {train_s:.0f} s)" if train_s else "") + ".",
    ]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print(f"saved {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
