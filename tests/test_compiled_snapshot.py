"""`CompiledSurrogateBackend.snapshot` / `restore`: look-ahead without replaying from reset.

Restoring a snapshot and playing the same decisions again gives bit-identical
observations, reward potentials, candidates and final metrics; restoring and playing a
different decision gives what a fresh episode with that decision gives.
"""

from __future__ import annotations

import dataclasses
import pickle

import numpy as np
import pytest
from surrogate_support import contended

from andes_gym.core.selection import select
from andes_gym.envs.surrogate_env import SurrogateEnv
from andes_gym.surrogate.compiled import EngineSnapshot

pytestmark = pytest.mark.filterwarnings("ignore:k_slots=.* is below")

SEED = 3
PREFIX = 6  # decisions played before the snapshot
AHEAD = 12  # decisions played after it


def make_env(**kwargs) -> SurrogateEnv:
    kwargs = {"engine": "cpu_tiny", "workload": contended(), "k_slots": 16, **kwargs}
    return SurrogateEnv(simulator="compiled", **kwargs)


def scores(step: int, k: int, salt: int = 0) -> np.ndarray:
    return np.random.default_rng([step, salt]).uniform(-1.0, 1.0, k)


def play_slots(env: SurrogateEnv, first: int, num: int, salt: int = 0) -> list:
    """`num` steps on slot scores (step numbers from `first`): per step the observation,
    the reward potential and whether a decision is pending."""
    backend, k = env.backend, env.feature_spec.k_slots
    trace = []
    for step in range(first, first + num):
        if not backend._pending_point:
            break
        pending, potential = backend.step_slots(scores(step, k, salt), env._obs)
        trace.append((env._obs.copy(), potential, pending))
    return trace


def play_decisions(env: SurrogateEnv, first: int, num: int) -> list:
    """`num` steps through `decision_candidates` / `apply` / `next_decision`: per step the
    candidates' fields and the reward potential."""
    backend = env.backend
    trace = []
    for step in range(first, first + num):
        if not backend._pending_point:
            break
        candidates, capacity = backend.decision_candidates()
        decision = select(scores(step, len(candidates)), candidates, capacity)
        backend.apply(decision)
        backend.next_decision()
        trace.append((vars(candidates), backend.potential()))
    return trace


def final_state(env: SurrogateEnv) -> dict:
    """Plays the episode to its end (fixed scores) and returns the engine's final record."""
    backend = env.backend
    while backend._pending_point:
        backend.step_slots(np.linspace(1.0, -1.0, env.feature_spec.k_slots), env._obs)
    metrics = env.episode_results()["request_metrics"]
    return {
        "metrics": {name: getattr(metrics, name) for name in metrics.__dataclass_fields__},
        "potential": backend.potential(),
        "now_s": backend.now_s,
        "ints": backend._ints.copy(),
        "floats": backend.tracker._floats.copy(),
    }


def assert_same(a, b) -> None:
    """Bit-identical nested structures (NaN equal to NaN)."""
    if dataclasses.is_dataclass(a):
        assert type(a) is type(b)
        assert_same(vars(a), vars(b))
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            assert_same(a[key], b[key])
    elif isinstance(a, list | tuple):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            assert_same(x, y)
    elif isinstance(a, np.ndarray):
        np.testing.assert_array_equal(a, b, strict=True)
    else:
        assert a == b or (a != a and b != b), (a, b)


def at_snapshot(env: SurrogateEnv) -> EngineSnapshot:
    env.reset(seed=SEED)
    assert len(play_slots(env, 0, PREFIX)) == PREFIX
    return env.backend.snapshot()


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"engine": "cpu_tiny_fitted", "iters_per_decision": 3},
        {"skip_uncontested": False, "oracle": True, "qoe_variant": "area"},
    ],
)
def test_replay_after_restore_is_bit_identical(kwargs):
    env = make_env(**kwargs)
    snap = at_snapshot(env)
    first, first_end = play_slots(env, PREFIX, AHEAD), final_state(env)
    assert len(first) == AHEAD
    for _ in range(2):  # a snapshot restores any number of times
        env.backend.restore(snap)
        assert_same(play_slots(env, PREFIX, AHEAD), first)
        assert_same(final_state(env), first_end)


def test_restore_then_other_decision_equals_fresh_replay():
    env = make_env()
    snap = at_snapshot(env)
    play_slots(env, PREFIX, AHEAD)  # one branch, thrown away
    env.backend.restore(snap)
    other = play_slots(env, PREFIX, AHEAD, salt=1)
    other_end = final_state(env)

    fresh = make_env()
    fresh.reset(seed=SEED)
    play_slots(fresh, 0, PREFIX)
    assert_same(play_slots(fresh, PREFIX, AHEAD, salt=1), other)
    assert_same(final_state(fresh), other_end)


def test_candidates_path_after_restore():
    env = make_env()
    snap = at_snapshot(env)
    first = play_decisions(env, PREFIX, AHEAD)
    assert len(first) == AHEAD
    env.backend.restore(snap)
    assert_same(play_decisions(env, PREFIX, AHEAD), first)


def test_snapshot_into_reuses_arrays_and_is_not_changed_by_play():
    env = make_env()
    snap = at_snapshot(env)
    kept = {name: getattr(snap, name).copy() for name in ("ints", "stf", "floats")}
    views = (env.backend._ints, env.backend._gen, env.backend.tracker._floats)
    play_slots(env, PREFIX, AHEAD)
    assert_same({name: getattr(snap, name) for name in kept}, kept)
    later = env.backend.snapshot()
    reused = env.backend.snapshot(out=snap)
    assert reused is snap and reused.ints is not later.ints
    assert_same(vars(reused), vars(later))
    env.backend.restore(snap)
    # In place: the arrays (and the views into them) are the same objects.
    now = (env.backend._ints, env.backend._gen, env.backend.tracker._floats)
    assert all(a is b for a, b in zip(now, views, strict=True))


def test_restore_after_the_end_and_through_pickle():
    env = make_env()
    snap = at_snapshot(env)
    expected = final_state(env)
    assert not env.backend._pending_point
    env.backend.restore(snap)
    assert env.backend._pending_point
    clone = pickle.loads(pickle.dumps(env))
    assert_same(final_state(clone), expected)
    assert_same(final_state(env), expected)


def test_restore_refuses_another_episode_size():
    env = make_env()
    snap = at_snapshot(env)
    other = make_env(workload=contended(n=50))
    other.reset(seed=SEED)
    with pytest.raises(ValueError, match="only into the episode it was taken in"):
        other.backend.restore(snap)
