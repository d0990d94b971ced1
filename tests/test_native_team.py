"""The native kernels' threads (``codegen_lsp/native/team.c``).

A call big enough to be cut into parts (blocks of weight rows; attention heads) is shared by
the caller and helper threads taking parts from one counter, or run by the caller alone when
that is cheaper. Whichever thread computes a part, and however many threads there are, the
bits are the same: checked on every instruction set this CPU runs, for int8 and int4 GEMVs
and attention over float32, bf16 and int8 caches, with two callers at once, in a forked
child (which has no helpers until it starts its own) and beside a busy neighbour process.
"""

from __future__ import annotations

import multiprocessing
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
import torch

from codegen_lsp.codegen.modeling import LayerKV
from codegen_lsp.engine import kernels, quantize

pytestmark = pytest.mark.skipif(
    kernels.table().lib is None, reason=f"native kernels not built: {kernels.table().reason}"
)

K, N = 1024, 1031  # 1 MB of int8 weights: ~32 parts of 32 KB, and a tail


@contextmanager
def threads(count: int) -> Iterator[None]:
    before = kernels.threads()
    kernels.set_threads(count)
    try:
        yield
    finally:
        kernels.set_threads(before)


def isas() -> list[int]:
    return [kernels.ISAS.index(name) for name in kernels.cpu_isas()]


def gemv(kernel: str, isa: int, x: torch.Tensor, w: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    y = torch.empty(x.shape[0], N, dtype=x.dtype)
    rc = kernels.native_isa_call(
        kernel, isa, x.data_ptr(), x.shape[0], K, w.data_ptr(), s.data_ptr(), None, N,
        y.data_ptr(), kernels.NATIVE_DTYPES[x.dtype],
    )  # fmt: skip
    assert rc == 0
    return y


def attend(isa: int, q: torch.Tensor, lengths: torch.Tensor, kv: LayerKV) -> torch.Tensor:
    b, t, h, d = q.shape
    y = torch.empty_like(q)
    scales = [None if s is None else s.data_ptr() for s in (kv.k_scale, kv.v_scale)]
    rc = kernels.native_isa_call(
        "attend", isa, q.data_ptr(), b, t, h, d, kv.k.data_ptr(), kv.v.data_ptr(), *scales,
        kv.k.shape[2], lengths.data_ptr(), d**-0.5, y.data_ptr(),
        kernels.NATIVE_DTYPES[q.dtype], kernels.NATIVE_DTYPES[kv.k.dtype],
    )  # fmt: skip
    assert rc == 0
    return y


def make_kv(dtype: torch.dtype, gen: torch.Generator) -> LayerKV:
    if dtype != torch.int8:
        k, v = (torch.randn(2, 6, 700, 80, generator=gen).to(dtype) for _ in "kv")
        return LayerKV(k, v)
    k, v = (
        torch.randint(-127, 128, (2, 6, 700, 80), generator=gen, dtype=torch.int8) for _ in "kv"
    )
    ks, vs = (torch.rand(2, 6, 700, generator=gen) * 0.03 + 1e-3 for _ in "kv")
    return LayerKV(k, v, ks, vs)


def calls() -> list[tuple[str, Callable[[], torch.Tensor]]]:
    """Named calls, each big enough to be shared, on every instruction set."""
    gen = torch.Generator().manual_seed(21)
    w8 = torch.randint(-127, 128, (N, K), dtype=torch.int8, generator=gen)
    s8 = torch.rand(N, generator=gen) / 64
    w4 = quantize.pack_q4(torch.randint(0, 16, (N, K), generator=gen))
    sz = torch.randn(N, K // 32, 2, generator=gen).div(8).to(torch.bfloat16)
    xs = [torch.randn(1, K, generator=gen), torch.randn(8, K, generator=gen).to(torch.bfloat16)]
    caches = [make_kv(dtype, gen) for dtype in (torch.float32, torch.bfloat16, torch.int8)]
    queries = [  # 2 batch rows x 6 heads x 80 dims over 700 positions
        (torch.randn(2, nq, 6, 80, generator=gen), torch.tensor([700 - 3 * i for i in range(nq)]))
        for nq in (1, 5)
    ]
    out: list[tuple[str, Callable[[], torch.Tensor]]] = []
    for isa in isas():
        for x in xs:
            shape = tuple(x.shape)
            out.append((f"q8 isa {isa} {shape}", lambda i=isa, x=x: gemv("gemv_q8", i, x, w8, s8)))
            out.append((f"q4 isa {isa} {shape}", lambda i=isa, x=x: gemv("gemv_q4", i, x, w4, sz)))
        for kv in caches:
            for q, lengths in queries:
                name = f"attend isa {isa} {kv.k.dtype} {q.shape[1]} queries"
                out.append((name, lambda i=isa, q=q, n=lengths, c=kv: attend(i, q, n, c)))
    return out


def test_any_number_of_threads_gives_the_same_bits() -> None:
    named = calls()
    with threads(1):
        alone = [run() for _, run in named]
    for count in (2, 3, 8):
        with threads(count):
            for _ in range(3):  # parts land on different threads each time
                for (name, run), expected in zip(named, alone, strict=True):
                    assert torch.equal(run(), expected), f"{name} on {count} threads"


def test_big_calls_are_shared_and_counted() -> None:
    before = kernels.team_stats()
    with threads(2):  # a new count measures both ways again: the first call is shared
        for _, run in calls()[:2]:
            run()
    after = kernels.team_stats()
    assert after["sharedCalls"] > before["sharedCalls"]
    total = after["sharedCalls"] + after["aloneCalls"]
    assert total - (before["sharedCalls"] + before["aloneCalls"]) == 2  # each counted once


def test_small_calls_stay_on_the_caller() -> None:
    gen = torch.Generator().manual_seed(3)
    x, w = torch.randn(1, 64), torch.randint(-127, 128, (48, 64), dtype=torch.int8, generator=gen)
    before = kernels.team_stats()
    with threads(2):
        kernels.gemv_q8(x, w, torch.ones(48), None)
    after = kernels.team_stats()
    assert after["sharedCalls"] == before["sharedCalls"]
    assert after["aloneCalls"] == before["aloneCalls"]  # not even timed: one part


def test_two_callers_at_once_get_their_own_bits() -> None:
    named = calls()[:4]
    with threads(1):
        alone = [run() for _, run in named]
    failures: list[str] = []

    def caller() -> None:
        for _ in range(10):
            for (name, run), expected in zip(named, alone, strict=True):
                if not torch.equal(run(), expected):
                    failures.append(name)

    with threads(2):
        workers = [threading.Thread(target=caller) for _ in range(2)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(120)
    assert not failures, failures


_FORKED: list[Callable[[], torch.Tensor]] = []  # built before the fork (see below)


def _child(queue: multiprocessing.Queue) -> None:  # a forked child: no helpers of its own yet
    kernels.set_threads(2)
    queue.put([run().tolist() for run in _FORKED])


@pytest.mark.skipif(sys.platform != "linux", reason="fork")
def test_a_forked_child_starts_its_own_helpers() -> None:
    # the child only runs kernels built here: torch's OpenMP pool is not fork-safe
    _FORKED[:] = [run for _, run in calls()[:2]]
    with threads(2):
        expected = [run().tolist() for run in _FORKED]  # the parent's helpers exist
        ctx = multiprocessing.get_context("fork")
        queue = ctx.Queue()
        child = ctx.Process(target=_child, args=(queue,))
        child.start()
        got = queue.get(timeout=120)
        child.join(60)
    assert child.exitcode == 0
    assert got == expected


def test_a_busy_neighbour_changes_no_bits() -> None:
    named = calls()
    with threads(1):
        alone = [run() for _, run in named]
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        with threads(2):
            for _ in range(3):
                for (name, run), expected in zip(named, alone, strict=True):
                    assert torch.equal(run(), expected), f"{name} beside a busy neighbour"
    finally:
        spinner.kill()
        spinner.wait()
