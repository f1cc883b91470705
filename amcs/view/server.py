"""`amcs view --serve`: the page on a loopback port, with a run's problems read lazily.

The page asks for table rows a chunk at a time (`/api/rows`), a problem's tree when it is opened
(`/api/problem`) and the totals (`/api/totals`). A background thread parses the meta file from the
top, so the first rows are ready at once and the totals once the whole file is read; a small chunk
(the first page) asked for before the thread gets there is parsed on the spot, a big one waits.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

from amcs.view.page import render, run_info
from amcs.view.run import RunIndex, Totals, ViewError, problem_detail, problem_row

MAX_CHUNK = 50_000
# The names the page may be asked for by. A web page on another site can point its own host name
# at 127.0.0.1 (DNS rebinding) and then read this server as same-origin; its requests carry that
# name in Host, so anything but a loopback name is refused.
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]")
ON_THE_SPOT = 1_000  # rows a request parses itself rather than wait for the background pass


class RunSource:
    """Rows, totals and problem details of one run, for the server's handlers."""

    def __init__(self, index: RunIndex, source: str) -> None:
        self.index = index
        self.info = run_info(index, source)
        self._rows: list[list] = []
        self._totals: dict | None = None
        self._error: str | None = None
        self._lock = threading.Lock()  # the index's file handles are shared
        self._ready = threading.Condition()
        self._thread = threading.Thread(target=self._parse_all, daemon=True, name="amcs-view")
        self._thread.start()

    def _parse_all(self) -> None:
        totals = Totals()
        try:
            for i in range(len(self.index)):
                with self._lock:
                    record = self.index.record(i)
                totals.add(record)
                row = problem_row(i, record)
                with self._ready:
                    self._rows.append(row)
                    if i % 500 == 0:
                        self._ready.notify_all()
            with self._ready:
                self._totals = totals.to_dict()
                self._ready.notify_all()
        except Exception as exc:  # noqa: BLE001 - reported to the page instead of a dead thread
            with self._ready:
                self._error = str(exc) if isinstance(exc, ViewError) else repr(exc)
                self._ready.notify_all()

    def rows(self, start: int, count: int) -> dict:
        start = max(0, start)
        stop = min(len(self.index), start + max(0, min(count, MAX_CHUNK)))
        with self._ready:
            if stop - start > ON_THE_SPOT:  # a big chunk: the background pass is on its way
                self._ready.wait_for(
                    lambda: len(self._rows) >= stop or self._error or self._totals, 600
                )
            if len(self._rows) >= stop:
                return {"start": start, "rows": self._rows[start:stop]}
            if self._error:
                raise ViewError(self._error)
        # A small chunk not parsed yet (the first page): parse it here rather than wait.
        out = []
        for i in range(start, stop):
            with self._lock:
                out.append(problem_row(i, self.index.record(i)))
        return {"start": start, "rows": out}

    def totals(self, timeout: float = 600.0) -> dict:
        with self._ready:
            self._ready.wait_for(lambda: self._totals is not None or self._error, timeout)
            if self._error:
                raise ViewError(self._error)
            return {"totals": self._totals, "parsed": len(self._rows)}

    def problem(self, index: int) -> dict:
        if not 0 <= index < len(self.index):
            raise KeyError(f"no problem {index}: the run has {len(self.index)}")
        with self._lock:
            record = self.index.record(index)
            paths = self.index.paths(index, record)
        return problem_detail(record, paths)


def host_allowed(host: str | None, port: int) -> bool:
    """Whether a request's Host header names this server by a loopback name: one of
    LOOPBACK_HOSTS, alone or with the server's own port."""
    if not host:
        return False
    host = host.strip().lower()
    return any(host in (name, f"{name}:{port}") for name in LOOPBACK_HOSTS)


def make_server(page: bytes, source: RunSource | None, port: int = 0) -> ThreadingHTTPServer:
    """A server on 127.0.0.1:port (0: any free port) for the page and, for a run, its API."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format, *args):  # noqa: A002 - quiet: the CLI prints the URL
            pass

        def _send(self, status: int, body: bytes, ctype: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def _json(self, status: int, data: dict) -> None:
            self._send(status, json.dumps(data).encode(), "application/json")

        def do_GET(self) -> None:  # noqa: N802 - the http.server API
            host = self.headers.get("Host")
            if not host_allowed(host, self.server.server_address[1]):
                self._json(
                    403,
                    {
                        "error": f"Host {host!r} refused: open the page at http://127.0.0.1:"
                        f"{self.server.server_address[1]}/ (loopback names only)"
                    },
                )
                return
            url = urlparse(self.path)
            query = {k: v[-1] for k, v in parse_qs(url.query).items()}
            try:
                if url.path in ("/", "/index.html"):
                    self._send(200, page, "text/html; charset=utf-8")
                elif url.path == "/favicon.ico":
                    self._send(204, b"", "image/x-icon")
                elif source is None:
                    self._json(404, {"error": "not found"})
                elif url.path == "/api/info":
                    self._json(200, source.info)
                elif url.path == "/api/rows":
                    start, count = int(query.get("start", 0)), int(query.get("count", 200))
                    self._json(200, source.rows(start, count))
                elif url.path == "/api/totals":
                    self._json(200, source.totals())
                elif url.path == "/api/problem":
                    self._json(200, source.problem(int(query.get("index", -1))))
                else:
                    self._json(404, {"error": "not found"})
            except (KeyError, ValueError) as exc:
                status = 500 if isinstance(exc, ViewError) else 400
                message = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
                self._json(status, {"error": message or "bad request"})
            except (BrokenPipeError, ConnectionResetError):
                pass

    return ThreadingHTTPServer(("127.0.0.1", port), Handler)


def serve_page(data: dict, title: str, source: RunSource | None, port: int = 0):
    """The server for a page; the caller runs serve_forever()."""
    return make_server(render(data, title).encode("utf-8"), source, port)
