"""The float64 oracles of the native kernels (codegen_lsp/engine/kernels.py): what each
kernel computes, in float64, from the same inputs; the kernel tests bound their distance."""

from __future__ import annotations

import torch
from torch import Tensor

from codegen_lsp.codegen.modeling import LayerKV
from codegen_lsp.engine.kernels import Q4_GROUP
from codegen_lsp.engine.quantize import unpack_q4


def gemv_q8_reference(x: Tensor, qweight: Tensor, scale: Tensor, bias: Tensor | None) -> Tensor:
    """The float64 oracle of `kernels.gemv_q8`."""
    y = (x.double() @ qweight.double().T) * scale.double()
    return y + bias.double() if bias is not None else y


def gemv_q4_reference(x: Tensor, packed: Tensor, sz: Tensor, bias: Tensor | None) -> Tensor:
    """The float64 oracle of `kernels.gemv_q4`."""
    q = unpack_q4(packed).double()
    n, k = q.shape
    scale, zero = sz.double().unbind(-1)
    w = ((q.view(n, -1, Q4_GROUP) - 8) * scale[..., None] + zero[..., None]).view(n, k)
    y = x.double() @ w.T
    return y + bias.double() if bias is not None else y


def attend_reference(q: Tensor, positions: Tensor, cache: LayerKV) -> Tensor:
    """The float64 oracle of `kernels.attend` (``[B, T, H, D]``, float64)."""
    k_buf, v_buf = cache.k.double(), cache.v.double()
    if cache.k_scale is not None and cache.v_scale is not None:
        k_buf = k_buf * cache.k_scale.double()[..., None]
        v_buf = v_buf * cache.v_scale.double()[..., None]
    out = []
    for i, p in enumerate(positions.tolist()):
        qi = q[:, i].double()  # [B, H, D]
        k, v = k_buf[:, :, : p + 1], v_buf[:, :, : p + 1]
        w = torch.softmax(torch.einsum("bhd,bhtd->bht", qi, k) * q.shape[-1] ** -0.5, -1)
        out.append(torch.einsum("bht,bhtd->bhd", w, v))
    return torch.stack(out, dim=1)
