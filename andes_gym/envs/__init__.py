"""Gymnasium environments of andes_gym, registered with string entry points.

Importing this package imports neither vLLM nor torch: each entry point is loaded only
when `gymnasium.make` builds that environment.
"""

import gymnasium

# One flat list, like gymnasium's own registration.
gymnasium.register(
    id="andes_gym/Surrogate-v0",
    entry_point="andes_gym.envs.surrogate_env:SurrogateEnv",
)
gymnasium.register(
    id="andes_gym/VLLM-v0",
    entry_point="andes_gym.envs.vllm_env:VLLMEnv",
    # Token times are measured on a real engine: a seed fixes the workload, not the timing.
    nondeterministic=True,
)
