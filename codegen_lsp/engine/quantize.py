"""Weight-only int8 (and int4) linear layers whose kernel depends only on the call's shape.

Decoding one token is bound by reading the weights, so int8 weights (a quarter of fp32, half
of bf16) make it faster; activations stay bf16, so there is no activation quantization and
no dependence of one token's result on the others in a batch. ``_weight_int8pack_mm`` is slow
for many rows, though (a 1024-token prefill takes ~6x longer than bf16), so
:class:`Int8Linear` picks its kernel from the number of rows in the call: up to
``small_rows`` rows use the int8 kernel; more rows use bf16 weights, dequantized from int8
for the call (the default: one copy of each weight, 1 byte per weight; a 256-row call pays
~10% for it) or kept resident (``keep_dense``: 3 bytes per weight, the same numbers). Because
the choice depends only on the call's shape, and the engine computes every position in a call
of a fixed shape (see :mod:`codegen_lsp.engine.kv_cache`), reused keys and values stay exact.
:class:`Int4Linear` (groups of 32, ``_weight_int4pack_mm_for_cpu``) halves the bytes again, at
some cost in accuracy; it is an option, never the default, and always keeps its bf16 copy
(its packed layout has no cheap per-call dequantization). See ``docs/memory.md``.

Which code computes the few-row calls is the kernel table's choice (:mod:`.kernels`), made
once per layer from its shape: the native kernels (each output row summed alone in a fixed
order), ATen's op where it is right for the shape, or the dequantized weights one row at a
time. All three keep a k-row call equal to k one-row calls.
"""

from __future__ import annotations

from typing import overload

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from codegen_lsp.engine import kernels

DEFAULT_SMALL_ROWS = 8
ALIGNMENT = 64  # bytes
CHUNK_ELEMENTS = 2**20  # rows quantized at a time: about this many weights (4 MiB in fp32)


@overload
def aligned(tensor: Tensor) -> Tensor: ...
@overload
def aligned(tensor: None) -> None: ...
def aligned(tensor: Tensor | None) -> Tensor | None:
    """``tensor``, or a copy of it where its data does not start on a 64-byte boundary (a
    tensor mapped from a file by offset: ATen's int8/int4 kernels read out of bounds there;
    memory from torch's allocator is aligned)."""
    if tensor is None or tensor.data_ptr() % ALIGNMENT == 0:
        return tensor
    return tensor.clone()


def quantize_weight(weight: Tensor) -> tuple[Tensor, Tensor]:
    """Symmetric per-output-channel int8: ``weight ~= q * scales[:, None]``. Computed a block
    of rows at a time (each row on its own, so the result is the same), which bounds the
    float32 temporaries to :data:`CHUNK_ELEMENTS` however large the matrix."""
    w = weight.detach()  # [N, K]
    n, k = w.shape
    q = torch.empty((n, k), dtype=torch.int8, device=w.device)
    scales = torch.empty(n, dtype=torch.float32, device=w.device)
    rows = max(1, CHUNK_ELEMENTS // max(k, 1))
    for start in range(0, n, rows):
        part = w[start : start + rows].to(torch.float32, copy=True)  # [rows, K]
        s = part.abs().amax(dim=1).clamp(min=1e-12) / 127.0  # [rows]
        q[start : start + rows] = part.div_(s[:, None]).round_().clamp_(-127, 127)
        scales[start : start + rows] = s
    return q, scales


def pack_q4(q: Tensor) -> Tensor:
    """int4 values 0..15 ``[n, k]`` as the native layout uint8 ``[n, k/2]``: in each group of
    32 inputs, byte t holds input t (low nibble) and input 16 + t (high nibble)."""
    n, k = q.shape
    groups = q.to(torch.uint8).view(n, k // kernels.Q4_GROUP, 2, 16)
    return (groups[:, :, 0] | (groups[:, :, 1] << 4)).reshape(n, k // 2).contiguous()


def unpack_q4(packed: Tensor) -> Tensor:
    """The int4 values ``[n, k]`` (uint8 0..15) of :func:`pack_q4`'s layout."""
    n, half = packed.shape
    groups = packed.view(n, half // 16, 1, 16)
    return torch.cat([groups & 15, groups >> 4], dim=2).reshape(n, 2 * half)


def dequantize_q4(packed: Tensor, sz: Tensor) -> Tensor:
    """float32 ``(q - 8) * scale + zero`` ``[n, k]`` of the native int4 layout."""
    q = unpack_q4(packed).float()
    n, k = q.shape
    scale, zero = sz.float().unbind(-1)  # [n, G] each
    groups = (q.view(n, k // kernels.Q4_GROUP, kernels.Q4_GROUP) - 8) * scale[..., None] + zero[
        ..., None
    ]
    return groups.view(n, k)


class Int8Linear(nn.Module):
    """``y = x @ dequant(q).T + b`` with an int8 kernel for few rows, bf16 for many.

    The bf16 weights for many rows are ``q * scales`` rounded to bf16 with the bf16 scales
    the int8 kernel uses: kept resident with ``keep_dense`` (2 more bytes per weight) or
    computed for each call. Either way they are the same numbers, so the choice changes
    speed and memory, never a result."""

    qweight: Tensor
    scales: Tensor
    bias: Tensor | None
    dense: Tensor | None
    scale32: Tensor | None  # the native route's float32 copies
    bias32: Tensor | None

    def __init__(
        self,
        linear: nn.Linear,
        act_dtype: torch.dtype = torch.bfloat16,
        small_rows: int = DEFAULT_SMALL_ROWS,
        keep_dense: bool = False,
    ) -> None:
        super().__init__()
        q, scales = quantize_weight(linear.weight)
        bias = linear.bias.detach().to(act_dtype) if linear.bias is not None else None
        self._attach(q.contiguous(), scales.to(act_dtype), bias, small_rows, keep_dense)

    @classmethod
    def from_buffers(
        cls,
        qweight: Tensor,
        scales: Tensor,
        bias: Tensor | None,
        small_rows: int = DEFAULT_SMALL_ROWS,
        keep_dense: bool = False,
    ) -> Int8Linear:
        """The layer whose int8 weights ``[N, K]``, scales ``[N]`` and bias are given (for
        example memory-mapped from the weight cache): the same layer the constructor built
        from them, route included (the stored form is the same on every route)."""
        layer = cls.__new__(cls)
        nn.Module.__init__(layer)
        layer._attach(qweight, scales, bias, small_rows, keep_dense)
        return layer

    def _attach(
        self,
        q: Tensor,
        scales: Tensor,
        bias: Tensor | None,
        small_rows: int,
        keep_dense: bool,
    ) -> None:
        act_dtype = scales.dtype
        n, k = q.shape
        self.in_features, self.out_features = k, n
        self.small_rows = small_rows
        self.route = kernels.route("gemv_q8", k, n, act_dtype, q.device)
        if self.route == "aten":  # ATen's kernel faults on weights mapped at odd addresses
            q, scales, bias = aligned(q), aligned(scales), aligned(bias)
        self.register_buffer("qweight", q)  # [N, K] int8
        self.register_buffer("scales", scales)  # [N]
        self.register_buffer("bias", bias)
        self.register_buffer("dense", self.dequantized() if keep_dense else None)  # [N, K]
        native = self.route == "native"
        # the native kernel's float32 copies of the same (bf16-rounded) scales and bias
        self.register_buffer("scale32", self.scales.float() if native else None, persistent=False)
        bias32 = self.bias.float() if native and self.bias is not None else None
        self.register_buffer("bias32", bias32, persistent=False)

    def dequantized(self) -> Tensor:
        """The bf16 (activation dtype) weights ``q * scales`` ``[N, K]``, in one pass."""
        return self.qweight * self.scales[:, None]

    def forward(self, x: Tensor) -> Tensor:
        shape = x.shape
        x2 = x.reshape(-1, self.in_features)  # [M, K]
        if x2.shape[0] <= self.small_rows:
            if self.route == "native" and self.scale32 is not None:
                y = kernels.gemv_q8(x2, self.qweight, self.scale32, self.bias32)  # [M, N]
            elif self.route == "aten":
                y = kernels.gemv_q8_aten(x2, self.qweight, self.scales, self.bias)
            else:
                weight = self.dense if self.dense is not None else self.dequantized()
                y = kernels.gemv_rowwise(x2, weight, self.bias)
        else:
            weight = self.dense if self.dense is not None else self.dequantized()
            y = F.linear(x2, weight, self.bias)
        return y.reshape(*shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return (
            f"in={self.in_features}, out={self.out_features}, small_rows={self.small_rows}, "
            f"dense={'kept' if self.dense is not None else 'per call'}, kernel={self.route}"
        )


class Int4Linear(nn.Module):
    """Like :class:`Int8Linear` with 4-bit groups: ``w = (q - 8) * scale + zero`` per
    ``group_size`` inputs. Half the bytes of int8 per decode step, somewhat less exact."""

    qweight: Tensor | None  # None on the dense route
    scale_zero: Tensor | None
    bias: Tensor | None
    bias32: Tensor | None
    dense: Tensor | None

    def __init__(
        self,
        linear: nn.Linear,
        act_dtype: torch.dtype = torch.bfloat16,
        small_rows: int = DEFAULT_SMALL_ROWS,
        keep_dense: bool = True,
        group_size: int = 32,
    ) -> None:
        super().__init__()
        w = linear.weight.detach().float()  # [N, K]
        n, k = w.shape
        if k % group_size:
            raise ValueError(f"in_features {k} is not a multiple of group size {group_size}")
        groups = w.view(n, k // group_size, group_size)  # [N, G, gs]
        low, high = groups.amin(-1), groups.amax(-1)  # [N, G]
        scale = ((high - low) / 15).clamp(min=1e-8)
        q = torch.round((groups - low[..., None]) / scale[..., None]).clamp(0, 15)  # [N, G, gs]
        zero = low + 8 * scale
        dense = ((q - 8) * scale[..., None] + zero[..., None]).view(n, k).to(act_dtype)
        self.in_features, self.out_features = k, n
        self.small_rows, self.group_size = small_rows, group_size
        self.route = kernels.route("gemv_q4", k, n, act_dtype, w.device)
        sz = torch.stack([scale, zero], dim=-1)  # [N, G, 2]
        packed: Tensor | None = None
        if self.route == "native":  # the native layout (see pack_q4), bf16 (scale, zero)
            packed = pack_q4(q.view(n, k))
            sz = sz.to(torch.bfloat16).contiguous()
        elif self.route == "aten":
            packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(
                q.view(n, k).to(torch.int32), 8
            )
            sz = sz.transpose(0, 1).contiguous().to(act_dtype)  # [G, N, 2]
        bias = linear.bias.detach().to(act_dtype) if linear.bias is not None else None
        keep = keep_dense or self.route == "dense"  # the dense route computes from this copy
        self._attach(packed, sz if packed is not None else None, bias, dense if keep else None)

    @classmethod
    def from_buffers(
        cls,
        route: str,
        shape: tuple[int, int],
        qweight: Tensor | None,
        scale_zero: Tensor | None,
        bias: Tensor | None,
        dense: Tensor | None,
        act_dtype: torch.dtype = torch.bfloat16,
        small_rows: int = DEFAULT_SMALL_ROWS,
        group_size: int = 32,
    ) -> Int4Linear:
        """The layer whose buffers (in ``route``'s packed layout, for ``shape`` ``(N, K)``)
        are given, e.g. memory-mapped from the weight cache. ``route`` must be the one
        :func:`.kernels.route` picks for this shape here (the layouts differ by route): a
        ValueError otherwise."""
        n, k = shape
        held = qweight if qweight is not None else dense
        device = held.device if held is not None else torch.device("cpu")
        here = kernels.route("gemv_q4", k, n, act_dtype, device)
        if here != route:
            raise ValueError(f"int4 layer stored for the {route} route, this process uses {here}")
        layer = cls.__new__(cls)
        nn.Module.__init__(layer)
        layer.in_features, layer.out_features = k, n
        layer.small_rows, layer.group_size, layer.route = small_rows, group_size, route
        layer._attach(qweight, scale_zero, bias, dense)
        return layer

    def _attach(
        self,
        packed: Tensor | None,
        scale_zero: Tensor | None,
        bias: Tensor | None,
        dense: Tensor | None,
    ) -> None:
        if self.route == "aten":  # as for int8: ATen's kernel wants allocator-aligned memory
            packed, scale_zero, bias = (aligned(t) for t in (packed, scale_zero, bias))
        self.register_buffer("qweight", packed)
        self.register_buffer("scale_zero", scale_zero)
        self.register_buffer("bias", bias)
        native_bias = bias.float() if self.route == "native" and bias is not None else None
        self.register_buffer("bias32", native_bias, persistent=False)
        self.register_buffer("dense", dense)  # [N, K]

    def forward(self, x: Tensor) -> Tensor:
        shape = x.shape
        x2 = x.reshape(-1, self.in_features)  # [M, K]
        if x2.shape[0] <= self.small_rows or self.dense is None:
            if self.route == "native" and self.qweight is not None and self.scale_zero is not None:
                y = kernels.gemv_q4(x2, self.qweight, self.scale_zero, self.bias32)  # [M, N]
            elif self.route == "aten":
                y = torch.ops.aten._weight_int4pack_mm_for_cpu(
                    x2, self.qweight, self.group_size, self.scale_zero
                )  # [M, N]
                if self.bias is not None:
                    y = y + self.bias
            else:
                assert self.dense is not None  # kept on the dense route
                y = kernels.gemv_rowwise(x2, self.dense, self.bias)
        else:
            y = F.linear(x2, self.dense, self.bias)
        return y.reshape(*shape[:-1], self.out_features)


def weight_count(model: nn.Module) -> int:
    """Number of weights, counting quantized ones (stored as buffers) too."""
    count = sum(p.numel() for p in model.parameters())
    for m in model.modules():
        if isinstance(m, Int8Linear | Int4Linear):
            count += m.in_features * m.out_features
    return count


def weight_nbytes(model: nn.Module, *extra: Tensor | None) -> int:
    """Bytes held by the model's parameters and buffers and the ``extra`` tensors (the
    logits head's unquantized copy), each storage counted once (a tied head shares the
    embedding's)."""
    tensors = [*model.parameters(), *model.buffers(), *(t for t in extra if t is not None)]
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors}
    return sum(storages.values())


def quantize_int8(
    model: nn.Module,
    small_rows: int = DEFAULT_SMALL_ROWS,
    keep_dense: bool = False,
    include_lm_head: bool = True,
) -> int:
    """Replace the model's ``nn.Linear`` layers by :class:`Int8Linear`; returns how many."""
    return quantize_linears(model, 8, small_rows, keep_dense, include_lm_head)


def act_dtype_for(dtype: torch.dtype) -> torch.dtype:
    """The activation dtype of quantized layers for a model loaded in ``dtype``: float32
    becomes bf16 (the int8 kernels want bf16 activations)."""
    return torch.bfloat16 if dtype == torch.float32 else dtype


def quantized_layer(
    linear: nn.Linear,
    bits: int,
    act_dtype: torch.dtype,
    small_rows: int = DEFAULT_SMALL_ROWS,
    keep_dense: bool = False,
    is_head: bool = False,
) -> nn.Module:
    """:class:`Int8Linear` (``bits=8``) or :class:`Int4Linear` (``bits=4``; int8 where
    ``in_features`` is not a multiple of 32) for one layer; ``keep_dense`` applies to int8
    (int4 always keeps its bf16 copy). The engine feeds the head a few rows at a time, so it
    never gets a dense copy."""
    if bits == 4 and linear.in_features % 32 == 0:
        return Int4Linear(linear, act_dtype, small_rows, keep_dense=not is_head)
    return Int8Linear(linear, act_dtype, small_rows, keep_dense and not is_head)


def quantize_linears(
    model: nn.Module,
    bits: int,
    small_rows: int = DEFAULT_SMALL_ROWS,
    keep_dense: bool = False,
    include_lm_head: bool = True,
) -> int:
    """Replace ``nn.Linear`` layers by :func:`quantized_layer`; returns how many layers were
    replaced. (The loader quantizes layer by layer while it reads the checkpoint instead.)"""
    act_dtype = act_dtype_for(next(model.parameters()).dtype)
    count = 0
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            full = f"{name}.{child_name}" if name else child_name
            if not isinstance(child, nn.Linear) or (full == "lm_head" and not include_lm_head):
                continue
            layer = quantized_layer(
                child, bits, act_dtype, small_rows, keep_dense, is_head=full == "lm_head"
            )
            setattr(module, child_name, layer)
            count += 1
    return count
