"""Provenance of a board (date, machine, commit, command) and the published LEADERBOARD.md.

`LEADERBOARD.md` holds one generated section per suite between marker comments; publishing
a suite replaces only its own section, so hand-written text (the submission template) and
other suites' sections stay as they are.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import re
import shlex
import subprocess
import sys
from pathlib import Path


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_description() -> str:
    """E.g. `Linux 6.1 x86_64, 2 CPUs (AMD EPYC ...), Python 3.11.7`."""
    return (
        f"{platform.system()} {platform.release()} {platform.machine()}, "
        f"{os.cpu_count()} CPUs ({_cpu_model()}), Python {platform.python_version()}"
    )


def git_commit(repo: Path | None = None) -> str:
    """Short commit hash, with `+dirty` when the working tree has changes; "unknown" without git."""
    # The checkout this package was imported from (an editable install), unless given.
    repo = Path(__file__).resolve().parents[2] if repo is None else repo
    try:
        head = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
        status = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + ("+dirty" if status else "")


def command_line(argv: list[str] | None = None) -> str:
    """The command that reproduces this run (`python -m andes_gym.leaderboard ...`)."""
    args = sys.argv[1:] if argv is None else argv
    return "python -m andes_gym.leaderboard " + shlex.join(args)


def provenance(argv: list[str] | None = None) -> dict[str, str]:
    """Date (UTC), machine, commit and command of this run."""
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine_description(),
        "commit": git_commit(),
        "command": command_line(argv),
    }


def _markers(suite: str) -> tuple[str, str]:
    return (f"<!-- BEGIN GENERATED: {suite} -->", f"<!-- END GENERATED: {suite} -->")


def replace_section(text: str, suite: str, body: str) -> str:
    """`text` with the generated section of `suite` replaced by `body` (appended if absent).

    A new section is inserted before a `## Submitting` heading when there is one.
    """
    begin, end = _markers(suite)
    block = f"{begin}\n{body.rstrip()}\n{end}"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.DOTALL)
    if pattern.search(text):
        return pattern.sub(lambda _: block, text, count=1)
    anchor = text.find("\n## Submitting")
    if anchor >= 0:
        return text[: anchor + 1] + block + "\n\n" + text[anchor + 1 :]
    return text.rstrip() + "\n\n" + block + "\n"


def publish(path: Path, suite: str, body: str) -> None:
    """Writes `body` as the generated section of `suite` in the board file at `path`."""
    text = path.read_text() if path.is_file() else "# andes_gym leaderboard\n"
    path.write_text(replace_section(text, suite, body))
