"""Export of an RLlib-trained slot scorer to the ONNX format of `andes_gym.export`.

The graph is built by `andes_gym.export`'s own scoring module (observation -> deterministic
action mean clipped to the action space; RLlib runs use no observation normalization), and
the file carries the same `andes_gym.*` metadata with the same input and output names, so
`andes_gym.engine_bridge.load_policy`, the leaderboard and the vLLM hook read it unchanged.
Only `andes_gym.algo` (`RLlib-PPO`) and `andes_gym.num_timesteps` (env steps sampled)
tell it apart.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

from andes_gym import export as sb3_export
from andes_gym.core.features import FeatureSpec
from andes_gym.training.config import TrainConfig

ALGO_NAME = "RLlib-PPO"


def _scorer_adapter(module):
    """The module's slot scorer with the attributes `export._scoring_module` reads."""
    from torch import nn

    class RLlibScorer(nn.Module):
        squash_output = False

        def __init__(self) -> None:
            super().__init__()
            self.net = module.net
            self.action_space = module.action_space

        def _predict(self, obs, deterministic: bool = True):
            return self.net.forward_actor(obs)

    return RLlibScorer().eval()


def export_module(
    module,
    cfg: TrainConfig,
    spec: FeatureSpec,
    out: str | Path,
    num_timesteps: int,
    source: str = "",
) -> Path:
    """Writes the ONNX scoring network of a `SlotScorerRLModule`.

    Args:
        module: The trained `SlotScorerRLModule` (on CPU).
        cfg: The run's training config (its hash, env id and kwargs go in the metadata).
        spec: The env's feature spec.
        out: Output `.onnx` path.
        num_timesteps: Env steps the module was trained for.
        source: Where the weights came from (the model's doc string).

    Returns:
        The written path.
    """
    import onnx
    import torch

    import andes_gym

    scorer = sb3_export._scoring_module(_scorer_adapter(module), None)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    dummy = torch.zeros(1, spec.obs_dim, dtype=torch.float32)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            scorer,
            (dummy,),
            str(out),
            input_names=[sb3_export.INPUT_NAME],
            output_names=[sb3_export.OUTPUT_NAME],
            dynamic_axes={
                sb3_export.INPUT_NAME: {0: "batch"},
                sb3_export.OUTPUT_NAME: {0: "batch"},
            },
            opset_version=sb3_export.OPSET,
            dynamo=False,
        )
    model = onnx.load(str(out))
    props = {
        "andes_gym.format": sb3_export.FORMAT,
        "andes_gym.feature_spec": spec.to_json(),
        "andes_gym.k_slots": str(spec.k_slots),
        "andes_gym.obs_normalization": json.dumps(None),
        "andes_gym.env_id": cfg.env.id,
        "andes_gym.env_version": sb3_export.env_version(cfg.env.id),
        "andes_gym.env_kwargs": json.dumps(cfg.env.kwargs, sort_keys=True, default=str),
        "andes_gym.config_hash": cfg.hash(),
        "andes_gym.algo": ALGO_NAME,
        "andes_gym.policy_kind": cfg.policy.kind,
        "andes_gym.num_timesteps": str(int(num_timesteps)),
        "andes_gym.version": andes_gym.__version__,
        "andes_gym.input": sb3_export.INPUT_NAME,
        "andes_gym.output": sb3_export.OUTPUT_NAME,
    }
    del model.metadata_props[:]
    for key, value in props.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    model.doc_string = f"andes_gym scoring policy trained with RLlib PPO ({source})"
    onnx.checker.check_model(model)
    onnx.save(model, str(out))
    return out
