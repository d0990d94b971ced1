"""Definitions from VS Code's own language features in real VS Code (code-server): the built-in
TypeScript/JavaScript features resolve a call to a function defined in another file; the
prompt (``codegen/lastPrompt``, shown by "CodeGen: Show Prompt") holds that function's
signature, and ghost text appears."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_vscode import (
    code_server_session,
    drive,
    tools,  # noqa: F401
)

pytestmark = pytest.mark.editors

LIB = """/** Add two numbers. */
export function addNumbers(first: number, second: number): number {
  return first + second;
}
"""
APP = 'import { addNumbers } from "./lib";\n\nexport function main(): number {\n  const total = '
SIGNATURE = "export function addNumbers(first: number, second: number): number {"


def test_a_call_to_another_files_function_brings_its_signature(
    tools: dict,  # noqa: F811 - the fixture imported above
    editor_env: dict[str, str],
    server_cmd: list[str] | None,
    server_python: str,
    server_settings: dict,
    tmp_path: Path,
) -> None:
    settings = {**server_settings, "contextFiles": 0}  # the view shows definitions near its top
    with code_server_session(
        tools, editor_env, server_cmd, server_python, settings, tmp_path
    ) as vscode:
        workspace = vscode["workspace"]
        (workspace / "lib.ts").write_text(LIB)
        (workspace / "app.ts").write_text(APP)
        prompt = {"typeMore": "1, 2);", "expect": "addNumbers(first: number", "tries": 12}
        report = drive(tools, vscode, workspace / "app.ts", "addNumbers(",
                       tmp_path / "screenshots", prompt=prompt)  # fmt: skip
    view = report.get("promptView", "")
    assert report["rc"] == 0 and report["ghostText"].strip(), report
    assert f"// {SIGNATURE}" in view, (view, report["stderr"][-2000:], report["extension_log"])
    assert "// Definition of addNumbers from lib.ts:" in view
    assert "=== definitions (" in view and "=== window (" in view
