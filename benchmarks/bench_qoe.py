"""QoE accounting cost: vectorized tracker / closed-form predictor vs straightforward code.

Prints microseconds per call, measured side by side in one run, and their ratios:

- ``QoETracker.deliver`` (one token for each of B running requests, as a simulator does
  every iteration) vs a Python loop doing the same O(1) update per request;
- ``predict_qoe`` for N requests vs building each projected timeline explicitly and
  running the batch ``qoe()``.

Usage: ``python benchmarks/bench_qoe.py [--repeat 2000]``
"""

from __future__ import annotations

import argparse
import sys
import timeit
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import header, write_section  # noqa: E402

from andes_gym.qoe import QoETracker, predict_qoe, qoe


def _loop_deliver(rows: dict, idx: np.ndarray, t_s: float) -> None:
    """The per-request Python loop the tracker replaces (same O(1) update)."""
    for i in idx:
        r = rows[i]
        a = t_s if r["k"] == 0 else max(t_s, r["a"] + 1.0 / r["tds"])
        r["delay"] += max(a - (r["e1"] + r["k"] / r["tds"]), 0.0)
        r["sum_a"] += a
        r["a"] = a
        r["k"] += 1


def bench_deliver(batch: int, repeat: int) -> tuple[float, float]:
    rng = np.random.default_rng(0)
    n_total = 10_000
    tracker = QoETracker(capacity=n_total)
    arrival = rng.uniform(0.0, 1.0, n_total)
    tracker.add(arrival, 1.0, 4.0)
    rows = {
        i: {"k": 0, "a": 0.0, "tds": 4.0, "e1": arrival[i] + 1.0, "delay": 0.0, "sum_a": 0.0}
        for i in range(n_total)
    }
    idx = np.sort(rng.choice(n_total, batch, replace=False))
    clock = [2.0]

    def vectorized() -> None:
        clock[0] += 0.01
        tracker.deliver(idx, clock[0])

    def looped() -> None:
        clock[0] += 0.01
        _loop_deliver(rows, idx, clock[0])

    t_vec = timeit.timeit(vectorized, number=repeat) / repeat
    t_loop = timeit.timeit(looped, number=repeat) / repeat
    return t_vec, t_loop


def bench_predict(n: int, repeat: int) -> tuple[float, float]:
    rng = np.random.default_rng(1)
    tracker = QoETracker(capacity=n, record_token_times=True)
    arrival = rng.uniform(0.0, 10.0, n)
    ttft, tds = 1.0, rng.choice([3.2, 4.8], n)
    tracker.add(arrival, ttft, tds)
    for i in range(n):
        k = int(rng.integers(0, 50))
        tracker.deliver_many(i, np.sort(rng.uniform(arrival[i], 20.0, k)))
    state = tracker.state
    now_s, horizon_s, rate = 20.0, 21.0, rng.uniform(0.0, 8.0, n)
    times = [tracker.token_times(i) for i in range(n)]

    def closed_form() -> None:
        predict_qoe(state, now_s=now_s, horizon_s=horizon_s, rate_tok_s=rate)

    def explicit() -> None:
        for i in range(n):
            m = int(np.floor((horizon_s - now_s) * rate[i] + 1e-9))
            served = now_s + np.arange(1, m + 1) / rate[i] if m else np.empty(0)
            due = max(int(np.floor((horizon_s - arrival[i] - ttft) * tds[i] + 1e-9)) + 1, 0)
            p = max(due - times[i].size - m, 0)
            tl = np.r_[times[i], served, np.full(p, horizon_s)]
            if tl.size:
                qoe(np.sort(tl), arrival=arrival[i], ttft=ttft, tds=tds[i])

    t_closed = timeit.timeit(closed_form, number=repeat) / repeat
    t_explicit = timeit.timeit(explicit, number=max(repeat // 50, 3)) / max(repeat // 50, 3)
    return t_closed, t_explicit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=2000, help="calls timed per case")
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    args = parser.parse_args()
    repeat = 200 if args.quick else args.repeat
    lines = header("QoE tracker and predictor (benchmarks/bench_qoe.py)")
    lines += [
        "Microseconds per call; the baseline is a Python loop over requests (deliver) or",
        "building each projected timeline explicitly and scoring it with `qoe()` (predict).",
        "",
        "| case | vectorized (us) | baseline (us) | speed-up |",
        "|---|---|---|---|",
    ]
    for batch in (8, 64, 256):
        t_vec, t_loop = bench_deliver(batch, repeat)
        lines.append(
            f"| deliver B={batch} | {t_vec * 1e6:.1f} | {t_loop * 1e6:.1f} | {t_loop / t_vec:.1f}x |"
        )
    for n in (16, 128, 1024):
        t_closed, t_explicit = bench_predict(n, repeat)
        lines.append(
            f"| predict_qoe N={n} | {t_closed * 1e6:.1f} | {t_explicit * 1e6:.1f} "
            f"| {t_explicit / t_closed:.1f}x |"
        )
    write_section("qoe", lines)


if __name__ == "__main__":
    main()
