"""Quality of Experience (QoE) of streamed LLM responses (docs/ANDES.md §1).

Three modules for three readers:

- `definition`: what QoE is. `qoe` on explicit token times (the reference), and the O(1)
  running summary of a timeline (`QoEState`) with every variant in closed form
  (`qoe_of_state`), plus measured TTFT / TBT.
- `prediction`: the QoE of a projected timeline (`predict_qoe`, `predict_qoe_many`,
  `qoe_if_completed_at`), in closed form, vectorized; it feeds the Andes scheduler's
  ``Q_serve`` / ``Q_wait``, the observation features and the reward.
- `tracker`: `QoETracker`, the growable per-request summaries that engines update as
  tokens are delivered; its storage layout (`FLOAT_ROWS`, `QoETracker.floats`,
  `QoETracker.num_tokens`) is a public interface, updated in place by the compiled
  surrogate engine.

Everything public is importable from `andes_gym.qoe`.
"""

from andes_gym.qoe.definition import (
    ON_TIME_TOL_S,
    PENDING_MODES,
    VARIANTS,
    QoEState,
    consumption_times,
    mean_tbt_s,
    qoe,
    qoe_of_state,
    ttft_s,
)
from andes_gym.qoe.prediction import predict_qoe, predict_qoe_many, qoe_if_completed_at
from andes_gym.qoe.tracker import E1_ROW, FLOAT_ROWS, QoETracker

__all__ = [
    "E1_ROW",
    "FLOAT_ROWS",
    "ON_TIME_TOL_S",
    "PENDING_MODES",
    "VARIANTS",
    "QoEState",
    "QoETracker",
    "consumption_times",
    "mean_tbt_s",
    "predict_qoe",
    "predict_qoe_many",
    "qoe",
    "qoe_if_completed_at",
    "qoe_of_state",
    "ttft_s",
]
