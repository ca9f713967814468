"""Training configuration: dataclasses that are the one source of defaults and domains, loaded from YAML.

Every field carries a one-line docstring (shown by `python -m andes_gym.train --help`) and
its domain in its type: `PositiveInt` is `Annotated[int, Range(ge=1)]`, a probability is
`Fraction`, and so on. Loading checks each value against that declaration, so a bad value
is a `ConfigError` naming the key (and the file or `--set` it came from) before anything is
built or written. Integers never accept booleans, floats are finite, and numbers written as
YAML strings (`1e-4`, `1e6`, which YAML 1.1 does not read as numbers) are converted.

A YAML file in `configs/train/` gives any subset of the fields; `--set KEY=VALUE` overrides
any key after the file is read (dotted keys, values parsed as YAML: `--set
algo.learning_rate=1e-4`, `--set eval.seeds=[7,8]`, `--set env.kwargs.k_slots=32`).
Unknown keys, in the file or in an override, are an error naming the key.
"""

from __future__ import annotations

import argparse
import ast
import copy
import dataclasses
import functools
import hashlib
import inspect
import json
import math
import types
import typing
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any

import yaml

from andes_gym import config_files

# A training config that cannot be used; the message names the file or the key.
ConfigError = config_files.ConfigError


# --------------------------------------------------------------------------- domains


class Domain:
    """A rule on a field's value, declared in its type: `Annotated[int, Range(ge=1)]`."""

    def describe(self) -> str:
        """The rule in words, for messages and `--help` ("in (0, 1]", "non-empty")."""
        raise NotImplementedError

    def holds(self, value: Any) -> bool:
        """Whether an already typed value follows the rule."""
        raise NotImplementedError

    def check(self, value: Any, key: str, where: Callable[[str], str]) -> Any:
        """The value if it follows the rule.

        Raises:
            ConfigError: Naming the key, the rule and the value.
        """
        if not self.holds(value):
            raise ConfigError(
                f"{key} must be {self.describe()}, got {value!r}",
                source=where(key),
                key=key,
            )
        return value


def _number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(x)


@dataclass(frozen=True)
class Range(Domain):
    """Bounds of a number (None: unbounded on that side)."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None

    def describe(self) -> str:
        low = (
            f"[{_number(self.ge)}"
            if self.ge is not None
            else (f"({_number(self.gt)}" if self.gt is not None else None)
        )
        high = (
            f"{_number(self.le)}]"
            if self.le is not None
            else (f"{_number(self.lt)})" if self.lt is not None else None)
        )
        if low and high:
            return f"in {low}, {high}"
        if low:
            return f">= {_number(self.ge)}" if self.ge is not None else f"> {_number(self.gt)}"
        if high:
            return f"<= {_number(self.le)}" if self.le is not None else f"< {_number(self.lt)}"
        return "any number"

    def holds(self, value: Any) -> bool:
        return (
            (self.ge is None or value >= self.ge)
            and (self.gt is None or value > self.gt)
            and (self.le is None or value <= self.le)
            and (self.lt is None or value < self.lt)
        )


@dataclass(frozen=True)
class OneOf(Domain):
    """One of a fixed set of values."""

    choices: tuple

    def describe(self) -> str:
        return "one of " + ", ".join(repr(c) for c in self.choices)

    def holds(self, value: Any) -> bool:
        return value in self.choices


@dataclass(frozen=True)
class NonEmpty(Domain):
    """A non-empty string or list."""

    def describe(self) -> str:
        return "non-empty"

    def holds(self, value: Any) -> bool:
        return len(value) > 0


@dataclass(frozen=True)
class Distinct(Domain):
    """A list without repeated items."""

    def describe(self) -> str:
        return "without repeats"

    def holds(self, value: Any) -> bool:
        return len(set(value)) == len(value)


@dataclass(frozen=True)
class Satisfies(Domain):
    """Any other rule: a predicate and what it expects, in words."""

    test: Callable[[Any], bool]
    expected: str

    def describe(self) -> str:
        return self.expected

    def holds(self, value: Any) -> bool:
        return bool(self.test(value))


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


PositiveInt = Annotated[int, Range(ge=1)]
Count = Annotated[int, Range(ge=0)]
PositiveFloat = Annotated[float, Range(gt=0)]
NonNegativeFloat = Annotated[float, Range(ge=0)]
Fraction = Annotated[float, Range(ge=0, le=1)]
PositiveFraction = Annotated[float, Range(gt=0, le=1)]
Seed = Annotated[int, Range(ge=0, le=2**32 - 1)]
# Action scores live in [-1, 1]: a std above e**2 is pure noise, below e**-20 none at all.
LogStd = Annotated[float, Range(ge=-20, le=2)]
Text = Annotated[str, NonEmpty()]
Name = Annotated[str, Satisfies(_is_name, "a name without / or \\")]
Device = Annotated[str, Satisfies(_is_torch_device, "a torch device (cpu, cuda:0, auto)")]
Hidden = list[PositiveInt]

ACTIVATION_NAMES = ("tanh", "relu", "elu")


class EnvKwargs(Domain):
    """`env.kwargs`: passed to `gymnasium.make`; the andes_gym envs' numeric arguments are checked.

    Workload and engine configs are checked by the envs themselves when the trainer builds
    one (before a run directory is made); unknown arguments are rejected by the env.
    """

    DOMAINS: typing.ClassVar[dict[str, Any]] = {
        "k_slots": PositiveInt | None,
        "iters_per_decision": PositiveInt,
        "lookahead_s": PositiveFloat,
        "time_limit_s": PositiveFloat | None,
        "time_scale": PositiveFloat,
        "oracle": bool,
        "skip_uncontested": bool,
        "realtime": bool,
    }

    def describe(self) -> str:
        return "gymnasium.make arguments (k_slots: int >= 1 or null, ...)"

    def holds(self, value: Any) -> bool:
        return True

    def check(self, value: Any, key: str, where: Callable[[str], str]) -> Any:
        return {
            name: _coerce(item, self.DOMAINS[name], f"{key}.{name}", where)
            if name in self.DOMAINS
            else item
            for name, item in value.items()
        }


# --------------------------------------------------------------------------- the config


@dataclass
class EnvConfig:
    """The environment trained on."""

    id: Text = "andes_gym/Surrogate-v0"
    """Gymnasium id of the environment."""
    kwargs: Annotated[dict, EnvKwargs()] = field(default_factory=dict)
    """Keyword arguments of `gymnasium.make` (workload preset or trace, engine profile, k_slots, ...); the numeric ones in `EnvKwargs.DOMAINS` are checked here, the rest by the env."""
    n_envs: PositiveInt = 2
    """Number of parallel environments."""
    vec_env: Annotated[str, OneOf(("subproc", "dummy"))] = "subproc"
    """Vector env class: `subproc` (one process per env) or `dummy` (all in this process; on the compiled surrogate a step costs less than the inter-process round trip, so `dummy` moves 2.5x more env steps: benchmarks/results/surrogate.md §4)."""
    norm_obs: bool = False
    """Normalize observations with running statistics (VecNormalize; policy.kind=mlp only); baked into exports."""
    norm_reward: bool = False
    """Normalize rewards with a running estimate of the return's scale (VecNormalize)."""
    clip_obs: PositiveFloat = 10.0
    """Clip normalized observations to [-clip_obs, clip_obs] (only with norm_obs)."""


@dataclass
class AlgoConfig:
    """The stable-baselines3 algorithm; a None field means the algorithm's own default."""

    name: Annotated[str, Satisfies(str.isidentifier, "an algorithm class name")] = "PPO"
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
    extra: dict = field(default_factory=dict)
    """Any other constructor argument of the algorithm (checked against its signature)."""


@dataclass
class PolicyConfig:
    """The policy network."""

    kind: Annotated[str, OneOf(("slot_scorer", "mlp"))] = "slot_scorer"
    """`slot_scorer` (shared per-slot MLP, permutation-equivariant) or `mlp` (SB3's flat MLP)."""
    slot_hidden: Hidden = field(default_factory=lambda: [64, 64])
    """Hidden sizes of the per-slot encoder (slot features + global features)."""
    context_hidden: Count = 64
    """Width of the layer that mixes each slot with the pooled other slots (0: none)."""
    value_hidden: Hidden = field(default_factory=lambda: [64])
    """Hidden sizes of the value head over the pooled slots and global features."""
    net_arch: Hidden = field(default_factory=lambda: [64, 64])
    """Hidden sizes of both networks when kind is `mlp`."""
    activation: Annotated[str, OneOf(ACTIVATION_NAMES)] = "tanh"
    """Activation: tanh, relu or elu."""
    log_std_init: LogStd = -0.5
    """Initial log standard deviation of the Gaussian action noise (shared by all slots)."""
    ortho_init: bool = True
    """Orthogonal weight initialization."""


@dataclass
class BCConfig:
    """Behaviour-cloning warm start from a teacher policy before RL (off by default)."""

    enabled: bool = False
    """Imitate the teacher's decisions (as slot actions) before the RL algorithm runs."""
    teacher: Text = "andes"
    """Registered policy name of the teacher."""
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
    value_pretrain: bool = True
    """Also fit the value head to the teacher's discounted returns."""
    log_std_after: LogStd | None = -2.0
    """Log std of the action noise after imitation (None: keep policy.log_std_init)."""
    fit_threads: PositiveInt | None = None
    """Torch threads while fitting (the env workers are idle then); None: every core."""


@dataclass
class EvalConfig:
    """Evaluation on held-out workload seeds (never used for training episodes)."""

    seeds: Annotated[list[Seed], NonEmpty(), Distinct()] = field(
        default_factory=lambda: [1_000_001, 1_000_002, 1_000_003]
    )
    """Held-out test seeds of the final table; training episodes never use them."""
    val_seeds: Annotated[list[Seed], Distinct()] = field(
        default_factory=lambda: [2_000_001, 2_000_002]
    )
    """Held-out validation seeds of the periodic evaluation (never trained on, never in the table)."""
    baselines: Annotated[list[Text], Distinct()] = field(
        default_factory=lambda: ["andes", "fcfs", "lqf", "edf"]
    )
    """Registered policies compared with the trained one in the final table."""
    final: bool = True
    """Run the final evaluation (table + CSV) when training ends."""
    freq_timesteps: Count = 0
    """Evaluate the deterministic policy on val_seeds every this many timesteps (0: never)."""
    select_best: bool = True
    """Keep the checkpoint with the best validation mean QoE (`checkpoints/best`) for export and the table."""
    max_steps: PositiveInt | None = None
    """Cut evaluation episodes after this many decisions (None: run to the end)."""
    n_workers: PositiveInt = 2
    """Processes running the final evaluation's episodes in parallel."""


@dataclass
class CheckpointConfig:
    """Periodic checkpoints (safetensors + JSON; nothing is pickled)."""

    freq_timesteps: Count = 10000
    """Save every this many timesteps (0: only at the end or on interruption)."""
    keep_last: Count = 3
    """Keep this many most recent checkpoints (0: keep all)."""


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
    progress_bar: bool = True
    """Show a progress bar during training."""
    verbose: Annotated[int, OneOf((0, 1, 2))] = 0
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
            the defaults. An empty file (or one holding `{}`) is an error: leave `path`
            out for the defaults.
        overrides: `"dotted.key=value"` strings, values parsed as YAML.

    Raises:
        ConfigError: For a missing, malformed or empty file (naming it), an unknown key, or
            a value outside its field's domain (naming the key, and the file or the
            override it came from).
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
                f"must hold a mapping of config keys, got {type(loaded).__name__}",
                source=file,
            )
        if not loaded:
            raise ConfigError("empty training config (no keys)", source=file)
        data = loaded
    cfg = config_from_dict(data, source=source)
    if not overrides:
        return cfg
    by_key = {}
    for item in overrides:
        key, value = parse_override(item)
        _set_key(data, key, value, item)
        by_key[key] = f"--set {item}"
    return _build(TrainConfig, data, "", _Sources(source, by_key))


def config_from_dict(data: dict, source: str = "<dict>") -> TrainConfig:
    """Builds a `TrainConfig` from nested plain data, checking every key, type and domain.

    Raises:
        ConfigError: Naming the unknown key or the bad value and `source`.
    """
    return _build(TrainConfig, data, "", _Sources(source, {}))


def parse_override(item: str) -> tuple[str, Any]:
    """The dotted key and the YAML-parsed value of one `dotted.key=value` override.

    Raises:
        ConfigError: When the item has no `=` or a key part is empty.
    """
    if "=" not in item:
        raise ConfigError(
            f"override {item!r} must look like key=value (e.g. algo.learning_rate=1e-4)",
            source="--set",
        )
    key, raw = item.split("=", 1)
    key = key.strip().lstrip("-")
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {item!r} has an empty key", source="--set")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key, value


def apply_override(data: dict, item: str) -> None:
    """Applies one `dotted.key=value` override to nested plain data in place.

    Raises:
        ConfigError: When the item is malformed or a key's parent holds a non-mapping.
    """
    key, value = parse_override(item)
    _set_key(data, key, value, item)


def _set_key(data: dict, key: str, value: Any, item: str) -> None:
    node = data
    parts = key.split(".")
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(
                f"override {item!r}: {part!r} holds {child!r}, not a mapping",
                source="--set",
                key=key,
            )
        node = child
    node[parts[-1]] = value


class _Sources:
    """Where a key's value came from: the override that set it (or one above or below it), else the file."""

    def __init__(self, file: str, overrides: dict[str, str]) -> None:
        self.file = file
        self.overrides = overrides

    def __call__(self, key: str) -> str:
        for set_key in sorted(self.overrides, key=len, reverse=True):
            if _related(key, set_key):
                return self.overrides[set_key]
        return self.file


def _related(key: str, other: str) -> bool:
    """Whether one dotted key is the other or lies under it (`a.b[0]` lies under `a.b`)."""
    short, long = sorted((key, other), key=len)
    return long == short or long.startswith((short + ".", short + "["))


def _build(cls, data: Any, prefix: str, where: _Sources):
    section = prefix.rstrip(".") or "config"
    if not isinstance(data, dict):
        raise ConfigError(
            f"{section} must be a mapping of keys, got {data!r}",
            source=where(section),
            key=prefix.rstrip(".") or None,
        )
    hints = typing.get_type_hints(cls, include_extras=True)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(str(k) for k in set(data) - names)
    if unknown:
        key = prefix + unknown[0]
        raise ConfigError(
            f"unknown config key {key!r}; known keys here: "
            f"{', '.join(sorted(prefix + n for n in names))}",
            source=where(key),
            key=key,
        )
    kwargs = {}
    for name, value in data.items():
        hint = hints[name]
        key = prefix + name
        if dataclasses.is_dataclass(hint):
            kwargs[name] = _build(hint, value if value is not None else {}, key + ".", where)
        else:
            kwargs[name] = _coerce(value, hint, key, where)
    built = cls(**kwargs)
    if cls is TrainConfig:
        _check_relations(built, where)
    return built


def _check_relations(cfg: TrainConfig, where: _Sources) -> None:
    """Rules between fields (each field's own domain is in its type)."""
    shared = sorted(set(cfg.eval.seeds) & set(cfg.eval.val_seeds))
    if shared:
        raise ConfigError(
            f"eval.val_seeds must differ from eval.seeds (the final table's test seeds), "
            f"both hold {shared}",
            source=where("eval.val_seeds"),
            key="eval.val_seeds",
        )
    if cfg.eval.freq_timesteps > 0 and not cfg.eval.val_seeds:
        raise ConfigError(
            f"eval.val_seeds is empty but eval.freq_timesteps={cfg.eval.freq_timesteps} asks "
            "for periodic validation on them",
            source=where("eval.val_seeds"),
            key="eval.val_seeds",
        )


_NO = object()  # "this converter does not accept the value"


def _as_bool(value: Any) -> Any:
    return value if isinstance(value, bool) else _NO


def _as_int(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):  # YAML reads "1e6" (no dot) as a string
        value = _as_float(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return _NO


def _as_float(value: Any) -> Any:
    if isinstance(value, str):  # YAML reads "1e-4" (no dot) as a string
        try:
            value = float(value)
        except ValueError:
            return _NO
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            out = float(value)
        except OverflowError:
            return _NO
        return out if math.isfinite(out) else _NO
    return _NO


def _as_str(value: Any) -> Any:
    return value if isinstance(value, str) else _NO


def _as_dict(value: Any) -> Any:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        return _NO
    return copy.deepcopy(value)


_CONVERTERS = {
    bool: _as_bool,
    int: _as_int,
    float: _as_float,
    str: _as_str,
    dict: _as_dict,
}
_TYPE_NAMES = {
    bool: "true or false",
    int: "an integer",
    float: "a finite number",
    str: "a string",
    dict: "a mapping with string keys",
    list: "list",
}


def _coerce(
    value: Any, hint: Any, key: str, where: Callable[[str], str], expected: str | None = None
) -> Any:
    """Checks (and gently converts) a value against a field's type hint and domain.

    Args:
        value: The value as read.
        hint: The field's type hint (its domain rules in `Annotated` metadata).
        key: The dotted key, for messages.
        where: Where a key's value came from (file or override), for messages.
        expected: The whole field's domain in words, for a value of the wrong type.

    Raises:
        ConfigError: Naming the key, what was expected and the value.
    """
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is Annotated:
        out = _coerce(value, args[0], key, where, expected or domain_text(hint))
        for rule in hint.__metadata__:
            out = rule.check(out, key, where)
        return out
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], key, where, expected or domain_text(hint))
    if origin is list:
        if not isinstance(value, list | tuple):
            raise ConfigError(
                f"{key} must be a {expected or domain_text(hint)}, got {value!r}",
                source=where(key),
                key=key,
            )
        return [_coerce(v, args[0], f"{key}[{i}]", where) for i, v in enumerate(value)]
    convert = _CONVERTERS.get(origin or hint)
    if convert is None:
        return value
    out = convert(value)
    if out is _NO:
        raise ConfigError(
            f"{key} must be {expected or domain_text(hint)}, got {value!r}",
            source=where(key),
            key=key,
        )
    if out.__class__ is dict:
        _check_finite(out, key, where)
    return out


def _check_finite(value: Any, key: str, where: Callable[[str], str]) -> None:
    """No NaN or infinity anywhere inside free-form data (`env.kwargs`, `algo.extra`)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{key} must be finite, got {value!r}", source=where(key), key=key)
    if isinstance(value, dict):
        for name, item in value.items():
            _check_finite(item, f"{key}.{name}", where)
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            _check_finite(item, f"{key}[{i}]", where)


def domain_text(hint: Any) -> str:
    """A field's type and domain in words (`an integer >= 1`, `a finite number in (0, 1] or null`)."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is Annotated:
        base, rest = domain_text(args[0]), []
        for rule in hint.__metadata__:
            if isinstance(rule, OneOf | Satisfies):
                base = rule.describe()
            elif isinstance(rule, NonEmpty) and args[0] is str:
                base = "a non-empty string"
            elif isinstance(rule, Range):
                base = f"{base} {rule.describe()}"
            elif not isinstance(rule, EnvKwargs):
                rest.append(rule.describe())
        return f"{base} ({', '.join(rest)})" if rest else base
    if origin in (typing.Union, types.UnionType):
        inner = [domain_text(a) for a in args if a is not type(None)]
        return " or ".join(inner + (["null"] if type(None) in args else []))
    if origin is list:
        return f"list of {_plural(domain_text(args[0]))}"
    return _TYPE_NAMES.get(hint, getattr(hint, "__name__", str(hint)))


def _plural(text: str) -> str:
    """`an integer >= 1` -> `integers >= 1` (for `list of ...`)."""
    for one, many in (
        ("an integer", "integers"),
        ("a finite number", "finite numbers"),
        ("a non-empty string", "non-empty strings"),
        ("a string", "strings"),
    ):
        if text.startswith(one):
            return many + text[len(one) :]
    return text


# --------------------------------------------------------------------------- help text


def field_docs(cls) -> dict[str, str]:
    """The one-line docstrings under each field of a config dataclass."""
    return _class_field_docs(inspect.getmodule(cls)).get(cls.__qualname__, {})


@functools.cache
def _class_field_docs(module) -> dict[str, dict[str, str]]:
    """Field docstrings of every class of a module (its source parsed once: `--help` is quick)."""
    docs: dict[str, dict[str, str]] = {}
    for cls_node in ast.parse(inspect.getsource(module)).body:
        if not isinstance(cls_node, ast.ClassDef):
            continue
        body = cls_node.body
        fields = docs.setdefault(cls_node.name, {})
        for node, nxt in zip(body, body[1:], strict=False):
            if (
                isinstance(node, ast.AnnAssign)
                and isinstance(node.target, ast.Name)
                and isinstance(nxt, ast.Expr)
                and isinstance(nxt.value, ast.Constant)
                and isinstance(nxt.value.value, str)
            ):
                fields[node.target.id] = nxt.value.value.strip()
    return docs


def describe_keys(cls=TrainConfig, prefix: str = "") -> list[str]:
    """Two lines per config key: `key = default  [domain]` and its docstring (for --help)."""
    lines = []
    docs = field_docs(cls)
    defaults = cls()
    hints = typing.get_type_hints(cls, include_extras=True)
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            lines.extend(describe_keys(hints[f.name], prefix + f.name + "."))
        else:
            default = getattr(defaults, f.name)
            lines.append(
                f"  {prefix + f.name} = {default!r}  [{domain_text(hints[f.name])}]\n"
                f"      {docs.get(f.name, '')}"
            )
    return lines


def dump_yaml(cfg: TrainConfig) -> str:
    """The resolved config as YAML (loads back to the same config)."""
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds `--config` and `--set KEY=VALUE` (into `overrides`), shared by the trainers."""
    parser.add_argument(
        "--config",
        help="YAML file, or a name in ./configs/train/ or the packaged presets "
        "(default: built-in defaults)",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key, e.g. --set algo.learning_rate=1e-4 (repeatable)",
    )
