"""The README's first command on a fresh machine: ``bash scripts/demo`` in a new virtual
environment that gets the package alone (no extras), so a runtime dependency that only the
test extra brings in fails here (numpy did: torch's CPU wheel does not depend on it).

One venv for the module (its install is the slow part, about a minute); the package is the
checkout itself, installed editable by the script exactly as a user runs it.
"""

from __future__ import annotations

import os
import subprocess
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
INSTALL_S = 900  # bound on install + demo: pip, then one model load and one suggestion


@pytest.fixture(scope="module")
def fresh_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The environment of a shell with a new, empty virtual environment active."""
    home = tmp_path_factory.mktemp("fresh-venv")
    venv.EnvBuilder(with_pip=True).create(home / "venv")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHON")}
    env["VIRTUAL_ENV"] = str(home / "venv")
    env["PATH"] = f"{home / 'venv' / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    return env


def _demo(
    env: dict[str, str], *args: str, timeout: float = INSTALL_S
) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(REPO / "scripts" / "demo"), *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def _installed(env: dict[str, str]) -> set[str]:
    python = Path(env["VIRTUAL_ENV"]) / "bin" / "python"
    out = subprocess.run(
        [str(python), "-m", "pip", "list", "--format=freeze", "--disable-pip-version-check"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    return {line.split("==")[0].lower() for line in out.splitlines() if "==" in line}


@pytest.fixture(scope="module")
def first_run(fresh_env: dict[str, str]) -> subprocess.CompletedProcess:
    """``bash scripts/demo`` in the fresh venv: installs, then one suggestion."""
    return _demo(fresh_env)


def test_demo_in_a_fresh_venv_prints_a_suggestion(first_run, fresh_env) -> None:
    assert first_run.returncode == 0, first_run.stdout + first_run.stderr
    assert "--- suggestion" in first_run.stdout, first_run.stdout
    suggestion = first_run.stdout.split("--- suggestion", 1)[1].split("---\n", 1)[1]
    assert suggestion.strip(), "an empty suggestion"
    assert "Traceback" not in first_run.stderr, first_run.stderr
    assert "UserWarning" not in first_run.stderr, first_run.stderr  # torch's numpy notice
    installed = _installed(fresh_env)
    assert "codegen-lsp" in installed and "torch" in installed
    # the package alone: none of the test extra came along
    assert not installed & {"pytest", "transformers", "matplotlib", "hypothesis"}, installed


def test_demo_with_a_missing_model_is_one_line(first_run, fresh_env, tmp_path) -> None:
    proc = _demo(fresh_env, "--model", str(tmp_path / "missing"), timeout=300)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "model directory not found" in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr


def test_demo_with_a_broken_model_stops_at_the_servers_error(first_run, fresh_env, tmp_path):
    # A folder that looks like a model but is not: the server's load fails, and the demo
    # stops at that error instead of asking until its (here 600 s) timeout.
    (tmp_path / "config.json").write_text('{"model_type": "codegen", "n_embd": "wide"}')
    proc = _demo(fresh_env, "--model", str(tmp_path), "--timeout", "600", timeout=300)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert "load" in lines[0] and "n_embd" in lines[0], lines[0]
    assert "Traceback" not in proc.stderr


def test_complete_in_the_fresh_venv_prints_no_warnings(first_run, fresh_env, tmp_path) -> None:
    # torch notices at import that numpy is missing; the package does not use numpy, so a
    # fresh install must not print that before every command's output
    source = tmp_path / "app.py"
    source.write_text("def add(a, b):\n    return ", encoding="utf-8")
    python = Path(fresh_env["VIRTUAL_ENV"]) / "bin" / "python"
    proc = subprocess.run(
        [str(python), "-m", "codegen_lsp", "complete", str(source), "--line", "1"],
        capture_output=True,
        text=True,
        env=fresh_env,
        cwd=tmp_path,
        timeout=300,
    )
    assert proc.returncode in (0, 1), proc.stderr
    assert "Warning" not in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
