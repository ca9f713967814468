"""andes_gym: a reinforcement-learning gym for QoE-aware LLM serving schedulers.

Importing the package registers the environments (`andes_gym/Surrogate-v0`,
`andes_gym/VLLM-v0`) with Gymnasium; it imports neither torch nor vLLM.
"""

import andes_gym.envs  # noqa: F401  (registers the environments)

__version__ = "0.1.0"
