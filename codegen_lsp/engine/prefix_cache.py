"""Which KV slot a new prompt runs in: longest common token prefix, LRU, a memory budget.

Every document (request key) owns at most one slot. For a new prompt the cache picks that
document's slot and counts how many leading positions it can reuse (see
:meth:`KVSlot.reusable`: whole blocks of the prompt's plan, in token space); if another slot
shares a longer prefix (a second file with the same header, a document reopened under a new
key) its keys and values are copied over, which costs a memory copy instead of a prefill.
Slots are evicted least recently used first. The bytes held by all slots plus any scratch
area (the forked rows of n candidates) never exceed the budget: :attr:`PrefixCache.nbytes`
says how much is held, and a request that cannot fit even alone raises
:class:`CacheBudgetError`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from codegen_lsp.codegen.config import CodeGenConfig
from codegen_lsp.engine.kv_cache import KVSlot, kv_bytes_per_token, plan_blocks


class CacheBudgetError(RuntimeError):
    """A request needs more KV memory than the cache budget allows."""


class PrefixCache:
    """A pool of KV slots under a byte budget, looked up by longest common token prefix."""

    def __init__(
        self,
        config: CodeGenConfig,
        dtype: torch.dtype,
        device: torch.device | str,
        budget_bytes: int,
        max_block: int = 256,
        granule: int = 256,
        n_ctx: int | None = None,
    ) -> None:
        self.config = config
        self.dtype = dtype
        self.device = torch.device(device)
        self.budget_bytes = budget_bytes
        self.max_block = max_block
        self.granule = granule
        self.n_ctx = n_ctx or config.n_positions
        self.token_bytes = kv_bytes_per_token(config, dtype)
        self._slots: list[KVSlot] = []  # least recently used first
        self._scratch_bytes = 0
        self.evictions = 0

    # --- accounting -------------------------------------------------------------------------
    @property
    def nbytes(self) -> int:
        """Bytes held by all slots and the scratch area in use."""
        return sum(s.nbytes for s in self._slots) + self._scratch_bytes

    @property
    def slots(self) -> list[KVSlot]:
        """The slots, least recently used first (read only)."""
        return list(self._slots)

    def capacity_for(self, length: int) -> int:
        """Capacity a slot gets for ``length`` positions (rounded up, at most n_ctx)."""
        rounded = -(-length // self.granule) * self.granule
        return max(1, min(rounded, self.n_ctx))

    def bytes_for(self, capacity: int, rows: int = 1) -> int:
        """Bytes of a slot of ``capacity`` positions and ``rows`` rows."""
        return capacity * self.token_bytes * rows

    def clear(self) -> None:
        """Drop every slot."""
        self._slots.clear()

    def _make_room(self, nbytes: int, keep: tuple[KVSlot, ...] = ()) -> None:
        """Evict least recently used slots (not ``keep``) until ``nbytes`` more fit."""
        for slot in list(self._slots):
            if self.nbytes + nbytes <= self.budget_bytes:
                return
            if slot not in keep:
                self._slots.remove(slot)
                self.evictions += 1
        if self.nbytes + nbytes > self.budget_bytes:
            raise CacheBudgetError(
                f"the KV cache needs {(self.nbytes + nbytes) / 2**20:.0f} MiB but its budget is "
                f"{self.budget_bytes / 2**20:.0f} MiB (raise cacheMemory, or shorten the context)"
            )

    def _touch(self, slot: KVSlot) -> None:
        self._slots.remove(slot)
        self._slots.append(slot)

    def _ensure_capacity(self, slot: KVSlot, length: int, keep: tuple[KVSlot, ...] = ()) -> None:
        capacity = self.capacity_for(length)
        if slot.capacity >= length:
            return
        self._make_room(self.bytes_for(capacity) - slot.nbytes, keep=(slot, *keep))
        slot.resize(capacity)

    # --- lookup -----------------------------------------------------------------------------
    def reusable(self, tokens: list[int]) -> int:
        """The most leading positions of ``tokens`` any slot holds as their block plan
        computes them."""
        plan = plan_blocks(len(tokens), self.max_block)
        return max((slot.reusable(tokens, plan) for slot in self._slots), default=0)

    def acquire(
        self, key: str, tokens: list[int], need: int, reuse: bool = True
    ) -> tuple[KVSlot, int]:
        """The slot for ``key`` ready to compute ``tokens`` (capacity >= ``need``), and how
        many leading positions of ``tokens`` it already holds."""
        plan = plan_blocks(len(tokens), self.max_block)
        own = next((s for s in reversed(self._slots) if s.key == key), None)
        donor, donor_reuse = None, 0
        if reuse:
            for slot in self._slots:
                n = slot.reusable(tokens, plan)
                if n > donor_reuse or (n == donor_reuse and slot is own):
                    donor, donor_reuse = slot, n
        if own is None:
            capacity = self.capacity_for(need)
            try:  # keep the donor to copy from if both fit, else give it up
                self._make_room(self.bytes_for(capacity), keep=(donor,) if donor else ())
            except CacheBudgetError:
                donor = None
                self._make_room(self.bytes_for(capacity))
            own = KVSlot(self.config, capacity, 1, self.dtype, self.device, key)
            self._slots.append(own)
        own_reuse = own.reusable(tokens, plan) if reuse else 0
        if donor is not None and donor is not own and donor_reuse > own_reuse:
            try:
                self._ensure_capacity(own, max(need, donor_reuse), keep=(donor,))
                own.copy_from(donor, donor_reuse)
                own_reuse = donor_reuse
            except CacheBudgetError:
                pass  # no room for both: recompute instead of copying
        kept = own.truncate(own_reuse)
        self._ensure_capacity(own, need)
        self._touch(own)
        return own, kept

    def rows_that_fit(self, need: int, rows: int) -> int:
        """How many forked rows of ``need`` positions fit beside a slot for ``need``
        (0 to ``rows``); depends only on the request, so both reuse and recompute agree."""
        free = self.budget_bytes - self.bytes_for(self.capacity_for(need))
        return max(0, min(rows, free // self.bytes_for(need)))

    @contextmanager
    def scratch(self, source: KVSlot, rows: int, capacity: int) -> Iterator[KVSlot]:
        """A temporary slot with ``rows`` copies of ``source`` (counted against the budget)."""
        nbytes = self.bytes_for(capacity, rows)
        if source.capacity > self.capacity_for(capacity):
            source.resize(self.capacity_for(capacity))  # shrink so the fork surely fits
        self._make_room(nbytes, keep=(source,))
        self._scratch_bytes += nbytes
        try:
            yield source.fork(rows, capacity)
        finally:
            self._scratch_bytes -= nbytes
