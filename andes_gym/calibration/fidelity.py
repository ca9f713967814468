"""The fidelity benchmark: how well the surrogate reproduces the live vLLM engine.

Each workload is drawn once per seed; the same `Workload` then runs under each policy on
the surrogate (an engine profile) and on the live engine (its latency prediction switched
to the same profile), both through `PolicyAgent` + `run_episode` (`fidelity_run`). Per
request it compares TTFT, mean time between tokens, completion time, QoE and preemptions
(`fidelity_data`); reports median / p90 relative errors and the mean absolute QoE error
per (workload, policy); and Kendall's tau between the policies' mean-QoE rankings on the
two engines (per workload, and over all (workload, policy) pairs). The command is
`python -m andes_gym.fidelity`.

Targets (issue 8): mean |QoE error| <= 0.03 and median TTFT error <= 10% on every workload.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import time
from pathlib import Path

import numpy as np

from andes_gym.calibration.calibrate import load_average
from andes_gym.calibration.compare import kendall_tau
from andes_gym.calibration.fidelity_data import (
    REQUEST_FIELDS,
    RunRecord,
    compare_records,
    pooled_errors,
)
from andes_gym.calibration.fidelity_plot import plot_scatter
from andes_gym.calibration.fidelity_run import EnvArgs, LiveRunner, run_surrogate
from andes_gym.calibration.workload_specs import draw_workload
from andes_gym.surrogate.profile import load_engine_profile

QOE_TARGET = 0.03
TTFT_TARGET = 0.10
DEFAULT_WORKLOADS = "steady_poisson_cpu,bursty_2x_cpu,gamma_overload_cpu"


# ----------------------------------------------------------------------------- running
def run_fidelity(
    workload_specs: list[str],
    trace: str | None,
    policies: list[str],
    seeds: list[int],
    profile: str,
    live_engine: str,
    env_args: EnvArgs,
    trace_time_scale: float = 0.02,
    log=print,
    engine_handle=None,
    warmup: bool = True,
    noise_floor: bool = True,
    noise_floor_policies: list[str] | None = None,
) -> tuple[dict, dict[tuple[str, str], list[tuple[RunRecord, RunRecord]]]]:
    """Runs every (workload, seed, policy) on both engines and compares them.

    Args:
        workload_specs: Preset specs (`name` or `name@key=value,...`); ignored with `trace`.
        trace: A project-format CSV trace, or None.
        policies: Registered policy names.
        seeds: Episode seeds (one workload draw per seed).
        profile: The surrogate's engine profile (name or path).
        live_engine: The live engine config (name or path).
        env_args: Environment arguments of both engines.
        trace_time_scale: `targets.time_scale` for traces without QoE targets.
        log: Progress printer.
        engine_handle: A running live engine (with the environment's scheduler hook) to
            share; None starts one and releases it at the end.
        warmup: Run an untimed episode (the first 100 requests of the first workload)
            on the live engine first: its first steps are slower (allocator, caches).
        noise_floor: Also run policies a second time on the live engine, per workload
            and seed, and report live-vs-live errors: how far the engine is from itself,
            the floor no surrogate can beat on this machine.
        noise_floor_policies: The policies re-run for the noise floor (None: the first).

    Returns:
        `(report, pairs)`: the JSON-able report and the records per (workload, policy).
    """
    prof = load_engine_profile(profile)
    sources = [(None, trace)] if trace is not None else [(s, None) for s in workload_specs]
    pairs: dict[tuple[str, str], list[tuple[RunRecord, RunRecord]]] = {}
    repeats: dict[tuple[str, str], list[tuple[RunRecord, RunRecord]]] = {}
    floor_policies = [p for p in (noise_floor_policies or policies[:1]) if p in policies]
    runs = []
    load_before = load_average()
    live = LiveRunner(live_engine, latency_profile=profile, handle=engine_handle)
    try:
        for spec, tr in sources:
            for seed in seeds:
                label, wl = draw_workload(spec, tr, seed, trace_time_scale)
                if warmup:
                    warm = wl.select(np.arange(len(wl)) < 100)
                    live.run(warm, policies[0], seed, env_args, "warm-up")
                    warmup = False
                for policy in policies:
                    start = time.perf_counter()
                    surr = run_surrogate(wl, prof, policy, seed, env_args, label)
                    real = live.run(wl, policy, seed, env_args, label)
                    pairs.setdefault((label, policy), []).append((surr, real))
                    cmp = compare_records(surr, real)
                    runs.append(
                        {
                            "workload": label,
                            "policy": policy,
                            "seed": seed,
                            "num_requests": len(wl),
                            "errors": cmp,
                            "summary_surrogate": surr.summary,
                            "summary_live": real.summary,
                        }
                    )
                    log(
                        f"{label:24s} {policy:12s} seed {seed}: live QoE "
                        f"{cmp['mean_qoe']['live']:.3f} surrogate {cmp['mean_qoe']['surrogate']:.3f}"
                        f"  |dQoE| {cmp['mean_abs_qoe_error']:.3f}  TTFT err "
                        f"{_pct(cmp['ttft_s']['median_rel_error'])}"
                        f"  ({time.perf_counter() - start:.0f} s)"
                    )
                for policy in floor_policies if noise_floor else []:
                    again = live.run(wl, policy, seed, env_args, label)
                    first = pairs[(label, policy)][-1][1]
                    repeats.setdefault((label, policy), []).append((again, first))
    finally:
        live.close()
    floors = {key: pooled_errors(prs) for key, prs in sorted(repeats.items())}
    report = {
        "profile": str(profile),
        "live_engine": str(live_engine),
        "env_args": dataclasses.asdict(env_args),
        "policies": policies,
        "seeds": seeds,
        "workloads": sorted({k[0] for k in pairs}),
        "load_average_before": load_before,
        "load_average_after": load_average(),
        "targets": {"mean_abs_qoe_error": QOE_TARGET, "median_ttft_rel_error": TTFT_TARGET},
        "runs": runs,
        "results": _aggregate(pairs, floors),
        "ranking": ranking_transfer(pairs),
        "noise_floor": [
            {"workload": label, "policy": policy, **err} for (label, policy), err in floors.items()
        ],
    }
    return report, pairs


def _summary_mean(prs, which: int, key: str) -> float | None:
    """Mean over seeds of a summary field of the surrogate (0) or live (1) runs."""
    vals = [p[which].summary.get(key) for p in prs]
    vals = [v for v in vals if v is not None]
    return float(np.mean(vals)) if vals else None


def _aggregate(pairs, floors=None) -> list[dict]:
    """Errors per (workload, policy) with the seeds' requests pooled, and target checks.

    Where the live run was repeated (`floors`: its pooled live-vs-live errors per
    (workload, policy)), a row also carries those errors (`noise_floor`) and whether the
    surrogate is within them.
    """
    rows = []
    for (label, policy), prs in sorted(pairs.items()):
        err = pooled_errors(prs)
        ttft = err["ttft_s"]["median_rel_error"]
        floor = None
        if floors and (label, policy) in floors:
            f = floors[(label, policy)]
            floor = {
                "mean_abs_qoe_error": f["mean_abs_qoe_error"],
                "ttft_median_rel_error": f["ttft_s"]["median_rel_error"],
                "qoe_within": err["mean_abs_qoe_error"] <= f["mean_abs_qoe_error"],
                "ttft_within": ttft is not None
                and f["ttft_s"]["median_rel_error"] is not None
                and ttft <= f["ttft_s"]["median_rel_error"],
            }

        rows.append(
            {
                "workload": label,
                "policy": policy,
                "num_seeds": len(prs),
                "num_requests": int(sum(len(s) for s, _ in prs)),
                **err,
                "iterations": {
                    "live": _summary_mean(prs, 1, "num_iterations"),
                    "surrogate": _summary_mean(prs, 0, "num_iterations"),
                },
                "live_step_ms_mean": _summary_mean(prs, 1, "engine_step_ms_mean"),
                "live_between_steps_ms_mean": _summary_mean(prs, 1, "between_steps_ms_mean"),
                "meets_qoe_target": err["mean_abs_qoe_error"] <= QOE_TARGET,
                "meets_ttft_target": ttft is not None and ttft <= TTFT_TARGET,
                "noise_floor": floor,
            }
        )
    return rows


def ranking_transfer(pairs) -> dict:
    """Kendall's tau between mean-QoE rankings of the policies on the two engines."""
    mean_qoe: dict[tuple[str, str], tuple[float, float]] = {}
    for key, prs in pairs.items():
        mean_qoe[key] = (
            float(np.mean([s.qoe.mean() for s, _ in prs])),
            float(np.mean([r.qoe.mean() for _, r in prs])),
        )
    out: dict = {"per_workload": {}}
    for label in sorted({k[0] for k in mean_qoe}):
        keys = sorted(k for k in mean_qoe if k[0] == label)
        s = np.array([mean_qoe[k][0] for k in keys])
        v = np.array([mean_qoe[k][1] for k in keys])
        out["per_workload"][label] = {
            "policies": [k[1] for k in keys],
            "mean_qoe_surrogate": s.round(4).tolist(),
            "mean_qoe_live": v.round(4).tolist(),
            "kendall_tau": kendall_tau(s, v) if len(keys) >= 2 else None,
        }
    keys = sorted(mean_qoe)
    if len(keys) >= 2:
        out["all_pairs_kendall_tau"] = kendall_tau(
            np.array([mean_qoe[k][0] for k in keys]), np.array([mean_qoe[k][1] for k in keys])
        )
    return out


# ----------------------------------------------------------------------------- output
def _num(x, digits: int = 0) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def _ms(x) -> str:
    return "n/a" if x is None else f"{1e3 * x:.2f}"


def _pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _floor_cell(floor: dict | None) -> str:
    """`0.161 / 28.5%`, each marked `(within)` when the surrogate's error is not larger."""
    if not floor:
        return "n/a"
    qoe = f"{floor['mean_abs_qoe_error']:.3f}" + (" (within)" if floor["qoe_within"] else "")
    ttft = _pct(floor["ttft_median_rel_error"]) + (" (within)" if floor["ttft_within"] else "")
    return f"{qoe} / {ttft}"


def markdown_table(report: dict) -> str:
    """The results as Markdown tables (errors per workload and policy; ranking)."""
    lines = [
        "| workload | policy | n | live QoE | surr. QoE | mean abs QoE err | TTFT err med / p90 "
        "| TBT err med / p90 | completion err med / p90 | preemptions live / surr. "
        "| TTFT median live / surr. (ms) | iterations live / surr. | live step + gap (ms) "
        "| targets | live vs live: QoE err / TTFT err |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["results"]:
        ok = (
            "yes"
            if r["meets_qoe_target"] and r["meets_ttft_target"]
            else ("QoE" if r["meets_qoe_target"] else ("TTFT" if r["meets_ttft_target"] else "no"))
        )
        ok = {"yes": "met", "QoE": "QoE only", "TTFT": "TTFT only", "no": "missed"}[ok]
        lines.append(
            f"| {r['workload']} | {r['policy']} | {r['num_requests']} "
            f"| {r['mean_qoe']['live']:.3f} | {r['mean_qoe']['surrogate']:.3f} "
            f"| {r['mean_abs_qoe_error']:.3f} "
            f"| {_pct(r['ttft_s']['median_rel_error'])} / {_pct(r['ttft_s']['p90_rel_error'])} "
            f"| {_pct(r['tbt_mean_s']['median_rel_error'])} / {_pct(r['tbt_mean_s']['p90_rel_error'])} "
            f"| {_pct(r['completion_s']['median_rel_error'])} / "
            f"{_pct(r['completion_s']['p90_rel_error'])} "
            f"| {r['num_preemptions']['total_live']} / {r['num_preemptions']['total_surrogate']} "
            f"| {_ms(r['ttft_s']['median_live'])} / {_ms(r['ttft_s']['median_surrogate'])} "
            f"| {_num(r['iterations']['live'])} / {_num(r['iterations']['surrogate'])} "
            f"| {_num(r['live_step_ms_mean'], 2)} + {_num(r['live_between_steps_ms_mean'], 2)} "
            f"| {ok} | {_floor_cell(r.get('noise_floor'))} |"
        )
    if report.get("noise_floor"):
        lines += [
            "",
            "Noise floor: the live engine against itself (the same workload and policy run twice):",
            "",
            "| workload | policy | mean abs QoE err | TTFT err med / p90 | TBT err med / p90 "
            "| completion err med / p90 |",
            "|---|---|---|---|---|---|",
        ]
        for r in report["noise_floor"]:
            lines.append(
                f"| {r['workload']} | {r['policy']} | {r['mean_abs_qoe_error']:.3f} "
                f"| {_pct(r['ttft_s']['median_rel_error'])} / {_pct(r['ttft_s']['p90_rel_error'])} "
                f"| {_pct(r['tbt_mean_s']['median_rel_error'])} / "
                f"{_pct(r['tbt_mean_s']['p90_rel_error'])} "
                f"| {_pct(r['completion_s']['median_rel_error'])} / "
                f"{_pct(r['completion_s']['p90_rel_error'])} |"
            )
    rank = report["ranking"]
    lines += [
        "",
        "| workload | policies | live mean QoE | surrogate mean QoE | Kendall tau |",
        "|---|---|---|---|---|",
    ]
    for label, r in rank["per_workload"].items():
        tau = (
            "n/a"
            if r["kendall_tau"] is None or np.isnan(r["kendall_tau"])
            else f"{r['kendall_tau']:.2f}"
        )
        lines.append(
            f"| {label} | {', '.join(r['policies'])} | "
            f"{', '.join(f'{x:.3f}' for x in r['mean_qoe_live'])} | "
            f"{', '.join(f'{x:.3f}' for x in r['mean_qoe_surrogate'])} | {tau} |"
        )
    if "all_pairs_kendall_tau" in rank:
        lines.append(
            f"\nKendall tau over all (workload, policy) pairs: {rank['all_pairs_kendall_tau']:.2f}"
        )
    return "\n".join(lines) + "\n"


def write_requests_csv(pairs, path: Path) -> None:
    """Every request of every run, surrogate and live side by side."""
    fields = REQUEST_FIELDS
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(
            [
                "workload",
                "policy",
                "seed",
                "request",
                *[f"{f}_{e}" for f in fields for e in ("live", "surrogate")],
            ]
        )
        for (label, policy), prs in sorted(pairs.items()):
            for surr, real in prs:
                for i in range(len(surr)):
                    vals = []
                    for f in fields:
                        vals += [getattr(real, f)[i].item(), getattr(surr, f)[i].item()]
                    w.writerow([label, policy, surr.seed, i, *vals])


def _json_default(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, float) and np.isnan(obj):
        return None
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")


def write_outputs(report: dict, pairs, out: Path, plot: bool = True) -> None:
    """fidelity.json, fidelity.md, requests.csv and (optionally) fidelity.png in `out`."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "fidelity.json").write_text(json.dumps(report, indent=1, default=_json_default))
    (out / "fidelity.md").write_text(markdown_table(report))
    write_requests_csv(pairs, out / "requests.csv")
    if plot:
        plot_scatter(pairs, out / "fidelity.png")
