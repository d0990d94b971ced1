"""Fuzzing the protocol surface: malformed frames, envelopes, params and text, over stdio.

One server (the tiny ``steady`` model) takes every property's examples as raw frames; each
example ends with a ``codegen/status`` sentinel request, and the answers up to the
sentinel's must be exactly the ones JSON-RPC and LSP ask for (-32700 for unreadable bytes,
-32600 for invalid envelopes, -32601 for unknown methods, -32602 for params of the wrong
type, nothing for notifications). Each property ends with a real inlineCompletion that
must still produce the steady model's text. A second server checks the lifecycle rules
(-32002 before ``initialize``, -32600 after ``shutdown``).

Examples per property: ``CODEGEN_LSP_FUZZ_EXAMPLES`` (default 40; the long run used 1000+).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from raw_lsp import RawServer, frame
from support import codegen_settings

from codegen_lsp.server.transport import Frame, FrameParser

EXAMPLES = int(os.environ.get("CODEGEN_LSP_FUZZ_EXAMPLES", "40"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
HOME = "file:///fuzz/home.py"
HOME_TEXT = "import os\nvalue = valu"
SENTINEL_IDS = iter(range(10**6, 10**7))
ERROR_CODES = {-32700, -32600, -32601, -32602, -32002}


@pytest.fixture(scope="module")
def server(steady_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    log = tmp_path_factory.mktemp("fuzz") / "server.log"
    srv = RawServer(log)
    srv.initialize(codegen_settings(steady_checkpoint, maxNewTokens=4))
    srv.open(HOME, HOME_TEXT)
    yield srv
    assert srv.close() == 0
    assert not srv.stdout_errors, srv.stdout_errors
    assert "Traceback" not in srv.log(), srv.log()[-3000:]


@pytest.fixture(autouse=True)
def serving_after_each_batch(request: pytest.FixtureRequest) -> Iterator[None]:
    """After each test (a batch of examples): a real inlineCompletion still works."""
    yield
    if "server" in request.fixturenames:
        still_serving(request.getfixturevalue("server"))


def answers_after(server: RawServer, data: bytes, wait_for: Any = None) -> list[dict[str, Any]]:
    """Write ``data`` then a sentinel request; the answers before the sentinel's (and the
    answer to ``wait_for``, which may come after it: inline requests run on the model)."""
    sentinel = next(SENTINEL_IDS)
    server.send_raw(data + frame({"jsonrpc": "2.0", "id": sentinel, "method": "codegen/status"}))
    answers = server.responses_until(sentinel)
    assert "result" in answers[-1], answers[-1]
    answers = answers[:-1]
    if wait_for is not None and not any(a["id"] == wait_for for a in answers):
        answers.append(server.wait_response(wait_for))
    return answers


def error_codes(answers: list[dict[str, Any]]) -> list[tuple[Any, int]]:
    return [(a["id"], a["error"]["code"]) for a in answers if "error" in a]


def still_serving(server: RawServer) -> None:
    """A real inlineCompletion still produces the steady model's text."""
    items = server.inline(HOME, 1, len("value = valu"))["result"]["items"]
    assert items and items[0]["insertText"].startswith("valu") and " 0" in items[0]["insertText"]


# --- bytes ----------------------------------------------------------------------------------
not_json = st.one_of(
    st.binary(min_size=1, max_size=300),
    st.text(max_size=200).map(lambda t: ("{" + t).encode("utf-8", "surrogatepass")),
    st.sampled_from([b"{", b"}", b"[1,", b'{"jsonrpc": "2.0", "id": 1,', b"\xff\xfe{}", b"nul"]),
).filter(lambda b: b"content-length" not in b.lower() and not _is_json(b))


def _is_json(data: bytes) -> bool:
    try:
        json.loads(data.decode("utf-8"))
    except ValueError:
        return False
    return True


@FUZZ
@given(body=not_json)
def test_bodies_that_are_not_json(server: RawServer, body: bytes) -> None:
    codes = error_codes(answers_after(server, frame(body)))
    # A body that starts with a JSON value is read as that value (a Content-Length too
    # long for its message): then the value is judged, as any other message.
    assert len(codes) == 1 and codes[0][0] is None and codes[0][1] in (-32700, -32600), codes


bad_length = st.one_of(
    st.sampled_from(["abc", "-5", "1e3", "", " ", "0x10", "12 34", "+7", "9" * 5000]),
    st.integers(64 * 2**20 + 1, 2**70).map(str),
)


@FUZZ
@given(value=bad_length, body=st.binary(max_size=100))
def test_bad_content_length_headers(server: RawServer, value: str, body: bytes) -> None:
    body = body.replace(b"\r\n\r\n", b"").replace(b"C", b"c")  # no header inside the body
    data = b"Content-Length: " + value.encode() + b"\r\n\r\n" + body
    assert error_codes(answers_after(server, data)) == [(None, -32700)]


@FUZZ
@given(extra=st.integers(1, 60), header=st.sampled_from([b"", b"Content-Type: x\r\n"]))
def test_content_length_too_long_recovers_the_message(
    server: RawServer, extra: int, header: bytes
) -> None:
    body = json.dumps({"jsonrpc": "2.0", "id": "long", "method": "codegen/status"}).encode()
    data = header + b"Content-Length: %d\r\n\r\n" % (len(body) + extra) + body
    answers = answers_after(server, data)
    assert [a["id"] for a in answers] == ["long"] and "result" in answers[0]


@FUZZ
@given(cut=st.integers(1, 40))
def test_content_length_too_short(server: RawServer, cut: int) -> None:
    body = json.dumps({"jsonrpc": "2.0", "id": "short", "method": "codegen/status"}).encode()
    data = b"Content-Length: %d\r\n\r\n" % (len(body) - cut) + body
    assert error_codes(answers_after(server, data)) == [(None, -32700)]
    still_serving(server)


def test_invalid_utf8_and_oversized_frames(server: RawServer) -> None:
    item = b'{"uri": "file:///fuzz/bad.py", "languageId": "python", "version": 1, "text": "\xff"}'
    body = b'{"jsonrpc": "2.0", "method": "textDocument/didOpen", "params": {"textDocument": '
    assert error_codes(answers_after(server, frame(body + item + b"}}"))) == [(None, -32700)]
    answers = answers_after(server, b"Content-Length: %d\r\n\r\n" % (65 * 2**20) + b"{}")
    assert error_codes(answers) == [(None, -32700)]
    deep = b'{"jsonrpc": "2.0", "id": "deep", "method": "x", "params": ' + b"[" * 100_000
    assert error_codes(answers_after(server, frame(deep))) == [(None, -32700)]
    garbage = b"x" * 200_000 + frame({"jsonrpc": "2.0", "id": "after", "method": "codegen/status"})
    assert [a["id"] for a in answers_after(server, garbage)] == ["after"]
    long_uri = "file:///" + "u" * 1_000_000  # a 1 MB string where a URI goes
    assert server.inline(long_uri, 0, 0)["result"]["items"] == []
    huge = "x = 1\n" * 400_000  # 2.4 MB of text is fine
    server.open("file:///fuzz/huge.py", huge + "y = valu")
    assert server.inline("file:///fuzz/huge.py", 400_000, 8)["result"]["items"]
    still_serving(server)


param_values = st.one_of(st.none(), st.integers(), st.text(max_size=30))
messages = st.lists(
    st.dictionaries(st.text(max_size=5), param_values, max_size=3).map(
        lambda params: {"jsonrpc": "2.0", "method": "m", "params": params}
    ),
    min_size=1,
    max_size=6,
)


@FUZZ
@given(
    batch=messages,
    cuts=st.lists(st.integers(0, 2000), max_size=8),
    garbage=st.binary(max_size=40).filter(lambda b: b"\r\n" not in b and b"ength" not in b),
)
def test_frame_parser_in_any_chunks(batch: list[Any], cuts: list[int], garbage: bytes) -> None:
    """The parser alone: frames split at any points, stray bytes between them, all found."""
    stream = b"".join(garbage + frame(m) for m in batch)
    parser, events = FrameParser(), []
    start = 0
    for cut in sorted({min(c, len(stream)) for c in cuts}) + [len(stream)]:
        events += parser.feed(stream[start:cut])
        start = cut
    assert [e.value for e in events if isinstance(e, Frame)] == batch
    assert not [e for e in events if not isinstance(e, Frame)]


# --- envelopes ------------------------------------------------------------------------------
MISSING = object()
json_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False))
json_values = st.recursive(
    json_scalars | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=8,
)
METHODS = ["foo/bar", "$/unknown", "codegen/status", "textDocument/hover", "initialize"]


@st.composite
def envelopes(draw: st.DrawFn) -> Any:
    if draw(st.integers(0, 9)) == 0:
        return draw(st.one_of(json_scalars, st.lists(json_values, max_size=3)))
    parts = {
        "jsonrpc": draw(st.sampled_from(["2.0", "2.0", "2.0", "1.0", 2, None, MISSING])),
        "id": draw(st.sampled_from([MISSING, 7, "abc", 1.5, None, True, [1], {"a": 1}])),
        "method": draw(st.sampled_from([*METHODS, MISSING, 5, None])),
        "params": draw(st.one_of(st.just(MISSING), json_values)),
        "result": draw(st.sampled_from([MISSING, MISSING, MISSING, 1])),
    }
    return {k: v for k, v in parts.items() if v is not MISSING}


def expected(value: Any) -> list[tuple[Any, int | str]]:
    """The answers JSON-RPC and LSP ask for, as (id, error code or "result")."""
    if not isinstance(value, dict):
        return [(None, -32600)]
    method, has_id = value.get("method"), "id" in value
    if method is None and has_id and "result" in value:
        return []  # a response to a request the server never sent: dropped
    msg_id = value.get("id")
    valid_id = isinstance(msg_id, str | int) and not isinstance(msg_id, bool)
    params = value.get("params")
    bad = (
        value.get("jsonrpc") != "2.0"
        or not isinstance(method, str)
        or (has_id and not valid_id)
        or (params is not None and not isinstance(params, dict | list))
    )
    if bad:
        return [(msg_id if valid_id else None, -32600)] if has_id or method is None else []
    if not has_id:
        return []
    if method == "initialize":
        return [(msg_id, -32600)]  # already initialized
    if method in ("foo/bar", "$/unknown"):
        return [(msg_id, -32601)]
    if method == "codegen/status":
        return [(msg_id, "result")]
    return [(msg_id, -32602)]  # hover: params never fit (no textDocument with a uri)


@FUZZ
@given(value=envelopes())
def test_envelopes(server: RawServer, value: Any) -> None:
    answers = answers_after(server, frame(json.dumps(value).encode()))
    got = [(a["id"], a["error"]["code"] if "error" in a else "result") for a in answers]
    assert got == expected(value), (value, answers)


# --- params ---------------------------------------------------------------------------------
integers = st.one_of(st.integers(-3, 40), st.integers(-(2**40), 2**40), st.sampled_from([2**31]))
wrong = st.one_of(integers, st.text(max_size=5), st.none(), st.lists(st.integers(), max_size=2))


@st.composite
def positions(draw: st.DrawFn) -> Any:
    if draw(st.booleans()):
        return {"line": draw(integers), "character": draw(integers)}
    return draw(st.one_of(wrong, st.dictionaries(st.sampled_from(["line", "character"]), wrong)))


@FUZZ
@given(
    method=st.sampled_from(
        ["textDocument/inlineCompletion", "textDocument/completion", "textDocument/hover"]
    ),
    uri=st.sampled_from([HOME, "file:///fuzz/never-opened.py", "not a uri", 5]),
    position=positions(),
)
def test_position_params(server: RawServer, method: str, uri: Any, position: Any) -> None:
    params = {"textDocument": {"uri": uri}, "position": position, "context": {"triggerKind": 1}}
    msg_id = f"p{next(SENTINEL_IDS)}"
    request = {"jsonrpc": "2.0", "id": msg_id, "method": method, "params": params}
    answers = answers_after(server, frame(request), wait_for=msg_id)
    assert len(answers) == 1 and answers[0]["id"] == msg_id, answers
    if "error" in answers[0]:
        assert answers[0]["error"]["code"] == -32602, answers  # never an internal error


text_with_surrogates = st.text(
    st.characters(codec=None, exclude_categories=()), max_size=200
) | st.text(max_size=50).map(lambda t: t + "\ud800" + t + "\udfff")


@FUZZ
@given(
    text=text_with_surrogates,
    change=text_with_surrogates,
    start=st.tuples(integers, integers),
    end=st.tuples(integers, integers),
    where=st.tuples(st.integers(0, 5), st.integers(0, 300)),
)
def test_document_text_and_edits(
    server: RawServer, text: str, change: str, start: tuple[int, int], end: tuple[int, int],
    where: tuple[int, int],
) -> None:  # fmt: skip
    uri = "file:///fuzz/edited.py"
    server.open(uri, text)
    rng = {
        "start": {"line": start[0], "character": start[1]},
        "end": {"line": end[0], "character": end[1]},
    }
    doc = {"uri": uri, "version": 2}
    change_params = {"textDocument": doc, "contentChanges": [{"range": rng, "text": change}]}
    server.notify("textDocument/didChange", change_params)
    answers = answers_after(server, b"")
    assert not answers, answers  # a change with an invalid range is dropped, never answered
    answer = server.inline(uri, *where)
    assert "result" in answer, answer
    server.notify("textDocument/didClose", {"textDocument": {"uri": uri}})


@FUZZ
@given(
    method=st.sampled_from(
        ["textDocument/didChange", "textDocument/didClose", "textDocument/didSave", "foo/note"]
    ),
    uri=st.sampled_from(["file:///fuzz/closed.py", "file:///fuzz/other.py", ""]),
)
def test_notifications_for_unknown_documents(server: RawServer, method: str, uri: str) -> None:
    params = {
        "textDocument": {"uri": uri, "version": 3},
        "contentChanges": [{"text": "replaced"}],
    }
    assert not answers_after(server, frame({"jsonrpc": "2.0", "method": method, "params": params}))
    answer = server.inline(uri or "file:///fuzz/empty", 0, 3)
    assert answer["result"]["items"] == []
    still_serving(server)


# --- lifecycle ------------------------------------------------------------------------------
def uninitialized_server(directory: Path) -> Iterator[RawServer]:
    """A server that was sent nothing yet; killed afterwards if it still runs."""
    srv = RawServer(directory / "server.log")
    yield srv
    if srv.proc.poll() is None:
        srv.proc.kill()
        srv.proc.wait()


@pytest.fixture(scope="module")
def uninitialized(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RawServer]:
    """One server for every example before ``initialize`` (no test initializes it)."""
    yield from uninitialized_server(tmp_path_factory.mktemp("uninitialized"))


@pytest.fixture
def fresh(tmp_path: Path) -> Iterator[RawServer]:
    """A server of this test's own, to take through its whole lifecycle."""
    yield from uninitialized_server(tmp_path)


@settings(max_examples=min(EXAMPLES, 25), deadline=None, database=None)
@given(method=st.sampled_from(["codegen/status", "textDocument/hover", "shutdown", "foo/bar"]))
def test_requests_before_initialize(uninitialized: RawServer, method: str) -> None:
    uninitialized.notify("textDocument/didOpen", {"textDocument": {"uri": "f", "text": "x"}})
    answer = uninitialized.call(method, {})
    assert answer["error"]["code"] == -32002


def test_lifecycle_after_initialize(fresh: RawServer) -> None:
    fresh.initialize(codegen_settings("/nonexistent/model"), wait_for="error")
    assert fresh.call("initialize", {"capabilities": {}})["error"]["code"] == -32600
    assert "result" in fresh.call("shutdown")
    assert fresh.call("codegen/status")["error"]["code"] == -32600
    fresh.notify("exit")
    assert fresh.proc.wait(10) == 0
