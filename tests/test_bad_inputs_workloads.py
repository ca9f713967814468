"""Bad workload, trace and engine-profile inputs: each is refused with an error that names
the file and the key, line or column, never accepted silently or turned into a traceback.

The property-based tests feed random configs and random CSV rows to the loaders: the only
outcomes allowed are a valid object or a `ConfigError` (of which `TraceError` and
`ProfileError` are kinds) that says where the problem is.
"""

from __future__ import annotations

import copy
import math
from decimal import Decimal, localcontext
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from surrogate_support import TINY_LINEAR_PROFILE

import andes_gym.envs  # noqa: F401 (registers the ids)
from andes_gym.agents.adapter import PolicyAgent
from andes_gym.agents.registry import make_policy
from andes_gym.config_files import ConfigError, available_configs
from andes_gym.engine_bridge.engine import (
    LiveEngineConfig,
    live_engine_config_from_dict,
    load_engine_config,
)
from andes_gym.evaluation import run_episode
from andes_gym.surrogate import ProfileError, engine_profile_from_dict, load_engine_profile
from andes_gym.workloads import (
    StreamsConfig,
    TraceError,
    Workload,
    load_workload_config,
    make_workload,
    read_trace,
    read_trace_workload,
    workload_config_from_dict,
)
from andes_gym.workloads.spec import MAX_TIME_S, MAX_TOKENS

# --- 1. absolute timestamps: a project trace is re-based like the public formats ----------

PROJECT_FULL_HEADER = "arrival_s,prompt_tokens,output_tokens,ttft_s,tds_tok_s\n"


def _contended_rows(n: int = 30) -> list[tuple[str, int, int]]:
    """Rows that contend for the cpu_tiny engine (so QoE is well below 1), times rounded
    to 0.1 ms as a logger would write them."""
    rng = np.random.default_rng(3)
    times = np.round(np.cumsum(rng.exponential(0.002, n)) + 0.0123, 4)
    return [(f"{t:.4f}", int(rng.integers(5, 60)), int(rng.integers(20, 80))) for t in times]


def _write_shifted(path: Path, rows, shift: str) -> Path:
    """The rows with `shift` seconds added to every time, exactly (in decimal)."""
    lines = [PROJECT_FULL_HEADER]
    with localcontext(prec=100):
        lines += [f"{Decimal(t) + Decimal(shift)},{p},{o},0.01,500.0\n" for t, p, o in rows]
    path.write_text("".join(lines))
    return path


def _episode(workload, simulator: str) -> tuple[dict, dict]:
    env = gym.make(
        "andes_gym/Surrogate-v0", workload=workload, engine="cpu_tiny", simulator=simulator
    )
    result = run_episode(env, PolicyAgent(make_policy("fcfs")), seed=0)
    env.close()
    summary = {k: v for k, v in result.summary.items() if k != "decision_ms_p50"}
    return summary, dict(vars(result.requests))


@pytest.mark.parametrize("simulator", ["compiled", "python"])
def test_shifted_project_trace_gives_the_same_episode(tmp_path: Path, simulator: str) -> None:
    rows = _contended_rows()
    episodes = []
    for shift in ("0", "1e12", "1e15"):
        path = _write_shifted(tmp_path / f"shift_{shift}.csv", rows, shift)
        trace = read_trace(path)
        assert trace.arrival_s[0] == 0.0
        config = {
            "name": "shifted",
            "arrivals": {"kind": "trace", "trace_path": str(path)},
            "lengths": {"kind": "trace"},
        }
        by_config = _episode(config, simulator)
        by_workload = _episode(read_trace_workload(path), simulator)
        assert _same(by_config, by_workload)
        episodes.append(by_config)
    summary = episodes[0][0]
    assert summary["mean_qoe"] < 0.9  # contended: a shift that broke timing would show
    for other in episodes[1:]:
        assert _same(episodes[0], other), (episodes[0][0], other[0])


def _same(a: tuple[dict, dict], b: tuple[dict, dict]) -> bool:
    if a[0] != b[0] or a[1].keys() != b[1].keys():
        return False
    return all(np.array_equal(np.asarray(a[1][k]), np.asarray(b[1][k])) for k in a[1])


def test_shifted_trace_gives_the_same_workload(tmp_path: Path) -> None:
    rows = _contended_rows(12)
    base = read_trace_workload(_write_shifted(tmp_path / "a.csv", rows, "0"))
    for shift in ("1e12", "1e15", "1700000000.25"):
        again = read_trace_workload(_write_shifted(tmp_path / f"{shift}.csv", rows, shift))
        assert again.equals(base)
    assert base.arrival_s[0] == 0.0


def test_burstgpt_times_are_rebased_exactly(tmp_path: Path) -> None:
    header = "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n"
    body = "{},ChatGPT,5,5,10,API log\n"
    a = tmp_path / "a.csv"
    a.write_text(header + body.format("0.3") + body.format("0.7"))
    b = tmp_path / "b.csv"
    b.write_text(header + body.format("1000000000000000.3") + body.format("1000000000000000.7"))
    small, shifted = read_trace(a, "burstgpt"), read_trace(b, "burstgpt")
    assert shifted.arrival_s.tolist() == small.arrival_s.tolist()
    # Exact: in floats, 0.7 - 0.3 is 0.39999999999999997.
    assert small.arrival_s.tolist() == [0.0, 0.4]


# --- 2. a UTF-8 byte-order mark ------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "text"),
    [
        ("project", "arrival_s,prompt_tokens,output_tokens\n0,5,5\n1,6,7\n"),
        ("azure", "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46,5,5\n"),
        ("burstgpt", "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n"
         "3,ChatGPT,5,5,10,API log\n"),
    ],
)  # fmt: skip
def test_utf8_bom_is_accepted(tmp_path: Path, fmt: str, text: str) -> None:
    plain = tmp_path / "plain.csv"
    plain.write_text(text, encoding="utf-8")
    bom = tmp_path / "bom.csv"
    bom.write_text(text, encoding="utf-8-sig")
    assert bom.read_bytes().startswith(b"\xef\xbb\xbf")
    a, b = read_trace(plain, fmt), read_trace(bom, fmt)
    assert a.arrival_s.tolist() == b.arrival_s.tolist()
    assert a.prompt_tokens.tolist() == b.prompt_tokens.tolist()


# --- 3. bytes that are not UTF-8 text ------------------------------------------------------

LATIN1_ROW = "0,5,5\n1,5,5\n2,5,\xe9\n".encode("latin-1")


@pytest.mark.parametrize("fmt", ["project", "azure", "burstgpt"])
def test_non_utf8_trace_names_file_and_line(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / "latin1.csv"
    path.write_bytes(b"arrival_s,prompt_tokens,output_tokens\n" + LATIN1_ROW)
    with pytest.raises(TraceError) as info:
        read_trace(path, fmt)
    assert str(path) in str(info.value) and "line 4" in str(info.value)
    assert "UTF-8" in str(info.value)
    assert info.value.line == 4 and isinstance(info.value, ConfigError)


def test_binary_garbage_trace_is_a_trace_error(tmp_path: Path) -> None:
    path = tmp_path / "garbage.csv"
    path.write_bytes(bytes(range(256)) * 8)
    with pytest.raises(TraceError, match="garbage.csv"):
        read_trace(path)


def test_huge_csv_field_is_a_trace_error(tmp_path: Path) -> None:
    path = tmp_path / "huge.csv"
    path.write_text('arrival_s,prompt_tokens,output_tokens\n0,5,5\n1,"' + "9" * 200_000 + '",5\n')
    with pytest.raises(TraceError) as info:
        read_trace(path)
    assert "huge.csv" in str(info.value) and info.value.line == 3


def test_trace_errors_are_config_errors() -> None:
    err = TraceError("t.csv", 3, "arrival_s", "bad")
    assert isinstance(err, ConfigError) and isinstance(err, ValueError)
    assert (err.path, err.line, err.column, err.source) == ("t.csv", 3, "arrival_s", "t.csv")
    assert str(err) == "t.csv, line 3, column 'arrival_s': bad"


@pytest.mark.parametrize(
    "load",
    [load_workload_config, load_engine_profile, load_engine_config],
    ids=["workload", "engine_profile", "live_engine"],
)
@pytest.mark.parametrize(
    "content",
    [b"name: x\nkv: \xff\xfe\n", b"\x00\x01\x02{[:", b"name: [unclosed\n  kv: 1\n"],
    ids=["latin1", "binary", "bad_yaml"],
)
def test_unreadable_yaml_names_the_file(tmp_path: Path, load, content: bytes) -> None:
    path = tmp_path / "broken.yaml"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as info:
        load(str(path))
    assert str(path) in str(info.value)


# --- 4. cells out of range -----------------------------------------------------------------

HEADER = "arrival_s,prompt_tokens,output_tokens,ttft_s,tds_tok_s\n"


@pytest.mark.parametrize(
    ("row", "column", "needle"),
    [
        ("0,1e30,5,1,5", "prompt_tokens", "at most"),
        ("0,5,99999999999999999999999,1,5", "output_tokens", "at most"),
        ("0,5,1e19,1,5", "output_tokens", "at most"),
        ("0,5,inf,1,5", "output_tokens", "whole number"),
        ("0,5,-inf,1,5", "output_tokens", "whole number"),
        ("0,nan,5,1,5", "prompt_tokens", "whole number"),
        ("0,2.5,5,1,5", "prompt_tokens", "whole number"),
        ("0,-3,5,1,5", "prompt_tokens", "negative"),
        ("inf,5,5,1,5", "arrival_s", "finite"),
        ("1e400,5,5,1,5", "arrival_s", "finite"),
        ("0,5,5,nan,5", "ttft_s", "finite"),
        ("0,5,5,inf,5", "ttft_s", "finite"),
        ("0,5,5,-1,5", "ttft_s", ">= 0"),
        ("0,5,5,1e300,5", "ttft_s", "at most"),
        ("0,5,5,1,0", "tds_tok_s", "> 0"),
        ("0,5,5,1,-2", "tds_tok_s", "> 0"),
        ("0,5,5,1,inf", "tds_tok_s", "finite"),
        ("0,5,5,1,1e300", "tds_tok_s", "at most"),
    ],
)
def test_out_of_range_cells_name_file_line_and_column(
    tmp_path: Path, row: str, column: str, needle: str
) -> None:
    path = tmp_path / "cells.csv"
    path.write_text(HEADER + "0,5,5,1,5\n" + row + "\n")
    with pytest.raises(TraceError) as info:
        read_trace(path)
    message = str(info.value)
    assert str(path) in message and "line 3" in message and f"column {column!r}" in message
    assert needle in message, message
    assert info.value.line == 3 and info.value.column == column


def test_trace_span_beyond_the_bound_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "span.csv"
    path.write_text(HEADER + "5,5,5,1,5\n6,5,5,1,5\n" + f"{5 + 2 * MAX_TIME_S},5,5,1,5\n")
    with pytest.raises(TraceError) as info:
        read_trace(path)
    assert info.value.line == 4 and info.value.column == "arrival_s"
    assert "after the first" in str(info.value)


def test_token_bound_is_what_the_engine_arrays_hold(tmp_path: Path) -> None:
    path = tmp_path / "max.csv"
    path.write_text(HEADER + f"0,{MAX_TOKENS},5,1,5\n1,{MAX_TOKENS + 1},5,1,5\n")
    with pytest.raises(TraceError) as info:
        read_trace(path)
    assert info.value.line == 3
    assert np.iinfo(np.int32).max == MAX_TOKENS


@pytest.mark.parametrize(
    ("fmt", "text", "line", "column"),
    [
        ("azure", "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46,1e30,5\n", 2,
         "ContextTokens"),
        ("burstgpt", "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n"
         "3,ChatGPT,5,1e25,10,API log\n", 2, "Response tokens"),
        ("burstgpt", "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n"
         "1e309,ChatGPT,5,5,10,API log\n", 2, "Timestamp"),
        ("azure", "TIMESTAMP,ContextTokens,GeneratedTokens\n0001-01-01 00:00:00,5,5\n"
         "9999-12-31 00:00:00,5,5\n", 3, "TIMESTAMP"),
    ],
)  # fmt: skip
def test_public_formats_out_of_range(
    tmp_path: Path, fmt: str, text: str, line: int, column: str
) -> None:
    path = tmp_path / "public.csv"
    path.write_text(text)
    with pytest.raises(TraceError) as info:
        read_trace(path, fmt)
    assert (info.value.line, info.value.column) == (line, column)


def test_workload_arrays_are_bounded() -> None:
    ok = dict(arrival_s=[0.0], prompt_tokens=[5], output_tokens=[5], ttft_s=[1.0], tds_tok_s=[5.0])
    Workload(**ok)
    for name, value in [
        ("prompt_tokens", [2**40]),
        ("arrival_s", [1e15]),
        ("ttft_s", [1e300]),
        ("tds_tok_s", [1e300]),
    ]:
        with pytest.raises(ValueError, match=name):
            Workload(**(ok | {name: value}))
    with pytest.raises(ValueError, match="prompt_tokens"):
        Workload(**(ok | {"prompt_tokens": [2.5]}))


# --- other bad trace files -----------------------------------------------------------------


def test_duplicate_column_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "dup.csv"
    path.write_text("arrival_s,prompt_tokens,output_tokens,prompt_tokens\n0,5,5,7\n")
    with pytest.raises(TraceError, match="duplicate column") as info:
        read_trace(path)
    assert info.value.column == "prompt_tokens" and info.value.line == 1


def test_header_only_trace_in_a_config_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "header.csv"
    path.write_text("arrival_s,prompt_tokens,output_tokens\n")
    config = {
        "name": "h",
        "arrivals": {"kind": "trace", "trace_path": str(path)},
        "lengths": {"kind": "trace"},
    }
    with pytest.raises(ConfigError, match="header.csv") as info:
        make_workload(workload_config_from_dict(config), 0)
    assert info.value.key == "arrivals.trace_path"


def test_header_only_trace_read_as_a_workload_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "header.csv"
    path.write_text(PROJECT_FULL_HEADER)
    with pytest.raises(ConfigError, match="no requests"):
        read_trace_workload(path)


# --- 5. engine profiles --------------------------------------------------------------------


def _profile(**sections) -> dict:
    data = copy.deepcopy(TINY_LINEAR_PROFILE)
    for path, value in sections.items():
        *parents, leaf = path.split("__")
        node = data
        for key in parents:
            node = node[key]
        node[leaf] = value
    return data


def test_all_zero_latency_is_rejected(tmp_path: Path) -> None:
    zeros = {
        "kind": "linear",
        "base_s": 0.0,
        "per_prefill_token_s": 0.0,
        "per_decode_seq_s": 0.0,
        "per_context_token_s": 0.0,
    }
    with pytest.raises(ProfileError, match="latency") as info:
        engine_profile_from_dict(_profile(latency=zeros))
    assert info.value.key is not None and info.value.key.startswith("latency")
    # A zero base is fine while every non-empty iteration costs something ...
    engine_profile_from_dict(_profile(latency__base_s=0.0))
    # ... but not when a prefill-only iteration would be free.
    free_prefill = {"base_s": 0.0, "per_prefill_token_s": 0.0, "per_context_token_s": 0.0}
    with pytest.raises(ProfileError, match="one prefill token"):
        engine_profile_from_dict(_profile(latency=TINY_LINEAR_PROFILE["latency"] | free_prefill))
    path = tmp_path / "zero_latency.yaml"
    path.write_text(
        "name: z\nkv: {num_blocks: 16, block_size: 4}\n"
        "limits: {max_num_seqs: 4, max_num_batched_tokens: 16, max_model_len: 64}\n"
        "latency: {kind: linear, base_s: 0, per_prefill_token_s: 0, per_decode_seq_s: 0,"
        " per_context_token_s: 0}\n"
    )
    with pytest.raises(ProfileError, match="zero_latency.yaml"):
        load_engine_profile(str(path))


def test_roofline_zero_latency_is_rejected() -> None:
    profile = load_engine_profile("llama7b_a100")
    raw = {
        "name": "r",
        "kv": {"num_blocks": 10, "block_size": 16},
        "limits": {"max_num_seqs": 8, "max_num_batched_tokens": 64, "max_model_len": 160},
        "latency": {
            "kind": "roofline",
            "model": {**vars(profile.latency.model), "num_params": 1e-300},
            "hardware": {**vars(profile.latency.hardware), "overhead_s": 0.0},
        },
    }
    raw["latency"]["hardware"]["mem_bandwidth_gb_s"] = 1e300
    raw["latency"]["hardware"]["peak_tflops"] = 1e300
    with pytest.raises(ProfileError, match="latency"):
        engine_profile_from_dict(raw)


def test_max_model_len_beyond_the_kv_cache_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match=r"limits\.max_model_len") as info:
        engine_profile_from_dict(_profile(limits__max_model_len=65))  # 16 blocks x 4 tokens
    assert info.value.key == "limits.max_model_len"
    engine_profile_from_dict(_profile(limits__max_model_len=64))
    path = tmp_path / "long.yaml"
    path.write_text(
        "name: l\nkv: {num_blocks: 16, block_size: 4}\n"
        "limits: {max_num_seqs: 4, max_num_batched_tokens: 16, max_model_len: 4096}\n"
        "latency: {kind: linear, base_s: 0.001, per_prefill_token_s: 0, per_decode_seq_s: 0,"
        " per_context_token_s: 0}\n"
    )
    with pytest.raises(ProfileError) as info:
        load_engine_profile(str(path))
    assert "long.yaml" in str(info.value) and "limits.max_model_len" in str(info.value)


@pytest.mark.parametrize(
    ("changes", "key"),
    [
        ({"max_model_len": 4097, "num_gpu_blocks_override": 129, "block_size": 32}, "max_model_len"),
        ({"num_threads": True}, "num_threads"),
        ({"seed": -1}, "seed"),
        ({"seed": 1.5}, "seed"),
        ({"gpu_memory_utilization": float("nan")}, "gpu_memory_utilization"),
        ({"gpu_memory_utilization": "high"}, "gpu_memory_utilization"),
        ({"kv_cache_memory_bytes": -5}, "kv_cache_memory_bytes"),
        ({"num_gpu_blocks_override": True}, "num_gpu_blocks_override"),
        ({"block_size": 32.0}, "block_size"),
    ],
)  # fmt: skip
def test_live_engine_config_is_checked_without_vllm(changes: dict, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        live_engine_config_from_dict({"name": "x"} | changes, source="live.yaml")
    assert key in str(info.value) and "live.yaml" in str(info.value)
    assert info.value.key == key


def test_live_engine_max_model_len_fits_the_usable_blocks() -> None:
    LiveEngineConfig(num_gpu_blocks_override=129, block_size=32, max_model_len=4096)
    with pytest.raises(ValueError, match="max_model_len"):
        LiveEngineConfig(num_gpu_blocks_override=129, block_size=32, max_model_len=4097)


@pytest.mark.parametrize("name", available_configs("engines"))
def test_every_shipped_engine_config_still_loads(name: str) -> None:
    try:
        profile = load_engine_profile(name)
    except ProfileError:
        load_engine_config(name)  # a live engine config, not a surrogate profile
        return
    assert profile.limits.max_model_len <= profile.kv_capacity_tokens


# --- 6. workload config domains ------------------------------------------------------------

BASE = {
    "name": "w",
    "num_requests": 10,
    "arrivals": {"kind": "poisson", "rate_rps": 2.0},
    "lengths": {"kind": "fixed", "prompt_tokens": 8, "output_tokens": 8},
    "targets": {"kind": "reading"},
}


def _config(key: str, value) -> dict:
    data = copy.deepcopy(BASE)
    *parents, leaf = key.split(".")
    node = data
    for part in parents:
        node = node[part]
    node[leaf] = value
    return data


BAD_VALUES = [
    ("num_requests", 0),
    ("num_requests", True),
    ("num_requests", 2.0),
    ("num_requests", 10**30),
    ("num_requests", "10"),
    ("name", 5),
    ("arrivals.rate_rps", float("nan")),
    ("arrivals.rate_rps", float("inf")),
    ("arrivals.rate_rps", -1.0),
    ("arrivals.rate_rps", 0),
    ("arrivals.rate_rps", True),
    ("arrivals.rate_rps", 10**400),
    ("arrivals.rate_rps", "fast"),
    ("arrivals.rate_rps", 1e-300),
    ("arrivals.rate_scale", float("inf")),
    ("arrivals.rate_scale", 10**400),
    ("arrivals.cv", 1e-200),
    ("arrivals.cv", 1e200),
    ("arrivals.intensity", float("nan")),
    ("arrivals.duty", float("nan")),
    ("arrivals.duty", True),
    ("arrivals.period_s", 1e-300),
    ("arrivals.period_s", float("inf")),
    ("arrivals.trace_path", 5),
    ("arrivals.trace_model", ["x"]),
    ("arrivals.trace_log_type", 3),
    ("arrivals.trace_window_s", [0, float("inf")]),
    ("arrivals.trace_window_s", [float("nan"), 1]),
    ("arrivals.trace_window_s", [0, 10**400]),
    ("arrivals.trace_window_s", [True, 5]),
    ("arrivals.kind", ["poisson"]),
    ("lengths.scale", float("nan")),
    ("lengths.scale", 10**400),
    ("lengths.prompt_tokens", 0),
    ("lengths.prompt_tokens", 2.5),
    ("lengths.prompt_tokens", True),
    ("lengths.prompt_tokens", 10**30),
    ("lengths.output_tokens", -4),
    ("lengths.max_prompt_tokens", 10**30),
    ("lengths.max_output_tokens", False),
    ("lengths.prompt_range", [5, 2]),
    ("lengths.prompt_range", [0, 2]),
    ("lengths.prompt_range", [1.5, 2]),
    ("lengths.prompt_range", [1, 10**30]),
    ("lengths.output_range", [True, 4]),
    ("lengths.output_range", [1, 2, 3]),
    ("lengths.output_range", "1-4"),
    ("lengths.output_range", None),
    ("targets.time_scale", 0),
    ("targets.time_scale", float("inf")),
    ("targets.voice_fraction", float("nan")),
    ("targets.voice_fraction", 1.5),
    ("targets.tds_tok_s", float("inf")),
    ("targets.tds_tok_s", 1e300),
    ("targets.ttft_s", float("inf")),
    ("targets.ttft_s", -1.0),
    ("targets.ttft_s", True),
    ("targets.min_ttft_s", float("inf")),
    ("targets.min_ttft_s", float("nan")),
    ("targets.prefill_tok_s", 1e-300),
    ("targets.kind", None),
]


@pytest.mark.parametrize(
    ("key", "value"), BAD_VALUES, ids=[f"{k}={v!r}"[:40] for k, v in BAD_VALUES]
)
def test_bad_workload_values_name_file_and_key(tmp_path: Path, key: str, value) -> None:
    with pytest.raises(ConfigError) as info:
        workload_config_from_dict(_config(key, value), source="w.yaml")
    message = str(info.value)
    assert message.startswith("w.yaml: ") and key in message, message
    assert info.value.key == key and info.value.source == "w.yaml"


@pytest.mark.parametrize(
    ("changes", "key"),
    [
        ({"lengths": {"kind": "sharegpt", "scale": 1e-6}}, "lengths.scale"),
        ({"lengths": {"kind": "sharegpt", "scale": 1e6}}, "lengths.scale"),
        ({"lengths": {"kind": "summarization", "max_output_tokens": 100, "scale": 2.0}}, "lengths.scale"),
        ({"lengths": {"kind": "fixed", "prompt_tokens": 2**30, "scale": 4.0}}, "lengths.scale"),
        ({"lengths": {"kind": "uniform", "output_range": [1, 2**30], "scale": 4.0}}, "lengths.scale"),
        ({"arrivals": {"kind": "bursty", "rate_rps": 1.0, "period_s": 10, "intensity": 3, "duty": 0.5}},
         "arrivals.intensity"),
        ({"lengths": {"kind": "trace"}}, "lengths.kind"),
        ({"arrivals": {"kind": "gamma", "rate_rps": 1.0}}, "arrivals.cv"),
        ({"arrivals": "poisson"}, "arrivals"),
        ({"lengths": [1, 2]}, "lengths"),
        ({"arrivals": {"kind": "poisson", "rate_rps": 1.0, "typo": 1}}, "arrivals.typo"),
    ],
)  # fmt: skip
def test_inconsistent_workload_configs_name_the_key(changes: dict, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        workload_config_from_dict(BASE | changes, source="w.yaml")
    assert info.value.key == key and key in str(info.value), str(info.value)


def test_missing_key_is_named() -> None:
    data = copy.deepcopy(BASE)
    del data["arrivals"]
    with pytest.raises(ConfigError) as info:
        workload_config_from_dict(data, source="w.yaml")
    assert info.value.key == "arrivals"


def test_every_shipped_workload_preset_still_loads() -> None:
    for name in available_configs("workloads"):
        cfg = load_workload_config(name)
        if isinstance(cfg, StreamsConfig):  # several streams: every one of them loads
            assert len(make_workload(cfg, 0)) == cfg.num_requests
        elif cfg.arrivals.kind != "trace":
            cfg = workload_config_from_dict(
                {**_plain(cfg), "num_requests": 5}, source=f"{name}.yaml"
            )
            assert len(make_workload(cfg, 0)) == 5


def _plain(cfg) -> dict:
    from andes_gym.workloads import workload_config_to_dict

    return workload_config_to_dict(cfg)


# --- 7. properties -------------------------------------------------------------------------

JUNK = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**40), max_value=10**40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
    st.lists(st.integers(min_value=-5, max_value=10**12), max_size=3),
    st.lists(st.floats(allow_nan=True), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


def _mostly(good: st.SearchStrategy, junk: st.SearchStrategy) -> st.SearchStrategy:
    """`good` 19 times in 20, else `junk` (so that whole configs are often valid too)."""
    return st.integers(0, 19).flatmap(lambda i: good if i else junk)


def _near(*good) -> st.SearchStrategy:
    """Mostly plausible values (so valid configs come up too), sometimes junk."""
    return _mostly(st.sampled_from(good), JUNK)


ARRIVAL_REQUIRED = {
    "kind": _near("poisson", "gamma", "bursty", "trace"),
    "rate_rps": _near(0.5, 3.0, 1e-5, 1e6),
    "cv": _near(0.5, 2.0, 1e-3, 1e3),
    "period_s": _near(10.0, 60.0, 1e-3),
}
ARRIVAL_KEYS = {
    "intensity": _near(1.5, 2.0, 2.5),
    "duty": _near(0.25, 0.35, 0.45),
    "trace_path": _near("missing.csv"),
    "rate_scale": _near(0.5, 1.0, 2.0),
    "trace_format": _near("project", "azure", "burstgpt"),
    "trace_window_s": _near([0, 10], [5.0, 7.5]),
}
LENGTH_KEYS = {
    "kind": _near("sharegpt", "summarization", "fixed", "uniform"),
    "scale": _near(0.1, 1.0, 0.01, 5.0),
    "max_prompt_tokens": _near(64, 1024, 1, None),
    "max_output_tokens": _near(64, 1024, 1, None),
    "prompt_tokens": _near(1, 128, 5000),
    "output_tokens": _near(1, 128),
    "prompt_range": _near([1, 10], [32, 512], [7, 7]),
    "output_range": _near([1, 10], [32, 512]),
}
TARGET_KEYS = {
    "kind": _near("reading", "listening", "mixed", "fixed"),
    "time_scale": _near(0.01, 1.0, 1e-6, 1e6),
    "voice_fraction": _near(0.0, 0.5, 1.0),
    "tds_tok_s": _near(4.8, 3.2),
    "ttft_s": _near(None, 0.0, 2.0),
    "prefill_tok_s": _near(5000.0, 1.0),
    "min_ttft_s": _near(1.0, 0.0),
}


def _section(keys: dict, required: dict | None = None) -> st.SearchStrategy:
    """A section: mostly a mapping of (often plausible) values, sometimes junk or a typo."""
    mapping = st.fixed_dictionaries(required or {}, optional=keys)
    typo = st.fixed_dictionaries(required or {}, optional=keys | {"junk_key": JUNK})
    return _mostly(mapping, st.one_of(typo, JUNK))


WORKLOAD_DICTS = _mostly(
    st.fixed_dictionaries(
        {
            "name": _near("w"),
            "num_requests": _near(1, 5, 20),
            "arrivals": _section(ARRIVAL_KEYS, ARRIVAL_REQUIRED),
        },
        optional={"lengths": _section(LENGTH_KEYS), "targets": _section(TARGET_KEYS)},
    ),
    st.fixed_dictionaries(
        {},
        optional={
            "name": JUNK,
            "arrivals": _section(ARRIVAL_KEYS),
            "lengths": JUNK,
            "junk_key": JUNK,
        },
    ),
)

PROPERTY = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(data=WORKLOAD_DICTS)
def test_random_workload_configs_are_valid_or_name_a_key(data: dict) -> None:
    try:
        cfg = workload_config_from_dict(data, source="random.yaml")
    except ConfigError as exc:
        assert exc.source == "random.yaml" and str(exc).startswith("random.yaml: ")
        assert exc.key is not None and exc.key in str(exc), str(exc)
        return
    if cfg.arrivals.kind == "trace":
        return  # the file does not exist; reading traces is tested below
    small = workload_config_from_dict(
        {**_plain(cfg), "num_requests": min(cfg.num_requests, 20)}, source="random.yaml"
    )
    try:
        workload = make_workload(small, seed=0)
    except ConfigError as exc:  # a config that validates but cannot be drawn names a key
        assert exc.key is not None and exc.key in str(exc), str(exc)
        return
    assert len(workload) == small.num_requests
    assert np.all(workload.prompt_tokens >= 1) and np.all(workload.prompt_tokens <= MAX_TOKENS)
    assert np.all(np.isfinite(workload.arrival_s)) and np.all(workload.arrival_s <= MAX_TIME_S)


PROFILE_JUNK = st.one_of(JUNK, st.sampled_from(["6.7e9", "1e-3", "0x10", "nan", "-1"]))


def _pnear(*good) -> st.SearchStrategy:
    return _mostly(st.sampled_from(good), PROFILE_JUNK)


def _psection(required: dict, optional: dict | None = None) -> st.SearchStrategy:
    mapping = st.fixed_dictionaries(required, optional=optional or {})
    broken = st.one_of(
        st.fixed_dictionaries({}, optional=required | (optional or {}) | {"junk": PROFILE_JUNK}),
        PROFILE_JUNK,
    )
    return _mostly(mapping, broken)


PROFILE_DICTS = st.fixed_dictionaries(
    {
        "name": _pnear("p"),
        "kv": _psection(
            {"num_blocks": _pnear(16, 128, 1), "block_size": _pnear(4, 16, 32)},
            {"kv_bytes_per_token": _pnear(1024.0, None)},
        ),
        "limits": _psection(
            {
                "max_num_seqs": _pnear(4, 48),
                "max_num_batched_tokens": _pnear(16, 1024),
                "max_model_len": _pnear(64, 512, 100000),
            }
        ),
        "latency": _psection(
            {
                "kind": _pnear("linear", "linear", "roofline"),
                "base_s": _pnear(0.0, 1e-3),
                "per_prefill_token_s": _pnear(0.0, 1e-5),
                "per_decode_seq_s": _pnear(0.0, 5e-5),
                "per_context_token_s": _pnear(0.0, 1e-7),
            },
            {"per_prefill_token_sq_s": _pnear(0.0, 1e-9)},
        ),
    },
    optional={
        "description": _pnear("d"),
        "preemption": _psection(
            {}, {"mode": _pnear("recompute", "swap"), "swap_bw_gb_s": _pnear(16.0)}
        ),
        "overhead": _psection(
            {}, {"per_prefill_seq_s": _pnear(0.0, 2e-4), "per_request_s": _pnear(0.0)}
        ),
    },
)


@PROPERTY
@given(data=PROFILE_DICTS)
def test_random_engine_profiles_are_valid_or_name_a_key(data: dict) -> None:
    try:
        profile = engine_profile_from_dict(data, source="random.yaml")
    except ProfileError as exc:
        assert exc.source == "random.yaml" and "random.yaml" in str(exc)
        assert exc.key is not None and exc.key in str(exc), str(exc)
        return
    from andes_gym.surrogate import make_latency_model

    model = make_latency_model(profile)
    lat = model.decode_latency_by_batch(profile.limits.max_num_seqs, 100.0)
    assert np.all(np.isfinite(lat)) and np.all(lat[1:] > 0)  # lat[0]: an empty batch
    assert profile.limits.max_model_len <= profile.kv_capacity_tokens


CELL = _mostly(
    st.one_of(
        st.integers(min_value=0, max_value=400).map(str),
        st.floats(min_value=0, max_value=1e3).map(repr),
    ),
    st.one_of(
        st.text(max_size=6),
        st.integers(min_value=-(10**25), max_value=10**25).map(str),
        st.floats(allow_nan=True, allow_infinity=True).map(repr),
        st.sampled_from(["", " ", "1e30", "1e400", "-0", "2.5", "\ufeff", "nan", "0x1F", "１２"]),
        st.sampled_from(["1e15", "1e12", "1000000000000000.5", "5e8", "2e9"]),
    ),
)
ROW = st.one_of(
    st.lists(CELL, min_size=3, max_size=3),
    st.lists(CELL, min_size=5, max_size=5),
    st.lists(CELL, min_size=4, max_size=4),
    st.lists(CELL, max_size=6),
)
HEADERS = st.sampled_from(
    [
        "arrival_s,prompt_tokens,output_tokens",
        "arrival_s,prompt_tokens,output_tokens,ttft_s,tds_tok_s",
        "\ufeffarrival_s,prompt_tokens,output_tokens,tds_tok_s",
        "arrival_s,prompt_tokens",
        "",
    ]
)


@PROPERTY
@given(
    header=HEADERS,
    rows=st.lists(ROW, max_size=6),
    bom=st.booleans(),
)
def test_random_trace_rows_read_or_name_the_line(
    tmp_path_factory: pytest.TempPathFactory, header: str, rows: list, bom: bool
) -> None:
    path = tmp_path_factory.mktemp("rows") / "random.csv"
    text = header + "\n" + "".join(",".join(row) + "\n" for row in rows)
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8", "surrogatepass"))
    try:
        trace = read_trace(path)
    except TraceError as exc:
        assert str(path) in str(exc) and f"line {exc.line}" in str(exc)
        assert 1 <= exc.line <= len(rows) + 2
        return
    assert np.all(np.isfinite(trace.arrival_s)) and (len(trace) == 0 or trace.arrival_s[0] == 0)
    assert np.all((trace.prompt_tokens >= 1) & (trace.prompt_tokens <= MAX_TOKENS))
    assert math.isfinite(float(trace.arrival_s.sum()))


def test_a_csv_trace_given_as_a_workload_config_says_what_to_do(tmp_path: Path) -> None:
    path = _write_shifted(tmp_path / "trace.csv", _contended_rows(3), "0")
    with pytest.raises(ConfigError, match="read_trace_workload") as info:
        load_workload_config(str(path))
    assert str(path) in str(info.value)
    with pytest.raises(ConfigError, match=r"must be a mapping, got .{0,80}$"):
        workload_config_from_dict({"name": "x", "arrivals": "y" * 500}, source="w.yaml")


def test_a_bool_seed_is_refused() -> None:
    cfg = workload_config_from_dict(BASE, source="w.yaml")
    with pytest.raises(ValueError, match="seed"):
        make_workload(cfg, True)


PUBLIC_CELL = _mostly(
    st.one_of(
        st.integers(min_value=0, max_value=400).map(str),
        st.sampled_from(["ChatGPT", "GPT-4", "API log", "Conversation log"]),
        st.datetimes().map(str),
    ),
    st.one_of(
        st.text(max_size=6),
        st.sampled_from(["", "1e30", "1e400", "nan", "-1", "9999-12-31 23:59:59", "0001-01-01"]),
        st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat()),
    ),
)
PUBLIC_HEADERS = {
    "azure": "TIMESTAMP,ContextTokens,GeneratedTokens",
    "burstgpt": "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type",
}


@PROPERTY
@given(
    fmt=st.sampled_from(sorted(PUBLIC_HEADERS)),
    rows=st.lists(
        st.one_of(
            st.lists(PUBLIC_CELL, min_size=3, max_size=3),
            st.lists(PUBLIC_CELL, min_size=6, max_size=6),
        ),
        max_size=6,
    ),
)
def test_random_public_trace_rows_read_or_name_the_line(
    tmp_path_factory: pytest.TempPathFactory, fmt: str, rows: list
) -> None:
    path = tmp_path_factory.mktemp("rows") / "public.csv"
    lines = [PUBLIC_HEADERS[fmt]] + [",".join(row) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8", errors="surrogatepass")
    try:
        trace = read_trace(path, fmt)
    except TraceError as exc:
        assert str(path) in str(exc) and 1 <= exc.line <= len(rows) + 1
        return
    assert len(trace) == 0 or trace.arrival_s[0] == 0
    assert np.all(np.isfinite(trace.arrival_s)) and np.all(trace.arrival_s <= MAX_TIME_S)
