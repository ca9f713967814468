"""Andes with the exact dynamic-programming knapsack, for checking the greedy solver."""

from __future__ import annotations

import numpy as np

from andes_gym.agents.andes import Andes
from andes_gym.agents.knapsack import DEFAULT_MAX_DP_CELLS, dp_knapsack


class AndesDP(Andes):
    """Andes with the exact knapsack solver (Andes paper §4.2; docs/ANDES.md §2, "exact solver").

    Everything but the solver is inherited from `Andes` (values, iterate-once batch,
    selective triggering, overhead guard, work-conserving fill), so the two differ only in
    how the knapsack is solved: here by dynamic programming over [item][count][memory],
    O(N * min(N, B) * M) time and N * (min(N, B) + 1) * (M + 1) bytes of back-pointers
    (`andes_gym.agents.knapsack.dp_knapsack`). Meant for small instances.

    Args:
        max_dp_cells: Largest DP table allowed.
        allow_scaling: When the table would be larger, divide the KV-block weights by the
            smallest factor that fits (weights rounded up, capacity down: decisions stay
            feasible but may be slightly below the optimum) instead of raising ValueError.
        **kwargs: `Andes` arguments.
    """

    name = "andes_dp"

    def __init__(
        self,
        max_dp_cells: int = DEFAULT_MAX_DP_CELLS,
        allow_scaling: bool = True,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if max_dp_cells < 2:
            raise ValueError(f"max_dp_cells must be >= 2, got {max_dp_cells}")
        self.max_dp_cells = int(max_dp_cells)
        self.allow_scaling = allow_scaling

    def solve(
        self,
        values: np.ndarray,
        weights: np.ndarray,
        max_weight: int,
        max_items: int,
        priority: np.ndarray,
    ) -> np.ndarray:
        """The exact knapsack optimum (zero-value items are left to the fill)."""
        return dp_knapsack(
            values,
            weights,
            max_weight,
            max_items,
            max_cells=self.max_dp_cells,
            allow_scaling=self.allow_scaling,
        )
