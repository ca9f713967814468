"""Training configuration: dataclasses that are the one source of defaults and domains, loaded from YAML.

Every field carries a one-line docstring (shown by `python -m andes_gym.train --help`) and
its domain in its type: `PositiveInt` is `Annotated[int, Ge(1)]`, a probability is
`Fraction`, and so on. Loading (`andes_gym.config_schema.validate`, the loader of every
config) checks each value against that declaration, so a bad value is a `ConfigError`
naming the key (and the file and line, or the `--set` it came from) before anything is
built or written. Integers never accept booleans, floats are finite, and numbers written as
YAML strings (`1e-4`, `1e6`, which YAML 1.1 does not read as numbers) are converted.

A YAML file in `configs/train/` gives any subset of the fields; `--set KEY=VALUE` overrides
any key after the file is read (dotted keys, values parsed as YAML: `--set
algo.learning_rate=1e-4`, `--set eval.seeds=[7,8]`, `--set env.kwargs.k_slots=32`;
`config_overrides`). Unknown keys, in the file or in an override, are an error naming the key.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from annotated_types import Ge, Gt, Interval, MinLen
from pydantic import AfterValidator, ConfigDict, WrapValidator
from typing_extensions import TypedDict

from andes_gym import config_files
from andes_gym.config_schema import (
    Bool,
    Distinct,
    NoneIsEmpty,
    Rule,
    Str,
    Text,
    YamlInt,
    YamlNumber,
    section,
    validate,
)
from andes_gym.training.config_help import describe_keys as _describe_keys
from andes_gym.training.config_help import domain_text, field_docs
from andes_gym.training.config_overrides import (
    add_config_arguments,
    apply_override,
    parse_override,
    with_overrides,
)

# A training config that cannot be used; the message names the file or the key.
ConfigError = config_files.ConfigError

__all__ = [
    "ACTIVATION_NAMES",
    "AlgoConfig",
    "BCConfig",
    "CheckpointConfig",
    "ConfigError",
    "EnvConfig",
    "EvalConfig",
    "PolicyConfig",
    "TrainConfig",
    "add_config_arguments",
    "apply_override",
    "config_from_dict",
    "describe_keys",
    "domain_text",
    "dump_yaml",
    "field_docs",
    "load_config",
    "parse_override",
]


# --------------------------------------------------------------------------- domains


def _is_name(text: str) -> bool:
    """A usable file-name part: not blank, not `.`/`..`, no path separator."""
    return bool(text.strip()) and text not in (".", "..") and not set(text) & set("/\\\0")


def _is_torch_device(text: str) -> bool:
    """Whether torch parses the device string (`auto` is SB3's; unchecked without torch)."""
    if text in ("auto", "cpu", "cuda", "mps"):
        return True
    try:
        import torch
    except ImportError:
        return True
    try:
        torch.device(text)
    except (RuntimeError, ValueError, TypeError):
        return False
    return True


PositiveInt = Annotated[YamlInt, Ge(1)]
Count = Annotated[YamlInt, Ge(0)]
PositiveFloat = Annotated[YamlNumber, Gt(0)]
NonNegativeFloat = Annotated[YamlNumber, Ge(0)]
Fraction = Annotated[YamlNumber, Interval(ge=0, le=1)]
PositiveFraction = Annotated[YamlNumber, Interval(gt=0, le=1)]
Seed = Annotated[YamlInt, Interval(ge=0, le=2**32 - 1)]
# Action scores live in [-1, 1]: a std above e**2 is pure noise, below e**-20 none at all.
LogStd = Annotated[YamlNumber, Interval(ge=-20, le=2)]
Name = Annotated[Str, Rule(_is_name, "a name without / or \\")]
Device = Annotated[Str, Rule(_is_torch_device, "a torch device (cpu, cuda:0, auto)")]
Hidden = list[PositiveInt]

ACTIVATION_NAMES = ("tanh", "relu", "elu")


def _finite(value: Any, key: str = "") -> Any:
    """No NaN or infinity anywhere inside free-form data (`env.kwargs`, `algo.extra`)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"must be finite, got {value!r}", key=key)
    items = value.items() if isinstance(value, dict) else ()
    if isinstance(value, list | tuple):
        items = ((f"[{i}]", item) for i, item in enumerate(value))
    for name, item in items:
        sub = f"{key}{name}" if str(name).startswith("[") else f"{key}.{name}".lstrip(".")
        _finite(item, sub)
    return value


def _in_given_order(value: Any, handler: Any) -> Any:
    """The checked mapping with its keys in the order written (not the declared one)."""
    out = handler(value)
    return {key: out[key] for key in value}


class EnvKwargs(TypedDict, total=False):
    """`env.kwargs`: passed to `gymnasium.make`; the andes_gym envs' numeric arguments are checked.

    Workload and engine configs are checked by the envs themselves when the trainer builds
    one (before a run directory is made); unknown arguments are rejected by the env.
    """

    __pydantic_config__ = ConfigDict(extra="allow")  # type: ignore[misc]
    k_slots: PositiveInt | None
    iters_per_decision: PositiveInt
    lookahead_s: PositiveFloat
    time_limit_s: PositiveFloat | None
    time_scale: PositiveFloat
    oracle: Bool
    skip_uncontested: Bool
    realtime: Bool


EnvKwargsField = Annotated[
    EnvKwargs, WrapValidator(_in_given_order), NoneIsEmpty, AfterValidator(_finite)
]
FreeMapping = Annotated[dict[Str, Any], NoneIsEmpty, AfterValidator(_finite)]


# --------------------------------------------------------------------------- the config


@section
@dataclass
class EnvConfig:
    """The environment trained on."""

    id: Text = "andes_gym/Surrogate-v0"
    """Gymnasium id of the environment."""
    kwargs: EnvKwargsField = field(default_factory=dict)
    """Keyword arguments of `gymnasium.make` (workload preset or trace, engine profile, k_slots, ...); the numeric ones in `EnvKwargs` are checked here, the rest by the env."""
    n_envs: PositiveInt = 2
    """Number of parallel environments."""
    vec_env: Literal["subproc", "dummy"] = "subproc"
    """Vector env class: `subproc` (one process per env) or `dummy` (all in this process; on the compiled surrogate a step costs less than the inter-process round trip, so `dummy` moves 2.5x more env steps: benchmarks/results/surrogate.md §4)."""
    norm_obs: Bool = False
    """Normalize observations with running statistics (VecNormalize; policy.kind=mlp only); baked into exports."""
    norm_reward: Bool = False
    """Normalize rewards with a running estimate of the return's scale (VecNormalize)."""
    clip_obs: PositiveFloat = 10.0
    """Clip normalized observations to [-clip_obs, clip_obs] (only with norm_obs)."""


@section
@dataclass
class AlgoConfig:
    """The stable-baselines3 algorithm; a None field means the algorithm's own default."""

    name: Annotated[Str, Rule(str.isidentifier, "an algorithm class name")] = "PPO"
    """Algorithm class in `stable_baselines3` (PPO, A2C, ...) or `sb3_contrib`."""
    learning_rate: PositiveFloat | None = 3e-4
    """Optimizer learning rate."""
    n_steps: PositiveInt | None = None
    """Steps per environment per rollout (on-policy algorithms)."""
    batch_size: PositiveInt | None = None
    """Minibatch size (PPO)."""
    n_epochs: PositiveInt | None = None
    """Passes over each rollout (PPO)."""
    gamma: PositiveFraction | None = 0.999
    """Discount factor; near 1 because an episode's return is its mean QoE."""
    gae_lambda: Fraction | None = None
    """GAE lambda."""
    clip_range: PositiveFloat | None = None
    """PPO clipping range."""
    ent_coef: NonNegativeFloat | None = None
    """Entropy bonus coefficient."""
    vf_coef: NonNegativeFloat | None = None
    """Value loss coefficient."""
    max_grad_norm: PositiveFloat | None = None
    """Gradient norm clip."""
    target_kl: PositiveFloat | None = None
    """Stop a PPO update early when the approximate KL exceeds this."""
    extra: FreeMapping = field(default_factory=dict)
    """Any other constructor argument of the algorithm (checked against its signature)."""


@section
@dataclass
class PolicyConfig:
    """The policy network."""

    kind: Literal["slot_scorer", "mlp"] = "slot_scorer"
    """`slot_scorer` (shared per-slot MLP, permutation-equivariant) or `mlp` (SB3's flat MLP)."""
    slot_hidden: Hidden = field(default_factory=lambda: [64, 64])
    """Hidden sizes of the per-slot encoder (slot features + global features)."""
    context_hidden: Count = 64
    """Width of the layer that mixes each slot with the pooled other slots (0: none)."""
    value_hidden: Hidden = field(default_factory=lambda: [64])
    """Hidden sizes of the value head over the pooled slots and global features."""
    net_arch: Hidden = field(default_factory=lambda: [64, 64])
    """Hidden sizes of both networks when kind is `mlp`."""
    activation: Literal[ACTIVATION_NAMES] = "tanh"
    """Activation: tanh, relu or elu."""
    log_std_init: LogStd = -0.5
    """Initial log standard deviation of the Gaussian action noise (shared by all slots)."""
    ortho_init: Bool = True
    """Orthogonal weight initialization."""


@section
@dataclass
class BCConfig:
    """Behaviour-cloning warm start from a teacher policy before RL (off by default)."""

    enabled: Bool = False
    """Imitate the teacher's decisions (as slot actions) before the RL algorithm runs."""
    teacher: Text = "andes"
    """Registered policy name of the teacher (`andes_rollout`: the look-ahead planner)."""
    teacher_kwargs: dict[Text, Any] = field(default_factory=dict)
    """Constructor arguments of the teacher (e.g. `{num_futures: 2}` for the planner)."""
    timesteps: PositiveInt = 20000
    """Decisions to record while the teacher acts (the first round)."""
    dagger_rounds: Count = 0
    """Extra rounds where the student acts and the teacher labels (DAgger)."""
    dagger_timesteps: PositiveInt = 10000
    """Decisions recorded per DAgger round."""
    epochs: PositiveInt = 30
    """Passes over the recorded data per round."""
    batch_size: PositiveInt = 256
    """Minibatch size of the imitation updates."""
    learning_rate: PositiveFloat = 1e-3
    """Adam learning rate of the imitation updates."""
    target_scale: PositiveFraction = 0.9
    """Teacher slot actions (in [-1, 1]) are scaled by this so targets stay inside the clip."""
    value_pretrain: Bool = True
    """Also fit the value head to the teacher's discounted returns."""
    log_std_after: LogStd | None = -2.0
    """Log std of the action noise after imitation (None: keep policy.log_std_init)."""
    fit_threads: PositiveInt | None = None
    """Torch threads while fitting (the env workers are idle then); None: every core."""


@section
@dataclass
class EvalConfig:
    """Evaluation on held-out workload seeds (never used for training episodes)."""

    seeds: Annotated[list[Seed], MinLen(1), Distinct] = field(
        default_factory=lambda: [1_000_001, 1_000_002, 1_000_003]
    )
    """Held-out test seeds of the final table; training episodes never use them."""
    val_seeds: Annotated[list[Seed], Distinct] = field(
        default_factory=lambda: [2_000_001, 2_000_002]
    )
    """Held-out validation seeds of the periodic evaluation (never trained on, never in the table)."""
    baselines: Annotated[list[Text], Distinct] = field(
        default_factory=lambda: ["andes", "fcfs", "lqf", "edf"]
    )
    """Registered policies compared with the trained one in the final table."""
    final: Bool = True
    """Run the final evaluation (table + CSV) when training ends."""
    freq_timesteps: Count = 0
    """Evaluate the deterministic policy on val_seeds every this many timesteps (0: never)."""
    select_best: Bool = True
    """Keep the checkpoint with the best validation mean QoE (`checkpoints/best`) for export and the table."""
    max_steps: PositiveInt | None = None
    """Cut evaluation episodes after this many decisions (None: run to the end)."""
    n_workers: PositiveInt = 2
    """Processes running the final evaluation's episodes in parallel."""


@section
@dataclass
class CheckpointConfig:
    """Periodic checkpoints (safetensors + JSON; nothing is pickled)."""

    freq_timesteps: Count = 10000
    """Save every this many timesteps (0: only at the end or on interruption)."""
    keep_last: Count = 3
    """Keep this many most recent checkpoints (0: keep all)."""


@section
@dataclass
class TrainConfig:
    """Everything `python -m andes_gym.train` needs."""

    exp_name: Name = "train"
    """Experiment name, part of the run directory name."""
    seed: Seed = 0
    """Seed of the model, the training episodes and the vector env."""
    total_timesteps: PositiveInt = 50000
    """RL timesteps (scheduling decisions) to train for, summed over environments."""
    run_root: Text = "runs"
    """Folder that holds run directories `{env}__{exp}__{seed}__{time}`."""
    device: Device = "cpu"
    """Torch device."""
    torch_threads: PositiveInt = 1
    """Torch intra-op threads in the trainer process (the env workers use the other cores)."""
    progress_bar: Bool = True
    """Show a progress bar during training."""
    verbose: Annotated[YamlInt, Rule(lambda v: v in (0, 1, 2), "one of 0, 1, 2")] = 0
    """Verbosity of the stable-baselines3 algorithm (0, 1 or 2)."""
    env: Annotated[EnvConfig, NoneIsEmpty] = field(default_factory=EnvConfig)
    """The environment."""
    algo: Annotated[AlgoConfig, NoneIsEmpty] = field(default_factory=AlgoConfig)
    """The RL algorithm."""
    policy: Annotated[PolicyConfig, NoneIsEmpty] = field(default_factory=PolicyConfig)
    """The policy network."""
    bc: Annotated[BCConfig, NoneIsEmpty] = field(default_factory=BCConfig)
    """Behaviour-cloning warm start."""
    eval: Annotated[EvalConfig, NoneIsEmpty] = field(default_factory=EvalConfig)
    """Evaluation."""
    checkpoint: Annotated[CheckpointConfig, NoneIsEmpty] = field(default_factory=CheckpointConfig)
    """Checkpoints."""

    def to_dict(self) -> dict:
        """The config as plain data (YAML/JSON ready)."""
        return asdict(self)

    def hash(self) -> str:
        """A short, stable hash of the resolved config (recorded in checkpoints and exports)."""
        blob = json.dumps(self.to_dict(), sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


# --------------------------------------------------------------------------- loading


def _check_relations(cfg: TrainConfig) -> TrainConfig:
    """Rules between fields (each field's own domain is in its type)."""
    shared = sorted(set(cfg.eval.seeds) & set(cfg.eval.val_seeds))
    if shared:
        raise ConfigError(
            f"eval.val_seeds must differ from eval.seeds (the final table's test seeds), "
            f"both hold {shared}",
            key="eval.val_seeds",
        )
    if cfg.eval.freq_timesteps > 0 and not cfg.eval.val_seeds:
        raise ConfigError(
            f"eval.val_seeds is empty but eval.freq_timesteps={cfg.eval.freq_timesteps} asks "
            "for periodic validation on them",
            key="eval.val_seeds",
        )
    return cfg


_SCHEMA = Annotated[TrainConfig, AfterValidator(_check_relations)]


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> TrainConfig:
    """A config from a YAML file (or the defaults) with `KEY=VALUE` overrides applied.

    Args:
        path: YAML file (a bare name resolves to `configs/train/<name>.yaml`), or None for
            the defaults. An empty file (or one holding `{}`) is an error: leave `path`
            out for the defaults.
        overrides: `"dotted.key=value"` strings, values parsed as YAML.

    Raises:
        ConfigError: For a missing, malformed or empty file (naming it), an unknown key, or
            a value outside its field's domain (naming the key, and the file and line or
            the override it came from).
    """
    data: dict = {}
    source, lines = "<defaults>", None
    if path is not None:
        try:
            file = config_files.resolve_config("train", path)
        except FileNotFoundError as exc:
            raise ConfigError(str(exc)) from exc
        source = str(file)
        data, lines = config_files.read_yaml_lines(file, "training config")
        if not isinstance(data, dict):
            raise ConfigError(
                f"must hold a mapping of config keys, got {type(data).__name__}", source=file
            )
        if not data:
            raise ConfigError("empty training config (no keys)", source=file)
    cfg = validate(_SCHEMA, data, source=source, lines=lines)
    if not overrides:
        return cfg
    return with_overrides(
        data, overrides, lambda d: validate(_SCHEMA, d, source=source, lines=lines)
    )


def config_from_dict(data: dict, source: str = "<dict>") -> TrainConfig:
    """Builds a `TrainConfig` from nested plain data, checking every key, type and domain.

    Raises:
        ConfigError: Naming the unknown key or the bad value and `source`.
    """
    return validate(_SCHEMA, data, source=source)


def describe_keys(cls: type = TrainConfig, prefix: str = "") -> list[str]:
    """Two lines per config key: `key = default  [domain]` and its docstring (for --help)."""
    return _describe_keys(cls, prefix)


def dump_yaml(cfg: TrainConfig) -> str:
    """The resolved config as YAML (loads back to the same config)."""
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)
