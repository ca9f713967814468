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
