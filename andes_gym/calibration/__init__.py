"""The calibrator and the fidelity benchmark: profiling a live engine, fitting, comparing.

`calibrate.calibrate` fits an engine profile to a live vLLM engine (`python -m
andes_gym.calibrate`); `fidelity.run_fidelity` measures how well the surrogate reproduces
it (`python -m andes_gym.fidelity`).
"""
