"""The health gate: HTTP checks of each host, N consecutive passes, never a pass by default."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field


@dataclass
class Sample:
    ok: bool
    status: int | None
    ms: float
    detail: str


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


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A 3xx is an answer like any other, compared with expect_status: `/up -> 302 /login`
    must not pass the gate because the login page answers 200."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None  # urllib then raises HTTPError(3xx)


_OPENER = urllib.request.build_opener(_NoRedirect)


def probe(url: str, timeout: float, expect_status: int, expect_json: dict | None,
          headers: dict | None = None) -> Sample:
    """One HTTP request, redirects not followed; a timeout, refusal or unparsable body is a
    failure, never a pass."""
    t0 = time.monotonic()
    try:
        req = urllib.request.Request(url, headers={"User-Agent": "deployer-gate", **(headers or {})})
        with _OPENER.open(req, timeout=timeout) as resp:  # noqa: S310 - our own hosts
            status, body = resp.status, resp.read(65536)
    except urllib.error.HTTPError as exc:
        status, body = exc.code, exc.read(65536)
    except (OSError, ValueError) as exc:
        ms = (time.monotonic() - t0) * 1000
        return Sample(False, None, ms, f"GET {url}: {getattr(exc, 'reason', exc)}")
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
                headers: dict | None = None, on_sample=None) -> Verdict:
    """Probe until `passes` consecutive passes, or fail after `max_attempts` probes."""
    verdict = Verdict(host, False)
    streak = 0
    # A time budget too: probes that time out must not stretch the gate to attempts x timeout.
    deadline = time.monotonic() + max_attempts * interval + passes * timeout
    for attempt in range(max_attempts):
        if time.monotonic() > deadline:
            verdict.samples.append(Sample(False, None, 0.0, f"GET {url}: no {passes} consecutive "
                                          f"passes within {max_attempts * interval + passes * timeout:.0f}s"
                                          f" (last: {verdict.samples[-1].detail if verdict.samples else '-'})"))
            return verdict
        sample = probe(url, timeout, expect_status, expect_json, headers)
        verdict.samples.append(sample)
        if on_sample:
            on_sample(host, sample)
        streak = streak + 1 if sample.ok else 0
        if streak >= passes:
            verdict.passed = True
            return verdict
        # Not enough attempts left to reach the streak: give up early.
        if passes - streak > max_attempts - attempt - 1:
            return verdict
        time.sleep(interval)
    return verdict
