"""Downloads of hub checkpoints: ``codegen-lsp pull`` and a server with ``allowDownload``.

The real ``huggingface_hub`` client (through ``HF_ENDPOINT``) and the project's downloader
talk to :class:`hub_server.FakeHub` on 127.0.0.1, which serves the tiny random checkpoint as
``Org/tiny-codegen``; the Hugging Face cache is a temporary folder (``HF_HOME``,
``HF_HUB_CACHE``). A test that needs a download in flight makes the hub pause between its
64 KiB chunks; every wait is on an event (a file's size, a status), never a fixed sleep.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from hub_server import FakeHub
from lsprotocol import types
from pytest_lsp import LanguageClient, client_capabilities
from pytest_lsp.client import make_test_lsp_client
from support import (
    CLI_COMMAND,
    SERVER_COMMAND,
    as_dict,
    await_until,
    codegen_settings,
    configure,
    wait_for_state,
)

from codegen_lsp.codegen.download import megabytes

REPO = "Org/tiny-codegen"
WEIGHTS = "model.safetensors"
CUT = 5_000_000  # bytes of the weights sent before a broken connection
# A pull in a child process that must not import torch: exits 99 if it did.
PULL_WITHOUT_TORCH = (
    "import sys; from codegen_lsp.cli import main; rc = main(sys.argv[1:]); "
    "sys.exit(99 if 'torch' in sys.modules else rc)"
)


@pytest.fixture
def hub(tiny_checkpoint: Path) -> Iterator[FakeHub]:
    server = FakeHub().start()
    server.add(REPO, tiny_checkpoint)
    yield server
    server.stop()


@pytest.fixture
def env(hub: FakeHub, tmp_path: Path) -> dict[str, str]:
    home = tmp_path / "hf"
    return {
        **os.environ,
        "HF_ENDPOINT": hub.url,
        "HF_HOME": str(home),
        "HF_HUB_CACHE": str(home / "hub"),
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_OFFLINE": "0",
    }


def pull(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """``pull --no-prepare ARGS``, which must not import torch (the download needs none)."""
    command = [sys.executable, "-c", PULL_WITHOUT_TORCH, "pull", "--no-prepare", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)


def blobs(env: dict[str, str]) -> Path:
    return Path(env["HF_HUB_CACHE"]) / ("models--" + REPO.replace("/", "--")) / "blobs"


def weights_etag(checkpoint: Path) -> str:
    return hashlib.sha256((checkpoint / WEIGHTS).read_bytes()).hexdigest()


def assert_same_files(snapshot: Path, checkpoint: Path) -> None:
    for f in checkpoint.iterdir():
        assert (snapshot / f.name).read_bytes() == f.read_bytes(), f.name


def generate(env: dict[str, str], model: str | Path) -> subprocess.CompletedProcess[str]:
    command = [*CLI_COMMAND, "generate", "def add(a, b):", "--model", str(model)]
    command += ["--candidates", "1", "--max-new-tokens", "8", "--device", "cpu"]
    command += ["--dtype", "float32", "--quantize", "none"]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)


def test_pull_fetches_a_checkpoint_that_then_loads_offline(
    hub: FakeHub, env: dict[str, str], tiny_checkpoint: Path
) -> None:
    run = pull(env, REPO)
    assert run.returncode == 0, run.stderr  # 99: the pull imported torch
    snapshot = Path(run.stdout.split("Hugging Face cache: ")[1].split()[0])
    assert f"--model {REPO}" in run.stdout
    assert_same_files(snapshot, tiny_checkpoint)
    lines = run.stderr.splitlines()  # not a terminal: plain lines
    assert "\r" not in run.stderr and f"fetching {WEIGHTS}" in lines, run.stderr
    assert lines[-1].startswith("100% ") and " MB/s" in lines[-1], lines

    asked = len(hub.requests)
    offline = {**env, "HF_HUB_OFFLINE": "1"}
    from_hub_id, from_folder = generate(offline, REPO), generate(offline, tiny_checkpoint)
    assert from_hub_id.returncode == 0, from_hub_id.stderr
    assert from_hub_id.stdout == from_folder.stdout and from_hub_id.stdout.startswith("def add")
    assert len(hub.requests) == asked  # the load did not ask the hub

    again = pull(env, REPO)  # everything is cached: nothing is fetched again
    assert again.returncode == 0, again.stderr
    assert len(hub.gets(WEIGHTS)) == 1


def test_pull_prepares_the_weight_cache(hub: FakeHub, env: dict[str, str], tmp_path: Path):
    """By default a pull then loads the model once: its quantized weights are in the weight
    cache, so the editor's first start maps them instead of quantizing."""
    cache = tmp_path / "weights"
    env = {**env, "CODEGEN_WEIGHT_CACHE_DIR": str(cache)}
    run = subprocess.run(
        [*CLI_COMMAND, "pull", REPO], env=env, capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stderr
    assert "preparing the quantized weights" in run.stderr
    entries = list(cache.glob("*.json"))
    assert len(entries) == 1, run.stderr
    assert json.loads(entries[0].read_text())["format"]["quantize"] in ("int8", "int4")


def test_a_broken_connection_is_resumed_within_the_pull(
    hub: FakeHub, env: dict[str, str], tiny_checkpoint: Path
) -> None:
    hub.cut, hub.cuts_left = {WEIGHTS: CUT}, 1
    run = pull(env, REPO)
    assert run.returncode == 0, run.stderr
    assert "connection lost" in run.stderr and "resuming" in run.stderr
    assert [r.range for r in hub.gets(WEIGHTS)] == [None, f"bytes={CUT}-"]
    total = sum(f.stat().st_size for f in tiny_checkpoint.iterdir())
    assert hub.sent == total  # no byte was sent twice
    snapshot = Path(run.stdout.split("Hugging Face cache: ")[1].split()[0])
    assert_same_files(snapshot, tiny_checkpoint)


def test_a_pull_that_fails_keeps_its_part_and_the_next_pull_resumes_it(
    hub: FakeHub, env: dict[str, str], tiny_checkpoint: Path
) -> None:
    hub.cut = {WEIGHTS: CUT}  # every connection breaks at the same byte
    failed = pull(env, REPO)
    assert failed.returncode == 1, failed.stderr
    last = failed.stderr.strip().splitlines()[-1]
    assert last.startswith("codegen-lsp pull: ") and "run again to resume" in last, last
    part = blobs(env) / f"{weights_etag(tiny_checkpoint)}.incomplete"
    assert part.stat().st_size == CUT
    snapshots = blobs(env).parent / "snapshots"
    assert not snapshots.exists()  # no half snapshot that a load would take for complete

    done = {r.path.rsplit("/", 1)[1] for r in hub.requests if r.method == "GET"} - {WEIGHTS}
    hub.cut, asked, sent = {}, len(hub.requests), hub.sent
    resumed = pull(env, REPO)
    assert resumed.returncode == 0, resumed.stderr
    gets = [r for r in hub.requests[asked:] if r.method == "GET" and "/resolve/" in r.path]
    assert [r.range for r in gets if r.path.endswith(WEIGHTS)] == [f"bytes={CUT}-"]
    assert "resuming at 5.0 MB" in resumed.stderr
    rest = {f.name for f in tiny_checkpoint.iterdir()} - done  # nothing fetched twice:
    assert {r.path.rsplit("/", 1)[1] for r in gets} == rest
    size = sum((tiny_checkpoint / name).stat().st_size for name in rest)
    assert hub.sent - sent == size - CUT
    snapshot = Path(resumed.stdout.split("Hugging Face cache: ")[1].split()[0])
    assert_same_files(snapshot, tiny_checkpoint)
    assert not part.exists()


def test_pull_says_what_is_wrong_in_one_line(hub: FakeHub, env: dict[str, str]) -> None:
    for name, expected in (("no-slash", "is not a hub id"), ("Org/missing", "no such model")):
        run = pull(env, name)
        assert run.returncode == 1, run.stderr
        assert run.stderr.count("\n") == 1 and expected in run.stderr, run.stderr
        assert run.stdout == ""


# --- the server ---------------------------------------------------------------------------
@asynccontextmanager
async def server(env: dict[str, str], **settings: Any) -> AsyncIterator[LanguageClient]:
    """A server with the tiny model as ``REPO`` and a client that takes $/progress."""
    client = make_test_lsp_client()
    client.statuses = []  # type: ignore[attr-defined]

    @client.feature("codegen/status")
    def on_status(params: Any) -> None:
        client.statuses.append(as_dict(params))  # type: ignore[attr-defined]

    await client.start_io(*SERVER_COMMAND, env=env)
    params = types.InitializeParams(
        capabilities=client_capabilities("neovim"),  # window.workDoneProgress: true
        initialization_options=codegen_settings(REPO, **settings),
    )
    await client.initialize_session(params)
    try:
        yield client
    finally:
        await client.shutdown_session()
        await client.stop()


def download_reports(client: LanguageClient) -> list[types.WorkDoneProgressReport]:
    return [
        r
        for reports in client.progress_reports.values()
        for r in reports
        if isinstance(r, types.WorkDoneProgressReport) and "downloading" in (r.message or "")
    ]


@pytest.mark.asyncio
async def test_a_server_download_reports_bytes_and_percent(
    hub: FakeHub, env: dict[str, str], tiny_checkpoint: Path
) -> None:
    hub.delay_s = 0.005  # about two seconds for the weights' 400 chunks
    async with server(env, allowDownload=True) as client:
        await wait_for_state(client, model=REPO)
        [reports] = client.progress_reports.values()
        assert reports[0].kind == "begin" and reports[-1].kind == "end", reports
        assert reports[-1].message == "loaded"
        percents = [r.percentage for r in reports[1:-1]]
        assert percents == sorted(percents), percents  # never falls back
        downloading = download_reports(client)
        assert len({r.percentage for r in downloading}) >= 3, downloading
        assert all(" MB (" in r.message and "MB/s" in r.message for r in downloading)
        total = sum(f.stat().st_size for f in tiny_checkpoint.iterdir())
        assert f"of {megabytes(total)} MB (100%)" in downloading[-1].message
        status = [s["message"] for s in client.statuses]  # type: ignore[attr-defined]
        assert any(m.startswith(f"downloading {REPO}: ") for m in status), status


@pytest.mark.asyncio
@pytest.mark.parametrize("change", ["allowDownload", "model"])
async def test_a_settings_change_stops_a_download_which_resumes_later(
    hub: FakeHub, env: dict[str, str], tiny_checkpoint: Path, change: str
) -> None:
    hub.delay_s = 0.1  # forty seconds for the weights: in flight when stopped
    part = blobs(env) / f"{weights_etag(tiny_checkpoint)}.incomplete"
    async with server(env, allowDownload=True) as client:

        async def in_flight() -> bool:
            return part.is_file() and part.stat().st_size >= 3 * 64 * 1024

        await await_until(in_flight, 60, lambda: "the weights' download to start")
        # the worker runs one load at a time: the new one ends only once the old one stopped
        if change == "allowDownload":
            configure(client, REPO, allowDownload=False)
            status = await wait_for_state(client, ("error",), timeout=15)
            assert "downloads are off" in status["message"], status
        else:
            configure(client, tiny_checkpoint)  # another model, in a local folder
            await wait_for_state(client, timeout=15, model=tiny_checkpoint)
        stopped, other = client.progress_reports.values()
        assert stopped[-1].kind == "end" and stopped[-1].message == "cancelled", stopped[-1]
        assert other[-1].message == ("failed" if change == "allowDownload" else "loaded")
        kept = part.stat().st_size
        assert 0 < kept < (tiny_checkpoint / WEIGHTS).stat().st_size

        hub.delay_s, before = 0.0, len(hub.gets(WEIGHTS))
        configure(client, REPO, allowDownload=True)
        await wait_for_state(client, model=REPO)
        assert [r.range for r in hub.gets(WEIGHTS)[before:]] == [f"bytes={kept}-"]
        assert not part.exists()
