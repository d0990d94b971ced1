"""One model step: tokens at positions into a KV cache, hidden states, logits.

Every caller that runs the model goes through :class:`Step`: prefill blocks, decode steps of
one or more rows, speculative verify calls, the draft model's proposals, the load-time
row-exactness check and the bench. The native kernels (``engine/kernels.py``) plug in below
it, in the model's linear layers and attention, so each lands in one place.

``exact=True`` asks for a call whose every position equals, bit for bit, what a one-token
call at that position gives (the model's row-exact path and the head refined one row at a
time): that is what makes speculative verification exact. Tokens are ``[rows, T]``; every
row starts at the same position (decode rows forked from one prompt, or one row of ``T``
tokens).

With the native kernels, calls of at most :data:`FEW` positions (decode steps, verify calls,
the head) run torch's operators on one thread: they are too small to share (a LayerNorm of 8
rows split over two threads waits for the second one, milliseconds on a machine with other
work), and the native kernels share their own calls among threads only while that pays
(``codegen_lsp/native/team.c``). Prefill blocks, and every call on the torch fallback (whose
int8 GEMV needs torch's threads), keep torch's threads.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Protocol

import torch
from torch import Tensor

from codegen_lsp.codegen.modeling import KVCache
from codegen_lsp.engine import kernels
from codegen_lsp.engine.head import LogitsHead


class Forward(Protocol):
    """The transformer: ``(tokens [rows, T], positions [T], cache, rowwise) -> [rows, T, E]``."""

    def __call__(
        self, tokens: Tensor, positions: Tensor, cache: KVCache, rowwise: bool = False
    ) -> Tensor: ...


FEW = 8  # positions of a call that runs torch's operators on one thread


@contextmanager
def torch_threads_for(positions: int, device: torch.device) -> Iterator[None]:
    """One torch thread for a CPU call of at most :data:`FEW` positions when the native
    kernels run its GEMVs and attention, torch's otherwise."""
    threads = torch.get_num_threads()
    if positions > FEW or threads == 1 or device.type != "cpu" or kernels.table().lib is None:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


class Step:
    """The model's forward and its one head, called the same way by every loop."""

    def __init__(self, forward: Forward, head: LogitsHead, device: torch.device) -> None:
        self.forward = forward
        self.head = head
        self.device = device

    def hidden(
        self,
        tokens: Sequence[Sequence[int]] | Tensor,
        start: int,
        cache: KVCache,
        exact: bool = False,
    ) -> Tensor:
        """Hidden states ``[rows, T, E]`` of ``tokens`` at positions ``start .. start+T-1``,
        their keys and values written into ``cache``."""
        ids = tokens if isinstance(tokens, Tensor) else torch.tensor(tokens)
        ids = ids.to(self.device)
        positions = torch.arange(start, start + ids.shape[1], device=self.device)
        with torch_threads_for(ids.numel(), self.device):
            return self.forward(ids, positions, cache, exact and ids.shape[1] > 1)

    def logits(self, hidden: Tensor, exact: bool = False) -> Tensor:
        """Float32 logits ``[rows, V]`` on the CPU for hidden states ``[rows, E]``."""
        with torch_threads_for(hidden.shape[0], self.device):
            return self.head(hidden, rowwise=exact).cpu()

    def __call__(
        self,
        tokens: Sequence[Sequence[int]] | Tensor,
        start: int,
        cache: KVCache,
        exact: bool = False,
    ) -> tuple[Tensor, Tensor]:
        """One call: the last position's hidden states ``[rows, E]`` and the logits of every
        position of the first row when ``exact`` (``[T, V]``, a verify call), else of the
        last position of every row (``[rows, V]``, a decode step)."""
        out = self.hidden(tokens, start, cache, exact)
        if exact:
            return out[:, -1], self.logits(out[0], exact=True)
        last = out[:, -1]
        return last, self.logits(last)
