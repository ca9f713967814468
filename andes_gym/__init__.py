"""andes_gym: a reinforcement-learning gym for QoE-aware LLM serving schedulers."""

__version__ = "0.1.0"
