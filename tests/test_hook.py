"""The vLLM scheduler hook: its configuration, the policy runner's fallback, and serving mode.

The unit tests need no vLLM. The `vllm`-marked tests drive the hook inside a real engine:
the decision mechanics on the session engine, serving mode (env-var configuration, a
broken policy) in a subprocess, since vLLM runs one in-process engine at a time.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from andes_gym.agents import make_policy
from andes_gym.agents.base import Policy
from andes_gym.core.candidates import Capacity, make_candidates
from andes_gym.core.selection import Decision, check_decision, select
from andes_gym.engine_bridge.hook_config import ENV_CONFIG, ENV_POLICY, HookConfig, request_targets
from andes_gym.engine_bridge.ledger import RequestLedger
from andes_gym.engine_bridge.policy_runner import PolicyRunner, failure_kind
from andes_gym.qoe import QoEState, qoe

TESTS_DIR = Path(__file__).resolve().parent
REPO_ROOT = TESTS_DIR.parent


# ------------------------------------------------------------------ broken policies
class RaisingPolicy(Policy):
    name = "raising"

    def decide(self, candidates, capacity):
        raise RuntimeError("boom: this policy is broken on purpose")


class NaNScoresPolicy(Policy):
    name = "nan_scores"

    def decide(self, candidates, capacity):
        return select(np.full(len(candidates), np.nan), candidates, capacity)


class CyclingBrokenPolicy(Policy):
    """Fails in a different way at each call (4 kinds), every fifth call decides FCFS."""

    name = "cycling_broken"

    def __init__(self) -> None:
        self.calls = 0
        self.fcfs = make_policy("fcfs")

    def decide(self, candidates, capacity):
        kind = self.calls % 5
        self.calls += 1
        n = len(candidates)
        if kind == 0:
            raise RuntimeError("boom")
        if kind == 1:
            return select(np.full(n, np.nan), candidates, capacity)
        if kind == 2:
            return select(np.zeros(n + 1), candidates, capacity)
        if kind == 3:  # everyone, beyond the KV cache or the batch limit
            return Decision(selected=np.ones(n, dtype=bool), order=np.arange(n))
        return self.fcfs.decide(candidates, capacity)


class EmptyPolicy(Policy):
    """Selects nothing: serving would starve."""

    name = "empty"

    def decide(self, candidates, capacity):
        n = len(candidates)
        return Decision(selected=np.zeros(n, dtype=bool), order=np.zeros(0, dtype=np.int64))


class ExitingPolicy(Policy):
    """Raises SystemExit, as a policy calling sys.exit() would."""

    name = "exiting"

    def decide(self, candidates, capacity):
        raise SystemExit(3)


class SlowPolicy(Policy):
    """Decides FCFS's way, after `delay_s` of sleep."""

    name = "slow"

    def __init__(self, delay_s: float = 0.03) -> None:
        self.delay_s = delay_s
        self.fcfs = make_policy("fcfs")

    def decide(self, candidates, capacity):
        import time

        time.sleep(self.delay_s)
        return self.fcfs.decide(candidates, capacity)


def _point(n: int = 6, blocks_each: int = 4, total_blocks: int = 12, max_seqs: int = 8):
    """A contested decision point: n waiting requests that do not all fit."""
    state = QoEState.new(np.linspace(0.0, 0.05, n), 0.05, 100.0)
    capacity = Capacity(
        total_kv_blocks=total_blocks,
        free_kv_blocks=total_blocks,
        block_size=32,
        max_num_seqs=max_seqs,
        iter_latency_s=np.full(max_seqs + 1, 2e-3),
    )
    candidates = make_candidates(
        now_s=0.1,
        request_id=np.arange(n),
        is_running=np.zeros(n, dtype=bool),
        prompt_tokens=np.full(n, 100),
        kv_blocks_held=np.zeros(n, dtype=np.int64),
        kv_blocks_needed=np.full(n, blocks_each),
        num_preemptions=np.zeros(n, dtype=np.int64),
        qoe_state=state,
        capacity=capacity,
        lookahead_s=0.05,
    )
    return candidates, capacity


# ------------------------------------------------------------------ configuration
def test_hook_config_from_env_reads_file_and_policy_override(tmp_path):
    path = tmp_path / "hook.yaml"
    path.write_text(yaml.safe_dump({"policy": "lqf", "default_ttft_s": 0.5, "lookahead_s": 0.2}))
    cfg = HookConfig.from_env({ENV_CONFIG: str(path)})
    assert (cfg.policy, cfg.default_ttft_s, cfg.lookahead_s) == ("lqf", 0.5, 0.2)
    cfg = HookConfig.from_env({ENV_CONFIG: str(path), ENV_POLICY: "edf"})
    assert cfg.policy == "edf" and cfg.default_ttft_s == 0.5
    assert HookConfig.from_env({}).policy == "andes"


def test_hook_config_rejects_unknown_keys_bad_values_and_missing_files(tmp_path):
    path = tmp_path / "hook.yaml"
    path.write_text("policy: andes\nlook_ahead_s: 1.0\n")
    with pytest.raises(ValueError, match="look_ahead_s"):
        HookConfig.from_env({ENV_CONFIG: str(path)})
    with pytest.raises(ValueError, match="default_tds_tok_s"):
        HookConfig(default_tds_tok_s=0.0)
    with pytest.raises(FileNotFoundError, match="nowhere.yaml"):
        HookConfig.from_env({ENV_CONFIG: str(tmp_path / "nowhere.yaml")})


def test_request_targets_use_extra_args_then_defaults():
    cfg = HookConfig(default_ttft_s=1.0, default_tds_tok_s=4.8)
    assert request_targets({"ttft_s": 0.2, "tds_tok_s": 10}, cfg) == (0.2, 10.0, [])
    assert request_targets(None, cfg) == (1.0, 4.8, [])
    assert request_targets({"kv_transfer_params": None}, cfg) == (1.0, 4.8, [])
    ttft, tds, problems = request_targets({"ttft_s": "soon", "tds_tok_s": -3}, cfg)
    assert (ttft, tds) == (1.0, 4.8)
    assert problems == ["ttft_s='soon'", "tds_tok_s=-3"]


# ------------------------------------------------------------------ policy runner
@pytest.mark.parametrize(
    ("policy", "kind"),
    [
        (RaisingPolicy(), "policy raised RuntimeError"),
        (NaNScoresPolicy(), "non-finite scores"),
    ],
)
def test_policy_runner_falls_back_to_fcfs_and_logs_once(policy, kind, caplog):
    candidates, capacity = _point()
    runner = PolicyRunner(policy, make_policy("fcfs"))
    fcfs = make_policy("fcfs").decide(candidates, capacity)
    with caplog.at_level(logging.ERROR, logger="andes_gym.hook"):
        for _ in range(3):
            decision = runner.decide(candidates, capacity)
            check_decision(decision, candidates, capacity)
            np.testing.assert_array_equal(decision.order, fcfs.order)
    assert runner.failures == {f"{policy.name}: {kind}": 3}
    assert runner.num_fallbacks == 3 and runner.num_decisions == 3
    failed_lines = [r for r in caplog.records if "failed" in r.getMessage()]
    assert len(failed_lines) == 1
    assert policy.name in failed_lines[0].getMessage()


def test_policy_runner_names_every_failure_kind_and_keeps_valid_decisions():
    candidates, capacity = _point()
    runner = PolicyRunner(CyclingBrokenPolicy(), make_policy("fcfs"))
    for _ in range(10):
        assert runner.decide(candidates, capacity) is not None
    assert set(runner.failures) == {
        "cycling_broken: policy raised RuntimeError",
        "cycling_broken: non-finite scores",
        "cycling_broken: scores or decision of the wrong shape",
        "cycling_broken: invalid decision",
    }
    assert runner.num_fallbacks == 8  # two of the ten calls decided validly


def test_policy_runner_returns_none_when_the_fallback_fails_too():
    candidates, capacity = _point()
    runner = PolicyRunner(RaisingPolicy(), RaisingPolicy())
    assert runner.decide(candidates, capacity) is None


def test_policy_runner_falls_back_on_an_empty_selection_and_logs_it(caplog):
    candidates, capacity = _point()
    runner = PolicyRunner(EmptyPolicy(), make_policy("fcfs"))
    fcfs = make_policy("fcfs").decide(candidates, capacity)
    with caplog.at_level(logging.ERROR, logger="andes_gym.hook"):
        for _ in range(3):
            decision = runner.decide(candidates, capacity)
            np.testing.assert_array_equal(decision.order, fcfs.order)
    assert runner.failures == {"empty: empty selection": 3}
    assert runner.fallbacks_by_reason["empty_selection"] == 3 and runner.num_fallbacks == 3
    lines = [r.getMessage() for r in caplog.records if "failed" in r.getMessage()]
    assert len(lines) == 1 and "selects nothing" in lines[0]  # rate-limited: once


def test_policy_runner_survives_system_exit_but_not_keyboard_interrupt(caplog):
    candidates, capacity = _point()
    runner = PolicyRunner(ExitingPolicy(), make_policy("fcfs"))
    with caplog.at_level(logging.ERROR, logger="andes_gym.hook"):
        decision = runner.decide(candidates, capacity)
    check_decision(decision, candidates, capacity)
    assert runner.failures == {"exiting: policy raised SystemExit": 1}
    assert runner.fallbacks_by_reason["raised"] == 1
    assert any("SystemExit" in r.getMessage() for r in caplog.records)

    class Interrupted(Policy):
        name = "interrupted"

        def decide(self, candidates, capacity):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        PolicyRunner(Interrupted(), make_policy("fcfs")).decide(candidates, capacity)


def test_a_decision_past_its_budget_is_dropped_for_fcfs_and_counted(caplog):
    from andes_gym.engine_bridge.candidates_vllm import DecisionPoint
    from andes_gym.engine_bridge.runtime import HookRuntime

    candidates, capacity = _point()
    runtime = HookRuntime(HookConfig(decision_budget_ms=5.0), serve=False)
    runtime.use_policy(SlowPolicy(delay_s=0.03))
    with caplog.at_level(logging.WARNING, logger="andes_gym.hook"):
        for _ in range(2):
            decision = runtime.decide(DecisionPoint(candidates, capacity, requests=[]))
            check_decision(decision, candidates, capacity)
    stats = runtime.stats()
    assert stats["decision_budget_ms"] == 5.0
    assert stats["fallbacks"] == 2 and stats["decisions"] == 2
    assert stats["fallbacks_by_reason"] == {
        "raised": 0,
        "invalid_decision": 0,
        "empty_selection": 0,
        "over_budget": 2,
    }
    late = [r.getMessage() for r in caplog.records if "budget" in r.getMessage()]
    assert len(late) == 1 and "'slow'" in late[0] and "5 ms" in late[0]
    # Within its budget, the same policy's decisions are used.
    runtime.use_policy(SlowPolicy(delay_s=0.0), decision_budget_ms=1000.0)
    runtime.decide(DecisionPoint(candidates, capacity, requests=[]))
    assert runtime.stats()["fallbacks"] == 0


def test_decision_budget_defaults_to_50_ms_and_rejects_bad_values():
    assert HookConfig().decision_budget_ms == 50.0
    assert HookConfig(decision_budget_ms=None).decision_budget_ms is None
    for bad in (0, -1.0, float("nan"), "fast", True):
        with pytest.raises(ValueError, match="decision_budget_ms"):
            HookConfig.from_dict({"decision_budget_ms": bad})


def test_failure_kind_of_plain_exceptions():
    assert failure_kind(ZeroDivisionError()) == "policy raised ZeroDivisionError"


# ------------------------------------------------------------------ ledger
def test_ledger_records_deliveries_preemptions_and_completions():
    now = [0.0]
    ledger = RequestLedger(clock=lambda: now[0], capacity=1, record_token_times=True)
    a = ledger.add(0.0, 0.1, 10.0, prompt_tokens=5, max_tokens=3, request_id="a")
    b = ledger.add(0.05, 0.1, 10.0, prompt_tokens=7, max_tokens=2)
    ledger.bind("b-x", b)
    with pytest.raises(ValueError, match="bound"):
        ledger.bind("a", b)
    for t, rows, counts in ((0.1, [a, b], [1, 1]), (0.2, [a, b], [1, 1]), (0.3, [a], [1])):
        ledger.deliver(np.array(rows), np.array(counts), t)
    ledger.deliver(np.array([a]), np.array([0]), 0.35)  # no token: nothing recorded
    ledger.set_preemptions(b, 2)
    ledger.finish("b-x", 0.2)
    ledger.finish("a", 0.3)
    np.testing.assert_array_equal(ledger.num_tokens, [3, 2])
    np.testing.assert_array_equal(ledger.num_preemptions, [0, 2])
    assert ledger.completion_order == [b, a]
    assert ledger.finished.all() and ledger.rows == {}
    np.testing.assert_allclose(ledger.tracker.token_times(a), [0.1, 0.2, 0.3])
    expected = qoe([0.1, 0.2, 0.3], arrival=0.0, ttft=0.1, tds=10.0)
    assert ledger.tracker.qoe([a])[0] == pytest.approx(expected)


def test_ledger_delivers_several_tokens_of_one_step():
    ledger = RequestLedger(clock=lambda: 0.0)
    row = ledger.add(0.0, 0.0, 100.0, prompt_tokens=1, max_tokens=5)
    ledger.deliver(np.array([row]), np.array([3]), 0.01)
    assert ledger.num_tokens[row] == 3


# ------------------------------------------------------------------ in a real engine
def _bind_requests(scheduler, ledger, engine, prompts, max_tokens):
    from vllm import SamplingParams, TokensPrompt
    from vllm.sampling_params import RequestOutputKind

    ids = []
    for i, prompt in enumerate(prompts):
        ledger.add(0.0, 1.0, 10.0, prompt_tokens=len(prompt), max_tokens=max_tokens)
        params = SamplingParams(
            max_tokens=max_tokens,
            ignore_eos=True,
            detokenize=False,
            output_kind=RequestOutputKind.DELTA,
        )
        internal = engine.add_request(f"mech-{i}", TokensPrompt(prompt_token_ids=prompt), params)
        ledger.bind(internal, i)
        ids.append(internal)
    return ids


@pytest.mark.vllm
def test_hook_admits_in_decision_order_holds_back_and_preempts(vllm_engine):
    from andes_gym.core.selection import decision_from_order
    from andes_gym.engine_bridge.engine import abort_all
    from andes_gym.engine_bridge.runtime import load_latency_model

    engine, scheduler = vllm_engine.engine, vllm_engine.scheduler
    runtime = scheduler.andes_gym
    ledger = RequestLedger(clock=lambda: 0.0)
    runtime.attach_environment(ledger, load_latency_model("cpu_tiny"), 1.0, "delay", False)
    prompts = [[1 + (7 * i + j) % 400 for j in range(40)] for i in range(5)]
    try:
        ids = _bind_requests(scheduler, ledger, engine, prompts, max_tokens=8)
        point = scheduler.decision_point()
        rows = point.candidates.request_id.tolist()
        assert rows == [0, 1, 2, 3, 4] and point.candidates.num_running == 0
        # Run 3 then 1 (in that order); hold back the others.
        runtime.set_decision(decision_from_order(np.array([rows.index(3), rows.index(1)]), 5))
        engine.step()
        assert [r.request_id for r in scheduler.running] == [ids[3], ids[1]]
        assert [r.request_id for r in scheduler.waiting] == [ids[0], ids[2], ids[4]]
        # Now run 0 and 3: 1 is preempted (recompute), 0 admitted, 2 and 4 still held.
        point = scheduler.decision_point()
        rows = point.candidates.request_id.tolist()
        runtime.set_decision(decision_from_order(np.array([rows.index(0), rows.index(3)]), 5))
        engine.step()
        # Running requests keep their place; vLLM appends the admitted one.
        assert [r.request_id for r in scheduler.running] == [ids[3], ids[0]]
        assert [r.request_id for r in scheduler.waiting] == [ids[1], ids[2], ids[4]]
        np.testing.assert_array_equal(ledger.num_preemptions, [0, 1, 0, 0, 0])
        # Request 3 has produced two tokens (prefill, then decode); 1 lost none it had.
        np.testing.assert_array_equal(ledger.num_tokens, [1, 1, 0, 2, 0])
        runtime.set_decision(None)
    finally:
        abort_all(engine)
    assert scheduler.get_num_unfinished_requests() == 0 and ledger.rows == {}


@pytest.mark.vllm
@pytest.mark.timeout(600)
@pytest.mark.parametrize("policy_cls", [EmptyPolicy, ExitingPolicy])
def test_serving_survives_a_starving_or_exiting_policy(vllm_engine, policy_cls):
    """Serving mode on the session engine: every request finishes, by FCFS fallbacks."""
    from vllm import SamplingParams, TokensPrompt
    from vllm.sampling_params import RequestOutputKind

    from andes_gym.engine_bridge.engine import abort_all

    engine, scheduler = vllm_engine.engine, vllm_engine.scheduler
    runtime = scheduler.andes_gym
    runtime.use_policy(policy_cls(), skip_uncontested=False)
    params = SamplingParams(
        max_tokens=6, ignore_eos=True, detokenize=False, output_kind=RequestOutputKind.DELTA
    )
    try:
        for i in range(12):
            prompt = TokensPrompt(prompt_token_ids=[1 + (5 * i + j) % 400 for j in range(40)])
            engine.add_request(f"{policy_cls.name}-{i}", prompt, params)
        for _ in range(400):
            if not scheduler.get_num_unfinished_requests():
                break
            engine.step()
        assert scheduler.get_num_unfinished_requests() == 0, "serving starved"
        assert int(runtime.ledger.num_tokens.sum()) == 12 * 6
        stats = runtime.stats()
        reason = "empty_selection" if policy_cls is EmptyPolicy else "raised"
        assert stats["fallbacks_by_reason"][reason] == stats["fallbacks"] > 0
    finally:
        abort_all(engine)
        runtime.runner = None  # back to environment mode for the other tests


def _run_subprocess(code_or_args: list[str], env_vars: dict, timeout_s: float = 300):
    env = {**os.environ, **env_vars}
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS_DIR), str(REPO_ROOT), env.get("PYTHONPATH", "")])
    return subprocess.run(
        [sys.executable, *code_or_args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        env=env,
        cwd=str(REPO_ROOT),
    )


@pytest.mark.vllm
@pytest.mark.slow
def test_hook_serving_mode_falls_back_on_a_broken_policy(
    vllm_available, test_engine_config, tmp_path
):
    """Through LLMEngine(scheduler_cls=...) and the env-var configuration, as under `vllm serve`.

    The policy fails in four ways in turn; every request must still get exactly its tokens,
    each kind of failure is logged once, and releasing the engine leaves nothing behind.
    """
    engine_yaml = tmp_path / "engine.yaml"
    engine_yaml.write_text(yaml.safe_dump(test_engine_config))
    proc = _run_subprocess(
        ["-m", "andes_gym.smoke", "--engine", str(engine_yaml), "--requests", "40"],
        {ENV_POLICY: "test_hook:CyclingBrokenPolicy"},
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = _serving_report(proc.stdout)
    assert report["policy"] == "test_hook:CyclingBrokenPolicy"
    assert report["exact_lengths"] and report["ledger_exact"], report
    assert report["num_finished"] == 40
    assert set(report["failures"]) == {
        "cycling_broken: policy raised RuntimeError",
        "cycling_broken: non-finite scores",
        "cycling_broken: scores or decision of the wrong shape",
        "cycling_broken: invalid decision",
    }
    assert 0 < report["fallbacks"] < report["decisions"]
    first_logs = [ln for ln in proc.stderr.splitlines() if "policy 'cycling_broken' failed" in ln]
    assert len(first_logs) == 4, first_logs
    assert report["threads_left"] == [] and report["children_left"] == []


def _serving_report(stdout: str) -> dict:
    lines = [ln for ln in stdout.splitlines() if ln.startswith("ANDES_GYM_SMOKE ")]
    assert lines, f"no report in the output:\n{stdout[-2000:]}"
    return json.loads(lines[-1].split(" ", 1)[1])
