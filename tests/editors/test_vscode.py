"""The VS Code extension (editors/vscode) in real VS Code (code-server) driven by headless
Chromium, against the real `codegen-lsp serve`: the packaged .vsix installs, the status bar
item reaches "ready", typing shows ghost text, Tab accepts it, and the saved file on disk has
it; the generate-function command edits the file through the server. Also: `tsc --noEmit`
passes and the contributed settings match the server's one to one.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from support import free_port

pytestmark = pytest.mark.editors

REPO = Path(__file__).resolve().parents[2]
EXTENSION = REPO / "editors" / "vscode"
VSIX = EXTENSION / "dist" / "codegen-lsp.vsix"
DRIVER = Path(__file__).with_name("vscode_driver.js")
EXTENSION_ID = "codegen-lsp.codegen-lsp"
CLIENT_ONLY = {
    "codegen.enable",
    "codegen.serverCommand",
    "codegen.pythonPath",
    "codegen.trace.server",
    "codegen.autoTrigger",
}
READY_TIMEOUT_S = 150
SUGGESTION_TIMEOUT_S = 60


def package_json() -> dict:
    return json.loads((EXTENSION / "package.json").read_text())


@pytest.fixture(scope="module")
def tools(manifest: dict) -> dict:
    for key in ("node", "code_server", "chromium"):
        if not manifest.get(key) or not Path(manifest[key]).exists():
            pytest.skip(f"{key} missing (run editors/scripts/setup-test-editors first)")
    if not VSIX.is_file():
        pytest.skip(f"{VSIX} missing (run editors/scripts/setup-test-editors first)")
    return manifest


def code_server(tools: dict, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    """Run a code-server command line (install or list extensions) to its end."""
    cmd = [tools["node"], tools["code_server"], *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True, env=env)


@pytest.fixture(scope="module")
def vscode(
    tools: dict,
    editor_env: dict[str, str],
    server_cmd: list[str] | None,
    server_python: str,
    server_settings: dict,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict]:
    """code-server with the packaged extension installed, serving a workspace; its URL."""
    root = tmp_path_factory.mktemp("code-server")
    with code_server_session(
        tools, editor_env, server_cmd, server_python, server_settings, root
    ) as session:
        yield session


def logged_server(python: str, tmp_path: Path) -> tuple[Path, list[str]]:
    """A server command that logs to ``tmp_path/server.log`` (made empty), and that log."""
    log = tmp_path / "server.log"
    log.write_text("")
    return log, [python, "-m", "codegen_lsp", "serve", "--log-file", str(log)]


@contextmanager
def code_server_session(
    tools: dict,
    editor_env: dict[str, str],
    server_cmd: list[str] | None,
    server_python: str,
    server_settings: dict,
    root: Path,
) -> Iterator[dict]:
    """Start code-server (extension installed, user settings written) in ``root``."""
    user_data, extensions, workspace = root / "user-data", root / "extensions", root / "workspace"
    for d in (user_data / "User", extensions, workspace):
        d.mkdir(parents=True)
    config = root / "config.yaml"
    port = free_port()
    config.write_text(f"bind-addr: 127.0.0.1:{port}\nauth: none\ncert: false\n")
    common = ["--config", str(config), "--user-data-dir", str(user_data),
              "--extensions-dir", str(extensions)]  # fmt: skip
    env = {**editor_env, "HOME": str(root)}  # nothing of the machine's user settings
    out = code_server(tools, *common, "--install-extension", str(VSIX), env=env)
    listed = code_server(tools, *common, "--list-extensions", env=env).stdout
    assert EXTENSION_ID in listed.split(), out.stdout + out.stderr + listed

    settings = {f"codegen.{key}": value for key, value in server_settings.items()}
    if server_cmd:
        settings["codegen.serverCommand"] = server_cmd
    else:
        settings["codegen.pythonPath"] = server_python
    settings.update({
        "codegen.trace.server": "messages",
        "workbench.startupEditor": "none",
        "security.workspace.trust.enabled": False,
        "telemetry.telemetryLevel": "off",
        "update.mode": "none",
        "extensions.autoUpdate": False,
        "extensions.autoCheckUpdates": False,
        "extensions.ignoreRecommendations": True,
        "workbench.tips.enabled": False,
        "chat.disableAIFeatures": True,
        "git.enabled": False,
        "editor.inlineSuggest.enabled": True,
        # No completion widget: Tab must go to the inline suggestion.
        "editor.quickSuggestions": {"other": False, "comments": False, "strings": False},
        "editor.suggestOnTriggerCharacters": False,
        "editor.wordBasedSuggestions": "off",
    })  # fmt: skip
    (user_data / "User" / "settings.json").write_text(json.dumps(settings, indent=2))

    log = (root / "code-server.log").open("w")
    proc = subprocess.Popen(
        [tools["node"], tools["code_server"], *common, "--disable-telemetry",
         "--disable-update-check", "--disable-workspace-trust", "--ignore-last-opened",
         str(workspace)],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2).read()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(
                        "code-server did not start:\n" + (root / "code-server.log").read_text()
                    ) from None
                time.sleep(0.2)
        yield {
            "url": f"http://127.0.0.1:{port}/?folder={workspace}",
            "workspace": workspace,
            "root": root,
            "user_data": user_data,
        }
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def extension_log(user_data: Path) -> str:
    """The extension's output channel ("CodeGen") from code-server's logs, if written."""
    logs = sorted(user_data.glob("logs/**/*CodeGen*.log"))
    return "\n".join(f"--- {p}\n{p.read_text(errors='replace')[-4000:]}" for p in logs)


ACCEPT_SOURCE = "def add(a, b):\n    "
GENERATE_SOURCE = 'def area(width, height):\n    """Return the area of a rectangle."""\n'


@pytest.fixture(scope="module")
def session(tools: dict, vscode: dict) -> dict:
    """One browser session: type + Tab + save in accept.py, then the generate command in
    generate.py (cursor on its `def` line) + save. Returns the driver's report."""
    accept, generate = vscode["workspace"] / "accept.py", vscode["workspace"] / "generate.py"
    accept.write_text(ACCEPT_SOURCE)
    generate.write_text(GENERATE_SOURCE)
    generate_args = {"file": str(generate), "before": GENERATE_SOURCE, "line": 1,
                     "command": "CodeGen: Generate Function Body at Cursor"}  # fmt: skip
    shots = vscode["root"] / "screenshots"
    report = drive(tools, vscode, accept, "return", shots, generate=generate_args)
    report["accept"], report["generate"] = accept.read_text(), generate.read_text()
    return report


def drive(
    tools: dict, vscode: dict, file: Path, typed: str, shots: Path, **options: object
) -> dict:
    """vscode_driver.js on ``file``, typing ``typed`` at its end, screenshots in ``shots``
    (made here); ``options`` add to (or override) the driver's arguments. Its report."""
    shots.mkdir()
    args = {"playwright": tools["playwright_core"], "chromium": tools["chromium"],
            "url": vscode["url"], "file": str(file), "typeAtEnd": typed,
            "screenshots": str(shots), "readyTimeoutMs": READY_TIMEOUT_S * 1000,
            "suggestionTimeoutMs": SUGGESTION_TIMEOUT_S * 1000, **options}  # fmt: skip
    return run_driver(tools, vscode, args)


def run_driver(tools: dict, vscode: dict, args: dict) -> dict:
    """Run vscode_driver.js with ``args``; its report, with the run's output and logs."""
    result = subprocess.run(
        [tools["node"], str(DRIVER), json.dumps(args)],
        capture_output=True,
        text=True,
        timeout=2 * READY_TIMEOUT_S + 3 * SUGGESTION_TIMEOUT_S,
    )
    report = {"rc": result.returncode, "stdout": result.stdout, "stderr": result.stderr,
              "shots": args["screenshots"],
              "extension_log": extension_log(vscode["user_data"])}  # fmt: skip
    lines = result.stdout.strip().splitlines()
    report.update(json.loads(lines[-1]) if lines else {})
    return report


def describe(report: dict) -> str:
    return (
        f"driver rc={report['rc']} (screenshots in {report['shots']})\n{report['stdout']}\n"
        f"{report['stderr'][-3000:]}\n{report['extension_log']}"
    )


def test_status_bar_reaches_ready(session: dict) -> None:
    texts = session.get("statusTexts", [])
    ready = [i for i, text in enumerate(texts) if "CodeGen: ready" in text]
    assert ready, describe(session)
    # It showed the start or the model load before "ready".
    assert any(re.search(r"CodeGen: (starting|loading)", t) for t in texts[: ready[0]]), texts
    print("status bar texts:", texts)


def test_type_ghost_text_tab_accepts_and_saves(session: dict) -> None:
    saved = session["accept"]
    assert saved.startswith(ACCEPT_SOURCE + "return"), describe(session)
    accepted = saved[len(ACCEPT_SOURCE + "return") :]
    assert accepted.strip(), f"nothing accepted\n{describe(session)}"
    # What was shown went in (the view shows ghost lines without their indentation).
    shown = [line.strip() for line in session["ghostText"].splitlines() if line.strip()]
    assert shown and shown[0] in accepted, (session["ghostText"], accepted)


def test_generate_function_command(session: dict) -> None:
    saved = session["generate"]
    assert saved != GENERATE_SOURCE, f"the command changed nothing\n{describe(session)}"
    assert saved.startswith(GENERATE_SOURCE.split("\n")[0]), saved
    assert session["rc"] == 0, describe(session)
    print(json.dumps(session.get("steps"), indent=1))


def test_settings_match_the_server() -> None:
    from codegen_lsp.server.settings import setting_fields

    props = package_json()["contributes"]["configuration"]["properties"]
    server = {f"codegen.{key}": default for key, default, _ in setting_fields()}
    assert set(props) - CLIENT_ONLY == set(server)
    for key, default in server.items():
        assert props[key]["default"] == default, key
    keys_ts = (EXTENSION / "src" / "settings.ts").read_text()
    listed = re.search(r"SERVER_SETTING_KEYS = \[(.*?)\]", keys_ts, re.S).group(1)
    assert sorted(re.findall(r"\"(\w+)\"", listed)) == sorted(key for key, _, _ in setting_fields())
    commands = {c["command"] for c in package_json()["contributes"]["commands"]}
    assert commands == {
        "codegen.showStatus",
        "codegen.toggle",
        "codegen.generateFunctionAtCursor",
        "codegen.showLog",
        "codegen.restartServer",
        "codegen.showPrompt",
    }


def test_typescript_compiles(tools: dict) -> None:
    tsc = EXTENSION / "node_modules" / "typescript" / "bin" / "tsc"
    if not tsc.is_file():
        pytest.skip("editors/vscode/node_modules missing (run editors/scripts/setup-test-editors)")
    env = {**os.environ, "PATH": f"{Path(tools['node']).parent}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(
        [tools["node"], str(tsc), "--noEmit", "-p", str(EXTENSION)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_gitignore_keeps_build_outputs_out() -> None:
    ignored = (EXTENSION / ".gitignore").read_text().split()
    assert {"node_modules/", "dist/", "out/", "*.vsix"} <= set(ignored)
    assert (EXTENSION / "package-lock.json").is_file()
