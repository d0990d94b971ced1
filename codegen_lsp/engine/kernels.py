"""The kernel table: which implementation computes each decode kernel, and on which shapes.

One place between the engine and the code that does the arithmetic (see ``codegen_lsp/native``
for the C side). For each kernel (``gemv_q8``, ``gemv_q4``, ``attend``) the table says whether
it runs natively or in torch, the instruction set in use, why native is not used, and each
implementation's shape contract as data (:class:`Contract`). Layers ask :func:`route` once, at
load, which implementation serves their shape; shapes no native kernel handles, and shapes on
which ATen's private int8/int4 ops are wrong, take the torch reference path instead (logged
once per reason). Every route computes each output row alone, so a k-row call equals k one-row
calls on every route.

Environment: ``CODEGEN_NATIVE=0`` forces torch; ``CODEGEN_NATIVE_LIB`` names the library file
(a missing file means torch); ``CODEGEN_CPU_ISA=generic|avx2|avx512`` forces an instruction set
(read when the library loads; an error if this CPU lacks it); ``CODEGEN_NATIVE_THREADS``: the
threads a native call may be shared among.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from codegen_lsp.codegen.modeling import LayerKV

log = logging.getLogger(__name__)

ABI_VERSION = 4  # codegen_native.h's CG_ABI_VERSION
NATIVE_DIR = Path(__file__).resolve().parents[1] / "native"  # the C sources and the library
LIBRARY = "libcodegen_native.dylib" if sys.platform == "darwin" else "libcodegen_native.so"
Q4_GROUP = 32
KERNELS = ("gemv_q8", "gemv_q4", "attend")
NATIVE_DTYPES = {torch.float32: 0, torch.bfloat16: 1, torch.int8: 2}  # CG_F32, CG_BF16, CG_I8
ISAS = ("generic", "avx2", "avx512")


class NativeKernelError(RuntimeError):
    """The native library is unusable as configured (a forced ISA this CPU lacks, a bad
    call); the message says why."""


@dataclass(frozen=True)
class Contract:
    """The shapes an implementation computes right: ``k`` (inputs) and ``n`` (outputs)
    multiples, the activation dtypes, and whether each output row is computed alone."""

    k_multiple: int = 1
    n_multiple: int = 1
    dtypes: tuple[torch.dtype, ...] = (torch.float32, torch.bfloat16)
    row_exact: bool = True

    def accepts(self, k: int, n: int, dtype: torch.dtype) -> bool:
        """True when a call with ``k`` inputs, ``n`` outputs and ``dtype`` activations is right."""
        return (
            k >= 1
            and n >= 1
            and k % self.k_multiple == 0
            and n % self.n_multiple == 0
            and (dtype in self.dtypes)
        )


# what each implementation handles (ATen's int8 op reads out of bounds when k % 16 != 0; its
# int4 op raises when n % 16 != 0)
CONTRACTS: dict[tuple[str, str], Contract] = {
    ("gemv_q8", "native"): Contract(),
    ("gemv_q4", "native"): Contract(k_multiple=Q4_GROUP),
    ("gemv_q8", "aten"): Contract(k_multiple=16, dtypes=(torch.bfloat16, torch.float32)),
    ("gemv_q4", "aten"): Contract(k_multiple=Q4_GROUP, n_multiple=16, dtypes=(torch.bfloat16,)),
    ("gemv_q8", "dense"): Contract(dtypes=(torch.bfloat16, torch.float32, torch.float16)),
    ("gemv_q4", "dense"): Contract(k_multiple=Q4_GROUP, dtypes=(torch.bfloat16, torch.float32)),
}


@dataclass(frozen=True)
class AttendContract:
    """The attention calls an implementation computes right: up to ``max_queries`` queries
    (each computed alone: a k-query call equals k one-query calls), head dims up to
    ``max_dim``, the query and KV cache dtypes, on ``device_type``."""

    max_queries: int = 8
    max_dim: int = 256  # codegen_native.h's CG_ATTEND_MAX_DIM
    dtypes: tuple[torch.dtype, ...] = (torch.float32, torch.bfloat16)
    kv_dtypes: tuple[torch.dtype, ...] = (torch.float32, torch.bfloat16, torch.int8)
    device_type: str = "cpu"
    row_exact: bool = True

    def accepts(self, queries: int, dim: int, dtype: torch.dtype, kv_dtype: torch.dtype) -> bool:
        """True when ``queries`` queries of ``dim`` dims over a ``kv_dtype`` cache are right."""
        return (
            1 <= queries <= self.max_queries
            and 1 <= dim <= self.max_dim
            and dtype in self.dtypes
            and kv_dtype in self.kv_dtypes
        )


ATTEND_CONTRACT = AttendContract()


@dataclass(frozen=True)
class KernelEntry:
    """One kernel's line of the table: ``impl`` is "native" or "torch"."""

    name: str
    impl: str
    isa: str
    reason: str  # why not native ("" when native)


@dataclass(frozen=True)
class KernelTable:
    """The loaded library (None: torch only) and each kernel's entry."""

    lib: ctypes.CDLL | None
    isa: str  # the instruction set in use ("" without the library)
    reason: str  # why there is no library ("" when there is)
    entries: dict[str, KernelEntry]

    def describe(self) -> str:
        """One line: e.g. ``native avx512 on 2 threads: gemv_q8, gemv_q4; attend torch``."""
        native = [e.name for e in self.entries.values() if e.impl == "native"]
        torch_only = [e.name for e in self.entries.values() if e.impl != "native"]
        if not native or self.lib is None:
            return f"torch kernels ({self.reason})"
        threads = int(self.lib.cg_threads())
        line = f"native {self.isa} on {threads} thread{'s' if threads > 1 else ''}: "
        line += ", ".join(native)
        return f"{line}; {', '.join(torch_only)} torch" if torch_only else line


def _bind(lib: ctypes.CDLL) -> None:
    ptr, i64, i32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
    gemv = [ptr, i64, i64, ptr, ptr, ptr, i64, ptr, i32]
    for name in ("cg_gemv_q8", "cg_gemv_q4"):
        getattr(lib, name).argtypes = gemv
        getattr(lib, name).restype = i32
        getattr(lib, f"{name}_isa").argtypes = [i32, *gemv]
        getattr(lib, f"{name}_isa").restype = i32
    attend: list[type[ctypes.c_int64 | ctypes.c_void_p | ctypes.c_float | ctypes.c_int]]
    attend = [ptr, i64, i64, i64, i64, ptr, ptr, ptr, ptr, i64, ptr, ctypes.c_float, ptr, i32, i32]
    lib.cg_attend.argtypes = attend
    lib.cg_attend.restype = i32
    lib.cg_attend_isa.argtypes = [i32, *attend]
    lib.cg_attend_isa.restype = i32
    lib.cg_set_threads.argtypes = [i32]
    lib.cg_team_stats.argtypes = [ptr]
    for name in ("cg_abi_version", "cg_isa", "cg_set_threads", "cg_threads"):
        getattr(lib, name).restype = i32
    lib.cg_cpu_supports.argtypes = [i32]
    lib.cg_cpu_supports.restype = i32
    lib.cg_isa_name.argtypes = [i32]
    lib.cg_isa_name.restype = ctypes.c_char_p
    lib.cg_init_error.restype = ctypes.c_char_p


def set_threads(threads: int, env: Mapping[str, str] = os.environ) -> int:
    """Share each native call's parts among ``threads`` threads, the caller included (1..8;
    ``CODEGEN_NATIVE_THREADS`` overrides it); the count set (1 without the library). The
    outputs do not depend on the count (codegen_lsp/native/team.c)."""
    lib = table().lib
    return 1 if lib is None else _apply_threads(lib, threads, env)


def default_threads() -> int:
    """Torch's threads, at most 4: a decode step's memory streams are saturated by then, and
    helper threads spin between calls."""
    return min(torch.get_num_threads(), 4)


def _apply_threads(lib: ctypes.CDLL, threads: int, env: Mapping[str, str]) -> int:
    forced = env.get("CODEGEN_NATIVE_THREADS", "").strip()
    if forced:
        try:
            threads = int(forced)
        except ValueError:
            _note_once(f"CODEGEN_NATIVE_THREADS={forced!r} is not a number; ignored")
    return int(lib.cg_set_threads(max(1, threads)))


def threads() -> int:
    """The threads each native call is shared among (1 without the library)."""
    lib = table().lib
    return 1 if lib is None else int(lib.cg_threads())


def team_stats() -> dict[str, int]:
    """Native calls shared with helper threads so far, calls the caller ran alone (the cheaper
    way on a busy machine), and stalls (waits for a helper descheduled mid-part)."""
    out = (ctypes.c_int64 * 3)()
    lib = table().lib
    if lib is not None:
        lib.cg_team_stats(out)
    return {"sharedCalls": int(out[0]), "aloneCalls": int(out[1]), "stalls": int(out[2])}


def _find_library(env: Mapping[str, str]) -> tuple[Path | None, str]:
    """The library's path, or None and why. It is built at install (``setup.py`` runs
    ``tools/build_native.py``); the package never compiles anything itself."""
    if env.get("CODEGEN_NATIVE_LIB"):
        path = Path(env["CODEGEN_NATIVE_LIB"])
        return (path, "") if path.is_file() else (None, f"no native library at {path}")
    installed = NATIVE_DIR / LIBRARY
    if installed.is_file():
        return installed, ""
    return None, (
        "native library not built (no C compiler at install?): install again with one, "
        "or run python tools/build_native.py in a checkout"
    )


def load_table(env: Mapping[str, str]) -> KernelTable:
    """The table for the environment ``env`` (see the module docstring)."""
    if env.get("CODEGEN_NATIVE", "1").strip().lower() in ("0", "false", "off", "no"):
        return _torch_table("native kernels off (CODEGEN_NATIVE=0)")
    path, reason = _find_library(env)
    if path is None:
        return _torch_table(reason)
    try:
        lib = ctypes.CDLL(str(path))
        _bind(lib)
    except (OSError, AttributeError) as exc:
        return _torch_table(f"native library {path} did not load ({exc})")
    if lib.cg_abi_version() != ABI_VERSION:
        return _torch_table(f"native library {path} is from another version")
    error = lib.cg_init_error().decode()
    if error:
        raise NativeKernelError(error)
    isa = lib.cg_isa_name(lib.cg_isa()).decode()
    _apply_threads(lib, default_threads(), env)  # the engine's loader may set it again
    entries = {name: KernelEntry(name, "native", isa, "") for name in KERNELS}
    return KernelTable(lib, isa, "", entries)


def _torch_table(reason: str) -> KernelTable:
    entries = {name: KernelEntry(name, "torch", "", reason) for name in KERNELS}
    return KernelTable(None, "", reason, entries)


@functools.cache
def table() -> KernelTable:
    """The process's kernel table (built once, from ``os.environ``)."""
    built = load_table(os.environ)
    log.info("kernels: %s", built.describe())
    return built


def describe() -> str:
    """Which kernels run, in one line (for the load log line, status and bench)."""
    return table().describe()


@functools.cache
def _note_once(message: str) -> None:
    log.warning("%s", message)


def route(kernel: str, k: int, n: int, dtype: torch.dtype, device: torch.device) -> str:
    """How a layer of ``k`` inputs and ``n`` outputs computes its few-row calls: "native",
    "aten" (today's ATen op) or "dense" (the torch reference: dequantized weights, one row
    at a time). Decided once per layer; a shape ATen gets wrong is logged once."""
    if device.type == "cpu" and table().lib is not None:
        if CONTRACTS[(kernel, "native")].accepts(k, n, dtype):
            return "native"
    if CONTRACTS[(kernel, "aten")].accepts(k, n, dtype):
        return "aten"
    _note_once(
        f"{kernel}: ATen's op is not right for {k} inputs x {n} outputs ({dtype}); "
        "using dequantized weights for such layers"
    )
    return "dense"


def _call(name: str, rc: int) -> None:
    if rc != 0:
        raise NativeKernelError(f"{name} rejected its arguments (code {rc})")


def _profiled(name: str, run: Callable[[], int]) -> int:
    """``run()``, named ``codegen::<name>`` in a torch profile when one is recording (the
    native calls are invisible to it otherwise; the check costs ~0.1 us)."""
    if not torch._C._autograd._profiler_enabled():
        return run()
    with torch.profiler.record_function(f"codegen::{name}"):
        return run()


def _ptr(t: Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def gemv_q8(x: Tensor, qweight: Tensor, scale: Tensor, bias: Tensor | None) -> Tensor:
    """Native ``x @ (qweight * scale[:, None]).T + bias``: x ``[m, k]`` float32/bf16, qweight
    int8 ``[n, k]``, scale and bias float32 ``[n]``; ``[m, n]`` in x's dtype."""
    return _gemv("gemv_q8", x, qweight, scale, bias)


def gemv_q4(x: Tensor, packed: Tensor, sz: Tensor, bias: Tensor | None) -> Tensor:
    """Native int4 GEMV on ``quantize.pack_q4``'s layout: packed uint8 ``[n, k/2]``, sz bf16
    ``[n, k/32, 2]`` (scale, zero), bias float32 ``[n]``; ``[m, n]`` in x's dtype."""
    return _gemv("gemv_q4", x, packed, sz, bias)


def _gemv(name: str, x: Tensor, weight: Tensor, scales: Tensor, bias: Tensor | None) -> Tensor:
    """Call the library's ``cg_<name>`` (both GEMVs share one C signature)."""
    lib = table().lib
    assert lib is not None, f"{name} called without the native library"
    x = x.contiguous()
    (m, k), n = x.shape, weight.shape[0]
    y = torch.empty((m, n), dtype=x.dtype)
    args = (x.data_ptr(), m, k, weight.data_ptr(), scales.data_ptr(), _ptr(bias), n,
            y.data_ptr(), NATIVE_DTYPES[x.dtype])  # fmt: skip
    fn = getattr(lib, f"cg_{name}")
    _call(name, _profiled(name, lambda: fn(*args)))
    return y


def gemv_rowwise(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """The torch reference path: ``F.linear`` one row at a time (a k-row call then equals k
    one-row calls, which one multi-row matmul does not promise)."""
    return torch.cat([F.linear(x[r : r + 1], weight, bias) for r in range(x.shape[0])])


def gemv_q8_aten(x: Tensor, qweight: Tensor, scales: Tensor, bias: Tensor | None) -> Tensor:
    """ATen's ``_weight_int8pack_mm`` (only where :data:`CONTRACTS` says it is right)."""
    y = torch.ops.aten._weight_int8pack_mm(x, qweight, scales)
    return y + bias if bias is not None else y


def attend(q: Tensor, positions: Tensor, cache: LayerKV) -> Tensor:
    """Native attention of queries ``q`` ``[B, T, H, D]`` at ``positions`` ``[T]`` over a
    layer's KV cache (keys and values ``[B, H, S, D]``, with scales ``[B, H, S]`` when int8;
    query i sees keys ``0..positions[i]``), scale ``D ** -0.5``; ``[B, T, H, D]`` in q's
    dtype. Each query computed alone."""
    lib = table().lib
    assert lib is not None, "attend called without the native library"
    q = q.contiguous()
    (b, t, h, d), max_len = q.shape, cache.k.shape[2]
    lengths = (positions.to(torch.int64) + 1).contiguous()
    y = torch.empty_like(q)
    args = (q.data_ptr(), b, t, h, d, cache.k.data_ptr(), cache.v.data_ptr(),
            _ptr(cache.k_scale), _ptr(cache.v_scale), max_len, lengths.data_ptr(), d**-0.5,
            y.data_ptr(), NATIVE_DTYPES[q.dtype], NATIVE_DTYPES[cache.k.dtype])  # fmt: skip
    _call("attend", _profiled("attend", lambda: lib.cg_attend(*args)))
    return y


def decode_attention(q: Tensor, positions: Tensor, cache: LayerKV) -> Tensor | None:
    """:func:`attend` where the table runs it natively and :data:`ATTEND_CONTRACT` accepts the
    call (contiguous cache buffers on the CPU), else None (the caller's torch path)."""
    if table().lib is None or q.device.type != ATTEND_CONTRACT.device_type:
        return None
    _, t, _, d = q.shape
    if not all(x is None or x.is_contiguous() for x in cache) or cache.k.dtype != cache.v.dtype:
        return None
    if not ATTEND_CONTRACT.accepts(t, d, q.dtype, cache.k.dtype):
        return None
    return attend(q, positions, cache)


def native_isa_call(kernel: str, isa: int, *args: int | None) -> int:
    """``cg_<kernel>_isa`` on the loaded library (tests: every instruction set, or -1 for the
    scalar reference); returns the C return code."""
    lib = table().lib
    assert lib is not None
    return int(getattr(lib, f"cg_{kernel}_isa")(isa, *args))


def cpu_isas() -> list[str]:
    """The instruction sets this CPU and OS run (with the library; [] without)."""
    lib = table().lib
    return [] if lib is None else [ISAS[i] for i in range(len(ISAS)) if lib.cg_cpu_supports(i)]
