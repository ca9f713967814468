"""Workload generators, targets, configs and presets.

Statistical tolerances are about 5.5 standard deviations of the estimate (a correct
implementation fails with probability < 1e-6 for a random seed); the seeds are fixed, so
the tests are deterministic anyway.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from andes_gym.workloads import (
    ArrivalConfig,
    LengthConfig,
    TargetConfig,
    Workload,
    WorkloadConfig,
    arrivals,
    lengths,
    list_presets,
    load_workload_config,
    make_workload,
    targets,
    workload_config_from_dict,
    workload_config_to_dict,
)
from andes_gym.workloads.config import PRESET_DIR

N_LARGE = 200_000


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def cv_of(x: np.ndarray) -> float:
    return float(np.std(x) / np.mean(x))


# --- arrivals -----------------------------------------------------------------------------


def test_poisson_rate_and_exponential_gaps() -> None:
    t = arrivals.poisson(rng(1), rate_rps=10.0, n=N_LARGE)
    assert t.dtype == np.float64 and len(t) == N_LARGE
    assert np.all(np.diff(t) >= 0) and t[0] > 0
    # T_n ~ Gamma(n, 1/rate): relative sd 1/sqrt(n) = 0.22%.
    assert N_LARGE / t[-1] == pytest.approx(10.0, rel=0.0125)
    # Sample CV of exponential gaps: relative sd ~ sqrt(2/n) = 0.32%.
    assert cv_of(np.diff(t, prepend=0.0)) == pytest.approx(1.0, rel=0.02)


@pytest.mark.parametrize("cv", [0.5, 3.0])
def test_gamma_rate_and_cv(cv: float) -> None:
    t = arrivals.gamma(rng(2), rate_rps=5.0, cv=cv, n=N_LARGE)
    assert np.all(np.diff(t) >= 0)
    # Relative sd of the rate estimate cv/sqrt(n) (0.67% at cv 3); of the CV about 0.9%.
    assert N_LARGE / t[-1] == pytest.approx(5.0, rel=0.04)
    assert cv_of(np.diff(t, prepend=0.0)) == pytest.approx(cv, rel=0.05)


def test_gamma_cv_one_is_as_regular_as_poisson_and_bursty_cv_is_not() -> None:
    gaps_1 = np.diff(arrivals.gamma(rng(3), 5.0, 1.0, 50_000), prepend=0.0)
    gaps_3 = np.diff(arrivals.gamma(rng(3), 5.0, 3.0, 50_000), prepend=0.0)
    assert cv_of(gaps_1) == pytest.approx(1.0, rel=0.05)
    assert cv_of(gaps_3) > 2.5


def test_cyclic_bursts_rates_inside_and_outside_bursts() -> None:
    rate, intensity, duty, period = 10.0, 2.0, 0.35, 10.0
    t = arrivals.cyclic_bursts(rng(4), rate, intensity, duty, period, N_LARGE)
    assert np.all(np.diff(t) >= 0)
    whole_periods = np.floor(t[-1] / period)
    t = t[t < whole_periods * period]  # only complete cycles, so exposure is exact
    in_burst = (t % period) < duty * period
    peak = in_burst.sum() / (whole_periods * duty * period)
    off_peak = (~in_burst).sum() / (whole_periods * (1 - duty) * period)
    expected_peak = rate * intensity  # 20 rps
    expected_off = (rate - expected_peak * duty) / (1 - duty)  # 4.615 rps
    # ~140k and ~60k Poisson counts: relative sd 0.27% and 0.41%.
    assert peak == pytest.approx(expected_peak, rel=0.03)
    assert off_peak == pytest.approx(expected_off, rel=0.03)
    assert len(t) / (whole_periods * period) == pytest.approx(rate, rel=0.02)


def test_cyclic_bursts_within_burst_is_poisson() -> None:
    t = arrivals.cyclic_bursts(rng(5), 10.0, 2.0, 0.5, 100.0, 20_000)
    in_first_burst = t[t < 50.0]
    gaps = np.diff(in_first_burst)
    assert cv_of(gaps) == pytest.approx(1.0, rel=0.25)  # ~1000 gaps


def test_cyclic_bursts_idle_off_peak_and_negative_off_peak() -> None:
    t = arrivals.cyclic_bursts(rng(6), 10.0, 2.5, 0.4, 5.0, 5_000)
    assert np.all((t % 5.0) <= 2.0 + 1e-9), "off-peak rate is 0 when intensity * duty = 1"
    with pytest.raises(ValueError, match="off-peak rate would be negative"):
        arrivals.cyclic_bursts(rng(6), 10.0, 3.0, 0.4, 5.0, 10)
    with pytest.raises(ValueError, match="duty"):
        arrivals.cyclic_bursts(rng(6), 10.0, 2.0, 1.0, 5.0, 10)


def test_burst_rates_formula() -> None:
    peak, off = arrivals.burst_rates(4.0, 2.0, 0.35)
    assert peak == 8.0
    assert off == pytest.approx((4.0 - 8.0 * 0.35) / 0.65)
    assert peak * 0.35 + off * 0.65 == pytest.approx(4.0)


@pytest.mark.parametrize(
    "call",
    [
        lambda: arrivals.poisson(rng(), 0.0, 10),
        lambda: arrivals.poisson(rng(), 1.0, -1),
        lambda: arrivals.gamma(rng(), 1.0, 0.0, 10),
        lambda: arrivals.cyclic_bursts(rng(), 1.0, 2.0, 0.3, 0.0, 10),
    ],
)
def test_arrival_parameter_errors(call) -> None:
    with pytest.raises(ValueError):
        call()


# --- lengths ------------------------------------------------------------------------------


def test_sharegpt_means_and_clip() -> None:
    prompt, output = lengths.sharegpt(rng(7), N_LARGE)
    assert prompt.dtype == np.int64 and output.dtype == np.int64
    assert prompt.mean() == pytest.approx(161, rel=0.03)
    assert output.mean() == pytest.approx(338, rel=0.03)
    assert prompt.min() >= 1 and prompt.max() <= 1024 and output.max() <= 1024
    assert np.median(prompt) < prompt.mean(), "ShareGPT prompts are right-skewed"


def test_sharegpt_scale_keeps_mean_proportional() -> None:
    prompt, output = lengths.sharegpt(rng(8), N_LARGE, scale=0.1, max_output_tokens=128)
    assert output.mean() == pytest.approx(33.8, rel=0.03)
    assert prompt.mean() == pytest.approx(16.1, rel=0.03)
    assert output.max() <= 128 and output.min() >= 1


def test_summarization_ranges() -> None:
    prompt, output = lengths.summarization(rng(9), 50_000)
    assert np.mean((prompt >= 1000) & (prompt <= 4096)) > 0.95
    assert np.mean((output >= 100) & (output <= 350)) > 0.9
    assert prompt.mean() > 5 * output.mean()


def test_fixed_and_uniform() -> None:
    prompt, output = lengths.fixed(100, 40, 5, scale=0.5, max_output_tokens=10)
    assert prompt.tolist() == [50] * 5 and output.tolist() == [10] * 5
    prompt, output = lengths.uniform(rng(10), 10, 20, 1, 3, 20_000)
    assert prompt.min() == 10 and prompt.max() == 20
    assert set(output.tolist()) == {1, 2, 3}
    assert prompt.mean() == pytest.approx(15.0, rel=0.02)
    with pytest.raises(ValueError, match="lo <= hi"):
        lengths.uniform(rng(), 20, 10, 1, 3, 5)


def test_lognormal_mean_outside_clip_is_an_error() -> None:
    with pytest.raises(ValueError, match="strictly between 1"):
        lengths.sharegpt(rng(), 10, max_output_tokens=300)
    with pytest.raises(ValueError, match="strictly between 1"):
        lengths.sharegpt(rng(), 10, scale=0.001)


# --- targets ------------------------------------------------------------------------------


def test_ttft_formula_exact_with_time_scale() -> None:
    prompt = np.array([1, 4999, 5000, 5001, 12_000, 100_000])
    for s in (1.0, 0.02):
        expected = np.maximum(prompt / 5000, 1) * s
        assert np.array_equal(targets.ttft_targets(prompt, time_scale=s), expected)
    assert targets.ttft_targets(np.array([12_000]))[0] == 2.4


def test_reading_tds_mix() -> None:
    tds = targets.reading_tds(rng(11), N_LARGE)
    assert set(np.unique(tds)) <= {3.2, 5.3, 5.9, 6.5, 7.1, 7.7}
    assert np.mean(tds == 3.2) == pytest.approx(0.79, abs=0.008)
    tail = tds[tds > 3.2]
    assert tail.min() >= 5.3 and tail.max() <= 7.7
    assert tds.mean() == pytest.approx(0.79 * 3.2 + 0.21 * 6.5, rel=0.01)


def test_listening_tds_weights() -> None:
    tds = targets.listening_tds(rng(12), N_LARGE)
    for value, weight in zip(
        [5.1, 4.3, 4.2, 4.0, 3.8], [0.28, 0.52, 0.11, 0.06, 0.03], strict=True
    ):
        assert np.mean(tds == value) == pytest.approx(weight, abs=0.008)
    assert set(np.unique(tds)) == {5.1, 4.3, 4.2, 4.0, 3.8}


def test_time_scale_divides_tds() -> None:
    s = 0.02
    tds = targets.listening_tds(rng(13), 1000, time_scale=s)
    unscaled = tds * s
    allowed = np.array([5.1, 4.3, 4.2, 4.0, 3.8])
    assert np.all(np.isclose(unscaled[:, None], allowed[None, :]).any(axis=1))
    assert tds.min() > 100  # 3.8 / 0.02 = 190 tok/s


def test_mixed_and_fixed_targets() -> None:
    mixed = targets.mixed_tds(rng(14), N_LARGE, voice_fraction=0.25)
    voice_only = {5.1, 4.3, 4.2, 4.0, 3.8}
    share_voice = np.mean(np.isin(mixed, list(voice_only)))
    assert share_voice == pytest.approx(0.25, abs=0.008)
    ttft, tds = targets.draw_targets(
        rng(), np.array([10, 20_000]), TargetConfig(kind="fixed", tds_tok_s=6.0, time_scale=0.5)
    )
    assert tds.tolist() == [12.0, 12.0]
    assert ttft.tolist() == [0.5, 2.0]
    ttft, _ = targets.draw_targets(rng(), np.array([10, 20_000]), TargetConfig(ttft_s=0.3))
    assert ttft.tolist() == [0.3, 0.3]


# --- configs and make_workload ------------------------------------------------------------


def small_config(**arrival_changes) -> WorkloadConfig:
    arrival = dict(kind="bursty", rate_rps=5.0, period_s=20.0) | arrival_changes
    return WorkloadConfig(
        name="small",
        num_requests=2_000,
        arrivals=ArrivalConfig(**arrival),
        lengths=LengthConfig(kind="sharegpt", scale=0.5),
        targets=TargetConfig(kind="mixed", time_scale=0.1),
    )


def test_make_workload_is_reproducible_and_seed_sensitive() -> None:
    cfg = small_config()
    a, b, c = make_workload(cfg, 3), make_workload(cfg, 3), make_workload(cfg, 4)
    assert isinstance(a, Workload) and len(a) == 2_000 and a.name == "small"
    assert a.equals(b)
    assert not np.array_equal(a.arrival_s, c.arrival_s)
    assert not np.array_equal(a.output_tokens, c.output_tokens)
    assert not np.array_equal(a.tds_tok_s, c.tds_tok_s)


def test_parts_draw_from_independent_streams() -> None:
    cfg = small_config()
    other_targets = dataclasses.replace(cfg, targets=TargetConfig(kind="listening"))
    a, b = make_workload(cfg, 0), make_workload(other_targets, 0)
    assert np.array_equal(a.arrival_s, b.arrival_s)
    assert np.array_equal(a.prompt_tokens, b.prompt_tokens)
    assert not np.array_equal(a.tds_tok_s, b.tds_tok_s)


def test_rate_scale_divides_arrivals() -> None:
    a = make_workload(small_config(), 0)
    b = make_workload(small_config(rate_scale=2.0), 0)
    assert np.allclose(b.arrival_s, a.arrival_s / 2.0)
    assert np.array_equal(a.output_tokens, b.output_tokens)


def test_workload_targets_follow_formula() -> None:
    w = make_workload(small_config(), 1)
    assert np.array_equal(w.ttft_s, np.maximum(w.prompt_tokens / 5000, 1) * 0.1)


def test_config_from_dict_round_trip_and_defaults() -> None:
    cfg = workload_config_from_dict(
        {"name": "x", "num_requests": 5, "arrivals": {"kind": "poisson", "rate_rps": 1}}
    )
    assert cfg.lengths == LengthConfig() and cfg.targets == TargetConfig()
    assert workload_config_from_dict(workload_config_to_dict(cfg)) == cfg
    uniform = workload_config_from_dict(
        {
            "name": "u",
            "num_requests": 5,
            "arrivals": {"kind": "poisson", "rate_rps": 1},
            "lengths": {"kind": "uniform", "prompt_range": [4, 8]},
        }
    )
    assert uniform.lengths.prompt_range == (4, 8)
    assert workload_config_from_dict(workload_config_to_dict(uniform)) == uniform


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        ({"name": "x", "num_requests": 5, "arrivals": {"kind": "poisson", "rate_rps": 1}, "seed": 1}, "unknown key seed"),
        ({"name": "x", "num_requests": 5, "arrivals": {"kind": "poisson", "rate": 1}}, "unknown key arrivals.rate"),
        ({"name": "x", "num_requests": 5, "arrivals": {"kind": "poisson", "rate_rps": 1}, "targets": {"speed": 2}}, "unknown key targets.speed"),
        ({"num_requests": 5}, "missing required key(s) name, arrivals"),
        ({"name": "x", "num_requests": 5, "arrivals": {"rate_rps": 1}}, "missing required key(s) arrivals.kind"),
        ({"name": "x", "num_requests": 5, "arrivals": {"kind": "gamma", "rate_rps": 1}}, "arrivals.cv"),
        ({"name": "x", "arrivals": {"kind": "poisson", "rate_rps": 1}}, "requires num_requests"),
        ({"name": "x", "num_requests": 5, "arrivals": {"kind": "poisson", "rate_rps": "fast"}}, "arrivals.rate_rps"),
        ({"name": "x", "num_requests": 5, "arrivals": {"kind": "bursty", "rate_rps": 1, "period_s": 1, "intensity": 3}}, "off-peak"),
        ({"name": "x", "num_requests": 5, "arrivals": {"kind": "poisson", "rate_rps": 1}, "lengths": {"kind": "trace"}}, "requires arrivals.kind='trace'"),
        ({"name": "x", "num_requests": 5, "arrivals": {"kind": "poisson", "rate_rps": 1}, "targets": {"kind": "happy"}}, "targets.kind"),
    ],
)  # fmt: skip
def test_config_errors_name_the_key_and_source(data: dict, needle: str) -> None:
    with pytest.raises(ValueError) as info:
        workload_config_from_dict(data, source="my.yaml")
    message = str(info.value)
    assert message.startswith("my.yaml: ")
    assert needle in message


def test_yaml_unknown_key_names_file_and_key(tmp_path: Path) -> None:
    path = tmp_path / "typo.yaml"
    path.write_text(
        "name: t\nnum_requests: 3\narrivals:\n  kind: poisson\n  rate_rps: 1\n"
        "lengths:\n  kind: fixed\n  scael: 0.1\n"
    )
    with pytest.raises(ValueError) as info:
        load_workload_config(path)
    assert str(path) in str(info.value) and "lengths.scael" in str(info.value)


def test_yaml_empty_and_missing(tmp_path: Path) -> None:
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing\n")
    with pytest.raises(ValueError, match="empty"):
        load_workload_config(empty)
    with pytest.raises(FileNotFoundError, match="no workloads config named 'no_such_preset'"):
        load_workload_config("no_such_preset")
    with pytest.raises(FileNotFoundError):
        load_workload_config(tmp_path / "absent.yaml")


def test_relative_trace_path_resolves_against_yaml(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "t.csv").write_text("arrival_s,prompt_tokens,output_tokens\n0,5,5\n")
    path = tmp_path / "trace.yaml"
    path.write_text(
        "name: t\narrivals: {kind: trace, trace_path: sub/t.csv}\nlengths: {kind: trace}\n"
    )
    cfg = load_workload_config(path)
    assert cfg.arrivals.trace_path == str((tmp_path / "sub" / "t.csv").resolve())
    assert len(make_workload(cfg, 0)) == 1


# --- presets ------------------------------------------------------------------------------

PRESETS = list_presets()


def test_expected_presets_exist() -> None:
    base = ["steady_poisson", "bursty_2x", "gamma_overload", "long_prompt", "voice", "text"]
    for name in base:
        assert name in PRESETS and f"{name}_cpu" in PRESETS


@pytest.mark.parametrize("name", PRESETS)
def test_every_preset_loads_and_generates(name: str) -> None:
    path = PRESET_DIR / f"{name}.yaml"
    assert path.read_text().startswith("# "), "each preset starts with a comment line"
    cfg = load_workload_config(name)
    assert cfg == load_workload_config(path)
    assert cfg.name == name
    w = make_workload(cfg, 0)
    assert len(w) == cfg.num_requests
    assert w.equals(make_workload(cfg, 0))
    if name.endswith("_cpu"):
        for part in getattr(cfg, "streams", (cfg,)):
            assert part.targets.time_scale < 0.05 and part.lengths.scale < 1
        assert w.ttft_s.min() < 0.1


def test_voice_and_text_differ_only_in_targets() -> None:
    voice, text = make_workload("voice", 0), make_workload("text", 0)
    assert np.array_equal(voice.arrival_s, text.arrival_s)
    assert voice.tds_tok_s.mean() > text.tds_tok_s.mean()  # 4.48 vs 3.89 tok/s
