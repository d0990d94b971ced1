"""The load's self-check of quantized layers: each kind of layer, on its real shape, against
its own float result.

The kernel table (:mod:`.kernels`) only routes a layer to a kernel whose shape contract it
meets, which keeps known-bad shapes away from ATen's ops. This check catches what a contract
does not know: once per (layer class, kernel route, shape), one random row goes through the
layer and through ``F.linear`` with the same dequantized weights in float32; a result off by
more than rounding moves every layer of that kind to the dequantized route (the same numbers,
computed without the quantized kernel) and says so in one line. A few rows per shape: a
350M model has five shapes, checked in a few milliseconds.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from codegen_lsp.engine import quantize
from codegen_lsp.engine.quantize import Int4Linear, Int8Linear

# |error| allowed per output, as a share of sum(|x| |w|) + |b| (bf16 activations and
# outputs round at 2^-8; a wrong kernel is off by the order of the result itself)
RELATIVE_BOUND = 2.0**-5
CHECK_ROWS = 256  # outputs compared per kind of layer


def dense_rows(layer: Int8Linear | Int4Linear, rows: int) -> Tensor | None:
    """The first ``rows`` rows of the layer's dequantized weights ``[rows, K]`` (the numbers
    every route computes with); None where only the kernel's own layout holds them (ATen's
    int4 packing without a dense copy: that route is under the kernel table's contract)."""
    if isinstance(layer, Int8Linear):
        if layer.dense is not None:
            return layer.dense[:rows]
        return layer.qweight[:rows] * layer.scales[:rows, None]
    if layer.dense is not None:
        return layer.dense[:rows]
    if layer.route == "native" and layer.qweight is not None and layer.scale_zero is not None:
        return quantize.dequantize_q4(layer.qweight[:rows], layer.scale_zero[:rows])
    return None


def layer_error(layer: Int8Linear | Int4Linear, seed: int = 0) -> float:
    """The largest error of one row through ``layer``, as a share of its bound (<= 1: right),
    over its first :data:`CHECK_ROWS` outputs (the reference costs what those rows do)."""
    act = layer.bias.dtype if layer.bias is not None else torch.bfloat16
    weight = dense_rows(layer, CHECK_ROWS)
    if weight is None:
        return 0.0
    weight = weight.float()  # [R, K]
    rows = weight.shape[0]
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(1, layer.in_features, generator=generator).to(weight.device, act)
    with torch.no_grad():
        got = layer(x).float()[:, :rows]  # [1, R]
        bias = layer.bias[:rows].float() if layer.bias is not None else None
        want = F.linear(x.float(), weight, bias)
        scale = x.float().abs() @ weight.abs().T + (bias.abs() if bias is not None else 0.0)
    if not torch.isfinite(got).all():
        return float("inf")
    return float(((got - want).abs() / (RELATIVE_BOUND * scale + 1e-6)).max())


def to_dense_route(layer: Int8Linear | Int4Linear) -> None:
    """Compute ``layer`` from its dequantized weights from now on (the same numbers)."""
    if isinstance(layer, Int4Linear) and layer.dense is None:
        dense = dense_rows(layer, layer.out_features)
        if dense is None:  # nothing to compute from but the kernel's own layout
            return
        layer.register_buffer(
            "dense", dense.to(layer.bias.dtype if layer.bias is not None else torch.bfloat16)
        )
    layer.route = "dense"


def check_quantized(model: nn.Module) -> list[str]:
    """Check each kind of quantized layer of ``model``; move failing kinds to the dense
    route. One line per kind that failed (empty when all are right)."""
    kinds: dict[tuple[str, str, int, int], list[Int8Linear | Int4Linear]] = {}
    for module in model.modules():
        if isinstance(module, Int8Linear | Int4Linear):
            key = (type(module).__name__, module.route, module.in_features, module.out_features)
            kinds.setdefault(key, []).append(module)
    notes = []
    for (kind, route, k, n), layers in kinds.items():
        if route == "dense":
            continue
        error = layer_error(layers[0])
        if error > 1.0:
            for layer in layers:
                to_dense_route(layer)
            notes.append(
                f"self-check: {kind} on the {route} kernel is wrong for {k} -> {n} "
                f"(error {error:.3g}x its bound); {len(layers)} layer(s) use dequantized "
                "weights instead"
            )
    return notes
