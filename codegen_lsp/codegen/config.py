"""CodeGenConfig: the shape of a CodeGen model, read from a checkpoint's ``config.json``.

Field names follow Hugging Face's ``CodeGenConfig`` (``n_embd``, ``n_layer``, ``n_head``,
``rotary_dim``, ``n_positions``/``n_ctx``, ``n_inner``, ...), and the usual aliases
(``hidden_size``, ``num_hidden_layers``, ``num_attention_heads``, ``max_position_embeddings``)
are accepted, so published checkpoints are read as they are.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    """A config.json that is missing, unreadable, or not a CodeGen config."""


_ALIASES = {
    "hidden_size": "n_embd",
    "num_hidden_layers": "n_layer",
    "num_attention_heads": "n_head",
    "max_position_embeddings": "n_positions",
    "n_ctx": "n_positions",
}

_ACTIVATIONS = ("gelu_new", "gelu", "gelu_fast", "gelu_pytorch_tanh", "relu", "silu")


@dataclass
class CodeGenConfig:
    """Hyperparameters of a CodeGen model (Hugging Face field names)."""

    vocab_size: int = 50400
    n_positions: int = 2048
    n_embd: int = 4096
    n_layer: int = 28
    n_head: int = 16
    rotary_dim: int | None = 64
    n_inner: int | None = None
    activation_function: str = "gelu_new"
    layer_norm_epsilon: float = 1e-5
    bos_token_id: int = 50256
    eos_token_id: int = 50256
    tie_word_embeddings: bool = False

    def __post_init__(self) -> None:
        if self.n_embd % self.n_head:
            raise ConfigError(f"n_embd={self.n_embd} is not divisible by n_head={self.n_head}")
        if self.n_embd % 4:
            raise ConfigError(
                f"n_embd={self.n_embd}: CodeGen's fused qkv projection is split over 4 "
                "model-parallel shards of n_embd / 4 rows, so n_embd must be divisible by 4"
            )
        if self.rotary_dim is not None and (self.rotary_dim > self.head_dim or self.rotary_dim % 2):
            raise ConfigError(
                f"rotary_dim={self.rotary_dim} must be even and at most head_dim={self.head_dim}"
            )
        if self.activation_function not in _ACTIVATIONS:
            raise ConfigError(
                f"activation_function {self.activation_function!r} is not supported "
                f"(expected one of {', '.join(_ACTIVATIONS)})"
            )
        for name in ("vocab_size", "n_positions", "n_embd", "n_layer", "n_head"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")

    @property
    def head_dim(self) -> int:
        """Size of one attention head."""
        return self.n_embd // self.n_head

    @property
    def inner_dim(self) -> int:
        """Hidden size of the MLP (``n_inner`` or 4 * n_embd)."""
        return self.n_inner if self.n_inner is not None else 4 * self.n_embd

    @property
    def rotary_dims(self) -> int:
        """Number of leading dims of each head that get rotary embedding."""
        return self.rotary_dim if self.rotary_dim is not None else self.head_dim

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> CodeGenConfig:
        """Build a config from a Hugging Face style dict; unknown keys are ignored."""
        model_type = data.get("model_type", "codegen")
        if model_type != "codegen":
            raise ConfigError(
                f"{source}: model_type {model_type!r} is not supported (expected 'codegen')"
            )
        known = {f.name for f in fields(cls)}
        values: dict[str, Any] = {}
        for key, value in data.items():
            key = _ALIASES.get(key, key)
            if key in known and key not in values:
                values[key] = value
        try:
            return cls(**values)
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from None
        except TypeError as exc:
            raise ConfigError(f"{source}: invalid field: {exc}") from None

    @classmethod
    def from_file(cls, path: str | Path) -> CodeGenConfig:
        """Read ``config.json`` (or the ``config.json`` inside a directory)."""
        path = Path(path)
        if path.is_dir():
            path = path / "config.json"
        if not path.is_file():
            raise ConfigError(f"{path}: config.json not found")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ConfigError(f"{path}: cannot read config: {exc}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a JSON object")
        return cls.from_dict(data, source=str(path))

    def to_dict(self) -> dict[str, Any]:
        """Hugging Face style dict, loadable by transformers' CodeGenConfig."""
        data = asdict(self)
        data["model_type"] = "codegen"
        data["n_ctx"] = self.n_positions
        data["architectures"] = ["CodeGenForCausalLM"]
        return data
