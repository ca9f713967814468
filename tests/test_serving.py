"""An exported policy in the live env, and serving: vLLM's OpenAI-compatible server with the
hook (FCFS and an exported policy) driven by the load generator.

Both servers start at once (each takes tens of seconds on 2 cores), on loopback ports.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

pytest.importorskip("vllm")
pytest.importorskip("aiohttp")

from andes_gym.client.loadgen import load_replay_workload as _load_workload  # noqa: E402
from andes_gym.client.loadgen import replay  # noqa: E402
from andes_gym.engine_bridge.server import build_command  # noqa: E402
from andes_gym.train import main as train_main  # noqa: E402
from andes_gym.training.export_onnx import export_run  # noqa: E402

# The live engine's limits match the cpu_tiny engine profile (contended KV cache).
ENGINE_ARGS = [
    "--num-gpu-blocks-override",
    "128",
    "--block-size",
    "32",
    "--max-model-len",
    "512",
    "--max-num-seqs",
    "48",
    "--gpu-memory-utilization",
    "0.2",
]
START_TIMEOUT_S = 240


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(policy: str, log: Path, hook_config: Path) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    argv, env = build_command(policy, port=port, hook_config=str(hook_config), extra=ENGINE_ARGS)
    proc = subprocess.Popen(
        argv,
        env={**os.environ, **env},
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    return proc, f"http://127.0.0.1:{port}/v1"


def _wait_ready(proc: subprocess.Popen, base_url: str, log: Path, deadline: float) -> None:
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{base_url}/models", timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(1.0)
    pytest.fail(f"server not ready after {START_TIMEOUT_S} s:\n{log.read_text()[-3000:]}")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


@pytest.fixture(scope="module")
def exported_policy(tmp_path_factory) -> Path:
    """An exported (barely trained) policy with K = 16 slots."""
    root = tmp_path_factory.mktemp("policy")
    args = ["--config", "smoke", "--set", f"run_root={root / 'runs'}", "--set", "eval.final=false"]
    assert train_main([*args, "--set", "total_timesteps=64"]) == 0
    run = next((root / "runs").iterdir())
    return export_run(run, root / "policy.onnx")


def test_exported_policy_acts_in_the_live_env(vllm_engine, exported_policy):
    import gymnasium as gym

    import andes_gym.envs  # noqa: F401 (registers the ids)
    from andes_gym.agents.adapter import PolicyAgent
    from andes_gym.agents.learned import load_policy
    from andes_gym.evaluation import run_episode
    from andes_gym.workloads.spec import Workload

    rng = np.random.default_rng(0)
    n = 24  # a burst that overflows the session engine's KV cache
    workload = Workload(
        arrival_s=np.sort(rng.uniform(0.0, 0.02, n)),
        prompt_tokens=rng.integers(40, 120, n),
        output_tokens=rng.integers(16, 48, n),
        ttft_s=np.full(n, 0.05),
        tds_tok_s=np.full(n, 100.0),
        name="burst",
    )
    env = gym.make("andes_gym/VLLM-v0", engine_handle=vllm_engine, workload=workload, k_slots=16)
    try:
        result = run_episode(env, PolicyAgent(load_policy(exported_policy)), seed=0)
    finally:
        env.close()
    assert result.summary["num_decisions"] > 0
    assert result.summary["num_unfinished"] == 0
    assert np.all((result.requests.qoe >= 0) & (result.requests.qoe <= 1))


@pytest.fixture(scope="module")
def servers(tmp_path_factory, exported_policy):
    root = tmp_path_factory.mktemp("serving")
    onnx_path = exported_policy
    hook_config = root / "hook.yaml"
    hook_config.write_text("latency_profile: cpu_tiny\nlog_every_s: 0\n")
    started = {}
    try:
        for name, policy in (("fcfs", "fcfs"), ("learned", str(onnx_path))):
            log = root / f"{name}.log"
            started[name] = (*_start(policy, log, hook_config), log)
        deadline = time.monotonic() + START_TIMEOUT_S
        for proc, url, log in started.values():
            _wait_ready(proc, url, log, deadline)
        yield {name: (url, log) for name, (_, url, log) in started.items()}
    finally:
        for proc, _, _ in started.values():
            _stop(proc)


@pytest.mark.parametrize("name", ["fcfs", "learned"])
def test_every_request_completes_and_is_scored(servers, name):
    url, log = servers[name]
    workload = _load_workload("bursty_2x_cpu", 0, 40, 1.0)
    result = replay(url, workload, seed=0, max_concurrency=64, time_limit_s=90)
    assert result.summary["num_errors"] == 0, [r.error for r in result.records if r.error][:3]
    assert result.summary["num_unfinished"] == 0
    for rec in result.records:
        assert len(rec.token_times_s) == rec.output_tokens
    assert np.all((result.metrics.qoe >= 0) & (result.metrics.qoe <= 1))
    assert np.isfinite(result.summary["mean_qoe"])
    text = log.read_text()
    # The hook logs one error line per kind of policy failure (then serves with FCFS).
    problems = [
        line for line in text.splitlines() if "andes_gym hook: policy" in line and "failed" in line
    ]
    assert not problems, "\n".join(text.splitlines()[-60:])  # no policy failure fell back to FCFS
