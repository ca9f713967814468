"""Builds a `Workload` from a `WorkloadConfig` and a seed.

The seed is split (numpy `SeedSequence.spawn`) into independent streams for arrivals,
lengths and targets, so changing one part of a config leaves the draws of the others
unchanged: two configs that differ only in their targets get identical arrivals and
lengths for the same seed (common random numbers for A/B comparisons).

Order of operations: arrivals (generated, or read from the trace, windowed and cut to
`num_requests`) -> divided by `arrivals.rate_scale` -> lengths -> targets (TTFT from the
final prompt lengths). A `StreamsConfig` draws each stream from its own seed
(`stream_seed`) and merges the streams by arrival (`merge_workloads`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from andes_gym.config_files import ConfigError
from andes_gym.workloads import arrivals, lengths
from andes_gym.workloads.config import (
    AnyWorkloadConfig,
    ArrivalConfig,
    LengthConfig,
    StreamsConfig,
    WorkloadConfig,
    load_workload_config,
)
from andes_gym.workloads.spec import Workload
from andes_gym.workloads.targets import draw_targets
from andes_gym.workloads.traces import TraceData, read_trace


def generate_arrivals(rng: np.random.Generator, cfg: ArrivalConfig, n: int) -> np.ndarray:
    """`n` arrival times (seconds) from a generative arrival config (not "trace").

    `rate_scale` is not applied here; `make_workload` applies it to every kind.
    """
    if cfg.kind == "poisson":
        return arrivals.poisson(rng, cfg.rate_rps, n)
    if cfg.kind == "gamma":
        return arrivals.gamma(rng, cfg.rate_rps, cfg.cv, n)
    if cfg.kind == "bursty":
        return arrivals.cyclic_bursts(rng, cfg.rate_rps, cfg.intensity, cfg.duty, cfg.period_s, n)
    raise ValueError(f"arrivals.kind={cfg.kind!r} is not generative; read the trace instead")


def _clip_kwargs(cfg: LengthConfig) -> dict[str, int]:
    """The clips the config sets explicitly (None keeps the generator's own default)."""
    clips = {"max_prompt_tokens": cfg.max_prompt_tokens, "max_output_tokens": cfg.max_output_tokens}
    return {key: value for key, value in clips.items() if value is not None}


def generate_lengths(
    rng: np.random.Generator, cfg: LengthConfig, n: int
) -> tuple[np.ndarray, np.ndarray]:
    """`(prompt_tokens, output_tokens)` for `n` requests from a generative length config."""
    clips = _clip_kwargs(cfg)
    if cfg.kind == "sharegpt":
        return lengths.sharegpt(rng, n, scale=cfg.scale, **clips)
    if cfg.kind == "summarization":
        return lengths.summarization(rng, n, scale=cfg.scale, **clips)
    if cfg.kind == "fixed":
        return lengths.fixed(cfg.prompt_tokens, cfg.output_tokens, n, scale=cfg.scale, **clips)
    if cfg.kind == "uniform":
        (p_lo, p_hi), (o_lo, o_hi) = cfg.prompt_range, cfg.output_range
        return lengths.uniform(rng, p_lo, p_hi, o_lo, o_hi, n, scale=cfg.scale, **clips)
    raise ValueError(f"lengths.kind={cfg.kind!r} is not generative; it comes from the trace")


def load_trace_rows(cfg: WorkloadConfig) -> TraceData:
    """The trace rows a trace-based config uses: read, windowed, cut to `num_requests`.

    Raises:
        ConfigError: If the window holds no request, or fewer than `num_requests` (naming
            the trace file and the key).
        TraceError: If the file is malformed.
    """
    arr = cfg.arrivals
    trace = read_trace(
        arr.trace_path, arr.trace_format, model=arr.trace_model, log_type=arr.trace_log_type
    )
    if arr.trace_window_s is not None:
        trace = trace.window(*arr.trace_window_s)
    if len(trace) == 0:
        key = "arrivals.trace_path" if arr.trace_window_s is None else "arrivals.trace_window_s"
        raise ConfigError(
            f"{key}: no requests in window {arr.trace_window_s} "
            f"({trace.num_dropped} rows dropped by the reader)",
            source=arr.trace_path,
            key=key,
        )
    if cfg.num_requests is not None:
        if cfg.num_requests > len(trace):
            raise ConfigError(
                f"num_requests={cfg.num_requests} but the trace "
                f"(window {arr.trace_window_s}) holds only {len(trace)} requests",
                source=arr.trace_path,
                key="num_requests",
            )
        trace = trace.select(slice(0, cfg.num_requests))
    return trace


def stream_seed(seed: int, index: int) -> int:
    """The seed stream `index` of a `StreamsConfig` is drawn with in episode `seed`
    (independent per stream, so editing one stream leaves the others' requests alone)."""
    return int(np.random.SeedSequence([int(seed), int(index), 0x5354]).generate_state(1)[0])


def merge_workloads(parts: list[Workload], name: str) -> Workload:
    """One workload holding every request of `parts`, sorted by arrival (stable)."""
    arrival = np.concatenate([w.arrival_s for w in parts])
    order = np.argsort(arrival, kind="stable")
    return Workload(
        arrival_s=arrival[order],
        prompt_tokens=np.concatenate([w.prompt_tokens for w in parts])[order],
        output_tokens=np.concatenate([w.output_tokens for w in parts])[order],
        ttft_s=np.concatenate([w.ttft_s for w in parts])[order],
        tds_tok_s=np.concatenate([w.tds_tok_s for w in parts])[order],
        name=name,
    )


def make_workload(
    cfg: AnyWorkloadConfig | str | Path, seed: int, trace: TraceData | None = None
) -> Workload:
    """Builds the workload `cfg` describes; the same config and seed give identical arrays.

    Args:
        cfg: A config, or a YAML path / preset name for `load_workload_config`.
        seed: Non-negative integer seed.
        trace: The rows of a trace-based config, already read with `load_trace_rows`
            (so callers drawing many episodes read the file once); read here if None.

    Returns:
        The workload, named `cfg.name`.

    Raises:
        ValueError: On a bad seed.
        ConfigError: On a config whose draw falls outside `Workload`'s bounds (arrivals
            more than `MAX_TIME_S` in, say), naming the section to change.
        TraceError: If a trace file is malformed.
    """
    if not isinstance(cfg, WorkloadConfig | StreamsConfig):
        cfg = load_workload_config(cfg)
    if not (isinstance(seed, int | np.integer) and not isinstance(seed, bool) and seed >= 0):
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if isinstance(cfg, StreamsConfig):
        parts = [make_workload(s, stream_seed(seed, i)) for i, s in enumerate(cfg.streams)]
        return merge_workloads(parts, cfg.name)
    arrival_rng, length_rng, target_rng = (
        np.random.default_rng(s) for s in np.random.SeedSequence(int(seed)).spawn(3)
    )
    if cfg.arrivals.kind != "trace":
        trace = None
    elif trace is None:
        trace = load_trace_rows(cfg)
    if trace is None:
        n = cfg.num_requests
        arrival_s = generate_arrivals(arrival_rng, cfg.arrivals, n)
    else:
        n = len(trace)
        arrival_s = trace.arrival_s
    arrival_s = arrival_s / cfg.arrivals.rate_scale

    if cfg.lengths.kind == "trace":
        max_prompt, max_output = cfg.lengths.max_prompt_tokens, cfg.lengths.max_output_tokens
        prompt = lengths.scale_lengths(trace.prompt_tokens, cfg.lengths.scale, max_prompt)
        output = lengths.scale_lengths(trace.output_tokens, cfg.lengths.scale, max_output)
    else:
        prompt, output = generate_lengths(length_rng, cfg.lengths, n)

    ttft_s, tds_tok_s = draw_targets(target_rng, prompt, cfg.targets)
    # Targets the trace carries win over drawn ones (drawing first keeps the stream fixed).
    if trace is not None and trace.ttft_s is not None:
        ttft_s = trace.ttft_s * cfg.targets.time_scale
    if trace is not None and trace.tds_tok_s is not None:
        tds_tok_s = trace.tds_tok_s / cfg.targets.time_scale
    try:
        return Workload(
            arrival_s=arrival_s,
            prompt_tokens=prompt,
            output_tokens=output,
            ttft_s=ttft_s,
            tds_tok_s=tds_tok_s,
            name=cfg.name,
        )
    except ValueError as exc:  # a draw beyond Workload's bounds (e.g. a tiny rate)
        field = str(exc).split("[", 1)[0].removeprefix("Workload.")
        key = _SECTION_OF_FIELD.get(field, "num_requests")
        raise ConfigError(
            f"{key}: the config draws requests out of range ({exc}); change {key}",
            source=f"workload {cfg.name!r}",
            key=key,
        ) from None


# The config section that sets each of Workload's arrays (for errors about a draw).
_SECTION_OF_FIELD = {
    "arrival_s": "arrivals",
    "prompt_tokens": "lengths",
    "output_tokens": "lengths",
    "ttft_s": "targets",
    "tds_tok_s": "targets",
}
