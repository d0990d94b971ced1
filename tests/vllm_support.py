"""A real vLLM server (CPU build) on 127.0.0.1 for the remote-engine and editor tests.

vLLM comes from scripts/setup-test-vllm (its own venv under the test-tools cache). The
checkpoint is a small random-weight CodeGen (head size 32: vLLM's CPU attention needs at
least that), exported here with ``codegen-lsp export --format gptj``. One server is shared
by the tests that only send requests; the tests that stop, restart or lock a server start
their own, so no test depends on another. Test folders import these fixtures into their
conftest (or module).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import httpx2 as httpx
import pytest
from support import TOKENIZER_DIR, free_port

from codegen_lsp.codegen.export import export_gptj
from codegen_lsp.commands.bench.synthetic import random_model, write_checkpoint

CACHE = Path(
    os.environ.get("CODEGEN_LSP_TEST_VLLM", Path.home() / ".cache" / "codegen-lsp-test-vllm")
)
SERVED = "tiny-codegen"
SHAPE = dict(n_positions=1024, n_embd=128, n_layer=2, n_head=4, rotary_dim=16)
START_TIMEOUT_S = 240.0


@pytest.fixture(scope="session")
def vllm_python() -> str:
    """The Python of the vLLM venv; skips (fails under CI) when it is not set up."""
    manifest = CACHE / "manifest.json"
    if not manifest.is_file():
        message = f"{manifest} not found (run scripts/setup-test-vllm first)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return json.loads(manifest.read_text())["python"]


@pytest.fixture(scope="session")
def remote_checkpoints(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(CodeGen source, its GPT-J export): a random model whose logits are not flat."""
    root = tmp_path_factory.mktemp("remote-model")
    model = random_model(SHAPE, vocab_size=50304, seed=0, std=0.1)
    source = write_checkpoint(root / "codegen", TOKENIZER_DIR, model)
    export_gptj(source, root / "gptj")
    return source, root / "gptj"


class VllmServer:
    """One vLLM OpenAI-compatible server process on 127.0.0.1 (start, stop, restart)."""

    def __init__(self, python: str, model: Path, log: Path, api_key: str = "") -> None:
        self.python, self.model, self.log_path, self.api_key = python, model, log, api_key
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, wait: bool = True) -> VllmServer:
        args = [self.python, "-m", "vllm.entrypoints.openai.api_server",
                "--model", str(self.model), "--served-model-name", SERVED,
                "--dtype", "float32", "--max-model-len", "1024", "--enforce-eager",
                "--host", "127.0.0.1", "--port", str(self.port), "--enable-log-requests",
                "--max-num-seqs", "8"]  # fmt: skip
        if self.api_key:
            args += ["--api-key", self.api_key]
        env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_CPU_OMP_THREADS_BIND": "auto",
               "HF_HUB_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1",
               "VLLM_CACHE_ROOT": str(self.log_path.parent / "vllm-cache")}  # fmt: skip
        env.pop("VIRTUAL_ENV", None)
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env)
        if wait:
            self.wait_ready()
            self.warm_up()
        return self

    def warm_up(self) -> None:
        """Real completions of every kind the server sends, before any test's timer runs:
        vLLM's first request of a kind pays one-off costs (kernel set-up, the first KV blocks,
        and for ``allowed_token_ids``, the healing step's constraint, its logits processor:
        19 s once on a loaded 2-core CPU, which left a test's keystroke past its time
        limit) that a slow, shared CPU can stretch past a test's wait for a suggestion."""
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        common = {"model": SERVED, "prompt": [1, 2, 3], "temperature": 0, "logprobs": 0,
                  "return_token_ids": True, "include_stop_str_in_output": True,
                  "skip_special_tokens": False}  # fmt: skip
        bodies = [
            {**common, "max_tokens": 8},
            {**common, "max_tokens": 1, "allowed_token_ids": list(range(10, 200))},
            {**common, "max_tokens": 8, "stop": ["\n"], "stream": True},
        ]
        for body in bodies:
            reply = httpx.post(
                f"{self.url}/completions", json=body, headers=headers, timeout=START_TIMEOUT_S
            )
            assert reply.status_code == 200, f"vLLM warm-up: {reply.status_code} {reply.text[:300]}"

    def wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"vLLM exited ({self.proc.returncode}): {self.tail()}")
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise AssertionError(f"vLLM not ready in {START_TIMEOUT_S:.0f} s: {self.tail()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    def metric(self, name: str) -> float:
        """The sum of a Prometheus counter over its labels."""
        text = httpx.get(f"http://127.0.0.1:{self.port}/metrics", timeout=5).text
        total = 0.0
        for line in text.splitlines():
            if line.startswith(name + "{") or line.startswith(name + " "):
                total += float(line.rsplit(" ", 1)[1])
        return total


@pytest.fixture(scope="session")
def vllm(vllm_python: str, remote_checkpoints: tuple[Path, Path], tmp_path_factory):
    """The shared vLLM server (only sent requests; never stopped by a test)."""
    log = tmp_path_factory.mktemp("vllm") / "vllm.log"
    server = VllmServer(vllm_python, remote_checkpoints[1], log).start()
    yield server
    server.stop()


@pytest.fixture
def own_vllm(vllm_python: str, remote_checkpoints: tuple[Path, Path], tmp_path: Path):
    """A server for one test (not started: the test decides when), stopped after it."""
    servers: list[VllmServer] = []

    def make(api_key: str = "") -> VllmServer:
        server = VllmServer(vllm_python, remote_checkpoints[1], tmp_path / "vllm.log", api_key)
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()
