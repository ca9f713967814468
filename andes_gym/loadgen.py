"""Replay a workload against an OpenAI-compatible completions endpoint and score each stream's QoE.

Usage:
    python -m andes_gym.loadgen --base-url http://127.0.0.1:8000/v1 \\
        --workload bursty_2x_cpu --seed 0 --out runs/loadgen/fcfs [--num-requests 200]

Each request of the seeded workload is sent at its arrival time as a streaming completion
with the prompt as a list of token ids (drawn from the seed, below `--vocab-size`),
`max_tokens` = its output length, `ignore_eos` (so it generates exactly that many tokens),
`return_token_ids` (so every chunk says how many tokens it carries), and its QoE targets
in `vllm_xargs` (`ttft_s`, `tds_tok_s`; vLLM passes them to the scheduler hook as
`SamplingParams.extra_args`). The client timestamps every token when its chunk arrives and
computes each request's QoE in all variants with `andes_gym.qoe.qoe`, measured from the
request's scheduled arrival (so time a request waits for a client slot counts against it).
A request that errors or is still streaming when the time limit ends gets the lower bound
of docs/ANDES.md §1 (missing tokens delivered at the end of the window). Results:
`requests.csv` (per request), `summary.csv` / `summary.json` (`andes_gym.metrics` fields)
in `--out`, and a table on stdout. Preemptions are not visible to a client (reported NaN).

The load generator talks only to `--base-url`; `--max-concurrency` bounds open streams and
`--time-limit-s` the whole replay.

Serving with the hook (see also `python -m andes_gym.serve --help`):
    # CPU, tiny local model, an exported policy (or ANDES_GYM_POLICY=fcfs / andes):
    python -m andes_gym.serve --policy runs/<run>/policy.onnx --port 8000
    # which runs, with ANDES_GYM_POLICY set to the policy:
    python -m vllm.entrypoints.openai.api_server --model <tiny model dir> \\
        --load-format dummy --skip-tokenizer-init \\
        --scheduler-cls andes_gym.engine_bridge.hook.AndesGymScheduler \\
        --no-async-scheduling --gpu-memory-utilization 0.3 --port 8000 ...
    # GPU: the same with --model <a real model dir> and without --load-format dummy.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

# The package's names, re-exported: code and benchmarks import them from here.
from andes_gym.client.loadgen import (  # noqa: F401
    LoadgenResult,
    ServerUnreachableError,
    StreamRecord,
    format_summary,
    prompt_token_ids,
    replay,
    score,
    write_results,
)
from andes_gym.client.loadgen import load_replay_workload as _load_workload


def _bounded(kind: type, low: float, inclusive: bool = True):
    """An argparse type: a `kind` number >= `low` (> `low` when not `inclusive`)."""
    relation = ">=" if inclusive else ">"

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not (value >= low if inclusive else value > low) or value != value:
            raise argparse.ArgumentTypeError(f"must be {relation} {low:g}, got {text}")
        return value

    return parse


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m andes_gym.loadgen",
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--base-url",
        required=True,
        help="OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1",
    )
    parser.add_argument("--workload", required=True, help="workload preset name or YAML path")
    parser.add_argument("--seed", type=int, default=0, help="workload and prompt seed")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument(
        "--num-requests", type=_bounded(int, 1), help="send only the first N (>= 1) requests"
    )
    parser.add_argument(
        "--rate-scale",
        type=_bounded(float, 0, inclusive=False),
        default=1.0,
        help="arrivals this many times faster",
    )
    parser.add_argument("--model", help="model name (default: the first of GET /models)")
    parser.add_argument(
        "--vocab-size", type=_bounded(int, 2), default=512, help="prompt token ids are below this"
    )
    parser.add_argument(
        "--max-concurrency", type=_bounded(int, 1), default=256, help="most open streams at once"
    )
    parser.add_argument(
        "--time-limit-s",
        type=_bounded(float, 0, inclusive=False),
        default=600.0,
        help="wall-clock limit of the replay",
    )
    args = parser.parse_args(argv)
    try:
        workload = _load_workload(args.workload, args.seed, args.num_requests, args.rate_scale)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: workload {args.workload!r}: {exc}", file=sys.stderr)
        return 2
    print(
        f"replaying {len(workload)} requests of {args.workload!r} (seed {args.seed}) "
        f"against {args.base_url}"
    )
    try:
        result = replay(
            args.base_url,
            workload,
            seed=args.seed,
            model=args.model,
            vocab_size=args.vocab_size,
            max_concurrency=args.max_concurrency,
            time_limit_s=args.time_limit_s,
        )
    except (ServerUnreachableError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    write_results(result, args.out)
    print(format_summary(result.summary))
    print(f"saved {Path(args.out) / 'requests.csv'} and summary.csv")
    return 0 if result.summary["num_errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
