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

from codegen_lsp.engine import kernels
from codegen_lsp.engine.quantize import Int4Linear, Int8Linear

# |error| allowed per output, as a share of sum(|x| |w|) + |b| (bf16 activations and
# outputs round at 2^-8; a wrong kernel is off by the order of the result itself)
RELATIVE_BOUND = 2.0**-5


def dense_weight(layer: Int8Linear | Int4Linear) -> Tensor:
    """The layer's dequantized weights ``[N, K]`` (the numbers every route computes with)."""
    if isinstance(layer, Int8Linear):
        return layer.dense if layer.dense is not None else layer.dequantized()
    if layer.dense is not None:
        return layer.dense
    assert layer.qweight is not None and layer.scale_zero is not None
    return kernels.dequantize_q4(layer.qweight, layer.scale_zero)


def layer_error(layer: Int8Linear | Int4Linear, seed: int = 0) -> float:
    """The largest error of one row through ``layer``, as a share of its bound (<= 1: right)."""
    weight = dense_weight(layer).float()  # [N, K]
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(1, layer.in_features, generator=generator).to(weight.device)
    act = layer.bias.dtype if layer.bias is not None else dense_weight(layer).dtype
    x = x.to(act)
    with torch.no_grad():
        got = layer(x).float()  # [1, N]
        bias = layer.bias.float() if layer.bias is not None else None
        want = F.linear(x.float(), weight, bias)
        scale = x.float().abs() @ weight.abs().T + (bias.abs() if bias is not None else 0.0)
    if not torch.isfinite(got).all():
        return float("inf")
    return float(((got - want).abs() / (RELATIVE_BOUND * scale + 1e-6)).max())


def to_dense_route(layer: Int8Linear | Int4Linear) -> None:
    """Compute ``layer`` from its dequantized weights from now on (the same numbers)."""
    if isinstance(layer, Int4Linear) and layer.dense is None:
        layer.register_buffer("dense", dense_weight(layer))
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
