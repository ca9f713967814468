"""Issue 14, section 1: the headroom over Andes, measured with a look-ahead planner.

`andes_rollout` (andes_gym/agents/planner.py) plays candidate policies (Andes and variants:
other look-aheads, no preemption, an admission cap, shedding lost requests, FCFS) on
sampled futures (arrivals and output lengths from the workload's distribution, never the
episode's) in a private copy of the compiled surrogate, and acts on the best. This
benchmark plays it beside `andes`, `fcfs` and the oracle `sjf_oracle` (which knows every
output length) on the same seeds of each workload on the cpu_tiny surrogate, and reports:

- mean QoE (paper form and `delay_fixed`) and p10 per policy (mean over seeds);
- the planner's margin over Andes and the oracle's (where the headroom is);
- the planner's decision time (it plans every `replan_every` contested decisions);
- which candidate the planner chose how often.

Usage:
    python benchmarks/bench_planner.py                      # section-3 workloads, 3 seeds
    python benchmarks/bench_planner.py --paper              # + the paper suite's cells (llama7b_a100)
    python benchmarks/bench_planner.py --workloads chat_long_prompt_cpu --seeds 1000001

Output: benchmarks/results/planner.md (and planner.json).
"""

from __future__ import annotations

import argparse
import json
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

# The quickstart's workload (andes_gym/configs/train/quickstart.yaml), named as it names it.
QUICKSTART = load_config("quickstart").env.kwargs["workload"]
TRAINING = [
    "hetero_targets_cpu",
    "chat_long_prompt_cpu",
    "sustained_overload_cpu",
    "multi_cycle_bursts_cpu",
]
HELD_OUT = [
    "heldout_voice_long_prompt_cpu",
    "heldout_overload_fast_readers_cpu",
    "heldout_three_rhythms_cpu",
]
SEEDS = [1_000_001, 1_000_002, 1_000_003]
POLICIES = ["fcfs", "andes", "sjf_oracle", "andes_rollout"]
CPU_ENV = {"engine": "cpu_tiny", "k_slots": 256, "lookahead_s": 0.05}
# The paper suite's episode cells (andes_gym/configs/suites/paper.yaml), one seed each.
PAPER_ENV = {"engine": "llama7b_a100", "k_slots": 1024, "lookahead_s": 1.0}


def paper_workloads() -> dict[str, dict]:
    """The paper suite's workload cells as workload dicts, by cell name."""
    from andes_gym.board.suite import load_suite, resolve_workloads

    return {w.name: w.config for w in resolve_workloads(load_suite("paper"))}


def run_cell(task: tuple) -> dict:
    """One (workload, seed, policy) episode; returns its summary and decision times."""
    import gymnasium as gym

    import andes_gym.envs  # noqa: F401
    from andes_gym.agents import make_policy
    from andes_gym.agents.adapter import PolicyAgent
    from andes_gym.evaluation import run_episode

    label, workload, env_kwargs, seed, policy_name = task
    env = gym.make(
        "andes_gym/Surrogate-v0",
        workload=workload,
        oracle=policy_name == "sjf_oracle",
        disable_env_checker=True,
        **env_kwargs,
    )
    policy = make_policy(policy_name)
    agent = PolicyAgent(policy)
    start = time.perf_counter()
    result = run_episode(env, agent, seed=seed)
    ms = np.asarray(agent.decision_ms) if agent.decision_ms else np.zeros(1)
    return {
        "workload": label,
        "seed": seed,
        "policy": policy_name,
        "mean_qoe": result.summary["mean_qoe"],
        "mean_qoe_fixed": result.summary["mean_qoe_fixed"],
        "p10_qoe": result.summary["p10_qoe"],
        "preemptions_per_request": result.summary["preemptions_per_request"],
        "decision_ms_p50": float(np.percentile(ms, 50)),
        "decision_ms_p99": float(np.percentile(ms, 99)),
        "decision_ms_mean": float(ms.mean()),
        "episode_s": time.perf_counter() - start,
        "choices": dict(getattr(policy, "choices", {}) or {}),
    }


def table(rows: list[dict], workloads: list[str], policies: list[str]) -> list[str]:
    out = [
        "| workload | " + " | ".join(policies) + " | planner/andes | planner/andes fixed "
        "| oracle/andes | planner wins | planner ms p50 / p99 |",
        "|---|" + "---|" * (len(policies) + 6),
    ]
    for w in workloads:
        by = {p: [r for r in rows if r["workload"] == w and r["policy"] == p] for p in policies}
        if not all(by.values()):
            continue
        mean = {p: np.mean([r["mean_qoe"] for r in by[p]]) for p in policies}
        fixed = {p: np.mean([r["mean_qoe_fixed"] for r in by[p]]) for p in policies}
        cells = [f"{mean[p]:.4f} / {fixed[p]:.4f}" for p in policies]
        line = f"| {w} | " + " | ".join(cells)
        if "andes_rollout" in by and "andes" in by:
            pairs = list(zip(by["andes_rollout"], by["andes"], strict=True))
            wins = sum(a["mean_qoe"] > b["mean_qoe"] for a, b in pairs)
            ms50 = np.mean([r["decision_ms_p50"] for r in by["andes_rollout"]])
            ms99 = np.mean([r["decision_ms_p99"] for r in by["andes_rollout"]])
            oracle = mean.get("sjf_oracle", float("nan")) / mean["andes"]
            line += (
                f" | {mean['andes_rollout'] / mean['andes']:.3f}x"
                f" | {fixed['andes_rollout'] / fixed['andes']:.3f}x | {oracle:.3f}x"
                f" | {wins}/{len(pairs)} | {ms50:.2f} / {ms99:.1f} |"
            )
        out.append(line)
    return out


def pooled(rows: list[dict], workloads: list[str], name: str) -> str:
    sel = [r for r in rows if r["workload"] in workloads]
    means = {}
    for p in ("andes", "andes_rollout", "sjf_oracle", "fcfs"):
        q = [r["mean_qoe"] for r in sel if r["policy"] == p]
        f = [r["mean_qoe_fixed"] for r in sel if r["policy"] == p]
        if q:
            means[p] = (np.mean(q), np.mean(f))
    if "andes" not in means or "andes_rollout" not in means:
        return ""
    a, r = means["andes"], means["andes_rollout"]
    text = f"- {name}: planner {r[0]:.4f} vs andes {a[0]:.4f} ({r[0] / a[0]:.3f}x; delay_fixed {r[1] / a[1]:.3f}x)"
    if "sjf_oracle" in means:
        o = means["sjf_oracle"]
        text += f"; oracle SJF {o[0] / a[0]:.3f}x (delay_fixed {o[1] / a[1]:.3f}x)"
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--workloads", nargs="+", default=None, help="presets (default: section 3's + quickstart)"
    )
    parser.add_argument("--seeds", nargs="+", type=int, default=SEEDS)
    parser.add_argument("--policies", nargs="+", default=POLICIES)
    parser.add_argument(
        "--paper", action="store_true", help="also the paper suite's cells (seed 0)"
    )
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", default="planner")
    args = parser.parse_args(argv)

    workloads: dict[str, tuple] = {}
    names = args.workloads or ["bursty_2x_cpu_200rps", *TRAINING, *HELD_OUT]
    for name in names:
        workloads[name] = (QUICKSTART if name == QUICKSTART["name"] else name, CPU_ENV, args.seeds)
    if args.paper:
        for label, wl in paper_workloads().items():
            workloads[f"paper:{label}"] = (wl, PAPER_ENV, [0])
    tasks = [
        (label, wl, env, seed, p)
        for label, (wl, env, seeds) in workloads.items()
        for seed in seeds
        for p in args.policies
    ]
    # The planner's cells last longest: start them first.
    tasks.sort(key=lambda t: t[4] != "andes_rollout")
    start = time.perf_counter()
    with ProcessPoolExecutor(args.workers) as pool:
        rows = list(pool.map(run_cell, tasks))
    wall = time.perf_counter() - start

    lines = header("Look-ahead planner vs Andes (issue 14, section 1)")
    lines += [
        f"{len(tasks)} episodes in {wall / 60:.1f} min ({args.workers} workers). Each cell: mean "
        "QoE paper form / `delay_fixed`, mean over the seeds. `andes_rollout` defaults: "
        "horizon 10 look-aheads, 4 sampled futures, re-plan every 8 contested decisions. "
        "Decision times are per contested decision (planning ones and the ones in between).",
        "",
    ]
    cpu = [w for w in workloads if not w.startswith("paper:")]
    lines += ["### cpu_tiny surrogate, seeds " + ", ".join(map(str, args.seeds)), ""]
    lines += table(rows, cpu, args.policies) + [""]
    for text in (
        pooled(rows, [w for w in cpu if w in TRAINING], "section-3 training workloads"),
        pooled(rows, [w for w in cpu if w in HELD_OUT], "held-out workloads"),
        pooled(rows, cpu, "all cpu_tiny workloads"),
    ):
        if text:
            lines.append(text)
    paper = [w for w in workloads if w.startswith("paper:")]
    if paper:
        lines += ["", "### paper suite cells (llama7b_a100, seed 0)", ""]
        lines += table(rows, paper, args.policies) + [""]
        text = pooled(rows, paper, "paper suite")
        if text:
            lines.append(text)
    choices: dict[str, int] = {}
    for r in rows:
        for k, v in r["choices"].items():
            choices[k] = choices.get(k, 0) + v
    if choices:
        total = max(sum(choices.values()), 1)
        lines += [
            "",
            "Planner choices over all episodes: "
            + ", ".join(
                f"{k} {v / total:.0%}" for k, v in sorted(choices.items(), key=lambda kv: -kv[1])
            ),
        ]
    write_section(args.out, lines)
    (RESULTS_DIR / f"{args.out}.json").write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
