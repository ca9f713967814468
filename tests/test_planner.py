"""The look-ahead planner (`andes_rollout`) and the streams workloads it is measured on."""

from __future__ import annotations

import dataclasses

import gymnasium as gym
import numpy as np
import pytest

import andes_gym.envs  # noqa: F401 (registers the env ids)
from andes_gym.agents import make_policy
from andes_gym.agents.adapter import PolicyAgent
from andes_gym.agents.planner import AndesRollout
from andes_gym.agents.traffic_model import TrafficModel
from andes_gym.config_files import ConfigError
from andes_gym.core.selection import check_decision
from andes_gym.envs.episode_workloads import workload_source
from andes_gym.evaluation import run_episode
from andes_gym.workloads import StreamsConfig, make_workload, workload_config_from_dict
from andes_gym.workloads.spec import Workload

LENGTHS = {"kind": "sharegpt", "scale": 0.1, "max_prompt_tokens": 384, "max_output_tokens": 128}
TARGETS = {"kind": "reading", "time_scale": 0.02}


def stream(name: str, n: int, rate: float, **arrivals) -> dict:
    arrivals = {"kind": "poisson", "rate_rps": rate, **arrivals}
    return {
        "name": name,
        "num_requests": n,
        "arrivals": arrivals,
        "lengths": LENGTHS,
        "targets": TARGETS,
    }


# Long prompts at ~3x what cpu_tiny prefills: Andes preempts and re-prefills long contexts.
LONG_PROMPTS = {
    "name": "long_prompt_overload",
    "num_requests": 100,
    "arrivals": {"kind": "poisson", "rate_rps": 150.0},
    "lengths": {
        "kind": "summarization",
        "scale": 0.1,
        "max_prompt_tokens": 384,
        "max_output_tokens": 128,
    },
    "targets": TARGETS,
}


def make_env(workload, **kwargs):
    return gym.make(
        "andes_gym/Surrogate-v0",
        workload=workload,
        engine="cpu_tiny",
        k_slots=64,
        lookahead_s=0.05,
        disable_env_checker=True,
        **kwargs,
    )


# ------------------------------------------------------------------------- streams
def streams(*entries, name="two"):
    return workload_config_from_dict({"name": name, "streams": list(entries)})


def test_streams_merge_every_stream_sorted_and_seeded():
    cfg = streams(stream("a", 50, 100.0), stream("b", 30, 40.0))
    assert isinstance(cfg, StreamsConfig) and cfg.num_requests == 80
    w = make_workload(cfg, 3)
    assert len(w) == 80 and w.name == "two"
    assert np.all(np.diff(w.arrival_s) >= 0)
    again = make_workload(cfg, 3)
    assert np.array_equal(w.arrival_s, again.arrival_s)
    assert np.array_equal(w.output_tokens, again.output_tokens)
    assert not np.array_equal(w.arrival_s, make_workload(cfg, 4).arrival_s)


def test_streams_are_independent_of_each_other():
    """Changing one stream leaves the other's requests as they were."""
    w1 = make_workload(streams(stream("a", 50, 100.0), stream("b", 30, 40.0)), 0)
    w2 = make_workload(streams(stream("a", 50, 100.0), stream("b", 30, 80.0)), 0)
    assert len(np.intersect1d(w1.arrival_s, w2.arrival_s)) == 50  # stream a, untouched


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"name": "x", "streams": [stream("a", 5, 1.0)]}, "streams"),
        ({"name": "x", "streams": [stream("a", 5, 1.0), {"name": "b"}]}, "streams[1].arrivals"),
        ({"name": "x", "streams": [stream("a", 5, 1.0), stream("b", 5, 1.0)], "rate": 3}, "rate"),
        ({"name": "x", "streams": [stream("a", 5, 1.0), "text"]}, "streams[1]"),
        (
            {"name": "x", "streams": [stream("a", 5, 1.0), stream("b", 5, -1.0)]},
            "streams[1].arrivals.rate_rps",
        ),
    ],
)
def test_streams_errors_name_the_key(data, key):
    with pytest.raises(ConfigError) as info:
        workload_config_from_dict(data, source="demo.yaml")
    assert info.value.key == key
    assert "demo.yaml" in str(info.value)


def test_streams_presets_load_as_workloads():
    for name in ("hetero_targets_cpu", "chat_long_prompt_cpu", "heldout_three_rhythms_cpu"):
        source = workload_source(name)
        assert isinstance(source.config, StreamsConfig)
        assert len(source.sample(0)) == source.config.num_requests
    mixture = workload_source(["hetero_targets_cpu", "sustained_overload_cpu"])
    assert len(mixture.sample(1)) > 0


# ------------------------------------------------------------------- traffic model
def test_traffic_model_samples_lengths_beyond_what_was_delivered():
    model = TrafficModel.from_source(workload_source(LONG_PROMPTS), num_draws=2)
    rng = np.random.default_rng(0)
    delivered = np.array([0, 5, 50, 127, 10_000])
    for _ in range(20):
        total = model.total_output(rng, delivered)
        assert np.all(total > delivered)
    future = model.future(rng, 0.2, 0.3)
    assert np.all((future.arrival_s > 0.2) & (future.arrival_s <= 0.5))


def test_planner_refuses_a_fixed_workload_without_a_distribution():
    w = make_workload(workload_config_from_dict(LONG_PROMPTS), 0)
    agent = PolicyAgent(AndesRollout())
    with pytest.raises(ValueError, match="workload distribution"):
        run_episode(make_env(w), agent, seed=0)


# ------------------------------------------------------------------------ planner
def _decisions(env, policy, seed):
    """(time, request ids selected in order) of every decision the policy takes."""
    agent = PolicyAgent(policy)
    agent.reset(seed)
    env.reset(seed=seed)
    out = []
    while (ctx := env.unwrapped.decision_context) is not None:
        candidates, capacity, _ = ctx
        decision = agent.decide(env)
        check_decision(decision, candidates, capacity)
        out.append((candidates.now_s, tuple(candidates.request_id[decision.order])))
        env.unwrapped.step_decision(decision)
    return out, env.unwrapped.episode_results()["qoe_summary"]


def test_planner_never_reads_the_future_of_the_episode():
    """Two episodes equal up to time T and different after it: every decision the planner
    takes before T is the same (it samples futures from the distribution, not the episode)."""
    cfg = workload_config_from_dict(LONG_PROMPTS)
    w = make_workload(cfg, 5)
    cut = float(w.arrival_s[60])
    later = w.arrival_s > cut
    altered = dataclasses.replace(
        w,
        arrival_s=np.where(later, w.arrival_s + 0.05, w.arrival_s),
        output_tokens=np.where(later, np.maximum(w.output_tokens // 3, 1), w.output_tokens),
    )
    assert isinstance(altered, Workload)
    runs = [
        _decisions(make_env(wl), AndesRollout(workload=LONG_PROMPTS, num_futures=1), seed=1)[0]
        for wl in (w, altered)
    ]
    before = [[d for d in run if d[0] < cut] for run in runs]
    assert len(before[0]) > 20
    assert before[0] == before[1]
    assert runs[0] != runs[1]  # after T the episodes differ, and so do the decisions


def test_planner_is_reproducible_and_valid():
    a = _decisions(make_env(LONG_PROMPTS, time_limit_s=0.4), AndesRollout(num_futures=1), seed=2)
    b = _decisions(make_env(LONG_PROMPTS, time_limit_s=0.4), AndesRollout(num_futures=1), seed=2)
    assert a == b


def test_planner_beats_andes_where_preemptions_re_prefill_long_prompts():
    """On long prompts past capacity, Andes' preemptions re-prefill long contexts; the
    planner's look-ahead sees the cost and chooses a variant that avoids it."""
    scores = {}
    for name in ("andes", "andes_rollout"):
        result = run_episode(make_env(LONG_PROMPTS), PolicyAgent(make_policy(name)), seed=3)
        scores[name] = result.summary["mean_qoe"]
    assert scores["andes_rollout"] > scores["andes"] + 0.02, scores


def test_planner_arguments_are_checked():
    with pytest.raises(ValueError, match="horizon_s"):
        AndesRollout(horizon_s=0)
    with pytest.raises(ValueError, match="num_futures"):
        AndesRollout(num_futures=0)
    with pytest.raises(ValueError, match="min_gain"):
        AndesRollout(min_gain=-1)


def test_imitation_teacher_takes_kwargs_and_the_environment_world():
    pytest.importorskip("stable_baselines3", reason="imitation needs the train extra")
    from andes_gym.training.config import load_config
    from andes_gym.training.imitation import TeacherLabels

    env = TeacherLabels(make_env(LONG_PROMPTS), "andes_rollout", {"num_futures": 1})
    assert env.teacher.num_futures == 1
    assert env.teacher.profile is not None and env.teacher.model is not None
    _, info = env.reset(seed=0)
    assert info["teacher_action"].shape == (64,)
    cfg = load_config("learned_best")
    assert cfg.bc.teacher == "andes_rollout" and cfg.bc.teacher_kwargs == {"num_futures": 2}
