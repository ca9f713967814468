"""Calibrating the surrogate against a live vLLM engine: profile it, fit, write an engine profile.

`calibrate` runs the whole procedure that `python -m andes_gym.calibrate` exposes:

1. Start the live engine in-process (`engine_bridge.engine.create_engine`), or use one.
2. Run the profiling plan (`profiler.default_plan`: decode batch sizes x context lengths,
   prefill chunk sizes, mixed prefill + decode steps, a KV-overflow run with recompute
   preemption and re-prefill), timing every `engine.step()`; the median per distinct step
   is kept (the machine may be shared, so a robust statistic).
3. Fit the surrogate's linear latency model by non-negative least squares on relative
   error (`latency_fit`).
4. Write an engine profile in the surrogate's format (KV cache and limits copied from the
   live engine) with the fit's error in its header comments, and a sidecar
   `<out>.fit.json` (fit statistics per step kind, coefficients, the machine's load, the
   aggregated samples) because the profile loader accepts no extra keys.
5. Optionally run workloads through the live environment, fit what it adds to each
   iteration beyond the engine model (`overhead`) and write the serving terms into the
   profile's `overhead:` section.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path

from andes_gym.calibration.fit import FitStats
from andes_gym.calibration.latency_fit import (
    COEF_FIELDS,
    fit_extended,
    fit_linear_latency,
    stats_by_kind,
)
from andes_gym.calibration.overhead import fit_excess, record_live_iterations
from andes_gym.calibration.profiler import EngineShape, StepSample, default_plan, profile_engine
from andes_gym.calibration.workload_specs import draw_workload
from andes_gym.engine_bridge.engine import create_engine, load_engine_config, release_engine
from andes_gym.engine_bridge.runtime import ENV_SCHEDULER
from andes_gym.surrogate.latency import LinearLatencyModel
from andes_gym.surrogate.profile import LinearLatencySpec, load_engine_profile

# The fitted environment terms that have a place in the profile's `overhead:` section.
OVERHEAD_TERMS = ("per_prefill_seq_s", "per_request_s", "decision_s", "per_candidate_s")


def engine_shape(handle) -> EngineShape:
    """The limits of a running engine, read from vLLM itself (what it really enforces)."""
    sched = handle.scheduler
    cache = handle.engine.vllm_config.cache_config
    return EngineShape(
        # vLLM keeps one block as its null block; requests can hold the rest.
        usable_kv_blocks=int(cache.num_gpu_blocks) - 1,
        block_size=int(cache.block_size),
        max_num_seqs=int(sched.max_num_running_reqs),
        max_num_batched_tokens=int(sched.max_num_scheduled_tokens),
        max_model_len=int(sched.max_model_len),
    )


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages (empty where the OS has none)."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return []


def profile_yaml(
    name: str, shape: EngineShape, spec: LinearLatencySpec, stats: dict, meta: dict
) -> str:
    """The text of an engine profile in the surrogate's format, fit errors as comments."""
    lines = [
        f"# Fitted by `python -m andes_gym.calibrate` from the live engine {meta['engine']!r}",
        f"# on {meta['date']} ({meta['num_samples']} distinct steps, median of "
        f"{meta['repeats']} repeats; load average before/after {meta['load_before']} / "
        f"{meta['load_after']}).",
        "# Fit error of the engine model on the profiled steps (relative |pred - meas| / meas):",
    ]
    for kind, st in stats.items():
        lines.append(
            f"#   {kind:9s} n={st['num_samples']:4d}  median {100 * st['median_rel_error']:.1f}%"
            f"  p90 {100 * st['p90_rel_error']:.1f}%  R^2 {st['r2']:.3f}"
        )
    ext = meta.get("extended_fit")
    if ext:
        st = ext["fit"]["all"]
        lines.append(
            "# Diagnostic: with a per-prefill-sequence term (not in the surrogate's model), "
            f"{ext['coefficients']['per_prefill_seq_s']:.2e} s/seq,"
        )
        lines.append(
            f"#   the fit would reach median {100 * st['median_rel_error']:.1f}%, "
            f"p90 {100 * st['p90_rel_error']:.1f}%, R^2 {st['r2']:.3f}."
        )
    env = meta.get("env_overhead")
    overhead = env["overhead"] if env and env.get("overhead") else None
    if env:
        co = env["coefficients"]
        lines += [
            f"# Live-environment overhead, fitted on {env['num_samples']} live iterations "
            f"({', '.join(env['policies'])}; workloads {'; '.join(env['workloads'])}):",
            f"#   per iteration {1e3 * co['per_iteration_s']:.3f} ms (added to base_s: "
            f"{1e3 * env['added_to_base_s']:.3f} ms), per prefill sequence "
            f"{1e3 * co['per_prefill_seq_s']:.3f} ms,",
            f"#   per request in the engine {1e6 * co['per_request_s']:.2f} us, per contested "
            f"decision {1e3 * co['decision_s']:.3f} ms + {1e6 * co['per_candidate_s']:.2f} us "
            f"per candidate ({'in the overhead section' if overhead else 'not applied'}).",
            "#   Engine model on the live iterations: median error "
            f"{100 * env['model_median_rel_error_before']:.1f}% -> "
            f"{100 * env['model_median_rel_error_after']:.1f}% with these terms.",
        ]
    lines += [
        "# Full statistics and the samples: the sidecar .fit.json next to this file.",
        "# KV and limits are the live engine's (num_blocks excludes vLLM's null block).",
        f"name: {name}",
        f"description: Fitted to the live engine {meta['engine']} ({meta['date']})",
        "kv:",
        f"  num_blocks: {shape.usable_kv_blocks}",
        f"  block_size: {shape.block_size}",
        "limits:",
        f"  max_num_seqs: {shape.max_num_seqs}",
        f"  max_num_batched_tokens: {shape.max_num_batched_tokens}",
        f"  max_model_len: {shape.max_model_len}",
        "latency:",
        "  kind: linear",
    ]
    lines += [f"  {f}: {getattr(spec, f):.6e}" for f in COEF_FIELDS]
    lines += ["preemption:", "  mode: recompute        # vLLM V1 preempts by recompute only"]
    if overhead:
        lines += ["overhead:"] + [f"  {k}: {v:.6e}" for k, v in overhead.items()]
    return "\n".join([*lines, ""])


def write_profile(
    out: Path,
    name: str,
    shape: EngineShape,
    spec: LinearLatencySpec,
    samples: list[StepSample],
    meta: dict,
    engine_spec: LinearLatencySpec | None = None,
) -> dict:
    """Writes the profile and its sidecar; checks the profile loads. Returns the sidecar.

    Args:
        out: Profile path.
        name: Profile name.
        shape: The engine's limits.
        spec: The coefficients to write.
        samples: The profiled steps.
        meta: Provenance (engine, date, load, ...), copied into the sidecar.
        engine_spec: The model of bare engine steps when `spec` adds the environment's
            overhead to it; the fit errors are those of `engine_spec` on the samples.
    """
    stats = stats_by_kind(samples, engine_spec or spec)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(profile_yaml(name, shape, spec, stats, meta))
    load_engine_profile(out)  # fail here, not in a later run, if the format drifted
    sidecar = {
        **meta,
        "profile": str(out),
        "coefficients": {f: getattr(spec, f) for f in COEF_FIELDS},
        "engine_coefficients": {f: getattr(engine_spec or spec, f) for f in COEF_FIELDS},
        "fit": stats,
        "engine_shape": asdict(shape),
        "samples": [asdict(s) for s in samples],
    }
    sidecar_path(out).write_text(json.dumps(sidecar, indent=1))
    return sidecar


def sidecar_path(profile_path: Path) -> Path:
    """`x.yaml` -> `x.fit.json`."""
    return profile_path.with_suffix(".fit.json")


def calibrate(
    engine: str,
    out: Path,
    name: str | None = None,
    repeats: int = 5,
    warmup: int = 1,
    seed: int = 0,
    quadratic: bool = True,
    decode_steps: int = 24,
    verbose: bool = True,
    handle=None,
    plan=None,
    env_workloads: list[str] | None = None,
    env_policies: tuple[str, ...] = ("fcfs", "andes"),
    fold_env_overhead: bool = False,
    apply_env_overhead: bool = True,
) -> tuple[LinearLatencySpec, FitStats, dict]:
    """Profiles the live engine of `engine`, fits, and writes the profile to `out`.

    Args:
        engine: Live engine config (name or path).
        out: Profile path to write.
        name: Profile name (default: the file's stem).
        repeats: Timed passes over the plan.
        warmup: Untimed passes first.
        seed: Seeds the prompts.
        quadratic: Fit the p^2 prefill term.
        decode_steps: Output tokens per decode scenario.
        verbose: Print progress to stderr.
        handle: A running engine (`engine_bridge.engine.create_engine`) to profile
            instead of starting one from `engine` (it must be idle; it is left running).
        plan: Scenarios to run instead of `default_plan` (tests use a tiny plan).
        env_workloads: Workload specs (`preset` or `preset@key=value,...`) to run
            through the live environment after the fit, measuring what it adds to each
            iteration (`calibration.overhead`); reported in the header and the sidecar.
            None skips this step.
        env_policies: Policies of those runs (contested decisions need a busy workload).
        fold_env_overhead: Add the measured per-iteration overhead to `base_s`. Off by
            default: on a shared machine the intercept of that fit also absorbs drift of
            the engine's speed and queue-length effects, and it over-corrected the tiny
            CPU engine's under-capacity runs (benchmarks/results/fidelity.md).
        apply_env_overhead: Write the measured serving terms (per prefill sequence, per
            request, per decision and candidate) into the profile's `overhead:` section;
            False only reports them.

    Returns:
        `(spec, overall fit stats, sidecar dict)`.
    """

    def say(msg: str) -> None:
        if verbose:
            print(msg, file=sys.stderr, flush=True)

    load_before = load_average()
    owns = handle is None
    profiled = create_engine(engine) if owns else handle
    try:
        shape = engine_shape(profiled)
        if plan is None:
            plan = default_plan(shape, decode_steps=decode_steps)
        say(f"profiling {len(plan)} scenarios x ({warmup} warm-up + {repeats} timed) passes")
        start = time.perf_counter()
        samples = profile_engine(
            profiled.engine,
            profiled.vocab_size,
            plan,
            repeats=repeats,
            warmup=warmup,
            seed=seed,
            progress=lambda i, n: say(f"  pass {i + 1}/{n}"),
        )
        elapsed_s = time.perf_counter() - start
    finally:
        if owns:
            release_engine(profiled)
    spec, stats = fit_linear_latency(samples, quadratic=quadratic)
    ext_coef, ext_stats = fit_extended(samples)
    meta = {
        "engine": str(engine),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "repeats": repeats,
        "warmup": warmup,
        "seed": seed,
        "num_samples": len(samples),
        "num_scenarios": len(plan),
        "profiling_s": round(elapsed_s, 1),
        "load_before": load_before,
        "load_after": load_average(),
        "command": " ".join(["python -m andes_gym.calibrate", *sys.argv[1:]]),
        "extended_fit": {"coefficients": ext_coef, "fit": ext_stats},
    }
    name = name or out.stem
    sidecar = write_profile(out, name, shape, spec, samples, meta)
    say(f"fit: {json.dumps(sidecar['fit']['all'])}")
    if env_workloads:
        say(f"measuring the live environment's overhead on {len(env_workloads)} workload(s)")
        # Workloads drawn with seed + 1: not the draws a fidelity run (seed 0) replays.
        env = measure_env_overhead(engine, out, spec, env_workloads, env_policies, seed + 1, handle)
        extra_s = env["coefficients"]["per_iteration_s"] if fold_env_overhead else 0.0
        env["engine_base_s"] = spec.base_s
        env["added_to_base_s"] = extra_s
        if apply_env_overhead:
            env["overhead"] = {k: env["coefficients"][k] for k in OVERHEAD_TERMS}
        engine_spec = spec
        spec = dataclasses.replace(spec, base_s=spec.base_s + extra_s)
        meta["env_overhead"] = env
        meta["load_after"] = load_average()
        sidecar = write_profile(out, name, shape, spec, samples, meta, engine_spec=engine_spec)
        say(f"environment overhead: {json.dumps(env['coefficients'])}")
    return spec, stats, sidecar


def measure_env_overhead(
    engine: str,
    profile_path: Path,
    spec: LinearLatencySpec,
    workloads: list[str],
    policies: tuple[str, ...],
    seed: int,
    handle=None,
) -> dict:
    """Runs workloads through the live environment and fits its excess time per iteration.

    Args:
        engine: Live engine config (used when `handle` is None).
        profile_path: The freshly written profile (the environment's latency predictions).
        spec: The fitted engine model.
        workloads: Workload specs.
        policies: Policies to run each workload with.
        seed: Workload seed.
        handle: A running engine with the environment's scheduler hook, to reuse.

    Returns:
        `calibration.overhead.fit_excess`'s result plus the workloads and policies.
    """
    owns = handle is None or not hasattr(handle.scheduler, "andes_gym")
    if owns:
        cfg = load_engine_config(engine).replace(latency_profile=str(profile_path))
        env_handle = create_engine(cfg, scheduler_cls=ENV_SCHEDULER)
    else:
        env_handle = dataclasses.replace(
            handle, config=handle.config.replace(latency_profile=str(profile_path))
        )
    samples = []
    try:
        for spec_text in workloads:
            _, workload = draw_workload(spec_text, None, seed, 0.02)
            for policy in policies:
                samples += record_live_iterations(env_handle, workload, policy, seed, {})
    finally:
        if owns:
            release_engine(env_handle)
    result = fit_excess(samples, LinearLatencyModel(spec))
    result["workloads"] = list(workloads)
    result["policies"] = list(policies)
    return result
