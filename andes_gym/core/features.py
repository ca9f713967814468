"""The fixed-size observation: K request slots plus global features, and its inverse for actions.

The same functions serve the Gymnasium environments (observation and action) and exported
learned policies running inside the vLLM hook, so a policy sees identical inputs wherever it
runs. The feature list has a name and a version, checked when an exported policy is loaded.

Layout of the flat observation vector (float32):
    [slot features: K x F, row-major] [slot mask: K] [global features: G]

Slot order: running candidates by arrival, then waiting candidates by arrival, first K.
Candidates beyond the K slots ("overflow") are not observed; they get scores below every
slotted candidate, in arrival order (see `scores_from_slots`).
"""

from __future__ import annotations

import json
import warnings
from dataclasses import asdict, dataclass

import numpy as np

from andes_gym.core.candidates import Candidates, Capacity

SLOT_FEATURES: tuple[str, ...] = (
    "is_running",  # 1 if it ran in the last iteration
    "log_age_over_ttft",  # log1p((now - arrival) / ttft)
    "log_tokens_delivered",  # log1p(tokens delivered) / 8
    "lag_over_ttft",  # (now - ideal time of the next token) / ttft, clipped to [-4, 4]
    "log_buffer_tokens",  # log1p(tokens the client holds unread at now) / 4
    "qoe_now",  # QoE so far
    "q_serve",  # predicted QoE after the look-ahead if served
    "q_wait",  # predicted QoE after the look-ahead if it waits
    "q_gain_x10",  # 10 * (q_serve - q_wait), clipped to [0, 4]
    "log_prompt_tokens",  # log1p(prompt tokens) / 8
    "kv_needed_frac",  # KV blocks needed to run / total blocks
    "kv_held_frac",  # KV blocks held / total blocks
    "tds_x_latency",  # tds * predicted token latency (> 1: the engine is slower than the user)
    "preemptions",  # min(preemptions, 4) / 4
    "log_remaining_oracle",  # log1p(true remaining tokens) / 8; 0 unless oracle
)

GLOBAL_FEATURES: tuple[str, ...] = (
    "kv_used_frac",  # blocks held / total
    "kv_demand_frac",  # blocks needed by all candidates / total, clipped to [0, 4]
    "running_frac",  # running / max_num_seqs
    "log_waiting",  # log1p(waiting) / 8
    "overflow_frac",  # candidates beyond K / candidates
    "latency_growth",  # latency at the full batch / latency at batch 1, minus 1, clipped to [0, 8]
    "max_tds_x_latency",  # max tds over candidates * latency at the running batch
)

OBS_BOUND = 10.0  # every observation entry is clipped to [-OBS_BOUND, OBS_BOUND]

FEATURE_SET_NAME = "andes_gym.slots"
FEATURE_SET_VERSION = 1


@dataclass(frozen=True)
class FeatureSpec:
    """What an observation holds; saved with every exported policy.

    Attributes:
        k_slots: Number of request slots K.
        oracle: Whether the true remaining length is observed.
        name: Feature-set name.
        version: Feature-set version; bump it whenever a feature's meaning changes.
        slot_features: Names of the per-slot features, in order.
        global_features: Names of the global features, in order.
    """

    k_slots: int = 64
    oracle: bool = False
    name: str = FEATURE_SET_NAME
    version: int = FEATURE_SET_VERSION
    slot_features: tuple[str, ...] = SLOT_FEATURES
    global_features: tuple[str, ...] = GLOBAL_FEATURES

    def __post_init__(self) -> None:
        if self.k_slots < 1:
            raise ValueError(f"k_slots must be >= 1, got {self.k_slots}")

    @property
    def num_slot_features(self) -> int:
        return len(self.slot_features)

    @property
    def obs_dim(self) -> int:
        k = self.k_slots
        return k * self.num_slot_features + k + len(self.global_features)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict) -> FeatureSpec:
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown FeatureSpec fields {unknown}; expected {sorted(known)}")
        data = dict(data)
        for key in ("slot_features", "global_features"):
            if key in data:
                data[key] = tuple(data[key])
        return cls(**data)

    def check_compatible(self, other: FeatureSpec) -> None:
        """Raises ValueError naming the first difference between two specs."""
        for field in ("name", "version", "k_slots", "oracle", "slot_features", "global_features"):
            mine, theirs = getattr(self, field), getattr(other, field)
            if mine != theirs:
                raise ValueError(
                    f"feature spec mismatch in {field!r}: policy has {theirs!r}, "
                    f"this andes_gym expects {mine!r}"
                )


def _clip(x: np.ndarray, lo: float, hi: float, out: np.ndarray | None = None) -> np.ndarray:
    """`np.clip(x, lo, hi)` (same values, NaN kept) as two ufunc calls: np.clip's Python
    wrapper costs more than the clipping of a few hundred numbers."""
    y = np.maximum(x, lo, out=out)
    return np.minimum(y, hi, out=y)


WAITING_SLOTS_BEYOND_BATCH = 64
"""Default K leaves this many slots for waiting requests when the batch is full."""


def default_k_slots(max_num_seqs: int) -> int:
    """K that shows every running request plus `WAITING_SLOTS_BEYOND_BATCH` waiting ones.

    Slots fill with running requests first, so a K below the engine's batch limit hides
    the waiting requests whenever the batch is full, and every policy acting through the
    slots then falls back to the overflow order (oldest first).
    """
    return int(max_num_seqs) + WAITING_SLOTS_BEYOND_BATCH


def resolve_k_slots(k_slots: int | None, max_num_seqs: int) -> int:
    """The K an environment uses: `k_slots`, or `default_k_slots` when None.

    Warns when K is below the batch limit (waiting requests can then be invisible).
    """
    if k_slots is None:
        return default_k_slots(max_num_seqs)
    if k_slots < max_num_seqs:
        warnings.warn(
            f"k_slots={k_slots} is below the engine's max_num_seqs={max_num_seqs}: when more "
            f"than {k_slots} requests run, no waiting request is observed and every policy "
            "acting through the slots admits in arrival order. Use k_slots=None for "
            f"{default_k_slots(max_num_seqs)}.",
            stacklevel=3,
        )
    return int(k_slots)


def slot_order(candidates: Candidates, k_slots: int) -> np.ndarray:
    """Candidate indices that fill the K slots: running by arrival, then waiting by arrival."""
    order = np.lexsort((candidates.request_id, candidates.arrival_s, ~candidates.is_running))
    return order[:k_slots]


def observe(
    candidates: Candidates, capacity: Capacity, spec: FeatureSpec
) -> tuple[np.ndarray, np.ndarray]:
    """The flat observation of a decision point.

    Args:
        candidates: The candidates.
        capacity: The engine's limits.
        spec: The feature spec (K, oracle).

    Returns:
        `(obs, slot_idx)`: obs is float32 of shape `(spec.obs_dim,)`; slot_idx holds the
        candidate index in each filled slot (length <= K).
    """
    k = spec.k_slots
    f = spec.num_slot_features
    obs = np.zeros(spec.obs_dim, dtype=np.float32)
    idx = slot_order(candidates, k)
    m = len(idx)
    total_blocks = float(capacity.total_kv_blocks)
    n_running = candidates.num_running
    latency_now_s = capacity.token_latency_s(max(n_running, 1))
    if m:
        c = candidates
        now = c.now_s
        # Each candidate array is gathered once; the columns are computed as before
        # (same operations, contiguous inputs to the log1p calls) and written row by row
        # into one float64 block, transposed into the float32 slots at the end.
        ttft_raw = c.ttft_s[idx]
        arrival = c.arrival_s[idx]
        ttft = np.maximum(ttft_raw, 1e-6)
        tds = c.tds_tok_s[idx]
        delivered = c.tokens_delivered[idx]
        next_ideal_s = arrival + ttft_raw + delivered / tds
        last_consume = c.qoe_state.last_consume_s[idx]
        buffer_tok = np.where(
            np.isnan(last_consume), 0.0, np.maximum(last_consume - now, 0.0) * tds
        )
        q_serve = c.q_serve[idx]
        q_wait = c.q_wait[idx]
        cols = np.empty((len(SLOT_FEATURES), m))
        cols[0] = c.is_running[idx]
        cols[1] = np.log1p(np.maximum(now - arrival, 0.0) / ttft)
        cols[2] = np.log1p(delivered) / 8.0
        cols[3] = _clip((now - next_ideal_s) / ttft, -4.0, 4.0)
        cols[4] = np.log1p(buffer_tok) / 4.0
        cols[5] = c.qoe_now[idx]
        cols[6] = q_serve
        cols[7] = q_wait
        cols[8] = _clip(10.0 * (q_serve - q_wait), 0.0, 4.0)
        cols[9] = np.log1p(c.prompt_tokens[idx]) / 8.0
        cols[10] = c.kv_blocks_needed[idx] / total_blocks
        cols[11] = c.kv_blocks_held[idx] / total_blocks
        cols[12] = tds * latency_now_s
        cols[13] = np.minimum(c.num_preemptions[idx], 4) / 4.0
        if spec.oracle and c.remaining_tokens is not None:
            cols[14] = np.log1p(c.remaining_tokens[idx]) / 8.0
        else:
            cols[14] = 0.0
        slots = obs[: k * f].reshape(k, f)
        slots[:m] = cols.T
        obs[k * f : k * f + m] = 1.0
    n = len(candidates)
    lat1 = max(capacity.token_latency_s(1), 1e-12)
    g = obs[k * f + k :]
    g[0] = candidates.kv_blocks_held.sum() / total_blocks
    g[1] = min(candidates.kv_blocks_needed.sum() / total_blocks, 4.0)
    g[2] = n_running / capacity.max_num_seqs
    g[3] = np.log1p(n - n_running) / 8.0
    g[4] = max(n - k, 0) / n if n else 0.0
    g[5] = min(capacity.token_latency_s(capacity.max_num_seqs) / lat1 - 1.0, 8.0)
    g[6] = candidates.tds_tok_s.max() * latency_now_s if n else 0.0
    _clip(obs, -OBS_BOUND, OBS_BOUND, out=obs)
    return obs, idx


def scores_from_slots(
    slot_scores: np.ndarray, slot_idx: np.ndarray, num_candidates: int, arrival_s: np.ndarray
) -> np.ndarray:
    """Full score vector for `select` from the K slot scores.

    Slotted candidates get their slot's score. Overflow candidates (not in a slot) get
    scores below every slotted one, decreasing with arrival time (oldest first).

    Args:
        slot_scores: Scores for the K slots (entries past the filled slots are ignored).
        slot_idx: Candidate index of each filled slot (from `observe`).
        num_candidates: Number of candidates.
        arrival_s: Arrival time of each candidate.

    Returns:
        One score per candidate.
    """
    m = len(slot_idx)
    scores = np.empty(num_candidates, dtype=np.float64)
    used = np.asarray(slot_scores, dtype=np.float64)[:m]
    scores[slot_idx] = used
    if num_candidates > m:
        rest = np.ones(num_candidates, dtype=bool)
        rest[slot_idx] = False
        rest_idx = np.flatnonzero(rest)
        rest_idx = rest_idx[np.argsort(arrival_s[rest_idx], kind="stable")]
        floor = (used.min() if m else 0.0) - 1.0
        scores[rest_idx] = floor - np.arange(len(rest_idx)) / len(rest_idx)
    return scores


def slot_action_from_decision(decision_order: np.ndarray, slot_idx: np.ndarray, k_slots: int):
    """Encodes a decision as K slot scores in [-1, 1] that `select` turns back into it.

    Selected candidates in slots get scores in (0, 1], highest priority highest; all other
    slots get -1. Used by the adapter that lets solver policies act in the environments.
    """
    action = np.full(k_slots, -1.0, dtype=np.float32)
    position = np.full(int(max(slot_idx.max(initial=-1), decision_order.max(initial=-1))) + 1, -1)
    position[slot_idx] = np.arange(len(slot_idx))
    ranks = len(decision_order)
    for rank, cand in enumerate(decision_order):
        slot = position[cand]
        if slot >= 0:
            action[slot] = 1.0 - rank / max(ranks, 1)
    return action
