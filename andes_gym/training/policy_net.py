"""A permutation-equivariant slot scorer as a stable-baselines3 actor-critic policy.

The observation (see `andes_gym.core.features`) is K slots of F features, a slot mask and G
global features. The actor applies one shared MLP to every slot (its features concatenated
with the global features), optionally mixes each slot with a pooled summary of all filled
slots, and maps each slot to one score: the mean of the Gaussian action for that slot.
Permuting the slots permutes the scores and nothing else, so the network learns one rule
for all slots instead of K, and its size does not depend on K. The critic pools per-slot
embeddings (masked mean and max) with the global features into the value.

Empty slots get a constant mean (-1), so no gradient flows from actions that cannot
change anything. The Gaussian's log standard deviation is one scalar shared by all slots.
"""

from __future__ import annotations

from functools import partial

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.policies import ActorCriticPolicy
from torch import nn

ACTIVATIONS: dict[str, type[nn.Module]] = {"tanh": nn.Tanh, "relu": nn.ReLU, "elu": nn.ELU}

EMPTY_SLOT_SCORE = -1.0


def activation_class(name: str) -> type[nn.Module]:
    """The activation module class for a config name.

    Raises:
        ValueError: Naming the unknown activation and the known ones.
    """
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; expected one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]


def _mlp(in_dim: int, hidden: list[int], activation: type[nn.Module]) -> tuple[nn.Module, int]:
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [nn.Linear(in_dim, width), activation()]
        in_dim = width
    return nn.Sequential(*layers), in_dim


def split_obs(obs: torch.Tensor, k: int, f: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Splits flat observations `(B, K*F + K + G)` into slots `(B,K,F)`, mask `(B,K)`, globals `(B,G)`."""
    slots = obs[:, : k * f].reshape(-1, k, f)
    mask = obs[:, k * f : k * f + k]
    glob = obs[:, k * f + k :]
    return slots, mask, glob


def _masked_pool(h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Masked mean and max over slots: `(B,K,H)`, `(B,K)` -> `(B,2H)` (zeros when no slot is filled)."""
    m = mask.unsqueeze(-1)
    count = m.sum(dim=1)
    mean = (h * m).sum(dim=1) / count.clamp(min=1.0)
    big = torch.full_like(h, -1e9)
    mx = torch.where(m > 0.5, h, big).amax(dim=1)
    mx = torch.where(count > 0.5, mx, torch.zeros_like(mx))
    return torch.cat([mean, mx], dim=-1)


class SlotScorerNet(nn.Module):
    """The actor (per-slot scores) and critic (pooled latent) networks.

    Used as the `mlp_extractor` of `SlotScorerPolicy`: `forward_actor` returns the K slot
    scores directly (`latent_dim_pi == K`, and the policy's action head is the identity).

    Args:
        k_slots: K.
        num_slot_features: F.
        num_global_features: G.
        slot_hidden: Hidden sizes of the per-slot encoders.
        context_hidden: Width of the slot-plus-pooled-context layer (0: no context layer).
        value_hidden: Hidden sizes of the value MLP over the pooled features.
        activation: Activation class.
    """

    def __init__(
        self,
        k_slots: int,
        num_slot_features: int,
        num_global_features: int,
        slot_hidden: list[int],
        context_hidden: int,
        value_hidden: list[int],
        activation: type[nn.Module],
    ) -> None:
        super().__init__()
        self.k = k_slots
        self.f = num_slot_features
        self.g = num_global_features
        in_dim = self.f + self.g
        self.pi_encoder, h_pi = _mlp(in_dim, list(slot_hidden), activation)
        if context_hidden > 0:
            self.pi_context = nn.Sequential(nn.Linear(3 * h_pi, context_hidden), activation())
            head_in = context_hidden
        else:
            self.pi_context = None
            head_in = h_pi
        self.score_head = nn.Linear(head_in, 1)
        self.vf_encoder, h_vf = _mlp(in_dim, list(slot_hidden), activation)
        self.vf_mlp, vf_out = _mlp(2 * h_vf + self.g + 1, list(value_hidden), activation)
        self.latent_dim_pi = self.k
        self.latent_dim_vf = vf_out

    def _slot_inputs(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        slots, mask, glob = split_obs(obs, self.k, self.f)
        x = torch.cat([slots, glob.unsqueeze(1).expand(-1, self.k, -1)], dim=-1)
        return x, mask, glob

    def forward_actor(self, obs: torch.Tensor) -> torch.Tensor:
        """Slot scores `(B, K)`; empty slots score `EMPTY_SLOT_SCORE`."""
        x, mask, _ = self._slot_inputs(obs)
        h = self.pi_encoder(x)
        if self.pi_context is not None:
            pooled = _masked_pool(h, mask).unsqueeze(1).expand(-1, self.k, -1)
            h = self.pi_context(torch.cat([h, pooled], dim=-1))
        scores = self.score_head(h).squeeze(-1)
        return torch.where(mask > 0.5, scores, torch.full_like(scores, EMPTY_SLOT_SCORE))

    def forward_critic(self, obs: torch.Tensor) -> torch.Tensor:
        """The value latent `(B, latent_dim_vf)`."""
        x, mask, glob = self._slot_inputs(obs)
        h = self.vf_encoder(x)
        filled = mask.sum(dim=1, keepdim=True) / self.k
        return self.vf_mlp(torch.cat([_masked_pool(h, mask), glob, filled], dim=-1))

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.forward_actor(obs), self.forward_critic(obs)


class SlotScorerPolicy(ActorCriticPolicy):
    """Actor-critic policy whose action mean is the slot scorer's K scores.

    Works with the on-policy algorithms of stable-baselines3 (PPO, A2C) on a Box action
    space of shape `(K,)`.

    :param observation_space: Flat Box of size `K*F + K + G`.
    :param action_space: Box of shape `(K,)`.
    :param lr_schedule: Learning-rate schedule.
    :param k_slots: K.
    :param num_slot_features: F.
    :param num_global_features: G.
    :param slot_hidden: Hidden sizes of the per-slot encoders.
    :param context_hidden: Width of the context layer (0: none).
    :param value_hidden: Hidden sizes of the value MLP.
    :param activation: Activation name (tanh, relu, elu).
    :param kwargs: Other `ActorCriticPolicy` arguments (log_std_init, ortho_init, ...).
    """

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        lr_schedule,
        k_slots: int,
        num_slot_features: int,
        num_global_features: int,
        slot_hidden: list[int] = (64, 64),
        context_hidden: int = 64,
        value_hidden: list[int] = (64,),
        activation: str = "tanh",
        **kwargs,
    ) -> None:
        if not isinstance(action_space, spaces.Box) or action_space.shape != (k_slots,):
            raise ValueError(
                f"SlotScorerPolicy needs a Box action space of shape ({k_slots},), got {action_space}"
            )
        expected = k_slots * num_slot_features + k_slots + num_global_features
        if observation_space.shape != (expected,):
            raise ValueError(
                f"SlotScorerPolicy: observation shape {observation_space.shape} does not match "
                f"K={k_slots}, F={num_slot_features}, G={num_global_features} (expected ({expected},))"
            )
        if kwargs.get("use_sde"):
            raise ValueError("SlotScorerPolicy does not support gSDE (use_sde=True)")
        self.k_slots = k_slots
        self.num_slot_features = num_slot_features
        self.num_global_features = num_global_features
        self.slot_hidden = list(slot_hidden)
        self.context_hidden = int(context_hidden)
        self.value_hidden = list(value_hidden)
        self.activation_name = activation
        super().__init__(
            observation_space,
            action_space,
            lr_schedule,
            net_arch=[],
            activation_fn=activation_class(activation),
            **kwargs,
        )

    def _build_mlp_extractor(self) -> None:
        self.mlp_extractor = SlotScorerNet(
            self.k_slots,
            self.num_slot_features,
            self.num_global_features,
            self.slot_hidden,
            self.context_hidden,
            self.value_hidden,
            self.activation_fn,
        )

    def _build(self, lr_schedule) -> None:
        # Replaces ActorCriticPolicy._build: the extractor already outputs one score per
        # slot, so the action head is the identity and one log std serves every slot.
        self._build_mlp_extractor()
        self.action_net = nn.Identity()
        self.log_std = nn.Parameter(torch.full((1,), float(self.log_std_init)))
        self.value_net = nn.Linear(self.mlp_extractor.latent_dim_vf, 1)
        if self.ortho_init:
            self.mlp_extractor.apply(partial(self.init_weights, gain=np.sqrt(2)))
            # Small initial scores: the first policy is close to "all slots equal".
            self.init_weights(self.mlp_extractor.score_head, gain=0.01)
            self.init_weights(self.value_net, gain=1.0)
        self.optimizer = self.optimizer_class(
            self.parameters(), lr=lr_schedule(1), **self.optimizer_kwargs
        )

    def _get_constructor_parameters(self) -> dict:
        data = super()._get_constructor_parameters()
        data.update(
            k_slots=self.k_slots,
            num_slot_features=self.num_slot_features,
            num_global_features=self.num_global_features,
            slot_hidden=self.slot_hidden,
            context_hidden=self.context_hidden,
            value_hidden=self.value_hidden,
            activation=self.activation_name,
        )
        data.pop("net_arch", None)
        data.pop("activation_fn", None)
        return data

    def slot_scores(self, obs: torch.Tensor) -> torch.Tensor:
        """Deterministic slot scores (the action mean, before clipping to the action space)."""
        return self.mlp_extractor.forward_actor(
            self.extract_features(obs, self.pi_features_extractor)
        )
