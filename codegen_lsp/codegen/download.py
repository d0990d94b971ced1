"""Fetch a hub checkpoint into the Hugging Face cache: visibly, resumably, cancellably.

:func:`download` lists a repository's files (``HfApi.model_info``), picks what a CodeGen load
reads (:func:`wanted_files`), asks the hub for each file's size and ETag (a HEAD on its
``resolve`` URL) and streams each one over plain HTTP into ``blobs/<etag>.incomplete`` in the
cache. That partial file has a fixed name and is kept when the connection breaks, the caller
cancels or the process dies, so the next call goes on from where it stopped (an HTTP Range
request). A finished file is checked (size, and its SHA-256 or git blob SHA-1 when the ETag
is one) and renamed into ``blobs/<etag>``; only when every file is there are the
``snapshots/<commit>/`` links and ``refs/<revision>`` written, so an interrupted download
never looks like a complete snapshot to ``snapshot_download(local_files_only=True)``.

Progress goes to a callback as a :class:`DownloadState` (bytes, percent, rate), at most every
:data:`REPORT_EVERY_S` plus once per event (a file starts, resumes, retries, ends); a
``threading.Event`` or an exception raised by the callback stops the download between two
chunks. The hub is the one ``huggingface_hub`` is configured for (``HF_ENDPOINT``, ``HF_TOKEN``,
``HF_HUB_CACHE``/``HF_HOME``, ``HF_HUB_OFFLINE``). No torch here: ``codegen-lsp pull`` runs
without it. Every failure is one :class:`DownloadError` line.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import re
import shutil
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

# What a load reads: config and tokenizer files, weights, and modeling_*.py (read as text for
# its qkv shard count, never run). Weights: the safetensors files when there are any, else
# pytorch_model*.bin (a repository holding both needs only one copy).
PATTERNS = ("*.json", "*.safetensors", "*.txt", "*.bin", "modeling_*.py")
REPORT_EVERY_S = 0.25
RETRIES = 3  # reconnections after a broken connection that made no progress since the last
RETRY_WAIT_S = 0.25  # doubled at each retry
_HEX = re.compile(r"[0-9a-f]+")


class DownloadError(Exception):
    """A download that could not finish; the message is one line for the user."""


class Cancelled(DownloadError):
    """The caller stopped the download (the partial file stays for a later resume)."""


@dataclass(frozen=True)
class RemoteFile:
    """One file to fetch: its name in the repository, size, ETag (the blob's name) and URL."""

    name: str
    size: int
    etag: str
    url: str


@dataclass
class DownloadState:
    """Where a download stands; what the progress callback receives."""

    repo_id: str
    total: int = 0  # bytes of every wanted file
    done: int = 0  # bytes on disk so far (files already cached, resumed parts included)
    file: str = ""  # the file being fetched
    files: int = 0
    files_done: int = 0
    note: str = ""  # set for one call when something happens: resumed, retrying, cached
    started: float = field(default_factory=time.monotonic)
    fetched: int = 0  # bytes received by this call (the rate's numerator)

    @property
    def percent(self) -> int:
        """Percent of the bytes on disk (100 for nothing to fetch)."""
        return 100 if self.total <= 0 else min(100, self.done * 100 // self.total)

    @property
    def rate(self) -> float:
        """Bytes per second received by this call."""
        return self.fetched / max(time.monotonic() - self.started, 1e-6)

    def describe(self) -> str:
        """``120.5 MB of 797.0 MB (15%), 11.2 MB/s``."""
        return (
            f"{megabytes(self.done)} of {megabytes(self.total)} MB ({self.percent}%), "
            f"{megabytes(int(self.rate))} MB/s"
        )


ProgressCallback = Callable[[DownloadState], None]


def megabytes(count: int) -> str:
    """Bytes as megabytes with one decimal."""
    return f"{count / 1e6:.1f}"


def wanted_files(names: Iterable[str]) -> list[str]:
    """The files of a repository that a load reads (see :data:`PATTERNS`), sorted."""
    chosen = [n for n in names if any(fnmatch.fnmatch(n.split("/")[-1], p) for p in PATTERNS)]
    if any(n.endswith(".safetensors") for n in chosen):
        return sorted(n for n in chosen if not n.endswith(".bin"))
    return sorted(n for n in chosen if not n.endswith(".bin") or "pytorch_model" in n)


def cache_folder(repo_id: str, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The repository's folder in the Hugging Face cache (``models--Org--Name``)."""
    from huggingface_hub import constants

    root = Path(cache_dir if cache_dir is not None else constants.HF_HUB_CACHE)
    return root / ("models--" + repo_id.replace("/", "--"))


def download(
    repo_id: str,
    revision: str | None = None,
    *,
    progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> Path:
    """Fetch what a load of ``repo_id`` reads into the cache; the snapshot directory."""
    commit, files = list_files(repo_id, revision)
    storage = cache_folder(repo_id, cache_dir)
    state = DownloadState(repo_id, total=sum(f.size for f in files), files=len(files))
    stop = cancel or threading.Event()
    fetcher = _Fetcher(storage, state, progress, stop)
    snapshot = storage / "snapshots" / commit
    for remote in files:
        fetcher.fetch(remote, snapshot / remote.name)
    for remote in files:
        _link(storage / "blobs" / remote.etag, snapshot / remote.name)
    ref = storage / "refs" / (revision or "main")
    ref.parent.mkdir(parents=True, exist_ok=True)
    written = ref.with_name(f".{ref.name}.{os.getpid()}")
    written.write_text(commit, encoding="utf-8")
    os.replace(written, ref)  # a reader never sees it half written
    state.file, state.note = "", "done"
    fetcher.report(force=True)
    return snapshot


def list_files(repo_id: str, revision: str | None = None) -> tuple[str, list[RemoteFile]]:
    """The commit that ``revision`` names and the files to fetch, with sizes and ETags."""
    from huggingface_hub import HfApi, get_hf_file_metadata, hf_hub_url

    try:
        info = HfApi().model_info(repo_id, revision=revision)
        commit = info.sha
        names = wanted_files(s.rfilename for s in info.siblings or [])
        if not commit:
            raise DownloadError(f"{repo_id}: the hub gave no commit for {revision or 'main'}")
        files = []
        for name in names:
            meta = get_hf_file_metadata(hf_hub_url(repo_id, name, revision=commit))
            if meta.etag is None or meta.size is None:
                raise DownloadError(f"{repo_id}/{name}: the hub gave no ETag or size for it")
            files.append(RemoteFile(name, meta.size, meta.etag, meta.location))
    except DownloadError:
        raise
    except Exception as exc:  # noqa: BLE001 - every hub failure is one line for the user
        raise DownloadError(hub_problem(repo_id, exc)) from None
    if not any(n.endswith((".safetensors", ".bin")) for n in names):
        raise DownloadError(f"{repo_id}: no weights in the repository ({', '.join(names)})")
    return commit, files


def hub_problem(repo_id: str, exc: Exception) -> str:
    """One line saying why the hub did not answer for ``repo_id``."""
    from huggingface_hub import constants
    from huggingface_hub import errors as hf

    where = constants.ENDPOINT
    if isinstance(exc, hf.OfflineModeIsEnabled) or constants.HF_HUB_OFFLINE:
        return f"{repo_id}: HF_HUB_OFFLINE is set; unset it to download"
    if isinstance(exc, hf.GatedRepoError):
        return f"{repo_id}: gated on {where}; accept its terms there and log in (hf auth login)"
    if isinstance(exc, hf.RepositoryNotFoundError):
        return f"{repo_id}: no such model on {where} (check the name; a private one needs a login)"
    if isinstance(exc, hf.RevisionNotFoundError):
        return f"{repo_id}: no such revision on {where}"
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return f"{repo_id}: cannot reach {where} ({first})"


class _Fetcher:
    """Streams files into the cache's blobs folder for one :func:`download` call."""

    def __init__(
        self,
        storage: Path,
        state: DownloadState,
        progress: ProgressCallback | None,
        cancel: threading.Event,
    ) -> None:
        self.storage, self.state, self.progress, self.cancel = storage, state, progress, cancel
        self.reported_at = 0.0

    def report(self, force: bool = False) -> None:
        """Call the progress callback (at most every REPORT_EVERY_S unless ``force``)."""
        now = time.monotonic()
        if self.progress is not None and (force or now - self.reported_at >= REPORT_EVERY_S):
            self.reported_at = now
            self.progress(self.state)
        self.state.note = ""

    def check(self) -> None:
        if self.cancel.is_set():
            raise Cancelled(f"{self.state.repo_id}: download cancelled")

    def fetch(self, remote: RemoteFile, pointer: Path) -> None:
        """Fetch one file into ``blobs/<etag>`` unless it is in the cache already (as that
        blob, or as ``pointer``, its place in the snapshot)."""
        from filelock import FileLock, Timeout

        blobs = self.storage / "blobs"
        blob = blobs / remote.etag
        state = self.state
        state.file = remote.name
        if any(f.is_file() and f.stat().st_size == remote.size for f in (pointer, blob)):
            state.done += remote.size
            state.files_done += 1
            state.note = "cached"
            self.report(force=True)
            return
        blobs.mkdir(parents=True, exist_ok=True)
        locks = self.storage.parent / ".locks" / self.storage.name
        locks.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(locks / f"{remote.etag}.lock"))  # huggingface_hub's own lock
        while True:
            self.check()
            try:
                lock.acquire(timeout=0.5)
                break
            except Timeout:
                state.note = "waiting for another download of this file"
                self.report()
        try:
            start = state.done
            if not blob.is_file():
                self._stream(remote, blob, start)
            state.done = start + remote.size
            state.files_done += 1
            self.report(force=True)
        finally:
            lock.release()

    def _stream(self, remote: RemoteFile, blob: Path, start: int) -> None:
        import httpx2
        from huggingface_hub import constants
        from huggingface_hub.utils import build_hf_headers

        partial = blob.with_name(blob.name + ".incomplete")
        have = partial.stat().st_size if partial.is_file() else 0
        if have > remote.size:
            have = 0
        digest = _Digest(remote.etag, remote.size)
        with open(partial, "ab" if have else "wb") as out:
            if have:
                digest.update_from(partial, have)
                self.state.note = f"resuming at {megabytes(have)} MB"
            self.state.done = start + have
            self.report(force=True)
            headers = build_hf_headers()
            if urlsplit(remote.url).netloc != urlsplit(constants.ENDPOINT).netloc:
                headers.pop("authorization", None)  # a signed CDN URL; the token stays home
            timeout = httpx2.Timeout(constants.HF_HUB_DOWNLOAD_TIMEOUT, connect=10.0)
            retries = RETRIES
            with httpx2.Client(follow_redirects=True, timeout=timeout) as client:
                while have < remote.size:
                    self.check()
                    before = have
                    try:
                        have = self._get(client, remote, headers, have, out, digest, start)
                    except (httpx2.TransportError, OSError) as exc:
                        if isinstance(exc, OSError) and not isinstance(exc, ConnectionError):
                            raise DownloadError(f"{partial}: cannot write ({exc})") from None
                        out.flush()
                        have = out.tell()  # every byte written is in the digest too
                        retries = RETRIES if have > before else retries - 1
                        if retries < 0:
                            raise DownloadError(
                                f"{self.state.repo_id}/{remote.name}: connection lost at "
                                f"{megabytes(have)} of {megabytes(remote.size)} MB ({exc}); "
                                "the part is kept: run again to resume"
                            ) from None
                        self.state.note = f"connection lost ({exc}); resuming"
                        self.report(force=True)
                        if self.cancel.wait(RETRY_WAIT_S * 2 ** (RETRIES - retries)):
                            self.check()
        if not digest.matches():
            partial.unlink(missing_ok=True)
            raise DownloadError(
                f"{self.state.repo_id}/{remote.name}: the downloaded file does not match its "
                "checksum (deleted; run again to download it afresh)"
            )
        os.replace(partial, blob)

    def _get(
        self,
        client: Any,
        remote: RemoteFile,
        headers: dict[str, str],
        have: int,
        out: Any,
        digest: _Digest,
        start: int,
    ) -> int:
        """One GET from byte ``have`` on; the bytes on disk after it."""
        from huggingface_hub.utils import hf_raise_for_status

        wanted = {**headers, "Accept-Encoding": "identity"}
        if have:
            wanted["Range"] = f"bytes={have}-"
        with client.stream("GET", remote.url, headers=wanted) as response:
            try:
                hf_raise_for_status(response)
            except Exception as exc:  # noqa: BLE001 - an HTTP error status: one line
                raise DownloadError(hub_problem(self.state.repo_id, exc)) from None
            if have and response.status_code != 206:  # the Range was ignored: start over
                out.seek(0)
                out.truncate()
                digest.reset()
                have = 0
            for chunk in response.iter_bytes():  # as received: a break loses nothing
                self.check()
                out.write(chunk)
                digest.update(chunk)
                have += len(chunk)
                self.state.fetched += len(chunk)
                self.state.done = start + have
                self.report()
            out.flush()
        if have < remote.size:
            raise ConnectionError(f"the server closed the connection after {have} bytes")
        return have


class _Digest:
    """The check a finished file must pass: SHA-256 for LFS files (their ETag), git's blob
    SHA-1 for small ones (theirs); size alone for any other ETag."""

    def __init__(self, etag: str, size: int) -> None:
        self.etag, self.size = etag.lower(), size
        self.kind = {64: "sha256", 40: "sha1"}.get(len(etag)) if _HEX.fullmatch(etag) else None
        self.reset()

    def reset(self) -> None:
        self.hasher = hashlib.new(self.kind) if self.kind else None
        if self.kind == "sha1":
            self.hasher.update(b"blob %d\0" % self.size)  # type: ignore[union-attr]

    def update(self, data: bytes) -> None:
        if self.hasher is not None:
            self.hasher.update(data)

    def update_from(self, path: Path, count: int) -> None:
        """Hash the first ``count`` bytes of ``path`` (a resumed part)."""
        with open(path, "rb") as f:
            while count > 0:
                data = f.read(min(count, 1 << 22))
                if not data:
                    break
                self.update(data)
                count -= len(data)

    def matches(self) -> bool:
        return self.hasher is None or self.hasher.hexdigest() == self.etag


def _link(blob: Path, pointer: Path) -> None:
    """``snapshots/<commit>/<name>`` -> ``../../blobs/<etag>`` (a copy where links fail)."""
    if pointer.exists():
        return
    pointer.parent.mkdir(parents=True, exist_ok=True)
    if pointer.is_symlink():
        pointer.unlink()  # a dangling link
    try:
        pointer.symlink_to(os.path.relpath(blob, pointer.parent))
    except OSError:
        shutil.copyfile(blob, pointer)
