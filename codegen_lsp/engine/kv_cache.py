"""Preallocated KV slots that remember which token ids, and which forward calls, made them.

A :class:`KVSlot` holds per-layer key/value buffers ``[rows, H, capacity, D]`` (the model's
static :class:`~codegen_lsp.codegen.modeling.KVCache`) beside the token ids whose keys and
values they hold. Rolling back is moving the length; extending is prefilling only the new
tokens; :meth:`KVSlot.fork` copies row 0 into ``n`` rows so ``n`` candidates decode together
after one shared prefill.

Exact reuse. Floating-point kernels on CPU give results that depend on the shape of the call
(a row of a 700-token matmul is not bitwise the row of a 699 + 1 split), so reused keys and
values equal recomputed ones only when every position was computed by a forward call of the
same shape. :func:`plan_blocks` fixes that shape as a function of the prompt length alone:
whole ``max_block``-aligned blocks, then the binary decomposition of the rest (aligned
power-of-two blocks, largest first). A slot records the blocks that computed it, and a new
prompt reuses exactly the leading blocks it shares with the plan of its own length. Appending
one token recomputes ``lowbit(length)`` tokens (1 for half of all lengths, 2 for a quarter,
...), a cold prompt of L tokens takes ``L // max_block + log2(max_block)`` calls, and greedy
output with reuse is identical, token for token, to output computed from scratch.
"""

from __future__ import annotations

import torch
from torch import Tensor

from codegen_lsp.codegen.config import CodeGenConfig
from codegen_lsp.codegen.modeling import KVCache

Block = tuple[int, int]  # [start, end) of one forward call, absolute positions


def plan_blocks(length: int, max_block: int) -> list[Block]:
    """The forward calls that compute positions ``[0, length)``: aligned, largest first."""
    blocks: list[Block] = []
    start = 0
    full = length - length % max_block
    while start < full:
        blocks.append((start, start + max_block))
        start += max_block
    size = max_block // 2
    while start < length and size >= 1:
        if start + size <= length:
            blocks.append((start, start + size))
            start += size
        size //= 2
    return blocks


def common_prefix(a: list[int], b: list[int]) -> int:
    """Length of the longest common prefix of two id lists."""
    n = min(len(a), len(b))
    i = 0
    # compare in strides first: most prompts share almost everything
    step = 64
    while i + step <= n and a[i : i + step] == b[i : i + step]:
        i += step
    while i < n and a[i] == b[i]:
        i += 1
    return i


def default_kv_dtype(device: torch.device, act_dtype: torch.dtype, native_kv: bool) -> torch.dtype:
    """The cache dtype ``kvCache: auto`` picks. Keys and values are computed in the
    activations' dtype, so a cache in that dtype holds them exactly (a wider one only costs
    bandwidth): on CUDA, and on a CPU when the native attention kernel reads it
    (``native_kv``; the bench's KV table measures it). Otherwise float32 on a CPU, where
    ATen's attention over a bf16 cache is ~10x slower."""
    if device.type != "cpu" or native_kv:
        return act_dtype
    return torch.float32


def kv_bytes_per_token(config: CodeGenConfig, dtype: torch.dtype, rows: int = 1) -> int:
    """Bytes of keys and values one position takes across all layers (an int8 cache's
    float32 scales included)."""
    itemsize = torch.empty((), dtype=dtype).element_size()
    scales = 4 * config.n_head if dtype == torch.int8 else 0
    return 2 * config.n_layer * (config.n_embd * itemsize + scales) * rows


class KVSlot:
    """KV buffers for ``rows`` sequences plus the ids (of row 0) and blocks that filled them."""

    def __init__(
        self,
        config: CodeGenConfig,
        capacity: int,
        rows: int = 1,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
        key: str | None = None,
    ) -> None:
        self.config = config
        self.dtype = dtype
        self.device = torch.device(device)
        self.key = key
        self.cache = KVCache(config, rows, capacity, dtype=dtype, device=device)
        self.tokens: list[int] = []  # ids whose K/V are valid, positions 0..len-1
        self.blocks: list[Block] = []  # the forward calls that computed them, in order
        self.hidden: list[Tensor] = []  # last hidden state [rows, E] of each block

    @property
    def capacity(self) -> int:
        """Positions the buffers can hold."""
        return self.cache.max_len

    @property
    def rows(self) -> int:
        """Number of sequences (1, or n after a fork)."""
        return self.cache.batch

    @property
    def length(self) -> int:
        """Number of valid positions."""
        return len(self.tokens)

    @property
    def nbytes(self) -> int:
        """Memory held by the buffers."""
        return self.cache.nbytes

    def truncate(self, length: int) -> int:
        """Roll back to at most ``length`` positions, on a block boundary; returns the length."""
        while self.blocks and self.blocks[-1][1] > length:
            self.blocks.pop()
            self.hidden.pop()
        keep = self.blocks[-1][1] if self.blocks else 0
        del self.tokens[keep:]
        return keep

    def reusable(self, tokens: list[int], plan: list[Block]) -> int:
        """Positions of ``tokens`` whose K/V this slot holds exactly as ``plan`` computes them."""
        match = common_prefix(self.tokens, tokens)
        n = 0
        for mine, planned in zip(self.blocks, plan, strict=False):
            if mine != planned or planned[1] > match:
                break
            n = planned[1]
        return n

    def record(self, block: Block, tokens: list[int], hidden: Tensor) -> None:
        """Note that one forward call wrote ``tokens`` at positions ``block``; ``hidden`` is
        its last hidden state ``[rows, E]`` (what the next token is sampled from)."""
        start, end = block
        if start != self.length or end - start != len(tokens):
            raise ValueError(f"block {block} does not extend a slot of length {self.length}")
        self.tokens.extend(tokens)
        self.blocks.append(block)
        self.hidden.append(hidden)

    def last_hidden(self) -> Tensor | None:
        """Hidden state ``[rows, E]`` of the last valid position, if any."""
        return self.hidden[-1] if self.hidden else None

    def decode_start(self) -> Tensor:
        """Hidden state ``[rows, E]`` of the last valid position, which decoding starts from."""
        if not self.hidden:
            raise RuntimeError("decoding needs the prompt's hidden state; the slot holds none")
        return self.hidden[-1]

    def resize(self, capacity: int) -> None:
        """Reallocate to ``capacity`` positions, keeping the valid ones."""
        if capacity == self.capacity:
            return
        if capacity < self.length:
            raise ValueError(f"cannot shrink a slot of length {self.length} to {capacity}")
        old = self.cache
        self.cache = KVCache(self.config, old.batch, capacity, dtype=self.dtype, device=self.device)
        n = self.length
        for dst, src in zip(self.cache.buffers, old.buffers, strict=True):
            dst[:, :, :n].copy_(src[:, :, :n])

    def copy_from(self, src: KVSlot, length: int) -> None:
        """Take ``src``'s first ``length`` positions (whole blocks) into every row of this slot."""
        blocks = [b for b in src.blocks if b[1] <= length]
        n = blocks[-1][1] if blocks else 0
        if n > self.capacity:
            raise ValueError(f"slot of capacity {self.capacity} cannot hold {n} positions")
        self.cache.copy_rows_(src.cache, n)
        self.tokens = src.tokens[:n]
        self.blocks = list(blocks)
        self.hidden = [h[:1].expand(self.rows, -1) for h in src.hidden[: len(blocks)]]

    def fork(self, rows: int, capacity: int) -> KVSlot:
        """A new slot with ``rows`` copies of this slot's row 0 (for n candidates)."""
        out = KVSlot(self.config, capacity, rows, self.dtype, self.device, self.key)
        out.copy_from(self, self.length)
        return out
