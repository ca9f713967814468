"""Checkpoints without pickle: tensors in safetensors files, everything else in JSON.

A checkpoint is a directory `checkpoints/step_{num_timesteps:010d}/` in a run directory:

- `policy.safetensors`: the policy's `state_dict` (network weights and the log std).
- `optimizer.safetensors` + the `optimizer` entry of `meta.json`: the optimizer's tensors
  and its param groups / non-tensor state.
- `normalizer.safetensors` + the `normalizer` entry: running observation / return
  statistics when VecNormalize is used.
- `rng.safetensors`: the torch RNG state.
- `meta.json`: format version, timesteps, update and episode counters, algorithm name,
  config hash. Written last, so a directory without it is an unfinished save.

The model itself is rebuilt from the run's saved config (`config.yaml`), then these
parameters are loaded into it. `checkpoints/best` (same layout) holds the policy with the best validation QoE when the
run evaluates periodically; export and the final evaluation use it. A directory is
written under a temporary name and renamed,
so an interrupted save never leaves a half-written checkpoint under the final name. A
checkpoint damaged later (a truncated file, a disk error) is skipped by `--resume`, export
and the final evaluation in favour of the newest intact one, with a `CheckpointWarning`
naming it (`newest_intact_checkpoint`, `policy_checkpoint`).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

# Defined beside the run directory's other files, so commands can catch it without torch.
from andes_gym.training.run_dir import CheckpointError

FORMAT_VERSION = 1
CHECKPOINT_DIR = "checkpoints"
BEST_NAME = "best"
_STEP_RE = re.compile(r"^step_(\d+)$")


class CheckpointWarning(UserWarning):
    """A broken checkpoint was skipped in favour of an older intact one (the message names it)."""


# --------------------------------------------------------------------------- saving


def save_checkpoint(
    run_dir: str | Path,
    model,
    venv=None,
    config_hash: str = "",
    keep_last: int = 0,
    name: str | None = None,
    extra_meta: dict | None = None,
) -> Path:
    """Saves `model` (and VecNormalize statistics of `venv`, if any) into the run directory.

    Args:
        run_dir: The run directory.
        model: A stable-baselines3 algorithm instance.
        venv: The training vector env (its VecNormalize layer, if any, is saved).
        config_hash: Hash of the resolved config (recorded in meta.json).
        keep_last: Delete older `step_*` checkpoints beyond this many (0: keep all).
        name: Directory name (default `step_{num_timesteps:010d}`; `best` for the best).
        extra_meta: More JSON fields for meta.json.

    Returns:
        The checkpoint directory.
    """
    root = Path(run_dir) / CHECKPOINT_DIR
    root.mkdir(parents=True, exist_ok=True)
    final = root / (name or f"step_{int(model.num_timesteps):010d}")
    tmp = root / f".tmp_{final.name}_{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    policy_state = {k: v.detach().cpu().contiguous() for k, v in model.policy.state_dict().items()}
    save_file(policy_state, str(tmp / "policy.safetensors"))
    opt_tensors, opt_meta = flatten_optimizer(model.policy.optimizer.state_dict())
    save_file(opt_tensors, str(tmp / "optimizer.safetensors"))
    save_file({"torch": torch.get_rng_state()}, str(tmp / "rng.safetensors"))
    meta: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "algo": type(model).__name__,
        "num_timesteps": int(model.num_timesteps),
        "n_updates": int(getattr(model, "_n_updates", 0)),
        "episode_num": int(getattr(model, "_episode_num", 0)),
        "config_hash": config_hash,
        "optimizer": opt_meta,
        "normalizer": None,
        **(extra_meta or {}),
    }
    norm = find_vecnormalize(venv)
    if norm is not None:
        tensors, norm_meta = _normalizer_state(norm)
        save_file(tensors, str(tmp / "normalizer.safetensors"))
        meta["normalizer"] = norm_meta
    (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    if keep_last > 0:
        for old in list_checkpoints(run_dir)[:-keep_last]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def flatten_optimizer(state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """Splits an optimizer state_dict into tensors (for safetensors) and JSON data."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, pstate in state["state"].items():
        for name, value in pstate.items():
            if torch.is_tensor(value):
                tensors[f"state.{pid}.{name}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(pid), {})[name] = value
    groups = [
        {k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()}
        for g in state["param_groups"]
    ]
    return tensors, {"param_groups": groups, "scalars": scalars}


def unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict, source: Path) -> dict:
    try:
        state: dict[int, dict[str, Any]] = {}
        for key, value in tensors.items():
            _, pid, name = key.split(".", 2)
            state.setdefault(int(pid), {})[name] = value
        for pid, values in meta["scalars"].items():
            state.setdefault(int(pid), {}).update(values)
        groups = []
        for g in meta["param_groups"]:
            g = dict(g)
            if "betas" in g:
                g["betas"] = tuple(g["betas"])
            groups.append(g)
        return {"state": state, "param_groups": groups}
    except (KeyError, ValueError, TypeError) as exc:
        raise CheckpointError(f"{source}: malformed optimizer state ({exc})") from exc


def find_vecnormalize(venv):
    """The VecNormalize layer of a (wrapped) vector env, or None."""
    from stable_baselines3.common.vec_env import VecNormalize

    while venv is not None:
        if isinstance(venv, VecNormalize):
            return venv
        venv = getattr(venv, "venv", None)
    return None


def _normalizer_state(norm) -> tuple[dict[str, torch.Tensor], dict]:
    tensors = {
        "obs_mean": torch.as_tensor(np.asarray(norm.obs_rms.mean, dtype=np.float64)),
        "obs_var": torch.as_tensor(np.asarray(norm.obs_rms.var, dtype=np.float64)),
        "ret_mean": torch.as_tensor(np.asarray(norm.ret_rms.mean, dtype=np.float64)).reshape(-1),
        "ret_var": torch.as_tensor(np.asarray(norm.ret_rms.var, dtype=np.float64)).reshape(-1),
    }
    meta = {
        "obs_count": float(norm.obs_rms.count),
        "ret_count": float(norm.ret_rms.count),
        "norm_obs": bool(norm.norm_obs),
        "norm_reward": bool(norm.norm_reward),
        "clip_obs": float(norm.clip_obs),
        "clip_reward": float(norm.clip_reward),
        "epsilon": float(norm.epsilon),
        "gamma": float(norm.gamma),
    }
    return tensors, meta


# --------------------------------------------------------------------------- loading


def list_checkpoints(run_dir: str | Path, meta_file: str = "meta.json") -> list[Path]:
    """Complete `step_*` checkpoints of a run (those with their `meta_file`), oldest first.

    Args:
        run_dir: The run directory.
        meta_file: The file whose presence marks a checkpoint complete (the RLlib trainer's
            checkpoints name theirs differently).
    """
    root = Path(run_dir) / CHECKPOINT_DIR
    if not root.is_dir():
        return []
    found = []
    for path in root.iterdir():
        m = _STEP_RE.match(path.name)
        if m and (path / meta_file).is_file():
            found.append((int(m.group(1)), path))
    return [p for _, p in sorted(found)]


def latest_checkpoint(run_dir: str | Path, meta_file: str = "meta.json") -> Path:
    """The newest complete checkpoint of a run (intact or not; see `list_checkpoints`).

    Raises:
        CheckpointError: When the run has none.
    """
    found = list_checkpoints(run_dir, meta_file)
    if not found:
        raise CheckpointError(f"no checkpoint in {Path(run_dir) / CHECKPOINT_DIR}")
    return found[-1]


def verify_checkpoint(ckpt_dir: str | Path) -> dict:
    """Reads every file of a checkpoint in full, without loading it into a model.

    Returns:
        The checkpoint's meta data.

    Raises:
        CheckpointError: Naming the first missing, truncated or malformed file.
    """
    ckpt_dir = Path(ckpt_dir)
    meta = read_meta(ckpt_dir)
    read_tensors(ckpt_dir / "policy.safetensors")
    opt_path = ckpt_dir / "optimizer.safetensors"
    unflatten_optimizer(read_tensors(opt_path), meta["optimizer"], opt_path)
    if (ckpt_dir / "rng.safetensors").is_file():  # optional, as in `load_checkpoint`
        read_tensors(ckpt_dir / "rng.safetensors")
    if meta.get("normalizer") is not None:
        read_tensors(ckpt_dir / "normalizer.safetensors")
    return meta


def newest_intact_checkpoint(
    run_dir: str | Path,
    meta_file: str = "meta.json",
    verify: Callable[[Path], object] | None = None,
) -> Path:
    """The newest `step_*` checkpoint whose files all read back; a `CheckpointWarning` names each broken one skipped.

    Args:
        run_dir: The run directory.
        meta_file: As in `list_checkpoints`.
        verify: Reads a checkpoint in full, raising `CheckpointError` (default:
            `verify_checkpoint`; the RLlib trainer passes its own).

    Raises:
        CheckpointError: When the run has no checkpoint, or none is intact (naming every
            broken file).
    """
    verify = verify_checkpoint if verify is None else verify
    found = list_checkpoints(run_dir, meta_file)
    if not found:
        raise CheckpointError(f"no checkpoint in {Path(run_dir) / CHECKPOINT_DIR}")
    problems = []
    for path in reversed(found):
        try:
            verify(path)
        except CheckpointError as exc:
            problems.append(str(exc))
            _warn_skipped(exc)
            continue
        return path
    raise CheckpointError(
        f"no intact checkpoint in {Path(run_dir) / CHECKPOINT_DIR}: " + "; ".join(problems)
    )


def _warn_skipped(exc: CheckpointError) -> None:
    warnings.warn(f"skipping a broken checkpoint: {exc}", CheckpointWarning, stacklevel=3)


def best_checkpoint(run_dir: str | Path) -> Path | None:
    """The run's `best` checkpoint (highest validation QoE), or None."""
    path = Path(run_dir) / CHECKPOINT_DIR / BEST_NAME
    return path if (path / "meta.json").is_file() else None


def policy_checkpoint(run_dir: str | Path) -> Path:
    """The checkpoint whose policy a run delivers: `best` if kept and intact, else the newest intact one.

    Raises:
        CheckpointError: When the run has no intact checkpoint.
    """
    best = best_checkpoint(run_dir)
    if best is not None:
        try:
            verify_checkpoint(best)
        except CheckpointError as exc:
            _warn_skipped(exc)
        else:
            return best
    return newest_intact_checkpoint(run_dir)


def read_meta(ckpt_dir: str | Path) -> dict:
    """The checkpoint's meta.json, checked.

    Raises:
        CheckpointError: Naming the file when it is missing, not JSON, or lacks fields.
    """
    path = Path(ckpt_dir) / "meta.json"
    if not path.is_file():
        raise CheckpointError(f"{path}: missing (not a complete checkpoint)")
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path}: expected a JSON object, got {type(meta).__name__}")
    for key in ("format_version", "num_timesteps", "optimizer"):
        if key not in meta:
            raise CheckpointError(f"{path}: missing field {key!r}")
    if meta["format_version"] != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format {meta['format_version']!r}, this andes_gym reads {FORMAT_VERSION}"
        )
    return meta


def read_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of one safetensors file.

    Raises:
        CheckpointError: Naming the file when it is missing or corrupt.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: missing")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: corrupt safetensors file ({exc})") from exc


def load_policy_weights(policy: torch.nn.Module, ckpt_dir: str | Path) -> None:
    """Loads `policy.safetensors` into a policy built from the run's config.

    Raises:
        CheckpointError: Naming the file and the missing / unexpected / mis-shaped keys.
    """
    path = Path(ckpt_dir) / "policy.safetensors"
    load_checked_state(policy, read_tensors(path), path)


def load_checked_state(
    module: torch.nn.Module, tensors: dict[str, torch.Tensor], source: Path
) -> None:
    """Loads `tensors` into `module` after checking that names and shapes match exactly.

    Raises:
        CheckpointError: Naming `source` and the missing / unexpected / mis-shaped keys.
    """
    own = module.state_dict()
    missing = sorted(set(own) - set(tensors))
    unexpected = sorted(set(tensors) - set(own))
    if missing or unexpected:
        raise CheckpointError(
            f"{source}: weights do not match the network built from the config "
            f"(missing {missing[:5]}, unexpected {unexpected[:5]})"
        )
    for key, value in tensors.items():
        if value.shape != own[key].shape:
            raise CheckpointError(
                f"{source}: {key} has shape {tuple(value.shape)}, the network expects {tuple(own[key].shape)}"
            )
    with torch.no_grad():
        module.load_state_dict(tensors)


def load_checkpoint(model, ckpt_dir: str | Path, venv=None) -> dict:
    """Restores a model (built from the run's config) and its env statistics from a checkpoint.

    Args:
        model: A freshly built algorithm instance of the same config.
        ckpt_dir: The checkpoint directory.
        venv: The training vector env, whose VecNormalize layer receives the statistics.

    Returns:
        The checkpoint's meta data.

    Raises:
        CheckpointError: Naming the file and the problem.
    """
    ckpt_dir = Path(ckpt_dir)
    meta = read_meta(ckpt_dir)
    if meta.get("algo") != type(model).__name__:
        raise CheckpointError(
            f"{ckpt_dir / 'meta.json'}: checkpoint of {meta.get('algo')!r}, model is {type(model).__name__}"
        )
    load_policy_weights(model.policy, ckpt_dir)
    opt_path = ckpt_dir / "optimizer.safetensors"
    opt_state = unflatten_optimizer(read_tensors(opt_path), meta["optimizer"], opt_path)
    try:
        model.policy.optimizer.load_state_dict(opt_state)
    except (ValueError, KeyError, RuntimeError) as exc:
        raise CheckpointError(
            f"{opt_path}: optimizer state does not fit the model ({exc})"
        ) from exc
    rng_path = ckpt_dir / "rng.safetensors"
    if rng_path.is_file():
        torch.set_rng_state(read_tensors(rng_path)["torch"])
    model.num_timesteps = int(meta["num_timesteps"])
    model._n_updates = int(meta.get("n_updates", 0))
    model._episode_num = int(meta.get("episode_num", 0))
    norm = find_vecnormalize(venv)
    if meta.get("normalizer") is not None:
        if norm is None:
            raise CheckpointError(
                f"{ckpt_dir}: has normalizer statistics but the env has no VecNormalize"
            )
        restore_normalizer(norm, ckpt_dir, meta["normalizer"])
    return meta


def restore_normalizer(norm, ckpt_dir: Path, norm_meta: dict) -> None:
    """Copies saved running statistics into a VecNormalize layer."""
    path = Path(ckpt_dir) / "normalizer.safetensors"
    t = read_tensors(path)
    try:
        norm.obs_rms.mean = t["obs_mean"].numpy().copy()
        norm.obs_rms.var = t["obs_var"].numpy().copy()
        norm.obs_rms.count = float(norm_meta["obs_count"])
        norm.ret_rms.mean = t["ret_mean"].numpy().reshape(norm.ret_rms.mean.shape).copy()
        norm.ret_rms.var = t["ret_var"].numpy().reshape(norm.ret_rms.var.shape).copy()
        norm.ret_rms.count = float(norm_meta["ret_count"])
    except KeyError as exc:
        raise CheckpointError(f"{path}: missing tensor or field {exc}") from exc


def normalizer_arrays(ckpt_dir: str | Path) -> dict | None:
    """Observation-normalization parameters of a checkpoint (None when it has none).

    Returns:
        `{"mean", "var"}` float64 arrays plus `clip_obs` and `epsilon`, or None when
        observations were not normalized.
    """
    meta = read_meta(ckpt_dir)
    norm_meta = meta.get("normalizer")
    if not norm_meta or not norm_meta.get("norm_obs"):
        return None
    t = read_tensors(Path(ckpt_dir) / "normalizer.safetensors")
    return {
        "mean": t["obs_mean"].numpy(),
        "var": t["obs_var"].numpy(),
        "clip_obs": float(norm_meta["clip_obs"]),
        "epsilon": float(norm_meta["epsilon"]),
    }
