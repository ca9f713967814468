"""QoE targets per request: TTFT target and token delivery speed (docs/ANDES.md §3).

TTFT target = max(prompt_tokens / 5000, 1) s: prefill at 5000 tok/s, never below 1 s.

TDS distributions (the Andes authors' generators, as summarized in docs/ANDES.md §3):

- listening (voice): 5.1, 4.3, 4.2, 4.0, 3.8 tok/s with weights 28/52/11/6/3 %
  (mean 4.48 tok/s).
- reading (text): 3.2 tok/s with weight 79 %; the remaining 21 % spread evenly over
  5.3, 5.9, 6.5, 7.1, 7.7 tok/s (4.2 % each; the tail's values are our choice within the
  stated 5.3-7.7 range). Mean 3.89 tok/s.

The paper's prose quotes mean reading / listening speeds of 4.8 / 3.3 tok/s, which these
generators do not reproduce (3.89 / 4.48); we follow the generators because they define
the per-request mix the evaluation used. Use kind "fixed" with `tds_tok_s: 4.8` for a
single speed.

Time scaling: with `time_scale = s`, every TTFT target is multiplied by s and every TDS
divided by s. An engine whose step takes s times as long as the GPU's (the tiny CPU
engine: s ~ 0.01-0.02) then faces the same ratio of work to deadline, so the
contention shape is preserved.
"""

from __future__ import annotations

import math

import numpy as np

from andes_gym.workloads.config import TargetConfig

LISTENING_TDS_TOK_S = np.array([5.1, 4.3, 4.2, 4.0, 3.8])
LISTENING_WEIGHTS = np.array([0.28, 0.52, 0.11, 0.06, 0.03])
READING_TDS_TOK_S = np.array([3.2, 5.3, 5.9, 6.5, 7.1, 7.7])
READING_WEIGHTS = np.array([0.79] + [0.21 / 5] * 5)


def _check_time_scale(time_scale: float) -> None:
    if not (math.isfinite(time_scale) and time_scale > 0):
        raise ValueError(f"time_scale must be a positive finite number, got {time_scale}")


def ttft_targets(
    prompt_tokens: np.ndarray,
    *,
    prefill_tok_s: float = 5000.0,
    min_ttft_s: float = 1.0,
    time_scale: float = 1.0,
) -> np.ndarray:
    """TTFT targets: max(prompt_tokens / prefill_tok_s, min_ttft_s) * time_scale.

    Args:
        prompt_tokens: Prompt lengths in tokens.
        prefill_tok_s: Assumed prefill speed in tokens per second.
        min_ttft_s: Smallest target in seconds (before time scaling).
        time_scale: Multiplies every target.

    Returns:
        float64 array of targets in seconds.
    """
    _check_time_scale(time_scale)
    prompt = np.asarray(prompt_tokens, dtype=np.float64)
    return np.maximum(prompt / prefill_tok_s, min_ttft_s) * time_scale


def _discrete(
    rng: np.random.Generator, values: np.ndarray, weights: np.ndarray, n: int
) -> np.ndarray:
    return values[rng.choice(len(values), size=int(n), p=weights / weights.sum())]


def reading_tds(rng: np.random.Generator, n: int, *, time_scale: float = 1.0) -> np.ndarray:
    """Text-reading delivery speeds (tok/s), divided by `time_scale`."""
    _check_time_scale(time_scale)
    return _discrete(rng, READING_TDS_TOK_S, READING_WEIGHTS, n) / time_scale


def listening_tds(rng: np.random.Generator, n: int, *, time_scale: float = 1.0) -> np.ndarray:
    """Voice-listening delivery speeds (tok/s), divided by `time_scale`."""
    _check_time_scale(time_scale)
    return _discrete(rng, LISTENING_TDS_TOK_S, LISTENING_WEIGHTS, n) / time_scale


def mixed_tds(
    rng: np.random.Generator, n: int, voice_fraction: float, *, time_scale: float = 1.0
) -> np.ndarray:
    """Speeds of a population where a `voice_fraction` share listens and the rest reads.

    Args:
        rng: Source of randomness.
        n: Number of requests.
        voice_fraction: Probability in [0, 1] that a request is a voice one.
        time_scale: Divides every speed.

    Returns:
        float64 array of speeds in tokens per second.
    """
    _check_time_scale(time_scale)
    if not 0 <= voice_fraction <= 1:
        raise ValueError(f"voice_fraction must lie in [0, 1], got {voice_fraction}")
    values = np.concatenate([LISTENING_TDS_TOK_S, READING_TDS_TOK_S])
    weights = np.concatenate(
        [LISTENING_WEIGHTS * voice_fraction, READING_WEIGHTS * (1 - voice_fraction)]
    )
    return _discrete(rng, values, weights, n) / time_scale


def draw_tds(rng: np.random.Generator, n: int, cfg: TargetConfig) -> np.ndarray:
    """Delivery speeds for `n` requests as configured by `cfg` (time scaling included)."""
    if cfg.kind == "reading":
        return reading_tds(rng, n, time_scale=cfg.time_scale)
    if cfg.kind == "listening":
        return listening_tds(rng, n, time_scale=cfg.time_scale)
    if cfg.kind == "mixed":
        return mixed_tds(rng, n, cfg.voice_fraction, time_scale=cfg.time_scale)
    return np.full(int(n), cfg.tds_tok_s / cfg.time_scale)


def draw_ttft(prompt_tokens: np.ndarray, cfg: TargetConfig) -> np.ndarray:
    """TTFT targets for the given prompts as configured by `cfg` (time scaling included)."""
    if cfg.ttft_s is not None:
        return np.full(len(prompt_tokens), cfg.ttft_s * cfg.time_scale)
    return ttft_targets(
        prompt_tokens,
        prefill_tok_s=cfg.prefill_tok_s,
        min_ttft_s=cfg.min_ttft_s,
        time_scale=cfg.time_scale,
    )


def draw_targets(
    rng: np.random.Generator, prompt_tokens: np.ndarray, cfg: TargetConfig
) -> tuple[np.ndarray, np.ndarray]:
    """`(ttft_s, tds_tok_s)` for requests with the given prompt lengths.

    Args:
        rng: Source of randomness (only the TDS draw uses it).
        prompt_tokens: Prompt lengths in tokens (final, after any length scaling).
        cfg: Target configuration.

    Returns:
        Two float64 arrays: TTFT targets in seconds and TDS targets in tokens/s.
    """
    return draw_ttft(prompt_tokens, cfg), draw_tds(rng, len(prompt_tokens), cfg)
