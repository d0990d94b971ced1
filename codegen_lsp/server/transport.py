"""The byte stream under the protocol: LSP base-protocol frames over stdio or TCP.

pygls' own reader trusts every header: one wrong ``Content-Length`` leaves it out of step
with the stream for good, and a body that is not JSON gets no answer. Here framing is a
small sans-IO parser (:class:`FrameParser`: bytes in, decoded messages or errors out) that
resynchronises on the next ``Content-Length`` header:

- a ``Content-Length`` that is not a number, or is above :data:`MAX_MESSAGE_BYTES`,
  answers a parse error (-32700, id null) and the bytes up to the next header are skipped;
- a body that is not UTF-8 JSON answers a parse error; if the length was too long and the
  body starts with a whole JSON value, that value is handled and the rest is read again as
  the start of the next frame; if it was too short, the bytes left over are skipped up to
  the next header;
- bytes between frames that are not a header, or a header block without
  ``Content-Length``, are skipped (and logged).

:func:`serve_stdio` reads standard input on a thread (parsing there too, so a 5 MB
``didOpen`` never stalls the event loop) and hands messages to the event loop;
:func:`serve_stdio` returns when the client sends ``exit`` or goes away, closes the model
worker and returns the process exit code: 0 after ``shutdown``, 1 otherwise (LSP's rule for
``exit``; a vanished client is treated alike).

:func:`serve_tcp` (loopback unless told otherwise) serves every client that connects, at
the same time, each in a session of its own made by ``new_session`` when its first bytes
arrive: ``exit`` or a vanished client ends that session (its worker is closed, the
connection too), never the listener. A connection that closes without sending anything (a
port check) is no session at all. The process runs until SIGINT or SIGTERM (exit code 0).
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import json
import logging
import os
import re
import signal
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO, Protocol

from codegen_lsp.server.protocol import CodegenProtocol

log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 64 * 2**20  # larger frames are refused (answered -32700) and skipped
MAX_HEADER_BYTES = 64 * 2**10  # a header block longer than this is garbage
READ_CHUNK = 1 << 16

_HEADER_END = b"\r\n\r\n"
_LENGTH = re.compile(rb"content-length[ \t]*:[ \t]*([^\r\n]*)", re.IGNORECASE)
_NAME = b"content-length"


@dataclass
class Frame:
    """One decoded JSON value from a frame body."""

    value: Any


@dataclass
class BadFrame:
    """Bytes that could not be read as a message; ``reply``: answer -32700 (id null)."""

    reason: str
    reply: bool = True


Event = Frame | BadFrame


def _resync_point(data: bytes) -> int:
    """Where the next ``Content-Length`` header (or a prefix of one at the end) starts."""
    lower = data.lower()
    found = lower.find(_NAME)
    if found >= 0:
        return found
    for k in range(min(len(_NAME) - 1, len(data)), 0, -1):
        if lower.endswith(_NAME[:k]):
            return len(data) - k
    return len(data)


class FrameParser:
    """Bytes in, :class:`Frame` / :class:`BadFrame` events out; never out of step for long."""

    def __init__(self, max_bytes: int = MAX_MESSAGE_BYTES) -> None:
        self.max_bytes = max_bytes
        self._buf = bytearray()
        self._length: int | None = None  # body length once a header block was read

    def feed(self, data: bytes) -> list[Event]:
        """Consume ``data``; return the events of every frame it completes."""
        self._buf += data
        events: list[Event] = []
        while True:
            if self._length is None:
                if not self._read_header(events):
                    return events
            elif len(self._buf) >= self._length:
                self._read_body(events)
            else:
                return events

    def _read_header(self, events: list[Event]) -> bool:
        end = self._buf.find(_HEADER_END)
        if end < 0:
            if len(self._buf) > MAX_HEADER_BYTES:  # no header in sight: keep only a tail
                tail = bytes(self._buf[-256:])
                found = tail.lower().rfind(_NAME)  # a header still arriving
                keep = len(tail) - (found if found >= 0 else _resync_point(tail))
                log.warning("skipped %d bytes that are not an LSP header", len(self._buf) - keep)
                del self._buf[: len(self._buf) - keep]
            return False
        block = bytes(self._buf[:end])
        del self._buf[: end + len(_HEADER_END)]
        matches = list(_LENGTH.finditer(block))
        if not matches:
            log.warning("skipped %d bytes without a Content-Length header", len(block) + 4)
            return True
        match = matches[-1]
        if match.start() > 0 and block[: match.start()].strip():
            log.warning("skipped %d bytes before a Content-Length header", match.start())
        value = match.group(1).strip()
        if not value.isdigit():
            events.append(BadFrame(f"invalid Content-Length {value[:40]!r}"))
            return True
        length = int(value) if len(value) <= 18 else self.max_bytes + 1  # int() caps digits
        if length > self.max_bytes:
            limit = self.max_bytes // 2**20
            events.append(BadFrame(f"message of {length} bytes exceeds the {limit} MiB limit"))
            return True
        self._length = length
        return True

    def _read_body(self, events: list[Event]) -> None:
        assert self._length is not None
        body = bytes(self._buf[: self._length])
        self._length = None
        try:
            events.append(Frame(json.loads(body.decode("utf-8"))))
            del self._buf[: len(body)]
            return
        except UnicodeDecodeError as exc:
            problem = f"body is not UTF-8 ({exc.reason} at byte {exc.start})"
        except (ValueError, RecursionError) as exc:  # RecursionError: nested too deeply
            problem = f"body is not JSON ({exc})"
        used, recovered = self._recover(body)
        del self._buf[:used]
        events.append(recovered or BadFrame(problem))

    @staticmethod
    def _recover(body: bytes) -> tuple[int, Frame | None]:
        """How much of a bad body to consume, and the message it starts with, if any: a
        Content-Length too long for its message leaves a whole JSON value at the start
        (handled, the rest is read again); otherwise skip up to the next header."""
        text = body.decode("utf-8", "surrogateescape")
        start = len(text) - len(text.lstrip())
        try:
            value, end = json.JSONDecoder().raw_decode(text, start)
            text[:end].encode("utf-8")  # invalid UTF-8 inside the value: no recovery
        except (ValueError, RecursionError):  # UnicodeEncodeError is a ValueError too
            return _resync_point(body), None
        used = len(text[:end].encode("utf-8"))
        log.warning("Content-Length %d was longer than its message (%d bytes)", len(body), used)
        return used, Frame(value)


class Session(Protocol):
    """What the transport serves: a protocol to feed, and an end."""

    @property
    def protocol(self) -> CodegenProtocol: ...

    def finish(self) -> int:
        """The session is over; the process exit code."""
        ...


class _Writer:
    """The protocol's writer: write and flush; a vanished client ends the session."""

    def __init__(self, write: Callable[[bytes], None], lost: Callable[[], None]) -> None:
        self._write = write
        self._lost = lost
        self.closed = False

    def write(self, data: bytes) -> None:
        if self.closed:
            return
        try:
            self._write(data)
        except (OSError, ValueError, RuntimeError) as exc:  # broken pipe, closed file, ...
            log.warning("cannot write to the client (%s): ending the session", exc)
            self.closed = True
            self._lost()

    def close(self) -> None:
        self.closed = True


async def _deliver(server: Session, events: list[Event]) -> None:
    """Hand events to the protocol in order. After each one the loop runs the handlers it
    started up to their first wait (a settings change marks the model as loading before the
    next message is read), as pygls' own reader does."""
    for event in events:
        try:
            if isinstance(event, Frame):
                server.protocol.receive(event.value)
            else:
                server.protocol.reject(event.reason, reply=event.reply)
        except Exception:  # one message must not cost the others
            log.exception("failed to handle a message")
        await asyncio.sleep(0)


async def _consume(
    server: Session, queue: asyncio.Queue[list[Event] | None], done: asyncio.Event
) -> None:
    """Deliver what the reader queues; None (end of input) ends the session."""
    while (events := await queue.get()) is not None:
        await _deliver(server, events)
    done.set()


def _feed(parser: FrameParser, data: bytes) -> tuple[FrameParser, list[Event]]:
    """``parser.feed(data)``; a parser that fails is replaced (it resynchronises)."""
    try:
        return parser, parser.feed(data)
    except Exception:  # a parser bug must not end the session
        log.exception("framing failed; starting over at the next header")
        return FrameParser(parser.max_bytes), []


def _raw_reader(stream: BinaryIO) -> Callable[[int], bytes]:
    """``read(n)`` on the file descriptor when there is one: a thread blocked in a buffered
    object's read holds its lock, which aborts the interpreter at exit."""
    try:
        fd = stream.fileno()
    except (OSError, ValueError, AttributeError):
        return getattr(stream, "read1", stream.read)
    return lambda n: os.read(fd, n)


def serve_stdio(server: Session, stdin: BinaryIO, stdout: BinaryIO) -> int:
    """Serve one client over a pair of pipes; return the exit code."""

    def write(data: bytes) -> None:
        stdout.write(data)
        stdout.flush()

    async def run() -> int:
        loop = asyncio.get_running_loop()
        done = asyncio.Event()
        queue: asyncio.Queue[list[Event] | None] = asyncio.Queue()
        server.protocol.set_writer(_Writer(write, done.set))
        server.protocol.on_exit = done.set

        def pump() -> None:
            parser = FrameParser()
            read = _raw_reader(stdin)
            while True:
                try:
                    data = read(READ_CHUNK)
                except (OSError, ValueError):
                    data = b""
                try:
                    if not data:
                        loop.call_soon_threadsafe(queue.put_nowait, None)
                        return
                    parser, events = _feed(parser, data)
                    if events:
                        loop.call_soon_threadsafe(queue.put_nowait, events)
                except RuntimeError:  # the loop is closed: the session is over
                    return

        threading.Thread(target=pump, name="codegen-stdin", daemon=True).start()
        consumer = asyncio.ensure_future(_consume(server, queue, done))
        await done.wait()
        consumer.cancel()
        return server.finish()

    return asyncio.run(run())


def serve_tcp(new_session: Callable[[], Session], host: str, port: int) -> int:
    """Listen on ``host:port`` until SIGINT or SIGTERM; every connection is a session of its
    own (its own documents, settings, lifecycle and model); return the exit code (0)."""

    async def run() -> int:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        open_connections: dict[asyncio.Task[None], asyncio.StreamWriter] = {}
        numbers = itertools.count(1)

        async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            open_connections[task] = writer
            try:
                await _serve_connection(new_session, numbers, reader, writer)
            finally:
                del open_connections[task]

        listener = await asyncio.start_server(connection, host, port)
        bound = listener.sockets[0].getsockname()
        log.info("listening on %s:%d", bound[0], bound[1])
        async with listener:
            await stop.wait()
            log.info("stopping: %d connection(s) open", len(open_connections))
            listener.close()
            for writer in list(open_connections.values()):
                writer.close()  # their reads end; each session finishes
            await asyncio.gather(*open_connections, return_exceptions=True)
        return 0

    return asyncio.run(run())


async def _serve_connection(
    new_session: Callable[[], Session],
    numbers: Iterator[int],
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
) -> None:
    """One TCP client from connect to close. The session starts with the first bytes (a
    port check that connects and closes costs nothing); it ends with ``exit`` (the
    connection is closed) or when the client goes away."""
    peer = writer.get_extra_info("peername")
    session: Session | None = None
    name = f"a connection from {peer}"
    parser = FrameParser()
    try:
        while data := await reader.read(READ_CHUNK):
            if session is None:
                session, name = new_session(), f"client {next(numbers)}"
                session.protocol.set_writer(_Writer(writer.write, writer.close))
                session.protocol.on_exit = writer.close  # the read below then ends
                log.info("%s connected from %s", name, peer)
            parser, events = _feed(parser, data)
            await _deliver(session, events)
    except (OSError, asyncio.IncompleteReadError) as exc:
        log.warning("%s: connection lost: %s", name, exc)
    finally:
        writer.close()
    if session is None:
        log.info("%s closed before sending anything", name)
        return
    # Stopping the worker may wait for a decode step: not on the loop other clients share.
    code = await asyncio.get_running_loop().run_in_executor(None, session.finish)
    del session
    gc.collect()  # a server and its model hold reference cycles: free the model now
    log.info("%s: session over (exit code %d); still listening", name, code)
