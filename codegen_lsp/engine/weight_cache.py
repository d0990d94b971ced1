"""The quantized-weight cache: a second start reads the engine's own packed weights, mapped.

Quantizing a checkpoint costs seconds at every start (a 2B model: most of its load). After a
load that quantized, the model's tensors as the engine holds them (int8 weights and scales,
int4 packed weights in the layout of the route that packed them, embeddings, LayerNorms, the
head's bf16 copy) are written to one safetensors file in the user's cache folder
(``$CODEGEN_WEIGHT_CACHE_DIR``, else ``$XDG_CACHE_HOME/codegen-lsp/weights``, else
``~/.cache/codegen-lsp/weights``), in a background thread once the engine is ready, then
renamed into place (temp file, fsync, rename: a reader never sees half a file). The next
load of the same checkpoint in the same format maps that file (``safe_open``: no copy, pages
come from the page cache) and rebuilds the layers from it (``Int8Linear.from_buffers``,
``Int4Linear.from_buffers``): the same tensors, so the same logits, bit for bit.

An entry is ``<key>.safetensors`` plus ``<key>.json`` (written last; see
:mod:`.weight_files`). The key hashes the checkpoint's fingerprint (per weight file its name,
size, mtime, a SHA-256 of its header and of 16 sampled 4 KiB blocks; config, shard index and
``modeling_*.py`` whole: a full hash would cost seconds per start, what the cache saves) and
the format (quantize kind, dtype, prefill copy, rows threshold, layout and native ABI
versions, torch's version, a hash of ``quantize.py`` and ``kernels.py``, and for int4 which
route's packed layout is stored). Before use an entry's size, header hash and sampled blocks
are checked; a bad entry is removed with one log line and rebuilt. ``codegen-lsp cache list
--verify`` checks every byte; ``CODEGEN_WEIGHT_CACHE=0`` turns the cache off; an unwritable
folder costs one warning. See ``docs/memory.md``.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import shutil
import struct
import threading
import time
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from codegen_lsp.codegen.checkpoint import _SkipInit
from codegen_lsp.codegen.config import CodeGenConfig, ConfigError
from codegen_lsp.codegen.modeling import CodeGenForCausalLM
from codegen_lsp.codegen.weights import byte_view
from codegen_lsp.engine import kernels
from codegen_lsp.engine import quantize as quantize_module
from codegen_lsp.engine.quantize import DEFAULT_SMALL_ROWS, Int4Linear, Int8Linear
from codegen_lsp.engine.weight_files import (
    LAYOUT_VERSION,
    SPARE_BYTES,
    CorruptEntry,
    cache_root,
    check,
    checkpoint_print,
    choices,
    enabled,
    list_entries,
    remove_entry,
    samples_crc,
    sha,
    sweep_temps,
)

log = logging.getLogger(__name__)

_DTYPES = {
    torch.float32: "F32",
    torch.bfloat16: "BF16",
    torch.float16: "F16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.int32: "I32",
}
_writers: list[threading.Thread] = []
_said: set[str] = set()  # warnings given once per process


@functools.cache
def _code_hash() -> str:
    sources = [Path(quantize_module.__file__), Path(kernels.__file__)]
    return sha(b"".join(p.read_bytes() for p in sources))[:16]


def format_of(quantize: str, dtype: torch.dtype, dense_prefill: bool) -> dict[str, Any]:
    """What the stored numbers depend on besides the checkpoint (see the module docstring)."""
    native = kernels.table().lib is not None
    layout = "any" if quantize == "int8" else ("native" if native else "aten")
    return {
        "layout_version": LAYOUT_VERSION,
        "quantize": quantize,
        "dtype": str(dtype).removeprefix("torch."),
        "dense_prefill": dense_prefill,
        "small_rows": DEFAULT_SMALL_ROWS,
        "packed": layout,
        "abi": kernels.ABI_VERSION,
        "torch": torch.__version__,
        "code": _code_hash(),
    }


@dataclass
class WeightCache:
    """One load's entry: where it is, what it was made from, whether the load hit it."""

    root: Path
    key: str
    source: str
    fmt: dict[str, Any]
    config: CodeGenConfig
    hit: bool = False
    stale: list[Path] = field(default_factory=list)  # older entries of this source and format

    @classmethod
    def for_load(
        cls,
        directory: Path,
        quantize: str,
        dtype: torch.dtype,
        dense_prefill: bool,
        qkv_shards: int | None = None,
    ) -> WeightCache | None:
        """The entry for loading ``directory`` this way, or None when the cache is off or the
        checkpoint cannot be fingerprinted (the load then reports what is wrong with it)."""
        if not enabled() or quantize not in ("int8", "int4"):
            return None
        try:
            config = CodeGenConfig.from_file(directory / "config.json", qkv_shards=qkv_shards)
            files = checkpoint_print(directory)
        except (OSError, CorruptEntry, ConfigError):
            return None
        fmt = format_of(quantize, dtype, dense_prefill)
        ident = {"checkpoint": files, "config": config.to_dict(), "format": fmt}
        key = sha(json.dumps(ident, sort_keys=True, default=str).encode())[:32]
        return cls(cache_root(), key, str(directory.resolve()), fmt, config)

    @property
    def data(self) -> Path:
        return self.root / f"{self.key}.safetensors"

    @property
    def meta(self) -> Path:
        return self.root / f"{self.key}.json"

    def load(self, kept: dict[str, nn.Module]) -> CodeGenForCausalLM | None:
        """The model from the entry (the head's unquantized layer put in ``kept``), or None
        on a miss; an unusable entry is removed with one log line."""
        if not self.meta.is_file():
            self._note_stale()
            return None
        try:
            info = json.loads(self.meta.read_text(encoding="utf-8"))
            check(self.data, info)
            model, head = build_model(self.data, self.config, info)
        except (CorruptEntry, OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:
            log.warning("weight cache: entry %s is unusable (%s); rebuilding it", self.key, exc)
            remove_entry(self.root, self.key)
            return None
        try:
            os.utime(self.meta)  # last use
        except OSError:
            pass
        self.hit = True
        log.info("weight cache: %s from %s", self.source, self.data)
        if head is not None:
            kept["lm_head"] = head
        return model

    def _note_stale(self) -> None:
        # the same checkpoint path and choices: an older checkpoint or an older version
        same = [e for e in list_entries(self.root) if e.source == self.source]
        self.stale = [e.meta for e in same if choices(e.info.get("format")) == choices(self.fmt)]
        if self.stale:
            log.info("weight cache: %s changed since it was cached; caching it again", self.source)

    def save(self, model: CodeGenForCausalLM, head: nn.Module | None) -> bool:
        """Write the entry (atomically); False, with one warning, when it cannot be."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            sweep_temps(self.root)
            tensors, layers, tied = collect(model, head)
            size = sum(t.numel() * t.element_size() for t in tensors.values())
            if shutil.disk_usage(self.root).free < size + SPARE_BYTES:
                log.warning(
                    "weight cache: not enough free disk in %s for %d MB", self.root, size >> 20
                )
                return False
            suffix = f".tmp-{os.getpid()}-{threading.get_ident()}"
            tmp = self.data.with_name(self.data.name + suffix)
            sums = write_safetensors(tmp, tensors)
            os.replace(tmp, self.data)
            info = {
                "layout_version": LAYOUT_VERSION,
                "key": self.key,
                "source": self.source,
                "format": self.fmt,
                "layers": layers,
                "head_tied": tied,
                "created": time.time(),
                **sums,
            }
            meta_tmp = self.meta.with_name(self.meta.name + suffix)
            with meta_tmp.open("w", encoding="utf-8") as handle:
                json.dump(info, handle, indent=1)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(meta_tmp, self.meta)
        except OSError as exc:
            _warn_unwritable(self.root, exc)
            return False
        for old in self.stale:
            if old.stem != self.key:
                remove_entry(self.root, old.stem)
        log.info("weight cache: wrote %s (%d MB) for %s", self.data.name, size >> 20, self.source)
        return True

    def save_in_background(
        self, model: CodeGenForCausalLM, head: nn.Module | None
    ) -> threading.Thread:
        """:meth:`save` in a thread (not a daemon: a short-lived command finishes the entry
        before it exits); :func:`wait_for_writes` waits for it."""
        thread = threading.Thread(
            target=self.save, args=(model, head), name="weight-cache-writer", daemon=False
        )
        _writers.append(thread)
        thread.start()
        return thread


def _warn_unwritable(root: Path, exc: OSError) -> None:
    if "unwritable" in _said:
        log.debug("weight cache: cannot write to %s (%s)", root, exc)
        return
    _said.add("unwritable")
    log.warning("weight cache: cannot write to %s (%s); loads go on without it", root, exc)


def wait_for_writes(timeout: float | None = None) -> None:
    """Wait for the entries being written in the background."""
    while _writers:
        _writers.pop().join(timeout)


def collect(
    model: CodeGenForCausalLM, head: nn.Module | None
) -> tuple[dict[str, Tensor], dict[str, dict[str, Any]], bool]:
    """The tensors an entry stores, each quantized layer's description, and whether the
    head's unquantized weights are the embedding's (a tied head: stored once)."""
    tensors = {f"model/{name}": p.detach() for name, p in model.named_parameters()}
    layers: dict[str, dict[str, Any]] = {}
    for name, module in model.named_modules():
        if isinstance(module, Int8Linear | Int4Linear):
            kind = "int8" if isinstance(module, Int8Linear) else "int4"
            layers[name] = {
                "kind": kind,
                "route": _layout_route(module),
                "shape": [module.out_features, module.in_features],
                "small_rows": module.small_rows,
                "keep_dense": isinstance(module, Int8Linear) and module.dense is not None,
                "group_size": getattr(module, "group_size", 0),
            }
            stored = (
                ("qweight", "scales", "bias")
                if kind == "int8"
                else ("qweight", "scale_zero", "bias", "dense")
            )
            for buffer in stored:
                value = getattr(module, buffer)
                if value is not None:
                    tensors[f"{name}/{buffer}"] = value
    tied = False
    if isinstance(head, nn.Linear):
        wte = model.transformer.wte.weight
        tied = head.weight.untyped_storage().data_ptr() == wte.untyped_storage().data_ptr()
        if not tied:
            tensors["head/weight"] = head.weight.detach()
        if head.bias is not None:
            tensors["head/bias"] = head.bias.detach()
    return tensors, layers, tied


def _layout_route(layer: Int8Linear | Int4Linear) -> str:
    """The route whose packed layout the layer's weights are in (the one the kernel table
    picked when it was built: a later switch to the dense route keeps that layout)."""
    act = layer.bias.dtype if layer.bias is not None else torch.bfloat16
    if isinstance(layer, Int4Linear) and layer.dense is not None:
        act = layer.dense.dtype
    kernel = "gemv_q8" if isinstance(layer, Int8Linear) else "gemv_q4"
    device = layer.qweight.device if layer.qweight is not None else torch.device("cpu")
    return kernels.route(kernel, layer.in_features, layer.out_features, act, device)


def write_safetensors(path: Path, tensors: Mapping[str, Tensor]) -> dict[str, Any]:
    """Write ``tensors`` as a safetensors file, streamed (no second copy in memory), widest
    dtypes first so every tensor is aligned; fsynced. Its size and checksums."""
    order = sorted(tensors, key=lambda n: (-tensors[n].element_size(), n))
    header: dict[str, Any] = {}
    offset = 0
    for name in order:
        t = tensors[name]
        nbytes = t.numel() * t.element_size()
        header[name] = {
            "dtype": _DTYPES[t.dtype],
            "shape": list(t.shape),
            "data_offsets": [offset, offset + nbytes],
        }
        offset += nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    crc = 0
    with path.open("wb") as handle:
        handle.write(struct.pack("<Q", len(raw)) + raw)
        for name in order:
            flat = tensors[name].detach().contiguous().reshape(-1)  # kept alive for the view
            data = byte_view(flat)  # no numpy: the package does not depend on it
            crc = zlib.crc32(data, crc)
            handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    size = 8 + len(raw) + offset
    return {
        "size": size,
        "header_sha256": sha(raw),
        "samples_crc": samples_crc(path, size, len(raw)),
        "data_crc32": crc,
    }


def build_model(
    data: Path, config: CodeGenConfig, info: Mapping[str, Any]
) -> tuple[CodeGenForCausalLM, nn.Linear | None]:
    """The model (eval mode) and the head's unquantized layer from an entry's tensors,
    mapped from ``data``; a missing or mis-shaped tensor raises :class:`CorruptEntry`."""
    from safetensors import safe_open

    with torch.device("meta"), _SkipInit():
        model = CodeGenForCausalLM(config)
        head = nn.Linear(config.n_embd, config.vocab_size, bias=True)
    with safe_open(str(data), framework="pt") as stored:
        names = set(stored.keys())

        def get(name: str) -> Tensor | None:
            return stored.get_tensor(name) if name in names else None

        for name, spec in info["layers"].items():
            model_layer = model.get_submodule(name)
            if not isinstance(model_layer, nn.Linear):
                raise CorruptEntry(f"{name} is not a linear layer of this model")
            shape = (model_layer.out_features, model_layer.in_features)
            if tuple(spec["shape"]) != shape:
                raise CorruptEntry(f"{name} stored as {spec['shape']}, the model has {shape}")
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent), child, _layer(name, spec, get, shape, config))
        for name, param in list(model.named_parameters()):
            value = get(f"model/{name}")
            if value is None or value.shape != param.shape:
                raise CorruptEntry(f"{name} missing or mis-shaped")
            module, _, leaf = name.rpartition(".")
            model.get_submodule(module).register_parameter(leaf, nn.Parameter(value))
        if info.get("head_tied"):
            head.weight = model.transformer.wte.weight
        elif "head/weight" in names:
            head.weight = nn.Parameter(stored.get_tensor("head/weight"))
        else:
            head = None  # type: ignore[assignment]
        if head is not None:
            bias = get("head/bias")
            head.bias = nn.Parameter(bias) if bias is not None else None  # type: ignore[assignment]
    return model.eval(), head


def _layer(
    name: str, spec: Mapping[str, Any], get: Any, shape: tuple[int, int], config: CodeGenConfig
) -> nn.Module:
    qweight, bias = get(f"{name}/qweight"), get(f"{name}/bias")
    if spec["kind"] == "int8":
        scales = get(f"{name}/scales")
        if qweight is None or scales is None or tuple(qweight.shape) != shape:
            raise CorruptEntry(f"{name}: int8 weights missing or mis-shaped")
        return Int8Linear.from_buffers(
            qweight, scales, bias, spec["small_rows"], spec["keep_dense"]
        )
    dense, scale_zero = get(f"{name}/dense"), get(f"{name}/scale_zero")
    act = bias.dtype if bias is not None else (dense.dtype if dense is not None else torch.bfloat16)
    if (qweight is None) != (scale_zero is None) or (qweight is None and dense is None):
        raise CorruptEntry(f"{name}: int4 weights missing")
    return Int4Linear.from_buffers(
        spec["route"],
        shape,
        qweight,
        scale_zero,
        bias,
        dense,
        act,
        spec["small_rows"],
        spec["group_size"],
    )
