"""The SLA's confidence rules: binomial tails, per-criterion verdicts, the need-more estimate,
the combined judgement with the stability rule, the stop rule, and max_qps trials judged by them."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_tfserving import binomial, sla_rules
from pytest_tfserving.errors import ConfigError
from pytest_tfserving.load.stats import LatencyStats, WindowStats, new_histogram
from pytest_tfserving.sla_rules import (
    SlaLimits,
    judge,
    percentile_test,
    share_test,
    stop_when,
    throughput_test,
)


def window(index: int, fast: int, slow: int = 0, errors: int = 0, span_s: float = 1.0,
           unanswered: int = 0, partial: bool = False, fast_us: int = 1000) -> WindowStats:
    """``fast`` answers at ``fast_us``, ``slow`` at 50 ms, ``errors`` failed, ``unanswered``
    sent but never answered (no error code yet)."""
    hist = new_histogram()
    hist.record_value(fast_us, fast) if fast else None
    hist.record_value(50_000, slow) if slow else None
    ok = fast + slow
    stats = LatencyStats(hist, span_s, ok + errors + unanswered, ok,
                         {"UNAVAILABLE": errors} if errors else {})
    return WindowStats(index, stats, new_histogram(), partial)


# --- binomial tails ---------------------------------------------------------------------------

def exact_at_most(k: int, n: int, p: Fraction) -> float:
    return float(sum(math.comb(n, i) * p ** i * (1 - p) ** (n - i) for i in range(k + 1)))


@pytest.mark.parametrize(("k", "n"), [(0, 1), (0, 100), (2, 101), (5, 300), (37, 900), (9, 40)])
def test_binomial_tails_match_exact_sums(k: int, n: int) -> None:
    p = Fraction(1, 100)
    assert binomial.at_most(k, n, 0.01) == pytest.approx(exact_at_most(k, n, p), rel=1e-9)
    assert binomial.at_least(k, n, 0.01) == pytest.approx(
        1 - exact_at_most(k - 1, n, p) if k else 1.0, rel=1e-9, abs=1e-15)


def test_binomial_tails_agree_with_scipy_at_large_n() -> None:
    stats = pytest.importorskip("scipy.stats")
    for n, k in ((9000, 37), (10**6, 9000), (10**6, 11000), (10**7, 100_500)):
        assert binomial.at_most(k, n, 0.01) == pytest.approx(stats.binom.cdf(k, n, 0.01),
                                                             rel=1e-6)
        assert binomial.at_least(k, n, 0.01) == pytest.approx(stats.binom.sf(k - 1, n, 0.01),
                                                              rel=1e-6)


def test_student_t_quantiles_match_the_tables() -> None:
    # one-sided 95 % points: df 1, 2, 4, 30
    for df, t in ((1, 6.3138), (2, 2.9200), (4, 2.1318), (30, 1.6973)):
        assert binomial.student_t_quantile(0.95, df) == pytest.approx(t, abs=1e-4)


# --- the p99 rule: MLPerf LoadGen's early stopping ------------------------------------------------

def test_p99_known_cases() -> None:
    # 0.99 ** 1000 = 4.3e-5 <= 0.05: within the target at 95 %
    thousand = percentile_test(1000, 0, 99)
    assert thousand.verdict == "PASS" and thousand.p_within == pytest.approx(0.99 ** 1000)
    # 0.99 ** 100 = 0.366: too few requests; 299 with none over is the least that passes
    hundred = percentile_test(100, 0, 99)
    assert hundred.verdict == "UNDECIDED" and hundred.p_within == pytest.approx(0.366, abs=1e-3)
    assert hundred.need_more == 199
    assert percentile_test(299, 0, 99).verdict == "PASS"
    assert percentile_test(299, 0, 99).p_within == pytest.approx(0.0495, abs=1e-4)
    assert percentile_test(298, 0, 99).verdict == "UNDECIDED"
    # 2 % over among 9000: the true p99 is over the target
    assert percentile_test(9000, 180, 99).verdict == "FAIL"
    assert percentile_test(9000, 37, 99).verdict == "PASS"  # 0.41 %
    assert percentile_test(1000, 15, 99).verdict == "UNDECIDED"  # 1.5 %, not yet sure


def test_need_more_is_where_the_same_share_decides() -> None:
    test = percentile_test(1000, 15, 99)
    assert test.need_more is not None
    later = 1000 + test.need_more
    assert percentile_test(later, round(0.015 * later), 99).verdict == "FAIL"
    assert percentile_test(later - 1, round(0.015 * (later - 1)), 99).verdict == "UNDECIDED"
    at_limit = percentile_test(1000, 10, 99)  # exactly 1 %: no length of run decides
    assert at_limit.verdict == "UNDECIDED" and at_limit.need_more is None


def test_other_percentiles_use_their_share() -> None:
    # p90: 10 % may be over; 5 % over among 1000 is within it, 20 % is over
    assert percentile_test(1000, 50, 90).verdict == "PASS"
    assert percentile_test(1000, 200, 90).verdict == "FAIL"
    assert percentile_test(29, 0, 90).verdict == "PASS"  # 0.9 ** 29 = 0.047
    assert percentile_test(28, 0, 90).verdict == "UNDECIDED"
    with pytest.raises(ValueError, match=r"percentile 0 is out of range"):
        percentile_test(10, 0, 0)


# --- error rate and answered share ------------------------------------------------------------

def test_error_rate_rules() -> None:
    assert share_test(10_000, 2, 0.001).verdict == "PASS"  # 0.02 % of 10,000
    assert share_test(10_000, 30, 0.001).verdict == "FAIL"
    assert share_test(1000, 0, 0.001).verdict == "UNDECIDED"  # 0.999 ** 1000 = 0.37
    assert share_test(2995, 0, 0.001).verdict == "PASS"  # the least error-free run that passes
    assert share_test(2994, 0, 0.001).verdict == "UNDECIDED"
    # limit 0: judged on the count
    assert share_test(5, 0, 0.0).verdict == "PASS"
    assert share_test(100_000, 1, 0.0).verdict == "FAIL"
    with pytest.raises(ConfigError, match=r"confidence 1.0 is out of range"):
        share_test(10, 0, 0.01, confidence=1.0)


def test_answered_share_is_judged_against_one_constant() -> None:
    from pytest_tfserving.load import search

    assert sla_rules.ANSWERED_MIN_SHARE == 0.95
    assert not hasattr(search, "ANSWERED_MIN_SHARE")  # defined once, in sla_rules
    limits = SlaLimits(latency_ms=25, max_error_rate=1.0)
    shed = judge([window(i, 800, unanswered=200) for i in range(3)], limits)
    answered = next(c for c in shed.criteria if c.name == "answered")
    assert answered.verdict == "FAIL" and shed.verdict == "FAIL"
    assert "answered: 2400 of 3000 requests sent (80.00 %)" in answered.line
    kept = judge([window(i, 990, unanswered=10) for i in range(3)], limits)
    assert kept.verdict == "PASS"


# --- closed-loop throughput -------------------------------------------------------------------

def test_throughput_bounds_over_windows() -> None:
    assert throughput_test([100, 102, 98, 101], 90).verdict == "PASS"
    assert throughput_test([100, 102, 98, 101], 110).verdict == "FAIL"
    wide = throughput_test([100, 80, 120], 95)
    assert wide.verdict == "UNDECIDED" and wide.need_more is not None and wide.need_more > 0
    assert throughput_test([100], 50).verdict == "UNDECIDED"  # no spread from one window
    # the t bound with 3 windows: mean 100, sd 20, t(0.95, 2) = 2.92
    assert wide.lower_qps == pytest.approx(100 - 2.91999 * 20 / math.sqrt(3), rel=1e-4)


def test_closed_loop_judges_min_qps_not_the_answered_share() -> None:
    limits = SlaLimits(latency_ms=25, mode="closed", min_qps=500, max_error_rate=0.01)
    result = judge([window(i, 1000) for i in range(4)], limits)
    assert [c.name for c in result.criteria] == ["p99", "errors", "throughput"]
    assert result.verdict == "PASS"
    slow = judge([window(i, 400) for i in range(4)], limits)
    assert slow.verdict == "FAIL" and "not met" in slow.failures[0]


# --- the combined judgement -------------------------------------------------------------------

def test_judge_passes_fails_and_says_why() -> None:
    limits = SlaLimits(latency_ms=25)
    good = judge([window(i, 3000) for i in range(3)], limits)
    assert good.verdict == "PASS" and good.stable and good.decided and not good.failures
    assert "p99: 0 of 9000 requests over 25 ms (0.00 %), true p99 <= 25 ms at 95 % " \
           "confidence" in good.message()
    slow = judge([window(i, 2940, slow=60) for i in range(3)], limits)
    assert slow.verdict == "FAIL"
    assert slow.failures == ["p99: 180 of 9000 requests over 25 ms (2.00 %), true p99 > 25 ms "
                             "at 95 % confidence"]
    errors = judge([window(i, 2900, errors=100) for i in range(3)], limits)
    assert errors.verdict == "FAIL" and errors.failures[0].startswith("errors: 300 of 9000")


def test_inconclusive_says_how_much_more_to_measure() -> None:
    limits = SlaLimits(latency_ms=25, max_error_rate=0.01)
    short = judge([window(i, 40, span_s=0.4) for i in range(3)], limits)  # 120 requests
    assert short.verdict == "INCONCLUSIVE" and not short.decided
    # errors at 1 %: 299 error-free requests needed, 179 more at 100 req/s
    assert short.need_requests == 179 and short.need_s == pytest.approx(1.79)
    assert "need about 179 more requests (~1.8 s at this rate)" in short.message()


def test_no_windows_or_a_share_at_the_limit_cannot_be_decided_by_waiting() -> None:
    limits = SlaLimits(latency_ms=25, max_error_rate=0.01)
    empty = judge([], limits)
    assert empty.verdict == "INCONCLUSIVE" and empty.need_text() == "no request was measured"
    at_limit = judge([window(i, 990, slow=10) for i in range(3)], limits)  # exactly 1 % over
    assert at_limit.verdict == "INCONCLUSIVE" and at_limit.need_requests is None
    assert "would not decide it" in at_limit.message()


def test_partial_windows_are_left_out() -> None:
    limits = SlaLimits(latency_ms=25)
    result = judge([window(i, 3000) for i in range(3)] + [window(3, 10, slow=10, partial=True)],
                   limits)
    assert result.verdict == "PASS" and result.criteria[0].figures["answered"] == 9000


def test_a_stable_run_is_judged_on_the_windows_that_agree() -> None:
    limits = SlaLimits(latency_ms=25, max_error_rate=1.0)
    # latency settles higher: pooled, the early fast windows would hide the slow ones
    windows = [window(i, 20_000) for i in range(4)] + [window(4 + i, 2000, slow=40)
                                                        for i in range(3)]
    assert sla_rules.criteria(windows, limits)[0].verdict == "PASS"  # all pooled
    result = judge(windows, limits)
    assert result.stable and result.verdict == "FAIL"
    assert "judged on the last 3 windows, which agree; the first 4 differ" in result.note
    assert result.criteria[0].figures["answered"] == 6120


def test_an_unstable_run_is_judged_on_its_last_windows_too() -> None:
    limits = SlaLimits(latency_ms=25, max_error_rate=1.0)
    # p99 jumps between windows: pooled it passes, the last three alone are over the target
    windows = [window(i, 20_000, fast_us=1000 + 1000 * (i % 2)) for i in range(4)]
    windows += [window(4, 2000, slow=40), window(5, 3000, slow=10), window(6, 2000, slow=40)]
    result = judge(windows, limits)
    assert not result.stable
    assert sla_rules.criteria(windows, limits)[0].verdict == "PASS"
    assert result.verdict == "FAIL"
    assert "measurement unstable" in result.note and "the worse counts" in result.note
    assert "unstable" in result.message()
    # unstable but passing on all and on the last windows: PASS, with the note in the message
    wobbly = [window(i, 3000, fast_us=1000 + 2000 * (i % 2)) for i in range(5)]
    passed = judge(wobbly, limits)
    assert passed.verdict == "PASS" and not passed.stable and "unstable" in passed.message()


def test_stop_rule_stops_once_decided() -> None:
    rule = stop_when(SlaLimits(latency_ms=25, max_error_rate=0.01))
    assert not rule([window(0, 50)])  # undecided
    assert not rule([window(0, 3000)])  # decided PASS, but one window: stability unseen
    assert rule([window(i, 3000) for i in range(3)])
    # passing, but the windows disagree: a PASS may be luck, measuring goes on
    assert not rule([window(i, 3000, fast_us=1000 + 2000 * (i % 2)) for i in range(3)])
    assert rule([window(0, 900, slow=100)])  # FAIL stops at once


def test_limits_are_checked() -> None:
    with pytest.raises(ConfigError, match=r"latency target 0 ms must be > 0"):
        SlaLimits(latency_ms=0)
    with pytest.raises(ConfigError, match=r"confidence 0.2 is out of range"):
        SlaLimits(latency_ms=1, confidence=0.2)


# --- properties -------------------------------------------------------------------------------

RANK = {"FAIL": 0, "UNDECIDED": 1, "PASS": 2}


@settings(max_examples=200, deadline=None)
@given(n=st.integers(0, 5000), k=st.integers(0, 5000),
       limit=st.sampled_from([0.001, 0.01, 0.05, 0.1, 0.5]),
       confidence=st.sampled_from([0.5, 0.9, 0.95, 0.99]))
def test_pass_and_fail_exclude_each_other_and_verdicts_are_monotone(
        n: int, k: int, limit: float, confidence: float) -> None:
    k = min(k, n)
    test = share_test(n, k, limit, confidence)
    alpha = 1 - confidence
    assert not (test.p_within <= alpha and test.p_over <= alpha)
    assert (test.verdict == "PASS") == (n > 0 and test.p_within <= alpha)
    if k < n:  # one more slow request can only make the verdict worse
        assert RANK[share_test(n, k + 1, limit, confidence).verdict] <= RANK[test.verdict]
    if test.verdict == "PASS":  # a stricter confidence can only undecide a PASS
        assert share_test(n, k, limit, 0.5).verdict == "PASS"
