"""The run's stable-baselines3 logger: TensorBoard events and `progress.csv`, kept across resumes.

SB3's own CSV writer truncates `progress.csv` when it opens it, so a resumed run would lose
every row of its earlier sessions; `AppendingCSVOutputFormat` continues the file instead.
"""

from __future__ import annotations

import csv
from pathlib import Path

from stable_baselines3.common.logger import CSVOutputFormat, Logger, make_output_format

LOG_DIR = "tb"
PROGRESS_FILE = "progress.csv"


class AppendingCSVOutputFormat(CSVOutputFormat):
    """SB3's CSV output that continues an existing file (its header and rows) instead of truncating it.

    Args:
        filename: The CSV file; created when missing.
    """

    def __init__(self, filename: str | Path) -> None:
        path = Path(filename)
        existing = path.read_text() if path.is_file() else ""
        # SB3 rewrites the file in place (seek(0) and write) when a new column appears; the
        # rewritten text only ever grows, so "r+" without truncation is safe for it.
        self.file = path.open("r+" if existing else "w+")
        header = next(csv.reader([existing.splitlines()[0]]), []) if existing else []
        self.keys = [key for key in header if key]
        self.separator = ","
        self.quotechar = '"'
        self.file.seek(0, 2)
        if existing and not existing.endswith("\n"):  # a row cut short by a crash
            self.file.write("\n")


def make_logger(run_dir: str | Path, verbose: int = 0) -> Logger:
    """The SB3 logger of a run: TensorBoard and `progress.csv` under `tb/` (+ stdout when verbose)."""
    folder = Path(run_dir) / LOG_DIR
    folder.mkdir(parents=True, exist_ok=True)
    formats = [
        make_output_format("tensorboard", str(folder)),
        AppendingCSVOutputFormat(folder / PROGRESS_FILE),
    ]
    if verbose > 0:
        formats.append(make_output_format("stdout", str(folder)))
    return Logger(folder=str(folder), output_formats=formats)
