"""Seeded prompt/output length generators.

Every generator returns `(prompt_tokens, output_tokens)`, two int64 arrays of length `n`.
Lengths are computed in three steps: draw a raw length, multiply by `scale` (e.g. 0.1
shrinks a GPU-sized workload for the tiny CPU engine), then round and clip to
`[1, max_*_tokens]`. `max_*_tokens` is therefore a bound on the *final* lengths, in the
engine's tokens.

The lognormal families (`sharegpt`, `summarization`) are calibrated: the location of the
lognormal is solved so that the mean *after* clipping equals `scale * mean`, so shrinking
`scale` or tightening a clip keeps the mean where it was asked to be (as long as it lies
strictly between 1 and the clip). Prompt and output lengths are drawn independently.
"""

from __future__ import annotations

import math

import numpy as np

# ShareGPT as reported in the vLLM paper (Kwon et al., SOSP'23): mean input 161 tokens,
# mean output 338. The spreads are our choice (ShareGPT is strongly right-skewed): with
# them (and the clip) the median prompt is ~78 tokens and the median output ~250.
SHAREGPT_PROMPT_MEAN = 161.0
SHAREGPT_PROMPT_SIGMA = 1.3
SHAREGPT_OUTPUT_MEAN = 338.0
SHAREGPT_OUTPUT_SIGMA = 0.9
# vLLM's ShareGPT benchmark drops prompts >= 1024 tokens and pairs >= 2048 tokens.
SHAREGPT_MAX_PROMPT_TOKENS = 1024
SHAREGPT_MAX_OUTPUT_TOKENS = 1024

# Summarization of long documents (arXiv-style): ~95% of prompts in 1k-4k tokens,
# ~95% of outputs in 110-350 tokens.
SUMMARIZATION_PROMPT_MEAN = 2200.0
SUMMARIZATION_PROMPT_SIGMA = 0.35
SUMMARIZATION_OUTPUT_MEAN = 200.0
SUMMARIZATION_OUTPUT_SIGMA = 0.3
SUMMARIZATION_MAX_PROMPT_TOKENS = 4096
SUMMARIZATION_MAX_OUTPUT_TOKENS = 1024

Lengths = tuple[np.ndarray, np.ndarray]


def _std_normal_cdf(z: float) -> float:
    return 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))


def _clipped_lognormal_mean(mu: float, sigma: float, max_tokens: float) -> float:
    """E[min(max(X, 1), max_tokens)] for X ~ LogNormal(mu, sigma), max_tokens >= 1."""
    raw_mean = math.exp(mu + 0.5 * sigma**2)
    if math.isinf(max_tokens):
        capped = raw_mean
    else:
        log_max = math.log(max_tokens)
        capped = raw_mean * _std_normal_cdf((log_max - mu - sigma**2) / sigma) + max_tokens * (
            1.0 - _std_normal_cdf((log_max - mu) / sigma)
        )
    # Lifting values below 1 up to 1 adds E[(1 - X)+].
    floor_gain = _std_normal_cdf(-mu / sigma) - raw_mean * _std_normal_cdf((-mu - sigma**2) / sigma)
    return capped + floor_gain


def _solve_mu(mean_tokens: float, sigma: float, max_tokens: float) -> float:
    """Location of a lognormal whose [1, max_tokens]-clipped mean is `mean_tokens`."""
    lo = math.log(mean_tokens) - 0.5 * sigma**2 - 1.0  # clipping at 1 only raises the mean
    hi = (math.log(max_tokens) if math.isfinite(max_tokens) else math.log(mean_tokens)) + 20.0
    # The clipped mean increases strictly in mu: bisect to float precision.
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if _clipped_lognormal_mean(mid, sigma, max_tokens) < mean_tokens:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12:
            break
    return 0.5 * (lo + hi)


def _finish(raw: np.ndarray, max_tokens: float | None, what: str) -> np.ndarray:
    """Rounds to whole tokens and clips to [1, max_tokens]."""
    upper = math.inf if max_tokens is None else float(max_tokens)
    if upper < 1:
        raise ValueError(f"max {what} tokens must be >= 1, got {max_tokens}")
    return np.clip(np.rint(raw), 1, upper).astype(np.int64)


def _check_n_scale(n: int, scale: float) -> None:
    if int(n) != n or n < 0:
        raise ValueError(f"n must be a non-negative integer, got {n}")
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be a positive finite number, got {scale}")


def scale_lengths(tokens: np.ndarray, scale: float, max_tokens: int | None) -> np.ndarray:
    """Given lengths (e.g. from a trace) scaled, rounded and clipped to [1, max_tokens].

    Args:
        tokens: Lengths in tokens.
        scale: Multiplies every length (> 0).
        max_tokens: Upper clip of the result, or None for no clip.

    Returns:
        int64 array of the same size.
    """
    _check_n_scale(len(tokens), scale)
    return _finish(np.asarray(tokens, dtype=np.float64) * scale, max_tokens, "scaled")


def lognormal_lengths(
    rng: np.random.Generator,
    n: int,
    mean_tokens: float,
    sigma: float,
    max_tokens: int | None,
) -> np.ndarray:
    """Lengths from a lognormal whose mean after rounding/clipping is `mean_tokens`.

    Args:
        rng: Source of randomness.
        n: Number of lengths.
        mean_tokens: Target mean of the final lengths (1 < mean < max_tokens).
        sigma: Log-space standard deviation (> 0); larger is more skewed.
        max_tokens: Upper clip of the final lengths, or None for no clip.

    Returns:
        int64 array of `n` lengths in [1, max_tokens].

    Raises:
        ValueError: If the mean is not strictly between 1 and `max_tokens`, or `sigma <= 0`.
    """
    upper = math.inf if max_tokens is None else float(max_tokens)
    if not (math.isfinite(sigma) and sigma > 0):
        raise ValueError(f"sigma must be a positive finite number, got {sigma}")
    if not 1.0 < mean_tokens < upper:
        raise ValueError(
            f"mean length {mean_tokens:.4g} tokens must lie strictly between 1 and the clip "
            f"{max_tokens}; adjust scale or the max_*_tokens clip"
        )
    mu = _solve_mu(mean_tokens, sigma, upper)
    return _finish(rng.lognormal(mu, sigma, size=int(n)), max_tokens, "lognormal")


def sharegpt(
    rng: np.random.Generator,
    n: int,
    *,
    scale: float = 1.0,
    max_prompt_tokens: int | None = SHAREGPT_MAX_PROMPT_TOKENS,
    max_output_tokens: int | None = SHAREGPT_MAX_OUTPUT_TOKENS,
) -> Lengths:
    """Chat-like lengths shaped after ShareGPT (mean prompt 161, mean output 338 tokens).

    Args:
        rng: Source of randomness.
        n: Number of requests.
        scale: Multiplies both means (0.1 gives mean output ~34 tokens).
        max_prompt_tokens: Clip of the final prompt lengths (None: no clip).
        max_output_tokens: Clip of the final output lengths (None: no clip).

    Returns:
        `(prompt_tokens, output_tokens)` int64 arrays.
    """
    _check_n_scale(n, scale)
    prompt = lognormal_lengths(
        rng, n, SHAREGPT_PROMPT_MEAN * scale, SHAREGPT_PROMPT_SIGMA, max_prompt_tokens
    )
    output = lognormal_lengths(
        rng, n, SHAREGPT_OUTPUT_MEAN * scale, SHAREGPT_OUTPUT_SIGMA, max_output_tokens
    )
    return prompt, output


def summarization(
    rng: np.random.Generator,
    n: int,
    *,
    scale: float = 1.0,
    max_prompt_tokens: int | None = SUMMARIZATION_MAX_PROMPT_TOKENS,
    max_output_tokens: int | None = SUMMARIZATION_MAX_OUTPUT_TOKENS,
) -> Lengths:
    """Long-document summarization: prompts of ~1k-4k tokens, outputs of ~100-350.

    Args:
        rng: Source of randomness.
        n: Number of requests.
        scale: Multiplies both means.
        max_prompt_tokens: Clip of the final prompt lengths (None: no clip).
        max_output_tokens: Clip of the final output lengths (None: no clip).

    Returns:
        `(prompt_tokens, output_tokens)` int64 arrays.
    """
    _check_n_scale(n, scale)
    prompt = lognormal_lengths(
        rng, n, SUMMARIZATION_PROMPT_MEAN * scale, SUMMARIZATION_PROMPT_SIGMA, max_prompt_tokens
    )
    output = lognormal_lengths(
        rng, n, SUMMARIZATION_OUTPUT_MEAN * scale, SUMMARIZATION_OUTPUT_SIGMA, max_output_tokens
    )
    return prompt, output


def fixed(
    prompt_tokens: int,
    output_tokens: int,
    n: int,
    *,
    scale: float = 1.0,
    max_prompt_tokens: int | None = None,
    max_output_tokens: int | None = None,
) -> Lengths:
    """Every request with the same lengths (after scaling, rounding and clipping).

    Args:
        prompt_tokens: Prompt length before scaling (>= 1).
        output_tokens: Output length before scaling (>= 1).
        n: Number of requests.
        scale: Multiplies both lengths.
        max_prompt_tokens: Clip of the final prompt length (None: no clip).
        max_output_tokens: Clip of the final output length (None: no clip).

    Returns:
        `(prompt_tokens, output_tokens)` int64 arrays.
    """
    _check_n_scale(n, scale)
    if prompt_tokens < 1 or output_tokens < 1:
        raise ValueError(
            f"fixed lengths must be >= 1, got prompt={prompt_tokens}, output={output_tokens}"
        )
    prompt = _finish(np.full(int(n), prompt_tokens * scale), max_prompt_tokens, "prompt")
    output = _finish(np.full(int(n), output_tokens * scale), max_output_tokens, "output")
    return prompt, output


def uniform(
    rng: np.random.Generator,
    prompt_lo: int,
    prompt_hi: int,
    output_lo: int,
    output_hi: int,
    n: int,
    *,
    scale: float = 1.0,
    max_prompt_tokens: int | None = None,
    max_output_tokens: int | None = None,
) -> Lengths:
    """Lengths drawn uniformly from integer ranges (inclusive), then scaled and clipped.

    Args:
        rng: Source of randomness.
        prompt_lo: Smallest prompt length (>= 1).
        prompt_hi: Largest prompt length (>= prompt_lo).
        output_lo: Smallest output length (>= 1).
        output_hi: Largest output length (>= output_lo).
        n: Number of requests.
        scale: Multiplies both lengths.
        max_prompt_tokens: Clip of the final prompt lengths (None: no clip).
        max_output_tokens: Clip of the final output lengths (None: no clip).

    Returns:
        `(prompt_tokens, output_tokens)` int64 arrays.
    """
    _check_n_scale(n, scale)
    for what, lo, hi in (("prompt", prompt_lo, prompt_hi), ("output", output_lo, output_hi)):
        if not 1 <= lo <= hi:
            raise ValueError(f"uniform {what} range must satisfy 1 <= lo <= hi, got [{lo}, {hi}]")
    prompt = rng.integers(prompt_lo, prompt_hi, size=int(n), endpoint=True)
    output = rng.integers(output_lo, output_hi, size=int(n), endpoint=True)
    return (
        _finish(prompt * scale, max_prompt_tokens, "prompt"),
        _finish(output * scale, max_output_tokens, "output"),
    )
