"""The Neovim plugin (editors/neovim) in real Neovim 0.7.2 and 0.11.4, headless, against the
real `codegen-lsp serve`: ghost text from `textDocument/inlineCompletion` drawn as extmarks,
accept all / word / line and dismiss through the plugin's keys, keys falling through to the
key or the user's mapping, the request in flight cancelled when typing goes on, settings sent
again on setup(), the commands, :checkhealth, the help file, option validation, and every
Lua module loading.

Neovim is driven with pynvim (`nvim --embed --headless --clean`); `nvim.input()` types as a
user would, so mappings and insert-mode autocmds run as they do for a person.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from support import wait_until

pytestmark = pytest.mark.editors

REPO = Path(__file__).resolve().parents[2]
PLUGIN = REPO / "editors" / "neovim"
MODULES = ["codegen_lsp", "codegen_lsp.config", "codegen_lsp.client", "codegen_lsp.suggestion",
           "codegen_lsp.keymaps", "codegen_lsp.health", "codegen_lsp.definitions"]  # fmt: skip
VERSIONS = ["0.7", "0.11"]
READY_TIMEOUT = 120.0  # model load, shared CPU
SUGGESTION_TIMEOUT = 60.0

pynvim = pytest.importorskip(
    "pynvim", reason="pynvim missing (run editors/scripts/setup-test-editors)"
)


def start_nvim(path: str, env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("PATH", env["PATH"])  # the child inherits os.environ
    nvim = pynvim.attach(
        "child", argv=[path, "--embed", "--headless", "--clean", "-n", "-i", "NONE"]
    )
    nvim.command(f"set runtimepath^={PLUGIN}")
    nvim.command("runtime plugin/codegen_lsp.lua")
    return nvim


@contextmanager
def plugin_nvim(
    manifest: dict,
    version: str,
    env: dict[str, str],
    server: dict,
    python: str,
    files: Path,
    extra_env: dict[str, str] | None = None,
) -> Iterator[Any]:
    """A Neovim of its own (skipped when that version is not installed) with the plugin set
    up for ``server`` settings; stopped and closed afterwards."""
    path = manifest["nvim"][version]["path"]
    if not path:
        pytest.skip(f"Neovim {version} not installed")
    with pytest.MonkeyPatch.context() as monkeypatch:
        for name, value in (extra_env or {}).items():
            monkeypatch.setenv(name, value)
        nvim = start_nvim(path, env, monkeypatch)
        try:
            nvim.vars["codegen_test_dir"] = str(files)
            options = {"server": server, "python": python, "suggestion": {"debounce": 30}}
            nvim.exec_lua("require('codegen_lsp').setup(...)", options)
            yield nvim
        finally:
            nvim.exec_lua("require('codegen_lsp.client').stop()")
            nvim.close()


@pytest.fixture(scope="module", params=VERSIONS, ids=lambda v: f"nvim-{v}")
def nvim_path(request: pytest.FixtureRequest, manifest: dict) -> str:
    entry = manifest["nvim"][request.param]
    if not entry["path"] or not os.access(entry["path"], os.X_OK):
        pytest.skip(f"Neovim {request.param} not installed")
    return entry["path"]


@pytest.fixture(scope="module")
def editor(
    nvim_path: str,
    editor_env: dict[str, str],
    server_cmd: list[str] | None,
    server_python: str,
    server_settings: dict,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Any]:
    """One Neovim with the plugin set up and the server ready, shared by a module's tests."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        nvim = start_nvim(nvim_path, editor_env, monkeypatch)
        try:
            nvim.vars["codegen_test_dir"] = str(tmp_path_factory.mktemp("nvim-files"))
            # A mapping of the user's on a key the plugin also maps: it must still work.
            nvim.command("inoremap <M-l> <Cmd>let g:user_mapping_ran = 1<CR>")
            options = {"server": server_settings, "suggestion": {"debounce": 30}}
            if server_cmd:
                options["cmd"] = server_cmd
            elif not shutil.which("codegen-lsp", path=editor_env["PATH"]):
                options["python"] = server_python  # else: the plugin finds codegen-lsp on PATH
            nvim.exec_lua("require('codegen_lsp').setup(...)", options)
            nvim.vars["codegen_test_options"] = options
            open_python_file(nvim, "start.py", "")
            wait_until(lambda: status(nvim) == "ready", READY_TIMEOUT, "codegen/status ready")
            yield nvim
        finally:
            nvim.exec_lua("require('codegen_lsp.client').stop()")
            nvim.close()


def status(nvim: Any) -> str:
    return nvim.exec_lua("return require('codegen_lsp.client').status().state")


def normal_mode(nvim: Any) -> None:
    nvim.input("<Esc>")
    wait_until(lambda: nvim.api.get_mode()["mode"] == "n", 5, "normal mode")


def open_python_file(nvim: Any, name: str, text: str) -> Path:
    path = Path(nvim.vars["codegen_test_dir"]) / name
    path.write_text(text)
    normal_mode(nvim)
    nvim.command(f"edit! {path}")
    wait_until(
        lambda: nvim.exec_lua("return require('codegen_lsp.client').is_attached(0)"),
        30,
        "the server to attach to the buffer",
    )
    return path


def ghost(nvim: Any) -> str | None:
    """The suggestion as drawn: extmark virtual text (first line) and virtual lines (the rest)."""
    marks = nvim.exec_lua(
        "return vim.api.nvim_buf_get_extmarks(0, require('codegen_lsp.suggestion').ns, 0, -1,"
        " { details = true })"
    )
    if not marks:
        return None
    assert len(marks) == 1, marks
    details = marks[0][3]
    hl = "CodegenSuggestion"
    first = "".join(text for text, group in details.get("virt_text", []) if group == hl)
    rest = ["".join(text for text, _ in line) for line in details.get("virt_lines", [])]
    return "\n".join([first, *rest])


def buffer_text(nvim: Any) -> str:
    return "\n".join(nvim.current.buffer[:])


def type_and_wait(nvim: Any, keys: str) -> str:
    nvim.input(keys)
    return wait_until(lambda: ghost(nvim), SUGGESTION_TIMEOUT, "ghost text")


def test_ghost_text_then_accept_all(editor: Any) -> None:
    open_python_file(editor, "accept_all.py", "def add(a, b):\n")
    text = type_and_wait(editor, "Goreturn")
    marks = editor.exec_lua(
        "return vim.api.nvim_buf_get_extmarks(0, require('codegen_lsp.suggestion').ns, 0, -1, {})"
    )
    row, col = marks[0][1], marks[0][2]
    assert (row, col) == (1, len(editor.current.buffer[1]))  # drawn at the cursor
    before = buffer_text(editor)
    editor.input("<Tab>")
    wait_until(lambda: buffer_text(editor) != before, 10, "the suggestion to be inserted")
    assert buffer_text(editor) == before + text
    cursor = editor.current.window.cursor
    lines = (before + text).split("\n")
    assert tuple(cursor) == (len(lines), len(lines[-1].encode()))  # cursor after the inserted text


def server_status(nvim: Any) -> dict:
    """The server's ``codegen/status`` (asked through the plugin)."""
    nvim.exec_lua(
        "vim.g.codegen_test_status = nil; require('codegen_lsp.client').request_status("
        "function(st) vim.g.codegen_test_status = st end)"
    )
    return wait_until(lambda: nvim.vars.get("codegen_test_status"), 10, "codegen/status")


def test_accept_word_keeps_the_rest(editor: Any) -> None:
    open_python_file(editor, "accept_word.py", "def add(a, b):\n")
    text = type_and_wait(editor, "Goreturn")
    word = re.match(r"\s*(\w+|[^\w\s]+)", text).group(0)  # the plugin's idea of a word
    before = buffer_text(editor)
    counts = server_status(editor)
    editor.input("<M-w>")
    wait_until(lambda: buffer_text(editor) != before, 10, "the word to be inserted")
    assert buffer_text(editor) == before + word
    # The rest stays on screen without a model run; the server was told of the accept.
    rest = text[len(word):]  # fmt: skip
    if rest:
        assert wait_until(lambda: ghost(editor), 5, "the rest of the suggestion") == rest
    after = wait_until(
        lambda: (st := server_status(editor))["partlyAccepted"] > counts["partlyAccepted"] and st,
        10,
        "the accept counted by the server",
    )
    assert after["generateRuns"] == counts["generateRuns"], (counts, after)
    if rest:
        editor.input("<Tab>")  # and accepting the rest counts as an accept
        wait_until(
            lambda: server_status(editor)["accepted"] > counts["accepted"], 10, "accept counted"
        )


def test_accept_line(editor: Any) -> None:
    open_python_file(editor, "accept_line.py", "def add(a, b):\n")
    text = type_and_wait(editor, "Goreturn")
    # The rest of the current line; at a line end, the line break and the next line.
    line = re.match(r"\n?[^\n]*", text).group(0)
    before = buffer_text(editor)
    editor.input("<M-l>")
    wait_until(lambda: buffer_text(editor) != before, 10, "the line to be inserted")
    assert buffer_text(editor) == before + line


def test_dismiss_then_tab_is_a_tab(editor: Any) -> None:
    open_python_file(editor, "dismiss.py", "x = 1\n")
    type_and_wait(editor, "Goy =")
    before = buffer_text(editor)
    editor.input("<C-]>")
    wait_until(lambda: ghost(editor) is None, 5, "the suggestion to go")
    assert buffer_text(editor) == before
    # No suggestion: <Tab> falls through to the key itself (indent), not an accept.
    editor.input("<Tab>")
    wait_until(lambda: buffer_text(editor) != before, 5, "<Tab> to insert whitespace")
    added = buffer_text(editor)[len(before):]  # fmt: skip
    assert added.strip() == "" and added != "", repr(added)


def test_users_own_mapping_still_runs(editor: Any) -> None:
    open_python_file(editor, "fallthrough.py", "")
    editor.vars["user_mapping_ran"] = 0
    editor.input("<Esc>o<C-]><M-l>")  # dismiss whatever shows, then the user's key
    wait_until(lambda: editor.vars["user_mapping_ran"] == 1, 5, "the user's <M-l> mapping")


def mark_columns(nvim: Any) -> list[int]:
    marks = nvim.exec_lua(
        "return vim.api.nvim_buf_get_extmarks(0, require('codegen_lsp.suggestion').ns, 0, -1, {})"
    )
    return [m[2] for m in marks]


def test_typing_on_cancels_the_request_in_flight(editor: Any) -> None:
    open_python_file(editor, "cancel.py", "def f(a):\n")
    # Keep answers from reaching the plugin, so each request stays in flight; count cancels.
    editor.exec_lua(
        "local client = require('codegen_lsp.client')\n"
        "_G.codegen_test = { request = client.request, sent = 0, cancelled = 0 }\n"
        "client.request = function(bufnr, method, params, handler)\n"
        "  local cancel = _G.codegen_test.request(bufnr, method, params, function() end)\n"
        "  _G.codegen_test.sent = _G.codegen_test.sent + 1\n"
        "  return function()\n"
        "    _G.codegen_test.cancelled = _G.codegen_test.cancelled + 1\n"
        "    cancel()\n"
        "  end\n"
        "end"
    )

    def count(name: str) -> int:
        return editor.exec_lua(f"return _G.codegen_test.{name}")

    try:
        editor.input("Gor")
        wait_until(lambda: count("sent") == 1, 10, "the first request")
        editor.input("e")
        wait_until(lambda: count("cancelled") == 1, 10, "the first request to be cancelled")
        wait_until(lambda: count("sent") == 2, 10, "the next request")
    finally:
        editor.exec_lua("require('codegen_lsp.client').request = _G.codegen_test.request")


def test_cursor_move_and_insert_leave_clear(editor: Any) -> None:
    open_python_file(editor, "clear.py", "def f(a):\n")
    type_and_wait(editor, "Goreturn")
    (col,) = mark_columns(editor)
    editor.input("<Left>")
    wait_until(lambda: col not in mark_columns(editor), 5, "the suggestion to leave on cursor move")
    type_and_wait(editor, "<End>")
    editor.input("<Esc>")
    wait_until(lambda: ghost(editor) is None, 5, "the suggestion to clear on InsertLeave")


def test_toggle_turns_suggestions_off(editor: Any) -> None:
    open_python_file(editor, "toggle.py", "def f(a):\n")
    editor.command("CodegenToggle")
    try:
        assert editor.exec_lua("return require('codegen_lsp.suggestion').enabled()") is False
        editor.input("Goreturn")
        time.sleep(1.0)
        assert ghost(editor) is None
    finally:
        normal_mode(editor)
        editor.command("CodegenToggle")
    assert editor.exec_lua("return require('codegen_lsp.suggestion').enabled()") is True


def test_setup_again_sends_new_settings(editor: Any) -> None:
    options = editor.vars["codegen_test_options"]
    off = {**options, "server": {**options["server"], "languages": {"python": False}}}
    editor.exec_lua("require('codegen_lsp').setup(...)", off)  # workspace/didChangeConfiguration
    try:
        open_python_file(editor, "settings.py", "def f(a):\n")
        editor.input("Goreturn")
        time.sleep(1.5)
        assert ghost(editor) is None  # the server now answers nothing for Python
    finally:
        normal_mode(editor)
        editor.exec_lua("require('codegen_lsp').setup(...)", options)
    type_and_wait(editor, "Goreturn")


def test_status_command_and_no_errors_so_far(editor: Any) -> None:
    def messages() -> str:
        return editor.exec_lua("return vim.fn.execute('messages')")

    # Everything the earlier tests did left no error or deprecation warning behind.
    so_far = messages()
    assert not re.search(r"error|E\d+:|deprecated|stack traceback", so_far, re.I), so_far

    def status_line() -> str:
        editor.command("messages clear")
        editor.command("CodegenStatus")
        wait_until(lambda: "codegen-lsp:" in messages(), 10, ":CodegenStatus output")
        return messages()

    first = status_line()
    # An earlier test's early answer may still be decoding its rest in the background
    # (answerEarly), which the status names honestly; once it ends, the status is "ready".
    assert re.search(r"codegen-lsp: (ready|generating) - default_model: CodeGen", first), first
    wait_until(lambda: "codegen-lsp: ready" in status_line(), 60, ":CodegenStatus saying ready")


def test_generate_function_command(editor: Any) -> None:
    source = 'def add(a, b):\n    """Return the sum of a and b."""\n'
    path = open_python_file(editor, "generate.py", source)
    editor.command("normal! gg")
    editor.command("CodegenGenerateFunction")
    wait_until(lambda: buffer_text(editor) != source.rstrip("\n"), 60, "the generated body")
    assert buffer_text(editor).startswith(source.rstrip("\n").split("\n")[0])
    assert len(editor.current.buffer) > 2, buffer_text(editor)
    assert path.read_text() == source  # applied to the buffer, not saved


def test_checkhealth(editor: Any) -> None:
    normal_mode(editor)
    editor.command("checkhealth codegen_lsp")
    report = buffer_text(editor)
    assert "ERROR" not in report, report
    assert "model loaded" in report, report
    assert "server version: codegen-lsp" in report, report
    editor.command("bwipeout!")


def test_all_lua_modules_load(
    nvim_path: str, editor_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    nvim = start_nvim(nvim_path, editor_env, monkeypatch)
    try:
        errors = nvim.exec_lua(
            "local errors = {}\n"
            "for _, name in ipairs(...) do\n"
            "  local ok, err = pcall(require, name)\n"
            "  if not ok then table.insert(errors, name .. ': ' .. tostring(err)) end\n"
            "end\n"
            "return errors",
            MODULES,
        )
        assert errors == []
        files = sorted(p.relative_to(PLUGIN).as_posix() for p in PLUGIN.rglob("*.lua"))
        expected = [f"lua/{m.replace('.', '/')}.lua" for m in MODULES[1:]]
        assert sorted([*expected, "lua/codegen_lsp/init.lua", "plugin/codegen_lsp.lua"]) == files
        commands = nvim.exec_lua("return vim.tbl_keys(vim.api.nvim_get_commands({}))")
        assert {
            "CodegenToggle",
            "CodegenGenerateFunction",
            "CodegenStatus",
            "CodegenShowPrompt",
        } <= set(commands)
        assert nvim.exec_lua("return vim.fn.execute('messages')").strip() == ""
    finally:
        nvim.close()


def test_setup_validates_options(
    nvim_path: str, editor_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    nvim = start_nvim(nvim_path, editor_env, monkeypatch)
    try:
        bad = [
            ({"server": {"multiline": "sometimes"}}, "server.multiline"),
            ({"server": {"maxNewTokens": "64"}}, "server.maxNewTokens"),
            ({"server": {"stopSequences": [1]}}, "server.stopSequences"),
            ({"server": {"languages": {"markdown": "no"}}}, "server.languages"),
            ({"server": {"filter": True}}, "server.filter"),
            ({"server": {"minLength": "3"}}, "server.minLength"),
            ({"server": {"noSuchSetting": 1}}, "noSuchSetting"),
            ({"keymaps": {"accept": 1}}, "keymaps.accept"),
            ({"suggestion": {"debounce": "fast"}}, "suggestion.debounce"),
        ]
        for opts, name in bad:
            ok, err = nvim.exec_lua("return { pcall(require('codegen_lsp').setup, ...) }", opts)
            assert not ok and name in err, (opts, err)
        for good in ("auto", "off", 0.3):  # the filter: a word or a threshold
            ok, err = nvim.exec_lua(
                "local ok, err = pcall(require('codegen_lsp').setup, ...)"
                " return { ok, ok and '' or err }",
                {"server": {"filter": good}},
            )
            assert ok, (good, err)
        # Every server setting is known to the plugin, with the server's names.
        from codegen_lsp.server.settings import setting_fields

        lua_keys = nvim.exec_lua(
            "return vim.tbl_map(function(e) return e[1] end,"
            " require('codegen_lsp.config').server_types)"
        )
        assert lua_keys == [key for key, _, _ in setting_fields()]
        # One augroup; every autocmd in it has a description.
        nvim.exec_lua("require('codegen_lsp').setup({ filetypes = { 'python' } })")
        descs = nvim.exec_lua(
            "return vim.tbl_map(function(a) return { a.event, a.desc or '' } end,"
            " vim.api.nvim_get_autocmds({ group = 'codegen_lsp' }))"
        )
        assert descs and all(desc for _, desc in descs), descs
    finally:
        nvim.close()


def test_help_file(
    nvim_path: str, editor_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    shutil.copytree(PLUGIN / "doc", tmp_path / "doc")
    nvim = start_nvim(nvim_path, editor_env, monkeypatch)
    try:
        nvim.command(f"helptags {tmp_path / 'doc'}")  # raises on duplicate tags
        nvim.command(f"set runtimepath^={tmp_path}")
        for tag in ["codegen-lsp", "codegen_lsp.setup()", ":CodegenToggle", "codegen-lsp-keymaps"]:
            nvim.command(f"help {tag}")
            assert nvim.current.buffer.name.endswith("codegen-lsp.txt"), tag
    finally:
        nvim.close()


def test_luacheck() -> None:
    luacheck = shutil.which("luacheck")
    if luacheck is None:
        pytest.skip("luacheck not installed (apt-get install lua-check)")
    result = subprocess.run(
        [luacheck, "--no-color", "lua", "plugin"],
        cwd=PLUGIN,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
