"""Building the native kernel library (``libcodegen_native``) with the system's C compiler.

``setup.py`` runs it at install (``pip install .`` or ``-e .``); after editing the C sources,
``python tools/build_native.py`` rebuilds the library in place. It lives outside the package:
the package itself never starts a process (docs/security.md). Standard library only. Each
instruction-set file gets its own flags (never ``-march=native``: one build runs on every CPU
of its architecture; ``dispatch.c`` picks the functions at run time). ``-ffp-contract=off``
keeps the compiler from fusing a multiply and an add in one place and not in another, so
every kernel computes each output in the one order its source says.
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parents[1] / "codegen_lsp" / "native"  # the C sources
LIBRARY = "libcodegen_native.dylib" if sys.platform == "darwin" else "libcodegen_native.so"
COMMON_FLAGS = [
    "-O3",
    "-fPIC",
    "-pthread",
    "-std=gnu11",
    "-ffp-contract=off",
    "-fno-fast-math",
    "-Wall",
]
AVX512_FLAGS = ["-mavx2", "-mfma", "-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq"]
ISA_FLAGS: dict[str, list[str]] = {
    "dispatch.c": [],
    "team.c": [],
    "ref.c": [],
    "generic.c": [],
    "avx2.c": ["-mavx2", "-mfma"],
    "avx512.c": AVX512_FLAGS,
}
X86 = platform.machine().lower() in ("x86_64", "amd64", "i386", "i686")


class BuildError(RuntimeError):
    """The library could not be built (no compiler, or it failed); the message says why."""


def sources() -> list[str]:
    """The C files this machine's build compiles (the AVX files on x86 only)."""
    return [name for name in ISA_FLAGS if X86 or not name.startswith("avx")]


def source_hash() -> str:
    """A short hash of the sources and flags."""
    digest = hashlib.sha256()
    for name in [*ISA_FLAGS, "codegen_native.h", "common.h", "attend_impl.h"]:
        digest.update(name.encode() + (HERE / name).read_bytes())
    digest.update(repr((COMMON_FLAGS, ISA_FLAGS, X86)).encode())
    return digest.hexdigest()[:16]


def compiler() -> str:
    """``$CC``, else the first of cc, gcc, clang on the PATH."""
    found = os.environ.get("CC") or next(
        (c for c in ("cc", "gcc", "clang") if shutil.which(c)), None
    )
    if not found:
        raise BuildError("no C compiler found (set CC, or install gcc or clang)")
    return found


def _run(command: list[str]) -> None:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    except OSError as exc:
        raise BuildError(f"{command[0]}: {exc}") from exc
    except subprocess.TimeoutExpired as exc:
        raise BuildError(f"{' '.join(command)} timed out") from exc
    if done.returncode != 0:
        raise BuildError(f"{' '.join(command)} failed:\n{(done.stderr or done.stdout).strip()}")


def build(target: Path) -> Path:
    """Compile and link the library at ``target`` (written atomically); raises BuildError."""
    cc = compiler()
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="codegen-native-") as tmp:
        objects = []
        for name in sources():
            obj = Path(tmp) / (name[:-2] + ".o")
            extra = ["-DCG_NO_AVX"] if name == "dispatch.c" and not X86 else []
            _run(
                [
                    cc,
                    *COMMON_FLAGS,
                    *ISA_FLAGS[name],
                    *extra,
                    "-c",
                    str(HERE / name),
                    "-o",
                    str(obj),
                ]
            )
            objects.append(str(obj))
        linked = Path(tmp) / LIBRARY
        _run([cc, "-shared", "-pthread", "-o", str(linked), *objects, "-lm"])
        partial = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        shutil.copyfile(linked, partial)
        os.replace(partial, target)
    return target


def main() -> int:
    """``python tools/build_native.py [TARGET]``: build the library (by default beside its
    sources, where the package looks for it)."""
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE / LIBRARY
    try:
        build(target)
    except BuildError as exc:
        print(f"codegen-lsp native kernels not built: {exc}", file=sys.stderr)
        return 1
    print(target)
    return 0


if __name__ == "__main__":
    sys.exit(main())
