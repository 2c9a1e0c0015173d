#!/usr/bin/env python
"""`rag serve` under load: queries/s and p50/p99 latency at 1, 8 and 32 concurrent clients, and
what slow clients (connections that trickle or hold half a request) do to everyone else.

    python benchmarks/serve.py                      # builds benchmarks/out/serve-ds if needed
    python benchmarks/serve.py --seconds 10 --modes dense,bm25,hybrid --no-docs

The server is the real command (``python -m ragcli serve DS --port 0``, uvicorn, local engine) on
the example corpus datastore. Each client is a thread with its own ``httpx.Client`` (keep-alive)
sending ``GET /search`` with a fixed list of queries, round robin, for ``--seconds`` per level;
latency is measured per request on the client. The slow-client part opens ``--slow-clients``
sockets (half of them trickle a request head one byte every 0.5 s, half send half a request and
then hold) and measures ``/health`` and searches at 8 clients while they are held, against the
same figures without them.

Prints a table, writes ``benchmarks/out/serve.json`` and (unless ``--no-docs``) replaces the
"HTTP service" section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, git_state, package_versions, short_path  # noqa: E402

OUT = REPO / "benchmarks" / "out"
DOCS = REPO / "docs" / "benchmarks.md"
SECTION = "## HTTP service (`benchmarks/serve.py`)"
QUERIES = ["the militia and the defense of the frontier", "duties on imported spirits",
           "treaty with the Indian tribes", "public credit and the national debt", "the navy and commerce",
           "relations with Great Britain and France", "the census and representation", "post offices and roads",
           "the judiciary and the courts", "a national bank", "the war with England", "the Mediterranean and Algiers",
           "manufactures and agriculture", "the sinking fund", "the mint and the coinage", "the territory of Louisiana"]


def build_datastore(path: Path) -> None:
    if (path / "manifest.json").is_file():
        return
    print(f"building {short_path(path)} from examples/corpus ...", flush=True)
    subprocess.run([sys.executable, "-m", "ragcli", "index", str(REPO / "examples" / "corpus"), "-o", str(path),
                    "--device", "cpu", "-q"], check=True)


class Server:
    """The real ``rag serve`` subprocess; ``url`` read from the line it prints."""

    def __init__(self, datastore: Path):
        command = [sys.executable, "-m", "ragcli", "serve", str(datastore), "--port", "0", "--device", "cpu",
                   "--limit-concurrency", "1024"]
        self.proc = subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
        for line in self.proc.stderr:
            if line.startswith("serving "):
                self.url = line.split(" at ")[1].split()[0]
                break
        else:
            raise SystemExit("rag serve did not start")
        threading.Thread(target=lambda: [None for _ in self.proc.stderr], daemon=True).start()
        self.port = int(self.url.rsplit(":", 1)[1])

    def stop(self) -> int:
        self.proc.terminate()
        return self.proc.wait(timeout=60)


def run_clients(url: str, clients: int, seconds: float, path: str, params: dict) -> dict:
    """``clients`` threads request ``path`` for ``seconds``; throughput and latency percentiles.
    Clients are created first; the clock starts when all of them are ready."""
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors = [0] * clients
    clock: dict[str, float] = {}
    ready = threading.Barrier(clients, action=lambda: clock.update(start=time.perf_counter()))

    def worker(i: int) -> None:
        with httpx.Client(base_url=url, timeout=120) as client:
            ready.wait()
            n = i
            while time.perf_counter() < clock["start"] + seconds:
                started = time.perf_counter()
                response = client.get(path, params={**params, "q": QUERIES[n % len(QUERIES)]})
                latencies[i].append(time.perf_counter() - started)
                errors[i] += response.status_code != 200
                n += 1

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - clock["start"]
    flat = np.array([x for per in latencies for x in per])
    return {"clients": clients, "requests": int(flat.size), "errors": int(sum(errors)),
            "qps": flat.size / elapsed, "p50_ms": float(np.percentile(flat, 50) * 1e3),
            "p99_ms": float(np.percentile(flat, 99) * 1e3), "max_ms": float(flat.max() * 1e3)}


class SlowClients:
    """Sockets that hold the server: half trickle a request head a byte at a time, half send half a
    request and wait."""

    def __init__(self, port: int, count: int):
        self.stop = threading.Event()
        self.sockets = [socket.create_connection(("127.0.0.1", port), timeout=30) for _ in range(count)]
        for i, sock in enumerate(self.sockets):
            if i % 2:
                sock.sendall(b"POST /search HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\n\r\n{\"q\": ")
        self.thread = threading.Thread(target=self._trickle, daemon=True)
        self.thread.start()

    def _trickle(self) -> None:
        head = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 10_000
        position = 0
        while not self.stop.wait(0.5) and position < len(head):
            for sock in self.sockets[::2]:
                try:
                    sock.sendall(head[position:position + 1])
                except OSError:
                    pass
            position += 1

    def close(self) -> int:
        """Close every socket; returns how many the server had not closed (still held)."""
        self.stop.set()
        self.thread.join()
        held = 0
        for sock in self.sockets:
            sock.setblocking(False)
            try:
                held += sock.recv(1) != b""
            except BlockingIOError:
                held += 1
            except OSError:
                pass
            sock.close()
        return held


def measure(server: Server, modes: list[str], levels: list[int], seconds: float, slow: int) -> dict:
    for mode in modes:  # warm the query path of every mode once
        httpx.get(f"{server.url}/search", params={"q": QUERIES[0], "mode": mode}, timeout=120).raise_for_status()
    load = [{"mode": mode, **run_clients(server.url, c, seconds, "/search", {"mode": mode, "k": 10})}
            for mode in modes for c in levels]
    base = {"health": run_clients(server.url, 1, seconds / 2, "/health", {}),
            "search": run_clients(server.url, 8, seconds, "/search", {"mode": modes[0], "k": 10})}
    holders = SlowClients(server.port, slow)
    try:
        held = {"health": run_clients(server.url, 1, seconds / 2, "/health", {}),
                "search": run_clients(server.url, 8, seconds, "/search", {"mode": modes[0], "k": 10})}
    finally:
        still_held = holders.close()
    return {"load": load, "slow_clients": {"count": slow, "still_open_at_end": still_held, "mode": modes[0],
                                           "without": base, "with": held}}


def table(results: dict) -> str:
    rows = ["| mode | clients | requests | errors | queries/s | p50 ms | p99 ms |",
            "|---|---:|---:|---:|---:|---:|---:|"]
    for r in results["load"]:
        rows.append(f"| {r['mode']} | {r['clients']} | {r['requests']} | {r['errors']} | {r['qps']:.1f} | "
                    f"{r['p50_ms']:.1f} | {r['p99_ms']:.1f} |")
    slow = results["slow_clients"]
    rows += ["", f"Slow clients ({slow['count']} sockets: half trickle a request head a byte per 0.5 s, half hold "
                 f"half a request; {slow['still_open_at_end']} still open at the end):", "",
             "| request | slow clients | clients | requests | errors | p50 ms | p99 ms | max ms |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for label, key in (("without", "without"), ("with", "with")):
        for what in ("health", "search"):
            r = slow[key][what]
            name = "/health" if what == "health" else f"/search ({slow['mode']})"
            rows.append(f"| {name} | {label} | {r['clients']} | {r['requests']} | {r['errors']} | "
                        f"{r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['max_ms']:.1f} |")
    return "\n".join(rows)


def reading(results: dict) -> str:
    """One paragraph computed from the figures: errors, scaling, and the slow-client effect."""
    errors = sum(r["errors"] for r in results["load"])
    requests = sum(r["requests"] for r in results["load"])
    slow = results["slow_clients"]
    without, held = slow["without"], slow["with"]
    return (f"**Reading.** {requests:,} searches, {errors} errors (every request answered, none dropped). "
            f"While {slow['count']} slow connections were held open, `/health` stayed at p50 "
            f"{held['health']['p50_ms']:.1f} ms / p99 {held['health']['p99_ms']:.1f} ms (without them: "
            f"{without['health']['p50_ms']:.1f} / {without['health']['p99_ms']:.1f} ms) and 8 search clients got "
            f"{held['search']['requests']} answers with p99 {held['search']['p99_ms']:.0f} ms (without: "
            f"{without['search']['requests']}, p99 {without['search']['p99_ms']:.0f} ms on the same loaded "
            "machine). The stdlib server this replaces answered nothing else while one client held a connection.")


def write_docs(results: dict, text: str) -> None:
    """Replace (or append) the HTTP service section of docs/benchmarks.md, atomically."""
    meta = results["meta"]
    section = "\n".join([
        SECTION, "",
        f"`rag serve` (FastAPI on uvicorn, h11, local engine, one process) on the example corpus datastore "
        f"({meta['chunks']} chunks, all-MiniLM-L6-v2, float-flat); clients are threads with keep-alive httpx "
        f"clients on the same {os.cpu_count()}-core machine, {meta['seconds']:g} s per row, fixed list of "
        f"{len(QUERIES)} queries, k = 10. Searches hold one lock (the searcher is shared), so throughput is "
        "that of one search at a time and more clients add queueing latency, not queries/s; `/health` "
        "never takes the lock. The machine's 1-minute load average was "
        f"{meta['load_average'][0]:g} before and {meta['load_average'][1]:g} after the run (other jobs shared "
        "the cores), so absolute figures are rough.", "",
        text, "",
        reading(results), "",
        f"Code: commit `{meta['git']['commit']}`"
        + (" plus uncommitted library changes" if meta['git']['library_changes_not_committed'] else "")
        + f"; fastapi {meta['versions']['fastapi']}, uvicorn {meta['versions']['uvicorn']}, "
        f"httpx {meta['versions']['httpx']}; figures in `benchmarks/out/serve.json`.", ""])
    current = DOCS.read_text(encoding="utf-8")
    start = current.find(SECTION)
    if start < 0:
        updated = current.rstrip("\n") + "\n\n" + section
    else:
        end = current.find("\n## ", start + len(SECTION))
        updated = current[:start] + section + (current[end + 1:] if end >= 0 else "")
    tmp = DOCS.with_suffix(".md.tmp")
    tmp.write_text(updated, encoding="utf-8")
    os.replace(tmp, DOCS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datastore", type=Path, default=OUT / "serve-ds")
    parser.add_argument("--seconds", type=float, default=8.0, help="per measured row")
    parser.add_argument("--clients", default="1,8,32")
    parser.add_argument("--modes", default="dense,bm25,hybrid")
    parser.add_argument("--slow-clients", type=int, default=64)
    parser.add_argument("--no-docs", action="store_true", help="do not rewrite docs/benchmarks.md")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    build_datastore(args.datastore)
    load_before = os.getloadavg()[0]
    server = Server(args.datastore)
    try:
        results = measure(server, args.modes.split(","), [int(c) for c in args.clients.split(",")], args.seconds,
                          args.slow_clients)
        chunks = httpx.get(f"{server.url}/info", timeout=60).json()["chunks"]
    finally:
        code = server.stop()
    results["meta"] = {"datastore": short_path(args.datastore), "chunks": chunks, "seconds": args.seconds,
                       "load_average": [round(load_before, 1), round(os.getloadavg()[0], 1)],
                       "server_exit_code": code, "git": git_state(),
                       "versions": package_versions("fastapi", "uvicorn", "httpx", "starlette")}
    text = table(results)
    print(text)
    print(f"server exit code after SIGTERM: {code}")
    (OUT / "serve.json").write_text(json.dumps(results, indent=2))
    if not args.no_docs:
        write_docs(results, text)


if __name__ == "__main__":
    main()
