"""Checkpoints of `andes_gym.scale.rllib_trainer` runs, without pickle: save, verify, restore, export.

A run keeps `checkpoints/step_NNNNNNNNNN/` (every `checkpoint.freq_timesteps` env steps and
at the end) and `checkpoints/best/` (the best validation QoE), each holding:

- `model.safetensors`: the RLModule's weights (its torch `state_dict`).
- `optimizer.safetensors` + the `optimizer` entry of `andes_gym_meta.json`: the learner's
  optimizer tensors and their non-tensor structure (param groups, step counts).
- `andes_gym_meta.json`: format version, env steps, iterations, episodes, config hash,
  validation QoE (for `best`).

A directory is written under a temporary name and renamed. Nothing is unpickled on load:
`resume` rebuilds PPO from the run's `config.yaml` and loads these files into it
(`restore_checkpoint`); export builds the module from the feature spec and loads
`model.safetensors` (`load_module`, no Ray needed). A damaged checkpoint is skipped in
favour of the newest intact one with a `CheckpointWarning` naming it, as for
`andes_gym.training.checkpoint`. Also here: the weights of a stable-baselines3 run's slot
scorer in the RLModule's layout (`--init-from`).
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from pathlib import Path

import numpy as np

from andes_gym.scale.rllib_export import export_module
from andes_gym.training import checkpoint as training_checkpoint
from andes_gym.training.checkpoint import (
    CheckpointError,
    CheckpointWarning,
    flatten_optimizer,
    read_tensors,
    unflatten_optimizer,
)
from andes_gym.training.config import ConfigError, TrainConfig
from andes_gym.training.factory import load_predictor, spaces_of
from andes_gym.training.run_dir import read_run

META_FILE = "andes_gym_meta.json"
MODEL_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.safetensors"
BEST_NAME = "best"
FORMAT_VERSION = 1


# --------------------------------------------------------------------------- saving


def _to_torch(tree):
    """Numpy arrays and scalars in a nested dict / list (RLlib's state) as torch tensors."""
    import torch

    if isinstance(tree, dict):
        return {k: _to_torch(v) for k, v in tree.items()}
    if isinstance(tree, list | tuple):
        return type(tree)(_to_torch(v) for v in tree)
    if isinstance(tree, np.ndarray | np.generic):
        return torch.from_numpy(np.array(tree))
    if torch.is_tensor(tree):
        return tree.detach().cpu()
    return tree


def _learner_state(algo) -> tuple[dict, dict]:
    """The learner's module weights (name -> tensor) and optimizer states (name -> entry)."""
    from ray.rllib.core import (
        COMPONENT_LEARNER,
        COMPONENT_OPTIMIZER,
        COMPONENT_RL_MODULE,
        DEFAULT_MODULE_ID,
    )

    state = algo.learner_group.get_state(
        components=[
            f"{COMPONENT_LEARNER}/{COMPONENT_RL_MODULE}/{DEFAULT_MODULE_ID}",
            f"{COMPONENT_LEARNER}/{COMPONENT_OPTIMIZER}",
        ]
    )[COMPONENT_LEARNER]
    weights = _to_torch(state[COMPONENT_RL_MODULE][DEFAULT_MODULE_ID])
    return weights, state.get(COMPONENT_OPTIMIZER, {})


def save_checkpoint(algo, run_dir: Path, name: str, meta: dict, keep_last: int = 0) -> Path:
    """Saves the learner's module weights and optimizer state under `checkpoints/<name>`.

    Written under a temporary name and renamed; older `step_*` checkpoints beyond
    `keep_last` are deleted (0: keep all).

    Args:
        algo: The PPO `Algorithm`.
        run_dir: The run directory.
        name: `step_NNNNNNNNNN` or `best`.
        meta: Counters for `andes_gym_meta.json` (`num_timesteps`, `iterations`, ...).
        keep_last: How many `step_*` checkpoints to keep.

    Returns:
        The checkpoint directory.
    """
    from safetensors.torch import save_file

    root = run_dir / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / name
    tmp = root / f".tmp_{name}_{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    weights, optimizers = _learner_state(algo)
    save_file({k: v.contiguous() for k, v in weights.items()}, str(tmp / MODEL_FILE))
    opt_tensors, opt_meta = {}, {}
    for opt_name, entry in optimizers.items():
        tensors, structure = flatten_optimizer(_to_torch(entry["state"]))
        opt_tensors.update({f"{opt_name}/{k}": v for k, v in tensors.items()})
        opt_meta[opt_name] = {"module_id": entry["module_id"], **structure}
    save_file(opt_tensors, str(tmp / OPTIMIZER_FILE))
    full = {"format_version": FORMAT_VERSION, **meta, "optimizer": opt_meta}
    (tmp / META_FILE).write_text(json.dumps(full, indent=2, sort_keys=True) + "\n")
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    if keep_last > 0:
        for old in list_checkpoints(run_dir)[:-keep_last]:
            shutil.rmtree(old, ignore_errors=True)
    return final


# --------------------------------------------------------------------------- finding


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Complete `step_*` checkpoints of a run (with `andes_gym_meta.json`), oldest first."""
    return training_checkpoint.list_checkpoints(run_dir, META_FILE)


def latest_checkpoint(run_dir: str | Path) -> Path:
    """The newest complete `step_*` checkpoint of a run (intact or not).

    Raises:
        CheckpointError: When the run has none.
    """
    return training_checkpoint.latest_checkpoint(run_dir, META_FILE)


def read_meta(ckpt_dir: str | Path) -> dict:
    """The checkpoint's `andes_gym_meta.json`, checked.

    Raises:
        CheckpointError: Naming the file when it is missing, not JSON, or lacks fields.
    """
    path = Path(ckpt_dir) / META_FILE
    if not path.is_file():
        raise CheckpointError(f"{path}: missing (not a complete checkpoint)")
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path}: expected a JSON object, got {type(meta).__name__}")
    for key in ("format_version", "num_timesteps", "iterations", "optimizer"):
        if key not in meta:
            raise CheckpointError(f"{path}: missing field {key!r}")
    if meta["format_version"] != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format {meta['format_version']!r}, this andes_gym reads "
            f"{FORMAT_VERSION}"
        )
    return meta


def read_checkpoint(ckpt_dir: str | Path) -> tuple[dict, dict, dict]:
    """Reads a checkpoint in full (safetensors and JSON only; no Ray, no pickle).

    Returns:
        The meta data, the module weights (name -> tensor) and the optimizer states
        (optimizer name -> `{"module_id", "state"}` with a torch `state_dict`).

    Raises:
        CheckpointError: Naming the first missing, truncated or malformed file.
    """
    ckpt_dir = Path(ckpt_dir)
    meta = read_meta(ckpt_dir)
    weights = read_tensors(ckpt_dir / MODEL_FILE)
    opt_path = ckpt_dir / OPTIMIZER_FILE
    opt_tensors = read_tensors(opt_path)
    optimizers = {}
    for opt_name, structure in meta["optimizer"].items():
        prefix = f"{opt_name}/"
        tensors = {k[len(prefix) :]: v for k, v in opt_tensors.items() if k.startswith(prefix)}
        state = unflatten_optimizer(tensors, structure, opt_path)
        optimizers[opt_name] = {"module_id": structure.get("module_id"), "state": state}
    return meta, weights, optimizers


def verify_checkpoint(ckpt_dir: str | Path) -> dict:
    """Reads every file of a checkpoint in full (`read_checkpoint`); returns its meta data.

    Raises:
        CheckpointError: Naming the first missing, truncated or malformed file.
    """
    return read_checkpoint(ckpt_dir)[0]


def _warn_skipped(exc: CheckpointError) -> None:
    warnings.warn(f"skipping a broken checkpoint: {exc}", CheckpointWarning, stacklevel=3)


def newest_intact_checkpoint(run_dir: str | Path) -> Path:
    """The newest `step_*` checkpoint whose files all read back (what `resume` continues from).

    A `CheckpointWarning` names each broken one skipped.

    Raises:
        CheckpointError: When the run has no checkpoint, or none is intact (naming every
            broken file).
    """
    return training_checkpoint.newest_intact_checkpoint(run_dir, META_FILE, verify_checkpoint)


def policy_checkpoint(run_dir: str | Path) -> Path:
    """`checkpoints/best` if kept and intact, else the newest intact `step_*` checkpoint.

    Raises:
        CheckpointError: When the run has no intact checkpoint.
    """
    best = Path(run_dir) / "checkpoints" / BEST_NAME
    if (best / META_FILE).is_file():
        try:
            verify_checkpoint(best)
        except CheckpointError as exc:
            _warn_skipped(exc)
        else:
            return best
    return newest_intact_checkpoint(run_dir)


# --------------------------------------------------------------------------- loading


def build_module(cfg: TrainConfig, spec):
    """A fresh `SlotScorerRLModule` for a run's config and feature spec (no Ray needed)."""
    from andes_gym.scale.rllib_module import SlotScorerRLModule, model_config_for

    obs_space, act_space = spaces_of(spec)
    return SlotScorerRLModule(
        observation_space=obs_space,
        action_space=act_space,
        model_config=model_config_for(cfg.policy, spec),
    )


def load_module_weights(module, weights: dict, source: Path) -> None:
    """Loads `model.safetensors` weights into a module built from the run's config.

    Raises:
        CheckpointError: Naming the file and the missing / unexpected / mis-shaped keys.
    """
    training_checkpoint.load_checked_state(module, weights, source)


def load_module(ckpt_dir: str | Path, cfg: TrainConfig, spec):
    """The trained `SlotScorerRLModule` of a checkpoint (on CPU, eval mode), without Ray.

    Args:
        ckpt_dir: The checkpoint directory.
        cfg: The run's config (`read_run`).
        spec: The run's feature spec.

    Raises:
        CheckpointError: For a missing or corrupt `model.safetensors`, or one that does not
            fit the config's network.
    """
    path = Path(ckpt_dir) / MODEL_FILE
    module = build_module(cfg, spec)
    load_module_weights(module, read_tensors(path), path)
    return module.eval()


def restore_checkpoint(algo, ckpt_dir: str | Path, cfg: TrainConfig, spec) -> dict:
    """Loads a checkpoint's weights and optimizer state into PPO built from the run's config.

    The env runners get the weights too (`set_module_state`).

    Args:
        algo: The `Algorithm` of `build_ppo_config(cfg, spec, ...)`.
        ckpt_dir: The checkpoint directory.
        cfg: The run's config (the weights are checked against its network first).
        spec: The run's feature spec.

    Returns:
        The checkpoint's meta data (its counters continue the run).

    Raises:
        CheckpointError: Naming the file and the problem.
    """
    from ray.rllib.core import COMPONENT_LEARNER, COMPONENT_OPTIMIZER

    ckpt_dir = Path(ckpt_dir)
    meta, weights, optimizers = read_checkpoint(ckpt_dir)
    load_module_weights(build_module(cfg, spec), weights, ckpt_dir / MODEL_FILE)
    set_module_state(algo, weights)
    if optimizers:
        try:
            algo.learner_group.set_state({COMPONENT_LEARNER: {COMPONENT_OPTIMIZER: optimizers}})
        except (ValueError, KeyError, RuntimeError) as exc:
            raise CheckpointError(
                f"{ckpt_dir / OPTIMIZER_FILE}: optimizer state does not fit the learner ({exc})"
            ) from exc
    return meta


def export_checkpoint(run_dir: Path, out: Path, ckpt_dir: Path | None = None) -> Path:
    """Exports a run's checkpoint (default: `policy_checkpoint`) to ONNX, without Ray."""
    cfg, spec = read_run(run_dir)
    ckpt_dir = Path(ckpt_dir) if ckpt_dir is not None else policy_checkpoint(run_dir)
    meta = read_meta(ckpt_dir)
    module = load_module(ckpt_dir, cfg, spec)
    return export_module(
        module, cfg, spec, out, meta["num_timesteps"], f"{Path(run_dir).name}, {ckpt_dir.name}"
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
    with torch.no_grad():  # names and shapes must match exactly
        build_module(cfg, spec).load_state_dict(state, strict=True)
    return {k: v.numpy() for k, v in state.items()}


def set_module_state(algo, state: dict) -> None:
    """Loads module weights into the algorithm's learner and every env runner (blocking).

    `EnvRunnerGroup.sync_weights` (and `Algorithm.set_state`) reach the remote runners
    fire-and-forget by default (a request can be dropped while another is in flight), so
    the runners' modules are set by a blocking call.
    """
    from ray.rllib.core import COMPONENT_LEARNER, COMPONENT_RL_MODULE, DEFAULT_MODULE_ID

    algo.learner_group.set_state(
        {COMPONENT_LEARNER: {COMPONENT_RL_MODULE: {DEFAULT_MODULE_ID: state}}}
    )
    arrays = {k: np.asarray(v) for k, v in state.items()}
    algo.env_runner_group.foreach_env_runner(
        lambda runner: runner.module.set_state(arrays), local_env_runner=True
    )
