"""The HTTP side of the remote engine: an OpenAI-compatible server (vLLM) over ``httpx2``.

One :class:`OpenAIClient` per engine keeps a keep-alive connection pool. Proxies come from
the standard environment variables (``HTTPS_PROXY``, ``NO_PROXY``, ...), except that loopback
addresses never go through a proxy; ``ca_bundle`` names a CA file for TLS. The API key is
read from the environment variable the settings name, sent as a bearer token, and never
written to a log or a message. Every failure becomes one :class:`RemoteError` that says what
happened and whether the endpoint is unusable (``down``) or only this request failed.
"""

from __future__ import annotations

import json
import os
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx2 as httpx

LOOPBACK = ("all://127.0.0.1", "all://localhost", "all://[::1]")
PROBE_TIMEOUT_S = 3.0


class RemoteError(RuntimeError):
    """The endpoint failed; ``down`` when it cannot serve at all (unreachable, refused)."""

    def __init__(self, message: str, down: bool = False, status: int = 0) -> None:
        super().__init__(message)
        self.down = down
        self.status = status


def base_url(endpoint: str) -> str:
    """The API base: ``http://host:8000`` and ``http://host:8000/v1/`` both mean ``.../v1``."""
    url = endpoint.strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"endpoint {endpoint!r}: expected an http:// or https:// URL")
    if httpx.URL(url).path in ("", "/"):
        url += "/v1"
    return url


def _verify(ca_bundle: str) -> ssl.SSLContext | bool:
    if not ca_bundle:
        return True
    path = os.path.expanduser(ca_bundle)
    if not os.path.isfile(path):
        raise ValueError(f"caBundle {ca_bundle}: file not found")
    try:
        return ssl.create_default_context(cafile=path)
    except (ssl.SSLError, OSError) as exc:
        raise ValueError(f"caBundle {ca_bundle}: not a CA file ({exc})") from None


class OpenAIClient:
    """``GET /models``, ``POST /completions`` (whole or streamed) and ``/metrics``."""

    def __init__(
        self, endpoint: str, api_key_env: str = "", timeout_ms: int = 30_000, ca_bundle: str = ""
    ) -> None:
        self.url = base_url(endpoint)
        self.api_key_env = api_key_env
        key = os.environ.get(api_key_env, "").strip() if api_key_env else ""
        self.has_key = bool(key)
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.timeout_s = max(0.001, timeout_ms / 1000)
        verify = _verify(ca_bundle)
        direct = {pattern: httpx.HTTPTransport(verify=verify) for pattern in LOOPBACK}
        self._http = httpx.Client(
            base_url=self.url,
            headers=headers,
            timeout=httpx.Timeout(self.timeout_s, connect=min(self.timeout_s, 5.0)),
            limits=httpx.Limits(max_connections=16, max_keepalive_connections=8),
            verify=verify,
            trust_env=True,
            mounts=direct,
        )

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    # --- calls --------------------------------------------------------------------------
    def models(self) -> list[dict[str, Any]]:
        """The served models (``GET /models``): each a dict with at least ``id``."""
        reply = self._json(self._send("GET", "/models", timeout=PROBE_TIMEOUT_S))
        data = reply.get("data") if isinstance(reply, dict) else None
        if not isinstance(data, list) or not all(
            isinstance(m, dict) and isinstance(m.get("id"), str) for m in data
        ):
            raise RemoteError(f"{self.url}/models: the reply is not a model list: {_clip(reply)}")
        return data

    def complete(self, payload: dict[str, Any]) -> dict[str, Any]:
        """One whole completion (``stream`` off)."""
        reply = self._json(self._send("POST", "/completions", json={**payload, "stream": False}))
        check_completion(reply, self.url)
        return reply

    @contextmanager
    def stream(self, payload: dict[str, Any]) -> Iterator[tuple[httpx.Response, Iterator[Any]]]:
        """A streamed completion: the response (close it to abort) and its chunks."""
        body = {**payload, "stream": True}
        try:
            with self._http.stream("POST", "/completions", json=body) as response:
                if response.status_code != 200:
                    response.read()
                    self._raise_for(response)
                yield response, self._chunks(response)
        except httpx.HTTPError as exc:
            raise self._transport_error(exc) from None

    def metrics(self) -> str:
        """The server's Prometheus metrics (at the root, beside ``/v1``)."""
        root = self.url.removesuffix("/v1")
        return self._send("GET", f"{root}/metrics", timeout=PROBE_TIMEOUT_S).text

    # --- helpers ------------------------------------------------------------------------
    def _chunks(self, response: httpx.Response) -> Iterator[dict[str, Any]]:
        for line in response.iter_lines():
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                return
            try:
                chunk = json.loads(data)
            except ValueError:
                raise RemoteError(
                    f"{self.url}: a stream event is not JSON: {_clip(data)}"
                ) from None
            if isinstance(chunk, dict) and "error" in chunk:
                raise RemoteError(f"{self.url}: the server failed: {_error_text(chunk)}")
            check_completion(chunk, self.url)
            yield chunk

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise self._transport_error(exc) from None
        if response.status_code != 200:
            self._raise_for(response)
        return response

    def _json(self, response: httpx.Response) -> Any:
        try:
            return response.json()
        except ValueError:
            raise RemoteError(
                f"{self.url}: the reply is not JSON ({response.headers.get('content-type')}): "
                f"{_clip(response.text)}"
            ) from None

    def _raise_for(self, response: httpx.Response) -> None:
        code = response.status_code
        try:
            detail = _error_text(response.json())
        except ValueError:
            detail = _clip(response.text)
        if code in (401, 403):
            if self.has_key:
                hint = f"the API key in ${self.api_key_env} was not accepted"
            elif self.api_key_env:
                hint = f"the environment variable {self.api_key_env} (codegen.apiKeyEnv) is unset"
            else:
                hint = (
                    "it needs an API key: put the key in an environment variable and set "
                    "codegen.apiKeyEnv to that variable's name"
                )
            raise RemoteError(f"{self.url} refused the request ({code}): {hint}", True, code)
        down = code in (404, 502, 503, 504)
        raise RemoteError(f"{self.url}: HTTP {code}: {detail}", down, code)

    def _transport_error(self, exc: httpx.HTTPError) -> RemoteError:
        if isinstance(exc, httpx.TimeoutException):
            return RemoteError(f"{self.url}: no answer within {self.timeout_s:g} s", True)
        if isinstance(exc, httpx.ConnectError):
            return RemoteError(f"cannot reach {self.url} ({_reason(exc)})", True)
        if isinstance(exc, httpx.RemoteProtocolError | httpx.ReadError | httpx.WriteError):
            return RemoteError(f"{self.url}: the connection broke ({_reason(exc)})", True)
        return RemoteError(f"{self.url}: {type(exc).__name__}: {_reason(exc)}", True)


def check_completion(reply: Any, url: str) -> None:
    """A RemoteError unless ``reply`` looks like an OpenAI completion (or one chunk of it)."""
    choices = reply.get("choices") if isinstance(reply, dict) else None
    if not isinstance(choices, list) or not all(
        isinstance(c, dict) and isinstance(c.get("index", 0), int) for c in choices
    ):
        raise RemoteError(f"{url}: the reply is not an OpenAI completion: {_clip(reply)}")


def _error_text(reply: Any) -> str:
    error = reply.get("error") if isinstance(reply, dict) else None
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return error["message"]
    if isinstance(reply, dict) and isinstance(reply.get("message"), str):
        return reply["message"]
    return _clip(reply)


def _reason(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text.split("] ", 1)[-1] if text.startswith("[Errno") else text


def _clip(value: Any, limit: int = 200) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= limit else text[:limit] + "..."
