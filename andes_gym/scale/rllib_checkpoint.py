"""RLlib checkpoints of `andes_gym.scale.rllib_trainer` runs: save, find, restore, export.

A run keeps `checkpoints/step_NNNNNNNNNN/` (every `checkpoint.freq_timesteps` env steps and
at the end) and `checkpoints/best/` (the best validation QoE), each an RLlib checkpoint
(`Algorithm.save_to_path`) plus `andes_gym_meta.json` (env steps, iterations, config hash,
validation QoE), written under a temporary name and renamed. Also here: the weights of a
stable-baselines3 run's slot scorer in the RLModule's layout (`--init-from`).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from andes_gym.training.config import ConfigError, TrainConfig

META_FILE = "andes_gym_meta.json"
BEST_NAME = "best"


def save_checkpoint(algo, run_dir: Path, name: str, meta: dict, keep_last: int = 0) -> Path:
    """Saves an RLlib checkpoint under `checkpoints/<name>` with `andes_gym_meta.json`.

    Written under a temporary name and renamed; older `step_*` checkpoints beyond
    `keep_last` are deleted (0: keep all).
    """
    root = run_dir / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / name
    tmp = root / f".tmp_{name}_{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    algo.save_to_path(str(tmp.resolve()))
    (tmp / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    if keep_last > 0:
        steps = sorted(p for p in root.glob("step_*") if p.is_dir())
        for old in steps[:-keep_last]:
            shutil.rmtree(old)
    return final


def policy_checkpoint(run_dir: Path) -> Path:
    """`checkpoints/best` if kept, else the newest `step_*` checkpoint.

    Raises:
        ConfigError: When the run has no checkpoint.
    """
    best = Path(run_dir) / "checkpoints" / BEST_NAME
    return best if (best / META_FILE).is_file() else latest_checkpoint(run_dir)


def restore_algorithm(ckpt_dir: str | Path):
    """The PPO `Algorithm` of a run's checkpoint, env runners included (Ray must be running).

    Registers the env creator first (a checkpoint names it, not its code).
    """
    from ray.rllib.algorithms.algorithm import Algorithm
    from ray.tune.registry import register_env

    from andes_gym.scale.rllib_trainer import ENV_NAME, make_rllib_env

    register_env(ENV_NAME, make_rllib_env)
    return Algorithm.from_checkpoint(str(Path(ckpt_dir).resolve()))


def latest_checkpoint(run_dir: str | Path) -> Path:
    """The newest `step_*` checkpoint of a run (what `resume` continues from).

    Raises:
        ConfigError: When the run has none.
    """
    root = Path(run_dir) / "checkpoints"
    steps = sorted(p for p in root.glob("step_*") if (p / META_FILE).is_file())
    if not steps:
        raise ConfigError(f"{root}: no RLlib checkpoint")
    return steps[-1]


def load_module(ckpt_dir: Path):
    """The trained `SlotScorerRLModule` of an RLlib checkpoint (on CPU, eval mode)."""
    from ray.rllib.core import (
        COMPONENT_LEARNER,
        COMPONENT_LEARNER_GROUP,
        COMPONENT_RL_MODULE,
        DEFAULT_MODULE_ID,
    )
    from ray.rllib.core.rl_module.rl_module import RLModule

    path = (
        Path(ckpt_dir).resolve()
        / COMPONENT_LEARNER_GROUP
        / COMPONENT_LEARNER
        / COMPONENT_RL_MODULE
        / DEFAULT_MODULE_ID
    )
    return RLModule.from_checkpoint(str(path)).eval()


def export_checkpoint(run_dir: Path, out: Path, ckpt_dir: Path | None = None) -> Path:
    """Exports a run's checkpoint (default: `policy_checkpoint`) to ONNX."""
    from andes_gym.scale.rllib_export import export_module
    from andes_gym.training.run_dir import read_run

    cfg, spec = read_run(run_dir)
    ckpt_dir = Path(ckpt_dir) if ckpt_dir is not None else policy_checkpoint(run_dir)
    meta = json.loads((ckpt_dir / META_FILE).read_text())
    module = load_module(ckpt_dir)
    return export_module(
        module, cfg, spec, out, meta["num_timesteps"], f"{run_dir.name}, {ckpt_dir.name}"
    )


def sb3_module_state(sb3_run_dir: str | Path, cfg: TrainConfig, spec) -> dict:
    """The `SlotScorerRLModule` weights of a stable-baselines3 run's slot scorer.

    The two trainers share the network, so a policy trained by `python -m andes_gym.train`
    (e.g. the quickstart's imitation of andes) can start RLlib PPO: `mlp_extractor.*` ->
    `net.*`, `value_net.*` -> `value_head.*`, `log_std` -> `log_std`. The run's policy
    checkpoint is used (`best` if kept, else the newest).

    Args:
        sb3_run_dir: The run directory of `python -m andes_gym.train`.
        cfg: The RLlib run's config (its `policy` network must match the run's).
        spec: The RLlib run's feature spec (must equal the run's).

    Returns:
        Module state (name -> numpy array), checked against the module's own parameters.

    Raises:
        ConfigError: When the run's network, feature spec or normalization differ.
    """
    import torch

    from andes_gym.scale.rllib_module import SlotScorerRLModule, model_config_for
    from andes_gym.training.factory import load_predictor, spaces_of
    from andes_gym.training.run_dir import read_run

    src_cfg, src_spec = read_run(sb3_run_dir)
    if src_spec != spec:
        raise ConfigError(
            f"--init-from {sb3_run_dir}: its feature spec (K={src_spec.k_slots}, oracle="
            f"{src_spec.oracle}) differs from this config's (K={spec.k_slots}, oracle={spec.oracle})"
        )
    differ = [
        f"policy.{key}"
        for key in ("kind", "slot_hidden", "context_hidden", "value_hidden", "activation")
        if getattr(src_cfg.policy, key) != getattr(cfg.policy, key)
    ]
    if differ:
        raise ConfigError(f"--init-from {sb3_run_dir}: {', '.join(differ)} differ from this config")
    predictor = load_predictor(sb3_run_dir)
    if predictor.normalizer is not None:
        raise ConfigError(f"--init-from {sb3_run_dir}: the run normalizes observations")
    policy = predictor.policy
    state = {f"net.{k}": v for k, v in policy.mlp_extractor.state_dict().items()}
    state.update({f"value_head.{k}": v for k, v in policy.value_net.state_dict().items()})
    state["log_std"] = policy.log_std
    state = {k: v.detach().cpu().clone() for k, v in state.items()}
    obs_space, act_space = spaces_of(spec)
    probe = SlotScorerRLModule(
        observation_space=obs_space,
        action_space=act_space,
        model_config=model_config_for(cfg.policy, spec),
    )
    with torch.no_grad():
        probe.load_state_dict(state, strict=True)  # names and shapes must match exactly
    return {k: v.numpy() for k, v in state.items()}


def set_module_state(algo, state: dict) -> None:
    """Loads module weights into the algorithm's learner and every env runner (blocking).

    `Algorithm.set_state` syncs the runners fire-and-forget (a request can be dropped while
    another is in flight), so the runners' modules are also set by a blocking call.
    """
    from ray.rllib.core import (
        COMPONENT_LEARNER,
        COMPONENT_LEARNER_GROUP,
        COMPONENT_RL_MODULE,
        DEFAULT_MODULE_ID,
    )

    algo.set_state(
        {
            COMPONENT_LEARNER_GROUP: {
                COMPONENT_LEARNER: {COMPONENT_RL_MODULE: {DEFAULT_MODULE_ID: state}}
            }
        }
    )
    algo.env_runner_group.foreach_env_runner(
        lambda runner: runner.module.set_state(state), local_env_runner=True
    )
