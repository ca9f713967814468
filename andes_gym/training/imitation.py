"""Behaviour-cloning warm start: imitate a teacher policy's decisions, then fine-tune with RL.

The teacher (a registered policy such as `andes` or `lqf`) decides every pending decision
of the training envs; its decision is encoded as K slot scores with the same encoding the
`PolicyAgent` adapter uses (`slot_action_from_decision`: selected slots in (0, 1] by
priority, the rest -1), so imitating those scores reproduces its selection through the
shared `select` rule. The student's action mean is regressed onto the scaled scores
(masked to filled slots), and the value head onto the discounted returns of the recorded
episodes. Optional DAgger rounds let the student act while the teacher labels, so the
student also learns on the states its own mistakes lead to.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass

import gymnasium as gym
import numpy as np

from andes_gym.agents.adapter import attach_world
from andes_gym.agents.registry import make_policy
from andes_gym.core.features import slot_action_from_decision

METRIC_SAMPLES = 2048  # decisions the fit metrics are computed on


class TeacherLabels(gym.Wrapper):
    """Adds the teacher's slot action for the pending decision as `info["teacher_action"]`.

    Labeling can be switched off (`set_labeling(False)`) once imitation is over, so RL
    training does not pay for the teacher.

    Args:
        env: An andes_gym scheduling env.
        teacher: Registered policy name.
        teacher_kwargs: Its constructor arguments.
    """

    def __init__(self, env: gym.Env, teacher: str, teacher_kwargs: dict | None = None) -> None:
        super().__init__(env)
        self.teacher = make_policy(teacher, **(teacher_kwargs or {}))
        attach_world(self.teacher, env)
        self.labeling = True

    def set_labeling(self, on: bool) -> None:
        self.labeling = bool(on)

    def _label(self, info: dict) -> dict:
        if not self.labeling:
            return info
        k = self.action_space.shape[0]
        ctx = self.env.unwrapped.decision_context
        if ctx is None:
            info["teacher_action"] = np.full(k, -1.0, dtype=np.float32)
            return info
        candidates, capacity, slot_idx = ctx
        decision = self.teacher.decide(candidates, capacity)
        info["teacher_action"] = slot_action_from_decision(decision.order, slot_idx, k)
        return info

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        obs, info = self.env.reset(seed=seed, options=options)
        self.teacher.reset(seed)
        return obs, self._label(dict(info))

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        return obs, reward, terminated, truncated, self._label(dict(info))


@dataclass
class Demonstrations:
    """Recorded decisions: raw observations, teacher slot actions, and returns where known."""

    obs: np.ndarray
    actions: np.ndarray
    returns: np.ndarray  # NaN where the episode did not finish inside the recording
    episodes: list[dict]  # qoe_summary of each finished episode

    def __len__(self) -> int:
        return len(self.obs)

    def extend(self, other: Demonstrations) -> Demonstrations:
        return Demonstrations(
            np.concatenate([self.obs, other.obs]),
            np.concatenate([self.actions, other.actions]),
            np.concatenate([self.returns, other.returns]),
            self.episodes + other.episodes,
        )


def _raw_obs(venv, obs: np.ndarray) -> np.ndarray:
    from andes_gym.training.checkpoint import find_vecnormalize

    norm = find_vecnormalize(venv)
    return norm.get_original_obs() if norm is not None else obs


def collect(venv, num_steps: int, gamma: float, student=None) -> Demonstrations:
    """Runs the vector env for about `num_steps` decisions and records teacher labels.

    Args:
        venv: Vector env whose envs are wrapped in `TeacherLabels`.
        num_steps: Decisions to record (rounded up to a multiple of the env count).
        gamma: Discount of the recorded returns.
        student: None: the teacher acts; else a callable obs -> actions (DAgger).

    Returns:
        The demonstrations (raw, unnormalized observations).
    """
    venv.env_method("set_labeling", True)
    n = venv.num_envs
    obs = venv.reset()
    labels = np.stack([info["teacher_action"] for info in _reset_infos(venv)])
    obs_buf, act_buf, ret_buf, episodes = [], [], [], []
    streams: list[list[tuple[int, float]]] = [[] for _ in range(n)]  # (row, reward)
    for _ in range(-(-num_steps // n)):
        raw = _raw_obs(venv, obs)
        rows = range(len(obs_buf), len(obs_buf) + n)
        obs_buf.extend(raw.copy())
        act_buf.extend(labels.copy())
        ret_buf.extend([np.nan] * n)
        action = labels if student is None else student(obs)
        obs, rewards, dones, infos = venv.step(action)
        rewards = _raw_rewards(venv, rewards)
        next_labels = []
        for i, row in enumerate(rows):
            streams[i].append((row, float(rewards[i])))
            if dones[i]:
                g = 0.0
                for r_row, rew in reversed(streams[i]):
                    g = rew + gamma * g
                    ret_buf[r_row] = g
                streams[i] = []
                if "qoe_summary" in infos[i]:
                    episodes.append(infos[i]["qoe_summary"])
                next_labels.append(_reset_infos(venv)[i]["teacher_action"])
            else:
                next_labels.append(infos[i]["teacher_action"])
        labels = np.stack(next_labels)
    return Demonstrations(
        np.asarray(obs_buf, dtype=np.float32),
        np.asarray(act_buf, dtype=np.float32),
        np.asarray(ret_buf, dtype=np.float64),
        episodes,
    )


def _reset_infos(venv) -> list[dict]:
    # Wrappers (VecMonitor, VecNormalize) keep their own, empty reset_infos.
    while hasattr(venv, "venv"):
        venv = venv.venv
    return venv.reset_infos


def _raw_rewards(venv, rewards: np.ndarray) -> np.ndarray:
    from andes_gym.training.checkpoint import find_vecnormalize

    norm = find_vecnormalize(venv)
    return norm.get_original_reward() if norm is not None and norm.norm_reward else rewards


def fit(
    policy,
    demos: Demonstrations,
    normalize,
    *,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    target_scale: float,
    value_pretrain: bool,
    seed: int,
    k_slots: int,
    num_slot_features: int,
) -> dict:
    """Regresses the policy's action mean (and value) onto the demonstrations.

    Args:
        policy: The SB3 actor-critic policy.
        demos: Recorded data (raw observations).
        normalize: Callable mapping raw observations to the policy's inputs.
        epochs: Passes over the data.
        batch_size: Minibatch size.
        learning_rate: Adam learning rate.
        target_scale: Multiplier of the teacher's slot actions.
        value_pretrain: Also fit the value head to the returns.
        seed: Shuffling seed.
        k_slots: K (for the slot mask).
        num_slot_features: F (for the slot mask).

    Returns:
        Final metrics: `bc/action_mse`, `bc/pair_accuracy` (share of teacher-selected vs
        unselected slot pairs the student orders correctly), `bc/value_mse`.
    """
    import torch

    device = policy.device
    obs = torch.as_tensor(normalize(demos.obs), dtype=torch.float32, device=device)
    target = torch.as_tensor(demos.actions * target_scale, dtype=torch.float32, device=device)
    k, f = k_slots, num_slot_features
    mask = torch.as_tensor(demos.obs[:, k * f : k * f + k] > 0.5, device=device)
    returns = torch.as_tensor(
        np.nan_to_num(demos.returns, nan=0.0), dtype=torch.float32, device=device
    )
    has_ret = torch.as_tensor(np.isfinite(demos.returns), device=device)
    fit_value = value_pretrain and bool(has_ret.any())
    params = [p for name, p in policy.named_parameters() if name != "log_std"]
    opt = torch.optim.Adam(params, lr=learning_rate)
    gen = torch.Generator().manual_seed(seed)
    n = len(obs)
    policy.train()
    for _ in range(epochs):
        perm = torch.randperm(n, generator=gen).to(device)
        for start in range(0, n, batch_size):
            idx = perm[start : start + batch_size]
            loss = _action_loss(policy, obs[idx], target[idx], mask[idx])
            if fit_value:
                sel = idx[has_ret[idx]]
                if len(sel):
                    values = policy.predict_values(obs[sel]).squeeze(-1)
                    loss = loss + torch.mean((values - returns[sel]) ** 2)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
    # Metrics on a fixed-size sample: the pairwise accuracy costs O(n K^2).
    sample = torch.randperm(n, generator=gen)[:METRIC_SAMPLES].to(device)
    return _metrics(
        policy, obs[sample], target[sample], mask[sample], returns[sample], has_ret[sample]
    )


def _action_mean(policy, obs):
    dist = policy.get_distribution(obs)
    return dist.distribution.mean


def _action_loss(policy, obs, target, mask):
    err = (_action_mean(policy, obs) - target) ** 2
    return (err * mask).sum() / mask.sum().clamp(min=1)


def _metrics(policy, obs, target, mask, returns, has_ret) -> dict:
    import torch

    with torch.no_grad():
        mean = _action_mean(policy, obs)
        mse = float(((mean - target) ** 2 * mask).sum() / mask.sum().clamp(min=1))
        sel = (target > 0) & mask
        unsel = (target <= 0) & mask
        # pairs (selected i, unselected j) of the same sample where mean_i > mean_j
        diff = mean.unsqueeze(2) - mean.unsqueeze(1)
        pairs = sel.unsqueeze(2) & unsel.unsqueeze(1)
        total = pairs.sum()
        acc = float(((diff > 0) & pairs).sum() / total) if total > 0 else float("nan")
        vmse = float("nan")
        if has_ret.any():
            v = policy.predict_values(obs[has_ret]).squeeze(-1)
            vmse = float(torch.mean((v - returns[has_ret]) ** 2))
    return {"bc/action_mse": mse, "bc/pair_accuracy": acc, "bc/value_mse": vmse}


@contextlib.contextmanager
def _torch_threads(n: int):
    """Torch intra-op threads set to `n` inside the block, restored after."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(max(int(n), 1))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def run_imitation(model, venv, cfg, spec, logger, log=print) -> dict:
    """The whole warm start: record, fit, DAgger rounds, then set the exploration noise.

    Args:
        model: The SB3 algorithm (its policy is trained in place).
        venv: Training vector env built with teacher labels.
        cfg: The `TrainConfig`.
        spec: The env's `FeatureSpec`.
        logger: SB3 logger (bc/* values are recorded and dumped at step 0).
        log: Where progress lines go.

    Returns:
        The last fit metrics plus `bc/teacher_mean_qoe` and `bc/num_samples`.
    """
    import torch

    from andes_gym.training.checkpoint import find_vecnormalize

    b = cfg.bc
    gamma = cfg.algo.gamma if cfg.algo.gamma is not None else 0.99
    policy = model.policy

    def normalize(raw):
        norm = find_vecnormalize(venv)
        return norm.normalize_obs(raw) if norm is not None and norm.norm_obs else raw

    def student(obs):
        with torch.no_grad():
            actions, _ = policy.predict(obs, deterministic=True)
        return actions

    log(
        f"[bc] recording {b.timesteps} decisions of teacher {b.teacher!r} (behaviour-cloning warm start)"
    )
    start = time.monotonic()
    demos = collect(venv, b.timesteps, gamma)
    log(f"[bc] recorded {len(demos)} decisions in {time.monotonic() - start:.0f} s")
    teacher_qoe = [e["mean_qoe"] for e in demos.episodes]
    metrics = {}
    for rnd in range(b.dagger_rounds + 1):
        if rnd > 0:
            log(
                f"[bc] DAgger round {rnd}: the student acts, {b.teacher!r} labels {b.dagger_timesteps} decisions"
            )
            start = time.monotonic()
            more = collect(venv, b.dagger_timesteps, gamma, student=student)
            log(f"[bc] recorded {len(more)} decisions in {time.monotonic() - start:.0f} s")
            if more.episodes:
                logger.record(
                    f"bc/student_mean_qoe_round{rnd}",
                    float(np.mean([e["mean_qoe"] for e in more.episodes])),
                )
            demos = demos.extend(more)
        start = time.monotonic()
        with _torch_threads(b.fit_threads or os.cpu_count() or 1):
            metrics = fit(
                policy,
                demos,
                normalize,
                epochs=b.epochs,
                batch_size=b.batch_size,
                learning_rate=b.learning_rate,
                target_scale=b.target_scale,
                value_pretrain=b.value_pretrain,
                seed=cfg.seed + rnd,
                k_slots=spec.k_slots,
                num_slot_features=spec.num_slot_features,
            )
        log(
            f"[bc] round {rnd}: fit {len(demos)} samples x {b.epochs} epochs in "
            f"{time.monotonic() - start:.0f} s: action mse {metrics['bc/action_mse']:.4f}, "
            f"pair accuracy {metrics['bc/pair_accuracy']:.3f}, value mse {metrics['bc/value_mse']:.2e}"
        )
    venv.env_method("set_labeling", False)
    if b.log_std_after is not None:
        with torch.no_grad():
            policy.log_std.fill_(float(b.log_std_after))
    metrics["bc/num_samples"] = len(demos)
    metrics["bc/teacher_mean_qoe"] = float(np.mean(teacher_qoe)) if teacher_qoe else float("nan")
    for key, value in metrics.items():
        logger.record(key, value)
    logger.dump(step=model.num_timesteps)
    # The recorded episodes were cut at the end of collection: start RL from fresh resets.
    model._last_obs = None
    return metrics
