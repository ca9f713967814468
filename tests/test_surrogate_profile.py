"""Engine profiles and latency models of the surrogate."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from surrogate_support import TINY_LINEAR_PROFILE

from andes_gym.surrogate import (
    LinearLatencyModel,
    ProfileError,
    RooflineLatencyModel,
    engine_profile_from_dict,
    load_engine_profile,
    make_latency_model,
)

SHIPPED = ("llama7b_a100", "llama13b_a100", "llama7b_h100", "llama13b_h100", "cpu_tiny")

LINEAR = TINY_LINEAR_PROFILE


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_profiles_load_and_latency_grows_with_batch(name):
    profile = load_engine_profile(name)
    assert profile.name == name
    assert profile.kv.num_blocks > 0 and profile.kv.block_size > 0
    lat = make_latency_model(profile).decode_latency_by_batch(profile.limits.max_num_seqs, 300.0)
    assert lat.shape == (profile.limits.max_num_seqs + 1,)
    assert np.all(lat > 0) and np.all(np.diff(lat) >= 0)
    assert lat[-1] > lat[1]


def test_roofline_numbers_are_plausible():
    a100 = make_latency_model(load_engine_profile("llama7b_a100"))
    h100 = make_latency_model(load_engine_profile("llama7b_h100"))
    a100_13b = make_latency_model(load_engine_profile("llama13b_a100"))
    # Batch-1 decode of a 7B model on an A100 is memory bound: ~13.5 GB of weights at
    # ~1.6 TB/s effective is ~8 ms, plus overhead.
    step_s = a100.iteration_s(0, 1, 500)
    assert 0.007 < step_s < 0.013
    assert h100.iteration_s(0, 1, 500) < step_s < a100_13b.iteration_s(0, 1, 500)
    # A 2048-token prefill chunk is compute bound: far slower than a decode step.
    assert a100.iteration_s(2048, 0, 2048) > 5 * step_s


def test_cpu_tiny_matches_the_hand_measured_decode_steps():
    model = make_latency_model(load_engine_profile("cpu_tiny"))
    assert model.iteration_s(0, 4, 0) == pytest.approx(1.7e-3, rel=0.05)
    assert model.iteration_s(0, 40, 0) == pytest.approx(3.8e-3, rel=0.05)


def test_linear_model_formula():
    model = LinearLatencyModel(engine_profile_from_dict(LINEAR).latency)
    assert model.iteration_s(10, 2, 100) == pytest.approx(0.01 + 0.01 + 0.004 + 0.01)


def test_roofline_takes_the_max_of_memory_and_compute():
    model = make_latency_model(load_engine_profile("llama7b_a100"))
    assert isinstance(model, RooflineLatencyModel)
    hw = model.hardware
    weights_s = model.model.weight_bytes / (hw.mem_bandwidth_gb_s * 1e9 * hw.bandwidth_efficiency)
    assert model.iteration_s(0, 1, 0) == pytest.approx(hw.overhead_s + weights_s)


def _with(path: str, value, base=LINEAR):
    data = copy.deepcopy(base)
    *parents, leaf = path.split(".")
    node = data
    for key in parents:
        node = node.setdefault(key, {})
    if value is _DELETE:
        del node[leaf]
    else:
        node[leaf] = value
    return data


_DELETE = object()


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        ("kv.block_size", 0, "kv.block_size"),
        ("kv.num_blocks", -5, "kv.num_blocks"),
        ("kv.num_blocks", 2.5, "kv.num_blocks"),
        ("latency.per_decode_seq_s", _DELETE, "latency.per_decode_seq_s"),
        ("latency.base_s", -1.0, "latency.base_s"),
        ("latency.per_context_tokens_s", 0.1, "latency.per_context_tokens_s"),
        ("latency.kind", "cubic", "latency.kind"),
        ("limits.max_num_batched_tokens", 2, "limits.max_num_batched_tokens"),
        ("limits", _DELETE, "limits"),
        ("preemption.mode", "evict", "preemption.mode"),
        ("preemption.mode", "swap", "preemption.swap_bw_gb_s"),
        ("typo", 1, "typo"),
        ("overhead.per_request_s", -1e-6, "overhead.per_request_s"),
        ("overhead.decision_s", "slow", "overhead.decision_s"),
        ("overhead.per_token_s", 1e-6, "overhead.per_token_s"),
        ("overhead", [1, 2], "overhead"),
    ],
)
def test_bad_profiles_name_the_field(path, value, expected):
    with pytest.raises(ProfileError, match=expected.replace(".", r"\.")):
        engine_profile_from_dict(_with(path, value))


def test_roofline_missing_coefficient_names_it():
    raw = {
        "name": "r",
        "kv": {"num_blocks": 10, "block_size": 16},
        "limits": {"max_num_seqs": 8, "max_num_batched_tokens": 64, "max_model_len": 160},
        "latency": {
            "kind": "roofline",
            "model": {
                "num_params": 1e9,
                "hidden_size": 2048,
                "num_kv_heads": 16,
                "head_dim": 128,
                "dtype_bytes": 2,
            },
            "hardware": {
                "mem_bandwidth_gb_s": 1000.0,
                "peak_tflops": 100.0,
                "bandwidth_efficiency": 0.8,
                "compute_efficiency": 0.5,
                "overhead_s": 0.001,
            },
        },
    }
    with pytest.raises(ProfileError, match=r"latency\.model\.num_layers"):
        engine_profile_from_dict(raw)
    raw["latency"]["model"]["num_layers"] = 16
    raw["latency"]["hardware"]["bandwidth_efficiency"] = 1.5
    with pytest.raises(ProfileError, match=r"latency\.hardware\.bandwidth_efficiency"):
        engine_profile_from_dict(raw)


def test_bad_profile_file_error_names_the_file(tmp_path):
    path = tmp_path / "broken_engine.yaml"
    path.write_text(
        "name: broken\nkv: {num_blocks: 8, block_size: 0}\n"
        "limits: {max_num_seqs: 2, max_num_batched_tokens: 8, max_model_len: 16}\n"
        "latency: {kind: linear, base_s: 0.001, per_prefill_token_s: 0.0,"
        " per_decode_seq_s: 0.0, per_context_token_s: 0.0}\n"
    )
    with pytest.raises(ProfileError, match=r"broken_engine\.yaml.*kv\.block_size"):
        load_engine_profile(str(path))


def test_load_by_name_path_and_dict_agree():
    by_name = load_engine_profile("cpu_tiny")
    from andes_gym.config_files import resolve_config

    by_path = load_engine_profile(str(resolve_config("engines", "cpu_tiny")))
    assert by_name == by_path
    assert load_engine_profile(by_name) is by_name
    with pytest.raises(FileNotFoundError, match="cpu_tiny"):
        load_engine_profile("no_such_engine")
