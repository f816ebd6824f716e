"""The bake of a wave: bounded probes of new-release and old-release hosts taking the same
traffic, judged against absolute thresholds and against each other (canary analysis)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from . import gate as G
from . import stats


@dataclass
class Probe:
    host: str
    role: str  # canary (new release) | baseline (old release)
    t: float  # seconds since the bake started
    ms: float | None  # None: no answer (timeout, refused)
    ok: bool


@dataclass
class BakeResult:
    probes: list[Probe] = field(default_factory=list)
    verdicts: list[stats.Verdict] = field(default_factory=list)

    @property
    def status(self) -> str:
        return stats.worst(*self.verdicts).status if self.verdicts else "fail"

    @property
    def reasons(self) -> list[str]:
        return [r for v in self.verdicts for r in v.reasons]

    def window(self, role: str) -> stats.Window:
        return stats.Window.from_probes([(p.ok, p.ms) for p in self.probes if p.role == role])


def thresholds(gate) -> stats.Thresholds:
    return stats.Thresholds(
        error_warn=gate.error_warn, error_fail=gate.error_fail, p95_warn_ms=gate.p95_warn_ms,
        p95_fail_ms=gate.p95_fail_ms, min_samples=gate.min_samples,
        max_inconclusive=gate.max_inconclusive, alpha=gate.alpha, min_effect_ms=gate.min_effect_ms,
        min_effect_ratio=gate.min_effect_ratio)


def run_bake(targets: list[tuple[str, str, str]], seconds: float, interval: float, timeout: float,
             headers: dict | None = None, opener=None) -> list[Probe]:
    """Probe every (host, role, url) every `interval` s for `seconds` s; bounded in count and time.
    `opener(host)`: how probes reach that host (its SSH connection), the same way for canary and
    baseline so their latencies compare; None (or None for a host): straight from here."""
    probes: list[Probe] = []
    lock = threading.Lock()
    t0 = time.monotonic()
    deadline = t0 + seconds
    max_count = int(seconds / interval) + 1

    def loop(host: str, role: str, url: str) -> None:
        reach = opener(host) if opener is not None else None
        for _ in range(max_count):
            now = time.monotonic()
            if now >= deadline:
                return
            s = G.probe(url, timeout, 200, None, headers, reach)
            answered = s.status is not None
            ok = answered and s.status < 500
            with lock:
                probes.append(Probe(host, role, round(now - t0, 3), s.ms if answered else None, ok))
            time.sleep(max(0.0, interval - s.ms / 1000))

    threads = [threading.Thread(target=loop, args=t, daemon=True) for t in targets]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=seconds + timeout + 5)
    return sorted(probes, key=lambda p: p.t)


def judge(result: BakeResult, gate, has_baseline: bool) -> BakeResult:
    t = thresholds(gate)
    canary = result.window("canary")
    verdicts = [stats.judge_absolute(canary, t)]
    if has_baseline and gate.canary:
        verdicts.append(stats.judge_canary(canary, result.window("baseline"), t))
    result.verdicts = verdicts
    return result
