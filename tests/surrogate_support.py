"""Shared fixtures of the surrogate tests."""

TINY_LINEAR_PROFILE = {
    "name": "tiny",
    "kv": {"num_blocks": 16, "block_size": 4},
    "limits": {"max_num_seqs": 4, "max_num_batched_tokens": 16, "max_model_len": 64},
    "latency": {
        "kind": "linear",
        "base_s": 0.01,
        "per_prefill_token_s": 0.001,
        "per_decode_seq_s": 0.002,
        "per_context_token_s": 0.0001,
    },
    "preemption": {"mode": "recompute"},
}


def contended(n: int = 120, rate_rps: float = 400.0, max_output: int = 160) -> dict:
    """A ShareGPT-like workload config dense enough to contend for a small engine."""
    return {
        "name": "contended",
        "num_requests": n,
        "arrivals": {"kind": "gamma", "rate_rps": rate_rps, "cv": 3.0},
        "lengths": {
            "kind": "sharegpt",
            "scale": 0.2,
            "max_prompt_tokens": 200,
            "max_output_tokens": max_output,
        },
        "targets": {"kind": "reading", "time_scale": 0.02},
    }
