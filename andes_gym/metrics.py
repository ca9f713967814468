"""Per-request and per-episode serving metrics, computed one way for every caller."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from andes_gym.qoe import QoEState, mean_tbt_s, predict_qoe
from andes_gym.qoe import ttft_s as measured_ttft_s

SUMMARY_FIELDS: tuple[str, ...] = (
    "num_requests",
    "mean_qoe",
    "mean_qoe_fixed",
    "p10_qoe",
    "frac_qoe_ge_095",
    "ttft_p50_s",
    "ttft_p90_s",
    "tbt_mean_s",
    "throughput_tok_s",
    "preemptions_per_request",
    "makespan_s",
    "num_unfinished",
)


@dataclass(frozen=True, eq=False)
class RequestMetrics:
    """Per-request results of an episode (arrays aligned with the workload's requests).

    QoE of unfinished requests is the lower bound of docs/ANDES.md §1 (missing tokens
    delivered at the end of the window).
    """

    qoe: np.ndarray
    qoe_fixed: np.ndarray
    qoe_area: np.ndarray
    ttft_s: np.ndarray
    tbt_mean_s: np.ndarray
    num_tokens: np.ndarray
    num_preemptions: np.ndarray
    finished: np.ndarray

    def rows(self) -> list[dict]:
        """One dict per request, for CSV writers."""
        names = self.__dataclass_fields__
        return [
            {name: getattr(self, name)[i].item() for name in names} for i in range(len(self.qoe))
        ]


def request_metrics(
    state: QoEState,
    total_tokens: np.ndarray,
    num_preemptions: np.ndarray,
    finished: np.ndarray,
    end_s: float,
) -> RequestMetrics:
    """Per-request metrics of the requests in `state` (already arrived) at time `end_s`.

    Args:
        state: QoE summaries of the requests.
        total_tokens: Each request's full output length.
        num_preemptions: Preemptions per request.
        finished: Whether each request delivered all its tokens.
        end_s: End of the evaluation window (for the unfinished lower bound).
    """

    def lower_bound(variant: str) -> np.ndarray:
        return predict_qoe(
            state,
            now_s=end_s,
            horizon_s=end_s,
            rate_tok_s=0.0,
            variant=variant,
            total_tokens=total_tokens,
            pending="all",
        )

    return RequestMetrics(
        qoe=lower_bound("delay"),
        qoe_fixed=lower_bound("delay_fixed"),
        qoe_area=lower_bound("area"),
        ttft_s=measured_ttft_s(state),
        tbt_mean_s=mean_tbt_s(state),
        num_tokens=state.num_tokens.copy(),
        num_preemptions=np.asarray(num_preemptions, dtype=np.int64).copy(),
        finished=np.asarray(finished, dtype=bool).copy(),
    )


def summarize(metrics: RequestMetrics, start_s: float, end_s: float) -> dict[str, float]:
    """Episode summary with the fields of `SUMMARY_FIELDS`.

    TTFT percentiles are over requests that received a first token; throughput counts
    delivered output tokens over `[start_s, end_s]`.
    """
    n = len(metrics.qoe)
    ttft = metrics.ttft_s[np.isfinite(metrics.ttft_s)]
    tbt = metrics.tbt_mean_s[np.isfinite(metrics.tbt_mean_s)]
    span = max(end_s - start_s, 1e-12)

    def pct(values: np.ndarray, q: float) -> float:
        return float(np.percentile(values, q)) if len(values) else float("nan")

    return {
        "num_requests": n,
        "mean_qoe": float(metrics.qoe.mean()) if n else float("nan"),
        "mean_qoe_fixed": float(metrics.qoe_fixed.mean()) if n else float("nan"),
        "p10_qoe": pct(metrics.qoe, 10),
        "frac_qoe_ge_095": float((metrics.qoe >= 0.95).mean()) if n else float("nan"),
        "ttft_p50_s": pct(ttft, 50),
        "ttft_p90_s": pct(ttft, 90),
        "tbt_mean_s": float(tbt.mean()) if len(tbt) else float("nan"),
        "throughput_tok_s": float(metrics.num_tokens.sum()) / span,
        "preemptions_per_request": float(metrics.num_preemptions.mean()) if n else float("nan"),
        "makespan_s": float(end_s - start_s),
        "num_unfinished": int(n - metrics.finished.sum()),
    }
