"""What a model-based policy may assume about the traffic it serves: a distribution, never
the episode.

`TrafficModel` holds independent draws of the workload config(s) an operator would know
(the preset or mixture the service is sized for) and samples from them the two things a
scheduler cannot observe: requests that have not arrived yet, and how many tokens a
running request still has to generate. The draws use their own seeds, far from any
episode's, so a planner built on the model is deployable in principle: it never reads the
true future.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from andes_gym.workloads.spec import Workload

MODEL_SEED_BASE = 7_000_000_000
"""First seed of the model's own draws (episodes in this repo use seeds below 10^7)."""


@dataclass(frozen=True)
class FutureRequests:
    """Sampled arrivals after `now`, sorted by arrival (struct of arrays)."""

    arrival_s: np.ndarray
    prompt_tokens: np.ndarray
    output_tokens: np.ndarray
    ttft_s: np.ndarray
    tds_tok_s: np.ndarray

    def __len__(self) -> int:
        return len(self.arrival_s)


class TrafficModel:
    """Samples futures from independent draws of a workload distribution.

    Args:
        draws: Episodes drawn from the distribution (the sampling pool).

    Raises:
        ValueError: With no draw.
    """

    def __init__(self, draws: list[Workload]) -> None:
        if not draws:
            raise ValueError("a traffic model needs at least one drawn workload")
        self.draws: tuple[Workload, ...] = tuple(draws)
        self._outputs = np.sort(np.concatenate([w.output_tokens for w in self.draws]))

    @classmethod
    def from_source(cls, source, num_draws: int = 8) -> TrafficModel:
        """A model of an environment's workload source (`andes_gym.envs.episode_workloads`):
        `num_draws` episodes per component, drawn with the model's own seeds.

        Raises:
            ValueError: For a source that replays one fixed workload or a trace: a trace
                is one episode, not a distribution to sample futures from.
        """
        components = getattr(source, "sources", (source,))
        for part in components:
            config = getattr(part, "config", None)
            if config is None or getattr(getattr(config, "arrivals", None), "kind", "") == "trace":
                raise ValueError(
                    "a planner needs a workload distribution to sample futures from, and "
                    f"this environment replays a fixed workload or a trace ({type(part).__name__}); "
                    "pass workload=<a generated preset or config>"
                )
        count = num_draws * len(components)
        return cls([source.sample(MODEL_SEED_BASE + d) for d in range(count)])

    def future(self, rng: np.random.Generator, now_s: float, horizon_s: float) -> FutureRequests:
        """Arrivals in `(now_s, now_s + horizon_s]` of one randomly chosen draw.

        Arrival processes in this repo are anchored at time 0 (a burst cycle starts every
        period), so the window of an independent draw has the right phase.
        """
        w = self.draws[int(rng.integers(len(self.draws)))]
        lo, hi = np.searchsorted(w.arrival_s, [now_s, now_s + horizon_s], side="right")
        take = slice(int(lo), int(hi))
        return FutureRequests(
            arrival_s=w.arrival_s[take].copy(),
            prompt_tokens=w.prompt_tokens[take].copy(),
            output_tokens=w.output_tokens[take].copy(),
            ttft_s=w.ttft_s[take].copy(),
            tds_tok_s=w.tds_tok_s[take].copy(),
        )

    def total_output(self, rng: np.random.Generator, delivered: np.ndarray) -> np.ndarray:
        """Total output lengths for requests that have delivered `delivered` tokens and are
        not finished: drawn from the output-length distribution conditioned on exceeding
        what was delivered (one more token when nothing in the pool is longer)."""
        delivered = np.asarray(delivered, dtype=np.int64)
        pool = self._outputs
        lo = np.searchsorted(pool, delivered, side="right")
        count = len(pool) - lo
        pick = lo + np.floor(rng.random(len(delivered)) * np.maximum(count, 1)).astype(np.int64)
        total = pool[np.minimum(pick, len(pool) - 1)]
        return np.where(count > 0, total, delivered + 1)
