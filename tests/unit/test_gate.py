"""The health gate against real loopback HTTP servers: trickling, hanging, redirecting, healthy."""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from deployer import bake as BK
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
        elif self.path == "/broken":
            self._reply(500, b'{"error": "boom"}')
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


# ------------------------------------------------------------------ 1. a total deadline per request


def test_trickled_headers_fail_within_the_timeout(server):
    sample, took = timed(G.probe, f"{server.base}/trickle-headers", 2, 200, None)
    assert not sample.ok and sample.status is None
    assert "timed out after 2s" in sample.detail
    assert took < 2 + 1


def test_trickled_body_fails_within_the_timeout(server):
    sample, took = timed(G.probe, f"{server.base}/trickle-body", 1, 200, {"status": "ok"})
    assert not sample.ok
    assert "timed out after 1s" in sample.detail
    assert took < 1 + 1


def test_bake_probes_of_a_trickling_host_are_bounded(server):
    targets = [("web1", "canary", f"{server.base}/trickle-headers")]
    probes, took = timed(BK.run_bake, targets, 1.0, 0.2, 1.0)
    assert took < 1.0 + 1.0 + 1
    assert probes and all(p.ms is None and not p.ok for p in probes)


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


# ------------------------------------------------------------------ the probe still does its job


def test_probe_passes_checks_json_and_sends_headers(server):
    sample = G.probe(f"{server.base}/health", 2, 200, {"status": "ok", "db": {"ok": True}},
                     {"X-Probe": "1"})
    assert sample.ok and sample.status == 200 and sample.ms >= 0
    assert server.requests[-1]["headers"]["X-Probe"] == "1"
    assert server.requests[-1]["headers"]["User-Agent"] == "deployer-gate"
    bad = G.probe(f"{server.base}/health", 2, 200, {"release": "r2"})
    assert not bad.ok and "expected {'release': 'r2'}, got {'release': 'r1'}" in bad.detail
    missing = G.probe(f"{server.base}/nope", 2, 200, None)
    assert not missing.ok and missing.status == 404


def test_refused_and_bad_urls_are_failures():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    refused = G.probe(f"http://127.0.0.1:{port}/health", 1, 200, None)
    assert not refused.ok and refused.status is None and "refused" in refused.detail.lower()
    for url in ("ftp://127.0.0.1/x", "not a url", "http://127.0.0.1:notaport/x"):
        bad = G.probe(url, 1, 200, None)
        assert not bad.ok and bad.status is None and bad.detail.startswith(f"GET {url}: ")


# ------------------------------------------------------------------ 3. wait_passes is bounded by a budget


def test_wait_passes_never_overruns_its_budget_when_every_probe_times_out(server):
    # Default budget: max_attempts x interval + passes x timeout = 10 x 0.4 + 1 x 1 = 5 s.
    verdict, took = timed(G.wait_passes, "web1", f"{server.base}/hang", timeout=1,
                          expect_status=200, expect_json=None, passes=1, max_attempts=10,
                          interval=0.4)
    assert not verdict.passed
    assert took <= 5 + 0.25
    assert "timed out" in verdict.samples[0].detail
    assert "within 5s" in verdict.reason


def test_wait_passes_explicit_budget_cuts_a_probe_short(server):
    verdict, took = timed(G.wait_passes, "web1", f"{server.base}/hang", timeout=5,
                          expect_status=200, expect_json=None, passes=2, max_attempts=30,
                          interval=1, budget=1.5)
    assert not verdict.passed
    assert took <= 1.5 + 0.25
    assert "within 1.5s" in verdict.reason


def test_wait_passes_polls_fast_with_a_short_poll_interval(server):
    server.started, server.warm_after = time.monotonic(), 0.6
    verdict, took = timed(G.wait_passes, "web1", f"{server.base}/warming", timeout=1,
                          expect_status=200, expect_json={"status": "ok"}, passes=3,
                          max_attempts=5, interval=1, poll_interval=0.05)
    # interval=1 alone would need >= 2 s after warming; polling every 0.05 s passes soon after.
    assert verdict.passed
    assert took < 1.5
    assert [s.status for s in verdict.samples[-3:]] == [200, 200, 200]
    assert verdict.samples[0].status == 503
    assert len(verdict.samples) <= 1 + int(took / 0.05) + 1


def test_wait_passes_gives_up_when_the_streak_is_out_of_reach(server):
    verdict, took = timed(G.wait_passes, "web1", f"{server.base}/nope", timeout=1,
                          expect_status=200, expect_json=None, passes=3, max_attempts=4,
                          interval=0.01)
    assert not verdict.passed and len(verdict.samples) == 2 and took < 1


# ------------------------------------------------------------------ fail_after: a wrong answer is final

def test_a_host_answering_500_fails_after_fail_after_probes_not_the_budget(server):
    v = G.wait_passes("web1", server.base + "/broken", timeout=1, expect_status=200, expect_json=None,
                      passes=3, max_attempts=100, interval=0.1, poll_interval=0.05, fail_after=3)
    assert not v.passed
    assert [s.status for s in v.samples[:3]] == [500, 500, 500]
    assert len(server.requests) == 3  # the 10 s budget was not waited for
    assert "3 times in a row" in v.reason


def test_a_wrong_body_is_definitive_but_a_proxy_503_is_not(server):
    wrong = G.wait_passes("web1", server.base + "/health", timeout=1, expect_status=200,
                          expect_json={"release": "r2"}, passes=2, max_attempts=100, interval=0.1,
                          poll_interval=0.05, fail_after=2)
    assert not wrong.passed and len(wrong.samples) == 3 and "expected {'release': 'r2'}" in wrong.reason
    server.warm_after = 0.6  # 503 while warming, then 200: never failed early
    server.started = time.monotonic()
    warming = G.wait_passes("web1", server.base + "/warming", timeout=1, expect_status=200,
                            expect_json=None, passes=2, max_attempts=100, interval=0.1,
                            poll_interval=0.05, fail_after=2)
    assert warming.passed
    assert sum(1 for s in warming.samples if s.status == 503) >= 5


def test_refused_connections_keep_the_whole_budget():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    v, took = timed(G.wait_passes, "web1", f"http://127.0.0.1:{port}/health", timeout=0.2,
                    expect_status=200, expect_json=None, passes=1, max_attempts=4, interval=0.1,
                    poll_interval=0.05, fail_after=1)
    assert not v.passed and took >= 0.4 and len(v.samples) > 3


# ------------------------------------------------------------------ probes through an opener (SSH channel)

class Channelish:
    """What a paramiko channel offers http.client through the gate: sendall, recv, settimeout,
    close, and no makefile/fileno of a socket."""

    def __init__(self, sock):
        self._s = sock

    def sendall(self, data):
        self._s.sendall(data)

    def recv(self, n):
        return self._s.recv(n)

    def settimeout(self, t):
        self._s.settimeout(t)

    def close(self):
        self._s.close()


def test_a_probe_goes_through_the_opener_with_the_urls_host_and_port(server):
    port = server.server_address[1]
    opened = []

    def opener(host, p, timeout):
        opened.append((host, p))
        return Channelish(socket.create_connection(("127.0.0.1", port), timeout))

    # the url names an address this machine cannot reach: only the opener makes the connection
    v = G.wait_passes("web1", f"http://10.255.255.1:{port}/health", timeout=2, expect_status=200,
                      expect_json={"status": "ok", "release": "r1"}, passes=2, max_attempts=5,
                      interval=0.05, opener=opener)
    assert v.passed, v.reason
    assert opened == [("10.255.255.1", port)] * 2
    assert server.requests[0]["headers"]["Host"] == f"10.255.255.1:{port}"


def test_a_refusing_opener_is_a_failed_probe_not_an_error():
    def opener(host, port, timeout):
        raise ConnectionRefusedError(f"{host}:{port} from web1: Connection refused")

    s = G.probe("http://10.0.0.1:8000/health", 1, 200, None, opener=opener)
    assert not s.ok and s.status is None and not s.definitive
    assert "Connection refused" in s.detail


def test_https_is_not_tunnelled():
    s = G.probe("https://10.0.0.1/health", 1, 200, None, opener=lambda *a: None)
    assert not s.ok and "health.via: direct" in s.detail
