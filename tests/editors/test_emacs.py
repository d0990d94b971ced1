"""Emacs' eglot as a real LSP client of ``codegen-lsp serve`` (``emacs --batch``, Debian's
``emacs-nox`` + ``elpa-eglot``, installed by editors/scripts/setup-test-editors).

The driver (``eglot_driver.el``) opens a Python file, lets eglot start and initialize the
server, waits for ``ready``, then asks for completion through eglot's own completion table,
hover, and the code action, whose edit eglot confirms with "Proceed?" (answered yes or no).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.editors

DRIVER = Path(__file__).with_name("eglot_driver.el")
SOURCE = "def add(a, b):\n    pass\n\n\nresult = add(1, 2)\nprint(resu"


def _eglot_available() -> bool:
    if shutil.which("emacs") is None:
        return False
    probe = subprocess.run(
        ["emacs", "--batch", "--eval", "(require 'eglot)"], capture_output=True, timeout=60
    )
    return probe.returncode == 0


def _drive(tmp_path: Path, settings: dict, python: str, answer: str) -> dict:
    if not _eglot_available():
        pytest.skip("emacs with eglot not installed (run editors/scripts/setup-test-editors)")
    source = tmp_path / "stub.py"
    source.write_text(SOURCE, encoding="utf-8")
    out = tmp_path / "out.json"
    env = {
        **os.environ,
        "CODEGEN_PY": python,
        "CODEGEN_SETTINGS": json.dumps(settings),
        "CODEGEN_FILE": str(source),
        "CODEGEN_ANSWER": answer,
        "CODEGEN_OUT": str(out),
    }
    proc = subprocess.run(
        ["emacs", "--batch", "-l", str(DRIVER)],
        capture_output=True,
        text=True,
        env=env,
        timeout=400,
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
    )
    assert out.is_file(), proc.stdout + proc.stderr
    return json.loads(out.read_text())


def test_eglot_completion_hover_and_accepted_code_action(
    tmp_path: Path, server_settings: dict, server_python: str
) -> None:
    got = _drive(tmp_path, server_settings, server_python, "yes")
    assert got["completions"], got
    assert got["hover"].startswith("```python\ndef add(a, b):\n"), got["hover"]
    assert got["actions"] == ["Generate function body (codegen)"]
    assert got["executed"] == {"applied": True, "reason": ""}
    # the stub's `pass` was replaced by the generated body
    assert got["text"].startswith("def add(a, b):\n") and "    pass\n" not in got["text"]
    assert got["text"].endswith("result = add(1, 2)\nprint(resu")


def test_eglot_declined_edit_is_applied_false(
    tmp_path: Path, server_settings: dict, server_python: str
) -> None:
    got = _drive(tmp_path, server_settings, server_python, "no")
    assert got["executed"]["applied"] is False, got
    assert "declined" in got["executed"]["reason"], got
    assert got["text"] == SOURCE, "a declined edit changes nothing"
