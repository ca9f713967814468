"""Speed of the surrogate engine and of `andes_gym/Surrogate-v0`.

Three measurements, printed as a Markdown section and saved to
benchmarks/results/surrogate.md:

1. Env steps per second with a fixed scoring action, K = 64, on a contended (moderate)
   load, for the compiled simulator and the Python specification side by side (same
   episodes), against the target of 20,000 steps/s, and where the time of a step goes.
2. Simulated seconds per second on a one-hour, ~5 req/s ShareGPT workload on the
   llama7b_a100 profile under FCFS: compiled, and the Python specification.
3. Cost per env step with 100 / 1,000 / 10,000 concurrent requests (K = 64), and cost
   per simulated iteration with a running batch of 100 / 1,000 / 10,000 requests.
4. Env steps per wall second through stable-baselines3's vector envs (the quickstart's
   environment, two copies): in-process `DummyVecEnv` vs one process each
   (`SubprocVecEnv`).

Times are given as CPU seconds of this process (`time.process_time`, robust when other
processes share the cores) and as wall seconds. Everything runs in one thread.

Usage: ``python benchmarks/bench_surrogate.py [--quick] [--out PATH]``
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import RESULTS_DIR, header  # noqa: E402

from andes_gym.envs.surrogate_env import SurrogateEnv  # noqa: E402
from andes_gym.surrogate import SurrogateBackend, engine_profile_from_dict  # noqa: E402
from andes_gym.surrogate.compiled import CompiledSurrogateBackend  # noqa: E402
from andes_gym.workloads import (  # noqa: E402
    Workload,
    load_workload_config,
    make_workload,
    workload_config_from_dict,
    workload_config_to_dict,
)


class Clock:
    """CPU and wall time of a block."""

    def __enter__(self):
        self.cpu0, self.wall0 = time.process_time(), time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.cpu = time.process_time() - self.cpu0
        self.wall = time.perf_counter() - self.wall0


def fixed_action(k: int) -> np.ndarray:
    # Slots hold running requests by arrival, then waiting ones by arrival: decreasing
    # scores keep the running ones and admit the oldest waiting ones (FCFS-like).
    return np.linspace(1.0, -1.0, k).astype(np.float32)


def play_fixed(env, seed: int, max_steps: int | None = None) -> tuple[int, list[int], dict]:
    """Steps with the fixed action; returns steps, candidates per step, last info."""
    action = fixed_action(env.action_space.shape[0])
    env.reset(seed=seed)
    steps, cands, info = 0, [], {}
    while max_steps is None or steps < max_steps:
        _, _, terminated, truncated, info = env.step(action)
        steps += 1
        cands.append(info["num_candidates"])
        if terminated or truncated:
            break
    return steps, cands, info


def poisson_sharegpt(rate_rps: float, num_requests: int) -> dict:
    return {
        "name": f"poisson_{rate_rps:g}rps",
        "num_requests": num_requests,
        "arrivals": {"kind": "poisson", "rate_rps": rate_rps},
        "lengths": {"kind": "sharegpt"},
        "targets": {"kind": "reading"},
    }


def cpu_steady(rate_scale: float) -> dict:
    cfg = workload_config_to_dict(load_workload_config("steady_poisson_cpu"))
    cfg["arrivals"]["rate_scale"] = rate_scale
    return cfg


# (label, workload, engine): contended but not collapsed (FCFS-like mean QoE ~0.75-0.97).
# The target for env steps per CPU second (K = 64, moderate load, one core).
TARGET_STEPS_PER_S = 20_000
SIMULATORS = ("compiled", "python")

STEP_SCENARIOS = (
    ("Poisson 18 req/s, ShareGPT, 1000 requests", poisson_sharegpt(18.0, 1000), "llama7b_a100"),
    ("steady_poisson_cpu at 5x (300 req/s), 1000 requests", cpu_steady(5.0), "cpu_tiny"),
)


class ComponentTimer:
    """CPU time (`time.thread_time`) spent inside chosen functions while it is active
    (wrappers installed on enter, removed on exit). A wrapper costs about a microsecond
    per call, so the parts add up to a little more than an unwrapped step."""

    def __init__(self, targets: dict[str, tuple[object, str]]) -> None:
        self.targets = targets
        self.seconds = dict.fromkeys(targets, 0.0)
        self._saved: list[tuple[object, str, object]] = []

    def _wrap(self, label: str, func):
        seconds = self.seconds

        def timed(*args, **kwargs):
            start = time.thread_time()
            try:
                return func(*args, **kwargs)
            finally:
                seconds[label] += time.thread_time() - start

        return timed

    def __enter__(self):
        for label, (owner, name) in self.targets.items():
            func = owner.__dict__[name] if isinstance(owner, type) else getattr(owner, name)
            self._saved.append((owner, name, func))
            setattr(owner, name, self._wrap(label, func))
        return self

    def __exit__(self, *exc):
        for owner, name, func in reversed(self._saved):
            setattr(owner, name, func)
        self._saved.clear()


def timed_episode(env, seed: int, targets: dict) -> tuple[dict[str, float], int]:
    """One episode with the fixed action, `ComponentTimer(targets)` on (reset untimed)."""
    action = fixed_action(env.action_space.shape[0])
    env.reset(seed=seed)
    steps = 0
    with ComponentTimer(targets) as timer:
        while True:
            _, _, terminated, truncated, _ = env.step(action)
            steps += 1
            if terminated or truncated:
                break
    return timer.seconds, steps


def step_components(env, seed: int) -> tuple[dict[str, float], int]:
    """Seconds per component over the steps of one episode (its reset untimed)."""
    from andes_gym.envs import scheduling_env
    from andes_gym.envs.scheduling_env import SchedulingEnv
    from andes_gym.surrogate import base

    targets = {
        "step": (SchedulingEnv, "step"),
        "apply": (SurrogateBackend, "apply"),
        "next_decision": (SurrogateBackend, "next_decision"),
        "decision_point": (base.SurrogateEngine, "_decision_point"),
        "make_candidates": (base, "make_candidates"),
        "observe": (scheduling_env, "observe"),
        "potential": (SchedulingEnv, "_potential_now"),
        "scores": (SchedulingEnv, "_slot_scores_to_candidates"),
        "select": (scheduling_env, "select"),
    }
    return timed_episode(env, seed, targets)


def compiled_components(env, seed: int) -> tuple[dict[str, float], int]:
    """Seconds in the compiled call and in the Python around it, over one episode."""
    from andes_gym.envs.scheduling_env import SchedulingEnv

    targets = {
        "step": (SurrogateEnv, "step"),
        "kernel": (CompiledSurrogateBackend, "step_slots"),
        "transition": (SchedulingEnv, "_transition"),
    }
    return timed_episode(env, seed, targets)


def compiled_component_rows(sec: dict[str, float], steps: int) -> list[str]:
    parts = {
        "compiled call (`step_slots`: selection, engine, observation, potential)": sec["kernel"],
        "reward, episode end and info (`_transition`)": sec["transition"],
    }
    parts["action check and the rest of `step`"] = sec["step"] - sum(parts.values())
    rows = [
        f"| {label} | {1e6 * t / steps:,.1f} | {100 * t / sec['step']:.0f}% |"
        for label, t in parts.items()
    ]
    rows.append(f"| **a step** | **{1e6 * sec['step'] / steps:,.1f}** | 100% |")
    return rows


def component_rows(sec: dict[str, float], steps: int, reset_s: float) -> list[str]:
    """Table rows: microseconds per step and share of the step, by component."""
    parts = {
        "QoE predictions and candidate arrays (`make_candidates`)": sec["make_candidates"],
        "rest of the decision point (capacity, gathers)": sec["decision_point"]
        - sec["make_candidates"],
        "rest of `next_decision` (arrivals, uncontested stretches, tracker sync)": sec[
            "next_decision"
        ]
        - sec["decision_point"],
        "simulator `apply` (preempt, admit, iterate, tracker sync)": sec["apply"],
        "observation (`observe`)": sec["observe"],
        "reward potential (`_potential_now`)": sec["potential"],
        "selection (`scores_from_slots` + `select`)": sec["scores"] + sec["select"],
    }
    parts["environment glue (checks, info, copies)"] = sec["step"] - sum(parts.values())
    rows = [
        f"| {label} | {1e6 * t / steps:,.0f} | {100 * t / sec['step']:.0f}% |"
        for label, t in parts.items()
    ]
    rows.append(f"| **a step** | **{1e6 * sec['step'] / steps:,.0f}** | 100% |")
    rows.append(
        f"| episode start (`reset`: the uncontested stretch before the first decision), "
        f"per step | {1e6 * reset_s / steps:,.0f} | - |"
    )
    return rows


def bench_steps() -> list[str]:
    lines = [
        "### 1. Env steps per second (K = 64, fixed scoring action, moderate load)",
        "",
        "`skip_uncontested=True` (only contested decisions are steps); a fixed FCFS-like "
        "action. On llama7b_a100 contention starts only when more than 256 requests "
        "(max_num_seqs) are present, so every step there has 257+ candidates; the cpu_tiny "
        "row shows a smaller engine (48 sequences, 128 KV blocks). An episode's time "
        "includes its `reset`, which simulates the uncontested start of the episode "
        "(before the first decision); the last column leaves it out. Both simulators play "
        "the same episode (same steps, same QoE); the speed-up is measured side by side in "
        f"this run. Target: {TARGET_STEPS_PER_S:,} steps per CPU second.",
        "",
        "| workload | engine | simulator | steps | candidates per step (mean / max) "
        "| mean QoE | CPU s | wall s | steps/s (CPU) | steps/s (wall) | us per step (CPU) "
        "| reset ms (CPU) | steps/s without reset (CPU) | target | speed-up vs python (CPU) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    components = compiled_parts = None
    for label, workload, engine in STEP_SCENARIOS:
        rows, rate = [], {}
        for simulator in SIMULATORS:
            env = SurrogateEnv(workload=workload, engine=engine, k_slots=64, simulator=simulator)
            play_fixed(env, seed=0, max_steps=50)  # warm up (and compile, the first time)
            with Clock() as c:
                steps, cands, info = play_fixed(env, seed=0)
            reset_cpu = min(_reset_cpu_s(env) for _ in range(3))
            summary = info["qoe_summary"]
            rate[simulator] = steps / c.cpu
            met = "met" if rate[simulator] >= TARGET_STEPS_PER_S else "missed"
            rows.append(
                f"| {label} | {engine} | {simulator} | {steps} "
                f"| {np.mean(cands):.0f} / {max(cands)} "
                f"| {summary['mean_qoe']:.4f} | {c.cpu:.3f} | {c.wall:.3f} "
                f"| {steps / c.cpu:,.0f} | {steps / c.wall:,.0f} | {1e6 * c.cpu / steps:.1f} "
                f"| {1e3 * reset_cpu:.2f} | {steps / max(c.cpu - reset_cpu, 1e-9):,.0f} "
                f"| {met} | SPEEDUP |"
            )
            if simulator == "python" and components is None:
                sec, n = step_components(env, seed=0)
                components = component_rows(sec, n, reset_cpu)
            if simulator == "compiled" and compiled_parts is None:
                compiled_parts = compiled_component_rows(*compiled_components(env, seed=0))
        speedup = rate["compiled"] / rate["python"]
        lines += [
            row.replace("SPEEDUP", f"{speedup:.1f}x" if "| compiled |" in row else "1.0x")
            for row in rows
        ]
    lines += [
        "",
        "Where the time goes in the first row, compiled (CPU time inside each part, "
        "measured with wrappers on one more episode, about a microsecond each; "
        "microseconds per step):",
        "",
        "| component | us per step | share of a step |",
        "|---|---|---|",
        *compiled_parts,
        "",
        "And in the Python reference:",
        "",
        "| component | us per step | share of a step |",
        "|---|---|---|",
        *components,
        "",
    ]
    return lines


def _reset_cpu_s(env) -> float:
    with Clock() as c:
        env.reset(seed=0)
    return c.cpu


def hour_workload(duration_s: float) -> Workload:
    rate = 5.0
    cfg = workload_config_from_dict(
        {
            "name": "poisson_5rps",
            "num_requests": int(rate * duration_s),
            "arrivals": {"kind": "poisson", "rate_rps": rate},
            "lengths": {"kind": "sharegpt"},
            "targets": {"kind": "reading"},
        }
    )
    return make_workload(cfg, 0)


def fcfs_agent():
    from andes_gym.agents.adapter import PolicyAgent
    from andes_gym.agents.registry import make_policy

    return PolicyAgent(make_policy("fcfs"))


def play_agent(env, agent, seed: int) -> dict:
    obs, _ = env.reset(seed=seed)
    agent.reset(seed)
    info, done = {}, False
    while not done:
        pending = env.unwrapped.decision_context is not None
        action = agent.act(obs, env) if pending else np.zeros(env.action_space.shape, np.float32)
        obs, _, terminated, truncated, info = env.step(action)
        done = terminated or truncated
    return info


def bench_hour(duration_s: float) -> list[str]:
    wl = hour_workload(duration_s)
    agent = fcfs_agent()
    rows = []
    for simulator in ("compiled", "python"):
        env = SurrogateEnv(workload=wl, engine="llama7b_a100", simulator=simulator)
        with Clock() as c:
            info = play_agent(env, agent, seed=0)
        sim_s = env.backend.now_s
        iters = env.backend.num_iterations
        rows.append(
            f"| {simulator} | {sim_s:,.0f} | {iters:,} | {c.cpu:.2f} "
            f"| {c.wall:.2f} | {sim_s / c.cpu:,.0f}x | {sim_s / c.wall:,.0f}x "
            f"| {iters / c.cpu:,.0f} | {info['qoe_summary']['mean_qoe']:.4f} |"
        )
    return [
        "### 2. Simulated time per second: one hour at ~5 req/s, llama7b_a100, FCFS",
        "",
        f"Poisson 5 req/s, ShareGPT lengths, reading targets, {len(wl):,} requests over "
        f"{wl.duration_s:,.0f} s; FCFS through `PolicyAgent` (here nothing is contested, so "
        "the backend runs every decision itself). Both simulators run every iteration one "
        "by one (`python` is the engine's numpy specification). Target: 1,000x real time.",
        "",
        "| simulator | simulated s | iterations | CPU s | wall s | sim/CPU "
        "| sim/wall | iterations per CPU s | mean QoE |",
        "|---|---|---|---|---|---|---|---|---|",
        *rows,
        "",
    ]


def burst_workload(n: int) -> Workload:
    """n requests arriving within 10 ms: n concurrent candidates."""
    rng = np.random.default_rng(0)
    return Workload(
        arrival_s=np.sort(rng.uniform(0.0, 0.01, n)),
        prompt_tokens=rng.integers(16, 200, n),
        output_tokens=rng.integers(100, 400, n),
        ttft_s=np.ones(n),
        tds_tok_s=np.full(n, 4.8),
        name=f"burst_{n}",
    )


def bench_scaling_steps(sizes: list[int], steps: int) -> list[str]:
    lines = [
        "### 3a. Cost per env step vs concurrent requests (K = 64, llama7b_a100)",
        "",
        f"All requests arrive within 10 ms; `skip_uncontested=False` (every iteration is "
        f"a decision); the first {steps} decisions are timed (every request is a candidate; "
        "at most 256 run).",
        "",
        "| concurrent requests | us per step, compiled (CPU) | ratio to 100 "
        "| us per step, python (CPU) | ratio to 100 |",
        "|---|---|---|---|---|",
    ]
    base = {}
    for n in sizes:
        cells = []
        for simulator in SIMULATORS:
            env = SurrogateEnv(
                workload=burst_workload(n),
                engine="llama7b_a100",
                k_slots=64,
                skip_uncontested=False,
                simulator=simulator,
            )
            env.reset(seed=0)
            action = fixed_action(64)
            with Clock() as c:
                for _ in range(steps):
                    env.step(action)
            us = 1e6 * c.cpu / steps
            base.setdefault(simulator, us)
            cells.append(f"{us:,.1f} | {us / base[simulator]:.1f}")
        lines.append(f"| {n:,} | {cells[0]} | {cells[1]} |")
    lines.append("")
    return lines


def big_engine(batch: int) -> dict:
    return engine_profile_from_dict(
        {
            "name": f"wide_{batch}",
            "kv": {"num_blocks": 40 * batch, "block_size": 16},
            "limits": {
                "max_num_seqs": batch,
                "max_num_batched_tokens": 256 * batch,
                "max_model_len": 1024,
            },
            "latency": {
                "kind": "linear",
                "base_s": 0.005,
                "per_prefill_token_s": 1e-5,
                "per_decode_seq_s": 1e-4,
                "per_context_token_s": 1e-7,
            },
        }
    )


def run_burst(backend, n: int) -> float:
    """CPU seconds for `backend` to run a burst of n requests to the end by itself."""
    backend.skip_uncontested = True
    backend.start(burst_workload(n), 0)
    with Clock() as c:
        assert backend.next_decision() is None
    return c.cpu


def bench_scaling_batch(sizes: list[int]) -> list[str]:
    lines = [
        "### 3b. Cost per simulated iteration vs running batch (backend only)",
        "",
        "A wide engine (max_num_seqs = batch, KV for everyone) runs all requests of a "
        "burst at once until they finish; uncontested, so the backend decides itself.",
        "",
        "| running batch | iterations | us per iteration, python specification (CPU) "
        "| ratio | us per iteration, compiled (CPU) | ratio | us per 1,000 tokens, compiled |",
        "|---|---|---|---|---|---|---|",
    ]
    base = {}
    run_burst(CompiledSurrogateBackend(big_engine(10)), 10)  # loads the compiled kernels
    for n in sizes:
        cells = []
        for engine in (SurrogateBackend, CompiledSurrogateBackend):
            backend = engine(big_engine(n))
            cpu_s = run_burst(backend, n)
            us = 1e6 * cpu_s / backend.num_iterations
            base.setdefault(engine, us)
            cells.append(f"{us:,.1f} | {us / base[engine]:.1f}")
        per_k_tokens = 1e9 * cpu_s / backend.generated_tokens.sum()
        lines.append(
            f"| {n:,} | {backend.num_iterations:,} | {cells[0]} | {cells[1]} "
            f"| {per_k_tokens:,.0f} |"
        )
    lines += [
        "",
        "The specification pays a few dozen numpy calls per iteration; the compiled "
        "simulator iterates at a few nanoseconds per request and iteration, linear in the "
        "batch.",
        "",
    ]
    return lines


def make_quickstart_env():
    import yaml

    from andes_gym.config_files import packaged_config_dir

    config = yaml.safe_load((packaged_config_dir("train") / "quickstart.yaml").read_text())
    return SurrogateEnv(**config["env"]["kwargs"])


def bench_vec_envs(num_steps: int) -> list[str]:
    from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv

    lines = [
        "### 4. Through stable-baselines3 vector envs (the quickstart's environment)",
        "",
        f"Two copies of `configs/train/quickstart.yaml`'s environment (cpu_tiny, K = 256, "
        f"bursty 200 req/s), random slot scores, {num_steps:,} env steps after a reset; "
        "wall time (the subprocesses' CPU is not this process's).",
        "",
        "| vector env | env steps per wall s |",
        "|---|---|",
    ]
    rng = np.random.default_rng(0)
    for cls in (DummyVecEnv, SubprocVecEnv):
        venv = cls([make_quickstart_env] * 2)
        venv.reset()
        shape = (2, venv.action_space.shape[0])
        with Clock() as c:
            for _ in range(num_steps // 2):
                venv.step(rng.uniform(-1.0, 1.0, shape).astype(np.float32))
        venv.close()
        lines.append(f"| {cls.__name__} | {num_steps / c.wall:,.0f} |")
    lines += [
        "",
        "A compiled surrogate step costs less than the inter-process round trip, so "
        "`env.vec_env: dummy` moves more env steps on the surrogate; with a large policy "
        "network the policy's forward pass dominates either way.",
        "",
    ]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes (a smoke test)")
    parser.add_argument(
        "--out",
        default=None,
        help="where to save the section (default: benchmarks/results/"
        "surrogate.md; --quick runs save only when given)",
    )
    args = parser.parse_args()
    quick = args.quick
    lines = header("Surrogate engine and Surrogate-v0 speed" + (" (quick)" if quick else ""))
    lines += bench_steps()
    lines += bench_hour(600.0 if quick else 3600.0)
    sizes = [100, 1000] if quick else [100, 1000, 10_000]
    lines += bench_scaling_steps(sizes, 20 if quick else 100)
    lines += bench_scaling_batch(sizes)
    lines += bench_vec_envs(2000 if quick else 10_000)
    text = "\n".join(lines).rstrip() + "\n"
    print(text)
    out = args.out or (None if quick else str(RESULTS_DIR / "surrogate.md"))
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(text)


if __name__ == "__main__":
    main()
