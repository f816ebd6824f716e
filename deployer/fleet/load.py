"""Bounded HTTP load through the fleet's load balancer: a fixed rate, for a fixed time, at most
a fixed number of requests; it stops by itself. Used by the zero-downtime test and benchmarks."""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field

from ..stats import percentile


@dataclass
class LoadResult:
    sent: int = 0
    failed: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    versions: dict[str, int] = field(default_factory=dict)

    @property
    def p95_ms(self) -> float:
        return percentile(self.latencies_ms, 95) if self.latencies_ms else float("nan")


class Load:
    """Start with `start()`, stop with `stop()` (or it stops at `seconds`); then `.result`."""

    def __init__(self, url: str, rate: float = 100.0, seconds: float = 120.0, workers: int = 8,
                 timeout: float = 10.0):
        self.url, self.rate, self.seconds, self.timeout = url, rate, seconds, timeout
        self.workers = workers
        self.max_requests = int(rate * seconds) + 1
        self.result = LoadResult()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    def _worker(self, offset: float) -> None:
        interval = self.workers / self.rate
        t0 = time.monotonic()
        deadline = t0 + self.seconds
        i = 0
        while not self._stop.is_set():
            due = t0 + offset + i * interval
            if due >= deadline:
                return
            with self._lock:
                if self.result.sent >= self.max_requests:
                    return
                self.result.sent += 1
            wait = due - time.monotonic()
            if wait > 0 and self._stop.wait(wait):
                with self._lock:
                    self.result.sent -= 1
                return
            i += 1
            start = time.monotonic()
            try:
                with urllib.request.urlopen(self.url, timeout=self.timeout) as resp:  # noqa: S310
                    resp.read()
                    ok, what = resp.status < 500, str(resp.status)
                    version = resp.headers.get("X-Backend", "")
            except urllib.error.HTTPError as exc:
                ok, what, version = exc.code < 500, f"HTTP {exc.code}", ""
            except OSError as exc:
                ok, what, version = False, f"{type(exc).__name__}: {exc}", ""
            ms = (time.monotonic() - start) * 1000
            with self._lock:
                self.result.latencies_ms.append(ms)
                if not ok:
                    self.result.failed += 1
                    self.result.failures.append(what)
                if version:
                    self.result.versions[version] = self.result.versions.get(version, 0) + 1

    def start(self) -> Load:
        for w in range(self.workers):
            t = threading.Thread(target=self._worker, args=(w / self.rate,), daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def stop(self) -> LoadResult:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=self.timeout + 5)
        return self.result
