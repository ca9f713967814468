"""Scheduling policies: baselines, the Andes knapsack, and learned policies."""

from andes_gym.agents.base import Policy, ScoringPolicy
from andes_gym.agents.registry import make_policy, policy_class, register, registered_policies

__all__ = [
    "Policy",
    "ScoringPolicy",
    "make_policy",
    "policy_class",
    "register",
    "registered_policies",
]
