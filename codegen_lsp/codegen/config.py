"""CodeGenConfig: the shape of a CodeGen model, read from a checkpoint's ``config.json``.

Field names follow Hugging Face's ``CodeGenConfig`` (``n_embd``, ``n_layer``, ``n_head``,
``rotary_dim``, ``n_positions``, ``n_inner``, ...), and the usual aliases (``hidden_size``,
``num_hidden_layers``, ``num_attention_heads``, ``max_position_embeddings``) are accepted, so
published checkpoints are read as they are. ``n_ctx`` is not an alias: transformers writes it
(default 2048) beside ``n_positions`` and never reads it, so ``n_positions`` is the context.
Every value is type-checked here, and an error names the key as the file spells it.

One field is ours: ``qkv_shards``, the number of model-parallel shards the fused ``qkv_proj``
was trained over (its rows are ``[shard, (q, v, k), rows]``). CodeGen1 used 4; CodeGen2-1B and
-3.7B used 8. It is a property of the checkpoint (:func:`qkv_shards_of`): ``"qkv_shards"`` in
``config.json``, else the ``mp_num = N`` assignment of a modeling file shipped beside it (read
as text, never run), else 4.
"""

from __future__ import annotations

import json
import math
import re
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
}

_ACTIVATIONS = ("gelu_new", "gelu", "gelu_fast", "gelu_pytorch_tanh", "relu", "silu")
# model types that are not CodeGen but that a user may point the server at, by what they are
_OTHER_MODELS = {
    "llama": "a LLaMA model (CodeGen2.5 uses this layout)",
    "gptj": "a GPT-J model (e.g. one exported by `codegen-lsp export --format gptj`)",
    "gpt2": "a GPT-2 model",
    "gpt_bigcode": "a GPTBigCode model (StarCoder, SantaCoder)",
}
# the default shard count: CodeGen1's (and transformers' CodeGen's)
DEFAULT_QKV_SHARDS = 4
# where a modeling file sets the shard count: ``mp_num = 8`` (CodeGen2, inside forward) or
# ``self.mp_num = 4`` (transformers' own CodeGen); a comment may follow
_MP_NUM = re.compile(r"^[ \t]*(?:self\.)?mp_num[ \t]*=[ \t]*(\d+)[ \t]*(?:#.*)?$", re.MULTILINE)
_MODULE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
MODELING_FILE = "modeling_codegen.py"
MAX_MODELING_BYTES = 4 << 20  # a modeling file is read whole; a bigger one is not one


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
    bos_token_id: int | None = 50256
    eos_token_id: int | None = 50256
    tie_word_embeddings: bool = False
    # model-parallel shards of the published qkv_proj rows (4: CodeGen1; 8: CodeGen2-1B/3.7B)
    qkv_shards: int = DEFAULT_QKV_SHARDS

    def __post_init__(self) -> None:
        for f in fields(self):
            setattr(self, f.name, _checked(f.name, f.name, getattr(self, f.name)))
        for name in ("vocab_size", "n_positions", "n_embd", "n_layer", "n_head", "qkv_shards"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")
        if self.n_embd % self.n_head:
            raise ConfigError(f"n_embd={self.n_embd} is not divisible by n_head={self.n_head}")
        if self.n_embd % self.qkv_shards:
            raise ConfigError(
                f"n_embd={self.n_embd}: CodeGen's fused qkv projection is split over "
                f"qkv_shards={self.qkv_shards} model-parallel shards of n_embd / qkv_shards "
                "rows, so n_embd must be divisible by qkv_shards"
            )
        if self.rotary_dim is not None and (self.rotary_dim > self.head_dim or self.rotary_dim % 2):
            raise ConfigError(
                f"rotary_dim={self.rotary_dim} must be even and at most head_dim={self.head_dim}"
            )
        if self.n_inner is not None and self.n_inner <= 0:
            raise ConfigError(f"n_inner must be positive, got {self.n_inner}")
        if self.activation_function not in _ACTIVATIONS:
            raise ConfigError(
                f"activation_function {self.activation_function!r} is not supported "
                f"(expected one of {', '.join(_ACTIVATIONS)})"
            )
        if not (math.isfinite(self.layer_norm_epsilon) and self.layer_norm_epsilon > 0):
            raise ConfigError(
                f"layer_norm_epsilon must be a positive number, got {self.layer_norm_epsilon}"
            )

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
        """Build a config from a Hugging Face style dict; unknown keys are ignored. A field's
        own name wins over its alias, wherever each stands in the file."""
        model_type = data.get("model_type", "codegen")
        if model_type != "codegen":
            raise ConfigError(f"{source}: {_not_codegen(model_type)}")
        known = {f.name for f in fields(cls)}
        values: dict[str, Any] = {}
        for key, value in sorted(data.items(), key=lambda kv: kv[0] in _ALIASES):
            name = _ALIASES.get(key, key)
            if name in known and name not in values:
                values[name] = _checked(key, name, value, source)
        try:
            return cls(**values)
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from None

    @classmethod
    def from_file(cls, path: str | Path, qkv_shards: int | None = None) -> CodeGenConfig:
        """Read ``config.json`` (or the ``config.json`` inside a directory); ``qkv_shards``,
        when given, overrides what the checkpoint says (:func:`qkv_shards_of`)."""
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
        if "model_type" in data and data["model_type"] != "codegen":
            raise ConfigError(f"{path}: {_not_codegen(data['model_type'])}")
        data = dict(data)
        if qkv_shards is not None:
            data["qkv_shards"] = qkv_shards
        elif "qkv_shards" not in data:
            data["qkv_shards"] = qkv_shards_of(path.parent, data)
        return cls.from_dict(data, source=str(path))

    def to_dict(self) -> dict[str, Any]:
        """Hugging Face style dict, loadable by transformers' CodeGenConfig (which keeps
        ``qkv_shards`` as an attribute it does not use: its CodeGen is 4-shard only)."""
        data = asdict(self)
        data["model_type"] = "codegen"
        data["n_ctx"] = self.n_positions
        data["architectures"] = ["CodeGenForCausalLM"]
        return data


def qkv_shards_of(directory: Path, config: dict[str, Any] | None = None) -> int:
    """The shard count of the checkpoint in ``directory`` when its config has no
    ``qkv_shards``: the ``mp_num = N`` of its modeling file (``modeling_codegen.py`` or a
    module its ``auto_map`` names), read as text and never run; else 4."""
    modules = [MODELING_FILE]
    auto_map = (config or {}).get("auto_map")
    if isinstance(auto_map, dict):
        for target in auto_map.values():
            module = str(target).rpartition(".")[0] if isinstance(target, str) else ""
            if _MODULE_NAME.fullmatch(module) and f"{module}.py" not in modules:
                modules.append(f"{module}.py")
    for name in modules:
        file = directory / name
        if not file.is_file():
            continue
        try:
            with open(file, "rb") as handle:
                text = handle.read(MAX_MODELING_BYTES).decode("utf-8", errors="replace")
        except OSError as exc:
            raise ConfigError(f"{file}: cannot read ({exc})") from None
        values = sorted({int(v) for v in _MP_NUM.findall(text)})
        if len(values) > 1:
            raise ConfigError(
                f"{file}: sets mp_num to {' and '.join(map(str, values))}; say which layout "
                'the weights have with "qkv_shards" in config.json'
            )
        if values:
            return values[0]
    return DEFAULT_QKV_SHARDS


def _not_codegen(model_type: object) -> str:
    what = _OTHER_MODELS.get(str(model_type), f"a {model_type!r} model")
    return (
        f"model_type {model_type!r} is not supported: this checkpoint is {what}, and "
        "codegen-lsp runs CodeGen checkpoints only (model_type 'codegen': Salesforce "
        "codegen-350M/2B/6B/16B, codegen2-1B/3_7B/7B/16B, or the shipped model)"
    )


def _checked(key: str, name: str, value: Any, source: str = "") -> Any:
    """``value`` for field ``name`` (spelled ``key`` in the file) if its type is right
    (an int for a float field becomes a float); a :class:`ConfigError` naming the key if not."""
    optional = name in ("rotary_dim", "n_inner", "bos_token_id", "eos_token_id")
    if value is None and optional:
        return None
    where = f"{source}: " if source else ""
    shown = key if key == name else f"{key} ({name})"

    def wrong(expected: str) -> ConfigError:
        also = " or null" if optional else ""
        return ConfigError(
            f"{where}{shown} must be {expected}{also}, got {json.dumps(value, default=repr)} "
            f"({type(value).__name__})"
        )

    if name == "activation_function":
        if not isinstance(value, str):
            raise wrong("a string")
        return value
    if name == "tie_word_embeddings":
        if not isinstance(value, bool):
            raise wrong("true or false")
        return value
    if name == "layer_norm_epsilon":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise wrong("a number")
        return float(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise wrong("an integer")
    return value
