"""The health gate against real loopback HTTP servers: trickling, hanging, redirecting, healthy."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from deployer import gate as G

MAX_HANDLER_SECONDS = 30  # every handler gives up after this, even if the test forgot to stop it


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"

    def log_message(self, *args):
        pass

    def _stopped(self, seconds: float) -> bool:
        return self.server.stopping.wait(seconds)

    def _trickle(self, data: bytes, every: float) -> None:
        """One byte every `every` s; bounded by the data's length and MAX_HANDLER_SECONDS."""
        t0 = time.monotonic()
        for i in range(len(data)):
            if self._stopped(every) or time.monotonic() - t0 > MAX_HANDLER_SECONDS:
                return
            try:
                self.wfile.write(data[i:i + 1])
            except OSError:
                return

    def do_GET(self):
        self.server.requests.append({"path": self.path, "headers": dict(self.headers)})
        if self.path == "/trickle-headers":
            self._trickle(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", 0.5)
        elif self.path == "/trickle-body":
            body = b'{"status": "ok", "padding": "............"}'
            self.wfile.write(b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n"
                             b"Content-Length: %d\r\n\r\n" % len(body))
            self._trickle(body, 0.5)
        elif self.path == "/hang":
            self._stopped(MAX_HANDLER_SECONDS)
        elif self.path == "/up":
            self.send_response(302)
            self.send_header("Location", "/login")
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif self.path == "/login":
            self._reply(200, b'{"status": "ok"}')
        elif self.path == "/health":
            self._reply(200, json.dumps({"status": "ok", "release": "r1",
                                         "db": {"ok": True}}).encode())
        elif self.path == "/warming":
            # 503 for the server's first `warm_after` seconds, then 200
            warm = time.monotonic() - self.server.started >= self.server.warm_after
            self._reply(200 if warm else 503, b'{"status": "ok"}')
        else:
            self._reply(404, b"{}")

    def _reply(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    srv.block_on_close = False
    srv.stopping = threading.Event()
    srv.requests = []
    srv.started = time.monotonic()
    srv.warm_after = 0.0
    th = threading.Thread(target=srv.serve_forever, args=(0.05,), daemon=True)
    th.start()
    srv.base = f"http://127.0.0.1:{srv.server_address[1]}"
    try:
        yield srv
    finally:
        srv.stopping.set()  # trickling and hanging handlers return at once
        srv.shutdown()
        srv.server_close()
        th.join(5)


def timed(fn, *args, **kw):
    t0 = time.monotonic()
    out = fn(*args, **kw)
    return out, time.monotonic() - t0


# ------------------------------------------------------------------ 2. redirects are not followed


def test_a_redirect_is_a_status_like_any_other(server):
    sample = G.probe(f"{server.base}/up", 2, 200, None)
    assert not sample.ok and sample.status == 302
    assert "HTTP 302, expected 200" in sample.detail
    assert [r["path"] for r in server.requests] == ["/up"]  # /login was never asked for
    assert G.probe(f"{server.base}/up", 2, 302, None).ok  # unless a 3xx is what is expected


def test_redirect_fails_the_gate(server):
    verdict = G.wait_passes("web1", f"{server.base}/up", timeout=1, expect_status=200,
                            expect_json={"status": "ok"}, passes=1, max_attempts=2, interval=0)
    assert not verdict.passed and "HTTP 302" in verdict.reason
