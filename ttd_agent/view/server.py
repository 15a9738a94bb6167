"""Serve a run's page on 127.0.0.1 while it trains: `/` the page, `/version.json` a few bytes the
page polls, `/data.json` the whole payload, fetched only when the version changed. Each request
re-reads only what the run's files gained (`RunFiles.poll`), under one lock."""

from __future__ import annotations

import json
import logging
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from ttd_agent.view.page import build_page
from ttd_agent.view.payload import RunView

log = logging.getLogger(__name__)

POLL_MS = 1000


class ViewServer(ThreadingHTTPServer):
    """An HTTP server bound to 127.0.0.1 only: reach it from another machine over SSH forwarding."""

    daemon_threads = True

    def __init__(self, view: RunView, port: int = 0, poll_ms: int = POLL_MS) -> None:
        self.view, self.poll_ms, self.lock = view, poll_ms, threading.Lock()
        super().__init__(("127.0.0.1", port), _Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/"

    def current(self) -> RunView:
        with self.lock:
            self.view.refresh()
            self.view.payload()
        return self.view


class _Handler(BaseHTTPRequestHandler):
    server: ViewServer

    def do_GET(self) -> None:  # noqa: N802 - the http.server API
        path = self.path.split("?", 1)[0]
        try:
            view = self.server.current()
            if path in ("/", "/index.html"):
                self._send(build_page(view.payload(), self.server.poll_ms).encode(), "text/html; charset=utf-8")
            elif path == "/version.json":
                self._send(json.dumps({"version": view.version}).encode(), "application/json")
            elif path == "/data.json":
                self._send(json.dumps(view.payload(), allow_nan=False).encode(), "application/json")
            else:
                self.send_error(HTTPStatus.NOT_FOUND, "the viewer serves /, /version.json and /data.json")
        except Exception as error:  # noqa: BLE001 - a bad moment in the run's files must not stop the server
            log.exception("cannot serve %s", path)
            self.send_error(HTTPStatus.INTERNAL_SERVER_ERROR, f"{type(error).__name__}: {error}")

    def _send(self, body: bytes, kind: str) -> None:
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the http.server API
        log.debug("%s - %s", self.address_string(), format % args)
