"""One leaderboard cell: a (policy, workload, seed) episode, its spec, its result and its file.

A cell is plain data (picklable, JSON-able) so it can travel to a worker process. Running
it never raises: an exception becomes a result with `status == "failed"` and the error
message, so a broken policy shows up on the board instead of disappearing.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import time
import traceback
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

import andes_gym.envs  # noqa: F401 (registers the env ids)
from andes_gym.agents.adapter import PolicyAgent
from andes_gym.agents.registry import load_entry_point, make_policy, policy_class
from andes_gym.config_files import read_yaml, resolve_config
from andes_gym.evaluation import run_episode
from andes_gym.metrics import SUMMARY_FIELDS

ENV_IDS = {"surrogate": "andes_gym/Surrogate-v0", "vllm": "andes_gym/VLLM-v0"}
# Columns of results.json / episodes.csv besides the summary fields.
ROW_KEYS = ("policy", "workload", "seed", "status", "oracle", "env_id")
# Wall-clock measurements: they vary from run to run, everything else is deterministic.
TIMING_FIELDS = ("decision_ms_p50", "wall_s")
RESULT_FIELDS = (*SUMMARY_FIELDS, "num_decisions", "return", *TIMING_FIELDS)
# Workload columns written beside each request's metrics in requests.csv.
REQUEST_SPEC_COLUMNS = ("arrival_s", "prompt_tokens", "output_tokens", "ttft_s", "tds_tok_s")
CELL_FORMAT_VERSION = 1


@dataclass(frozen=True)
class Cell:
    """Everything a worker needs to run one episode.

    Attributes:
        workload: Workload name (unique in the run).
        policy: Policy label in the tables (a registered name, or a checkpoint's stem).
        seed: Episode seed: draws the workload, so every policy sees the same requests.
        policy_spec: What `load_policy_spec` builds: a registered name, an `.onnx` path,
            or `module:Class`.
        workload_config: The workload config dict.
        env_kind: "surrogate" or "vllm".
        env_kwargs: Environment kwargs (with `oracle=True` for oracle policies).
        oracle: The policy reads the true remaining lengths.
        num_timelines: Sample requests whose token delivery times are kept.
        policy_digest: Content hash of a checkpoint file ("" for registered names).
        policy_kwargs: Constructor arguments of a registered policy.
        code_digest: Hash of the code and engine profiles the result depends on
            (`code_digest()`), so a cached result of other code is not reused.
    """

    workload: str
    policy: str
    seed: int
    policy_spec: str
    workload_config: dict
    env_kind: str
    env_kwargs: dict = field(default_factory=dict)
    oracle: bool = False
    num_timelines: int = 0
    policy_digest: str = ""
    policy_kwargs: dict = field(default_factory=dict)
    code_digest: str = ""

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.workload, self.policy, self.seed)

    @property
    def env_id(self) -> str:
        return ENV_IDS[self.env_kind]

    def spec_hash(self) -> str:
        """Hash of everything that determines the result; a cached cell must match it."""
        payload = asdict(self)
        payload["format"] = CELL_FORMAT_VERSION
        text = json.dumps(payload, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def file_name(self) -> str:
        """`<workload>__<policy>__<seed>.json`, with unsafe characters replaced."""
        return f"{_safe(self.workload)}__{_safe(self.policy)}__{self.seed}.json"


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.@=+-]", "_", text)


# What an episode runs through (packages and modules of andes_gym, each either a folder
# or a `.py` file): a change here may change a cell's result.
EPISODE_SOURCES = (
    "agents",
    "core",
    "engine_bridge",
    "envs",
    "qoe",
    "surrogate",
    "workloads",
    "config_files",
    "evaluation",
    "metrics",
)


def code_digest(engine_files: Sequence[Path] = ()) -> str:
    """sha256 prefix over the sources and engine configs that shape an episode's result.

    Covers the environments, engines, policies, workloads, QoE and metrics code and this
    module; training, calibration and the leaderboard's reporting code are left out
    (re-rendering tables must not re-run episodes).

    Args:
        engine_files: The engine config files the run reads (see `engine_config_files`).
    """
    package = Path(__file__).resolve().parents[1]
    files = []
    for name in EPISODE_SOURCES:
        path = package / name
        files += sorted(path.rglob("*.py")) if path.is_dir() else [path.with_suffix(".py")]
    files += [Path(__file__).resolve(), *engine_files]
    h = hashlib.sha256()
    for path in files:
        h.update(path.name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def engine_config_files(env_kind: str, env_kwargs: dict) -> list[Path]:
    """The `configs/engines` files an environment reads: its engine and latency profile.

    Engines given as mappings or objects have no file; they are part of the cell itself.
    """
    default = {"surrogate": "llama7b_a100", "vllm": "cpu_live"}[env_kind]
    names = [env_kwargs.get("engine", default)]
    files: list[Path] = []
    while names:
        name = names.pop()
        if not isinstance(name, str | Path):
            continue
        try:
            path = resolve_config("engines", name)
        except FileNotFoundError:
            continue  # the environment reports it when the cell runs
        files.append(path)
        data = read_yaml(path, "engine config", allow_empty=True) or {}
        profile = data.get("latency_profile") if isinstance(data, dict) else None
        if profile and len(files) < 4:
            names.append(profile)
    return files


def sort_key(row: dict) -> tuple:
    """Merge order of results: workload, policy, seed."""
    return (str(row["workload"]), str(row["policy"]), int(row["seed"]))


# ------------------------------------------------------------------------------ policies
def policy_label(spec: str) -> str:
    """The name a policy spec shows in tables: a checkpoint's stem, a class's name."""
    if spec.endswith(".onnx"):
        return Path(spec).stem
    if ":" in spec:
        return spec.rsplit(":", 1)[1]
    return spec


def load_policy_spec(spec: str, kwargs: dict | None = None):
    """Builds a policy from a registered name, an exported `.onnx` checkpoint or `module:Class`.

    Args:
        spec: The policy.
        kwargs: Constructor arguments (registered names and classes only).

    Raises:
        KeyError: Unknown registered name.
        ImportError, AttributeError: A `module:Class` that does not exist.
    """
    if ":" in spec and not spec.endswith(".onnx") and not Path(spec).exists():
        return load_entry_point(spec)(**(kwargs or {}))
    if spec.endswith(".onnx"):
        if kwargs:
            raise ValueError(f"an exported policy takes no kwargs, got {kwargs} for {spec}")
        return make_policy(spec)
    return make_policy(spec, **(kwargs or {}))


def policy_is_oracle(spec: str) -> bool:
    """Whether a policy needs the oracle environment; False when it cannot be loaded
    (the cell then fails and reports why)."""
    try:
        if spec.endswith(".onnx"):
            return bool(getattr(load_policy_spec(spec), "oracle", False))
        if ":" in spec:
            return bool(getattr(load_entry_point(spec), "oracle", False))
        return bool(policy_class(spec).oracle)
    except Exception:  # noqa: BLE001 (reported when the cell runs)
        return False


def file_digest(path: str) -> str:
    """sha256 prefix of a file (empty when it does not exist)."""
    p = Path(path)
    if not p.is_file():
        return ""
    return hashlib.sha256(p.read_bytes()).hexdigest()[:16]


# ------------------------------------------------------------------------------ running
def make_env(cell: Cell, **extra):
    """The cell's environment.

    Args:
        cell: The cell.
        **extra: More environment kwargs that do not change the result (the live
            engine's shared `engine_handle`).
    """
    kwargs = dict(cell.env_kwargs)
    if cell.num_timelines > 0:
        # The rgb_array render mode makes the backend record every token's delivery time.
        kwargs.setdefault("render_mode", "rgb_array")
    kwargs.update(extra)
    return gym.make(cell.env_id, disable_env_checker=True, workload=cell.workload_config, **kwargs)


def sample_request_ids(workload, seed: int, count: int) -> list[int]:
    """Requests whose token timelines are kept: drawn from the longer half of the outputs.

    Depends only on the workload and the seed, so every policy keeps the same requests.
    """
    n = len(workload)
    if count <= 0 or n == 0:
        return []
    out = np.asarray(workload.output_tokens)
    long_half = np.flatnonzero(out >= np.median(out))
    rng = np.random.default_rng([int(seed), 7])
    picked = rng.choice(long_half, size=min(count, len(long_half)), replace=False)
    return sorted(int(i) for i in picked)


def _timelines(env, ids: list[int]) -> dict[str, list[float]]:
    tracker = env.unwrapped.backend.tracker
    out = {}
    for i in ids:
        try:
            out[str(i)] = [float(t) for t in tracker.token_times(i)]
        except (RuntimeError, IndexError):
            return {}  # the backend does not record token times; skip the timelines
    return out


def _plain(value: Any) -> Any:
    """A JSON-safe number: ints stay ints, NaN and infinities become None."""
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer):
        return int(value)
    value = float(value)
    return value if math.isfinite(value) else None


def _request_columns(result, workload) -> dict[str, list]:
    reqs = result.requests
    n = len(reqs.qoe)
    cols: dict[str, list] = {"request_id": list(range(n))}
    for name in REQUEST_SPEC_COLUMNS:
        target = f"target_{name}" if name in ("ttft_s", "tds_tok_s") else name
        cols[target] = np.asarray(getattr(workload, name))[:n].tolist()
    for name in reqs.__dataclass_fields__:
        cols[name] = np.asarray(getattr(reqs, name)).tolist()
    return cols


def workload_digest(workload) -> str:
    """sha256 prefix of a workload's arrays: equal digests mean identical requests."""
    h = hashlib.sha256()
    for name in REQUEST_SPEC_COLUMNS:
        h.update(np.ascontiguousarray(getattr(workload, name)).tobytes())
    return h.hexdigest()[:16]


def run_cell_in_env(cell: Cell, env) -> dict:
    """Plays one cell's episode in `env` (already built for the cell's kwargs).

    Returns:
        The result record (see `run_cell`). Exceptions propagate.
    """
    start = time.perf_counter()
    agent = PolicyAgent(load_policy_spec(cell.policy_spec, cell.policy_kwargs))
    result = run_episode(env, agent, seed=cell.seed)
    workload = env.unwrapped.workload
    ids = sample_request_ids(workload, cell.seed, cell.num_timelines)
    summary = {k: _plain(v) for k, v in result.summary.items()}
    summary["wall_s"] = time.perf_counter() - start
    return {
        "status": "ok",
        "error": "",
        "summary": summary,
        "workload_digest": workload_digest(workload),
        "requests": _request_columns(result, workload),
        "timelines": _timelines(env, ids),
    }


def record_head(cell: Cell) -> dict:
    """The identifying fields every cell record starts with."""
    return {
        "cell": asdict(cell),
        "spec_hash": cell.spec_hash(),
        "policy": cell.policy,
        "workload": cell.workload,
        "seed": cell.seed,
        "oracle": cell.oracle,
        "env_id": cell.env_id,
    }


def failed_record(cell: Cell, exc: BaseException | str) -> dict:
    """The record of a cell that raised `exc` (or failed with message `exc`)."""
    if isinstance(exc, BaseException):
        message = f"{type(exc).__name__}: {exc}"
        tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    else:
        message, tb = str(exc), ""
    return {
        **record_head(cell),
        "status": "failed",
        "error": message,
        "traceback": tb[-4000:],
        "summary": {},
        "workload_digest": "",
        "requests": {},
        "timelines": {},
    }


def run_cell(cell: Cell, **env_extra) -> dict:
    """Runs a cell in a fresh environment; never raises.

    Args:
        cell: The cell.
        **env_extra: Passed to `make_env` (e.g. a shared live `engine_handle`).

    Returns:
        A JSON-able record: `status` ("ok" | "failed"), `error`, `summary` (the
        `SUMMARY_FIELDS` plus `decision_ms_p50`, `return`, `num_decisions`, `wall_s`),
        `requests` (per-request columns), `timelines` (sample requests' delivery times),
        `workload_digest`, and the cell itself.
    """
    env = None
    try:
        env = make_env(cell, **env_extra)
        return {**record_head(cell), **run_cell_in_env(cell, env)}
    except Exception as exc:  # noqa: BLE001 (a failed cell is reported, never dropped)
        return failed_record(cell, exc)
    finally:
        if env is not None:
            # Closing must not mask the result.
            with contextlib.suppress(Exception):
                env.close()


# --------------------------------------------------------------------------------- files
def write_record(path: Path, record: dict) -> None:
    """Writes a cell record atomically (a crash never leaves half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(record, sort_keys=True))
    tmp.replace(path)


def read_done_record(path: Path, cell: Cell) -> dict | None:
    """The cached record of `cell` when it finished OK with the same spec; else None."""
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if record.get("status") != "ok" or record.get("spec_hash") != cell.spec_hash():
        return None
    return record
