"""The slot-scorer network as an RLlib `TorchRLModule` (new API stack), for PPO.

The network is `andes_gym.training.policy_net.SlotScorerNet`, imported, not copied: the
same per-slot actor and pooled critic as the stable-baselines3 policy, with the same
heads on top (a linear value head on the critic latent and one log standard deviation
shared by all slots) and the same initialization (orthogonal, gain sqrt(2); score head
0.01; value head 1). The action distribution is RLlib's diagonal Gaussian, whose inputs
are the K slot scores (the means) followed by K copies of the shared log std.

`model_config` keys (all required; `model_config_for` builds them from a training config):
`k_slots`, `num_slot_features`, `num_global_features`, `slot_hidden`, `context_hidden`,
`value_hidden`, `activation`, `log_std_init`, `ortho_init`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.apis import ValueFunctionAPI
from ray.rllib.core.rl_module.torch import TorchRLModule
from stable_baselines3.common.policies import ActorCriticPolicy
from torch import nn

from andes_gym.core.features import FeatureSpec
from andes_gym.training.config import PolicyConfig
from andes_gym.training.policy_net import SlotScorerNet, activation_class

MODEL_CONFIG_KEYS = (
    "k_slots",
    "num_slot_features",
    "num_global_features",
    "slot_hidden",
    "context_hidden",
    "value_hidden",
    "activation",
    "log_std_init",
    "ortho_init",
)


def model_config_for(policy: PolicyConfig, spec: FeatureSpec) -> dict:
    """The module's `model_config` for a training config's policy section and a feature spec."""
    return {
        "k_slots": spec.k_slots,
        "num_slot_features": spec.num_slot_features,
        "num_global_features": len(spec.global_features),
        "slot_hidden": list(policy.slot_hidden),
        "context_hidden": int(policy.context_hidden),
        "value_hidden": list(policy.value_hidden),
        "activation": policy.activation,
        "log_std_init": float(policy.log_std_init),
        "ortho_init": bool(policy.ortho_init),
    }


class SlotScorerRLModule(TorchRLModule, ValueFunctionAPI):
    """PPO-ready RLModule around `SlotScorerNet`.

    Attributes:
        net: The slot scorer (`forward_actor`: scores `(B, K)`; `forward_critic`: latent).
        value_head: Linear map of the critic latent to the value.
        log_std: The Gaussian's log std, one scalar for every slot.
    """

    def setup(self) -> None:
        cfg = dict(self.model_config or {})
        missing = [k for k in MODEL_CONFIG_KEYS if k not in cfg]
        if missing:
            raise ValueError(f"SlotScorerRLModule: model_config lacks {missing}")
        k = int(cfg["k_slots"])
        expected = k * int(cfg["num_slot_features"]) + k + int(cfg["num_global_features"])
        if self.observation_space.shape != (expected,):
            raise ValueError(
                f"SlotScorerRLModule: observation shape {self.observation_space.shape} does not "
                f"match K={k}, F={cfg['num_slot_features']}, G={cfg['num_global_features']} "
                f"(expected ({expected},))"
            )
        if self.action_space.shape != (k,):
            raise ValueError(
                f"SlotScorerRLModule needs a Box action space of shape ({k},), got {self.action_space}"
            )
        self.net = SlotScorerNet(
            k,
            int(cfg["num_slot_features"]),
            int(cfg["num_global_features"]),
            list(cfg["slot_hidden"]),
            int(cfg["context_hidden"]),
            list(cfg["value_hidden"]),
            activation_class(cfg["activation"]),
        )
        self.value_head = nn.Linear(self.net.latent_dim_vf, 1)
        self.log_std = nn.Parameter(torch.full((1,), float(cfg["log_std_init"])))
        if cfg["ortho_init"]:
            # The initialization of SlotScorerPolicy._build, through SB3's own helper.
            for module in self.net.modules():
                ActorCriticPolicy.init_weights(module, gain=float(np.sqrt(2)))
            ActorCriticPolicy.init_weights(self.net.score_head, gain=0.01)
            ActorCriticPolicy.init_weights(self.value_head, gain=1.0)

    def _dist_inputs(self, scores: torch.Tensor) -> torch.Tensor:
        return torch.cat([scores, self.log_std.expand_as(scores)], dim=-1)

    def _forward(self, batch: dict[str, Any], **kwargs) -> dict[str, Any]:
        scores = self.net.forward_actor(batch[Columns.OBS])
        return {Columns.ACTION_DIST_INPUTS: self._dist_inputs(scores)}

    def _forward_train(self, batch: dict[str, Any], **kwargs) -> dict[str, Any]:
        obs = batch[Columns.OBS]
        return {
            Columns.ACTION_DIST_INPUTS: self._dist_inputs(self.net.forward_actor(obs)),
            Columns.EMBEDDINGS: self.net.forward_critic(obs),
        }

    def compute_values(self, batch: dict[str, Any], embeddings: Any = None) -> torch.Tensor:
        """Value estimates `(B,)` (from the critic latent when `embeddings` holds it)."""
        if embeddings is None:
            embeddings = self.net.forward_critic(batch[Columns.OBS])
        return self.value_head(embeddings).squeeze(-1)

    def slot_scores(self, obs: torch.Tensor) -> torch.Tensor:
        """Deterministic slot scores (the action mean, before clipping to the action space)."""
        return self.net.forward_actor(obs)
