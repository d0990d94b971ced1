"""Benchmarks (not tests): keystroke replay, throughput, bandwidth; ``codegen-lsp bench``.

Like :mod:`codegen_lsp.engine`, this asks OpenMP threads to sleep when idle (before torch
loads), so that a loaded machine slows the run down rather than making it thrash.
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
