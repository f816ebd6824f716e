import math
import random

import pytest

from deployer.stats import (
    Thresholds,
    Verdict,
    Window,
    judge_absolute,
    judge_canary,
    mann_whitney_u,
    median,
    percentile,
    two_proportion_z,
    worst,
)

T = Thresholds()


# ---------------------------------------------------------------- percentile


@pytest.mark.parametrize("q, expected", [
    # numpy.percentile([3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5], q) (linear, the default)
    (0, 1.0), (5, 1.0), (25, 2.5), (50, 4.0), (90, 6.0), (95, 7.5), (99, 8.7), (100, 9.0),
])
def test_percentile_matches_numpy_linear(q, expected):
    assert percentile([3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5], q) == pytest.approx(expected)


def test_percentile_edges():
    assert percentile([10.0], 95) == 10.0
    assert percentile([1, 2], 95) == pytest.approx(1.95)
    assert median([5, 1, 3]) == 3
    with pytest.raises(ValueError):
        percentile([], 50)
    with pytest.raises(ValueError):
        percentile([1], 101)


# ---------------------------------------------------------------- Mann-Whitney

# Expected values are scipy.stats.mannwhitneyu(a, b, alternative='greater',
# method='asymptotic', use_continuity=True) (scipy 1.17.1), hard-coded.
SCIPY_CASES = [
    # scipy's documentation example (males vs females); its two-sided p is 0.11134688653314041
    ([19, 22, 16, 29, 24], [20, 11, 17, 12], 17.0, 0.055673443266570206),
    ([20, 11, 17, 12], [19, 22, 16, 29, 24], 3.0, 0.9669037101389033),
    # with ties inside and across the samples
    ([1, 2, 2, 3, 3, 3, 4, 5, 7, 9], [2, 3, 3, 4, 4, 5, 6, 7, 8, 8, 10], 34.0, 0.9369243472688102),
    ([2, 3, 3, 4, 4, 5, 6, 7, 8, 8, 10], [1, 2, 2, 3, 3, 3, 4, 5, 7, 9], 76.0, 0.07237631428748922),
    # latencies-like floats with cross ties
    ([120.5, 131.0, 99.0, 150.2, 143.3, 128.8, 101.1, 177.7, 133.3],
     [110.0, 95.5, 99.0, 120.5, 89.9, 101.1, 97.0, 105.0], 63.5, 0.004622413459686993),
]


@pytest.mark.parametrize("a, b, u, p", SCIPY_CASES)
def test_mann_whitney_matches_scipy(a, b, u, p):
    got_u, got_p = mann_whitney_u(a, b)
    assert got_u == u
    assert got_p == pytest.approx(p, rel=1e-9)


def test_mann_whitney_by_hand_no_overlap():
    # a = 1..8 entirely below b = 9..16: U_a = 0, U_b = 64; mu = 32, sigma = sqrt(64*17/12)
    sigma = math.sqrt(64 * 17 / 12)
    u, p = mann_whitney_u(list(range(9, 17)), list(range(1, 9)))
    assert u == 64
    assert p == pytest.approx(0.5 * math.erfc(((64 - 32 - 0.5) / sigma) / math.sqrt(2)))
    assert p < 0.001
    u, p = mann_whitney_u(list(range(1, 9)), list(range(9, 17)))
    assert u == 0 and p > 0.999


def test_mann_whitney_all_tied_is_not_significant():
    assert mann_whitney_u([5.0] * 10, [5.0] * 10) == (50.0, 1.0)


def test_mann_whitney_empty_side_raises():
    with pytest.raises(ValueError):
        mann_whitney_u([], [1, 2])


def _lat(rng: random.Random, n: int, mu: float, shift: float = 0.0) -> list[float]:
    return [max(1.0, rng.gauss(mu, mu * 0.25)) + shift for _ in range(n)]


def test_identical_distributions_are_not_significant():
    rng = random.Random(1234)
    hits = 0
    for _ in range(50):
        a, b = _lat(rng, 60, 100), _lat(rng, 60, 100)
        if mann_whitney_u(a, b)[1] < 0.01:
            hits += 1
    assert hits <= 3  # ~1% false positives expected at alpha=0.01


def test_shift_of_150ms_is_significant():
    rng = random.Random(42)
    a, b = _lat(rng, 30, 20, shift=150), _lat(rng, 30, 20)
    assert mann_whitney_u(a, b)[1] < 1e-8
    assert mann_whitney_u(b, a)[1] > 0.99


# ---------------------------------------------------------------- error rates


def test_two_proportion_z_known_value():
    # pooled 12/200; se = sqrt(.06 * .94 * (1/100 + 1/100)); scipy.stats.norm.sf(z)
    z, p = two_proportion_z(10, 100, 2, 100)
    assert z == pytest.approx(2.3819653367016547)
    assert p == pytest.approx(0.008610259166026252)
    z, p = two_proportion_z(2, 100, 10, 100)
    assert z < 0 and p > 0.99


def test_two_proportion_z_zero_errors():
    assert two_proportion_z(0, 100, 0, 100) == (0.0, 1.0)
    assert two_proportion_z(5, 5, 3, 3) == (0.0, 1.0)
    assert two_proportion_z(0, 0, 0, 10) == (0.0, 1.0)
    z, p = two_proportion_z(8, 50, 0, 50)
    assert z > 0 and p < 0.01
    with pytest.raises(ValueError):
        two_proportion_z(3, 2, 0, 10)


# ---------------------------------------------------------------- windows and verdicts


def test_window_from_probes_counts_timeouts_as_errors_and_inconclusive():
    w = Window.from_probes([(True, 10.0), (False, 12.0), (False, None), (True, 11.0)])
    assert (w.total, w.errors, w.inconclusive) == (4, 2, 1)
    assert w.latencies_ms == [10.0, 12.0, 11.0]
    with pytest.raises(ValueError):
        Window([1.0], errors=0, total=1, inconclusive=1)


def _window(lat: list[float], errors: int = 0, inconclusive: int = 0) -> Window:
    return Window(list(lat), errors=errors + inconclusive, total=len(lat) + inconclusive,
                  inconclusive=inconclusive)


def test_judge_absolute_pass():
    v = judge_absolute(_window([100.0] * 100), T)
    assert v.status == "pass" and v.reasons == []
    assert v.metrics["p95_ms"] == 100.0


def test_judge_absolute_too_few_samples_is_a_fail():
    v = judge_absolute(_window([100.0] * 5), T)
    assert v.status == "fail"
    assert "not enough data" in v.reasons[0] and "5" in v.reasons[0]
    assert judge_absolute(Window(), T).status == "fail"


def test_judge_absolute_inconclusive_is_a_fail():
    v = judge_absolute(_window([100.0] * 70, inconclusive=30), T)
    assert v.status == "fail"
    assert any("inconclusive" in r for r in v.reasons)


def test_judge_absolute_all_timeouts_is_a_fail():
    v = judge_absolute(Window([], errors=30, total=30, inconclusive=30), T)
    assert v.status == "fail"


@pytest.mark.parametrize("errors, status", [(0, "pass"), (1, "pass"), (2, "warn"), (5, "warn"),
                                            (6, "fail")])
def test_judge_absolute_error_rate(errors, status):
    w = Window([100.0] * 100, errors=errors, total=100)
    v = judge_absolute(w, T)
    assert v.status == status, v.reasons
    if status != "pass":
        assert "error rate" in v.reasons[0] and f"{errors}/100" in v.reasons[0]


@pytest.mark.parametrize("slow, status", [(400, "pass"), (600, "warn"), (2500, "fail")])
def test_judge_absolute_p95(slow, status):
    w = _window([100.0] * 90 + [float(slow)] * 10)
    v = judge_absolute(w, T)
    assert v.status == status
    if status != "pass":
        assert f"p95 {slow} ms" in v.reasons[0]


def test_judge_canary_slower_canary_fails_although_p95_under_500():
    rng = random.Random(7)
    canary = _window(_lat(rng, 40, 20, shift=150))
    baseline = _window(_lat(rng, 40, 20))
    assert judge_absolute(canary, T).status == "pass"  # p95 < 500 ms: absolutely fine
    v = judge_canary(canary, baseline, T)
    assert v.status == "fail"
    assert "canary p95" in v.reasons[0] and "vs baseline" in v.reasons[0]
    assert "Mann-Whitney p=" in v.reasons[0]
    assert v.metrics["latency_p"] < 1e-6


def test_judge_canary_same_distribution_passes():
    rng = random.Random(99)
    v = judge_canary(_window(_lat(rng, 50, 100)), _window(_lat(rng, 50, 100)), T)
    assert v.status == "pass", v.reasons


def test_judge_canary_significant_but_tiny_effect_only_warns():
    canary = _window([100.0 + i * 0.01 + 5 for i in range(200)])
    baseline = _window([100.0 + i * 0.01 for i in range(200)])
    v = judge_canary(canary, baseline, T)
    assert v.status == "warn"
    assert "practical" in v.reasons[0]


def test_judge_canary_more_errors_fails():
    lat = [100.0] * 100
    v = judge_canary(Window(lat, errors=12, total=100), Window(lat, errors=1, total=100), T)
    assert v.status == "fail"
    assert "canary error rate 12.0% (12/100) vs baseline 1.0% (1/100)" in v.reasons[0]


def test_judge_canary_insufficient_data_is_a_fail():
    rng = random.Random(3)
    full = _window(_lat(rng, 40, 100))
    assert judge_canary(_window(_lat(rng, 5, 100)), full, T).status == "fail"
    v = judge_canary(full, _window([]), T)
    assert v.status == "fail" and "baseline" in v.reasons[0]


def test_worst_combines():
    v = worst(Verdict("pass"), Verdict("warn", ["a"], {"x": 1}), Verdict("fail", ["b"]))
    assert v.status == "fail" and v.reasons == ["a", "b"] and v.metrics == {"x": 1}
    assert not v.passed and worst(Verdict("warn")).passed
