"""The remote engine against endpoints that misbehave: a real HTTP server on loopback that
answers what the OpenAI API does not promise, answers too slowly, or is not there. Each gives
a clear message naming the endpoint and the problem; nothing crashes, no key is shown."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from support import free_port

from codegen_lsp.engine.api import EngineSpec, EngineUnavailable, GenerateRequest
from codegen_lsp.engine.loader import load_engine
from codegen_lsp.engine.remote_http import RemoteError

MODELS = {"data": [{"id": "m", "max_model_len": 256}]}


def serve(replies: dict[str, tuple[int, str, float]]) -> tuple[ThreadingHTTPServer, str]:
    """An HTTP server answering ``path -> (status, body, delay_s)``."""

    class Handler(BaseHTTPRequestHandler):
        def answer(self) -> None:
            status, body, delay = replies.get(self.path, (404, "{}", 0.0))
            if self.command == "POST":
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
            time.sleep(delay)
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            try:
                self.wfile.write(data)
            except BrokenPipeError:  # the client gave up waiting (the timeout test)
                pass

        do_GET = do_POST = answer

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_port}/v1"


@pytest.fixture
def endpoint() -> Iterator[Callable[[dict], str]]:
    servers: list[ThreadingHTTPServer] = []

    def make(replies: dict[str, tuple[int, str, float]]) -> str:
        server, url = serve(replies)
        servers.append(server)
        return url

    yield make
    for server in servers:
        server.shutdown()


def engine_for(url: str, tiny_checkpoint: Path, **extra):
    return load_engine(EngineSpec(model=str(tiny_checkpoint), endpoint=url, **extra))


def test_a_model_list_that_is_not_one(endpoint, tiny_checkpoint) -> None:
    url = endpoint({"/v1/models": (200, '{"data": "nope"}', 0.0)})
    engine = engine_for(url, tiny_checkpoint)
    health = engine.health()
    assert not health.ok and "not a model list" in health.message and url in health.message
    with pytest.raises(EngineUnavailable):
        engine.generate(GenerateRequest(key="k", prompt=[1, 2]), threading.Event())
    engine.close()


@pytest.mark.parametrize(
    "body,expected",
    [
        ('data: {"choices": "x"}\n\n', "not an OpenAI completion"),
        ("data: not json\n\n", "not JSON"),
        ('data: {"choices": [{"index": 0, "text": "a"}]}\n\n', "no token_ids"),
        ('data: {"choices": [{"index": 5, "token_ids": [1]}]}\n\n', "index 5"),
        ('data: {"error": {"message": "engine died"}}\n\n', "engine died"),
    ],
)
def test_a_stream_that_is_not_a_completion(endpoint, tiny_checkpoint, body, expected) -> None:
    url = endpoint({"/v1/models": (200, json.dumps(MODELS), 0.0),
                    "/v1/completions": (200, body, 0.0)})  # fmt: skip
    engine = engine_for(url, tiny_checkpoint)
    assert engine.health().ok, engine.health()
    req = GenerateRequest(key="k", prompt=[1, 2], max_new_tokens=4, heal=False)
    with pytest.raises(RemoteError, match=expected):
        engine.generate(req, threading.Event())
    assert engine.health().ok  # one bad answer is this request's failure, not an outage
    engine.close()


def test_slow_endpoint_times_out_with_a_clear_message(endpoint, tiny_checkpoint) -> None:
    url = endpoint({"/v1/models": (200, json.dumps(MODELS), 0.0),
                    "/v1/completions": (200, "", 2.0)})  # fmt: skip
    engine = engine_for(url, tiny_checkpoint, request_timeout_ms=200)
    started = time.monotonic()
    with pytest.raises(EngineUnavailable, match="no answer within 0.2 s"):
        engine.generate(GenerateRequest(key="k", prompt=[1, 2], heal=False), threading.Event())
    assert time.monotonic() - started < 1.5
    assert not engine.health().ok and url in engine.health().message
    engine.close()


def test_nothing_listening_and_bad_settings(tiny_checkpoint, tmp_path, monkeypatch) -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    monkeypatch.setenv("CODEGEN_TEST_KEY", "hidden-key-value")
    engine = engine_for(url, tiny_checkpoint, api_key_env="CODEGEN_TEST_KEY")
    health = engine.health()
    assert not health.ok and "cannot reach" in health.message and url in health.message
    assert "hidden-key-value" not in health.message + engine.description
    engine.close()
    from codegen_lsp.engine.machine import EngineConfigError

    with pytest.raises(EngineConfigError, match="caBundle"):
        engine_for("https://example.invalid/v1", tiny_checkpoint, ca_bundle=str(tmp_path / "x"))
    with pytest.raises(EngineConfigError, match="http:// or https://"):
        engine_for("gpu-box:8000", tiny_checkpoint)
