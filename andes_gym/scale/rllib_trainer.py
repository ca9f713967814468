"""PPO with RLlib (new API stack) on the andes_gym environments, env runners spread over Ray.

The second trainer beside `python -m andes_gym.train` (stable-baselines3). It reads the same
training config (`andes_gym.training.config`), trains the same slot-scorer network
(`andes_gym.scale.rllib_module.SlotScorerRLModule`, built from
`andes_gym.training.policy_net.SlotScorerNet`) on the same observation and action spaces,
and exports the same ONNX format, so `load_policy`, the leaderboard and the vLLM hook take
its policies unchanged.

Rollouts run in `num_env_runners` Ray actors (one CPU each), each stepping
`num_envs_per_env_runner` environments; the PPO update runs in the driver (one local
learner). A live `andes_gym/VLLM-v0` env builds its vLLM engine in-process on first use, so
each env runner owns one engine: keep one env per runner there (vLLM allows one in-process
engine per process), and on GPUs reserve one per runner (`num_gpus_per_env_runner=1`).
Sampling, the driver builds no engine (unless `num_env_runners=0` makes it sample itself);
periodic validation (`eval.freq_timesteps`) plays the live env in the driver, and the final
evaluation in `eval.n_workers` processes, each with its own engine.

Config mapping (`algo.*` -> `PPOConfig.training`; a None field takes stable-baselines3's
default, so both trainers run the same update from the same file):

    learning_rate -> lr                    gamma -> gamma
    n_steps       -> train_batch_size_per_learner = n_steps x (number of envs)
    batch_size    -> minibatch_size        n_epochs -> num_epochs
    gae_lambda    -> lambda_               clip_range -> clip_param
    ent_coef      -> entropy_coeff         vf_coef -> vf_loss_coeff
    max_grad_norm -> grad_clip (global norm)

PPO's KL penalty is off and the value loss is not clipped (as in stable-baselines3);
RLlib standardizes advantages over the whole batch (stable-baselines3: per minibatch).
`algo.target_kl` (early stop of the epochs) and `algo.extra` have no RLlib counterpart and
are ignored with a note; so is `bc` (no imitation warm start: `init_from` starts PPO from
the slot scorer of a stable-baselines3 run instead, see `sb3_module_state`). `env.norm_obs`,
`env.norm_reward`, `policy.kind=mlp` and algorithms other than PPO are rejected.

Run directory (`{run_root}/{env}__{exp}-rllib__{seed}__{time}/`):

    config.yaml, feature_spec.json   as for the stable-baselines3 trainer
    command.txt                      the command line(s)
    rllib.json                       the RLlib settings used and the ignored config keys
    progress.csv, tb/                per-iteration metrics (and TensorBoard events)
    checkpoints/step_NNNNNNNNNN/     module weights (`model.safetensors`), optimizer state
    checkpoints/best/                (safetensors + JSON) and `andes_gym_meta.json`
                                     (timesteps, iterations, hash, QoE); no pickle
    policy.onnx                      exported from `best` if kept, else the last checkpoint
    eval.csv, eval.txt               the exported policy vs the baselines on held-out seeds

Ctrl-C saves a checkpoint; `resume` rebuilds PPO from the run's `config.yaml` and continues
from the newest intact `step_*` checkpoint (weights, optimizer and counters, loaded by
`andes_gym.scale.rllib_checkpoint.restore_checkpoint`; nothing is unpickled).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from andes_gym.scale.rllib_checkpoint import (
    BEST_NAME,
    META_FILE,
    export_checkpoint,
    newest_intact_checkpoint,
    policy_checkpoint,
    read_meta,
    restore_checkpoint,
    save_checkpoint,
    sb3_module_state,
    set_module_state,
)
from andes_gym.training.config import ConfigError, TrainConfig

ENV_NAME = "andes_gym_rllib"
"""Name under which the env creator is registered with Ray Tune's registry."""
RLLIB_FILE = "rllib.json"
PROGRESS_FILE = "progress.csv"
SURROGATE_ID = "andes_gym/Surrogate-v0"


@dataclass
class RLlibRun:
    """What a finished RLlib training run produced.

    Attributes:
        run_dir: The run directory.
        num_timesteps: Env steps sampled.
        iterations: `Algorithm.train()` calls.
        train_seconds: Wall time of the training loop.
        env_steps_per_s: `num_timesteps / train_seconds`.
        onnx_path: The exported policy (None if the export failed).
        eval_means: Per-policy mean rows of the final evaluation (empty if skipped).
        notes: Config keys that were ignored, and why.
    """

    run_dir: Path
    num_timesteps: int
    iterations: int
    train_seconds: float
    env_steps_per_s: float
    onnx_path: Path | None
    eval_means: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- config


def check_config(cfg: TrainConfig) -> list[str]:
    """Checks that a training config can run on RLlib PPO.

    Returns:
        Notes naming the config keys that RLlib PPO ignores.

    Raises:
        ConfigError: For settings the RLlib trainer does not support, naming the key.
    """
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
    from andes_gym.agents.registry import registered_policies

    for name in cfg.eval.baselines:
        if name not in registered_policies():
            raise ConfigError(
                f"eval.baselines: {name!r} is not a registered policy: {registered_policies()}"
            )
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


def ppo_training_kwargs(cfg: TrainConfig, num_envs: int) -> dict:
    """`PPOConfig.training` arguments for `cfg.algo` (see the module docstring).

    Args:
        cfg: The config.
        num_envs: Environments stepped in parallel (runners x envs per runner).
    """
    import inspect

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
    from andes_gym.training.factory import HeldOutSeeds, make_env

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
    from andes_gym.training.factory import held_out_seeds, spaces_of

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


# --------------------------------------------------------------------------- ray


def ray_connection(address: str | None, num_env_runners: int):
    """The `andes_gym.scale.cluster.RayConnection` for `--ray ADDRESS` (None: a local Ray).

    A local Ray gets at least one CPU per env runner (each runner reserves one).
    """
    from andes_gym.scale.cluster import RayConnection

    return RayConnection(address, num_cpus=max(os.cpu_count() or 1, num_env_runners))


# --------------------------------------------------------------------------- run directory


def _record_command(run_dir: Path, argv: list[str] | None) -> None:
    args = sys.argv[1:] if argv is None else argv
    line = " ".join(shlex.quote(a) for a in [sys.executable, "-m", "andes_gym.train_rllib", *args])
    with (run_dir / "command.txt").open("a") as fh:
        fh.write(line + "\n")


def _scalar_metrics(result: dict) -> dict:
    """The per-iteration numbers worth logging from an `Algorithm.train()` result."""
    from ray.rllib.utils.metrics import (
        ENV_RUNNER_RESULTS,
        EPISODE_RETURN_MEAN,
        LEARNER_RESULTS,
        NUM_ENV_STEPS_SAMPLED_LIFETIME,
    )

    runners = result.get(ENV_RUNNER_RESULTS, {})
    learner = result.get(LEARNER_RESULTS, {}).get("default_policy", {})
    row = {
        "timesteps": int(runners.get(NUM_ENV_STEPS_SAMPLED_LIFETIME, 0)),
        "episode_return_mean": runners.get(EPISODE_RETURN_MEAN, float("nan")),
        "episodes_lifetime": int(runners.get("num_episodes_lifetime", 0)),
    }
    for key in ("policy_loss", "vf_loss", "entropy", "mean_kl_loss", "vf_explained_var"):
        if key in learner:
            row[key] = learner[key]
    return {
        k: v if isinstance(v, int) else float(v) if isinstance(v, float | np.floating) else v
        for k, v in row.items()
    }


class _Progress:
    """progress.csv plus TensorBoard scalars (`rllib/*`), one row per iteration."""

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / PROGRESS_FILE
        self.fields: list[str] | None = None
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(run_dir / "tb"))
        except ImportError:
            self.writer = None

    def log(self, iteration: int, seconds: float, metrics: dict) -> None:
        row = {"iteration": iteration, "time_s": round(seconds, 3), **metrics}
        if self.fields is None and self.path.is_file():  # a resumed run: append
            with self.path.open(newline="") as fh:
                self.fields = next(csv.reader(fh), None)
        if self.fields is None:
            self.fields = list(row)
            with self.path.open("w", newline="") as fh:
                csv.DictWriter(fh, self.fields).writeheader()
        with self.path.open("a", newline="") as fh:
            csv.DictWriter(fh, self.fields, extrasaction="ignore").writerow(row)
        if self.writer is not None:
            step = int(metrics["timesteps"])
            for key, value in metrics.items():
                if key != "timesteps" and isinstance(value, float) and np.isfinite(value):
                    self.writer.add_scalar(f"rllib/{key}", value, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


# --------------------------------------------------------------------------- evaluation


class ModulePredictor:
    """A module's deterministic slot scores as `predict(obs, deterministic)` (for `ModelAgent`)."""

    def __init__(self, module) -> None:
        self.module = module

    def predict(self, obs: np.ndarray, deterministic: bool = True):
        import torch

        with torch.no_grad():
            x = torch.as_tensor(np.asarray(obs, dtype=np.float32)[None])
            scores = self.module.slot_scores(x)[0].numpy()
        return np.clip(scores, -1.0, 1.0), None


def validation_qoe(module, cfg: TrainConfig) -> float:
    """Mean QoE of the module's deterministic policy over `cfg.eval.val_seeds` (in this process)."""
    from andes_gym.agents.adapter import ModelAgent
    from andes_gym.evaluation import run_episode
    from andes_gym.training.factory import make_env

    env = make_env(cfg.env.id, dict(cfg.env.kwargs))
    try:
        agent = ModelAgent(ModulePredictor(module))
        qoe = [
            run_episode(env, agent, int(s), cfg.eval.max_steps).summary["mean_qoe"]
            for s in cfg.eval.val_seeds
        ]
    finally:
        env.close()
    return float(np.mean(qoe))


def final_evaluation(run_dir: Path, cfg: TrainConfig, onnx_path: Path) -> list[dict]:
    """The exported policy against `cfg.eval.baselines` on `cfg.eval.seeds`; prints and saves.

    Uses `andes_gym.training.evaluate.final_table` (the exported ONNX through `load_policy`,
    as the leaderboard plays it). Writes `eval.csv` and `eval.txt`.

    Returns:
        The per-policy mean rows.
    """
    from andes_gym.training.evaluate import AgentSpec, final_table

    print(
        f"final evaluation: learned (RLlib PPO, {onnx_path.name}) vs "
        f"{', '.join(cfg.eval.baselines)} on held-out seeds {cfg.eval.seeds}"
    )
    return final_table(run_dir, cfg, AgentSpec("onnx", str(onnx_path), "learned"))


# --------------------------------------------------------------------------- training


def _write_settings(
    run_dir: Path,
    runners: _Runners,
    init_from: str | Path | None,
    cfg: TrainConfig,
    notes: list[str],
) -> None:
    settings = {
        "ray_address": runners.ray_address or "local",
        "num_env_runners": runners.num_env_runners,
        "num_envs_per_env_runner": runners.num_envs_per_env_runner,
        "num_gpus_per_env_runner": runners.num_gpus_per_env_runner,
        "init_from": str(init_from) if init_from else None,
        "training": ppo_training_kwargs(
            cfg, max(runners.num_env_runners, 1) * runners.num_envs_per_env_runner
        ),
        "ignored": notes,
    }
    (run_dir / RLLIB_FILE).write_text(json.dumps(settings, indent=2, default=str) + "\n")


def _next_multiple(value: int, step: int) -> int:
    """The smallest multiple of `step` above `value`."""
    return (value // step + 1) * step


def _train_loop(
    algo, cfg: TrainConfig, run_dir: Path, restored: dict | None = None
) -> tuple[int, int, float]:
    """`algo.train()` until `cfg.total_timesteps` env steps, with logs, validation and saves.

    Args:
        algo: The algorithm.
        cfg: The config.
        run_dir: The run directory.
        restored: `andes_gym_meta.json` of the checkpoint a resumed run restored.

    Returns:
        Env steps sampled (in total), iterations (in total), wall seconds (of this call).

    Raises:
        KeyboardInterrupt: After saving a checkpoint of the iterations done.
    """
    progress = _Progress(run_dir)
    timesteps = int(restored["num_timesteps"]) if restored else 0
    iterations = int(restored["iterations"]) if restored else 0
    # A rebuilt algorithm counts from zero: its lifetime counters add to the checkpoint's.
    steps_base = timesteps
    episodes_base = int(restored.get("num_episodes", 0)) if restored else 0
    best = run_dir / "checkpoints" / BEST_NAME / META_FILE
    best_qoe = json.loads(best.read_text())["val_mean_qoe"] if best.is_file() else -np.inf
    freq = cfg.checkpoint.freq_timesteps
    next_ckpt = _next_multiple(timesteps, freq) if freq > 0 else np.inf
    evaluate_val = cfg.eval.freq_timesteps > 0 and bool(cfg.eval.val_seeds)
    next_eval = _next_multiple(timesteps, cfg.eval.freq_timesteps) if evaluate_val else np.inf
    meta = {
        "num_timesteps": timesteps,
        "iterations": iterations,
        "num_episodes": episodes_base,
        "config_hash": cfg.hash(),
        "algo": "RLlib-PPO",
    }
    done_before, steps_before = iterations, timesteps
    start = time.monotonic()
    try:
        while timesteps < cfg.total_timesteps:
            metrics = _scalar_metrics(algo.train())
            metrics["timesteps"] += steps_base
            metrics["episodes_lifetime"] += episodes_base
            iterations += 1
            timesteps = int(metrics["timesteps"])
            meta.update(
                num_timesteps=timesteps,
                iterations=iterations,
                num_episodes=int(metrics["episodes_lifetime"]),
            )
            print(
                f"[rllib] iter {iterations}: {timesteps}/{cfg.total_timesteps} steps, "
                f"episode return {metrics['episode_return_mean']:.4f}, "
                f"{(timesteps - steps_before) / max(time.monotonic() - start, 1e-9):.0f} steps/s"
            )
            qoe = float("nan")
            if timesteps >= next_eval:
                next_eval = _next_multiple(timesteps, cfg.eval.freq_timesteps)
                # The local env runner's module holds the learner's weights after each iteration.
                qoe = validation_qoe(algo.get_module(), cfg)
                print(f"[rllib] validation mean QoE {qoe:.4f} on seeds {cfg.eval.val_seeds}")
            progress.log(iterations, time.monotonic() - start, {**metrics, "val_mean_qoe": qoe})
            if cfg.eval.select_best and np.isfinite(qoe) and qoe > best_qoe:
                best_qoe = qoe
                save_checkpoint(algo, run_dir, BEST_NAME, {**meta, "val_mean_qoe": qoe})
            if next_ckpt <= timesteps < cfg.total_timesteps:
                next_ckpt = _next_multiple(timesteps, cfg.checkpoint.freq_timesteps)
                save_checkpoint(
                    algo, run_dir, f"step_{timesteps:010d}", meta, cfg.checkpoint.keep_last
                )
    except KeyboardInterrupt:
        if iterations > done_before:
            path = save_checkpoint(algo, run_dir, f"step_{timesteps:010d}", meta)
            print(f"\ninterrupted: saved {path} ({timesteps} env steps)")
        raise
    finally:
        progress.close()
    seconds = time.monotonic() - start
    save_checkpoint(algo, run_dir, f"step_{timesteps:010d}", meta, cfg.checkpoint.keep_last)
    return timesteps, iterations, seconds


@dataclass
class _Runners:
    """Where rollouts run (see `train`)."""

    ray_address: str | None
    num_env_runners: int
    num_envs_per_env_runner: int = 1
    num_gpus_per_env_runner: float = 0

    def check(self) -> None:
        if self.num_env_runners < 0 or self.num_envs_per_env_runner < 1:
            raise ConfigError(
                f"need num_env_runners >= 0 and num_envs_per_env_runner >= 1, got "
                f"{self.num_env_runners} and {self.num_envs_per_env_runner}"
            )


def train(
    cfg: TrainConfig,
    ray_address: str | None = None,
    num_env_runners: int | None = None,
    num_envs_per_env_runner: int = 1,
    num_gpus_per_env_runner: float = 0,
    init_from: str | Path | None = None,
    argv: list[str] | None = None,
    shutdown_ray: bool = True,
) -> RLlibRun:
    """Trains the slot scorer with RLlib PPO in a new run directory, exports it and evaluates it.

    Args:
        cfg: The training config (`total_timesteps` env steps are sampled, rounded up to
            whole PPO iterations).
        ray_address: A Ray cluster to join (`auto`, `HOST:PORT` or `ray://HOST:PORT`);
            None or `local` starts a local Ray (a Ray this process already initialized
            is reused and left running).
        num_env_runners: Sampling actors (default: `cfg.env.n_envs`; 0 samples in the driver).
        num_envs_per_env_runner: Envs per runner (keep 1 for `andes_gym/VLLM-v0`).
        num_gpus_per_env_runner: GPUs per runner (1 for a live engine on GPUs).
        init_from: A `python -m andes_gym.train` run directory whose slot scorer starts
            PPO (see `sb3_module_state`), e.g. the quickstart's imitation of andes.
        argv: The command-line arguments recorded in `command.txt`.
        shutdown_ray: Shut Ray down at the end if this call started it (False keeps it
            for further runs in this process).

    Returns:
        The run's summary.

    Raises:
        ConfigError: For a config the RLlib trainer cannot run.
        RayConnectionError: When no Ray cluster answers at `ray_address`.
        KeyboardInterrupt: On Ctrl-C, after saving a checkpoint (continue with `resume`).
    """
    from andes_gym.training import factory
    from andes_gym.training import run_dir as runs

    notes = check_config(cfg)
    runners = _Runners(
        ray_address,
        cfg.env.n_envs if num_env_runners is None else num_env_runners,
        num_envs_per_env_runner,
        num_gpus_per_env_runner,
    )
    runners.check()
    spec, _, _ = factory.probe_env(cfg)
    init_state = sb3_module_state(init_from, cfg, spec) if init_from else None
    cfg = dataclasses.replace(cfg, exp_name=f"{cfg.exp_name}-rllib")

    def start(algo) -> tuple[Path, dict | None]:
        run_dir = runs.create_run_dir(cfg, spec)
        _record_command(run_dir, argv)
        _write_settings(run_dir, runners, init_from, cfg, notes)
        if init_state is not None:
            set_module_state(algo, init_state)
            print(f"initialized from the slot scorer of {init_from}")
        return run_dir, None

    return _run(cfg, spec, runners, notes, start, shutdown_ray)


def resume(
    run_dir: str | Path,
    overrides: list[str] | None = None,
    ray_address: str | None = None,
    num_env_runners: int | None = None,
    num_envs_per_env_runner: int = 1,
    num_gpus_per_env_runner: float = 0,
    argv: list[str] | None = None,
    shutdown_ray: bool = True,
) -> RLlibRun:
    """Continues a run from its newest intact `step_*` checkpoint (weights, optimizer, counters).

    PPO is rebuilt from the run's `config.yaml` (`build_ppo_config`, as for a fresh run)
    and the checkpoint's safetensors and JSON are loaded into it; a broken newer checkpoint
    is skipped with a `CheckpointWarning` naming it.

    Args:
        run_dir: The run directory of `train`.
        overrides: `KEY=VALUE` changes of the run's config (e.g. a larger
            `total_timesteps`); the network cannot change. Saved to `config.yaml`.
        ray_address: As for `train`.
        num_env_runners: Sampling actors (default: the run's `rllib.json`); any number works.
        num_envs_per_env_runner: As for `train`.
        num_gpus_per_env_runner: As for `train`.
        argv: The command-line arguments appended to `command.txt`.
        shutdown_ray: As for `train`.

    Returns:
        The run's summary (timesteps and iterations in total, the rate of this session).

    Raises:
        ConfigError: For a bad override.
        CheckpointError: For a directory without an intact checkpoint.
    """
    from andes_gym.training import run_dir as runs
    from andes_gym.training.config import dump_yaml

    run_dir = Path(run_dir)
    cfg, spec = runs.read_run(run_dir, overrides)
    notes = check_config(cfg)
    ckpt = newest_intact_checkpoint(run_dir)
    settings_path = run_dir / RLLIB_FILE
    saved = json.loads(settings_path.read_text()) if settings_path.is_file() else {}
    runners = _Runners(
        ray_address,
        saved.get("num_env_runners", cfg.env.n_envs)
        if num_env_runners is None
        else num_env_runners,
        num_envs_per_env_runner,
        num_gpus_per_env_runner,
    )
    runners.check()

    def start(algo) -> tuple[Path, dict | None]:
        if overrides:
            (run_dir / runs.CONFIG_FILE).write_text(dump_yaml(cfg))
        _record_command(run_dir, argv)
        _write_settings(run_dir, runners, saved.get("init_from"), cfg, notes)
        meta = restore_checkpoint(algo, ckpt, cfg, spec)
        print(f"resumed from {ckpt} at {meta['num_timesteps']} env steps")
        return run_dir, meta

    # New episodes after resuming: the runners' seed streams start elsewhere (as in
    # `python -m andes_gym.train --resume`).
    steps_done = read_meta(ckpt)["num_timesteps"]
    return _run(cfg, spec, runners, notes, start, shutdown_ray, cfg.seed + int(steps_done) + 1)


def _run(
    cfg: TrainConfig,
    spec,
    runners: _Runners,
    notes: list[str],
    start,
    shutdown_ray: bool,
    seed: int | None = None,
) -> RLlibRun:
    """Connects to Ray, builds PPO, `start(algo)` -> (run_dir, restored meta), trains,
    exports and evaluates."""
    import torch

    torch.set_num_threads(max(cfg.torch_threads, 1))
    connection = ray_connection(runners.ray_address, runners.num_env_runners)
    connection.ensure()
    try:
        algo = build_ppo_config(
            cfg,
            spec,
            runners.num_env_runners,
            runners.num_envs_per_env_runner,
            runners.num_gpus_per_env_runner,
            seed,
        ).build_algo()
        try:
            run_dir, restored = start(algo)
            for note in notes:
                print(f"note: {note}")
            print(f"run directory: {run_dir}")
            steps_before = int(restored["num_timesteps"]) if restored else 0
            timesteps, iterations, seconds = _train_loop(algo, cfg, run_dir, restored)
        finally:
            algo.stop()
    finally:
        if shutdown_ray:
            connection.close()
    rate = (timesteps - steps_before) / max(seconds, 1e-9)
    print(f"training finished: {timesteps} env steps, {rate:.0f} steps/s over {seconds:.1f} s")
    onnx_path: Path | None = run_dir / "policy.onnx"
    try:
        export_checkpoint(run_dir, onnx_path)
        print(f"exported {onnx_path} (from {policy_checkpoint(run_dir).name})")
    except Exception as exc:  # noqa: BLE001 (export is a convenience; training succeeded)
        print(f"warning: export to ONNX failed: {exc}", file=sys.stderr)
        onnx_path = None
    means = final_evaluation(run_dir, cfg, onnx_path) if cfg.eval.final and onnx_path else []
    print(f"run directory: {run_dir}")
    return RLlibRun(run_dir, timesteps, iterations, seconds, rate, onnx_path, means, notes)
