"""A small OpenAI-compatible chat server for tests: standard-library ``http.server`` on 127.0.0.1,
a free port, a background thread, scripted replies and a record of every request.

Each ``POST /v1/chat/completions`` takes the next scripted :class:`Reply`; when the script is
empty, ``responder(payload)`` answers (a deterministic stand-in for a model), else ``default``. A 200 reply answers a ``"stream": true`` request with server-sent events
(``chunks``, or the content split into words) and any other request with one JSON completion.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable


@dataclass
class Reply:
    """One scripted answer. ``body`` (raw bytes) replaces the generated body; ``delay`` waits
    before the status line; ``drop`` closes the connection without answering."""

    content: str = ""
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    chunks: list[str] | None = None
    body: bytes | None = None
    delay: float = 0.0
    drop: bool = False
    finish_reason: str = "stop"
    cut_after: int | None = None     # streaming: close the connection after this many pieces


def completion(content: str, chunks: list[str] | None = None) -> Reply:
    return Reply(content=content, chunks=chunks)


def error(status: int, message: str, retry_after: str | None = None) -> Reply:
    headers = {"Retry-After": retry_after} if retry_after is not None else {}
    body = json.dumps({"error": {"message": message, "type": "server_error", "code": status}}).encode()
    return Reply(status=status, headers=headers, body=body)


def raw(body: bytes, status: int = 200, content_type: str = "application/json") -> Reply:
    return Reply(status=status, body=body, headers={"Content-Type": content_type})


@dataclass
class Recorded:
    """A request the server received."""

    path: str
    headers: dict[str, str]
    payload: Any


class ScriptedOpenAIServer:
    """``with ScriptedOpenAIServer() as server: ... server.base_url ...``"""

    def __init__(self, default: Reply | None = None, responder: Callable[[Any], Reply] | None = None):
        self.script: deque[Reply] = deque()
        self.default = default or completion("OK [1]")
        self.responder = responder
        self.requests: list[Recorded] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def push(self, *replies: Reply) -> "ScriptedOpenAIServer":
        with self._lock:
            self.script.extend(replies)
        return self

    def _next(self, payload: Any) -> Reply:
        with self._lock:
            if self.script:
                return self.script.popleft()
            responder = self.responder
        return responder(payload) if responder is not None else self.default

    def __enter__(self) -> "ScriptedOpenAIServer":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # quiet
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                data = self.rfile.read(length)
                try:
                    payload = json.loads(data)
                except ValueError:
                    payload = data
                with server._lock:
                    server.requests.append(Recorded(self.path, dict(self.headers.items()), payload))
                reply = server._next(payload)
                if reply.delay and server._stop.wait(reply.delay):
                    return
                if reply.drop:
                    self.close_connection = True
                    return
                if self.path.rstrip("/") != "/v1/chat/completions":
                    reply = error(404, f"no route {self.path}")
                try:
                    if reply.body is None and reply.status == 200 and isinstance(payload, dict) and payload.get("stream"):
                        self._stream(reply, payload)
                    else:
                        self._plain(reply, payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def _plain(self, reply: Reply, payload: Any) -> None:
                body = reply.body
                if body is None:
                    model = payload.get("model") if isinstance(payload, dict) else None
                    body = json.dumps({
                        "id": "cmpl-test", "object": "chat.completion", "created": int(time.time()), "model": model,
                        "choices": [{"index": 0, "finish_reason": reply.finish_reason,
                                     "message": {"role": "assistant", "content": reply.content}}],
                        "usage": {"prompt_tokens": 11, "completion_tokens": len(reply.content.split()),
                                  "total_tokens": 11 + len(reply.content.split())},
                    }).encode()
                self.send_response(reply.status)
                headers = {"Content-Type": "application/json", **reply.headers}
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _stream(self, reply: Reply, payload: dict) -> None:
                pieces = reply.chunks if reply.chunks is not None else [
                    w + " " for w in reply.content.split(" ")[:-1]] + reply.content.split(" ")[-1:]
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Cache-Control", "no-cache")
                self.end_headers()
                self.close_connection = True

                def event(obj: dict) -> None:
                    self.wfile.write(b"data: " + json.dumps(obj).encode() + b"\n\n")
                    self.wfile.flush()

                base = {"id": "cmpl-test", "object": "chat.completion.chunk", "model": payload.get("model")}
                self.wfile.write(b": keep-alive comment\n\n")
                event({**base, "choices": [{"index": 0, "delta": {"role": "assistant"}, "finish_reason": None}]})
                for i, piece in enumerate(pieces):
                    if i == reply.cut_after:
                        return
                    event({**base, "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]})
                event({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": reply.finish_reason}]})
                self.wfile.write(b"data: [DONE]\n\n")
                self.wfile.flush()

        return Handler


__all__ = ["Recorded", "Reply", "ScriptedOpenAIServer", "completion", "error", "raw"]
