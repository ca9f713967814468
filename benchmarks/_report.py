"""Shared header and output for benchmark sections (date, machine, commit, command)."""

from __future__ import annotations

import datetime as dt
import os
import platform
import subprocess
import sys
from pathlib import Path

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def header(title: str) -> list[str]:
    """Markdown lines opening a section: title, date, machine, commit, the command."""
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            cwd=Path(__file__).parent,
        ).stdout.strip()
    except OSError:
        rev = "unknown"
    cmd = " ".join(["python", *[Path(sys.argv[0]).as_posix(), *sys.argv[1:]]])
    return [
        f"## {title}",
        "",
        f"- Date: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M UTC}",
        f"- Machine: {platform.system()} {platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}; load average {os.getloadavg()[0]:.2f}",
        f"- Commit: {rev or 'unknown'}",
        f"- Command: `{cmd}`",
        "",
    ]


def write_section(name: str, lines: list[str]) -> Path:
    """Prints the section and saves it as benchmarks/results/<name>.md."""
    text = "\n".join(lines).rstrip() + "\n"
    print(text)
    RESULTS_DIR.mkdir(exist_ok=True)
    path = RESULTS_DIR / f"{name}.md"
    path.write_text(text)
    return path
