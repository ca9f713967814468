"""Final evaluation: the trained policy against baselines on held-out seeds, as a table and CSV.

Every agent plays the same seeds (same workloads) through `andes_gym.evaluation.run_episode`:
baselines via `PolicyAgent`, the trained model via `ModelAgent`, an exported ONNX policy via
`PolicyAgent(load_policy(path))`, so all are scored by identical code.
"""

from __future__ import annotations

import csv
import math
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from andes_gym.agents.adapter import ModelAgent, PolicyAgent
from andes_gym.agents.learned import load_policy
from andes_gym.agents.registry import make_policy
from andes_gym.evaluation import run_episode
from andes_gym.training.factory import load_predictor, make_env

TABLE_COLUMNS: tuple[tuple[str, str, str], ...] = (
    # (summary field, header, format)
    ("mean_qoe", "mean QoE", ".4f"),
    ("mean_qoe_fixed", "QoE fixed", ".4f"),
    ("p10_qoe", "p10 QoE", ".4f"),
    ("frac_qoe_ge_095", "QoE>=.95", ".3f"),
    ("ttft_p50_s", "TTFT p50 s", ".3f"),
    ("ttft_p90_s", "TTFT p90 s", ".3f"),
    ("throughput_tok_s", "tok/s", ".1f"),
    ("preemptions_per_request", "preempt/req", ".3f"),
    ("num_unfinished", "unfinished", ".1f"),
    ("decision_ms_p50", "decide ms", ".3f"),
)


@dataclass(frozen=True)
class AgentSpec:
    """What to evaluate, in a form a worker process can rebuild.

    Attributes:
        kind: `policy` (registered name), `run` (a run directory's latest checkpoint, via
            ModelAgent) or `onnx` (an exported policy, via PolicyAgent).
        target: The name, run directory or ONNX path.
        label: Name in the table.
    """

    kind: str
    target: str
    label: str


def _make_agent(spec: AgentSpec):
    if spec.kind == "policy":
        return PolicyAgent(make_policy(spec.target))
    if spec.kind == "onnx":
        agent = PolicyAgent(load_policy(spec.target))
        agent.policy.name = spec.label
        return agent
    if spec.kind == "run":
        import torch

        torch.set_num_threads(1)
        return ModelAgent(load_predictor(spec.target), name=spec.label)
    raise ValueError(f"unknown agent kind {spec.kind!r}; expected policy, run or onnx")


def _episode(task: tuple) -> dict:
    env_id, env_kwargs, agent_spec, seed, max_steps = task
    env = make_env(env_id, env_kwargs)
    try:
        result = run_episode(env, _make_agent(agent_spec), seed, max_steps)
    finally:
        env.close()
    row = {"policy": agent_spec.label, "seed": seed, **result.summary}
    row["_qoe"] = result.requests.qoe.tolist()
    return row


def evaluate(
    env_id: str,
    env_kwargs: dict,
    agents: list[AgentSpec],
    seeds: list[int],
    max_steps: int | None = None,
    n_workers: int = 1,
) -> list[dict]:
    """Plays every agent on every seed.

    Args:
        env_id: Gymnasium id.
        env_kwargs: Its kwargs.
        agents: What to evaluate.
        seeds: Episode seeds (identical workloads for every agent).
        max_steps: Cut episodes after this many decisions.
        n_workers: Processes (1: in this process).

    Returns:
        One row per (agent, seed): `policy`, `seed`, the episode summary fields, and `_qoe`
        (per-request QoE, for win/loss comparisons).
    """
    tasks = [(env_id, dict(env_kwargs), a, int(s), max_steps) for a in agents for s in seeds]
    if n_workers <= 1 or len(tasks) == 1:
        return [_episode(t) for t in tasks]
    ctx = multiprocessing.get_context("forkserver")
    with ProcessPoolExecutor(max_workers=n_workers, mp_context=ctx) as pool:
        return list(pool.map(_episode, tasks))


def mean_rows(rows: list[dict]) -> list[dict]:
    """One row per policy: the mean over seeds of every numeric field (order kept)."""
    order: list[str] = []
    groups: dict[str, list[dict]] = {}
    for row in rows:
        if row["policy"] not in groups:
            order.append(row["policy"])
            groups[row["policy"]] = []
        groups[row["policy"]].append(row)
    out = []
    for name in order:
        group = groups[name]
        mean = {"policy": name, "seed": "mean"}
        for key in group[0]:
            if key in ("policy", "seed") or key.startswith("_"):
                continue
            values = [g[key] for g in group if isinstance(g[key], int | float)]
            mean[key] = float(np.nanmean(values)) if values else float("nan")
        out.append(mean)
    return out


def format_table(means: list[dict], reference: str | None = "andes") -> str:
    """A fixed-width text table of per-policy means, with the ratio to `reference`'s mean QoE."""
    ref = next((m["mean_qoe"] for m in means if m["policy"] == reference), None)
    headers = ["policy"] + [h for _, h, _ in TABLE_COLUMNS]
    if ref:
        headers.append(f"QoE/{reference}")
    lines = []
    for m in means:
        cells = [str(m["policy"])]
        for field, _, fmt in TABLE_COLUMNS:
            value = m.get(field, float("nan"))
            cells.append(
                "nan"
                if value is None or (isinstance(value, float) and math.isnan(value))
                else format(value, fmt)
            )
        if ref:
            cells.append(format(m["mean_qoe"] / ref, ".3f"))
        lines.append(cells)
    widths = [max(len(r[i]) for r in [headers, *lines]) for i in range(len(headers))]

    def fmt_row(cells: list[str]) -> str:
        pairs = enumerate(zip(cells, widths, strict=True))
        return "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in pairs)

    sep = "  ".join("-" * w for w in widths)
    return "\n".join([fmt_row(headers), sep, *(fmt_row(c) for c in lines)])


def write_csv(path: str | Path, rows: list[dict], means: list[dict]) -> None:
    """Per-seed rows then per-policy means, one CSV (columns: policy, seed, summary fields)."""
    public = [{k: v for k, v in r.items() if not k.startswith("_")} for r in rows + means]
    fields: list[str] = []
    for r in public:
        fields.extend(k for k in r if k not in fields)
    with Path(path).open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        writer.writerows(public)


def win_loss(rows: list[dict], policy: str, reference: str, margin: float = 0.01) -> dict:
    """Per-request comparison of two policies on the same seeds.

    Returns:
        `wins` / `losses` / `ties`: shares of requests where `policy`'s QoE is higher /
        lower than `reference`'s by more than `margin`, or within it; `seeds_won`: seeds
        where its mean QoE is higher.
    """
    mine = {r["seed"]: r for r in rows if r["policy"] == policy}
    ref = {r["seed"]: r for r in rows if r["policy"] == reference}
    seeds = sorted(set(mine) & set(ref))
    if not seeds:
        return {}
    a = np.concatenate(
        [np.asarray(mine[s]["_qoe"]) for s in seeds if len(mine[s]["_qoe"]) == len(ref[s]["_qoe"])]
    )
    b = np.concatenate(
        [np.asarray(ref[s]["_qoe"]) for s in seeds if len(mine[s]["_qoe"]) == len(ref[s]["_qoe"])]
    )
    d = a - b
    return {
        "wins": float((d > margin).mean()) if len(d) else float("nan"),
        "losses": float((d < -margin).mean()) if len(d) else float("nan"),
        "ties": float((np.abs(d) <= margin).mean()) if len(d) else float("nan"),
        "seeds_won": sum(mine[s]["mean_qoe"] > ref[s]["mean_qoe"] for s in seeds),
        "num_seeds": len(seeds),
    }


def final_table(run_dir: Path, cfg, learned: AgentSpec, note: str | None = None) -> list[dict]:
    """A trainer's final table: `learned` and `cfg.eval.baselines` on `cfg.eval.seeds`.

    Prints the table (`note` after it), the per-request wins and losses against `andes`
    and `fcfs`, and writes `eval.csv` and `eval.txt` into `run_dir`.

    Args:
        run_dir: The run directory.
        cfg: The run's `TrainConfig`.
        learned: The learned policy, labelled "learned".
        note: A line printed after the table, or None.

    Returns:
        The per-policy mean rows.
    """
    agents = [learned] + [AgentSpec("policy", name, name) for name in cfg.eval.baselines]
    rows = evaluate(
        cfg.env.id, cfg.env.kwargs, agents, cfg.eval.seeds, cfg.eval.max_steps, cfg.eval.n_workers
    )
    means = mean_rows(rows)
    table = format_table(means, reference="andes" if "andes" in cfg.eval.baselines else None)
    print(table)
    if note:
        print(note)
    for ref in ("andes", "fcfs"):
        if ref in cfg.eval.baselines:
            wl = win_loss(rows, "learned", ref)
            if wl:
                print(
                    f"learned vs {ref}: per request {wl['wins']:.1%} better, {wl['losses']:.1%} "
                    f"worse (|dQoE| > 0.01); higher mean QoE on "
                    f"{wl['seeds_won']}/{wl['num_seeds']} seeds"
                )
    write_csv(run_dir / "eval.csv", rows, means)
    (run_dir / "eval.txt").write_text(table + "\n")
    return means
