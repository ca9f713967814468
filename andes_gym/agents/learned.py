"""Learned policies: exported scoring networks (ONNX) for the environments and the vLLM hook.

`load_policy(path)` uses onnxruntime only: no torch import, no vLLM, nothing unpickled. It
checks the file's metadata (written by `andes_gym.training.export_onnx`) against the
feature spec this andes_gym computes, and returns a `LearnedPolicy`: a `ScoringPolicy` whose `score()` runs
`observe` -> ONNX -> `scores_from_slots`, so the shared `select` rule turns its scores into
decisions exactly as for every other scoring policy.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from andes_gym.agents.base import ScoringPolicy
from andes_gym.core.candidates import Candidates, Capacity
from andes_gym.core.features import FeatureSpec, observe, scores_from_slots
from andes_gym.extras import require

# The format string of the files `andes_gym.training.export_onnx` writes and this reads.
FORMAT = "andes_gym.scoring_policy/1"


class PolicyLoadError(ValueError):
    """An exported policy that cannot be used; the message names the file and the problem."""


class LearnedPolicy(ScoringPolicy):
    """An exported scoring network as a policy.

    Args:
        session: The onnxruntime session.
        spec: The feature spec the network was trained with (checked compatible).
        metadata: The file's `andes_gym.*` metadata.
        path: Where it was loaded from.
    """

    name = "learned"

    def __init__(self, session, spec: FeatureSpec, metadata: dict[str, str], path: Path) -> None:
        self.session = session
        self.spec = spec
        self.metadata = dict(metadata)
        self.path = Path(path)
        self.oracle = spec.oracle
        self.input_name = session.get_inputs()[0].name
        self.output_name = session.get_outputs()[0].name

    def slot_scores(self, obs: np.ndarray) -> np.ndarray:
        """The network's K slot scores for one flat observation (or a batch `(B, obs_dim)`)."""
        batch = np.asarray(obs, dtype=np.float32)
        single = batch.ndim == 1
        if single:
            batch = batch[None]
        out = self.session.run([self.output_name], {self.input_name: batch})[0]
        return out[0] if single else out

    def score(self, candidates: Candidates, capacity: Capacity) -> np.ndarray:
        obs, slot_idx = observe(candidates, capacity, self.spec)
        slot = self.slot_scores(obs).astype(np.float64)
        return scores_from_slots(slot, slot_idx, len(candidates), candidates.arrival_s)


def read_metadata(path: str | Path) -> dict[str, str]:
    """The `andes_gym.*` metadata of an exported policy (onnxruntime only).

    Raises:
        PolicyLoadError: Naming the file when it is missing, not ONNX, or not an andes_gym policy.
    """
    return _open(Path(path))[1]


def _open(path: Path, threads: int = 1):
    if not path.is_file():
        raise PolicyLoadError(f"{path}: no such file")
    ort = require("onnxruntime", f"loading the exported policy {path}")

    options = ort.SessionOptions()
    # One thread: the network is tiny and runs inside schedulers that own the other cores.
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(
            str(path), sess_options=options, providers=["CPUExecutionProvider"]
        )
    except Exception as exc:  # noqa: BLE001 (onnxruntime raises several unrelated types)
        raise PolicyLoadError(
            f"{path}: not a valid ONNX model ({type(exc).__name__}: {exc})"
        ) from exc
    metadata = dict(session.get_modelmeta().custom_metadata_map)
    fmt = metadata.get("andes_gym.format")
    if fmt is None:
        raise PolicyLoadError(
            f"{path}: not an andes_gym policy (no 'andes_gym.format' metadata; export with "
            "python -m andes_gym.export)"
        )
    if fmt != FORMAT:
        raise PolicyLoadError(f"{path}: policy format {fmt!r}, this andes_gym reads {FORMAT!r}")
    return session, metadata


def load_policy(
    path: str | Path, feature_spec: FeatureSpec | None = None, threads: int = 1
) -> LearnedPolicy:
    """Loads an exported policy and checks it against the current feature spec.

    Args:
        path: The `.onnx` file written by `python -m andes_gym.export`.
        feature_spec: The spec of the caller's observations (its K and oracle setting);
            default: this andes_gym's feature set with the file's K and oracle setting.
        threads: onnxruntime intra-op threads.

    Returns:
        The policy.

    Raises:
        PolicyLoadError: Naming the file and the problem: missing, corrupt, not an andes_gym
            policy, malformed metadata, a feature-spec mismatch (naming the field), or
            input/output shapes that disagree with the spec.
    """
    path = Path(path)
    session, metadata = _open(path, threads)
    try:
        saved = FeatureSpec.from_dict(json.loads(metadata["andes_gym.feature_spec"]))
    except KeyError as exc:
        raise PolicyLoadError(f"{path}: metadata lacks {exc}") from exc
    except (json.JSONDecodeError, ValueError, TypeError) as exc:
        raise PolicyLoadError(f"{path}: malformed feature spec metadata ({exc})") from exc
    current = feature_spec or FeatureSpec(k_slots=saved.k_slots, oracle=saved.oracle)
    try:
        current.check_compatible(saved)
    except ValueError as exc:
        raise PolicyLoadError(f"{path}: {exc}") from exc
    _check_shapes(session, saved, path)
    return LearnedPolicy(session, saved, metadata, path)


def _check_shapes(session, spec: FeatureSpec, path: Path) -> None:
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != 1 or len(outputs) != 1:
        raise PolicyLoadError(
            f"{path}: expected one input and one output, got {len(inputs)} and {len(outputs)}"
        )
    in_shape, out_shape = inputs[0].shape, outputs[0].shape
    if len(in_shape) != 2 or in_shape[1] != spec.obs_dim:
        raise PolicyLoadError(
            f"{path}: input shape {in_shape}, the feature spec needs (batch, {spec.obs_dim})"
        )
    if len(out_shape) != 2 or out_shape[1] != spec.k_slots:
        raise PolicyLoadError(
            f"{path}: output shape {out_shape}, the feature spec needs (batch, {spec.k_slots})"
        )
