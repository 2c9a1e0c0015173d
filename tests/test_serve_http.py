"""``rag serve`` as a real subprocess (uvicorn on a free port) talked to with httpx and raw sockets:
every endpoint, all search modes, filters, rerank, MMR, SSE answers, limits, API key, slow clients,
concurrency, commits seen by a running server, and a graceful SIGTERM."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.slow

QUERY = "the militia and the defense of the frontier"
WHERE = "doc_id LIKE '%1795%'"
STARTUP_SECONDS = 180


class ServerProcess:
    """``python -m ragcli serve DS --port 0 ...``; the URL is read from its stderr, which a thread
    keeps draining into ``lines``."""

    def __init__(self, datastore: Path, *args: str, env: dict[str, str] | None = None):
        command = [sys.executable, "-m", "ragcli", "serve", str(datastore), "--port", "0", "--device", "cpu", *args]
        self.proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env={**os.environ, **(env or {})})
        self.lines: list[str] = []
        self.changed = threading.Condition()
        threading.Thread(target=self._drain, daemon=True).start()
        line = self.wait_for("serving ", STARTUP_SECONDS)
        self.url = line.split(" at ")[1].split()[0]
        self.port = int(self.url.rsplit(":", 1)[1])

    def _drain(self) -> None:
        for line in self.proc.stderr:
            with self.changed:
                self.lines.append(line)
                self.changed.notify_all()
        with self.changed:
            self.lines.append("<exit>")
            self.changed.notify_all()

    def wait_for(self, text: str, seconds: float) -> str:
        """The first stderr line containing ``text``; fails with the output if the process exits first."""
        with self.changed:
            found = self.changed.wait_for(lambda: any(text in l or l == "<exit>" for l in self.lines), seconds)
            match = next((l for l in self.lines if text in l), None)
        assert found and match is not None, f"server never printed {text!r}:\n{''.join(self.lines)}"
        return match

    @property
    def output(self) -> str:
        with self.changed:
            return "".join(self.lines)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=120)


def client(server: ServerProcess, **kwargs) -> httpx.Client:
    return httpx.Client(base_url=server.url, timeout=60, **kwargs)


@pytest.fixture(scope="module")
def server(small_datastore, cross_encoder_dir):
    process = ServerProcess(small_datastore, "--rerank", f"cross-encoder:{cross_encoder_dir}", "--max-k", "50",
                            "--max-query-chars", "300", "--max-body-bytes", "4096", "--max-url-bytes", "2048")
    yield process
    assert process.stop() == 0, process.output


@pytest.fixture(scope="module")
def http(server):
    with client(server) as c:
        yield c


@pytest.fixture(scope="module")
def local(small_datastore):
    from rag import Datastore

    return Datastore.open(small_datastore, device="cpu")


def ids(hits) -> list[int]:
    return [h["chunk_id"] if isinstance(h, dict) else h.chunk_id for h in hits]


def events(response: httpx.Response) -> list[tuple[str, object]]:
    """(event, data) pairs of a server-sent event stream."""
    out, event = [], None
    for line in response.iter_lines():
        if line.startswith("event: "):
            event = line[len("event: "):]
        elif line.startswith("data: "):
            out.append((event, json.loads(line[len("data: "):])))
    return out


# -- endpoints ------------------------------------------------------------------------------


def test_health_info_and_openapi_docs(http, small_datastore, cross_encoder_dir):  # noqa: F811
    from datastores.layout import DatastoreLayout
    from datastores.manifest import read_manifest

    assert http.get("/health").json() == {"ok": True}
    info = http.get("/info").json()
    manifest = read_manifest(DatastoreLayout(small_datastore))
    assert info["chunks"] == manifest.num_chunks and info["shards"] == len(manifest.shards) > 1
    assert info["engine"] == "local" and info["generator"] == "extractive"
    assert info["rerank"] == f"cross-encoder:{cross_encoder_dir}"
    assert info["limits"]["max_k"] == 50 and info["api_key_required"] is False
    schema = http.get("/openapi.json").json()
    assert {"/search", "/ask", "/info", "/health"} <= set(schema["paths"])
    assert "q" in schema["components"]["schemas"]["SearchRequest"]["properties"]
    docs = http.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()


@pytest.mark.parametrize("mode", ["dense", "bm25", "hybrid"])
def test_search_modes_equal_the_python_api(http, local, mode):
    from rag.retrieve import build_retriever

    body = http.get("/search", params={"q": QUERY, "k": 7, "mode": mode}).json()
    assert "hits" in body, body
    expected = build_retriever(local, mode).retrieve(QUERY, 7)
    assert body["mode"] == mode and len(body["hits"]) == 7
    assert ids(body["hits"]) == ids(expected)
    assert [h["score"] for h in body["hits"]] == pytest.approx([h.score for h in expected], abs=1e-4)
    assert body["timings"]  # per-stage seconds of this request


def test_where_filter_over_get_and_post(http, local):
    got = http.get("/search", params={"q": QUERY, "k": 5, "where": WHERE}).json()["hits"]
    posted = http.post("/search", json={"q": QUERY, "k": 5, "where": WHERE, "mode": "bm25"}).json()["hits"]
    assert got and posted and all("1795" in h["doc_id"] for h in got + posted)
    assert ids(got) == ids(local.search(QUERY, k=5, where=WHERE))
    assert ids(posted) == ids(local.search(QUERY, k=5, mode="bm25", where=WHERE))


def test_mmr_and_fusion_options_equal_the_python_api(http, local):
    from rag.retrieve import build_retriever

    body = http.get("/search", params={"q": QUERY, "k": 6, "mmr": 0.3, "depth": 30}).json()
    assert ids(body["hits"]) == ids(build_retriever(local, "dense", mmr=0.3, depth=30).retrieve(QUERY, 6))
    assert ids(body["hits"]) != ids(local.search(QUERY, k=6))  # diversity changed the list
    convex = http.post("/search", json={"q": QUERY, "k": 6, "mode": "hybrid", "fusion": "convex",
                                        "alpha": 0.3, "normalization": "zscore"}).json()
    expected = build_retriever(local, "hybrid", fusion="convex", alpha=0.3, normalization="zscore").retrieve(QUERY, 6)
    assert ids(convex["hits"]) == ids(expected)


def test_rerank_uses_the_servers_cross_encoder(http, local, cross_encoder_dir):
    from rag.retrieve import build_retriever

    body = http.get("/search", params={"q": QUERY, "k": 8, "rerank": "true", "rerank_depth": 8}).json()
    spec = f"cross-encoder:{cross_encoder_dir}"
    expected = build_retriever(local, "dense", rerank=spec, rerank_depth=8, device="cpu").retrieve(QUERY, 8)
    assert ids(body["hits"]) == ids(expected)
    assert [h["score"] for h in body["hits"]] == pytest.approx([h.score for h in expected], abs=1e-4)
    assert "rerank" in body["timings"]


def test_ask_streams_tokens_then_the_answer(http):
    with http.stream("GET", "/ask", params={"q": "What about the militia?", "k": 3}) as response:
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
        stream = events(response)
    tokens = [data for event, data in stream if event == "token"]
    (final,) = [data for event, data in stream if event == "answer"]
    assert stream[-1][0] == "answer" and len(tokens) >= 1
    assert "".join(tokens) == final["answer"]
    assert final["citations"] and len(final["context"]) == 3
    assert {"retrieve", "generate", "total"} <= set(final["timings"])
    with http.stream("POST", "/ask", json={"q": "What about the militia?", "where": WHERE}) as response:
        final = [data for event, data in events(response) if event == "answer"][0]
    assert final["context"] and all("1795" in p["doc_id"] for p in final["context"])


# -- bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["doc_id LIKE", "no_such_column = 1", "1=1 UNION SELECT 1",
                                   "1=1; DROP TABLE chunks", "1=1) UNION (SELECT 2"])
def test_bad_where_is_400_with_the_message_and_the_server_keeps_answering(http, where):
    for response in (http.get("/search", params={"q": QUERY, "where": where}),
                     http.post("/ask", json={"q": QUERY, "where": where})):
        assert response.status_code == 400, response.text
        assert response.headers["content-type"] == "application/json" and response.json()["error"]
    assert http.get("/health").json() == {"ok": True}
    assert len(http.get("/search", params={"q": QUERY, "k": 2}).json()["hits"]) == 2


@pytest.mark.parametrize("params, field", [
    ({"q": QUERY, "k": 0}, "k"), ({"q": QUERY, "k": 51}, "k must be at most 50"),
    ({"q": QUERY, "depth": 5000}, "depth must be at most 1000"), ({"q": QUERY, "mode": "fuzzy"}, "mode"),
    ({"q": QUERY, "alpha": 2}, "alpha"), ({"q": QUERY, "colour": "red"}, "colour"), ({}, "q"),
    ({"q": ""}, "q"), ({"q": "   "}, "empty"), ({"q": "x" * 301}, "limit is 300"), ({"q": QUERY, "k": "ten"}, "k"),
])
def test_invalid_or_out_of_limit_parameters_are_422(http, params, field):
    response = http.get("/search", params=params)
    assert response.status_code == 422 and field in response.json()["error"], response.text


def test_rerank_without_a_loaded_reranker_is_400(commits_server):
    with client(commits_server) as c:
        response = c.get("/search", params={"q": QUERY, "rerank": "true"})
    assert response.status_code == 400 and "--rerank" in response.json()["error"]


def test_unknown_path_is_a_json_404(http):
    response = http.get("/nope")
    assert response.status_code == 404 and "/search" in response.json()["error"]


def test_body_and_url_limits(http, server):
    big = {"q": QUERY, "where": "doc_id <> '" + "x" * 5000 + "'"}
    response = http.post("/search", json=big)
    assert response.status_code == 413 and "limit is 4096" in response.json()["error"]
    chunked = http.post("/search", content=iter([json.dumps(big).encode()]),
                        headers={"content-type": "application/json"})
    assert chunked.status_code == 413
    response = http.get("/search", params={"q": QUERY, "where": "doc_id <> '" + "x" * 3000 + "'"})
    assert response.status_code == 414 and "limit is 2048" in response.json()["error"]
    response = http.get("/health", headers={"X-Big": "a" * 20_000})
    assert response.status_code == 431 and "limit is 16384" in response.json()["error"]
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as raw:  # a head that never ends
        raw.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 40_000)
        assert raw.recv(200).startswith(b"HTTP/1.1 400")
    assert http.get("/health").status_code == 200


def test_idle_and_half_sent_requests_do_not_block_others(server, http):
    holders = [socket.create_connection(("127.0.0.1", server.port), timeout=30) for _ in range(4)]
    try:
        holders[1].sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")              # half a request head
        holders[2].sendall(b"POST /search HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                           b"Content-Length: 100\r\n\r\n{\"q\": ")                 # half a body
        holders[3].sendall(b"GET /heal")                                          # half a request line
        with client(server) as fresh:
            assert fresh.get("/health").json() == {"ok": True}
            assert len(fresh.get("/search", params={"q": QUERY, "k": 3}).json()["hits"]) == 3
    finally:
        for sock in holders:
            sock.close()


def test_concurrent_requests_are_all_answered(server, http):
    queries = [QUERY, "duties on imported spirits", "treaty with the Indian tribes", "public credit and debt"]
    modes = ["dense", "bm25", "hybrid"]
    cases = [(queries[i % 4], modes[i % 3]) for i in range(48)]
    expected = {c: ids(http.get("/search", params={"q": c[0], "mode": c[1], "k": 5}).json()["hits"])
                for c in set(cases)}

    def ask(case):
        with client(server) as c:
            response = c.get("/search", params={"q": case[0], "mode": case[1], "k": 5})
            return response.status_code, ids(response.json()["hits"])

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(ask, cases))
    assert all(status == 200 for status, _ in results)
    assert [hits for _, hits in results] == [expected[c] for c in cases]


# -- API key --------------------------------------------------------------------------------


def test_api_key_is_required_and_never_echoed(small_datastore):
    key = "s3cret-Key-0123456789"
    process = ServerProcess(small_datastore, "--api-key-env", "MY_SERVICE_KEY", "--access-log",
                            env={"MY_SERVICE_KEY": key})
    try:
        with client(process) as c:
            assert c.get("/health").status_code == 200                       # liveness stays open
            refused = [c.get("/search", params={"q": QUERY}), c.get("/info"),
                       c.get("/search", params={"q": QUERY}, headers={"Authorization": "Bearer wrong"}),
                       c.get("/search", params={"q": QUERY}, headers={"X-API-Key": key[:-1]}),
                       c.get("/search", params={"q": QUERY}, headers={"Authorization": key})]
            assert [r.status_code for r in refused] == [401] * 5
            bearer = c.get("/search", params={"q": QUERY, "k": 2}, headers={"Authorization": f"Bearer {key}"})
            header = c.get("/info", headers={"X-API-Key": key})
            bad = c.get("/search", params={"q": QUERY, "where": "nope ("}, headers={"X-API-Key": key})
            assert bearer.status_code == 200 and len(bearer.json()["hits"]) == 2
            assert header.status_code == 200 and header.json()["api_key_required"] is True
            assert bad.status_code == 400
            bodies = [r.text for r in refused + [bearer, header, bad]]
    finally:
        assert process.stop() == 0
    assert all(key not in body for body in bodies)
    access_log = process.proc.stdout.read()
    assert key not in process.output and key not in access_log
    assert "GET /info" in access_log and "401" in access_log                  # the access log did run


def test_a_named_key_variable_that_is_not_set_is_a_one_line_error(small_datastore):
    from click.testing import CliRunner

    from ragcli import main

    env = {k: v for k, v in os.environ.items() if k != "NOT_SET_KEY"}
    result = CliRunner(env=env).invoke(main, ["serve", str(small_datastore), "--api-key-env", "NOT_SET_KEY"])
    assert result.exit_code != 0 and "NOT_SET_KEY" in result.output and "Traceback" not in result.output


# -- commits and shutdown -------------------------------------------------------------------


@pytest.fixture(scope="module")
def commits_copy(small_datastore, tmp_path_factory) -> Path:
    target = tmp_path_factory.mktemp("serve-commits") / "ds"
    shutil.copytree(small_datastore, target)
    return target


@pytest.fixture(scope="module")
def commits_server(commits_copy):
    process = ServerProcess(commits_copy)
    yield process
    assert process.stop() == 0, process.output


def test_a_running_server_sees_commits(commits_server, commits_copy):
    with client(commits_server) as c:
        before = c.get("/search", params={"q": QUERY, "k": 20, "mode": "hybrid"}).json()["hits"]
        assert any("1795" in h["doc_id"] for h in before)
        filtered = subprocess.run([sys.executable, "-m", "ragcli", "datastore", "filter", str(commits_copy),
                                   "--where", "doc_id NOT LIKE '%1795%'"], capture_output=True, text=True, timeout=300)
        assert filtered.returncode == 0, filtered.stderr
        for mode in ("dense", "bm25", "hybrid"):
            after = c.get("/search", params={"q": QUERY, "k": 20, "mode": mode}).json()["hits"]
            assert after and not any("1795" in h["doc_id"] for h in after), mode
        assert c.get("/info").json()["live_chunks"] < c.get("/info").json()["chunks"]


def test_sigterm_finishes_the_request_in_flight_and_exits_0(small_datastore):
    process = ServerProcess(small_datastore)
    body = json.dumps({"q": QUERY, "k": 3, "mode": "bm25"}).encode()
    with socket.create_connection(("127.0.0.1", process.port), timeout=60) as raw:
        raw.sendall(b"POST /search HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                    b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body[:10])
        with client(process) as c:   # the request above has reached the app once a later one is answered
            assert c.get("/health").status_code == 200
        process.proc.send_signal(signal.SIGTERM)
        process.wait_for("Shutting down", 60)
        assert _refuses_connections(process.port, within=30)  # no new connections once shutdown began
        raw.sendall(body[10:])
        response = b""
        while chunk := raw.recv(65536):
            response += chunk
    assert response.startswith(b"HTTP/1.1 200")
    assert len(json.loads(response.split(b"\r\n\r\n", 1)[1])["hits"]) == 3
    assert process.proc.wait(timeout=120) == 0, process.output


def _refuses_connections(port: int, within: float) -> bool:
    """Whether 127.0.0.1:port refuses connections within ``within`` seconds (uvicorn logs that it
    is shutting down a moment before it closes its listening socket)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
        except OSError:
            return True
        time.sleep(0.05)
    return False


def _corrupt_rows_in_place(root: Path) -> None:
    """Same size, still UTF-8, written into the mapped files (no truncation): only row checksums notice."""
    for rows in root.glob("shards/*/rows.bin"):
        with open(rows, "r+b") as f:
            data = f.read()
            f.seek(0)
            f.write(data.replace(b"the ", b"thy "))


def test_a_corrupt_row_is_a_json_500_and_the_server_keeps_answering(small_datastore, tmp_path):
    root = tmp_path / "ds"
    shutil.copytree(small_datastore, root)
    process = ServerProcess(root)
    try:
        _corrupt_rows_in_place(root)
        with client(process) as c:
            response = c.get("/search", params={"q": QUERY, "mode": "bm25", "k": 10})
            assert response.status_code == 500 and "rows.bin" in response.json()["error"], response.text
            assert c.get("/health").json() == {"ok": True}
    finally:
        assert process.stop() == 0


def test_a_corrupt_datastore_is_refused_at_start_with_one_line(small_datastore, tmp_path):
    root = tmp_path / "ds"
    shutil.copytree(small_datastore, root)
    _corrupt_rows_in_place(root)
    done = subprocess.run([sys.executable, "-m", "ragcli", "serve", str(root), "--port", "0", "--device", "cpu"],
                          capture_output=True, text=True, timeout=STARTUP_SECONDS)
    assert done.returncode == 1 and "rows.bin" in done.stderr and "Traceback" not in done.stderr, done.stderr


def test_listen_makes_tcp_sockets_and_names_a_taken_port():
    from rag.service import ServiceError, listen

    sock = listen("127.0.0.1", 0)
    try:
        assert sock.proto == socket.IPPROTO_TCP  # so asyncio sets TCP_NODELAY on accepted connections
        with pytest.raises(ServiceError, match=f"cannot listen on 127.0.0.1:{sock.getsockname()[1]}"):
            listen("127.0.0.1", sock.getsockname()[1])
    finally:
        sock.close()


def test_stdin_mode_answers_json_lines(small_datastore, local):
    from click.testing import CliRunner

    from ragcli import main

    queries = [QUERY, "duties on imported spirits"]
    result = CliRunner().invoke(main, ["serve", str(small_datastore), "--stdin", "--mode", "bm25", "-k", "3",
                                       "--where", WHERE], input="\n".join(queries) + "\n\n")
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.output.splitlines() if line.startswith("{")]
    assert [line["query"] for line in lines] == queries
    for line, query in zip(lines, queries):
        assert ids(line["hits"]) == ids(local.search(query, k=3, mode="bm25", where=WHERE))


def test_where_needs_stdin_mode(small_datastore):
    from click.testing import CliRunner

    from ragcli import main

    result = CliRunner().invoke(main, ["serve", str(small_datastore), "--where", WHERE])
    assert result.exit_code == 2 and "--stdin" in result.output
