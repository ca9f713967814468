"""Training configuration: dataclasses that are the one source of defaults, loaded from YAML.

Every field carries a one-line docstring (shown by `python -m andes_gym.train --help`).
A YAML file in `configs/train/` gives any subset of the fields; `--set KEY=VALUE` overrides
any key after the file is read (dotted keys, values parsed as YAML: `--set
algo.learning_rate=1e-4`, `--set eval.seeds=[7,8]`, `--set env.kwargs.k_slots=32`).
Unknown keys, in the file or in an override, are an error naming the key.
"""

from __future__ import annotations

import ast
import copy
import dataclasses
import hashlib
import inspect
import json
import types
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from andes_gym import config_files

# A training config that cannot be used; the message names the file or the key.
ConfigError = config_files.ConfigError


@dataclass
class EnvConfig:
    """The environment trained on."""

    id: str = "andes_gym/Surrogate-v0"
    """Gymnasium id of the environment."""
    kwargs: dict = field(default_factory=dict)
    """Keyword arguments of `gymnasium.make` (workload preset or trace, engine profile, k_slots, ...)."""
    n_envs: int = 2
    """Number of parallel environments."""
    vec_env: str = "subproc"
    """Vector env class: `subproc` (one process per env) or `dummy` (all in this process; on the compiled surrogate a step costs less than the inter-process round trip, so `dummy` moves 2.5x more env steps: benchmarks/results/surrogate.md §4)."""
    norm_obs: bool = False
    """Normalize observations with running statistics (VecNormalize; policy.kind=mlp only); baked into exports."""
    norm_reward: bool = False
    """Normalize rewards with a running estimate of the return's scale (VecNormalize)."""
    clip_obs: float = 10.0
    """Clip normalized observations to [-clip_obs, clip_obs] (only with norm_obs)."""


@dataclass
class AlgoConfig:
    """The stable-baselines3 algorithm; a None field means the algorithm's own default."""

    name: str = "PPO"
    """Algorithm class in `stable_baselines3` (PPO, A2C, ...) or `sb3_contrib`."""
    learning_rate: float | None = 3e-4
    """Optimizer learning rate."""
    n_steps: int | None = None
    """Steps per environment per rollout (on-policy algorithms)."""
    batch_size: int | None = None
    """Minibatch size (PPO)."""
    n_epochs: int | None = None
    """Passes over each rollout (PPO)."""
    gamma: float | None = 0.999
    """Discount factor; near 1 because an episode's return is its mean QoE."""
    gae_lambda: float | None = None
    """GAE lambda."""
    clip_range: float | None = None
    """PPO clipping range."""
    ent_coef: float | None = None
    """Entropy bonus coefficient."""
    vf_coef: float | None = None
    """Value loss coefficient."""
    max_grad_norm: float | None = None
    """Gradient norm clip."""
    target_kl: float | None = None
    """Stop a PPO update early when the approximate KL exceeds this."""
    extra: dict = field(default_factory=dict)
    """Any other constructor argument of the algorithm (checked against its signature)."""


@dataclass
class PolicyConfig:
    """The policy network."""

    kind: str = "slot_scorer"
    """`slot_scorer` (shared per-slot MLP, permutation-equivariant) or `mlp` (SB3's flat MLP)."""
    slot_hidden: list[int] = field(default_factory=lambda: [64, 64])
    """Hidden sizes of the per-slot encoder (slot features + global features)."""
    context_hidden: int = 64
    """Width of the layer that mixes each slot with the pooled other slots (0: none)."""
    value_hidden: list[int] = field(default_factory=lambda: [64])
    """Hidden sizes of the value head over the pooled slots and global features."""
    net_arch: list[int] = field(default_factory=lambda: [64, 64])
    """Hidden sizes of both networks when kind is `mlp`."""
    activation: str = "tanh"
    """Activation: tanh, relu or elu."""
    log_std_init: float = -0.5
    """Initial log standard deviation of the Gaussian action noise (shared by all slots)."""
    ortho_init: bool = True
    """Orthogonal weight initialization."""


@dataclass
class BCConfig:
    """Behaviour-cloning warm start from a teacher policy before RL (off by default)."""

    enabled: bool = False
    """Imitate the teacher's decisions (as slot actions) before the RL algorithm runs."""
    teacher: str = "andes"
    """Registered policy name of the teacher."""
    timesteps: int = 20000
    """Decisions to record while the teacher acts (the first round)."""
    dagger_rounds: int = 0
    """Extra rounds where the student acts and the teacher labels (DAgger)."""
    dagger_timesteps: int = 10000
    """Decisions recorded per DAgger round."""
    epochs: int = 30
    """Passes over the recorded data per round."""
    batch_size: int = 256
    """Minibatch size of the imitation updates."""
    learning_rate: float = 1e-3
    """Adam learning rate of the imitation updates."""
    target_scale: float = 0.9
    """Teacher slot actions (in [-1, 1]) are scaled by this so targets stay inside the clip."""
    value_pretrain: bool = True
    """Also fit the value head to the teacher's discounted returns."""
    log_std_after: float | None = -2.0
    """Log std of the action noise after imitation (None: keep policy.log_std_init)."""
    fit_threads: int | None = None
    """Torch threads while fitting (the env workers are idle then); None: every core."""


@dataclass
class EvalConfig:
    """Evaluation on held-out workload seeds (never used for training episodes)."""

    seeds: list[int] = field(default_factory=lambda: [1_000_001, 1_000_002, 1_000_003])
    """Held-out test seeds of the final table; training episodes never use them."""
    val_seeds: list[int] = field(default_factory=lambda: [2_000_001, 2_000_002])
    """Held-out validation seeds of the periodic evaluation (never trained on, never in the table)."""
    baselines: list[str] = field(default_factory=lambda: ["andes", "fcfs", "lqf", "edf"])
    """Registered policies compared with the trained one in the final table."""
    final: bool = True
    """Run the final evaluation (table + CSV) when training ends."""
    freq_timesteps: int = 0
    """Evaluate the deterministic policy on val_seeds every this many timesteps (0: never)."""
    select_best: bool = True
    """Keep the checkpoint with the best validation mean QoE (`checkpoints/best`) for export and the table."""
    max_steps: int | None = None
    """Cut evaluation episodes after this many decisions (None: run to the end)."""
    n_workers: int = 2
    """Processes running the final evaluation's episodes in parallel."""


@dataclass
class CheckpointConfig:
    """Periodic checkpoints (safetensors + JSON; nothing is pickled)."""

    freq_timesteps: int = 10000
    """Save every this many timesteps (0: only at the end or on interruption)."""
    keep_last: int = 3
    """Keep this many most recent checkpoints (0: keep all)."""


@dataclass
class TrainConfig:
    """Everything `python -m andes_gym.train` needs."""

    exp_name: str = "train"
    """Experiment name, part of the run directory name."""
    seed: int = 0
    """Seed of the model, the training episodes and the vector env."""
    total_timesteps: int = 50000
    """RL timesteps (scheduling decisions) to train for, summed over environments."""
    run_root: str = "runs"
    """Folder that holds run directories `{env}__{exp}__{seed}__{time}`."""
    device: str = "cpu"
    """Torch device."""
    torch_threads: int = 1
    """Torch intra-op threads in the trainer process (the env workers use the other cores)."""
    progress_bar: bool = True
    """Show a progress bar during training."""
    verbose: int = 0
    """Verbosity of the stable-baselines3 algorithm (0, 1 or 2)."""
    env: EnvConfig = field(default_factory=EnvConfig)
    """The environment."""
    algo: AlgoConfig = field(default_factory=AlgoConfig)
    """The RL algorithm."""
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    """The policy network."""
    bc: BCConfig = field(default_factory=BCConfig)
    """Behaviour-cloning warm start."""
    eval: EvalConfig = field(default_factory=EvalConfig)
    """Evaluation."""
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    """Checkpoints."""

    def to_dict(self) -> dict:
        """The config as plain data (YAML/JSON ready)."""
        return asdict(self)

    def hash(self) -> str:
        """A short, stable hash of the resolved config (recorded in checkpoints and exports)."""
        blob = json.dumps(self.to_dict(), sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


# --------------------------------------------------------------------------- loading


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> TrainConfig:
    """A config from a YAML file (or the defaults) with `KEY=VALUE` overrides applied.

    Args:
        path: YAML file (a bare name resolves to `configs/train/<name>.yaml`), or None for
            the defaults.
        overrides: `"dotted.key=value"` strings, values parsed as YAML.

    Raises:
        ConfigError: For a missing or malformed file (naming it), an unknown key (naming
            it), or a value of the wrong type.
    """
    data: dict = {}
    source = "<defaults>"
    if path is not None:
        try:
            file = config_files.resolve_config("train", path)
        except FileNotFoundError as exc:
            raise ConfigError(str(exc)) from exc
        source = str(file)
        loaded = config_files.read_yaml(file, "training config")
        if not isinstance(loaded, dict):
            raise ConfigError(
                f"{file} must hold a mapping of config keys, got {type(loaded).__name__}"
            )
        data = loaded
    cfg = config_from_dict(data, source=source)
    if not overrides:
        return cfg
    for item in overrides:
        apply_override(data, item)
    return config_from_dict(data, source=f"--set {' '.join(overrides)}")


def config_from_dict(data: dict, source: str = "<dict>") -> TrainConfig:
    """Builds a `TrainConfig` from nested plain data, checking every key and type.

    Raises:
        ConfigError: Naming the unknown key or the badly typed value and `source`.
    """
    return _build(TrainConfig, data, prefix="", source=source)


def apply_override(data: dict, item: str) -> None:
    """Applies one `dotted.key=value` override to nested plain data in place.

    Raises:
        ConfigError: When the item has no `=` or the key is empty.
    """
    if "=" not in item:
        raise ConfigError(
            f"override {item!r} must look like key=value (e.g. algo.learning_rate=1e-4)"
        )
    key, raw = item.split("=", 1)
    key = key.strip().lstrip("-")
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {item!r} has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    node = data
    parts = key.split(".")
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"override {key!r}: {part!r} holds {child!r}, not a mapping")
        node = child
    node[parts[-1]] = value


def _build(cls, data: Any, prefix: str, source: str):
    if not isinstance(data, dict):
        raise ConfigError(
            f"{source}: {prefix.rstrip('.') or 'config'} must be a mapping, got {data!r}"
        )
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(
            f"{source}: unknown config key {prefix + unknown[0]!r}; "
            f"known keys here: {', '.join(sorted(prefix + n for n in names))}"
        )
    kwargs = {}
    for name, value in data.items():
        hint = hints[name]
        key = prefix + name
        if dataclasses.is_dataclass(hint):
            kwargs[name] = _build(hint, value if value is not None else {}, key + ".", source)
        else:
            kwargs[name] = _coerce(value, hint, key, source)
    return cls(**kwargs)


_NO = object()  # "this converter does not accept the value"


def _as_bool(value: Any) -> Any:
    return value if isinstance(value, bool) else _NO


def _as_int(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return _NO


def _as_float(value: Any) -> Any:
    if isinstance(value, str):  # YAML reads "1e-4" (no dot) as a string
        try:
            return float(value)
        except ValueError:
            return _NO
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return _NO


def _as_str(value: Any) -> Any:
    return value if isinstance(value, str) else _NO


def _as_dict(value: Any) -> Any:
    if value is None:
        return {}
    return copy.deepcopy(value) if isinstance(value, dict) else _NO


_CONVERTERS = {bool: _as_bool, int: _as_int, float: _as_float, str: _as_str, dict: _as_dict}


def _coerce(value: Any, hint: Any, key: str, source: str) -> Any:
    """Checks (and gently converts) a value against a field's type hint.

    Raises:
        ConfigError: Naming the key, the expected type and the value.
    """
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], key, source)
    if origin is list:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{source}: {key} must be a list, got {value!r}")
        return [_coerce(v, args[0], f"{key}[{i}]", source) for i, v in enumerate(value)]
    convert = _CONVERTERS.get(origin or hint)
    if convert is None:
        return value
    out = convert(value)
    if out is _NO:
        raise ConfigError(f"{source}: {key} must be {_type_name(hint)}, got {value!r}")
    return out


def _type_name(hint: Any) -> str:
    return getattr(hint, "__name__", str(hint))


# --------------------------------------------------------------------------- help text


def field_docs(cls) -> dict[str, str]:
    """The one-line docstrings under each field of a config dataclass."""
    tree = ast.parse(inspect.getsource(cls))
    body = tree.body[0].body
    docs = {}
    for node, nxt in zip(body, body[1:], strict=False):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(nxt, ast.Expr)
            and isinstance(nxt.value, ast.Constant)
            and isinstance(nxt.value.value, str)
        ):
            docs[node.target.id] = nxt.value.value.strip()
    return docs


def describe_keys(cls=TrainConfig, prefix: str = "") -> list[str]:
    """One line per config key: `key = default  # docstring` (for --help)."""
    lines = []
    docs = field_docs(cls)
    defaults = cls()
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            lines.extend(describe_keys(hints[f.name], prefix + f.name + "."))
        else:
            default = getattr(defaults, f.name)
            lines.append(f"  {prefix + f.name} = {default!r}\n      {docs.get(f.name, '')}")
    return lines


def dump_yaml(cfg: TrainConfig) -> str:
    """The resolved config as YAML (loads back to the same config)."""
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)
