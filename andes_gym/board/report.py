"""Leaderboard outputs: results.json, CSVs, and the Markdown ranking and capacity tables.

Every output file is written atomically (a temporary file in the same directory, then
`os.replace`), so a reader, or a board killed mid-write, never leaves a torn file; and a
board holds `lock_out_dir` on its output directory while it runs, so two boards never
write into one `--out`.
"""

from __future__ import annotations

import csv
import json
import math
import os
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import TextIO

from andes_gym.board.capacity import CapacityOutcome
from andes_gym.board.cells import RESULT_FIELDS, ROW_KEYS, sort_key
from andes_gym.board.stats import mean_ci

ROW_FIELDS = (*ROW_KEYS, *RESULT_FIELDS, "error")
ORACLE_MARK = "†"
POINT_FIELDS = (
    "search",
    "policy",
    "parameter",
    "load",
    "seed",
    "status",
    "mean_qoe",
    "mean_qoe_fixed",
)


def _clean(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def result_rows(records: Iterable[dict]) -> list[dict]:
    """One row per cell with `ROW_FIELDS` (failed cells keep their error), merge-sorted."""
    rows = []
    for rec in records:
        summary = rec.get("summary") or {}
        row = {k: rec.get(k) for k in ROW_KEYS}
        row.update({k: _clean(summary.get(k)) for k in RESULT_FIELDS})
        row["error"] = rec.get("error", "")
        rows.append(row)
    return sorted(rows, key=sort_key)


LOCK_NAME = ".lock"


class BoardLockedError(RuntimeError):
    """Another leaderboard run holds the output directory."""


@contextmanager
def lock_out_dir(out: Path) -> Iterator[None]:
    """Holds an exclusive lock on `out` (the file `out/.lock`) for a board's whole run.

    A non-blocking `fcntl.flock`: the lock goes with the process (released when it ends,
    even if killed), and the file keeps the holder's pid for the error message. Where
    `fcntl` does not exist (Windows), no lock is taken.

    Raises:
        BoardLockedError: When another process (or another board in this one) holds it,
            naming the directory and the holder's pid.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover (not POSIX)
        yield
        return
    path = Path(out) / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            raise BoardLockedError(
                f"{out} is in use by another leaderboard run (pid {holder}, lock file {path}); "
                "wait for it to end or choose another --out"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


@contextmanager
def atomic_open(path: Path) -> Iterator[TextIO]:
    """A text file that replaces `path` only once it is completely written.

    Writes to a uniquely named temporary file beside `path` and `os.replace`s it onto
    `path` when the block ends without an error (else removes it), so a reader sees the
    old file or the new one, never a part.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with tmp.open("x", newline="", encoding="utf-8") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text(path: Path, text: str) -> None:
    """`path.write_text(text)`, atomically (`atomic_open`)."""
    with atomic_open(path) as f:
        f.write(text)


def write_json(path: Path, data) -> None:
    """Standard JSON (no NaN: non-finite numbers are written as null), atomically."""
    write_text(path, json.dumps(data, indent=1, sort_keys=False, allow_nan=False) + "\n")


def write_csv(path: Path, rows: Sequence[dict], fields: Sequence[str]) -> None:
    """A CSV with `fields` as header; None is written as an empty cell (atomically)."""
    with atomic_open(path) as f:
        writer = csv.DictWriter(f, fieldnames=list(fields), extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if row.get(k) is None else row.get(k) for k in fields})


def write_requests_csv(path: Path, records: Iterable[dict]) -> int:
    """Per-request metrics of every OK cell, keyed by policy, workload, seed; returns rows.

    Written atomically (`atomic_open`).
    """
    columns: list[str] | None = None
    count = 0
    with atomic_open(path) as f:
        writer = csv.writer(f)
        for rec in sorted(records, key=sort_key):
            reqs = rec.get("requests") or {}
            if rec.get("status") != "ok" or not reqs:
                continue
            if columns is None:
                columns = list(reqs)
                writer.writerow(["policy", "workload", "seed", *columns])
            n = len(reqs["request_id"])
            for i in range(n):
                values = []
                for c in columns:
                    v = _clean(reqs[c][i])
                    values.append("" if v is None else v)
                writer.writerow([rec["policy"], rec["workload"], rec["seed"], *values])
            count += n
        if columns is None:
            writer.writerow(["policy", "workload", "seed"])
    return count


def capacity_rows(outcomes: Iterable[CapacityOutcome]) -> list[dict]:
    """Capacity outcomes as JSON-able dicts, sorted by search and policy."""
    rows = []
    for out in outcomes:
        row = asdict(out)
        row = {k: _clean(v) for k, v in row.items()}
        row["evaluations"] = [[x, _clean(q)] for x, q in out.evaluations]
        rows.append(row)
    return sorted(rows, key=lambda r: (r["search"], r["policy"]))


# ----------------------------------------------------------------------------- Markdown
def _fmt(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{value:.{digits}f}"


def _fmt_ci(values: list, digits: int = 3) -> str:
    ci = mean_ci(values)
    if ci.n == 0:
        return "n/a"
    if not math.isfinite(ci.half_width):
        return f"{ci.mean:.{digits}f}"
    return f"{ci.mean:.{digits}f} ± {ci.half_width:.{digits}f}"


def _mean(values: list):
    ci = mean_ci(values)
    return ci.mean if ci.n else None


RANK_HEADER = (
    "rank",
    "policy",
    "mean QoE (95% CI)",
    "mean QoE fixed (95% CI)",
    "p10 QoE",
    "QoE ≥ 0.95",
    "TTFT p50 (s)",
    "TTFT p90 (s)",
    "throughput (tok/s)",
    "preempt./req",
    "decision p50 (ms)",
    "seeds",
)


def _policy_cell(policy: str, oracle: bool) -> str:
    return f"{policy} {ORACLE_MARK}" if oracle else policy


def _rank_rows(rows: list[dict]) -> list[list[str]]:
    by_policy: dict[str, list[dict]] = {}
    for row in rows:
        by_policy.setdefault(row["policy"], []).append(row)
    ranked, failed = [], []
    for policy, group in by_policy.items():
        ok = [r for r in group if r["status"] == "ok"]
        if len(ok) < len(group):
            failed.append((policy, group, len(group) - len(ok)))
            continue
        ranked.append((_mean([r["mean_qoe"] for r in ok]), policy, group))
    ranked.sort(key=lambda t: (-(t[0] if t[0] is not None else -1.0), t[1]))
    table = []
    for rank, (_, policy, group) in enumerate(ranked, start=1):

        def col(name: str, g=group) -> list:
            return [r[name] for r in g]

        table.append(
            [
                str(rank),
                _policy_cell(policy, bool(group[0]["oracle"])),
                _fmt_ci(col("mean_qoe")),
                _fmt_ci(col("mean_qoe_fixed")),
                _fmt(_mean(col("p10_qoe"))),
                _fmt(_mean(col("frac_qoe_ge_095"))),
                _fmt(_mean(col("ttft_p50_s")), 2),
                _fmt(_mean(col("ttft_p90_s")), 2),
                _fmt(_mean(col("throughput_tok_s")), 1),
                _fmt(_mean(col("preemptions_per_request")), 2),
                _fmt(_mean(col("decision_ms_p50")), 3),
                str(len(group)),
            ]
        )
    for policy, group, num_failed in sorted(failed, key=lambda t: t[0]):
        marker = f"FAILED ({num_failed}/{len(group)} seeds)"
        cells = ["-", _policy_cell(policy, bool(group[0]["oracle"])), marker]
        table.append(cells + ["-"] * (len(RANK_HEADER) - len(cells) - 1) + [str(len(group))])
    return table


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]], num_left: int = 2) -> str:
    """A GitHub Markdown table: the first `num_left` columns left-aligned, the rest right."""
    align = ["---" if i < num_left else "---:" for i in range(len(header))]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def ranking_markdown(rows: Sequence[dict], workload_order: Sequence[str]) -> str:
    """One ranking table per workload (policies by mean QoE over seeds, best first)."""
    parts = []
    for workload in workload_order:
        group = [r for r in rows if r["workload"] == workload]
        if not group:
            continue
        seeds = sorted({r["seed"] for r in group})
        parts.append(f"### {workload}\n\nseeds: {', '.join(map(str, seeds))}\n")
        parts.append(markdown_table(RANK_HEADER, _rank_rows(group)) + "\n")
    if any(r["oracle"] for r in rows):
        parts.append(
            f"{ORACLE_MARK} oracle: the policy reads every request's true output length, "
            "which no deployable scheduler knows; an upper reference, not a competitor.\n"
        )
    parts.append(
        "Mean QoE is the paper's delay form; the fixed variant is monotone in every "
        "token's delay (docs/ANDES.md §1). 95% CI: Student t over seeds (one value per seed).\n"
    )
    return "\n".join(parts)


CAPACITY_HEADER = ("search", "parameter", "policy", "capacity", "bracket", "QoE kept", "note")


def capacity_markdown(outcomes: Sequence[CapacityOutcome]) -> str:
    """The capacity table: highest load keeping mean QoE >= threshold, per policy."""
    rows = []
    ordered = sorted(
        outcomes,
        key=lambda o: (o.search, -(o.capacity if o.capacity is not None else -1.0), o.policy),
    )
    for out in ordered:
        if out.censored == "failed":
            value, bracket, note = "FAILED", "-", out.error.splitlines()[0][:120]
        elif out.censored == "below_range":
            value, bracket, note = (
                f"< {out.low:g}",
                "-",
                "misses the threshold at the range's low end",
            )
        elif out.censored == "above_range":
            value, bracket, note = (
                f"≥ {out.high:g}",
                "-",
                "meets the threshold at the range's high end",
            )
        else:
            value = f"{out.capacity:.3g}"
            bracket, note = f"[{out.low:.3g}, {out.high:.3g})", ""
        rows.append(
            [
                out.search,
                out.parameter,
                _policy_cell(out.policy, out.oracle),
                value,
                bracket,
                f"{out.qoe_field} ≥ {out.threshold:g}",
                note,
            ]
        )
    return markdown_table(CAPACITY_HEADER, rows, num_left=3) + "\n"


def failures_markdown(rows: Sequence[dict], capacity_points: Sequence[dict] = ()) -> str:
    """The failed cells with their errors (empty string when there are none)."""
    failed = [r for r in rows if r["status"] != "ok"]
    lines = [
        f"- `{r['workload']}` / `{r['policy']}` / seed {r['seed']}: "
        f"{(r['error'] or '').splitlines()[0][:300] if r['error'] else 'failed'}"
        for r in failed
    ]
    cap_failed = [p for p in capacity_points if p["status"] != "ok"]
    if cap_failed:
        lines.append(f"- capacity searches: {len(cap_failed)} failed cell(s), see capacity.json")
    if not lines:
        return ""
    return "### Failed cells\n\n" + "\n".join(lines) + "\n"
