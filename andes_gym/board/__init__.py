"""Leaderboard machinery: suites, cells, parallel runner, capacity bisection, reports, plots.

The command-line entry point is `andes_gym.leaderboard`.
"""
