"""Rendering of the scheduling environments: a text summary and token-curve images.

Works for any `SchedulingEnv`; engine-specific details (KV usage, running set) come from
the pending decision's capacity and candidates, or from the backend when it exposes them.
"""

from __future__ import annotations

import numpy as np

from andes_gym.extras import require
from andes_gym.qoe import consumption_times, qoe_of_state

_MAX_ROWS = 6  # requests listed by render_text
_MAX_CURVES = 4  # requests drawn by render_token_curves


def _kv_usage(env) -> tuple[int, int] | None:
    backend = env.backend
    used = getattr(backend, "kv_blocks_used", None)
    ctx = env.decision_context
    if ctx is not None:
        capacity = ctx[1]
        return capacity.total_kv_blocks - capacity.free_kv_blocks, capacity.total_kv_blocks
    profile = getattr(backend, "profile", None)
    if used is not None and profile is not None:
        return int(used), profile.kv.num_blocks
    return None


def render_text(env) -> str:
    """A few lines: engine time, running / waiting, KV usage, QoE so far, some requests.

    Args:
        env: A `SchedulingEnv` (unwrapped or not) after `reset`.
    """
    env = env.unwrapped
    if env.workload is None:
        return "(not reset)"
    backend, wl = env.backend, env.workload
    now = backend.now_s
    n_arrived = int(np.searchsorted(wl.arrival_s, now, side="right"))
    n_finished = int(backend.finished.sum())
    ctx = env.decision_context
    lines = []
    head = f"t={now:10.3f} s  decisions={env._num_steps}  arrived={n_arrived}/{len(wl)}"
    head += f"  finished={n_finished}"
    lines.append(head)
    if ctx is not None:
        cands = ctx[0]
        lines.append(
            f"running={cands.num_running}  waiting={len(cands) - cands.num_running}"
            f"  (candidates beyond the slots: {max(len(cands) - len(ctx[2]), 0)})"
        )
    kv = _kv_usage(env)
    if kv is not None:
        lines.append(f"KV blocks {kv[0]}/{kv[1]} ({100.0 * kv[0] / max(kv[1], 1):.1f}%)")
    if n_arrived:
        summary = env.episode_results()["qoe_summary"]
        lines.append(
            f"QoE so far (arrived, unfinished at their lower bound): mean "
            f"{summary['mean_qoe']:.4f}  p10 {summary['p10_qoe']:.4f}"
        )
    if ctx is not None and len(ctx[0]):
        cands = ctx[0]
        lines.append("  id   state    prompt  tokens/total  preempt  qoe_now  q_serve  q_wait")
        total = wl.output_tokens
        for c in ctx[2][:_MAX_ROWS]:
            rid = int(cands.request_id[c])
            state = "running" if cands.is_running[c] else "waiting"
            lines.append(
                f"{rid:5d}  {state:7s}  {int(cands.prompt_tokens[c]):6d}  "
                f"{int(cands.tokens_delivered[c]):5d}/{int(total[rid]):<6d}  "
                f"{int(cands.num_preemptions[c]):7d}  {cands.qoe_now[c]:7.3f}  "
                f"{cands.q_serve[c]:7.3f}  {cands.q_wait[c]:6.3f}"
            )
    return "\n".join(lines) + "\n"


def _pick_requests(env) -> np.ndarray:
    """Up to four requests with tokens: the two worst QoE so far, then the latest."""
    state = env.backend.tracker.state
    has = np.flatnonzero(state.num_tokens > 0)
    if not len(has):
        return has
    qoe = qoe_of_state(state.take(has))
    worst = has[np.argsort(qoe, kind="stable")[:2]]
    latest = [i for i in has[::-1] if i not in worst][: _MAX_CURVES - len(worst)]
    return np.concatenate((worst, np.asarray(latest, dtype=np.int64)))


def render_token_curves(env, width_px: int = 640, height_px: int = 480) -> np.ndarray:
    """Expected vs actual consumed-token curves of a few requests (like the Andes figures).

    For each request: the expected curve (token i consumed at `arrival + ttft + (i-1)/tds`)
    and the actual one (token i consumed at `a_i = max(d_i, a_{i-1} + 1/tds)`); the area
    between them is the QoE's delay area. Needs token times, recorded when the env was
    made with `render_mode="rgb_array"`.

    Args:
        env: A `SchedulingEnv` after `reset`.
        width_px: Image width.
        height_px: Image height.

    Returns:
        An RGB image, uint8 of shape `(height_px, width_px, 3)`.
    """
    FigureCanvasAgg = require(
        "matplotlib.backends.backend_agg", "render_mode='rgb_array'"
    ).FigureCanvasAgg
    Figure = require("matplotlib.figure", "render_mode='rgb_array'").Figure

    env = env.unwrapped
    dpi = 80
    fig = Figure(figsize=(width_px / dpi, height_px / dpi), dpi=dpi)
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    tracker = env.backend.tracker
    picks = _pick_requests(env) if env.workload is not None else np.zeros(0, dtype=np.int64)
    state = tracker.state
    colors = ("tab:blue", "tab:orange", "tab:green", "tab:red")
    for color, i in zip(colors, picks.tolist(), strict=False):
        d = tracker.token_times(i)
        if not len(d):
            continue
        tds, t0, ttft = state.tds_tok_s[i], state.arrival_s[i], state.ttft_s[i]
        n = np.arange(1, len(d) + 1)
        expected = t0 + ttft + (n - 1) / tds
        actual = consumption_times(d, tds=tds)
        q = qoe_of_state(state.take(i))[0]
        ax.step(expected - t0, n, where="post", color=color, linestyle="--", linewidth=1)
        ax.step(
            actual - t0, n, where="post", color=color, linewidth=1.5, label=f"req {i}: QoE {q:.2f}"
        )
    if len(picks):
        ax.legend(
            loc="upper left", fontsize=8, title="solid: actual, dashed: expected", title_fontsize=8
        )
    else:
        ax.text(
            0.5, 0.5, "no tokens delivered yet", ha="center", va="center", transform=ax.transAxes
        )
    ax.set_xlabel("time since arrival (s)")
    ax.set_ylabel("tokens consumed")
    ax.set_title(f"t = {env.backend.now_s:.2f} s")
    fig.tight_layout()
    canvas.draw()
    rgba = np.asarray(canvas.buffer_rgba())
    return np.ascontiguousarray(rgba[:, :, :3])
