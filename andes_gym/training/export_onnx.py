"""Export of a trained policy's deterministic scoring network to ONNX (the library side).

The ONNX graph maps a batch of flat observations `obs` (float32, `(B, obs_dim)`, exactly
what `andes_gym.core.features.observe` returns) to `slot_scores` (float32, `(B, K)`): the
observation normalization (if the run used one) is baked into the graph, followed by the
policy's action mean clipped to the action space, i.e. what `model.predict(obs,
deterministic=True)` returns. The model's `metadata_props` (all strings, keys prefixed
`andes_gym.`) hold the feature spec JSON, K, the normalization statistics, the env id and
version, the training config hash, the algorithm, timesteps and the andes_gym version.
`andes_gym.agents.learned.load_policy` loads it (onnxruntime only). torch and onnx are
imported only when a function here runs.
"""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import numpy as np

import andes_gym
from andes_gym.agents.learned import FORMAT
from andes_gym.extras import require
from andes_gym.training.factory import build_policy, spaces_of
from andes_gym.training.run_dir import read_run

INPUT_NAME = "obs"
OUTPUT_NAME = "slot_scores"
OPSET = 17


def scoring_module(policy, normalizer: dict | None):
    """The ONNX-exportable scoring network of a policy: obs -> slot scores, clipped.

    Args:
        policy: A stable-baselines3 `ActorCriticPolicy`, or any module with
            `action_space`, `_predict(obs, deterministic)` and `squash_output`.
        normalizer: `normalizer_arrays` of the checkpoint (baked into the graph), or None.

    Returns:
        The module, in eval mode.
    """
    import torch
    from stable_baselines3.common.policies import ActorCriticPolicy
    from torch import nn

    class ScoringModule(nn.Module):
        """obs -> normalized obs -> deterministic action (the slot scores), clipped."""

        def __init__(self) -> None:
            super().__init__()
            self.policy = policy
            low = torch.as_tensor(policy.action_space.low, dtype=torch.float32)
            high = torch.as_tensor(policy.action_space.high, dtype=torch.float32)
            self.register_buffer("low", low)
            self.register_buffer("high", high)
            self.normalize = normalizer is not None
            if normalizer is not None:
                mean = torch.as_tensor(normalizer["mean"], dtype=torch.float32)
                std = torch.as_tensor(
                    np.sqrt(normalizer["var"] + normalizer["epsilon"]), dtype=torch.float32
                )
                self.register_buffer("obs_mean", mean)
                self.register_buffer("obs_std", std)
                self.clip_obs = float(normalizer["clip_obs"])

        def forward(self, obs: torch.Tensor) -> torch.Tensor:
            x = obs
            if self.normalize:
                x = torch.clamp((x - self.obs_mean) / self.obs_std, -self.clip_obs, self.clip_obs)
            p = self.policy
            if isinstance(p, ActorCriticPolicy):
                # The Gaussian's mean, computed without building a distribution object.
                features = p.extract_features(x, p.pi_features_extractor)
                action = p.action_net(p.mlp_extractor.forward_actor(features))
            else:
                action = p._predict(x, deterministic=True)
            if getattr(p, "squash_output", False):
                return self.low + 0.5 * (action + 1.0) * (self.high - self.low)
            return torch.minimum(torch.maximum(action, self.low), self.high)

    return ScoringModule().eval()


def env_version(env_id: str) -> str:
    """The `-vN` suffix of a gymnasium id ("" if none)."""
    m = re.search(r"-v(\d+)$", env_id)
    return f"v{m.group(1)}" if m else ""


def export_run(run_dir: str | Path, out: str | Path, ckpt_dir: str | Path | None = None) -> Path:
    """Writes the ONNX scoring network of a run's checkpoint (default: `best` if kept, else the newest).

    Args:
        run_dir: The training run directory.
        out: Output `.onnx` path.
        ckpt_dir: A specific checkpoint directory.

    Returns:
        The written path.

    Raises:
        CheckpointError / ConfigError: For a missing or malformed run or checkpoint.
    """
    require("onnx", "exporting a policy (python -m andes_gym.export)", "train")
    require("torch", "exporting a policy (python -m andes_gym.export)", "train")

    # After the checks above: the checkpoint module imports torch.
    from andes_gym.training import checkpoint as ckpt

    run_dir = Path(run_dir)
    cfg, spec = read_run(run_dir)
    ckpt_dir = Path(ckpt_dir) if ckpt_dir is not None else ckpt.policy_checkpoint(run_dir)
    meta = ckpt.read_meta(ckpt_dir)
    obs_space, act_space = spaces_of(spec)
    policy = build_policy(cfg, spec, obs_space, act_space)
    ckpt.load_policy_weights(policy, ckpt_dir)
    normalizer = ckpt.normalizer_arrays(ckpt_dir)
    return write_scoring_onnx(
        scoring_module(policy, normalizer),
        spec,
        out,
        env_id=cfg.env.id,
        env_kwargs=cfg.env.kwargs,
        config_hash=meta.get("config_hash") or cfg.hash(),
        algo=cfg.algo.name,
        policy_kind=cfg.policy.kind,
        num_timesteps=meta["num_timesteps"],
        normalizer=normalizer,
        doc=f"andes_gym scoring policy from {run_dir.name} ({ckpt_dir.name})",
    )


def write_scoring_onnx(
    module,
    spec,
    out: str | Path,
    *,
    env_id: str,
    env_kwargs: dict,
    config_hash: str,
    algo: str,
    policy_kind: str,
    num_timesteps: int,
    normalizer: dict | None,
    doc: str,
) -> Path:
    """Exports a scoring module to ONNX with the `andes_gym.*` metadata, checked.

    Args:
        module: The module to export (`scoring_module`: obs -> clipped slot scores).
        spec: The env's `FeatureSpec` (its JSON and K go in the metadata).
        out: Output `.onnx` path (parent directories are created).
        env_id: The env's gymnasium id.
        env_kwargs: The env's keyword arguments.
        config_hash: Hash of the training config.
        algo: The training algorithm's name.
        policy_kind: `policy.kind` of the training config.
        num_timesteps: Env steps the policy was trained for.
        normalizer: The observation normalization baked into `module`, or None.
        doc: The model's doc string.

    Returns:
        The written path.
    """
    import onnx
    import torch

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    dummy = torch.zeros(1, spec.obs_dim, dtype=torch.float32)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            (dummy,),
            str(out),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            opset_version=OPSET,
            dynamo=False,
        )
    model = onnx.load(str(out))
    props = {
        "andes_gym.format": FORMAT,
        "andes_gym.feature_spec": spec.to_json(),
        "andes_gym.k_slots": str(spec.k_slots),
        "andes_gym.obs_normalization": json.dumps(
            None
            if normalizer is None
            else {
                "baked_in": True,
                "mean": np.asarray(normalizer["mean"]).tolist(),
                "var": np.asarray(normalizer["var"]).tolist(),
                "clip_obs": normalizer["clip_obs"],
                "epsilon": normalizer["epsilon"],
            }
        ),
        "andes_gym.env_id": env_id,
        "andes_gym.env_version": env_version(env_id),
        "andes_gym.env_kwargs": json.dumps(env_kwargs, sort_keys=True, default=str),
        "andes_gym.config_hash": config_hash,
        "andes_gym.algo": algo,
        "andes_gym.policy_kind": policy_kind,
        "andes_gym.num_timesteps": str(int(num_timesteps)),
        "andes_gym.version": andes_gym.__version__,
        "andes_gym.input": INPUT_NAME,
        "andes_gym.output": OUTPUT_NAME,
    }
    del model.metadata_props[:]
    for key, value in props.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    model.doc_string = doc
    onnx.checker.check_model(model)
    onnx.save(model, str(out))
    return out
