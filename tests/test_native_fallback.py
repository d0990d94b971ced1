"""The native kernels off: the engine reports which kernels run (status, over LSP), and the
exactness suites (reuse = recompute, speculation on = off, the draft model) hold on the forced
torch fallback as they do on the native path (the rest of the run is the native path, where
the library is built).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from raw_lsp import RawServer
from support import cpu_settings

from codegen_lsp.engine import kernels

TESTS = Path(__file__).resolve().parent
EXACTNESS = [
    "test_engine_reuse.py",
    "test_engine_speculation.py",
    "test_engine_draft.py",
    "test_kv_dtype.py::test_int8_cache_keeps_reuse_and_speculation_exact",
    "test_engine_cold.py",
]


@pytest.mark.parametrize("native", ["1", "0"])
def test_status_names_the_kernels(tmp_path: Path, steady_checkpoint: Path, native: str) -> None:
    server = RawServer(tmp_path / "server.log", env={"CODEGEN_NATIVE": native})
    try:
        server.initialize({"codegen": cpu_settings(steady_checkpoint, dtype="bfloat16")})
        status = server.status()
    finally:
        assert server.close() == 0
    if native == "0":
        assert status["kernels"] == "torch kernels (native kernels off (CODEGEN_NATIVE=0))"
    else:  # what this process's table says on the server's one thread (cpu_settings)
        before = kernels.threads()
        kernels.set_threads(1)
        try:
            assert status["kernels"] == kernels.describe(), status
        finally:
            kernels.set_threads(before)
    assert status["kernels"] in server.log()  # the load's log line says it too


def test_exactness_suites_hold_on_the_torch_fallback() -> None:
    env = {**os.environ, "CODEGEN_NATIVE": "0"}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", "-p", "no:cacheprovider"]
        + [str(TESTS / name) for name in EXACTNESS],
        capture_output=True,
        text=True,
        env=env,
        cwd=TESTS.parent,
        timeout=1200,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert " passed" in proc.stdout and " failed" not in proc.stdout
