"""One local Ray for the test session (2 CPUs), for every test marked `ray`.

Import the fixture into a test module (`from ray_support import ray_local`). Ray starts on
first use and shuts down at the end of the session; a Ray the session already has (another
fixture, `ray.init` in a plugin) is reused and left running.

Ray is the `ray` extra (`pip install 'andes_gym[ray]'`). When it cannot be imported the
tests that need it fail with that message; they are skipped, with the reason, only when run
with `ANDES_GYM_SKIP_RAY=1` (as `ANDES_GYM_SKIP_VLLM` does for the live engine).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from andes_gym.agents.base import Policy

SKIP_RAY_VAR = "ANDES_GYM_SKIP_RAY"
RAY_TEST_CPUS = 2
TESTS_DIR = Path(__file__).resolve().parent


def require_ray_for_tests() -> None:
    """Fails (or, with ANDES_GYM_SKIP_RAY=1, skips) the calling test when Ray is missing."""
    try:
        import ray  # noqa: F401
    except ImportError as exc:
        if os.environ.get(SKIP_RAY_VAR) == "1":
            pytest.skip(f"Ray not importable and {SKIP_RAY_VAR}=1: {exc}")
        pytest.fail(
            f"Ray is not importable ({exc}); these tests need the `ray` extra "
            f"(pip install 'andes_gym[ray]'). Set {SKIP_RAY_VAR}=1 to skip them explicitly.",
            pytrace=False,
        )


@pytest.fixture(scope="session")
def ray_local():
    """The session's local Ray (2 CPUs); its workers can import modules of `tests/`."""
    require_ray_for_tests()
    import ray

    if ray.is_initialized():
        yield ray
        return
    path = os.pathsep.join(p for p in (str(TESTS_DIR), os.environ.get("PYTHONPATH")) if p)
    ray.init(
        num_cpus=RAY_TEST_CPUS,
        include_dashboard=False,
        runtime_env={"env_vars": {"PYTHONPATH": path}},
    )
    yield ray
    ray.shutdown()


class CrashingPolicy(Policy):
    """Kills its process when built: a Ray worker that dies under a cell (never run it in
    the test process)."""

    name = "crashing"

    def __init__(self) -> None:
        os._exit(3)

    def decide(self, candidates, capacity):  # pragma: no cover (never reached)
        raise AssertionError("unreachable")
