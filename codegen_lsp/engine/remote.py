"""The remote engine: the engine contract over an OpenAI-compatible server (vLLM).

No weights are loaded here: the tokenizer and config come from the ``model`` setting (a
directory that may hold only those files), so prompts are this project's token ids, sent
as ids, and every stop rule runs here on the stream as tokens arrive, exactly as in the
local engine's decode loop (the same :class:`~codegen_lsp.engine.sampling.DecodeState`).
When every candidate has ended, or the request is cancelled or superseded, the stream is
closed, which makes vLLM abort the request: the GPU stops working on stale keystrokes.

Token healing is done with ``allowed_token_ids``: the healed steps are asked for one token
at a time under the constraint (greedy rows together, each sampled row apart), then the
rest is streamed. The server's prefix cache reuses whatever earlier requests share in
16-token blocks; the prompt window above keeps its start while typing so they do.

Health: an unreachable, refusing or misconfigured endpoint marks the engine down with a
message; a probe thread retries ``GET /models`` with backoff and marks it up again, and
:meth:`RemoteEngine.watch` callbacks hear both.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from codegen_lsp.codegen.tokenizer import CodeGenTokenizer
from codegen_lsp.engine.api import (
    CacheStats,
    Cancel,
    EngineSpec,
    EngineUnavailable,
    GenerateRequest,
    GenerateResult,
    GenerateStats,
    Health,
    HealthFn,
    ModelInfo,
)
from codegen_lsp.engine.healing import heal, prefix_index
from codegen_lsp.engine.remote_http import OpenAIClient, RemoteError
from codegen_lsp.engine.sampling import DecodeState, fit_prompt

log = logging.getLogger(__name__)

BACKOFF_S = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0)  # probe delays while down; the last repeats
MAX_STOP_STRINGS = 4  # the OpenAI completions API (and vLLM) refuse more
MAX_BIAS_IDS = 4096  # padded ids past the tokenizer are banned with logit_bias up to this many


class RemoteEngine:
    """Generation on a remote server; safe to call from the worker thread."""

    def __init__(
        self,
        spec: EngineSpec,
        tokenizer: CodeGenTokenizer,
        info: ModelInfo,
        n_positions: int,
        vocab_size: int,
    ) -> None:
        self.spec = spec
        self.client = OpenAIClient(
            spec.endpoint, spec.api_key_env, spec.request_timeout_ms, spec.ca_bundle
        )
        self.tokenizer = tokenizer
        self.info = info
        self.bos_id: int | None = tokenizer.bos_id
        self.token_bytes = tokenizer.token_bytes()
        self.prefix_index = prefix_index(tokenizer)
        self.n_ctx = n_positions
        self.served = spec.remote_model
        padded = range(tokenizer.vocab_size, vocab_size)
        self.logit_bias = {str(i): -100 for i in padded} if len(padded) <= MAX_BIAS_IDS else {}
        self._lock = threading.Lock()
        self._health = Health(False, f"connecting to {self.client.url}")
        self._watchers: list[HealthFn] = []
        self._closed = threading.Event()
        self._probing = False
        self.last_latency_ms: float | None = None
        self.requests = 0
        self.description = self._describe()

    def _describe(self) -> str:
        return f"remote {self.served or '?'} at {self.client.url}, context {self.n_ctx}"

    # --- health -------------------------------------------------------------------------
    def connect(self) -> None:
        """Check the endpoint now; when it cannot serve, the probe keeps trying."""
        try:
            self._check()
        except RemoteError as exc:
            self._down(str(exc))

    def _check(self) -> None:
        models = self.client.models()
        names = [m["id"] for m in models]
        if not names:
            raise RemoteError(f"{self.client.url} serves no model", True)
        if self.spec.remote_model and self.spec.remote_model not in names:
            raise RemoteError(
                f"{self.client.url} does not serve {self.spec.remote_model!r} "
                f"(codegen.remoteModel); it serves: {', '.join(names)}",
                True,
            )
        self.served = self.spec.remote_model or names[0]
        served = next(m for m in models if m["id"] == self.served)
        limit = served.get("max_model_len")
        if isinstance(limit, int) and 0 < limit < self.n_ctx:
            self.n_ctx = limit
        self.description = self._describe()
        self._set(Health(True, self.description, self._details()))

    def _details(self) -> dict[str, object]:
        return {
            "remote": True,
            "endpoint": self.client.url,
            "remoteModel": self.served,
            "lastLatencyMs": None if self.last_latency_ms is None else round(self.last_latency_ms),
            "remoteRequests": self.requests,
        }

    def health(self) -> Health:
        """Up or down, with the endpoint, model and last latency."""
        with self._lock:
            health = self._health
        return Health(health.ok, health.message, self._details())

    def watch(self, callback: HealthFn | None) -> None:
        """Hear every change of health (from the worker or the probe thread)."""
        with self._lock:
            self._watchers = [] if callback is None else [callback]

    def _set(self, health: Health) -> None:
        with self._lock:
            changed = health.ok != self._health.ok or health.message != self._health.message
            self._health = health
            watchers = list(self._watchers) if changed else []
        for callback in watchers:
            callback(health)

    def _down(self, message: str) -> None:
        log.warning("remote engine down: %s", message)
        self._set(Health(False, message, self._details()))
        with self._lock:
            if self._probing or self._closed.is_set():
                return
            self._probing = True
        threading.Thread(target=self._probe, name="codegen-remote-probe", daemon=True).start()

    def _probe(self) -> None:
        attempt = 0
        try:
            while not self._closed.wait(BACKOFF_S[min(attempt, len(BACKOFF_S) - 1)]):
                attempt += 1
                try:
                    self._check()
                except RemoteError as exc:
                    self._set(Health(False, str(exc), self._details()))
                    continue
                log.info("remote engine up again: %s", self.description)
                return
        finally:
            with self._lock:
                self._probing = False

    def close(self) -> None:
        """Stop the probe and close the connection pool."""
        self._closed.set()
        self.watch(None)
        self.client.close()

    # --- Engine protocol ----------------------------------------------------------------
    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` (this project's tokenizer, as locally)."""
        return self.tokenizer.encode(text)

    def decode(self, ids: list[int]) -> str:
        """Text of ``ids``."""
        return self.tokenizer.decode(ids)

    def clear_cache(self) -> None:
        """The server owns its cache; nothing is kept here."""

    def cache_stats(self) -> CacheStats:
        """No KV cache is held in this process."""
        return CacheStats()

    def generate(self, req: GenerateRequest, cancel: Cancel) -> GenerateResult:
        """Run ``req`` on the server; the stop rules run here as the tokens arrive."""
        start = time.perf_counter()
        if req.n < 1 or req.max_new_tokens < 0:
            raise ValueError(f"bad request: n={req.n}, max_new_tokens={req.max_new_tokens}")
        health = self.health()
        if not health.ok:
            raise EngineUnavailable(health.message)
        prompt, max_new = fit_prompt(req, self.n_ctx, self.tokenizer.bos_id)
        healed = heal(prompt, self.token_bytes, self.prefix_index) if req.heal else None
        ids = healed.ids if healed else prompt
        state = DecodeState.start(req, max_new, healed.removed if healed else b"", self.eos_id)
        stats = GenerateStats(prompt_tokens=len(prompt), prefilled_tokens=len(ids))
        run = _Run(self, req, state, cancel, start)
        try:
            if max_new == 0:
                state.finish_all("length")
            else:
                run.all(ids)
        except RemoteError as exc:
            if not exc.down:
                raise
            self._down(str(exc))
            raise EngineUnavailable(str(exc)) from None
        if cancel.is_set():
            state.finish_all("cancelled")
        state.finish_all("length")
        stats.prefill_ms = (run.first_token_at or time.perf_counter()) - start
        stats.prefill_ms *= 1000
        stats.total_ms = (time.perf_counter() - start) * 1000
        stats.decode_ms = stats.total_ms - stats.prefill_ms
        result = GenerateResult(state.candidates(), stats, cancel.is_set())
        stats.generated_tokens = sum(len(c.token_ids) for c in result.candidates)
        self.last_latency_ms = stats.total_ms
        self.requests += 1
        return result

    @property
    def eos_id(self) -> int:
        """The end-of-text id."""
        return self.tokenizer.eos_id


class _Run:
    """One request's calls: the healing steps, then one stream per group of rows."""

    def __init__(
        self,
        engine: RemoteEngine,
        req: GenerateRequest,
        state: DecodeState,
        cancel: Cancel,
        start: float,
    ) -> None:
        self.engine, self.req, self.state, self.cancel = engine, req, state, cancel
        self.deadline = start + req.time_limit_s if req.time_limit_s else None
        self.first_token_at: float | None = None

    def greedy(self, row: int) -> bool:
        """Whether row ``row`` is decoded greedily."""
        return self.req.sampling.temperature == 0 or (self.req.greedy_first and row == 0)

    def body(self, prompt: list[int], max_tokens: int, n: int, greedy: bool) -> dict[str, Any]:
        """The ``/completions`` body for ``prompt`` (token ids), ``n`` choices."""
        s = self.req.sampling
        body: dict[str, Any] = {
            "model": self.engine.served,
            "prompt": prompt,
            "max_tokens": max_tokens,
            "n": n,
            "temperature": 0.0 if greedy else s.temperature,
            "top_p": 1.0 if greedy else s.top_p,
            "logprobs": 0,
            "return_token_ids": True,
            "include_stop_str_in_output": True,
            "skip_special_tokens": False,
            "ignore_eos": self.req.ignore_eos,
        }
        if not greedy and s.top_k:
            body["top_k"] = s.top_k
        if not greedy and s.seed is not None:
            body["seed"] = s.seed
        if self.req.stop_strings:  # the API takes 4 at most; the stop rule cuts at all of them
            body["stop"] = list(self.req.stop_strings[:MAX_STOP_STRINGS])
        if self.req.stop_ids:
            body["stop_token_ids"] = list(self.req.stop_ids)
        if self.engine.logit_bias:
            body["logit_bias"] = self.engine.logit_bias
        return body

    def all(self, ids: list[int]) -> None:
        """Heal each row, then stream the rest of every row (groups in parallel)."""
        prompts = {r: list(ids) for r in range(len(self.state.rows))}
        self.heal_rows(prompts)
        groups: dict[tuple[tuple[int, ...], bool], list[int]] = {}
        for r, row in enumerate(self.state.rows):
            if row.finish is None:
                groups.setdefault((tuple(prompts[r]), self.greedy(r)), []).append(r)
        jobs = list(groups.items())
        if len(jobs) == 1:
            (prompt, greedy), rows = jobs[0]
            self.stream(list(prompt), rows, greedy)
            return
        with ThreadPoolExecutor(len(jobs), thread_name_prefix="codegen-remote") as pool:
            futures = [pool.submit(self.stream, list(p), rows, g) for (p, g), rows in jobs]
            for future in futures:
                future.result()

    def heal_rows(self, prompts: dict[int, list[int]]) -> None:
        """Ask for one constrained token at a time while a row must produce healed bytes."""
        state = self.state
        while not self.cancel.is_set():
            todo = [r for r, row in enumerate(state.rows) if row.remaining and row.finish is None]
            if not todo:
                return
            r = todo[0]
            greedy = self.greedy(r)
            same = (
                [t for t in todo if self.greedy(t) and prompts[t] == prompts[r]] if greedy else [r]
            )
            allowed = self.engine.prefix_index.allowed_mask(state.rows[r].remaining)
            body = self.body(prompts[r], 1, 1, greedy)
            body["allowed_token_ids"] = allowed.nonzero()[:, 0].tolist()
            body.pop("stop", None)
            choice = self.engine.client.complete(body)["choices"][0]
            tokens, logprobs = _tokens(choice)
            if not tokens:  # the constraint left nothing to choose (or eos): end the rows
                for t in same:
                    state.end(state.rows[t], "eos")
                continue
            for t in same:
                state.accept(t, tokens[0], logprobs[0], self.engine.token_bytes)
                prompts[t].append(tokens[0])

    def stream(self, prompt: list[int], rows: list[int], greedy: bool) -> None:
        """Stream the rest of ``rows`` (greedy rows share one choice) into the state."""
        state = self.state
        done = sum(len(state.rows[r].ids) for r in rows[:1])
        max_tokens = state.max_new - done
        choices = 1 if greedy else len(rows)
        targets = [rows] if greedy else [[r] for r in rows]
        body = self.body(prompt, max_tokens, choices, greedy)
        try:
            self._read(body, rows, targets)
        except RemoteError:
            if not (self.cancel.is_set() or self._late()):
                raise  # closed by the watcher: not an error
        reason = "cancelled" if self.cancel.is_set() else "time" if self._late() else "length"
        for r in rows:
            if state.rows[r].finish is None:
                state.end(state.rows[r], reason)

    def _read(self, body: dict[str, Any], rows: list[int], targets: list[list[int]]) -> None:
        """Feed the stream's tokens to ``rows`` until they end (leaving closes the stream)."""
        state = self.state
        with self.engine.client.stream(body) as (response, chunks):
            stop = threading.Event()
            watcher = threading.Thread(target=self._watch, args=(response, stop), daemon=True)
            watcher.start()
            try:
                for chunk in chunks:
                    self.first_token_at = self.first_token_at or time.perf_counter()
                    for choice in chunk["choices"]:
                        self._feed(choice, targets)
                    if all(state.rows[r].finish is not None for r in rows):
                        return  # the server aborts the request when the stream closes
            finally:
                stop.set()

    def _feed(self, choice: dict[str, Any], targets: list[list[int]]) -> None:
        index = choice.get("index", 0)
        if not 0 <= index < len(targets):
            raise RemoteError(f"{self.engine.client.url}: a choice index {index} not asked for")
        tokens, logprobs = _tokens(choice)
        for r in targets[index]:
            row = self.state.rows[r]
            for token, logprob in zip(tokens, logprobs, strict=True):
                if row.finish is not None:
                    break
                if not 0 <= token < len(self.engine.token_bytes):
                    raise RemoteError(f"{self.engine.client.url}: token id {token} is unknown")
                self.state.accept(r, token, logprob, self.engine.token_bytes)
            if row.finish is None and choice.get("finish_reason") == "stop":
                self.state.end(row, "eos")

    def _late(self) -> bool:
        return self.deadline is not None and time.perf_counter() > self.deadline

    def _watch(self, response: Any, stop: threading.Event) -> None:
        """Close ``response`` when the request is cancelled or runs out of time."""
        while not stop.is_set():
            if self.cancel.is_set() or self._late():
                response.close()
                return
            self.cancel.wait(0.05)


def _tokens(choice: dict[str, Any]) -> tuple[list[int], list[float]]:
    """The token ids of a choice (``return_token_ids``) and their log-probabilities."""
    tokens = choice.get("token_ids")
    if not isinstance(tokens, list) or not all(isinstance(t, int) for t in tokens):
        raise RemoteError(
            "the reply has no token_ids (the server must support return_token_ids, as vLLM does)"
        )
    logprobs = (choice.get("logprobs") or {}).get("token_logprobs") or []
    values = [float(x) if isinstance(x, int | float) else 0.0 for x in logprobs]
    values += [0.0] * (len(tokens) - len(values))
    return tokens, values[: len(tokens)]
