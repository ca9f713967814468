"""Builds what a training run needs from its config: environments, the algorithm, predictors.

Rebuilding from the config is also how checkpoints are restored (no pickled objects).
"""

from __future__ import annotations

import importlib
import inspect
import signal
from functools import partial
from pathlib import Path

import gymnasium as gym
import numpy as np

from andes_gym.agents.registry import registered_policies
from andes_gym.core.features import OBS_BOUND, FeatureSpec
from andes_gym.extras import is_available
from andes_gym.training.config import ConfigError, TrainConfig
from andes_gym.training.imitation import TeacherLabels
from andes_gym.training.run_dir import read_run

# --------------------------------------------------------------------------- envs


def make_env(env_id: str, env_kwargs: dict) -> gym.Env:
    """`gymnasium.make(env_id, **env_kwargs)`, registering andes_gym's ids first.

    Raises:
        ConfigError: When the id is unknown or the kwargs are rejected, naming them.
    """
    if env_id.startswith("andes_gym/"):
        importlib.import_module("andes_gym.envs")
    try:
        return gym.make(env_id, **env_kwargs)
    except gym.error.Error as exc:
        raise ConfigError(f"env.id {env_id!r}: {exc}", key="env.id") from exc
    except (TypeError, ValueError, OSError) as exc:
        # A bad workload or engine (its own ConfigError names the file and key), an unknown
        # argument, or a value the env refuses.
        raise ConfigError(
            f"env.kwargs {sorted(env_kwargs)} rejected by {env_id}: {exc}", key="env.kwargs"
        ) from exc


def feature_spec_of(env: gym.Env) -> FeatureSpec:
    """The feature spec of an andes_gym env (its observation layout).

    Raises:
        ConfigError: When the env does not expose `feature_spec`.
    """
    spec = getattr(env.unwrapped, "feature_spec", None)
    if not isinstance(spec, FeatureSpec):
        raise ConfigError(
            f"env {env.spec.id if env.spec else env} has no FeatureSpec (`feature_spec`); "
            "the slot scorer and exports need an andes_gym scheduling env"
        )
    return spec


class HeldOutSeeds(gym.Wrapper):
    """Draws each training episode's seed from its own stream, never one of the held-out seeds.

    A seed passed to `reset` seeds the stream (the vector env passes `seed + rank` once);
    every episode then runs on a fresh draw, so evaluation seeds stay unseen in training.

    Args:
        env: The environment.
        held_out: Episode seeds reserved for evaluation.
    """

    def __init__(self, env: gym.Env, held_out: list[int]) -> None:
        super().__init__(env)
        self.held_out = frozenset(int(s) for s in held_out)
        self._seed_rng: np.random.Generator | None = None

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        if seed is not None or self._seed_rng is None:
            self._seed_rng = np.random.default_rng(seed)
        episode_seed = int(self._seed_rng.integers(2**31 - 1))
        while episode_seed in self.held_out:
            episode_seed = int(self._seed_rng.integers(2**31 - 1))
        return self.env.reset(seed=episode_seed, options=options)


def _env_thunk(
    env_id: str,
    env_kwargs: dict,
    held_out: list[int],
    teacher: tuple[str, dict] | None,
    worker: bool,
):
    if worker:
        # Ctrl-C goes to the whole process group; the trainer handles it (and saves), the
        # env workers must keep running until it closes them.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    env = HeldOutSeeds(make_env(env_id, env_kwargs), held_out)
    if teacher is not None:
        env = TeacherLabels(env, *teacher)
    return env


def held_out_seeds(cfg: TrainConfig) -> list[int]:
    """Seeds training episodes never use: the test and the validation seeds."""
    return sorted(set(cfg.eval.seeds) | set(cfg.eval.val_seeds))


def make_vec_env(cfg: TrainConfig, with_teacher: bool = False):
    """The training vector env: SubprocVecEnv (or DummyVecEnv) + VecMonitor (+ VecNormalize).

    Args:
        cfg: The config.
        with_teacher: Wrap each env so it labels decisions with `cfg.bc.teacher`.
    """
    from stable_baselines3.common.vec_env import (
        DummyVecEnv,
        SubprocVecEnv,
        VecMonitor,
        VecNormalize,
    )

    e = cfg.env
    teacher = (cfg.bc.teacher, dict(cfg.bc.teacher_kwargs)) if with_teacher else None
    subproc = e.vec_env == "subproc"
    fns = [
        partial(_env_thunk, e.id, dict(e.kwargs), held_out_seeds(cfg), teacher, subproc)
        for _ in range(e.n_envs)
    ]
    venv = SubprocVecEnv(fns, start_method="forkserver") if subproc else DummyVecEnv(fns)
    venv = VecMonitor(venv)
    if e.norm_obs or e.norm_reward:
        venv = VecNormalize(
            venv,
            norm_obs=e.norm_obs,
            norm_reward=e.norm_reward,
            clip_obs=e.clip_obs,
            gamma=cfg.algo.gamma if cfg.algo.gamma is not None else 0.99,
        )
    return venv


def spaces_of(spec: FeatureSpec) -> tuple[gym.spaces.Box, gym.spaces.Box]:
    """Observation and action spaces of a scheduling env with this feature spec."""
    obs = gym.spaces.Box(-OBS_BOUND, OBS_BOUND, shape=(spec.obs_dim,), dtype=np.float32)
    act = gym.spaces.Box(-1.0, 1.0, shape=(spec.k_slots,), dtype=np.float32)
    return obs, act


def probe_env(cfg: TrainConfig) -> tuple[FeatureSpec, gym.Space, gym.Space]:
    """The feature spec and spaces of the configured env (one throwaway instance)."""
    env = make_env(cfg.env.id, dict(cfg.env.kwargs))
    try:
        return feature_spec_of(env), env.observation_space, env.action_space
    finally:
        env.close()


# --------------------------------------------------------------------------- algorithm


def algo_class(name: str):
    """The algorithm class named in the config (stable_baselines3, then sb3_contrib).

    Raises:
        ConfigError: Naming the unknown algorithm.
    """
    import stable_baselines3

    cls = getattr(stable_baselines3, name, None)
    if cls is None:
        try:
            cls = getattr(importlib.import_module("sb3_contrib"), name, None)
        except ImportError:
            cls = None
    if cls is None or not inspect.isclass(cls):
        raise ConfigError(
            f"algo.name {name!r} is not an algorithm of stable_baselines3 "
            "(e.g. PPO, A2C, SAC, TD3) or sb3_contrib"
        )
    return cls


def is_on_policy(cls) -> bool:
    from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm

    return issubclass(cls, OnPolicyAlgorithm)


def algo_kwargs(cfg: TrainConfig, cls) -> dict:
    """Constructor arguments of the algorithm from `cfg.algo`, each checked against its signature.

    Raises:
        ConfigError: Naming a key that the algorithm does not accept.
    """
    params = inspect.signature(cls.__init__).parameters
    kwargs = {}
    fields = {
        k: v for k, v in vars(cfg.algo).items() if k not in ("name", "extra") and v is not None
    }
    for key, value in {**fields, **cfg.algo.extra}.items():
        if key in (
            "policy",
            "env",
            "policy_kwargs",
            "seed",
            "device",
            "verbose",
            "tensorboard_log",
        ):
            raise ConfigError(f"algo.{key} is set by the trainer, not the config")
        if key not in params:
            where = "algo.extra." if key in cfg.algo.extra else "algo."
            raise ConfigError(f"{where}{key} is not a parameter of {cls.__name__}")
        kwargs[key] = value
    return kwargs


def policy_spec(cfg: TrainConfig, spec: FeatureSpec, cls) -> tuple[object, dict]:
    """The policy class (or alias) and its keyword arguments."""
    from andes_gym.training.policy_net import SlotScorerPolicy, activation_class

    p = cfg.policy
    if p.kind == "slot_scorer":
        if not is_on_policy(cls):
            raise ConfigError(
                f"policy.kind 'slot_scorer' needs an on-policy algorithm (PPO, A2C), not "
                f"{cls.__name__}; use policy.kind=mlp"
            )
        return SlotScorerPolicy, {
            "k_slots": spec.k_slots,
            "num_slot_features": spec.num_slot_features,
            "num_global_features": len(spec.global_features),
            "slot_hidden": list(p.slot_hidden),
            "context_hidden": p.context_hidden,
            "value_hidden": list(p.value_hidden),
            "activation": p.activation,
            "log_std_init": p.log_std_init,
            "ortho_init": p.ortho_init,
        }
    if p.kind == "mlp":
        kwargs = {"net_arch": list(p.net_arch), "activation_fn": activation_class(p.activation)}
        if is_on_policy(cls):
            kwargs.update(log_std_init=p.log_std_init, ortho_init=p.ortho_init)
        return "MlpPolicy", kwargs
    raise ConfigError(f"policy.kind must be 'slot_scorer' or 'mlp', got {p.kind!r}")


def validate(cfg: TrainConfig, spec: FeatureSpec | None = None) -> None:
    """Checks what the config's own domains cannot: the algorithm, its arguments, policy names.

    Each field's domain (positive, in [0, 1], one of ...) is checked when the config is
    loaded (`andes_gym.training.config`); this adds the checks that need the algorithm
    classes and the policy registry.

    Raises:
        ConfigError: Naming the bad key.
    """
    cls = algo_class(cfg.algo.name)
    algo_kwargs(cfg, cls)
    policy_spec(cfg, spec or FeatureSpec(), cls)
    if cfg.env.norm_obs and cfg.policy.kind == "slot_scorer":
        raise ConfigError(
            "env.norm_obs=true does not work with policy.kind=slot_scorer: the slot scorer reads "
            "the 0/1 slot mask from the observation (and its features are already scaled); "
            "use norm_obs with policy.kind=mlp"
        )
    if cfg.progress_bar and not all(is_available(m) for m in ("tqdm", "rich")):
        raise ConfigError("progress_bar=true needs tqdm and rich installed; set progress_bar=false")
    if cfg.bc.enabled and cfg.bc.teacher not in registered_policies():
        raise ConfigError(
            f"bc.teacher {cfg.bc.teacher!r} is not a registered policy: {registered_policies()}"
        )
    for name in cfg.eval.baselines:
        if name not in registered_policies():
            raise ConfigError(
                f"eval.baselines: {name!r} is not a registered policy: {registered_policies()}"
            )


def make_model(cfg: TrainConfig, venv, spec: FeatureSpec, seed: int | None = None):
    """The algorithm instance for a config, on `venv`.

    Raises:
        ConfigError: When the algorithm refuses the arguments (SB3's own checks, e.g. PPO's
            `n_steps * n_envs > 1`), with its message.
    """
    cls = algo_class(cfg.algo.name)
    policy, policy_kwargs = policy_spec(cfg, spec, cls)
    kwargs = algo_kwargs(cfg, cls)
    try:
        return cls(
            policy,
            venv,
            policy_kwargs=policy_kwargs,
            seed=cfg.seed if seed is None else seed,
            device=cfg.device,
            verbose=cfg.verbose,
            **kwargs,
        )
    except ConfigError:
        raise
    except (AssertionError, ValueError) as exc:
        raise ConfigError(
            f"algo: {cls.__name__} refuses the config's arguments {kwargs}: {exc}", key="algo"
        ) from exc


def build_policy(cfg: TrainConfig, spec: FeatureSpec, obs_space, act_space):
    """A bare policy network for a config (no algorithm, no env), e.g. to load weights into."""
    cls = algo_class(cfg.algo.name)
    policy, policy_kwargs = policy_spec(cfg, spec, cls)
    if isinstance(policy, str):
        policy = cls.policy_aliases[policy]
    return policy(obs_space, act_space, lambda _: 0.0, **policy_kwargs).to("cpu")


# --------------------------------------------------------------------------- predictors


class Predictor:
    """A trained policy as `predict(obs, deterministic)`, applying saved obs normalization.

    Args:
        policy: The SB3 policy (weights loaded).
        normalizer: `checkpoint.normalizer_arrays` output, or None.
    """

    def __init__(self, policy, normalizer: dict | None = None) -> None:
        self.policy = policy.eval()
        self.normalizer = normalizer

    def normalize(self, obs: np.ndarray) -> np.ndarray:
        n = self.normalizer
        if n is None:
            return obs
        out = (obs - n["mean"]) / np.sqrt(n["var"] + n["epsilon"])
        return np.clip(out, -n["clip_obs"], n["clip_obs"]).astype(np.float32)

    def predict(self, obs: np.ndarray, deterministic: bool = True):
        return self.policy.predict(
            self.normalize(np.asarray(obs, dtype=np.float32)), deterministic=deterministic
        )


def load_predictor(run_dir: str | Path, ckpt_dir: str | Path | None = None) -> Predictor:
    """The policy of a run's checkpoint (default: `best` if kept, else the newest), rebuilt from its config.

    Raises:
        CheckpointError / ConfigError: Naming the bad file.
    """
    import torch

    from andes_gym.training import checkpoint as ckpt

    cfg, spec = read_run(run_dir)
    ckpt_dir = Path(ckpt_dir) if ckpt_dir is not None else ckpt.policy_checkpoint(run_dir)
    obs_space, act_space = spaces_of(spec)
    with torch.no_grad():
        policy = build_policy(cfg, spec, obs_space, act_space)
    ckpt.load_policy_weights(policy, ckpt_dir)
    return Predictor(policy, ckpt.normalizer_arrays(ckpt_dir))
