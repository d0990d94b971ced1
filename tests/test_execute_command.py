"""``workspace/executeCommand`` answers as JSON-RPC means: a command the server does not
have is -32601 (MethodNotFound, naming the command and the known ones); a known command with
arguments it cannot use is -32602 (InvalidParams); a known command runs. A real server over
raw frames."""

from __future__ import annotations

from pathlib import Path

import pytest
from raw_lsp import RawServer
from support import codegen_settings

METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, tiny_checkpoint: Path):
    srv = RawServer(tmp_path_factory.mktemp("commands") / "server.log")
    try:
        srv.initialize(codegen_settings(tiny_checkpoint))
        yield srv
    finally:
        assert srv.close() == 0


def run(server: RawServer, command: str, *arguments: object) -> dict:
    return server.call("workspace/executeCommand", {"command": command, "arguments": arguments})


@pytest.mark.parametrize("command", ["codegen.noSuchCommand", "", "editor.action.format"])
def test_unknown_command_is_method_not_found(server: RawServer, command: str) -> None:
    answer = run(server, command)
    assert answer["error"]["code"] == METHOD_NOT_FOUND, answer
    message = answer["error"]["message"]
    assert repr(command) in message and "codegen.generateFunction" in message
    assert run(server, "codegen.status")["result"]["state"] == "ready"  # still serving


def test_known_command_with_bad_arguments_is_invalid_params(server: RawServer) -> None:
    answer = run(server, "codegen.generateFunction", "not a uri and a position")
    assert answer["error"]["code"] == INVALID_PARAMS, answer
