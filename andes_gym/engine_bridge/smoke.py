"""The scheduler hook in serving mode on this machine's vLLM: a burst of requests, a report.

`run_smoke` builds an `LLMEngine` with `scheduler_cls=SERVE_SCHEDULER` (so the hook reads
`ANDES_GYM_POLICY` / `ANDES_GYM_HOOK_CONFIG` exactly as under `vllm serve`), submits a burst
of requests with random prompts and exact output lengths (every other one without QoE
targets, to exercise the defaults), runs the engine until all finish, releases it, and
reports: whether every request got exactly its tokens, the hook's preemptions,
interventions, fallbacks and failure kinds, mean QoE, and the threads and child processes
left after release. The command is `python -m andes_gym.smoke`.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from andes_gym.engine_bridge.engine import create_engine, release_engine
from andes_gym.engine_bridge.runtime import SERVE_SCHEDULER


def run_smoke(
    engine: Any = "cpu_live",
    num_requests: int = 48,
    seed: int = 0,
    ttft_s: float = 0.05,
    tds_tok_s: float = 100.0,
) -> dict:
    """Runs a burst of requests through the hook in serving mode.

    Args:
        engine: Live engine config (name, path, dict or `LiveEngineConfig`).
        num_requests: Requests in the burst.
        seed: Seeds prompts and lengths.
        ttft_s: TTFT target of the requests that carry targets.
        tds_tok_s: TDS target of the requests that carry targets.

    Returns:
        The report (JSON-serializable).
    """
    import psutil  # installed with vLLM

    threads_before = {t.ident for t in threading.enumerate()}
    handle = create_engine(engine, scheduler_cls=SERVE_SCHEDULER)
    try:
        report = _run_burst(handle, num_requests, seed, ttft_s, tds_tok_s)
    finally:
        release_engine(handle)
    report["threads_left"] = sorted(
        t.name for t in threading.enumerate() if t.ident not in threads_before
    )
    report["children_left"] = [p.pid for p in psutil.Process().children(recursive=True)]
    return report


def _run_burst(handle: Any, num_requests: int, seed: int, ttft_s: float, tds_tok_s: float):
    """Submits the burst, runs it to completion and reports (the engine stays up)."""
    from vllm import SamplingParams, TokensPrompt
    from vllm.sampling_params import RequestOutputKind

    cfg = handle.config
    rng = np.random.default_rng(seed)
    max_prompt = max(cfg.max_model_len // 4, 2)
    prompt_tokens = rng.integers(1, max_prompt, num_requests)
    output_tokens = rng.integers(8, max(cfg.max_model_len // 8, 9), num_requests)
    eng = handle.engine
    for i in range(num_requests):
        extra = {"ttft_s": ttft_s, "tds_tok_s": tds_tok_s} if i % 2 == 0 else None
        params = SamplingParams(
            max_tokens=int(output_tokens[i]),
            ignore_eos=True,
            temperature=0.0,
            detokenize=False,
            output_kind=RequestOutputKind.DELTA,
            extra_args=extra,
        )
        ids = rng.integers(1, handle.vocab_size, int(prompt_tokens[i])).tolist()
        eng.add_request(str(i), TokensPrompt(prompt_token_ids=ids), params)
    received = np.zeros(num_requests, dtype=np.int64)
    steps = 0
    while eng.has_unfinished_requests():
        for out in eng.step():
            received[int(out.request_id)] += len(out.outputs[0].token_ids)
        steps += 1
    runtime = handle.scheduler.andes_gym
    runner = runtime.runner
    ledger = runtime.ledger
    finished = np.flatnonzero(ledger.finished)
    report = {
        "policy": runtime.config.policy,
        "num_requests": num_requests,
        "engine_steps": steps,
        "exact_lengths": bool(np.array_equal(received, output_tokens)),
        "ledger_exact": bool(np.array_equal(ledger.num_tokens, output_tokens)),
        "num_finished": int(len(finished)),
        "mean_qoe": float(ledger.tracker.qoe(finished).mean()) if len(finished) else None,
        "preemptions": int(ledger.num_preemptions.sum()),
        "interventions": runtime.num_interventions,
        "decisions": runner.num_decisions,
        "fallbacks": runner.num_fallbacks,
        "failures": dict(runner.failures),
        "decision_ms_p50": float(np.median(runner.decision_ms)) if runner.decision_ms else None,
    }
    return report
