"""`andes-gym COMMAND ...`: the one entry point dispatching to `python -m andes_gym.COMMAND`."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys

import pytest

from andes_gym import cli

HEAVY = ("torch", "stable_baselines3", "vllm", "numba", "ray", "onnxruntime", "matplotlib")


def test_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for name in cli.COMMANDS:
        assert f"\n  {name} " in out, name


def test_every_command_is_a_module_with_main():
    for name in cli.COMMANDS:
        assert callable(importlib.import_module(f"andes_gym.{name}").main), name


@pytest.mark.parametrize("command", ["export", "leaderboard"])
def test_a_command_help_is_the_command_own(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main([command, "--help"])
    assert exit_info.value.code == 0
    assert f"usage: python -m andes_gym.{command}" in capsys.readouterr().out


def test_arguments_are_passed_on_and_the_status_returned(tmp_path, capsys):
    # A missing run directory: the export command's own error and exit status.
    assert cli.main(["export", str(tmp_path / "no_run"), "--out", str(tmp_path / "p.onnx")]) == 2
    assert "error:" in capsys.readouterr().err


def test_unknown_or_missing_command_is_a_usage_error(capsys):
    for argv in ([], ["no_such_command"]):
        with pytest.raises(SystemExit) as exit_info:
            cli.main(argv)
        assert exit_info.value.code == 2
    assert "COMMAND" in capsys.readouterr().err


def test_help_imports_nothing_heavy():
    script = (
        "import json, sys\n"
        "from andes_gym import cli\n"
        "try:\n"
        "    cli.main(['--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=120
    )
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == []
