"""Issue 14: learned policies against Andes on held-out seeds and held-out workloads, and
the ablation of what imitation and RL each add.

Recipes (one training run per recipe and seed; every run is `python -m andes_gym.train`):

- `bc_andes`: the `learned_best` config with `bc.teacher=andes` (imitation of Andes, then
  PPO), on the same workload mixture;
- `planner`: the `learned_best` config itself (DAgger from the look-ahead planner
  `andes_rollout`, then PPO).

Each run keeps its warm-start checkpoint (`checkpoints/step_0`, written right after
imitation), so one run gives two rows: the imitation-only policy and the same policy after
PPO (`checkpoints/best` or the last). Both are exported to ONNX and played, with `andes` and
`fcfs`, on:

- held-out seeds of the training workloads (the mixture's components, seeds the trainer
  never uses), and
- held-out workloads (`heldout_*_cpu` presets, never in a training mixture),

reported separately. Each cell: mean QoE (paper form) and `delay_fixed`, ratio to Andes on
the same episodes, and the share of episodes where the policy beats Andes.

Usage:
    python benchmarks/bench_learned_best.py --train-seeds 0 1 2            # train + evaluate
    python benchmarks/bench_learned_best.py --runs planner=RUN_DIR ...      # evaluate runs
    python benchmarks/bench_learned_best.py --train-seeds 0 --recipes planner --ship
        # ... and copy the planner run's policy to benchmarks/checkpoints/learned_best.onnx

Output: benchmarks/results/learned_best.md (+ .json).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import RESULTS_DIR, header, write_section  # noqa: E402

from andes_gym.training.config import load_config  # noqa: E402

RECIPES = {
    "bc_andes": ["bc.teacher=andes", "bc.teacher_kwargs={}"],
    "planner": [],
}
HELD_OUT_WORKLOADS = [
    "heldout_voice_long_prompt_cpu",
    "heldout_overload_fast_readers_cpu",
    "heldout_three_rhythms_cpu",
]
TRAIN_WORKLOAD_SEEDS = [1_000_001, 1_000_002]
HELD_OUT_SEEDS = [1_000_001, 1_000_002, 1_000_003]
SHIPPED = REPO / "benchmarks" / "checkpoints" / "learned_best.onnx"


def train(recipe: str, seed: int, run_root: Path) -> Path:
    """Trains `learned_best` with the recipe's overrides; returns the run directory."""
    from andes_gym.training.run import run_training

    overrides = [
        *RECIPES[recipe],
        f"seed={seed}",
        "checkpoint.keep_last=20",
        f"run_root={run_root}",
    ]
    cfg = load_config("learned_best", overrides)
    result = run_training(
        cfg, command=["--config", "learned_best", *sum((["--set", o] for o in overrides), [])]
    )
    if result.exit_status != 0:
        raise SystemExit(f"training {recipe} seed {seed} stopped with {result.exit_status}")
    return Path(result.run_dir)


def export_pair(run_dir: Path) -> dict[str, Path]:
    """The run's warm start (imitation only) and final policy as ONNX files."""
    from andes_gym.training.checkpoint import list_checkpoints, read_meta
    from andes_gym.training.export_onnx import export_run

    warm = [c for c in list_checkpoints(run_dir) if read_meta(c).get("num_timesteps") == 0]
    out = {"final": run_dir / "policy.onnx"}
    if not out["final"].is_file():
        export_run(run_dir, out["final"])
    if warm:
        out["warm"] = export_run(run_dir, run_dir / "warm_start.onnx", ckpt_dir=warm[0])
    return out


def play(task: tuple) -> dict:
    """One episode of one policy (a registered name or an ONNX path)."""
    import gymnasium as gym

    import andes_gym.envs  # noqa: F401
    from andes_gym.agents import make_policy
    from andes_gym.agents.adapter import PolicyAgent
    from andes_gym.evaluation import run_episode

    group, workload, env_kwargs, seed, label, spec = task
    env = gym.make(
        "andes_gym/Surrogate-v0", workload=workload, disable_env_checker=True, **env_kwargs
    )
    result = run_episode(env, PolicyAgent(make_policy(spec)), seed=seed)
    return {
        "group": group,
        "workload": workload if isinstance(workload, str) else workload["name"],
        "seed": seed,
        "policy": label,
        "mean_qoe": result.summary["mean_qoe"],
        "mean_qoe_fixed": result.summary["mean_qoe_fixed"],
        "p10_qoe": result.summary["p10_qoe"],
    }


def summarize(rows: list[dict], group: str, label: str) -> dict:
    """Pooled ratios of `label` to andes over the group's episodes."""
    mine = {
        (r["workload"], r["seed"]): r for r in rows if r["group"] == group and r["policy"] == label
    }
    ref = {
        (r["workload"], r["seed"]): r
        for r in rows
        if r["group"] == group and r["policy"] == "andes"
    }
    keys = sorted(set(mine) & set(ref))
    if not keys:
        return {}
    q = np.array([mine[k]["mean_qoe"] for k in keys])
    qa = np.array([ref[k]["mean_qoe"] for k in keys])
    f = np.array([mine[k]["mean_qoe_fixed"] for k in keys])
    fa = np.array([ref[k]["mean_qoe_fixed"] for k in keys])
    return {
        "episodes": len(keys),
        "mean_qoe": float(q.mean()),
        "ratio": float(q.mean() / qa.mean()),
        "ratio_fixed": float(f.mean() / fa.mean()),
        "beats_andes": float(np.mean(q > qa)),
    }


def collect_runs(args) -> list[tuple[str, int, Path]]:
    """(recipe, training seed or -1, run directory): the given runs, then new ones."""
    runs = []
    for item in args.runs:
        recipe, path = item.split("=", 1)
        runs.append((recipe, -1, Path(path)))
    for seed in args.train_seeds:
        for recipe in args.recipes:
            runs.append((recipe, seed, train(recipe, seed, Path(args.run_root))))
    return runs


def policies_of(runs: list[tuple[str, int, Path]]) -> list[tuple[str, str]]:
    """(label, policy spec): the baselines, then each run's imitation and final policy."""
    policies = [("andes", "andes"), ("fcfs", "fcfs")]
    for recipe, seed, run_dir in runs:
        pair = export_pair(run_dir)
        tag = f"{recipe}#{seed if seed >= 0 else run_dir.name}"
        if "warm" in pair:
            policies.append((f"{tag} imitation", str(pair["warm"])))
        policies.append((f"{tag} +PPO", str(pair["final"])))
    return policies


def eval_tasks(policies, training_workloads, env_kwargs) -> list[tuple]:
    tasks = []
    for label, spec in policies:
        for w in training_workloads:
            tasks += [
                ("held-out seeds", w, env_kwargs, s, label, spec) for s in TRAIN_WORKLOAD_SEEDS
            ]
        for w in HELD_OUT_WORKLOADS:
            tasks += [("held-out workloads", w, env_kwargs, s, label, spec) for s in HELD_OUT_SEEDS]
    return tasks


def report(rows, policies, training_workloads, intro: str) -> list[str]:
    lines = header("Learned policies vs Andes: held-out seeds and held-out workloads (issue 14)")
    lines += [
        intro
        + " Training mixture: "
        + ", ".join(w if isinstance(w, str) else w["name"] for w in training_workloads)
        + f" (held-out seeds {TRAIN_WORKLOAD_SEEDS}); held-out workloads: "
        + ", ".join(HELD_OUT_WORKLOADS)
        + f" (seeds {HELD_OUT_SEEDS}). Ratios are pooled means over the group's episodes "
        "(policy / andes on the same episodes); `beats andes` is the share of episodes "
        "where the policy's mean QoE is higher.",
        "",
        "| policy | group | episodes | mean QoE | x andes | x andes (delay_fixed) | beats andes |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, _ in policies:
        for group in ("held-out seeds", "held-out workloads"):
            if s := summarize(rows, group, label):
                lines.append(
                    f"| {label} | {group} | {s['episodes']} | {s['mean_qoe']:.4f} | {s['ratio']:.3f}x "
                    f"| {s['ratio_fixed']:.3f}x | {s['beats_andes']:.0%} |"
                )
    lines += ["", "Per workload (mean QoE over seeds):", ""]
    lines += ["| workload | " + " | ".join(label for label, _ in policies) + " |"]
    lines += ["|---|" + "---|" * len(policies)]
    for w in sorted({r["workload"] for r in rows}):
        cells = []
        for label, _ in policies:
            q = [r["mean_qoe"] for r in rows if r["workload"] == w and r["policy"] == label]
            cells.append(f"{np.mean(q):.4f}" if q else "")
        lines.append(f"| {w} | " + " | ".join(cells) + " |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train-seeds", nargs="*", type=int, default=[])
    parser.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    parser.add_argument("--runs", nargs="*", default=[], help="RECIPE=RUN_DIR of trained runs")
    parser.add_argument("--run-root", default="runs/learned_best")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--ship",
        action="store_true",
        help=f"copy the first planner run's policy to {SHIPPED.relative_to(REPO)}",
    )
    parser.add_argument("--out", default="learned_best")
    args = parser.parse_args(argv)

    start = time.perf_counter()
    runs = collect_runs(args)
    train_s = time.perf_counter() - start
    cfg = load_config("learned_best")
    env_kwargs = {k: v for k, v in cfg.env.kwargs.items() if k != "workload"}
    training_workloads = list(cfg.env.kwargs["workload"])
    policies = policies_of(runs)
    tasks = eval_tasks(policies, training_workloads, env_kwargs)
    with ProcessPoolExecutor(args.workers) as pool:
        rows = list(pool.map(play, tasks))
    eval_s = time.perf_counter() - start - train_s
    intro = (
        f"{len(runs)} runs (training {train_s / 60:.1f} min), {len(tasks)} evaluation episodes "
        f"({eval_s / 60:.1f} min, {args.workers} workers)."
    )
    write_section(args.out, report(rows, policies, training_workloads, intro))
    (RESULTS_DIR / f"{args.out}.json").write_text(json.dumps(rows, indent=1))
    planner_runs = [r for r in runs if r[0] == "planner"]
    if args.ship and planner_runs:
        SHIPPED.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(export_pair(planner_runs[0][2])["final"], SHIPPED)
        print(f"shipped {SHIPPED}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
