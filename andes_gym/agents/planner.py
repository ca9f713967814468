"""`andes_rollout`: Andes with look-ahead. It measures how much a planner that simulates
the near future can gain over the analytical knapsack.

At a contested decision point the planner copies what it observes (the candidates: who
runs, KV held, tokens delivered, each request's QoE summaries) into a private surrogate
engine (the compiled one, with the deployment's engine profile), completes the picture
with samples of what it cannot observe (future arrivals and every unfinished request's
output length, from a `TrafficModel`, never from the episode), and plays each of a few
candidate policies for `horizon_s` on `num_futures` sampled futures (common random
numbers: every candidate sees the same futures). It scores each by the reward potential
at the horizon (the environment's reward, summed), and acts on the best one that beats
Andes in every sampled future (Andes otherwise: a switch must not rest on one lucky
future), keeps it for `replan_every` decisions, then plans again.

Candidates (`VARIANTS`): Andes itself; Andes with a shorter and a longer look-ahead; Andes
that never preempts (preemption budget 0); Andes that admits at most a few requests per
decision (admission cap); Andes that serves last the requests whose QoE is already lost
(shedding). Each is a full policy, so the look-ahead compares commitments, not
single moves.

What the planner reads of the engine is what `Candidates` carry; the computed tokens of a
running request are inferred from its KV blocks (exact for decoding requests, the
block-rounded value mid-prefill), and a waiting request is assumed preempted by
recompute (a swap-mode profile's swapped-out requests are re-prefilled in the plan).
"""

from __future__ import annotations

import math

import numpy as np

from andes_gym.agents.andes import Andes
from andes_gym.agents.base import Policy
from andes_gym.agents.traffic_model import TrafficModel
from andes_gym.core.backend import DecisionConfig
from andes_gym.core.candidates import Candidates, Capacity
from andes_gym.core.features import FeatureSpec
from andes_gym.core.selection import Decision, decision_from_order, priority_order
from andes_gym.surrogate.profile import EngineProfile, load_engine_profile
from andes_gym.workloads.spec import Workload


class ScaledLookahead(Andes):
    """Andes whose look-ahead is `factor` times the environment's."""

    def __init__(self, factor: float, **kwargs) -> None:
        super().__init__(**kwargs)
        self.factor = float(factor)

    def horizon_s(self, candidates: Candidates) -> float:
        return candidates.now_s + self.factor * candidates.lookahead_s


class AdmissionCap(Andes):
    """Andes that admits at most `cap` waiting requests per decision (the rest wait)."""

    def __init__(self, cap: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.cap = int(cap)

    def decide(self, candidates: Candidates, capacity: Capacity) -> Decision:
        decision = super().decide(candidates, capacity)
        order = np.asarray(decision.order, dtype=np.int64)
        admitted = np.cumsum(~candidates.is_running[order])
        keep = candidates.is_running[order] | (admitted <= self.cap)
        return decision_from_order(order[keep], len(candidates))


class Shedding(Andes):
    """Andes that serves last (only with room to spare) the requests whose predicted QoE
    if served now is below `lost_below`: their QoE is already lost."""

    def __init__(self, lost_below: float = 0.3, **kwargs) -> None:
        super().__init__(**kwargs)
        self.lost_below = float(lost_below)

    def decide(self, candidates: Candidates, capacity: Capacity) -> Decision:
        decision = super().decide(candidates, capacity)
        order = np.asarray(decision.order, dtype=np.int64)
        lost = candidates.q_serve[order] < self.lost_below
        return decision_from_order(np.concatenate((order[~lost], order[lost])), len(candidates))


def default_variants() -> dict[str, Policy]:
    """The candidate policies the planner compares (Andes first: it wins ties)."""
    return {
        "andes": Andes(),
        "lookahead_x0.5": ScaledLookahead(0.5),
        "lookahead_x4": ScaledLookahead(4.0),
        "no_preemption": Andes(max_preemptions=0),
        "admit_cap_4": AdmissionCap(4),
        "shed_lost": Shedding(0.3),
    }


class _PlanState:
    """A private compiled engine plus a copy of its state to return to."""

    def __init__(
        self, profile: EngineProfile, lookahead_s: float, qoe_variant: str, iters: int
    ) -> None:
        from andes_gym.surrogate.compiled import CompiledSurrogateBackend

        self.backend = CompiledSurrogateBackend(
            profile,
            DecisionConfig(
                lookahead_s=lookahead_s, qoe_variant=qoe_variant, iters_per_decision=iters
            ),
            FeatureSpec(k_slots=1),
        )
        self.backend.skip_uncontested = True
        self.saved = None

    def load(
        self,
        candidates: Candidates,
        order: np.ndarray,
        totals: np.ndarray,
        future,
        horizon_s: float,
    ) -> tuple[Candidates, Capacity] | None:
        """Puts the observed requests (`order`: candidate index of each planning id) and the
        sampled ones in the engine, runs it to its first decision point and saves the
        state there; returns that point, or None when the plan has nothing to decide."""
        from andes_gym.surrogate.compiled import kernels as k

        c, be = candidates, self.backend
        m = len(order)
        workload = Workload(
            arrival_s=np.concatenate((c.arrival_s[order], future.arrival_s)),
            prompt_tokens=np.concatenate((c.prompt_tokens[order], future.prompt_tokens)),
            output_tokens=np.concatenate((totals, future.output_tokens)),
            ttft_s=np.concatenate((c.ttft_s[order], future.ttft_s)),
            tds_tok_s=np.concatenate((c.tds_tok_s[order], future.tds_tok_s)),
            name="plan",
        )
        be.start(workload, None)
        be.time_limit_s = c.now_s + horizon_s
        bs = be.profile.kv.block_size
        running = c.is_running[order]
        delivered = c.tokens_delivered[order]
        context = c.prompt_tokens[order] + delivered
        held = c.kv_blocks_held[order]
        # Computed tokens: a decoding request has all but its last token; mid-prefill, what
        # its blocks hold (never a whole prompt: that would have produced a token).
        comp = np.where(running, np.minimum(held * bs, context - 1), 0)
        held = np.where(running, (comp + bs - 1) // bs, 0)
        ints, sti = be._ints, be._sti
        ints[k.R_COMP, :m] = comp
        ints[k.R_HELD, :m] = held
        ints[k.R_PREEMPT, :m] = c.num_preemptions[order]
        ints[k.R_STATUS, :m] = np.where(running, k.RUNNING, k.WAITING)
        ints[k.R_ACTIVE, :m] = np.arange(m)
        run_ids = np.flatnonzero(running)
        ints[k.R_ORDER, : len(run_ids)] = run_ids
        sti[k.S_NUM_ORDER] = len(run_ids)
        sti[k.S_NUM_ACTIVE] = m
        sti[k.S_NEXT_ARRIVAL] = m
        sti[k.S_BLOCKS_USED] = int(held.sum())
        be._stf[k.SF_NOW] = c.now_s
        st = c.qoe_state
        floats = be.tracker._floats
        for row, values in (
            (k.T_LAST_CONSUME, st.last_consume_s),
            (k.T_SUM_CONSUME, st.sum_consume_s),
            (k.T_SUM_DELAY, st.sum_delay_s),
            (k.T_FIRST_TOKEN, st.first_token_s),
            (k.T_LAST_TOKEN, st.last_token_s),
        ):
            floats[row, :m] = values[order]
        be.tracker._num_tokens[:m] = delivered
        point = be.next_decision()
        if point is None:
            return None
        self.saved = be.snapshot()
        return point

    def play(self, policy: Policy, first: Decision) -> float:
        """Restores the saved point, applies `first`, lets `policy` decide to the horizon;
        returns the reward potential there."""
        be = self.backend
        be.restore(self.saved)
        be.apply(first)
        while (point := be.next_decision()) is not None:
            be.apply(policy.decide(*point))
        return be.potential()


class AndesRollout(Policy):
    """Andes with a look-ahead planner over sampled futures (see the module docstring).

    Args:
        engine: Engine profile the planner simulates (name, path or profile); None takes
            the environment's (`attach`).
        workload: The traffic distribution futures are drawn from (preset name, path,
            dict, config or a list for a mixture); None takes the environment's config.
        horizon_s: Simulated seconds per plan; None is `horizon_lookaheads` look-aheads.
        horizon_lookaheads: Horizon in units of the environment's look-ahead.
        num_futures: Sampled futures per plan.
        replan_every: Decisions a chosen candidate is kept before planning again.
        rollout_iters: Engine iterations per decision inside a rollout (the authors ran
            their knapsack every 10th iteration; 1 decides at every contested one).
        min_gain: Reward potential (a sum of QoE over requests) a candidate must add over
            Andes' in every sampled future to replace it.
        variants: Candidate policies by name (default `default_variants()`).
        seed: Seed of the planner's own sampling (mixed with `reset`'s seed).
    """

    name = "andes_rollout"

    def __init__(
        self,
        engine=None,
        workload=None,
        horizon_s: float | None = None,
        horizon_lookaheads: float = 10.0,
        num_futures: int = 4,
        replan_every: int = 8,
        rollout_iters: int = 1,
        min_gain: float = 0.05,
        variants: dict[str, Policy] | None = None,
        seed: int = 0,
    ) -> None:
        if horizon_s is not None and not (math.isfinite(horizon_s) and horizon_s > 0):
            raise ValueError(f"horizon_s must be a positive number or None, got {horizon_s}")
        if not (math.isfinite(horizon_lookaheads) and horizon_lookaheads > 0):
            raise ValueError(f"horizon_lookaheads must be > 0, got {horizon_lookaheads}")
        if min(int(num_futures), int(replan_every), int(rollout_iters)) < 1:
            raise ValueError(
                "num_futures, replan_every and rollout_iters must be >= 1, got "
                f"{num_futures}, {replan_every}, {rollout_iters}"
            )
        if not (math.isfinite(min_gain) and min_gain >= 0):
            raise ValueError(f"min_gain must be >= 0, got {min_gain}")
        self.profile = None if engine is None else load_engine_profile(engine)
        self.model = None
        if workload is not None:
            from andes_gym.envs.episode_workloads import workload_source

            self.model = TrafficModel.from_source(workload_source(workload))
        self.horizon_s = horizon_s
        self.horizon_lookaheads = float(horizon_lookaheads)
        self.num_futures = int(num_futures)
        self.replan_every = int(replan_every)
        self.rollout_iters = int(rollout_iters)
        self.min_gain = float(min_gain)
        self.variants = variants or default_variants()
        if next(iter(self.variants)) != "andes":
            self.variants = {"andes": Andes(), **self.variants}
        self.seed = int(seed)
        self._plan: _PlanState | None = None
        self.reset(None)

    # ---------------------------------------------------------------- world model
    def attach(self, engine_profile: EngineProfile, workload_source) -> None:
        """Takes the deployment's engine profile and traffic distribution from the
        environment, where the constructor left them open. Reads the distribution (the
        workload config or mixture), never the episode's requests."""
        if self.profile is None:
            self.profile = engine_profile
        if self.model is None:
            self.model = TrafficModel.from_source(workload_source)

    def reset(self, seed: int | None = None) -> None:
        self._rng = np.random.default_rng([self.seed, 0 if seed is None else int(seed), 0x504C])
        self._committed = "andes"
        self._left = 0
        self.choices: dict[str, int] = dict.fromkeys(self.variants, 0)
        self.num_plans = 0

    # ------------------------------------------------------------------- decision
    def decide(self, candidates: Candidates, capacity: Capacity) -> Decision:
        andes = self.variants["andes"]
        if len(candidates) == 0 or (
            isinstance(andes, Andes) and andes.uncontested(candidates, capacity)
        ):
            n = len(candidates)
            return decision_from_order(priority_order(-candidates.arrival_s, candidates), n)
        if self._left <= 0:
            self._committed = self.best_variant(candidates)
            self._left = self.replan_every
            self.choices[self._committed] += 1
            self.num_plans += 1
        self._left -= 1
        return self.variants[self._committed].decide(candidates, capacity)

    def values(self, candidates: Candidates) -> dict[str, np.ndarray]:
        """Reward potential at the horizon of each candidate policy on each of
        `num_futures` sampled futures (common to every candidate)."""
        if self.profile is None or self.model is None:
            raise RuntimeError(
                "andes_rollout has no engine profile or traffic model: pass engine= and "
                "workload=, or run it through PolicyAgent, which attaches the environment's"
            )
        if self._plan is None:
            self._plan = _PlanState(
                self.profile, candidates.lookahead_s, "delay", self.rollout_iters
            )
        plan = self._plan
        horizon = self.horizon_s or self.horizon_lookaheads * candidates.lookahead_s
        order = np.lexsort((candidates.request_id, candidates.arrival_s))
        values = {name: np.zeros(self.num_futures) for name in self.variants}
        for f in range(self.num_futures):
            future = self.model.future(self._rng, candidates.now_s, horizon)
            totals = self.model.total_output(self._rng, candidates.tokens_delivered[order])
            point = plan.load(candidates, order, totals, future, horizon)
            if point is None:
                continue  # nothing contested in this future: every candidate scores 0
            for name, policy in self.variants.items():
                policy.reset(None)
                values[name][f] = plan.play(policy, policy.decide(*point))
        return values

    def best_variant(self, candidates: Candidates) -> str:
        """The candidate policy to commit to: Andes, unless another beats it by at least
        `min_gain` in every sampled future (then the one with the best mean)."""
        values = self.values(candidates)
        base = values["andes"]
        better = {
            name: float(v.mean())
            for name, v in values.items()
            if name != "andes" and np.all(v >= base + self.min_gain)
        }
        return max(better, key=better.get) if better else "andes"
