"""The sweep's results table: trials ranked by held-out mean QoE against andes, the mean
over seeds per grid point, and the Markdown of `sweep.md`.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from andes_gym.scale.sweep import SweepSpec

TRIAL_FIELDS = (
    "rank",
    "trial",
    "grid",
    "seed",
    "status",
    "learned_mean_qoe",
    "andes_mean_qoe",
    "qoe_vs_andes",
    "seeds_won",
    "num_seeds",
    "wall_s",
    "run_dir",
    "error",
)


def rank(rows: list[dict]) -> list[dict]:
    """Rows ordered by learned mean QoE relative to andes (best first), failed trials last."""

    def key(row: dict) -> tuple:
        ratio = row.get("qoe_vs_andes")
        ok = row["status"] == "ok" and ratio is not None and not math.isnan(ratio)
        return (not ok, -(ratio if ok else 0.0), row["trial"])

    ranked = sorted(rows, key=key)
    for i, row in enumerate(ranked, start=1):
        row["rank"] = i if row["status"] == "ok" else ""
    return ranked


def _fmt(value, spec: str) -> str:
    if value is None or value == "" or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return format(value, spec)


def grid_means(rows: list[dict]) -> list[dict]:
    """Mean over seeds per grid point (successful trials), best learned/andes first."""
    groups: dict[str, list[dict]] = {}
    for row in rows:
        if row["status"] == "ok":
            groups.setdefault(row["grid"], []).append(row)
    out = []
    for grid, group in groups.items():
        n = len(group)
        out.append(
            {
                "grid": grid,
                "num_trials": n,
                "learned_mean_qoe": sum(r["learned_mean_qoe"] for r in group) / n,
                "andes_mean_qoe": sum(r["andes_mean_qoe"] for r in group) / n,
                "qoe_vs_andes": sum(r["qoe_vs_andes"] for r in group) / n,
                "seeds_won": sum(r["seeds_won"] for r in group),
                "num_seeds": sum(r["num_seeds"] for r in group),
            }
        )
    return sorted(out, key=lambda r: -r["qoe_vs_andes"])


def sweep_markdown(
    rows: list[dict], spec: SweepSpec, config_path: str, overrides: list[str]
) -> str:
    """The ranked trials table and the per-grid-point means, as Markdown."""
    where = "this process" if spec.ray is None else f"Ray Tune (`--ray {spec.ray}`)"
    lines = [
        "# Sweep\n",
        f"- config: `{config_path}`",
        f"- fixed overrides: {', '.join(f'`{o}`' for o in overrides) or 'none'}",
        f"- grid: {', '.join(f'`{k}` in {v}' for k, v in spec.grid.items()) or 'none'}; "
        f"seeds: {', '.join(map(str, spec.seeds))}",
        f"- trials: {len(rows)}, run in {where}",
        "",
        "## Trials ranked by held-out mean QoE against andes\n",
        "learned/andes: the learned policy's mean QoE over the config's held-out "
        "`eval.seeds` divided by andes's on the same seeds; seeds won: held-out seeds where "
        "the learned policy's mean QoE is higher.\n",
        "| rank | trial | grid point | seed | learned QoE | andes QoE | learned/andes "
        "| seeds won | wall s | run dir |",
        "|---:|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        if r["status"] != "ok":
            continue
        lines.append(
            f"| {r['rank']} | {r['trial']} | {r['grid'] or '-'} | {r['seed']} "
            f"| {_fmt(r['learned_mean_qoe'], '.4f')} | {_fmt(r['andes_mean_qoe'], '.4f')} "
            f"| {_fmt(r['qoe_vs_andes'], '.4f')} | {r['seeds_won']}/{r['num_seeds']} "
            f"| {_fmt(r.get('wall_s'), '.0f')} | `{r['run_dir']}` |"
        )
    means = grid_means(rows)
    if means and len(means) < sum(r["status"] == "ok" for r in rows):
        lines += [
            "",
            "## Grid points (mean over seeds)\n",
            "| grid point | trials | learned QoE | andes QoE | learned/andes | seeds won |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for m in means:
            lines.append(
                f"| {m['grid'] or '-'} | {m['num_trials']} | {m['learned_mean_qoe']:.4f} "
                f"| {m['andes_mean_qoe']:.4f} | {m['qoe_vs_andes']:.4f} "
                f"| {m['seeds_won']}/{m['num_seeds']} |"
            )
    failed = [r for r in rows if r["status"] != "ok"]
    if failed:
        lines += ["", "## Failed trials\n", "| trial | grid point | seed | error | run dir |"]
        lines.append("|---|---|---:|---|---|")
        for r in failed:
            error = str(r.get("error", "")).replace("|", "\\|").replace("\n", " ")
            lines.append(
                f"| {r['trial']} | {r['grid'] or '-'} | {r['seed']} | {error} "
                f"| `{r.get('run_dir') or '-'}` |"
            )
    return "\n".join(lines) + "\n"
