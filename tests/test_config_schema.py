"""The one config loader (andes_gym/config_schema.py): every failure is one `ConfigError`
naming the file, the dotted key and the line of that key."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

import pytest
from annotated_types import Ge, Interval

from andes_gym.board.suite import load_suite
from andes_gym.config_files import ConfigError, read_yaml_lines
from andes_gym.config_schema import (
    Int,
    Number,
    Text,
    dotted_key,
    section,
    split_key,
    validate,
)
from andes_gym.engine_bridge.engine import LiveEngineConfig, load_engine_config
from andes_gym.surrogate import load_engine_profile
from andes_gym.training.config import load_config
from andes_gym.workloads import ArrivalConfig, load_workload_config


@section
@dataclass(frozen=True)
class _Inner:
    size: Annotated[Int, Ge(1)]
    kind: Literal["a", "b"] = "a"


@section
@dataclass(frozen=True)
class _Outer:
    name: Text
    items: tuple[_Inner, ...] = ()
    ratio: Annotated[Number, Interval(gt=0, le=1)] = 0.5
    extra: dict = field(default_factory=dict)


def _load(tmp_path: Path, text: str) -> _Outer:
    path = tmp_path / "cfg.yaml"
    path.write_text(text)
    data, lines = read_yaml_lines(path)
    return validate(_Outer, data, source=str(path), lines=lines)


def _error(tmp_path: Path, text: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, text)
    return info.value


def test_a_valid_file_loads_to_the_typed_config(tmp_path: Path) -> None:
    cfg = _load(tmp_path, "name: x\nitems:\n  - {size: 2}\n  - {size: 3, kind: b}\nratio: 1\n")
    assert cfg == _Outer("x", (_Inner(2), _Inner(3, "b")), 1.0)


@pytest.mark.parametrize(
    ("text", "key", "line", "needle"),
    [
        # an unknown key, listing the known ones
        ("name: x\nitems:\n  - size: 2\n    colour: red\n", "items[0].colour", 4,
         "'colour' is not one of the known keys of items[0]: size, kind"),
        # a wrong type (a bool is not an integer)
        ("name: x\nitems:\n  - {size: 2}\n  - {size: true}\n", "items[1].size", 4,
         "must be an integer, got True"),
        # out of range
        ("name: x\n\nratio: 1.5\n", "ratio", 3, "must be <= 1, got 1.5"),
        ("name: x\nitems: [{size: 0}]\n", "items[0].size", 2, "must be >= 1, got 0"),
        # not one of the allowed values
        ("name: x\nitems:\n  - size: 1\n    kind: c\n", "items[0].kind", 4, "'a' or 'b'"),
        # a missing key: the line of the mapping that lacks it
        ("name: x\nitems:\n  - kind: b\n", "items[0].size", 3, "missing required key(s)"),
        # a section that is not a mapping
        ("name: x\nextra: [1]\n", "extra", 2, "must be a mapping, got [1]"),
    ],
)  # fmt: skip
def test_each_failure_names_file_key_and_line(tmp_path, text, key, line, needle) -> None:
    err = _error(tmp_path, text)
    path = str(tmp_path / "cfg.yaml")
    assert (err.source, err.key, err.line) == (path, key, line)
    assert str(err).startswith(f"{path}, line {line}: ")
    assert key in str(err) and needle in str(err), str(err)


def test_an_unknown_key_is_reported_before_other_problems(tmp_path: Path) -> None:
    err = _error(tmp_path, "name: 5\nratio: 7\nnaem: x\n")
    assert (err.key, err.line) == ("naem", 3)


def test_without_a_file_the_error_names_the_source_only() -> None:
    with pytest.raises(ConfigError) as info:
        validate(_Outer, {"name": "x", "ratio": 0}, source="<dict>")
    assert (info.value.source, info.value.key, info.value.line) == ("<dict>", "ratio", None)
    assert str(info.value) == "<dict>: ratio: must be > 0, got 0"


def test_dotted_keys_round_trip() -> None:
    for key in ("a", "a.b", "workloads[0].preset", "capacity[12].policies[0]"):
        assert dotted_key(split_key(key)) == key


# --- every config goes through the loader -------------------------------------------------


PROFILE = (
    "name: e\nkv: {num_blocks: 8, block_size: 4}\n"
    "limits: {max_num_seqs: 2, max_num_batched_tokens: 8, max_model_len: 16}\n"
    "latency:\n  kind: linear\n  base_s: 0.001\n  per_prefill_token_s: 0.0\n"
    "  per_decode_seq_s: 0.0\n  per_context_token_s: 0.0\n  per_token_s: 1\n"
)
SUITE = (
    "name: s\npolicies: [fcfs]\nseeds: [0]\nworkloads: [steady_poisson]\ncapacity:\n"
    "  - name: c\n    workload: text\n    parameter: rate_rps\n    low: 1\n    high: 2\n"
    "    tolerance: -0.1\n"
)
WORKLOAD = "name: w\nnum_requests: 3\narrivals:\n  kind: {}\n  rate_rps: {}\n"


@pytest.mark.parametrize(
    ("load", "text", "key", "line"),
    [
        # A rule between fields of `arrivals` (gamma needs cv), placed at the section's line.
        (load_workload_config, WORKLOAD.format("gamma", 1), "arrivals.cv", 3),
        (load_workload_config, WORKLOAD.format("poisson", -1), "arrivals.rate_rps", 5),
        (load_engine_profile, PROFILE, "latency.per_token_s", 10),
        (load_engine_config, "max_num_seqs: 8\nmax_num_batched_tokens: 256\nseed: 1.5\n", "seed", 3),
        (load_suite, SUITE, "capacity[0].tolerance", 11),
        (load_config, "seed: 1\nalgo:\n  gamma: 2\n", "algo.gamma", 3),
    ],
    ids=["workload-rule", "workload-range", "profile", "live-engine", "suite", "train"],
)  # fmt: skip
def test_every_config_file_names_file_key_and_line(tmp_path, load, text, key, line) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load(path)
    assert (info.value.source, info.value.key, info.value.line) == (str(path), key, line)


def test_a_training_override_names_itself(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text("seed: 1\nalgo:\n  gamma: 0.9\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, ["algo.gamma=2"])
    assert (info.value.source, info.value.key, info.value.line) == (
        "--set algo.gamma=2",
        "algo.gamma",
        None,
    )


def test_configs_built_directly_raise_the_same_error() -> None:
    with pytest.raises(ConfigError) as info:
        ArrivalConfig(kind="poisson", rate_rps=True)
    assert info.value.key == "rate_rps" and info.value.source is None
    with pytest.raises(ConfigError, match="exceeds the KV cache") as info:
        LiveEngineConfig().replace(max_model_len=8192)
    assert info.value.key == "max_model_len"
