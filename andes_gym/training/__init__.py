"""The pieces of `python -m andes_gym.train`: config, policy network, callbacks, checkpoints.

Importing this package imports nothing heavy; each module pulls in torch or
stable-baselines3 only when it needs them.
"""
