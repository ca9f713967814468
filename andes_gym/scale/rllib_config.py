"""The RLlib side of a training config: what the RLlib trainer accepts (`check_config`),
the PPO settings it maps to (`ppo_training_kwargs`, `build_ppo_config`), the env creator
every env runner calls, and the Ray a run connects to.

The mapping of `algo.*` to `PPOConfig.training` and the keys that are ignored or rejected
are listed in the `andes_gym.scale.rllib_trainer` module docstring.
"""

from __future__ import annotations

import inspect
import os

from andes_gym.agents.registry import registered_policies
from andes_gym.scale.cluster import RayConnection
from andes_gym.training.config import ConfigError, TrainConfig
from andes_gym.training.factory import HeldOutSeeds, held_out_seeds, make_env, spaces_of

ENV_NAME = "andes_gym_rllib"
"""Name under which the env creator is registered with Ray Tune's registry."""
SURROGATE_ID = "andes_gym/Surrogate-v0"


def check_config(cfg: TrainConfig) -> list[str]:
    """Checks that a training config can run on RLlib PPO.

    Returns:
        Notes naming the config keys that RLlib PPO ignores.

    Raises:
        ConfigError: For settings the RLlib trainer does not support, naming the key.
    """
    _check_supported(cfg)
    notes = []
    if cfg.algo.target_kl is not None:
        notes.append(
            f"algo.target_kl={cfg.algo.target_kl} ignored (RLlib PPO has no early stop on KL)"
        )
    if cfg.algo.extra:
        notes.append(f"algo.extra {sorted(cfg.algo.extra)} ignored (stable-baselines3 arguments)")
    if cfg.bc.enabled:
        notes.append("bc.enabled ignored: the RLlib trainer has no imitation warm start")
    return notes


def _check_supported(cfg: TrainConfig) -> None:
    """Raises a ConfigError naming the first key the RLlib trainer cannot run."""
    if cfg.algo.name != "PPO":
        raise ConfigError(f"algo.name {cfg.algo.name!r}: the RLlib trainer runs PPO only")
    if cfg.policy.kind != "slot_scorer":
        raise ConfigError(
            f"policy.kind {cfg.policy.kind!r}: the RLlib trainer trains the slot scorer only"
        )
    if cfg.policy.activation not in ("tanh", "relu", "elu"):
        raise ConfigError(
            f"policy.activation must be tanh, relu or elu, got {cfg.policy.activation!r}"
        )
    for key in ("norm_obs", "norm_reward"):
        if getattr(cfg.env, key):
            raise ConfigError(f"env.{key}=true is not supported by the RLlib trainer")
    if cfg.total_timesteps < 1:
        raise ConfigError(f"total_timesteps must be >= 1, got {cfg.total_timesteps}")
    for name in cfg.eval.baselines:
        if name not in registered_policies():
            raise ConfigError(
                f"eval.baselines: {name!r} is not a registered policy: {registered_policies()}"
            )


def ppo_training_kwargs(cfg: TrainConfig, num_envs: int) -> dict:
    """`PPOConfig.training` arguments for `cfg.algo` (see the `rllib_trainer` docstring).

    Args:
        cfg: The config.
        num_envs: Environments stepped in parallel (runners x envs per runner).
    """
    from stable_baselines3 import PPO

    a = cfg.algo
    sb3_defaults = inspect.signature(PPO.__init__).parameters

    def pick(name: str):
        # A field left at None takes stable-baselines3's PPO default, read from its signature.
        value = getattr(a, name)
        return sb3_defaults[name].default if value is None else value

    kwargs = {
        "lr": float(pick("learning_rate")),
        "gamma": float(pick("gamma")),
        "train_batch_size_per_learner": int(pick("n_steps")) * max(num_envs, 1),
        "minibatch_size": int(pick("batch_size")),
        "num_epochs": int(pick("n_epochs")),
        "lambda_": float(pick("gae_lambda")),
        "clip_param": float(pick("clip_range")),
        "entropy_coeff": float(pick("ent_coef")),
        "vf_loss_coeff": float(pick("vf_coef")),
        "grad_clip": float(pick("max_grad_norm")),
        "grad_clip_by": "global_norm",
        "use_kl_loss": False,
        "vf_clip_param": 1e10,  # no clipping of the value loss
    }
    return kwargs


def make_rllib_env(env_config: dict):
    """The env creator registered as `ENV_NAME` (runs in every env runner).

    Args:
        env_config: `id`, `kwargs` and `held_out` (seeds training never plays).
    """
    env = make_env(env_config["id"], dict(env_config["kwargs"]))
    return HeldOutSeeds(env, list(env_config["held_out"]))


def build_ppo_config(
    cfg: TrainConfig,
    spec,
    num_env_runners: int,
    num_envs_per_env_runner: int = 1,
    num_gpus_per_env_runner: float = 0,
    seed: int | None = None,
):
    """The `PPOConfig` of a training config (new API stack, one local learner).

    Args:
        cfg: The training config.
        spec: The env's `FeatureSpec`.
        num_env_runners: Ray actors sampling (0: sample in the driver).
        num_envs_per_env_runner: Envs each runner steps (1 for a live vLLM env).
        num_gpus_per_env_runner: GPUs Ray reserves for each runner (1 for a live vLLM
            engine on a GPU: Ray sets the runner's CUDA_VISIBLE_DEVICES).
        seed: Seed of the runners' episode streams and the module (default `cfg.seed`).
    """
    from ray.rllib.algorithms.ppo import PPOConfig
    from ray.rllib.core.rl_module.rl_module import RLModuleSpec
    from ray.tune.registry import register_env

    from andes_gym.scale.rllib_module import SlotScorerRLModule, model_config_for

    register_env(ENV_NAME, make_rllib_env)
    obs_space, act_space = spaces_of(spec)
    num_envs = max(num_env_runners, 1) * num_envs_per_env_runner
    return (
        PPOConfig()
        .api_stack(enable_rl_module_and_learner=True, enable_env_runner_and_connector_v2=True)
        .framework("torch")
        .environment(
            ENV_NAME,
            env_config={
                "id": cfg.env.id,
                "kwargs": dict(cfg.env.kwargs),
                "held_out": held_out_seeds(cfg),
            },
            observation_space=obs_space,
            action_space=act_space,
        )
        .env_runners(
            num_env_runners=num_env_runners,
            num_envs_per_env_runner=num_envs_per_env_runner,
            num_cpus_per_env_runner=1,
            num_gpus_per_env_runner=num_gpus_per_env_runner,
            rollout_fragment_length="auto",
            # A live engine starts inside a runner's first sample (tens of seconds, minutes
            # for a large model): wait for it rather than drop its episodes after 60 s.
            sample_timeout_s=60.0 if cfg.env.id == SURROGATE_ID else None,
        )
        .learners(num_learners=0)
        .training(**ppo_training_kwargs(cfg, num_envs))
        .rl_module(
            rl_module_spec=RLModuleSpec(
                module_class=SlotScorerRLModule,
                observation_space=obs_space,
                action_space=act_space,
                model_config=model_config_for(cfg.policy, spec),
            )
        )
        .debugging(seed=cfg.seed if seed is None else seed, log_level="ERROR")
        .reporting(metrics_num_episodes_for_smoothing=20)
    )


def ray_connection(address: str | None, num_env_runners: int):
    """The `andes_gym.scale.cluster.RayConnection` for `--ray ADDRESS` (None: a local Ray).

    A local Ray gets at least one CPU per env runner (each runner reserves one).
    """
    return RayConnection(address, num_cpus=max(os.cpu_count() or 1, num_env_runners))
