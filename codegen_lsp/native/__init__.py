"""The engine's native CPU kernels: C sources, their build (:mod:`.build`) and, once built, the
shared library beside them. Python reaches them only through :mod:`codegen_lsp.engine.kernels`."""
