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

Config mapping (`algo.*` -> `PPOConfig.training`, in `andes_gym.scale.rllib_config`; a None
field takes stable-baselines3's default, so both trainers run the same update from the same
file):

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

The training loop (logs, validation, checkpoints) is `andes_gym.scale.rllib_loop`.
Ctrl-C saves a checkpoint; `resume` rebuilds PPO from the run's `config.yaml` and continues
from the newest intact `step_*` checkpoint (weights, optimizer and counters, loaded by
`andes_gym.scale.rllib_checkpoint.restore_checkpoint`; nothing is unpickled).
"""

from __future__ import annotations

import dataclasses
import json
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path

from andes_gym.scale.rllib_checkpoint import (
    export_checkpoint,
    newest_intact_checkpoint,
    policy_checkpoint,
    read_meta,
    restore_checkpoint,
    sb3_module_state,
    set_module_state,
)
from andes_gym.scale.rllib_config import (
    build_ppo_config,
    check_config,
    ppo_training_kwargs,
    ray_connection,
)
from andes_gym.scale.rllib_loop import train_loop
from andes_gym.training import factory
from andes_gym.training import run_dir as runs
from andes_gym.training.config import ConfigError, TrainConfig, dump_yaml
from andes_gym.training.evaluate import AgentSpec, final_table

RLLIB_FILE = "rllib.json"


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


# --------------------------------------------------------------------------- run directory


def _record_command(run_dir: Path, argv: list[str] | None) -> None:
    args = sys.argv[1:] if argv is None else argv
    line = " ".join(shlex.quote(a) for a in [sys.executable, "-m", "andes_gym.train_rllib", *args])
    with (run_dir / "command.txt").open("a") as fh:
        fh.write(line + "\n")


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


# --------------------------------------------------------------------------- evaluation


def final_evaluation(run_dir: Path, cfg: TrainConfig, onnx_path: Path) -> list[dict]:
    """The exported policy against `cfg.eval.baselines` on `cfg.eval.seeds`; prints and saves.

    Uses `andes_gym.training.evaluate.final_table` (the exported ONNX through `load_policy`,
    as the leaderboard plays it). Writes `eval.csv` and `eval.txt`.

    Returns:
        The per-policy mean rows.
    """
    print(
        f"final evaluation: learned (RLlib PPO, {onnx_path.name}) vs "
        f"{', '.join(cfg.eval.baselines)} on held-out seeds {cfg.eval.seeds}"
    )
    return final_table(run_dir, cfg, AgentSpec("onnx", str(onnx_path), "learned"))


# --------------------------------------------------------------------------- training


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
            timesteps, iterations, seconds = train_loop(algo, cfg, run_dir, restored)
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
