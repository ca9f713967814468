"""Scatter plots of surrogate vs live per-request metrics (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from andes_gym.calibration.fidelity_data import RunRecord
from andes_gym.extras import require

_PANELS: tuple[tuple[str, str, float, bool], ...] = (
    # (field, label, unit scale, log axes)
    ("ttft_s", "TTFT (ms)", 1e3, True),
    ("tbt_mean_s", "mean time between tokens (ms)", 1e3, True),
    ("completion_s", "completion time (ms)", 1e3, True),
    ("qoe", "QoE", 1.0, False),
)


def plot_scatter(
    pairs: dict[tuple[str, str], list[tuple[RunRecord, RunRecord]]], path: Path
) -> Path:
    """One row per (workload, policy), one column per metric: surrogate (y) vs live (x).

    Args:
        pairs: `(workload, policy) -> [(surrogate record, live record), ...]` (seeds pooled).
        path: PNG to write.

    Returns:
        The path written.
    """
    matplotlib = require("matplotlib", "the fidelity plot (or pass --no-plot)")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    keys = sorted(pairs)
    fig, axes = plt.subplots(
        len(keys), len(_PANELS), figsize=(3.2 * len(_PANELS), 2.9 * len(keys)), squeeze=False
    )
    for row, key in enumerate(keys):
        for col, (name, label, scale, log) in enumerate(_PANELS):
            ax = axes[row][col]
            live = np.concatenate([getattr(live_r, name) for _, live_r in pairs[key]]) * scale
            surr = np.concatenate([getattr(s_r, name) for s_r, _ in pairs[key]]) * scale
            ok = np.isfinite(live) & np.isfinite(surr)
            if log:
                ok &= (live > 0) & (surr > 0)
            ax.scatter(live[ok], surr[ok], s=4, alpha=0.4, linewidths=0)
            if ok.any():
                lo, hi = min(live[ok].min(), surr[ok].min()), max(live[ok].max(), surr[ok].max())
                ax.plot([lo, hi], [lo, hi], color="k", lw=0.8, ls="--")
            if log:
                ax.set_xscale("log")
                ax.set_yscale("log")
                # Minor tick labels of narrow log ranges overlap; the major ones suffice.
                ax.xaxis.set_minor_formatter(NullFormatter())
                ax.yaxis.set_minor_formatter(NullFormatter())
            ax.set_xlabel(f"live {label}", fontsize=8)
            ax.set_ylabel(f"surrogate {label}", fontsize=8)
            ax.tick_params(labelsize=7)
            if col == 0:
                ax.set_title(f"{key[0]} / {key[1]}", fontsize=9, loc="left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=72)
    plt.close(fig)
    return path
