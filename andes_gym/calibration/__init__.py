"""Pieces of the calibrator and the fidelity benchmark: fitting, profiling, comparison."""
