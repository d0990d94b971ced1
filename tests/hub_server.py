"""A Hugging Face Hub look-alike on 127.0.0.1 for download tests.

It answers what ``huggingface_hub`` and :mod:`codegen_lsp.codegen.download` ask: the model
info API (``/api/models/ORG/NAME[/revision/REV]``: ``id``, ``sha``, ``siblings``) and
``HEAD``/``GET /ORG/NAME/resolve/REV/FILE`` with ``ETag`` (SHA-256 for weights, as for the
hub's LFS files, with ``X-Linked-Etag``/``X-Linked-Size``; git's blob SHA-1 for the others),
``X-Repo-Commit``, ``Accept-Ranges`` and ``Range`` (206 with ``Content-Range``). Errors carry
the hub's ``X-Error-Code`` (``RepoNotFound``, ``RevisionNotFound``, ``EntryNotFound``).

For tests it records every request (method, path, ``Range``), can pause between chunks
(``delay_s``: a download that stays in flight), can cut a file's body at a byte offset
(``cut[name] = offset``: the connection is dropped there, ``cuts_left`` times, or always
with ``None``), and counts the body bytes it sent.
"""

from __future__ import annotations

import hashlib
import json
import re
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

LFS_SUFFIXES = (".safetensors", ".bin")
CHUNK = 64 * 1024


@dataclass
class Repo:
    """One model repository at one commit."""

    repo_id: str
    files: dict[str, bytes]
    commit: str = "0123456789abcdef0123456789abcdef01234567"

    def etag(self, name: str) -> str:
        data = self.files[name]
        if name.endswith(LFS_SUFFIXES):
            return hashlib.sha256(data).hexdigest()
        return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Request:
    method: str
    path: str
    range: str | None


@dataclass
class FakeHub:
    """The server's state; :meth:`start` serves it on a free loopback port."""

    repos: dict[str, Repo] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    delay_s: float = 0.0
    cut: dict[str, int] = field(default_factory=dict)
    cuts_left: int | None = None
    sent: int = 0
    url: str = ""

    def add(self, repo_id: str, directory: Path) -> Repo:
        """Serve the files of ``directory`` as ``repo_id``."""
        files = {f.name: f.read_bytes() for f in sorted(directory.iterdir()) if f.is_file()}
        self.repos[repo_id] = Repo(repo_id, files)
        return self.repos[repo_id]

    def gets(self, name: str) -> list[Request]:
        """The GET requests for file ``name``."""
        return [r for r in self.requests if r.method == "GET" and r.path.endswith("/" + name)]

    def start(self) -> FakeHub:
        hub = self

        class Handler(_Handler):
            state = hub

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


_INFO = re.compile(r"/api/models/([^/]+/[^/]+?)(?:/revision/([^/?]+))?(?:\?.*)?$")
_RESOLVE = re.compile(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)$")


class _Handler(BaseHTTPRequestHandler):
    state: FakeHub
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def do_HEAD(self) -> None:  # http.server's naming
        self._answer(body=False)

    def do_GET(self) -> None:
        self._answer(body=True)

    def _answer(self, body: bool) -> None:
        hub = self.state
        hub.requests.append(Request(self.command, self.path, self.headers.get("Range")))
        info = _INFO.match(self.path)
        if info:
            repo = hub.repos.get(info.group(1))
            if repo is None:
                return self._error(404, "RepoNotFound", "Repository not found")
            if info.group(2) not in (None, "main", repo.commit):
                return self._error(404, "RevisionNotFound", "Revision not found")
            data = {
                "id": repo.repo_id,
                "modelId": repo.repo_id,
                "sha": repo.commit,
                "private": False,
                "siblings": [{"rfilename": name} for name in repo.files],
            }
            return self._send(200, json.dumps(data).encode(), {"Content-Type": "application/json"})
        resolve = _RESOLVE.match(self.path)
        repo = hub.repos.get(resolve.group(1)) if resolve else None
        if resolve is None or repo is None:
            return self._error(404, "RepoNotFound", "Repository not found")
        if resolve.group(2) not in ("main", repo.commit):
            return self._error(404, "RevisionNotFound", "Revision not found")
        name = resolve.group(3)
        if name not in repo.files:
            return self._error(404, "EntryNotFound", "Entry not found")
        self._file(repo, name, body)

    def _file(self, repo: Repo, name: str, body: bool) -> None:
        data, etag = repo.files[name], repo.etag(name)
        headers = {
            "ETag": f'"{etag}"',
            "X-Repo-Commit": repo.commit,
            "Accept-Ranges": "bytes",
            "Content-Type": "application/octet-stream",
        }
        if name.endswith(LFS_SUFFIXES):
            headers.update({"X-Linked-Etag": f'"{etag}"', "X-Linked-Size": str(len(data))})
        start, status = 0, 200
        wanted = self.headers.get("Range")
        if wanted:
            found = re.fullmatch(r"bytes=(\d+)-(\d*)", wanted.strip())
            if found is None or int(found.group(1)) >= len(data):
                headers["Content-Range"] = f"bytes */{len(data)}"
                return self._send(416, b"", headers)
            start, status = int(found.group(1)), 206
            end = int(found.group(2)) + 1 if found.group(2) else len(data)
            data = data[:end]
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{len(repo.files[name])}"
        if not body:
            self.send_response(status)
            for key, value in {**headers, "Content-Length": str(len(data) - start)}.items():
                self.send_header(key, value)
            self.end_headers()
            return
        self._stream(name, data, start, status, headers)

    def _stream(
        self, name: str, data: bytes, start: int, status: int, headers: dict[str, str]
    ) -> None:
        hub = self.state
        cut = hub.cut.get(name)
        if cut is not None and hub.cuts_left is not None:
            if hub.cuts_left <= 0:
                cut = None
            else:
                hub.cuts_left -= 1
        self.send_response(status)
        for key, value in {**headers, "Content-Length": str(len(data) - start)}.items():
            self.send_header(key, value)
        self.end_headers()
        position = start
        while position < len(data):
            stop = min(position + CHUNK, len(data))
            if cut is not None:
                stop = min(stop, cut) if position < cut else position
            if stop <= position:  # the cut: drop the connection mid-body
                self.wfile.flush()
                self.connection.shutdown(socket.SHUT_RDWR)
                self.close_connection = True
                return
            self.wfile.write(data[position:stop])
            hub.sent += stop - position
            position = stop
            if hub.delay_s:
                self.wfile.flush()
                threading.Event().wait(hub.delay_s)

    def _error(self, status: int, code: str, message: str) -> None:
        body = json.dumps({"error": message}).encode()
        self._send(status, body, {"X-Error-Code": code, "Content-Type": "application/json"})

    def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for key, value in {**headers, "Content-Length": str(len(body))}.items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
