"""The suggestion gate in real Neovim 0.11 on the shipped model (greedy, so the positions are
fixed): with ``filter: auto`` a position whose suggestion the gate hides shows no ghost text
after the model ran (``gateHidden`` counted), and typing on to a position it accepts shows
the suggestion. The positions were found with the shipped model and its gate data; if either
changes, ``tests/test_gate.py`` and this test say so."""

from __future__ import annotations

import time
from typing import Any

import pytest
from support import wait_until
from test_neovim import (
    READY_TIMEOUT,
    SUGGESTION_TIMEOUT,
    ghost,
    open_python_file,
    plugin_nvim,
    server_status,
    status,
)

pytestmark = pytest.mark.editors

# the file up to the hidden position; what is typed there to reach the shown one; what is shown
GATE_SOURCE = (
    'def read_config(path):\n    """Read the configuration file at path."""\n'
    "    with open(path) as f:\n        data = f.read()\n    "
)  # scored 0.21 by the shipped gate (threshold 0.50): "return data" hidden
GATE_TYPED = "r"  # then scored 0.75: shown
GATE_SHOWN = "eturn data"
GATE_SETTINGS = {"model": "", "device": "cpu", "threads": 1, "filter": "auto"}


def test_filter_auto_hides_what_the_gate_rejects(
    manifest: dict,
    editor_env: dict[str, str],
    server_python: str,
    server_settings: dict,
    tmp_path: Any,
) -> None:
    if server_settings["model"] != "":
        pytest.skip("the positions are the shipped model's")
    with plugin_nvim(manifest, "0.11", editor_env, GATE_SETTINGS, server_python, tmp_path) as nvim:
        open_python_file(nvim, "gate.py", GATE_SOURCE)
        wait_until(lambda: status(nvim) == "ready", READY_TIMEOUT, "codegen/status ready")
        nvim.input("GA")  # insert at the end: the plugin asks (automatic, as while typing)
        hidden = wait_until(
            lambda: (st := server_status(nvim))["gateHidden"] >= 1 and st,
            SUGGESTION_TIMEOUT,
            "the model run the gate hides",
        )
        time.sleep(1.0)
        assert ghost(nvim) is None and hidden["shown"] == 0, hidden
        nvim.input(GATE_TYPED)
        text = wait_until(lambda: ghost(nvim), SUGGESTION_TIMEOUT, "ghost text")
        assert text.strip().startswith(GATE_SHOWN), text
        assert server_status(nvim)["shown"] >= 1
