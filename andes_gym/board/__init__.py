"""Leaderboard machinery: suites, cells, parallel runner, capacity bisection, reports, plots.

`leaderboard.run_board` runs one board; the command-line entry point is `andes_gym.leaderboard`.
"""
