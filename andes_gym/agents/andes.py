"""Andes: the QoE-aware knapsack scheduler (Liu et al., arXiv 2404.16283, §4; docs/ANDES.md §2)."""

from __future__ import annotations

import math

import numpy as np

from andes_gym.agents.base import Policy
from andes_gym.agents.knapsack import density_order, pack_in_order
from andes_gym.agents.overhead_guard import fill_in_priority, guard_preemptions
from andes_gym.core.candidates import Candidates, Capacity
from andes_gym.core.selection import Decision, decision_from_order, priority_order
from andes_gym.qoe import VARIANTS, QoEState, predict_qoe

PROTECTED_DENSITY = 1e3
"""Value per KV block added to requests protected by `max_preemptions` (QoE values are <= 1.1)."""

DEFAULT_PREFILL_TOK_S = 5000.0
"""Prefill speed assumed for the re-prefill of a preempted request (docs/ANDES.md §3: the
paper's TTFT targets assume prefill at 5000 tokens/s)."""


def delayed_state(state: QoEState, delay_s: np.ndarray) -> QoEState:
    """The same timelines shifted `delay_s` earlier in time.

    QoE depends only on differences of times, so a request shifted `d` earlier and then
    left waiting until `H` has exactly the QoE of the original left waiting until `H + d`.
    This lets one vectorized `predict_qoe` call evaluate a different waiting time per request.
    """
    d = np.asarray(delay_s, dtype=np.float64)
    return QoEState(
        arrival_s=state.arrival_s - d,
        ttft_s=state.ttft_s,
        tds_tok_s=state.tds_tok_s,
        num_tokens=state.num_tokens,
        last_consume_s=state.last_consume_s - d,
        sum_consume_s=state.sum_consume_s - state.num_tokens * d,
        sum_delay_s=state.sum_delay_s,
        first_token_s=state.first_token_s - d,
        last_token_s=state.last_token_s - d,
    )


def served_rate_tok_s(capacity: Capacity, batch_size: int) -> float:
    """Token rate of a served request: one token per decode iteration at `batch_size`."""
    return 1.0 / max(capacity.token_latency_s(batch_size), 1e-9)


class Andes(Policy):
    """The Andes scheduler: a knapsack over QoE gains under KV and batch limits.

    Source: Andes (Liu et al., arXiv 2404.16283, §4 "Scheduler"; v2's overhead-aware
    refiner); facts in docs/ANDES.md §2. At each decision it solves

        maximize sum_i v_i x_i  s.t.  sum_i l_i x_i <= M,  sum_i x_i <= B

    with `v_i = Q_serve,i - Q_wait,i` (clipped at 0), `l_i = kv_blocks_needed`,
    `M = total_kv_blocks`, `B = max_num_seqs`:

    - `Q_serve` / `Q_wait`: `andes_gym.qoe.predict_qoe` on the candidates' QoE state at
      `now + lookahead_s`, served at `1 / token_latency(b)` tokens/s or waiting (rate 0).
      The batch `b` is that of the selection: first `min(n, B)`, then, once, the size of
      the selection that produced (iterate once). Running requests' values are multiplied
      by `1 + running_bonus` (the authors' code used +10% against thrashing). Output
      lengths are unknown to Andes (no oracle).
    - Solver: greedy by value density `v_i / l_i`, each request taken if it still fits
      (`andes_gym.agents.knapsack.greedy_knapsack`); `AndesDP` swaps in the exact DP.
      Density ties: running first, then earlier arrival, then lower id.
    - Selective triggering: when every candidate fits (`sum l_i <= M`, `n <= B`) and the
      predicted token latency at that batch keeps up with the strictest user
      (`1 / latency >= max tds`), everyone is served, oldest first, without solving.
    - Overhead guard (`overhead_guard=True`, v2's refiner): preempting a running request
      (vLLM V1 preempts by recompute) costs a re-prefill of its context (prompt +
      delivered tokens), `recompute_s = context x Capacity.prefill_s_per_token` (or
      `/ prefill_tok_s` when the engine gives none). The QoE cost of a
      preemption is the victim's value, plus the QoE it loses by waiting `recompute_s`
      longer (`Q_wait(dt) - Q_wait(dt + recompute_s)`), plus `stall_weight` times the
      QoE the other running requests lose while the re-prefill stalls the batch. Walking
      the admissions in priority order, one is accepted only if its value exceeds the
      cost of the preemptions it forces (`overhead_guard.guard_preemptions`); otherwise
      the running requests stay.
    - Preemption cap (v1's P, 1 by default as in the paper's v1): a running request
      already preempted `max_preemptions` times is kept before any other (its value gets
      `PROTECTED_DENSITY` per block), so it is preempted again only if the running set
      cannot fit. Why on by default: a running request whose client buffer covers the
      look-ahead has value 0, so without a cap it is swapped out for any waiting request
      with a positive gain, and re-prefilled as soon as its buffer runs low. On the
      llama7b_a100 surrogate, bursty_2x at 20 rps (benchmarks/results/policies.md):
      without guard and cap 31 preemptions per request and throughput -93% (thrashing);
      guard alone 3.9 and -23%; guard and cap 1.0 and -8%, mean QoE 0.88 vs FCFS 0.73.
    - Requests left out with room to spare are added back in priority order, so the
      decision is work-conserving.

    Args:
        lookahead_s: Look-ahead dt of the predictions; None uses `candidates.lookahead_s`.
        qoe_variant: QoE variant of the predictions (one of `andes_gym.qoe.VARIANTS`).
        running_bonus: Relative value bonus of running requests (>= 0; the authors' 10%).
        prefill_tok_s: Prefill speed for the re-prefill time of a preempted request, used
            only when the engine's `Capacity.prefill_s_per_token` is None; the default is
            the paper's 5000 tokens/s (docs/ANDES.md §3).
        overhead_guard: Apply the preemption-overhead guard.
        selective_trigger: Serve everyone without solving when uncontested.
        max_preemptions: Preemption cap per request (v1's P), or None for no cap.
        stall_weight: Weight of the other requests' stall loss in a preemption's cost
            (0: only the victim's own loss counts).

    Raises:
        ValueError: For an out-of-range argument, naming it.
    """

    name = "andes"

    def __init__(
        self,
        lookahead_s: float | None = None,
        qoe_variant: str = "delay",
        running_bonus: float = 0.1,
        prefill_tok_s: float = DEFAULT_PREFILL_TOK_S,
        overhead_guard: bool = True,
        selective_trigger: bool = True,
        max_preemptions: int | None = 1,
        stall_weight: float = 1.0,
    ) -> None:
        if lookahead_s is not None and not (math.isfinite(lookahead_s) and lookahead_s > 0):
            raise ValueError(f"lookahead_s must be a positive number or None, got {lookahead_s}")
        if qoe_variant not in VARIANTS:
            raise ValueError(f"qoe_variant must be one of {VARIANTS}, got {qoe_variant!r}")
        if not (math.isfinite(running_bonus) and running_bonus >= 0):
            raise ValueError(f"running_bonus must be >= 0, got {running_bonus}")
        if not (math.isfinite(prefill_tok_s) and prefill_tok_s > 0):
            raise ValueError(f"prefill_tok_s must be a positive tokens/s, got {prefill_tok_s}")
        if not (math.isfinite(stall_weight) and stall_weight >= 0):
            raise ValueError(f"stall_weight must be >= 0, got {stall_weight}")
        if max_preemptions is not None and max_preemptions < 0:
            raise ValueError(f"max_preemptions must be >= 0 or None, got {max_preemptions}")
        self.lookahead_s = lookahead_s
        self.qoe_variant = qoe_variant
        self.running_bonus = float(running_bonus)
        self.prefill_tok_s = float(prefill_tok_s)
        self.overhead_guard = overhead_guard
        self.selective_trigger = selective_trigger
        self.max_preemptions = max_preemptions
        self.stall_weight = float(stall_weight)

    # ------------------------------------------------------------------ decision
    def decide(self, candidates: Candidates, capacity: Capacity) -> Decision:
        n = len(candidates)
        if self.selective_trigger and self.uncontested(candidates, capacity):
            return decision_from_order(priority_order(-candidates.arrival_s, candidates), n)
        return decision_from_order(self.plan(candidates, capacity), n)

    def uncontested(self, candidates: Candidates, capacity: Capacity) -> bool:
        """True when everyone fits and the engine keeps up with the strictest user."""
        n = len(candidates)
        if n == 0:
            return True
        if n > capacity.max_num_seqs:
            return False
        if int(candidates.kv_blocks_needed.sum()) > capacity.total_kv_blocks:
            return False
        return capacity.token_latency_s(n) * float(candidates.tds_tok_s.max()) <= 1.0

    def plan(self, candidates: Candidates, capacity: Capacity) -> np.ndarray:
        """Indices of the candidates to run, highest priority first (the full pipeline)."""
        c = candidates
        n = len(c)
        if n == 0:
            return np.zeros(0, dtype=np.int64)
        weights = c.kv_blocks_needed
        m, b = capacity.total_kv_blocks, capacity.max_num_seqs
        q_wait = self.predict(c, rate_tok_s=0.0)
        tie = np.empty(n, dtype=np.int64)
        tie[np.lexsort((c.request_id, c.arrival_s, ~c.is_running))] = np.arange(n)
        batch = min(n, b)
        q_serve = self.serve_qoe(c, capacity, batch)
        value = self.gain(c, q_serve, q_wait)
        selected, priority = self.knapsack(value, weights, m, b, tie)
        if 0 < int(selected.sum()) != batch:  # iterate once: re-predict at the selection's batch
            batch = int(selected.sum())
            q_serve = self.serve_qoe(c, capacity, batch)
            value = self.gain(c, q_serve, q_wait)
            selected, priority = self.knapsack(value, weights, m, b, tie)
        victims = c.is_running & ~selected
        if not (self.overhead_guard and victims.any()):
            return priority[selected[priority]]
        rate_tok_s = served_rate_tok_s(capacity, batch)
        return guard_preemptions(
            selected=selected,
            is_running=c.is_running,
            weights=weights,
            gain=value,
            preempt_cost=self.preemption_cost(
                c, capacity, value, q_wait, q_serve, victims, rate_tok_s
            ),
            priority=priority,
            max_weight=m,
            max_items=b,
        )

    # ------------------------------------------------------------- the pieces
    def horizon_s(self, candidates: Candidates) -> float:
        dt = candidates.lookahead_s if self.lookahead_s is None else self.lookahead_s
        return candidates.now_s + dt

    def predict(
        self,
        candidates: Candidates,
        rate_tok_s: float | np.ndarray,
        idx: np.ndarray | None = None,
        delay_s: np.ndarray | float | None = None,
        horizon_s: float | None = None,
    ) -> np.ndarray:
        """Predicted QoE at the horizon, served at `rate_tok_s` (0: waiting).

        Args:
            candidates: The candidates.
            rate_tok_s: Token rate while served (scalar or per candidate); 0 for waiting.
            idx: Evaluate only these candidates (default: all).
            delay_s: Start everything this much later (per request or scalar), via
                `delayed_state`: waiting longer, or served after a stall.
            horizon_s: Horizon (default: now + look-ahead).
        """
        c = candidates
        state = c.qoe_state if idx is None else c.qoe_state.take(idx)
        if delay_s is not None:
            state = delayed_state(state, np.broadcast_to(delay_s, (len(state),)))
        return predict_qoe(
            state,
            now_s=c.now_s,
            horizon_s=self.horizon_s(c) if horizon_s is None else horizon_s,
            rate_tok_s=rate_tok_s,
            variant=self.qoe_variant,
        )

    def serve_qoe(self, candidates: Candidates, capacity: Capacity, batch_size: int) -> np.ndarray:
        """`Q_serve`: predicted QoE if served at the token rate of a `batch_size` batch."""
        return self.predict(candidates, served_rate_tok_s(capacity, batch_size))

    def gain(self, candidates: Candidates, q_serve: np.ndarray, q_wait: np.ndarray) -> np.ndarray:
        """Knapsack values `Q_serve - Q_wait` (>= 0), running ones with the bonus.

        Requests protected by `max_preemptions` get `PROTECTED_DENSITY` per KV block on
        top: a density above any QoE density, so they are kept first and dropped only if
        they cannot fit.
        """
        c = candidates
        gain = np.maximum(q_serve - q_wait, 0.0)
        if self.running_bonus:
            gain = np.where(c.is_running, gain * (1.0 + self.running_bonus), gain)
        if self.max_preemptions is not None:
            protected = c.is_running & (c.num_preemptions >= self.max_preemptions)
            gain = np.where(protected, gain + PROTECTED_DENSITY * c.kv_blocks_needed, gain)
        return gain

    def values(
        self, candidates: Candidates, capacity: Capacity, batch_size: int, q_wait: np.ndarray
    ) -> np.ndarray:
        """Knapsack values at `batch_size` (`gain` of `serve_qoe`)."""
        return self.gain(candidates, self.serve_qoe(candidates, capacity, batch_size), q_wait)

    def knapsack(
        self,
        values: np.ndarray,
        weights: np.ndarray,
        max_weight: int,
        max_items: int,
        tiebreak: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The solver's selection filled up in priority order, and the priority order.

        The fill makes the greedy and the exact solver comparable: both serve every request
        that still fits after the optimum (the DP leaves zero-value requests out).

        Returns:
            `(selected, priority)`: a boolean mask and all indices by density (high first).
        """
        priority = density_order(values, weights, tiebreak)
        selected = np.zeros(len(values), dtype=bool)
        selected[self.solve(values, weights, max_weight, max_items, priority)] = True
        fill_in_priority(selected, weights, priority, max_weight, max_items)
        return selected, priority

    def solve(
        self,
        values: np.ndarray,
        weights: np.ndarray,
        max_weight: int,
        max_items: int,
        priority: np.ndarray,
    ) -> np.ndarray:
        """The knapsack solver; returns the chosen indices.

        Greedy by density: `priority` already lists the candidates by density (ties
        broken), so this is `greedy_knapsack` without sorting again.
        """
        return priority[pack_in_order(weights[priority], max_weight, max_items)]

    def prefill_s_per_token(self, capacity: Capacity) -> float:
        """Re-prefill cost per token: the engine's prediction, else `1 / prefill_tok_s`."""
        if capacity.prefill_s_per_token is not None:
            return capacity.prefill_s_per_token
        return 1.0 / self.prefill_tok_s

    def preemption_cost(
        self,
        candidates: Candidates,
        capacity: Capacity,
        value: np.ndarray,
        q_wait: np.ndarray,
        q_serve: np.ndarray,
        victims: np.ndarray,
        rate_tok_s: float,
    ) -> np.ndarray:
        """QoE cost of preempting each of `victims` (0 elsewhere).

        A recompute preemption costs a re-prefill of the victim's context,
        `recompute_s = (prompt + delivered tokens) * prefill_s_per_token(capacity)` (the
        engine's latency model; `1 / prefill_tok_s` when it has none), when it is re-admitted:

        - the victim's own loss: its value (service lost over the look-ahead) plus the QoE
          it loses by waiting `recompute_s` longer, `Q_wait(dt) - Q_wait(dt + recompute_s)`;
        - the others' loss (`stall_weight` times): the re-prefill stalls the batch for about
          `recompute_s`. It is priced at the running non-victims' QoE loss per second of
          stall, a finite difference over `tau` = a tenth of the look-ahead: served from
          now (`q_serve`) versus served from `now + tau`, both until the horizon.

        Both shifted timelines come from one `predict_qoe` call at the horizon `H - tau`:
        a victim shifted `recompute_s + tau` and waiting, the others shifted `tau` and
        served at `rate_tok_s` (see `delayed_state`).
        """
        c = candidates
        others = c.is_running & ~victims if self.stall_weight else np.zeros(len(c), dtype=bool)
        recompute_s = (c.prompt_tokens + c.tokens_delivered) * self.prefill_s_per_token(capacity)
        horizon = self.horizon_s(c)
        tau_s = 0.1 * (horizon - c.now_s)
        delay_s = np.where(victims, recompute_s + tau_s, np.where(others, tau_s, 0.0))
        shifted = self.predict(
            c, np.where(others, rate_tok_s, 0.0), delay_s=delay_s, horizon_s=horizon - tau_s
        )
        cost = np.zeros(len(c))
        cost[victims] = value[victims] + np.maximum(q_wait[victims] - shifted[victims], 0.0)
        if others.any():
            per_s = float(np.maximum(q_serve[others] - shifted[others], 0.0).sum()) / tau_s
            cost[victims] += self.stall_weight * per_s * recompute_s[victims]
        return cost
