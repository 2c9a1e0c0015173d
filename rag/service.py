"""``rag serve``: a datastore behind an ASGI (FastAPI) app served by uvicorn.

Endpoints: ``GET|POST /search`` (dense, bm25, hybrid; where filters; rerank with the server's
reranker; MMR), ``GET|POST /ask`` (server-sent events: one ``token`` event per generated piece,
then one ``answer`` event with text, citations and timings, or an ``error`` event), ``/info``,
``/health`` and the OpenAPI docs (``/docs``, ``/openapi.json``). Searches run in worker threads
through one ``rag.serve.QueryEngine``, so a slow search never blocks ``/health``.

Bad input is a 4xx JSON ``{"error": message}``: 400 for a bad filter or option, 401 for a missing
API key, 404 unknown path, 413 body too large, 414 URL too long, 431 headers too large (a request
head that never ends is cut off by uvicorn's h11 buffer limit with a 400), 422 invalid or out-of-limit
parameters. An optional API key (from an environment variable) is compared in constant time and
never written anywhere.
"""

import hmac
import logging
import os
import queue
import signal
import socket
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Annotated, Any, Iterator, Literal, Sequence

from fastapi import Depends, FastAPI, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.sse import EventSourceResponse, ServerSentEvent
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException
from starlette.middleware.body_limit import RequestBodyLimitMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from datastores.errors import DatastoreError, UserError
from datastores.records import Hit
from datastores.sql import SqlError
from rag.retrieve import FUSIONS, MODES, NORMALIZATIONS, RetrieverConfig
from rag.serve import QueryEngine

_DEFAULTS = RetrieverConfig()  # the request's defaults are the library's, stated once

logger = logging.getLogger("terarag.service")

DEFAULT_API_KEY_ENV = "TERARAG_API_KEY"
OPEN_PATHS = frozenset({"/health", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"})
ENDPOINTS = "/search, /ask, /info, /health, /docs"


class ServiceError(UserError):
    """The service cannot start as asked (bad setting, port taken, missing key variable)."""


class LimitError(UserError):
    """A request parameter is beyond the server's limits (answered with 422)."""


@dataclass(frozen=True)
class ServiceSettings:
    """Request defaults and limits of the app; ``api_key`` None means no key is required."""

    default_k: int = 10
    default_mode: str = "dense"
    max_k: int = 1000
    max_depth: int = 1000
    max_query_chars: int = 2000
    max_body_bytes: int = 64 * 1024
    max_url_bytes: int = 8 * 1024
    max_header_bytes: int = 16 * 1024
    api_key: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        for name in ("default_k", "max_k", "max_depth", "max_query_chars", "max_body_bytes", "max_url_bytes",
                     "max_header_bytes"):
            if getattr(self, name) < 1:
                raise ServiceError(f"{name} must be at least 1 (got {getattr(self, name)})")
        if self.default_k > self.max_k:
            raise ServiceError(f"the default k ({self.default_k}) is above max_k ({self.max_k})")
        if self.default_mode not in MODES:
            raise ServiceError(f"unknown mode {self.default_mode!r}; choose one of {', '.join(MODES)}")


class SearchRequest(BaseModel):
    """Parameters of ``/search`` (query string for GET, JSON body for POST)."""

    model_config = ConfigDict(extra="forbid")

    q: str = Field(min_length=1, description="The query text.")
    k: int | None = Field(None, ge=1, description="Hits to return (default: the server's -k).")
    mode: Literal[MODES] | None = Field(None, description="dense, bm25 or hybrid (default: the server's --mode).")
    where: str | None = Field(None, description="SQL filter over chunk columns and metadata.")
    fusion: Literal[FUSIONS] = _DEFAULTS.fusion
    alpha: float = Field(_DEFAULTS.alpha, ge=0, le=1, description="Weight of the dense side in hybrid fusion.")
    rrf_k: int = Field(_DEFAULTS.rrf_k, ge=0)
    normalization: Literal[NORMALIZATIONS] = _DEFAULTS.normalization
    depth: int = Field(_DEFAULTS.depth, ge=1, description="Hits asked of each first stage (and the MMR pool).")
    rerank: bool = Field(False, description="Rerank with the reranker the server was started with.")
    rerank_depth: int = Field(_DEFAULTS.rerank_depth, ge=1)
    mmr: float | None = Field(None, ge=0, le=1, description="MMR lambda (1 = no diversity).")


class AskRequest(SearchRequest):
    """Parameters of ``/ask``: retrieval as for ``/search`` (k defaults to the pipeline's k)."""


@dataclass
class Retrieved:
    """An ask request with its hits, found before the event stream starts (so errors are 4xx)."""

    question: str
    hits: list[Hit]
    seconds: float


def checked_k(params: SearchRequest, settings: ServiceSettings, default_k: int) -> int:
    """The request's k after the server's limits on k, depths and query length."""
    k = params.k or default_k
    for name, value, most in (("k", k, settings.max_k), ("depth", params.depth, settings.max_depth),
                              ("rerank_depth", params.rerank_depth, settings.max_depth)):
        if value > most:
            raise LimitError(f"{name} must be at most {most} (got {value})")
    if len(params.q) > settings.max_query_chars:
        raise LimitError(f"the query is {len(params.q)} characters; the limit is {settings.max_query_chars}")
    if not params.q.strip():
        raise LimitError("the query is empty")
    return k


def retriever_config(params: SearchRequest, settings: ServiceSettings, engine: QueryEngine) -> RetrieverConfig:
    """The retrieval pipeline a request asks for."""
    if params.rerank and engine.rerank_spec is None:
        raise UserError("this server has no reranker; start it with --rerank KIND:MODEL")
    return RetrieverConfig(mode=params.mode or settings.default_mode, fusion=params.fusion, alpha=params.alpha,
                           rrf_k=params.rrf_k, depth=params.depth,
                           rerank=engine.rerank_spec if params.rerank else None,
                           rerank_depth=params.rerank_depth, mmr=params.mmr, normalization=params.normalization)


# -- middleware and errors ------------------------------------------------------------------


def error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def authorized(headers: Sequence[tuple[bytes, bytes]], key: str) -> bool:
    """True when ``Authorization: Bearer KEY`` or ``X-API-Key: KEY`` carries ``key`` (constant-time)."""
    expected = key.encode("utf-8")
    for name, value in headers:
        name = name.lower()
        if name == b"authorization" and value[:7].lower() == b"bearer ":
            value = value[7:].strip()
        elif name != b"x-api-key":
            continue
        if hmac.compare_digest(value, expected):
            return True
    return False


def content_length(headers: Sequence[tuple[bytes, bytes]]) -> int | None:
    """The declared body size, if any (a chunked body is counted by Starlette's body limit)."""
    for name, value in headers:
        if name.lower() == b"content-length" and value.strip().isdigit():
            return int(value)
    return None


class GuardMiddleware:
    """Refuses declared bodies over the limit (413), over-long URLs (414) or headers (431) and,
    when a key is set, requests without it (401)."""

    def __init__(self, app: ASGIApp, settings: ServiceSettings):
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            response = self.refusal(scope)
            if response is not None:
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def refusal(self, scope: Scope) -> JSONResponse | None:
        body_bytes = content_length(scope["headers"])
        if body_bytes is not None and body_bytes > self.settings.max_body_bytes:
            return error(413, f"the request body is {body_bytes} bytes; the limit is {self.settings.max_body_bytes}")
        url_bytes = len(scope.get("raw_path") or scope["path"].encode()) + len(scope.get("query_string", b""))
        if url_bytes > self.settings.max_url_bytes:
            return error(414, f"the URL is {url_bytes} bytes; the limit is {self.settings.max_url_bytes} "
                              "(send long filters with POST)")
        header_bytes = sum(len(name) + len(value) for name, value in scope["headers"])
        if header_bytes > self.settings.max_header_bytes:
            return error(431, f"the request headers are {header_bytes} bytes; the limit is "
                              f"{self.settings.max_header_bytes}")
        key = self.settings.api_key
        if key and scope["path"] not in OPEN_PATHS and not authorized(scope["headers"], key):
            return error(401, "missing or wrong API key: send 'Authorization: Bearer KEY' or 'X-API-Key: KEY'",
                         {"WWW-Authenticate": "Bearer"})
        return None


def validation_message(exc: RequestValidationError) -> str:
    """Pydantic's errors as one line: ``field: problem; field: problem``."""
    parts = []
    for item in exc.errors():
        where = ".".join(str(p) for p in item.get("loc", ())[1:]) or "request"
        parts.append(f"{where}: {item.get('msg', 'invalid')}")
    return "; ".join(parts)


def add_error_handlers(app: FastAPI) -> None:
    """Every failure becomes ``{"error": message}`` with a 4xx (or 500 for a server fault)."""

    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error(422, validation_message(exc))

    async def http(request: Request, exc: HTTPException) -> JSONResponse:
        if exc.status_code == 404:
            return error(404, f"unknown path {request.url.path}; endpoints: {ENDPOINTS}")
        return error(exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    async def limit(request: Request, exc: LimitError) -> JSONResponse:
        return error(422, str(exc))

    async def bad_request(request: Request, exc: Exception) -> JSONResponse:
        return error(400, str(exc))

    async def datastore(request: Request, exc: DatastoreError) -> JSONResponse:
        if isinstance(exc, (SqlError, ValueError)):  # a bad filter or query, e.g. EmptyQueryError
            return error(400, str(exc))
        logger.error("datastore error on %s: %s", request.url.path, exc)
        return error(500, f"the datastore cannot answer: {exc}")

    async def internal(request: Request, exc: Exception) -> JSONResponse:
        logger.error("internal error on %s", request.url.path, exc_info=exc)
        return error(500, f"internal server error ({type(exc).__name__}; logged on the server)")

    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(HTTPException, http)
    app.add_exception_handler(LimitError, limit)
    app.add_exception_handler(ValueError, bad_request)
    app.add_exception_handler(DatastoreError, datastore)
    app.add_exception_handler(Exception, internal)


# -- the app --------------------------------------------------------------------------------


def answer_events(engine: QueryEngine, found: Retrieved) -> Iterator[ServerSentEvent]:
    """Server-sent events of one answer: ``token`` per generated piece, then ``answer`` (or ``error``).

    The pipeline runs in its own thread and hands pieces over a queue as they are generated."""
    pieces: queue.Queue[tuple[str, Any]] = queue.Queue()

    def run() -> None:
        try:
            answer = engine.answer(found.question, found.hits, on_token=lambda piece: pieces.put(("token", piece)))
            payload = answer.to_dict()
            payload["timings"] = {"retrieve": found.seconds, **payload["timings"]}
            pieces.put(("answer", payload))
        except Exception as exc:  # noqa: BLE001 - reported to the client as an error event
            logger.exception("answer failed")
            pieces.put(("error", {"error": str(exc)}))

    threading.Thread(target=run, name="rag-answer", daemon=True).start()
    while True:
        event, data = pieces.get()
        yield ServerSentEvent(event=event, data=data)
        if event != "token":
            return


def create_app(engine: QueryEngine, settings: ServiceSettings = ServiceSettings()) -> FastAPI:
    """The FastAPI app serving ``engine`` with ``settings``' defaults, limits and API key."""
    app = FastAPI(title="terarag", summary="Search and answer from a terarag datastore.")
    app.add_middleware(RequestBodyLimitMiddleware, max_body_size=settings.max_body_bytes)  # chunked bodies
    app.add_middleware(GuardMiddleware, settings=settings)  # outermost: declared sizes, URL, API key
    add_error_handlers(app)

    async def search(params: SearchRequest) -> dict[str, Any]:
        k = checked_k(params, settings, settings.default_k)
        config = retriever_config(params, settings, engine)
        result = await run_in_threadpool(engine.search, params.q, k, params.where, config)
        return {"query": params.q, "mode": config.mode, "k": k, "hits": [h.to_dict() for h in result.hits],
                "timings": result.timings}

    async def retrieve(params: AskRequest) -> Retrieved:
        if engine.pipeline is None:
            raise UserError("this server has no answer pipeline")
        k = checked_k(params, settings, engine.pipeline.k)
        result = await run_in_threadpool(engine.search, params.q, k, params.where,
                                         retriever_config(params, settings, engine))
        return Retrieved(params.q, result.hits, sum(result.timings.values()))

    @app.get("/search", summary="Top-k chunks for a query")
    async def search_get(params: Annotated[SearchRequest, Query()]) -> dict[str, Any]:
        return await search(params)

    @app.post("/search", summary="Top-k chunks for a query (JSON body)")
    async def search_post(params: SearchRequest) -> dict[str, Any]:
        return await search(params)

    async def retrieved_from_query(params: Annotated[AskRequest, Query()]) -> Retrieved:
        return await retrieve(params)

    async def retrieved_from_body(params: AskRequest) -> Retrieved:
        return await retrieve(params)

    @app.get("/ask", response_class=EventSourceResponse, summary="Answer a question (server-sent events)")
    def ask_get(found: Annotated[Retrieved, Depends(retrieved_from_query)]) -> Iterator[ServerSentEvent]:
        yield from answer_events(engine, found)

    @app.post("/ask", response_class=EventSourceResponse, summary="Answer a question (JSON body; SSE)")
    def ask_post(found: Annotated[Retrieved, Depends(retrieved_from_body)]) -> Iterator[ServerSentEvent]:
        yield from answer_events(engine, found)

    @app.get("/info", summary="What this server serves")
    async def info() -> dict[str, Any]:
        limits = {"max_k": settings.max_k, "max_depth": settings.max_depth, "max_query_chars": settings.max_query_chars,
                  "max_body_bytes": settings.max_body_bytes, "max_url_bytes": settings.max_url_bytes,
                  "max_header_bytes": settings.max_header_bytes}
        return {**engine.describe(), "modes": list(MODES), "default_k": settings.default_k,
                "default_mode": settings.default_mode, "limits": limits, "api_key_required": bool(settings.api_key)}

    @app.get("/health", summary="Liveness")
    async def health() -> dict[str, bool]:
        return {"ok": True}

    return app


# -- running it -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ServerOptions:
    """uvicorn settings: connection limits, keep-alive, graceful shutdown, request-head size."""

    limit_concurrency: int = 256
    timeout_keep_alive: int = 5
    graceful_timeout: int = 30
    max_head_bytes: int = 24 * 1024
    access_log: bool = False


def api_key_from_env(name: str | None) -> str | None:
    """The API key in environment variable ``name``; with no name, ``TERARAG_API_KEY`` if set."""
    value = os.environ.get(name or DEFAULT_API_KEY_ENV, "")
    if name and not value:
        raise ServiceError(f"--api-key-env {name}: that environment variable is not set or is empty")
    return value or None


def listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0: a free one). It is made with protocol TCP
    so that asyncio sets TCP_NODELAY on accepted connections (without it every response waits
    ~40 ms for a delayed ACK between its head and its body)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise ServiceError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    return sock


def socket_url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


@contextmanager
def quiet_exit_signals() -> Iterator[None]:
    """uvicorn re-raises SIGINT/SIGTERM after its graceful shutdown; make that a normal return."""
    previous = {sig: signal.signal(sig, lambda *_: None) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run_server(app: FastAPI, sock: socket.socket, options: ServerOptions = ServerOptions()) -> None:
    """Serve ``app`` on ``sock`` until SIGINT/SIGTERM; in-flight requests finish first."""
    import uvicorn

    config = uvicorn.Config(app, http="h11", loop="asyncio", ws="none", lifespan="off",
                            limit_concurrency=options.limit_concurrency,
                            timeout_keep_alive=options.timeout_keep_alive,
                            timeout_graceful_shutdown=options.graceful_timeout,
                            h11_max_incomplete_event_size=options.max_head_bytes,
                            access_log=options.access_log, server_header=False, log_level="info")
    with quiet_exit_signals():
        uvicorn.Server(config).run(sockets=[sock])
