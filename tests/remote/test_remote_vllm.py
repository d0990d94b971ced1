"""The remote engine against a real vLLM server: exactness, abort, outages, API keys, cache.

Greedy tokens from vLLM (serving the GPT-J export) must equal the local engine's on the
CodeGen source, token for token, and ``codegen-lsp serve`` must answer the same inline text
in both modes. A cancelled request must be aborted on the server; an endpoint that is down
must give an ``error`` status and one message while requests answer empty at once, and the
server must recover by itself when vLLM comes back.
"""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path

import pytest
from raw_lsp import RawServer, inline_params
from support import CPU, wait_until
from vllm_support import SERVED

from codegen_lsp.engine.api import EngineSpec, GenerateRequest
from codegen_lsp.engine.loader import load_engine

pytestmark = [pytest.mark.remote, pytest.mark.timeout(600)]

LOCAL = dict(device="cpu", dtype="float32", quantize="none")
DOC = "import os\n\n\ndef read_config(path):\n    with open(path) as f:\n        return f.re"


def remote_spec(source: Path, url: str, **extra) -> EngineSpec:
    return EngineSpec(model=str(source), endpoint=url, **extra)


@pytest.fixture(scope="module")
def local_engine(remote_checkpoints):
    return load_engine(EngineSpec(model=str(remote_checkpoints[0]), **LOCAL))


def test_greedy_tokens_equal_the_local_engine(vllm, remote_checkpoints, local_engine) -> None:
    remote = load_engine(remote_spec(remote_checkpoints[0], vllm.url))
    assert remote.health().ok, remote.health()
    rng = random.Random(7)
    lengths = [1, 2, 3, 9, 31, 64, 150, 333, 512, 700, 900]
    for i, length in enumerate(lengths):
        prompt = [rng.randrange(50000) for _ in range(length)]
        req = GenerateRequest(key=f"p{i}", prompt=prompt, max_new_tokens=48, heal=i % 2 == 0)
        want = local_engine.generate(req, threading.Event()).candidates[0]
        got = remote.generate(req, threading.Event()).candidates[0]
        assert got.token_ids == want.token_ids, (length, got.token_ids, want.token_ids)
        assert got.text == want.text
        assert len(got.token_ids) == 48
    remote.close()


def serve(tmp_path: Path, name: str, settings: dict) -> RawServer:
    server = RawServer(tmp_path / f"{name}.log")
    # filter off: the gate was fitted on the shipped model, not on these tiny checkpoints
    server.initialize({"codegen": {"filter": "off", **settings}}, wait_for=None)
    return server


def test_serve_remote_answers_the_local_text(vllm, remote_checkpoints, tmp_path) -> None:
    source = str(remote_checkpoints[0])
    texts = {}
    for name, settings in {
        "local": {"model": source, **CPU},
        "remote": {"model": source, "endpoint": vllm.url, "remoteModel": SERVED},
    }.items():
        server = serve(tmp_path, name, settings)
        try:
            status = server.wait_state("ready")
            assert status.get("remote", False) == (name == "remote"), status
            uri = "file:///work/config.py"
            server.open(uri, DOC)
            lines = DOC.split("\n")
            answer = server.inline(uri, len(lines) - 1, len(lines[-1]))  # single line
            texts[name] = [item["insertText"] for item in answer["result"]["items"]]
            multi = "file:///work/area.py"  # multi-line: Python's 9 stop sequences
            server.open(multi, "import math\n\n\ndef area(w, h):\n    ")
            answer = server.inline(multi, 4, 4)
            assert "error" not in answer and server.status()["failures"] == 0, answer
            texts[name] += [item["insertText"] for item in answer["result"]["items"]]
            if name == "remote":
                status = server.status()
                assert status["endpoint"] == vllm.url and status["remoteModel"] == SERVED
                assert status["lastLatencyMs"] is not None
                assert "last request" in status["message"], status
        finally:
            server.close()
    assert texts["remote"] == texts["local"], texts
    assert texts["local"] and texts["local"][0], texts


def test_cancel_aborts_the_request_on_the_server(vllm, remote_checkpoints) -> None:
    remote = load_engine(remote_spec(remote_checkpoints[0], vllm.url))
    cancel = threading.Event()
    seen: list[int] = []

    def on_token(row: int, token: int) -> None:
        seen.append(token)
        if len(seen) == 5:
            cancel.set()

    before = vllm.log().count("Aborted request")
    req = GenerateRequest(
        key="abort", prompt=[11, 12, 13], max_new_tokens=1000, ignore_eos=True, on_token=on_token
    )
    result = remote.generate(req, cancel)
    assert result.cancelled and result.candidates[0].finish_reason == "cancelled"
    assert 5 <= len(result.candidates[0].token_ids) < 1000
    wait_until(
        lambda: vllm.log().count("Aborted request") > before or None,
        30,
        lambda: f"'Aborted request' in the vLLM log: {vllm.tail()}",
    )
    remote.close()


def rewrite(server: RawServer, uri: str, version: int, text: str) -> str:
    """didChange with the whole new text."""
    change = {"textDocument": {"uri": uri, "version": version}, "contentChanges": [{"text": text}]}
    server.notify("textDocument/didChange", change)
    return text


def test_outage_and_recovery_without_touching_the_editor(own_vllm, remote_checkpoints, tmp_path):
    vllm = own_vllm()  # not started yet: the language server starts first
    settings = {"model": str(remote_checkpoints[0]), "endpoint": vllm.url}
    server = serve(tmp_path, "outage", settings)
    uri = "file:///work/config.py"
    lines = DOC.split("\n")
    try:
        status = server.wait_state("error")
        assert "cannot reach" in status["message"] and vllm.url in status["message"], status
        server.open(uri, DOC)
        for _ in range(5):  # keystrokes while it is down: empty at once, no new message
            started = time.monotonic()
            answer = server.inline(uri, len(lines) - 1, len(lines[-1]))
            assert answer["result"]["items"] == []
            assert time.monotonic() - started < 2.0
        shown = [m for m in server.messages_shown() if "cannot reach" in m]
        assert len(shown) == 1, server.messages_shown()

        vllm.start()  # comes up: the server notices by itself
        server.wait_state("ready", timeout=60)
        assert server.inline(uri, len(lines) - 1, len(lines[-1]))["result"]["items"]

        vllm.stop()  # gone while the editor is open
        text = rewrite(server, uri, 2, DOC + "\n\nvalue_a = ")  # a keystroke: a model call
        answer = server.inline(uri, text.count("\n"), len("value_a = "))
        assert answer["result"]["items"] == []
        status = server.wait_state("error", timeout=30)
        assert vllm.url in status["message"], status
        assert server.proc.poll() is None

        vllm.start()  # restarted: suggestions again, nothing done in the editor
        server.wait_state("ready", timeout=60)
        items = server.inline(uri, text.count("\n"), len("value_a = "))["result"]["items"]
        assert items and items[0]["insertText"]
        messages = server.messages_shown()
        assert 1 <= sum("retrying" in m for m in messages) <= 2, messages
    finally:
        server.close()


def test_api_key(own_vllm, remote_checkpoints, monkeypatch) -> None:
    vllm = own_vllm(api_key="s3cret-key").start()
    source = remote_checkpoints[0]
    missing = load_engine(remote_spec(source, vllm.url))
    assert not missing.health().ok
    assert "codegen.apiKeyEnv" in missing.health().message, missing.health()
    missing.close()

    monkeypatch.setenv("CODEGEN_TEST_KEY", "wrong")
    wrong = load_engine(remote_spec(source, vllm.url, api_key_env="CODEGEN_TEST_KEY"))
    message = wrong.health().message
    assert not wrong.health().ok and "$CODEGEN_TEST_KEY was not accepted" in message, message
    assert "wrong" not in message
    wrong.close()

    monkeypatch.setenv("CODEGEN_TEST_KEY", "s3cret-key")
    right = load_engine(remote_spec(source, vllm.url, api_key_env="CODEGEN_TEST_KEY"))
    assert right.health().ok, right.health()
    req = GenerateRequest(key="k", prompt=[1, 2, 3], max_new_tokens=4, ignore_eos=True)
    assert len(right.generate(req, threading.Event()).candidates[0].token_ids) == 4
    assert "s3cret" not in right.health().message + right.description
    right.close()


def test_unknown_model_lists_the_served_ones(vllm, remote_checkpoints) -> None:
    engine = load_engine(remote_spec(remote_checkpoints[0], vllm.url, remote_model="nope"))
    health = engine.health()
    assert not health.ok and "'nope'" in health.message and SERVED in health.message, health
    engine.close()


def test_typing_replay_hits_the_prefix_cache(vllm, remote_checkpoints, tmp_path) -> None:
    settings = {"model": str(remote_checkpoints[0]), "endpoint": vllm.url}
    server = serve(tmp_path, "replay", settings)
    try:
        server.wait_state("ready")
        body = "".join(f"value_{i} = compute(value_{i - 1}, {i})\n" for i in range(1, 40))
        uri = "file:///work/replay.py"
        server.open(uri, body)
        hits, queries = (vllm.metric(f"vllm:prefix_cache_{m}_total") for m in ("hits", "queries"))
        typed = ""
        for version, ch in enumerate("result = compute(value_39, 40)", start=2):
            typed += ch
            rewrite(server, uri, version, body + typed)
            server.inline(uri, body.count("\n"), len(typed))
        new_hits = vllm.metric("vllm:prefix_cache_hits_total") - hits
        new_queries = vllm.metric("vllm:prefix_cache_queries_total") - queries
        assert new_queries > 0 and new_hits / new_queries > 0.5, (new_hits, new_queries)
    finally:
        server.close()


def test_a_superseded_request_is_aborted_on_the_server(vllm, remote_checkpoints, tmp_path):
    settings = {"model": str(remote_checkpoints[0]), "endpoint": vllm.url,
                "maxNewTokens": 900, "multiline": "always", "timeLimitMs": 0}  # fmt: skip
    server = serve(tmp_path, "supersede", settings)
    try:
        server.wait_state("ready")
        uri = "file:///work/long.py"
        server.open(uri, "\n")
        before = vllm.log().count("Aborted request")
        first = server.request("textDocument/inlineCompletion", inline_params(uri, 1, 0))
        wait_until(
            lambda: server.status()["state"] == "generating" or None,
            30,
            "the first request running",
        )
        time.sleep(0.5)  # it streams from vLLM now
        rewrite(server, uri, 2, "\nx")  # a keystroke: a newer request supersedes the first
        second = server.request("textDocument/inlineCompletion", inline_params(uri, 1, 1))
        assert server.wait_response(first, 60)["result"]["items"] == []
        server.wait_response(second, 120)
        wait_until(
            lambda: vllm.log().count("Aborted request") > before or None,
            30,
            lambda: f"'Aborted request' in the vLLM log: {vllm.tail()}",
        )
        assert server.status()["superseded"] >= 1
    finally:
        server.close()
