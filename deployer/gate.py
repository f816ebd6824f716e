"""The health gate: HTTP checks of each host, N consecutive passes, never a pass by default."""

from __future__ import annotations

import http.client
import io
import json
import math
import socket
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

#: opens a connection to (host, port) within `timeout` seconds: a socket-like object (sendall,
#: recv, settimeout, close), e.g. a channel of the SSH connection to the host being checked
Opener = Callable[[str, int, float], Any]

#: answers that say "not up yet" rather than "this release is bad": a proxy in front of an app
#: still starting (or in maintenance) answers them
NOT_READY = (502, 503, 504)


@dataclass
class Sample:
    ok: bool
    status: int | None
    ms: float
    detail: str

    @property
    def definitive(self) -> bool:
        """A failed answer that says the release itself is bad: the app answered, with a wrong
        status (not a proxy's 'not up yet') or a wrong body. Refused connections and timeouts
        (the app still starting) are not."""
        return not self.ok and self.status is not None and self.status not in NOT_READY


@dataclass
class Verdict:
    host: str
    passed: bool
    samples: list[Sample] = field(default_factory=list)

    @property
    def reason(self) -> str:
        if self.passed:
            return "passed"
        last = self.samples[-1] if self.samples else None
        return last.detail if last else "no sample"


def _matches(expected: object, actual: object) -> bool:
    if isinstance(expected, dict):
        return isinstance(actual, dict) and all(
            k in actual and _matches(v, actual[k]) for k, v in expected.items())
    return expected == actual


class _Deadline:
    """An HTTP connection under one total deadline: connect, TLS handshake, request, status
    line, headers and body. Each blocking socket call gets only the time left, so a server that
    trickles one byte per second cannot stretch `timeout` (a per-read limit in urllib)."""

    def __init__(self, *args, deadline: float, opener: Opener | None = None, **kwargs):
        super().__init__(*args, timeout=max(deadline - time.monotonic(), 0.001), **kwargs)
        self.deadline = deadline
        self.opener = opener
        self._create_connection = self._connect_by_deadline

    def _left(self) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("timed out")
        return left

    def _connect_by_deadline(self, address, timeout=None, source_address=None) -> socket.socket:
        if self.opener is not None:  # from the host itself, through its SSH connection
            sock = self.opener(address[0], int(address[1]), self._left())
            sock.settimeout(self._left())
            return sock
        error: OSError | None = None
        for family, kind, proto, _, addr in socket.getaddrinfo(*address, 0, socket.SOCK_STREAM):
            sock = socket.socket(family, kind, proto)
            try:
                if source_address:
                    sock.bind(source_address)
                sock.settimeout(self._left())
                sock.connect(addr)
                sock.settimeout(self._left())  # what a TLS handshake may take, in total
                return sock
            except OSError as exc:
                sock.close()
                error = exc
        raise error or OSError(f"no address for {address[0]}")

    def connect(self) -> None:
        if self.opener is None:
            super().connect()
        else:  # a channel, not a socket: no socket options (and never TLS: see _connection)
            self.sock = self._connect_by_deadline((self.host, self.port))
        self.sock = _DeadlineSocket(self.sock, self._left)


class _DeadlineHTTP(_Deadline, http.client.HTTPConnection):
    pass


class _DeadlineHTTPS(_Deadline, http.client.HTTPSConnection):
    pass


class _DeadlineSocket:
    """The few socket methods http.client uses, each bounded by the time left."""

    def __init__(self, sock: socket.socket, left):
        self._sock, self._left = sock, left
        self._files = 0  # readers still open: the connection stays open for them (as a socket's files)
        self._closed = False

    def sendall(self, data) -> None:
        self._sock.settimeout(self._left())
        self._sock.sendall(data)

    def makefile(self, mode: str = "rb", *args, **kwargs):
        if mode != "rb":
            raise ValueError(f"makefile({mode!r}): only 'rb' is supported")
        self._files += 1
        return io.BufferedReader(_DeadlineReader(self, self._left))

    def close(self) -> None:
        self._closed = True
        if not self._files:
            self._sock.close()

    def _file_closed(self) -> None:
        self._files -= 1
        if self._closed and not self._files:
            self._sock.close()

    def __getattr__(self, name: str):
        return getattr(self._sock, name)


class _DeadlineReader(io.RawIOBase):
    """Reads with recv(), each call bounded by the time left: the same for a socket and for an
    SSH channel (which has no file of its own). Closing it leaves the connection to its owner."""

    def __init__(self, owner: _DeadlineSocket, left):
        super().__init__()
        self._owner, self._sock, self._left = owner, owner._sock, left

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        self._sock.settimeout(self._left())
        data = self._sock.recv(len(buffer))
        n = len(data)
        buffer[:n] = data
        return n

    def close(self) -> None:
        if not self.closed:
            self._owner._file_closed()
        super().close()


def _connection(url: str, deadline: float, opener: Opener | None = None) -> tuple[http.client.HTTPConnection, str]:
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise ValueError(f"unknown url type: {scheme or url!r}")
    if not parts.hostname:
        raise ValueError("no host in the url")
    if parts.username is not None or parts.password is not None:
        raise ValueError("credentials in the url are not supported (use health.headers)")
    port = parts.port  # ValueError when not a number
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    if scheme == "https" and opener is not None:
        raise ValueError("https is not checked through the SSH connection (health.via: direct)")
    cls = _DeadlineHTTPS if scheme == "https" else _DeadlineHTTP
    return cls(parts.hostname, port, deadline=deadline, opener=opener), target


def probe(url: str, timeout: float, expect_status: int, expect_json: dict | None,
          headers: dict | None = None, opener: Opener | None = None) -> Sample:
    """One HTTP GET under a total deadline of `timeout` seconds (connect, headers and body
    together), redirects not followed (a 3xx is compared with `expect_status` like any status).
    A timeout, refusal or unparsable body is a failure, never a pass. `opener`: how to reach the
    url's host and port (through the host's SSH connection); None: straight from here."""
    t0 = time.monotonic()
    deadline = t0 + timeout
    conn = None
    try:
        conn, target = _connection(url, deadline, opener)
        conn.request("GET", target, headers={"User-Agent": "deployer-gate",
                                             "Connection": "close", **(headers or {})})
        resp = conn.getresponse()
        status, body = resp.status, resp.read(65536)
        if time.monotonic() > deadline:  # e.g. a slow name lookup, which no socket bounds
            raise TimeoutError("timed out")
    except TimeoutError:
        ms = (time.monotonic() - t0) * 1000
        return Sample(False, None, ms, f"GET {url}: timed out after {timeout:g}s")
    except (OSError, ValueError, http.client.HTTPException) as exc:
        ms = (time.monotonic() - t0) * 1000
        return Sample(False, None, ms, f"GET {url}: {exc or type(exc).__name__}")
    finally:
        if conn is not None:
            conn.close()
    ms = (time.monotonic() - t0) * 1000
    if status != expect_status:
        return Sample(False, status, ms, f"GET {url}: HTTP {status}, expected {expect_status}")
    if expect_json is not None:
        try:
            data = json.loads(body)
        except ValueError:
            return Sample(False, status, ms, f"GET {url}: body is not JSON")
        if not _matches(expect_json, data):
            shown = {k: data.get(k) for k in expect_json} if isinstance(data, dict) else data
            return Sample(False, status, ms, f"GET {url}: expected {expect_json}, got {shown}")
    return Sample(True, status, ms, f"GET {url}: HTTP {status} in {ms:.0f} ms")


def wait_passes(host: str, url: str, *, timeout: float, expect_status: int,
                expect_json: dict | None, passes: int, max_attempts: int, interval: float,
                headers: dict | None = None, on_sample=None, budget: float | None = None,
                poll_interval: float | None = None, fail_after: int = 0,
                opener: Opener | None = None) -> Verdict:
    """Probe until `passes` consecutive passes. The host fails:
    - after `fail_after` consecutive definitive failures (the app answered, wrongly: see
      `Sample.definitive`), at once; 0 turns this off;
    - when the time budget is spent, whatever happened meanwhile (refused connections while the
      app starts keep the whole budget);
    - when the streak can no longer be reached within the probes allowed.

    `budget`: total seconds, by default ``max_attempts * interval + passes * timeout``. Nothing
    runs past it: each probe's timeout is cut to the time left, and so is each pause.
    `poll_interval`: the pause between probes (default: `interval`) while the budget stays the
    same, so a caller can poll fast; the number of probes is then bounded by the budget,
    ``ceil(budget / poll_interval) + passes`` (and at least `max_attempts`).
    `opener`: how each probe reaches the host (through its SSH connection), None: directly.
    """
    if budget is None:
        budget = max_attempts * interval + passes * timeout
    if budget <= 0:
        raise ValueError(f"wait_passes: budget must be positive, got {budget!r}")
    if poll_interval is None:
        pause, limit = interval, max_attempts
    elif poll_interval < 0:
        raise ValueError(f"wait_passes: poll_interval must be >= 0, got {poll_interval!r}")
    else:
        pause = poll_interval
        limit = max(max_attempts, math.ceil(budget / max(poll_interval, 0.01)) + passes)
    verdict = Verdict(host, False)
    streak = bad = 0
    deadline = time.monotonic() + budget
    for attempt in range(limit):
        left = deadline - time.monotonic()
        if left <= 0:
            last = verdict.samples[-1].detail if verdict.samples else "-"
            verdict.samples.append(Sample(False, None, 0.0, f"GET {url}: no {passes} consecutive "
                                          f"passes within {budget:g}s (last: {last})"))
            return verdict
        sample = probe(url, min(timeout, left), expect_status, expect_json, headers, opener)
        verdict.samples.append(sample)
        if on_sample:
            on_sample(host, sample)
        streak = streak + 1 if sample.ok else 0
        bad = bad + 1 if sample.definitive else 0
        if streak >= passes:
            verdict.passed = True
            return verdict
        if fail_after and bad >= fail_after:
            verdict.samples.append(Sample(False, sample.status, 0.0, f"{sample.detail} "
                                          f"({bad} times in a row: the release answers, wrongly)"))
            return verdict
        # Not enough attempts left to reach the streak: give up early.
        if passes - streak > limit - attempt - 1:
            return verdict
        time.sleep(max(0.0, min(pause, deadline - time.monotonic())))
    return verdict
