"""Leaderboard plots (PNG): QoE CDFs, QoE against load, token timelines of sample requests.

Figures are built with `matplotlib.figure.Figure` directly (the Agg canvas, no pyplot
state), so plotting works headless and in worker-free code paths alike.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from andes_gym.extras import install_hint, is_available, require
from andes_gym.qoe import consumption_times


def _figure(width: float, height: float):
    Figure = require("matplotlib.figure", "leaderboard plots (or pass --no-plots)").Figure
    return Figure(figsize=(width, height), dpi=110, layout="constrained")


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=+-]", "_", text)


def _style(policy: str, oracle: bool) -> dict:
    return {"linestyle": "--" if oracle else "-", "label": policy + (" (oracle)" if oracle else "")}


def plot_qoe_cdf(records: Sequence[dict], workload: str, path: Path) -> bool:
    """Per-request QoE CDF of each policy on `workload` (requests pooled over seeds).

    Returns:
        False when there was nothing to plot (no OK cell), True otherwise.
    """
    by_policy: dict[str, list[np.ndarray]] = {}
    oracle: dict[str, bool] = {}
    for rec in records:
        if rec["workload"] != workload or rec["status"] != "ok":
            continue
        q = np.asarray(rec["requests"]["qoe"], dtype=float)
        by_policy.setdefault(rec["policy"], []).append(q)
        oracle[rec["policy"]] = bool(rec["oracle"])
    if not by_policy:
        return False
    fig = _figure(6.0, 4.0)
    ax = fig.add_subplot()
    for policy in sorted(by_policy):
        q = np.sort(np.concatenate(by_policy[policy]))
        y = np.arange(1, len(q) + 1) / len(q)
        ax.step(q, y, where="post", **_style(policy, oracle[policy]))
    ax.axvline(0.95, color="grey", linewidth=0.8, linestyle=":")
    ax.set_xlabel("request QoE (delay form)")
    ax.set_ylabel("fraction of requests ≤ x")
    ax.set_xlim(0.0, 1.0)
    ax.set_ylim(0.0, 1.0)
    ax.set_title(f"QoE CDF: {workload}")
    ax.legend(fontsize=7, loc="upper left")
    fig.savefig(path)
    return True


def plot_qoe_vs_load(
    points: Sequence[dict], title: str, parameter: str, path: Path, threshold: float = 0.95
) -> bool:
    """Mean QoE (mean over seeds) against a load parameter, one line per policy.

    Args:
        points: Dicts with `policy`, `load`, `mean_qoe`, optionally `oracle`.
        title: Figure title.
        parameter: The load parameter (x-axis label).
        path: PNG path.
        threshold: Drawn as a horizontal line (the capacity criterion).

    Returns:
        False when there was nothing to plot.
    """
    per: dict[str, dict[float, list[float]]] = {}
    oracle: dict[str, bool] = {}
    for p in points:
        if p.get("mean_qoe") is None:
            continue
        per.setdefault(p["policy"], {}).setdefault(float(p["load"]), []).append(p["mean_qoe"])
        oracle[p["policy"]] = bool(p.get("oracle", False))
    if not per:
        return False
    fig = _figure(6.0, 4.0)
    ax = fig.add_subplot()
    for policy in sorted(per):
        loads = sorted(per[policy])
        ax.plot(
            loads,
            [float(np.mean(per[policy][x])) for x in loads],
            marker="o",
            markersize=3,
            **_style(policy, oracle[policy]),
        )
    ax.axhline(threshold, color="grey", linewidth=0.8, linestyle=":")
    ax.set_xlabel(parameter)
    ax.set_ylabel("mean QoE (mean over seeds)")
    ax.set_ylim(0.0, 1.02)
    ax.set_title(title)
    ax.legend(fontsize=7, loc="lower left")
    fig.savefig(path)
    return True


def plot_token_timelines(records: Sequence[dict], workload: str, seed: int, path: Path) -> bool:
    """Expected vs actual consumed tokens over time for the sample requests of one episode.

    Like the Andes paper's timelines: the expected curve starts at the TTFT target and
    rises at the TDS target; each policy's curve counts the tokens the user has consumed
    (delivery paced at TDS, docs/ANDES.md §1).

    Returns:
        False when no cell of (workload, seed) kept timelines.
    """
    cells = [
        r
        for r in records
        if r["workload"] == workload
        and r["seed"] == seed
        and r["status"] == "ok"
        and r.get("timelines")
    ]
    if not cells:
        return False
    ids = sorted({int(i) for r in cells for i in r["timelines"]})
    fig = _figure(3.2 * len(ids), 3.2)
    axes = fig.subplots(1, len(ids), squeeze=False)[0]
    reqs = cells[0]["requests"]
    for ax, rid in zip(axes, ids, strict=True):
        t0 = reqs["arrival_s"][rid]
        ttft = reqs["target_ttft_s"][rid]
        tds = reqs["target_tds_tok_s"][rid]
        n = reqs["output_tokens"][rid]
        ideal = ttft + np.arange(n) / tds
        ax.step(
            np.r_[0.0, ideal],
            np.r_[0, np.arange(1, n + 1)],
            where="post",
            color="black",
            linestyle=":",
            label="expected",
        )
        for rec in sorted(cells, key=lambda r: r["policy"]):
            d = np.asarray(rec["timelines"].get(str(rid), []), dtype=float)
            if d.size == 0:
                continue
            a = consumption_times(d, tds=tds) - t0
            ax.step(
                np.r_[0.0, a],
                np.r_[0, np.arange(1, a.size + 1)],
                where="post",
                **_style(rec["policy"], bool(rec["oracle"])),
            )
        # A starved policy's curve can run for minutes; keep the ideal one readable.
        ax.set_xlim(0.0, 2.0 * float(ideal[-1]) + 1e-9)
        ax.set_title(f"request {rid} ({n} tokens)", fontsize=8)
        ax.set_xlabel("seconds since arrival")
    axes[0].set_ylabel("tokens consumed")
    axes[-1].legend(fontsize=6, loc="lower right")
    fig.suptitle(
        f"token timelines: {workload}, seed {seed} (x axis cut at 2x the ideal end)", fontsize=9
    )
    fig.savefig(path)
    return True


def write_plots(
    out_dir: Path,
    records: Sequence[dict],
    workload_order: Sequence[str],
    load_groups: dict[str, tuple[str, list[dict]]],
) -> list[Path]:
    """Writes every plot into `out_dir` and returns the paths written.

    Without matplotlib (the `plots` extra) it writes nothing, says so on stderr and returns
    an empty list, so a core install still produces the board's tables.

    Args:
        out_dir: Directory for the PNGs (created).
        records: Cell records of the ranking tables.
        workload_order: Workloads in suite order.
        load_groups: Group name -> (parameter, points) for QoE-vs-load plots.
    """
    if not is_available("matplotlib"):
        print(
            f"note: no plots (matplotlib is not installed: {install_hint('plots')})",
            file=sys.stderr,
        )
        return []
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for workload in workload_order:
        path = out_dir / f"qoe_cdf__{_safe(workload)}.png"
        if plot_qoe_cdf(records, workload, path):
            written.append(path)
        seeds = sorted({r["seed"] for r in records if r["workload"] == workload})
        if seeds:
            path = out_dir / f"timeline__{_safe(workload)}.png"
            if plot_token_timelines(records, workload, seeds[0], path):
                written.append(path)
    for group, (parameter, points) in sorted(load_groups.items()):
        path = out_dir / f"qoe_vs_load__{_safe(group)}.png"
        if plot_qoe_vs_load(points, f"QoE against load: {group}", parameter, path):
            written.append(path)
    return written
