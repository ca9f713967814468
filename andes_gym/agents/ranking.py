"""Scores that make `select` follow an exact lexicographic ranking.

Scoring policies often rank by a primary key with explicit tie-breaks. Turning the ranking
into scores `n, n-1, ..., 1` hands `select` a strict order, so its own tie rule (earlier
arrival, then lower id) never has to guess.
"""

from __future__ import annotations

import numpy as np


def rank_scores(*keys: np.ndarray) -> np.ndarray:
    """Scores ranking candidates by `keys`, most significant first, lower values first.

    Args:
        *keys: Arrays of equal length; the first decides, later ones break its ties.

    Returns:
        float64 scores: the first-ranked candidate gets `n`, the last gets 1.

    Raises:
        ValueError: When no key is given or a key contains NaN.
    """
    if not keys:
        raise ValueError("rank_scores needs at least one key")
    arrays = [np.asarray(k) for k in keys]
    for pos, arr in enumerate(arrays):
        if arr.dtype.kind == "f" and np.isnan(arr).any():
            raise ValueError(
                f"ranking key {pos} contains NaN at index {int(np.argmax(np.isnan(arr)))}"
            )
    n = len(arrays[0])
    # np.lexsort sorts by the last key first, so the most significant key goes last.
    order = np.lexsort(arrays[::-1])
    scores = np.empty(n, dtype=np.float64)
    scores[order] = np.arange(n, 0, -1, dtype=np.float64)
    return scores
