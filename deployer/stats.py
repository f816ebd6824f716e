"""Pure statistics for the gate: percentiles, Mann-Whitney U, two-proportion z, verdicts.

Stdlib only (no numpy/scipy). The gate's rule is that missing data is never a pass:
too few samples, or too many timeouts, is a FAIL.

Window semantics: `total` counts every probe that was due (ok + error); `errors` counts
failed probes *including* timeouts and missing answers; `inconclusive` counts only the
timeouts/missing ones (so 0 <= inconclusive <= errors <= total). `latencies_ms` holds
the latencies of the probes that got an answer (timeouts have no latency).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

Status = Literal["pass", "warn", "fail"]
_RANK = {"pass": 0, "warn": 1, "fail": 2}
MIN_MWU_SAMPLES = 8  # the normal approximation of Mann-Whitney is poor below this


def _norm_sf(z: float) -> float:
    """P(Z > z) for a standard normal Z."""
    return 0.5 * math.erfc(z / math.sqrt(2.0))


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) with linear interpolation, like numpy's default."""
    if not values:
        raise ValueError("percentile of an empty sequence")
    if not 0 <= q <= 100 or math.isnan(q):
        raise ValueError(f"percentile q must be within 0..100, got {q}")
    xs = sorted(float(v) for v in values)
    pos = (len(xs) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    frac = pos - lo
    return xs[lo] + (xs[hi] - xs[lo]) * frac


def median(values: Sequence[float]) -> float:
    return percentile(values, 50)


def _ranks(values: Sequence[float]) -> tuple[list[float], list[int]]:
    """Average ranks (1-based) of values, and the sizes of the tie groups."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    ties: list[int] = []
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        avg = (i + j + 2) / 2.0  # ranks i+1 .. j+1
        for k in range(i, j + 1):
            ranks[order[k]] = avg
        ties.append(j - i + 1)
        i = j + 1
    return ranks, ties


def mann_whitney_u(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """(U of a, one-sided p-value that a is stochastically greater than b).

    Normal approximation with tie correction and continuity correction: the same as
    ``scipy.stats.mannwhitneyu(a, b, alternative='greater', method='asymptotic',
    use_continuity=True)``. Good enough for n >= 8 on each side.
    """
    n1, n2 = len(a), len(b)
    if n1 == 0 or n2 == 0:
        raise ValueError("mann_whitney_u needs at least one value on each side")
    combined = [float(x) for x in a] + [float(x) for x in b]
    ranks, ties = _ranks(combined)
    r1 = sum(ranks[:n1])
    u1 = r1 - n1 * (n1 + 1) / 2.0
    n = n1 + n2
    mu = n1 * n2 / 2.0
    tie_term = sum(t ** 3 - t for t in ties)
    var = n1 * n2 / 12.0 * ((n + 1) - tie_term / (n * (n - 1))) if n > 1 else 0.0
    if var <= 0:  # every value tied: no evidence either way
        return u1, 1.0
    z = (u1 - mu - 0.5) / math.sqrt(var)
    return u1, min(1.0, max(0.0, _norm_sf(z)))


def two_proportion_z(err_a: int, n_a: int, err_b: int, n_b: int) -> tuple[float, float]:
    """(z, one-sided p-value that the error rate of a is greater than that of b), pooled."""
    for name, e, n in (("a", err_a, n_a), ("b", err_b, n_b)):
        if n < 0 or e < 0 or e > n:
            raise ValueError(f"two_proportion_z: side {name}: need 0 <= errors <= n, got {e}/{n}")
    if n_a == 0 or n_b == 0:
        return 0.0, 1.0
    pooled = (err_a + err_b) / (n_a + n_b)
    if pooled in (0.0, 1.0):  # both sides all-ok (or all-failed): the rates are equal
        return 0.0, 1.0
    se = math.sqrt(pooled * (1 - pooled) * (1 / n_a + 1 / n_b))
    z = (err_a / n_a - err_b / n_b) / se
    return z, _norm_sf(z)


@dataclass
class Thresholds:
    error_warn: float = 0.01
    error_fail: float = 0.05
    p95_warn_ms: float = 500
    p95_fail_ms: float = 2000
    min_samples: int = 20
    max_inconclusive: float = 0.2
    alpha: float = 0.01
    min_effect_ms: float = 20.0
    min_effect_ratio: float = 1.2


@dataclass
class Window:
    latencies_ms: list[float] = field(default_factory=list)
    errors: int = 0
    total: int = 0
    inconclusive: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.inconclusive <= self.errors <= self.total:
            raise ValueError(
                f"Window: need 0 <= inconclusive ({self.inconclusive}) <= errors ({self.errors})"
                f" <= total ({self.total}); a timeout counts as an error and as inconclusive")

    @classmethod
    def from_probes(cls, probes: Iterable[tuple[bool, float | None]]) -> Window:
        """From (ok, ms) pairs; ms None means a timeout / missing answer (error + inconclusive)."""
        w = cls()
        for ok, ms in probes:
            w.total += 1
            if ms is None:
                w.errors += 1
                w.inconclusive += 1
                continue
            w.latencies_ms.append(float(ms))
            if not ok:
                w.errors += 1
        return w

    @property
    def error_rate(self) -> float:
        return self.errors / self.total if self.total else 1.0

    @property
    def inconclusive_share(self) -> float:
        return self.inconclusive / self.total if self.total else 1.0

    def summary(self) -> dict:
        m: dict = {"total": self.total, "errors": self.errors, "inconclusive": self.inconclusive,
                   "error_rate": self.error_rate, "inconclusive_share": self.inconclusive_share,
                   "answered": len(self.latencies_ms)}
        if self.latencies_ms:
            for q in (50, 95, 99):
                m[f"p{q}_ms"] = percentile(self.latencies_ms, q)
        return m


@dataclass
class Verdict:
    status: Status
    reasons: list[str] = field(default_factory=list)
    metrics: dict = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return self.status != "fail"


def worst(*verdicts: Verdict) -> Verdict:
    """Combine verdicts: the worst status, all reasons, metrics merged in order."""
    status: Status = "pass"
    reasons: list[str] = []
    metrics: dict = {}
    for v in verdicts:
        if _RANK[v.status] > _RANK[status]:
            status = v.status
        reasons += v.reasons
        metrics.update(v.metrics)
    return Verdict(status, reasons, metrics)


def _pct(x: float) -> str:
    return f"{x * 100:.1f}%"


def _p(x: float) -> str:
    return f"{x:.2g}"


def judge_absolute(w: Window, t: Thresholds) -> Verdict:
    """Absolute thresholds on one window; too few samples or too many timeouts is a fail."""
    metrics = w.summary()
    fails: list[str] = []
    warns: list[str] = []
    if w.total < t.min_samples:
        fails.append(f"not enough data: {w.total} samples, need at least {t.min_samples}")
    if w.total and w.inconclusive_share > t.max_inconclusive:
        fails.append(f"{w.inconclusive} of {w.total} probes inconclusive (timeout/missing, "
                     f"{_pct(w.inconclusive_share)} > {_pct(t.max_inconclusive)})")
    if w.total:
        rate = w.error_rate
        if rate > t.error_fail:
            fails.append(f"error rate {_pct(rate)} ({w.errors}/{w.total}) > {_pct(t.error_fail)}")
        elif rate > t.error_warn:
            warns.append(f"error rate {_pct(rate)} ({w.errors}/{w.total}) > {_pct(t.error_warn)}")
    if w.latencies_ms:
        p95 = metrics["p95_ms"]
        if p95 > t.p95_fail_ms:
            fails.append(f"p95 {p95:.0f} ms > {t.p95_fail_ms:.0f} ms")
        elif p95 > t.p95_warn_ms:
            warns.append(f"p95 {p95:.0f} ms > {t.p95_warn_ms:.0f} ms")
    elif w.total:
        fails.append(f"no latency data: none of {w.total} probes answered")
    if fails:
        return Verdict("fail", fails + warns, metrics)
    if warns:
        return Verdict("warn", warns, metrics)
    return Verdict("pass", [], metrics)


def judge_canary(canary: Window, baseline: Window, t: Thresholds) -> Verdict:
    """Canary against baseline: significantly AND practically slower, or more errors, fails."""
    metrics: dict = {"canary": canary.summary(), "baseline": baseline.summary()}
    fails: list[str] = []
    warns: list[str] = []
    need = max(t.min_samples, 1)
    for role, w in (("canary", canary), ("baseline", baseline)):
        if w.total < need or len(w.latencies_ms) < MIN_MWU_SAMPLES:
            fails.append(f"not enough data to compare: {role} has {w.total} samples "
                         f"({len(w.latencies_ms)} answered), need at least {need} "
                         f"({MIN_MWU_SAMPLES} answered)")
    if fails:
        return Verdict("fail", fails, metrics)

    u, p_lat = mann_whitney_u(canary.latencies_ms, baseline.latencies_ms)
    med_c, med_b = median(canary.latencies_ms), median(baseline.latencies_ms)
    p95_c = percentile(canary.latencies_ms, 95)
    p95_b = percentile(baseline.latencies_ms, 95)
    delta = med_c - med_b
    ratio = med_c / med_b if med_b > 0 else (math.inf if med_c > 0 else 1.0)
    metrics.update({"mann_whitney_u": u, "latency_p": p_lat, "median_delta_ms": delta,
                    "median_ratio": ratio})
    figures = (f"canary p95 {p95_c:.0f} ms vs baseline {p95_b:.0f} ms, median {med_c:.0f} ms "
               f"vs {med_b:.0f} ms (Mann-Whitney p={_p(p_lat)})")
    if p_lat < t.alpha:
        if delta >= t.min_effect_ms and ratio >= t.min_effect_ratio:
            fails.append(f"canary slower than baseline: {figures}")
        else:
            warns.append(f"canary slightly slower than baseline, below the practical threshold "
                         f"(+{t.min_effect_ms:.0f} ms and x{t.min_effect_ratio:g}): {figures}")

    z, p_err = two_proportion_z(canary.errors, canary.total, baseline.errors, baseline.total)
    metrics.update({"error_z": z, "error_p": p_err})
    if p_err < t.alpha:
        fails.append(f"canary error rate {_pct(canary.error_rate)} ({canary.errors}/{canary.total})"
                     f" vs baseline {_pct(baseline.error_rate)} ({baseline.errors}/"
                     f"{baseline.total}) (two-proportion z={z:.2f}, p={_p(p_err)})")
    if fails:
        return Verdict("fail", fails + warns, metrics)
    if warns:
        return Verdict("warn", warns, metrics)
    return Verdict("pass", [], metrics)


__all__ = ["Thresholds", "Verdict", "Window", "judge_absolute", "judge_canary", "mann_whitney_u",
           "median", "percentile", "two_proportion_z", "worst"]
