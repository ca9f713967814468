"""Per-request records of one episode and the comparison of a surrogate run with a live run.

Both runs play the same workload (row i is workload request i in both), so requests are
compared pairwise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from andes_gym.calibration.compare import error_summary

# Per-request quantities compared (arrays of `RunRecord`), with their units.
COMPARED: tuple[tuple[str, str], ...] = (
    ("ttft_s", "s"),
    ("tbt_mean_s", "s"),
    ("completion_s", "s"),
    ("qoe", "1"),
    ("num_preemptions", "count"),
)


@dataclass(frozen=True, eq=False)
class RunRecord:
    """What one episode delivered, per workload request.

    Attributes:
        engine: "surrogate" or "live".
        policy: Policy name.
        workload: Workload name.
        seed: Episode seed.
        ttft_s: First token time minus arrival (NaN if no token).
        tbt_mean_s: Mean time between tokens (NaN below two tokens).
        completion_s: Last token time minus arrival (NaN if no token).
        qoe: QoE (delay variant; unfinished requests at their lower bound).
        qoe_fixed: QoE, delay_fixed variant.
        num_preemptions: Preemptions.
        finished: All tokens delivered.
        summary: The episode summary (`andes_gym.metrics.summarize` fields).
    """

    engine: str
    policy: str
    workload: str
    seed: int
    ttft_s: np.ndarray
    tbt_mean_s: np.ndarray
    completion_s: np.ndarray
    qoe: np.ndarray
    qoe_fixed: np.ndarray
    num_preemptions: np.ndarray
    finished: np.ndarray
    summary: dict

    def __len__(self) -> int:
        return len(self.qoe)


def record_from_episode(env, result, engine: str, workload_name: str) -> RunRecord:
    """A record from an environment after `andes_gym.evaluation.run_episode`.

    Completion times come from the backend's QoE tracker (`last_token_s`), which both
    backends keep on their own engine clock; the other fields from the episode's metrics.

    Args:
        env: The environment the episode ran in (possibly wrapped).
        result: The `EpisodeResult`.
        engine: Label of the engine.
        workload_name: Label of the workload.

    Raises:
        ValueError: When not every workload request arrived (a truncated episode).
    """
    base = env.unwrapped
    n = len(base.workload)
    m = result.requests
    if len(m.qoe) != n:
        raise ValueError(
            f"episode covers {len(m.qoe)} of {n} requests; run fidelity episodes to the end"
        )
    state = base.backend.tracker.state
    arrival = np.asarray(state.arrival_s[:n], dtype=np.float64)
    last = np.asarray(state.last_token_s[:n], dtype=np.float64)
    return RunRecord(
        engine=engine,
        policy=result.agent,
        workload=workload_name,
        seed=int(result.seed),
        ttft_s=np.asarray(m.ttft_s, dtype=np.float64),
        tbt_mean_s=np.asarray(m.tbt_mean_s, dtype=np.float64),
        completion_s=last - arrival,
        qoe=np.asarray(m.qoe, dtype=np.float64),
        qoe_fixed=np.asarray(m.qoe_fixed, dtype=np.float64),
        num_preemptions=np.asarray(m.num_preemptions, dtype=np.int64),
        finished=np.asarray(m.finished, dtype=bool),
        summary=dict(result.summary),
    )


def compare_records(surrogate: RunRecord, live: RunRecord) -> dict:
    """Errors of the surrogate against the live engine, per request.

    Relative errors use the live value as denominator; for the preemption count (mostly
    zeros) the mean absolute difference per request and the totals are reported instead.

    Returns:
        `{"ttft_s": {...}, "tbt_mean_s": {...}, "completion_s": {...}, "qoe": {...},
        "num_preemptions": {...}, "mean_abs_qoe_error": x, "mean_qoe": {...}}`.
    """
    if len(surrogate) != len(live):
        raise ValueError(f"runs differ in length: {len(surrogate)} vs {len(live)} requests")
    out: dict = {}
    for name in ("ttft_s", "tbt_mean_s", "completion_s", "qoe"):
        out[name] = error_summary(getattr(surrogate, name), getattr(live, name))
    q_err = np.abs(surrogate.qoe - live.qoe)
    out["mean_abs_qoe_error"] = float(q_err.mean())
    out["p90_abs_qoe_error"] = float(np.percentile(q_err, 90))
    out["mean_qoe"] = {"surrogate": float(surrogate.qoe.mean()), "live": float(live.qoe.mean())}
    out["mean_qoe_fixed"] = {
        "surrogate": float(surrogate.qoe_fixed.mean()),
        "live": float(live.qoe_fixed.mean()),
    }
    sp, lp = surrogate.num_preemptions, live.num_preemptions
    out["num_preemptions"] = {
        "mean_abs_error": float(np.abs(sp - lp).mean()),
        "total_surrogate": int(sp.sum()),
        "total_live": int(lp.sum()),
    }
    for name in ("ttft_s", "tbt_mean_s", "completion_s"):
        s, v = getattr(surrogate, name), getattr(live, name)
        ok = np.isfinite(s) & np.isfinite(v)
        # Signed bias: > 0 when the surrogate is slower than the engine.
        out[name]["median_signed_rel_error"] = (
            float(np.median((s[ok] - v[ok]) / np.maximum(np.abs(v[ok]), 1e-12)))
            if ok.any()
            else None
        )
        out[name].update(distribution_errors(s[ok], v[ok]))
    return out


def distribution_errors(surrogate: np.ndarray, live: np.ndarray) -> dict:
    """How far the surrogate's median and p90 are from the live ones (relative).

    Per-request errors include the phase noise of each request (which step an arrival
    falls into); these compare the distributions, as simulator papers usually report.
    """
    if len(live) == 0:
        return {
            key: None
            for key in (
                "median_live",
                "median_surrogate",
                "p90_live",
                "p90_surrogate",
                "dist_median_rel_error",
                "dist_p90_rel_error",
            )
        }
    med_l, med_s = float(np.median(live)), float(np.median(surrogate))
    p90_l, p90_s = float(np.percentile(live, 90)), float(np.percentile(surrogate, 90))
    return {
        "median_live": med_l,
        "median_surrogate": med_s,
        "p90_live": p90_l,
        "p90_surrogate": p90_s,
        "dist_median_rel_error": abs(med_s - med_l) / max(abs(med_l), 1e-12),
        "dist_p90_rel_error": abs(p90_s - p90_l) / max(abs(p90_l), 1e-12),
    }


REQUEST_FIELDS = (
    "ttft_s",
    "tbt_mean_s",
    "completion_s",
    "qoe",
    "qoe_fixed",
    "num_preemptions",
    "finished",
)
"""The per-request arrays of a `RunRecord` that fidelity compares."""


def pooled_errors(pairs: list[tuple[RunRecord, RunRecord]]) -> dict:
    """`compare_records` over several seeds at once (requests of all seeds pooled)."""
    if not pairs:
        raise ValueError("no runs to pool")

    def cat(which: int, name: str) -> np.ndarray:
        return np.concatenate([getattr(p[which], name) for p in pairs])

    fields = REQUEST_FIELDS
    first_s, first_l = pairs[0]
    merged = [
        RunRecord(
            engine=r.engine,
            policy=r.policy,
            workload=r.workload,
            seed=-1,
            **{f: cat(i, f) for f in fields},
            summary={},
        )
        for i, r in enumerate((first_s, first_l))
    ]
    return compare_records(*merged)
