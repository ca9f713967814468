"""Export of an RLlib-trained slot scorer to the ONNX format of `andes_gym.training.export_onnx`.

The graph is built by `export_onnx`'s own scoring module (observation -> deterministic
action mean clipped to the action space; RLlib runs use no observation normalization), and
the file carries the same `andes_gym.*` metadata with the same input and output names, so
`andes_gym.agents.learned.load_policy`, the leaderboard and the vLLM hook read it unchanged.
Only `andes_gym.algo` (`RLlib-PPO`) and `andes_gym.num_timesteps` (env steps sampled)
tell it apart.
"""

from __future__ import annotations

from pathlib import Path

from andes_gym.core.features import FeatureSpec
from andes_gym.training.config import TrainConfig
from andes_gym.training.export_onnx import scoring_module, write_scoring_onnx

ALGO_NAME = "RLlib-PPO"


def _scorer_adapter(module):
    """The module's slot scorer with the attributes `scoring_module` reads."""
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
    return write_scoring_onnx(
        scoring_module(_scorer_adapter(module), None),
        spec,
        out,
        env_id=cfg.env.id,
        env_kwargs=cfg.env.kwargs,
        config_hash=cfg.hash(),
        algo=ALGO_NAME,
        policy_kind=cfg.policy.kind,
        num_timesteps=num_timesteps,
        normalizer=None,
        doc=f"andes_gym scoring policy trained with RLlib PPO ({source})",
    )
