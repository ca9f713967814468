"""Training with stable-baselines3: `run.run_training` (what `python -m andes_gym.train` runs),
its config, policy network, callbacks, checkpoints, final evaluation and ONNX export.

Importing this package imports nothing heavy; `checkpoint`, `callbacks`, `progress` and
`policy_net` import torch or stable-baselines3, and the other modules import those only
when a run starts.
"""
