"""A tiny Llama built locally, so the live engine runs with no model download.

The model directory holds only `config.json`; the engine loads it with
`load_format="dummy"` (random weights drawn by vLLM from the engine seed), so building is
instant and every run with the same seed computes the same thing. Output lengths never
depend on the weights: the live environment sets `ignore_eos=True` and `max_tokens`.

The shape follows ../shared/VLLM_NOTES.md: head size 128 / 4 = 32 is one of the CPU
attention kernel sizes.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True)
class TinyLlamaSpec:
    """The shape of the tiny Llama.

    Attributes:
        vocab_size: Token ids are below this.
        hidden_size: Model width.
        intermediate_size: MLP width.
        num_hidden_layers: Transformer layers.
        num_attention_heads: Query heads (hidden_size / heads must be a CPU head size).
        num_key_value_heads: Key/value heads (grouped-query attention).
        max_position_embeddings: Longest context the model accepts.
    """

    vocab_size: int = 512
    hidden_size: int = 128
    intermediate_size: int = 256
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    max_position_embeddings: int = 2048

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if not (isinstance(value, int) and value > 0):
                raise ValueError(f"TinyLlamaSpec.{name} must be a positive int, got {value!r}")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size {self.hidden_size} must be divisible by num_attention_heads "
                f"{self.num_attention_heads}"
            )
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(
                f"num_attention_heads {self.num_attention_heads} must be divisible by "
                f"num_key_value_heads {self.num_key_value_heads}"
            )

    def config_dict(self) -> dict:
        """The Hugging Face `config.json` contents of this model."""
        return {
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            **asdict(self),
            "head_dim": self.hidden_size // self.num_attention_heads,
            "hidden_act": "silu",
            "rms_norm_eps": 1e-6,
            "rope_theta": 10000.0,
            "tie_word_embeddings": False,
            "torch_dtype": "float32",
            "bos_token_id": 1,
            "eos_token_id": 2,
        }


def default_model_dir(spec: TinyLlamaSpec) -> Path:
    """A per-shape directory under the system temp dir (shared by runs, never in the repo)."""
    key = "_".join(str(v) for v in asdict(spec).values())
    return Path(tempfile.gettempdir()) / "andes_gym_models" / f"tiny_llama_{key}"


def build_tiny_model(
    model_dir: str | Path | None = None, spec: TinyLlamaSpec | None = None
) -> Path:
    """Writes the tiny Llama's `config.json` into `model_dir` (idempotent).

    Safe to call from several processes at once: the file is written to a temporary name
    and renamed into place, and an identical existing file is left alone.

    Args:
        model_dir: Target directory; None uses `default_model_dir(spec)`.
        spec: Model shape; None uses the defaults of `TinyLlamaSpec`.

    Returns:
        The model directory, to pass as the engine's `model` with `load_format="dummy"`.

    Raises:
        FileExistsError: When `model_dir` already holds a different `config.json`.
    """
    spec = spec or TinyLlamaSpec()
    path = Path(model_dir) if model_dir is not None else default_model_dir(spec)
    text = json.dumps(spec.config_dict(), indent=2, sort_keys=True) + "\n"
    config_path = path / "config.json"
    if config_path.is_file():
        if config_path.read_text() == text:
            return path
        raise FileExistsError(
            f"{config_path} exists with a different model config; pass another model_dir "
            "or delete it"
        )
    path.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path, prefix=".config.", suffix=".json")
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(tmp, config_path)
    return path
