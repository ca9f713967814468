"""Scaling out: Ray-based training, boards and sweeps (heavy imports live in submodules)."""
