"""Checks the scheduler hook in serving mode on this machine's vLLM; prints a JSON report.

    ANDES_GYM_POLICY=andes python -m andes_gym.smoke --engine cpu_live --requests 64

Runs `andes_gym.engine_bridge.smoke.run_smoke`: a burst of requests through an `LLMEngine`
whose scheduler is the hook in serving mode (configured by `ANDES_GYM_POLICY` /
`ANDES_GYM_HOOK_CONFIG`, as under `vllm serve`), and prints one line,
`ANDES_GYM_SMOKE {json}`: exact token counts, the hook's preemptions, interventions,
fallbacks and failure kinds, mean QoE, and the threads and child processes left after
the engine was released.
"""

from __future__ import annotations

import argparse
import json

from andes_gym.engine_bridge.smoke import run_smoke


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m andes_gym.smoke", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--engine", default="cpu_live", help="live engine config name or path")
    parser.add_argument("--requests", type=int, default=48, help="requests in the burst")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    report = run_smoke(args.engine, args.requests, args.seed)
    print("ANDES_GYM_SMOKE " + json.dumps(report, sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
