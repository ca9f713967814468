"""Asking a policy for a decision inside a serving engine, with a FCFS fallback.

A serving engine must not die of a bad policy: a policy that raises, returns non-finite
scores or scores of the wrong shape, or a decision that breaks the invariants of
`check_decision`, gets one clear error log per kind of failure (then a reminder at 10,
100, 1000, ... occurrences), and that step is scheduled by FCFS. The environments, by
contrast, let such errors propagate.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, deque

from andes_gym.agents.base import Policy
from andes_gym.core.candidates import Candidates, Capacity
from andes_gym.core.selection import Decision, InvalidDecision, check_decision

logger = logging.getLogger("andes_gym.hook")


def failure_kind(exc: BaseException) -> str:
    """A short name of a policy failure, the unit of once-per-kind logging."""
    if isinstance(exc, InvalidDecision):
        text = str(exc)
        if "not finite" in text:
            return "non-finite scores"
        if "shape" in text:
            return "scores or decision of the wrong shape"
        return "invalid decision"
    return f"policy raised {type(exc).__name__}"


class PolicyRunner:
    """Runs a policy with the checks and the fallback of serving mode.

    Args:
        policy: The configured policy.
        fallback: The policy used when the configured one fails (FCFS).
        keep_timings: How many recent decision times to keep.
    """

    def __init__(self, policy: Policy, fallback: Policy, keep_timings: int = 10_000) -> None:
        self.policy = policy
        self.fallback = fallback
        self.failures: Counter[str] = Counter()
        self.num_decisions = 0
        self.num_fallbacks = 0
        self.decision_ms: deque[float] = deque(maxlen=keep_timings)

    def decide(self, candidates: Candidates, capacity: Capacity) -> Decision | None:
        """The policy's checked decision, FCFS's if the policy fails, None if both fail.

        None means: leave this step to vLLM's own scheduling.
        """
        self.num_decisions += 1
        start = time.perf_counter()
        try:
            decision = self.policy.decide(candidates, capacity)
            check_decision(decision, candidates, capacity)
            return decision
        except Exception as exc:  # noqa: BLE001 (any policy bug must not stop serving)
            self.num_fallbacks += 1
            self._report(exc, self.policy)
        finally:
            self.decision_ms.append((time.perf_counter() - start) * 1e3)
        try:
            decision = self.fallback.decide(candidates, capacity)
            check_decision(decision, candidates, capacity)
            return decision
        except Exception as exc:  # noqa: BLE001
            self._report(exc, self.fallback)
            return None

    def _report(self, exc: BaseException, policy: Policy) -> None:
        kind = f"{policy.name or type(policy).__name__}: {failure_kind(exc)}"
        self.failures[kind] += 1
        count = self.failures[kind]
        if count == 1:
            logger.error(
                "andes_gym hook: policy %r failed (%s: %s); this step is scheduled by FCFS, "
                "serving goes on. Further failures of this kind are counted, not logged.",
                policy.name,
                type(exc).__name__,
                exc,
                exc_info=exc,
            )
        elif _is_power_of_ten(count):
            logger.error("andes_gym hook: %s happened %d times so far", kind, count)


def _is_power_of_ten(n: int) -> bool:
    while n % 10 == 0 and n > 1:
        n //= 10
    return n == 1
