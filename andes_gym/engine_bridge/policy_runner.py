"""Asking a policy for a decision inside a serving engine, with a FCFS fallback.

A serving engine must not die of, nor stall on, a bad policy. FCFS schedules the step
instead of the policy (a *fallback*) when the policy:

- raises anything but `KeyboardInterrupt` (`SystemExit` and other `BaseException`s
  included: a policy must not end the server);
- returns a decision that breaks `check_decision`: non-finite scores or scores of the
  wrong shape, the KV capacity or the batch limit exceeded, or an empty selection while
  a candidate would fit (nothing would run: serving would starve);
- returns after its time budget (`decision_budget_ms`).

The budget is measured, not enforced: `decide()` runs to its end on the engine's thread
(no thread pre-empts it; the engine waits for it), and a decision that comes back late is
discarded for FCFS's. So a policy that takes seconds still delays its step by seconds;
the budget keeps a slow policy from shaping the schedule, and the counters and the log
say it happened.

Each kind of failure gets one clear error log (then a reminder at 10, 100, 1000, ...
occurrences); fallbacks are counted by reason in `fallbacks_by_reason`. The environments,
by contrast, let such errors propagate.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, deque
from collections.abc import Callable

from andes_gym.agents.base import Policy
from andes_gym.core.candidates import Candidates, Capacity
from andes_gym.core.selection import Decision, InvalidDecision, check_decision

logger = logging.getLogger("andes_gym.hook")

# Why a step fell back to FCFS (the keys of `PolicyRunner.fallbacks_by_reason`).
RAISED = "raised"
INVALID = "invalid_decision"
EMPTY = "empty_selection"
OVER_BUDGET = "over_budget"
FALLBACK_REASONS = (RAISED, INVALID, EMPTY, OVER_BUDGET)


def failure_kind(exc: BaseException) -> str:
    """A short name of a policy failure, the unit of once-per-kind logging."""
    if isinstance(exc, InvalidDecision):
        text = str(exc)
        if "not finite" in text:
            return "non-finite scores"
        if "shape" in text:
            return "scores or decision of the wrong shape"
        if "selects nothing" in text:
            return "empty selection"
        return "invalid decision"
    return f"policy raised {type(exc).__name__}"


def fallback_reason(exc: BaseException) -> str:
    """The `FALLBACK_REASONS` entry of a policy failure."""
    if not isinstance(exc, InvalidDecision):
        return RAISED
    return EMPTY if "selects nothing" in str(exc) else INVALID


class PolicyRunner:
    """Runs a policy with the checks, the time budget and the fallback of serving mode.

    Args:
        policy: The configured policy.
        fallback: The policy used when the configured one fails (FCFS).
        decision_budget_ms: Longest a decision may take, in milliseconds; a later one is
            discarded for the fallback's (measured after the fact, see the module
            docstring). None: no budget.
        keep_timings: How many recent decision times to keep.
        clock: Seconds on a monotonic clock (tests pass a fake one).
    """

    def __init__(
        self,
        policy: Policy,
        fallback: Policy,
        decision_budget_ms: float | None = None,
        keep_timings: int = 10_000,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.policy = policy
        self.fallback = fallback
        self.decision_budget_ms = decision_budget_ms
        self.clock = clock
        self.failures: Counter[str] = Counter()
        self.fallbacks_by_reason: Counter[str] = Counter({r: 0 for r in FALLBACK_REASONS})
        self.num_decisions = 0
        self.num_fallbacks = 0
        self.decision_ms: deque[float] = deque(maxlen=keep_timings)

    def decide(self, candidates: Candidates, capacity: Capacity) -> Decision | None:
        """The policy's checked, timely decision; FCFS's if it fails; None if both fail.

        None means: leave this step to vLLM's own scheduling.

        Raises:
            KeyboardInterrupt: Passed on (the operator stops the server).
        """
        self.num_decisions += 1
        start = self.clock()
        decision = None
        try:
            decision = self.policy.decide(candidates, capacity)
            check_decision(decision, candidates, capacity)
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # noqa: BLE001 (no policy bug may stop serving)
            decision = None
            self._fall_back(fallback_reason(exc))
            self._report(exc, self.policy)
        finally:
            elapsed_ms = (self.clock() - start) * 1e3
            self.decision_ms.append(elapsed_ms)
        budget = self.decision_budget_ms
        if decision is not None and budget is not None and elapsed_ms > budget:
            decision = None
            self._fall_back(OVER_BUDGET)
            self._report_late(elapsed_ms, budget)
        if decision is not None:
            return decision
        try:
            decision = self.fallback.decide(candidates, capacity)
            check_decision(decision, candidates, capacity)
            return decision
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # noqa: BLE001
            self._report(exc, self.fallback)
            return None

    def stats(self) -> dict:
        """Decisions, fallbacks (total and by reason) and failure kinds so far."""
        return {
            "decisions": self.num_decisions,
            "fallbacks": self.num_fallbacks,
            "fallbacks_by_reason": dict(self.fallbacks_by_reason),
            "failures": dict(self.failures),
            "decision_budget_ms": self.decision_budget_ms,
        }

    def _fall_back(self, reason: str) -> None:
        self.num_fallbacks += 1
        self.fallbacks_by_reason[reason] += 1

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

    def _report_late(self, elapsed_ms: float, budget_ms: float) -> None:
        count = self.fallbacks_by_reason[OVER_BUDGET]
        if count == 1:
            logger.warning(
                "andes_gym hook: policy %r took %.1f ms to decide, over its budget of %g ms "
                "(decision_budget_ms); its decision was discarded and this step is scheduled "
                "by FCFS. Further late decisions are counted, not logged.",
                self.policy.name,
                elapsed_ms,
                budget_ms,
            )
        elif _is_power_of_ten(count):
            logger.warning(
                "andes_gym hook: %d decisions of policy %r came back over the %g ms budget "
                "so far (last: %.1f ms)",
                count,
                self.policy.name,
                budget_ms,
                elapsed_ms,
            )


def _is_power_of_ten(n: int) -> bool:
    while n % 10 == 0 and n > 1:
        n //= 10
    return n == 1
