"""A small client for OpenAI-compatible chat servers (vLLM, llama.cpp server, Ollama, OpenAI).

``POST {base_url}/chat/completions`` with a JSON body, plain or streamed as server-sent events.
Failures that may pass (HTTP 408/409/429/5xx, refused or dropped connections, timeouts) are
retried with exponential backoff and jitter, waiting what a ``Retry-After`` (or ``retry-after-ms``)
header asks for when the server sends one; after the last try an :class:`OpenAIError` names the
status and the server's message. Other statuses fail at once.

The API key comes from the ``api_key`` argument or an environment variable (``OPENAI_API_KEY``
by default). It only ever goes into the ``Authorization`` header: never into logs, exception
messages or reprs (a server message that echoes it is redacted too).

Standard library only (``urllib``): no new dependency.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import random
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any, Callable, Iterator, Sequence

from datastores.errors import TeraragError, UserError

logger = logging.getLogger("terarag.openai")

DEFAULT_BASE_URL = "https://api.openai.com/v1"
BASE_URL_ENV = "OPENAI_BASE_URL"
API_KEY_ENV = "OPENAI_API_KEY"
RETRY_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504})
MAX_RETRY_AFTER = 120.0  # seconds; a longer Retry-After is capped


class OpenAIError(UserError):
    """A request to an OpenAI-compatible server failed (after any retries).

    ``status`` is the HTTP status (``None`` for connection errors and timeouts), ``message`` the
    server's error message (redacted), ``attempts`` how many requests were made.
    """

    def __init__(self, message: str, status: int | None = None, server_message: str = "", attempts: int = 1):
        super().__init__(message)
        self.status = status
        self.server_message = server_message
        self.attempts = attempts


@dataclass
class ChatResult:
    """One chat completion: the assistant text and what the server reported about it."""

    text: str
    finish_reason: str | None = None
    model: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    attempts: int = 1
    seconds: float = 0.0
    raw: dict[str, Any] = field(default_factory=dict, repr=False)


class _Retryable(TeraragError):
    """Internal: one attempt failed in a way that may pass; carries the wait the server asked for."""

    def __init__(self, description: str, status: int | None = None, server_message: str = "",
                 retry_after: float | None = None):
        super().__init__(description)
        self.description = description
        self.status = status
        self.server_message = server_message
        self.retry_after = retry_after


def _redact_url(url: str) -> str:
    """The URL without any ``user:password@`` part."""
    parts = urllib.parse.urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


def parse_retry_after(headers: Any) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``Retry-After`` (seconds or an HTTP date), else None."""
    if headers is None:
        return None
    millis = headers.get("retry-after-ms")
    if millis:
        try:
            return max(0.0, float(millis) / 1000.0)
        except ValueError:
            pass
    value = headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _server_message(body: bytes) -> str:
    """The ``error.message`` of an error body, or the body's first 300 characters."""
    text = body.decode("utf-8", errors="replace").strip()
    try:
        data = json.loads(text)
    except ValueError:
        return text[:300]
    if isinstance(data, dict):
        error = data.get("error", data)
        if isinstance(error, dict):
            message = error.get("message") or error.get("detail") or error.get("error")
            if message:
                return str(message)[:300]
        elif isinstance(error, str):
            return error[:300]
        if data.get("detail"):
            return str(data["detail"])[:300]
    return text[:300]


class OpenAIClient:
    """Chat completions against one OpenAI-compatible server.

    ``backoff`` is the first retry's upper wait in seconds (doubling per retry, capped at
    ``max_backoff``, times a random factor in [0.5, 1)); ``sleep`` and ``rng`` can be replaced
    (tests record the waits instead of sleeping).
    """

    def __init__(self, base_url: str | None = None, api_key: str | None = None, *, timeout: float = 60.0,
                 max_retries: int = 3, api_key_env: str = API_KEY_ENV, backoff: float = 0.5,
                 max_backoff: float = 30.0, sleep: Callable[[float], None] = time.sleep,
                 rng: random.Random | None = None, user_agent: str = "terarag"):
        url = (base_url or os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL).strip().rstrip("/")
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise UserError(f"base URL {_redact_url(url)!r} is not an http(s) URL (e.g. http://localhost:8000/v1)")
        if timeout <= 0:
            raise UserError(f"timeout must be positive, got {timeout}")
        if max_retries < 0:
            raise UserError(f"max_retries must be >= 0, got {max_retries}")
        self.base_url = url
        self.timeout = float(timeout)
        self.max_retries = int(max_retries)
        self.backoff = float(backoff)
        self.max_backoff = float(max_backoff)
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._user_agent = user_agent
        key = api_key if api_key is not None else os.environ.get(api_key_env)
        self.__key = key.strip() if key and key.strip() else None
        self._opener = urllib.request.build_opener()

    # -- public ---------------------------------------------------------------------------------

    @property
    def has_api_key(self) -> bool:
        return self.__key is not None

    @property
    def endpoint(self) -> str:
        return self.base_url + "/chat/completions"

    def __repr__(self) -> str:
        return (f"OpenAIClient(base_url={_redact_url(self.base_url)!r}, api_key={'set' if self.__key else 'unset'}, "
                f"timeout={self.timeout}, max_retries={self.max_retries})")

    def chat(self, messages: Sequence[dict[str, Any]], model: str, *, temperature: float | None = None,
             max_tokens: int | None = None, on_token: Callable[[str], None] | None = None,
             **extra: Any) -> ChatResult:
        """One chat completion. With ``on_token`` the reply is streamed (SSE) and each text piece
        is passed to it as it arrives; ``extra`` fields (``response_format``, ``seed``, ``stop``…)
        go into the request body as given."""
        payload: dict[str, Any] = {"model": model, "messages": list(messages)}
        if temperature is not None:
            payload["temperature"] = temperature
        if max_tokens is not None:
            payload["max_tokens"] = max_tokens
        payload.update(extra)
        if on_token is not None:
            payload["stream"] = True
        body = json.dumps(payload, ensure_ascii=False).encode("utf-8")
        started = time.perf_counter()
        emitted = [False]

        def forward(piece: str) -> None:
            emitted[0] = True
            on_token(piece)  # type: ignore[misc]

        attempt = 0
        while True:
            attempt += 1
            try:
                result = self._attempt(body, forward if on_token is not None else None)
            except _Retryable as failure:
                # Never retry once streamed text has reached the caller: it would be repeated.
                if attempt > self.max_retries or emitted[0]:
                    raise self._final_error(failure, attempt, streamed=emitted[0]) from None
                wait = self._wait(attempt, failure.retry_after)
                said = f" ({failure.server_message[:120]})" if failure.server_message else ""
                logger.warning("%s%s from %s; retry %d/%d in %.2f s", failure.description, said, self._where(),
                               attempt, self.max_retries, wait)
                self._sleep(wait)
                continue
            result.attempts = attempt
            result.seconds = time.perf_counter() - started
            return result

    # -- internals ------------------------------------------------------------------------------

    def _where(self) -> str:
        return _redact_url(self.endpoint)

    def _redact(self, text: str) -> str:
        return text.replace(self.__key, "***") if self.__key else text

    def _headers(self, stream: bool) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "User-Agent": self._user_agent,
                   "Accept": "text/event-stream" if stream else "application/json"}
        if self.__key:
            headers["Authorization"] = f"Bearer {self.__key}"
        return headers

    def _wait(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, MAX_RETRY_AFTER)
        ceiling = min(self.max_backoff, self.backoff * (2 ** (attempt - 1)))
        return ceiling * (0.5 + 0.5 * self._rng.random())

    def _final_error(self, failure: _Retryable, attempts: int, streamed: bool) -> OpenAIError:
        detail = f": {self._redact(failure.server_message)}" if failure.server_message else ""
        if streamed:
            how = "after part of the reply had streamed (not retried)"
        else:
            how = f"after {attempts} attempt{'s' if attempts != 1 else ''}"
        return OpenAIError(f"{failure.description} from {self._where()} {how}{detail}", failure.status,
                           self._redact(failure.server_message), attempts)

    def _attempt(self, body: bytes, on_token: Callable[[str], None] | None) -> ChatResult:
        request = urllib.request.Request(self.endpoint, data=body, method="POST",
                                         headers=self._headers(on_token is not None))
        try:
            response = self._opener.open(request, timeout=self.timeout)
        except urllib.error.HTTPError as exc:
            try:
                raw = exc.read() if exc.fp is not None else b""
            except (OSError, http.client.HTTPException):
                raw = b""
            finally:
                exc.close()
            message = self._redact(_server_message(raw))
            description = f"HTTP {exc.code}" + (f" {exc.reason}" if exc.reason else "")
            if exc.code in RETRY_STATUSES or exc.code >= 500:
                raise _Retryable(description, exc.code, message, parse_retry_after(exc.headers)) from None
            detail = f": {message}" if message else ""
            if exc.code == 404 and not self.base_url.rstrip("/").endswith("/v1"):
                detail += " (OpenAI-compatible servers usually serve under /v1: is the base URL complete?)"
            raise OpenAIError(f"{description} from {self._where()}{detail}", exc.code, message) from None
        except urllib.error.URLError as exc:
            raise self._connection_failure(exc.reason) from None
        except (OSError, http.client.HTTPException) as exc:  # timeouts, resets, refused
            raise self._connection_failure(exc) from None
        with response:
            try:
                if on_token is not None and "text/event-stream" in (response.headers.get("Content-Type") or ""):
                    return self._read_stream(response, on_token)
                raw = response.read()
            except (OSError, http.client.HTTPException) as exc:
                raise self._connection_failure(exc) from None
        result = self._parse_completion(raw)
        if on_token is not None and result.text:
            on_token(result.text)  # the server ignored "stream": pass the whole text at once
        return result

    def _connection_failure(self, reason: Any) -> _Retryable:
        if isinstance(reason, (TimeoutError, socket.timeout)) or "timed out" in str(reason):
            return _Retryable(f"request timed out after {self.timeout:g} s")
        text = getattr(reason, "strerror", None) or str(reason) or type(reason).__name__
        return _Retryable(f"connection failed ({self._redact(text)})")

    def _parse_completion(self, raw: bytes) -> ChatResult:
        try:
            data = json.loads(raw)
        except ValueError:
            snippet = raw[:200].decode("utf-8", errors="replace")
            raise OpenAIError(f"{self._where()} returned a body that is not JSON: {self._redact(snippet)!r}") from None
        if not isinstance(data, dict):
            raise OpenAIError(f"{self._where()} returned JSON that is not an object")
        if "error" in data and not data.get("choices"):
            message = self._redact(_server_message(raw))
            raise OpenAIError(f"{self._where()} returned an error: {message}", None, message)
        try:
            choice = data["choices"][0]
            message = choice.get("message") or {}
            text = message.get("content")
            if text is None:
                text = choice.get("text", "")
        except (KeyError, IndexError, TypeError, AttributeError):
            raise OpenAIError(f"{self._where()} returned JSON without choices[0].message "
                              f"(keys: {', '.join(sorted(data))})") from None
        usage = data.get("usage") or {}
        return ChatResult(str(text or ""), choice.get("finish_reason"), data.get("model"),
                          usage.get("prompt_tokens"), usage.get("completion_tokens"), raw=data)

    def _read_stream(self, response: Any, on_token: Callable[[str], None]) -> ChatResult:
        pieces: list[str] = []
        finish_reason = model = None
        usage: dict[str, Any] = {}
        done = False
        for event in _sse_events(response):
            if event == "[DONE]":
                done = True
                break
            try:
                data = json.loads(event)
            except ValueError:
                raise OpenAIError(f"{self._where()} streamed an event that is not JSON: "
                                  f"{self._redact(event[:200])!r}") from None
            if not isinstance(data, dict):
                continue
            if data.get("error"):
                message = self._redact(_server_message(event.encode("utf-8")))
                raise OpenAIError(f"{self._where()} reported an error while streaming: {message}", None, message)
            model = data.get("model") or model
            usage = data.get("usage") or usage
            for choice in data.get("choices") or ():
                delta = choice.get("delta") or {}
                piece = delta.get("content") if isinstance(delta, dict) else None
                if piece is None:
                    piece = choice.get("text")
                if piece:
                    pieces.append(piece)
                    on_token(piece)
                finish_reason = choice.get("finish_reason") or finish_reason
        if not done and finish_reason is None:
            # The connection closed before [DONE] or a finish_reason: the reply is incomplete.
            raise _Retryable("the stream ended before the reply was complete")
        return ChatResult("".join(pieces), finish_reason, model, usage.get("prompt_tokens"),
                          usage.get("completion_tokens"))


def _sse_events(response: Any) -> Iterator[str]:
    """The ``data`` payloads of a server-sent event stream (multi-line data joined by newlines)."""
    data: list[str] = []
    for raw in response:
        line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
        if not line:
            if data:
                yield "\n".join(data)
                data = []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        if name == "data":
            data.append(value[1:] if value.startswith(" ") else value)
    if data:
        yield "\n".join(data)


__all__ = ["API_KEY_ENV", "BASE_URL_ENV", "ChatResult", "DEFAULT_BASE_URL", "OpenAIClient", "OpenAIError",
           "parse_retry_after"]
