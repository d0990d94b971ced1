"""The build step of the native kernels; everything else is declared in pyproject.toml.

``pip install .`` (or ``-e .``) compiles ``codegen_lsp/native`` into ``libcodegen_native``
with the system's C compiler (see ``tools/build_native.py``). Without a compiler, or if the
build fails, the install still succeeds: the build prints a warning and the engine runs its
torch (ATen) kernels, saying so in its load line and status.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = Path(__file__).resolve().parent
NATIVE = "codegen_lsp.native.libcodegen_native"


def _native_build() -> ModuleType:
    """tools/build_native.py, loaded by path (nothing is installed yet)."""
    path = HERE / "tools" / "build_native.py"
    spec = importlib.util.spec_from_file_location("_codegen_native_build", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class BuildNative(build_ext):
    """build_ext that builds the ctypes library with build.py (no Python headers), and only
    warns when it cannot."""

    def get_ext_filename(self, fullname: str) -> str:
        parts = fullname.split(".")
        if parts[-1] == NATIVE.rsplit(".", 1)[-1]:
            return os.path.join(*parts[:-1], _native_build().LIBRARY)
        return super().get_ext_filename(fullname)

    def build_extension(self, ext: Extension) -> None:
        if ext.name != NATIVE:
            super().build_extension(ext)
            return
        native = _native_build()
        target = Path(self.get_ext_fullpath(ext.name))
        try:
            native.build(target)
        except (native.BuildError, OSError) as exc:
            print(
                f"WARNING: codegen-lsp's native kernels were not built ({exc}); "
                "the engine will use torch's kernels",
                file=sys.stderr,
            )
        else:
            print(f"built codegen-lsp's native kernels: {target}", file=sys.stderr)


native_sources = [f"codegen_lsp/native/{name}" for name in _native_build().sources()]
setup(
    ext_modules=[Extension(NATIVE, sources=native_sources, optional=True)],
    cmdclass={"build_ext": BuildNative},
)
