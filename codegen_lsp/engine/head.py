"""Logits with float32 precision where the choice is made.

A bf16 ``lm_head`` returns bf16 logits: about three significant digits, so close candidates
tie or swap, and greedy decoding disagrees with float32 on ~1% of tokens of code even when
everything before the head is accurate. :class:`LogitsHead` keeps the fast head (bf16 or
int8) for all ids, then recomputes the ``refine`` best of them in float32 from the
unquantized head weights and writes those back. The argmax (and the top of any sampling
distribution) is then as exact as the hidden state allows, for the cost of ``refine`` dot
products.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from codegen_lsp.codegen.modeling import CodeGenForCausalLM

DEFAULT_REFINE = 64


class LogitsHead:
    """``lm_head`` plus float32 recomputation of the top ``refine`` logits."""

    def __init__(
        self,
        lm_head: nn.Module,
        weight: Tensor | None = None,
        bias: Tensor | None = None,
        refine: int = DEFAULT_REFINE,
    ) -> None:
        self.lm_head = lm_head
        self.weight = weight  # [V, E] unquantized head weights (None: no refinement)
        self.bias = bias  # [V]
        self.refine = refine

    @classmethod
    def for_model(cls, model: CodeGenForCausalLM, refine: int = DEFAULT_REFINE) -> LogitsHead:
        """Refine when the head computes in less than float32 (call before quantizing)."""
        return cls.for_layers(model.lm_head, model.lm_head, refine)

    @classmethod
    def for_layers(
        cls, fast: nn.Module, exact: nn.Module, refine: int = DEFAULT_REFINE
    ) -> LogitsHead:
        """``fast`` for all ids, refined from the weights of ``exact`` (the unquantized head
        layer) when those are not float32 already."""
        if not isinstance(exact, nn.Linear) or exact.weight.dtype == torch.float32:
            return cls(fast)
        bias = exact.bias.detach() if exact.bias is not None else None
        return cls(fast, exact.weight.detach(), bias, refine)

    def __call__(self, hidden: Tensor, rowwise: bool = False) -> Tensor:
        """Float32 logits ``[rows, V]`` for hidden states ``[rows, E]``; ``rowwise``: the
        refinement runs one row at a time, as a one-row call would (speculative verify)."""
        logits = self.lm_head(hidden).float()  # [rows, V], bf16 precision
        if self.weight is None or self.refine <= 0:
            return logits
        if rowwise and logits.shape[0] > 1:
            rows = range(len(logits))
            return torch.cat([self._refine(logits[r : r + 1], hidden[r : r + 1]) for r in rows])
        return self._refine(logits, hidden)

    def _refine(self, logits: Tensor, hidden: Tensor) -> Tensor:
        assert self.weight is not None
        top = logits.topk(min(self.refine, logits.shape[-1]), dim=-1).indices  # [rows, k]
        rows = self.weight[top].float()  # [rows, k, E]
        exact = torch.einsum("rke,re->rk", rows, hidden.float())  # [rows, k]
        if self.bias is not None:
            exact = exact + self.bias[top].float()
        return logits.scatter_(-1, top, exact)
