"""Tail probabilities the SLA verdicts need (binomial, Student t), in pure Python (no SciPy).

Both come from the regularized incomplete beta function I_x(a, b), evaluated by its continued
fraction (DLMF 8.17.22) with the modified Lentz method, and by the symmetry
I_x(a, b) = 1 - I_{1-x}(b, a) where the fraction converges slowly.
"""

from __future__ import annotations

import math

_EPS = 1e-15
_TINY = 1e-300
_MAX_ITER = 200_000


def regularized_beta(a: float, b: float, x: float) -> float:
    """I_x(a, b) for a, b > 0 and 0 <= x <= 1."""
    if not (a > 0 and b > 0):
        raise ValueError(f"regularized_beta(a={a!r}, b={b!r}): a and b must be > 0")
    if not 0.0 <= x <= 1.0:
        raise ValueError(f"regularized_beta(x={x!r}): x must lie in [0, 1]")
    if x == 0.0 or x == 1.0:
        return x
    if x > (a + 1.0) / (a + b + 2.0):
        return 1.0 - regularized_beta(b, a, 1.0 - x)
    log_front = (a * math.log(x) + b * math.log1p(-x) - math.log(a)
                 - (math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)))
    return math.exp(log_front) * _fraction(a, b, x)


def _fraction(a: float, b: float, x: float) -> float:
    """1 / (1 + d1 / (1 + d2 / (1 + ...))) by the modified Lentz method."""
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > _TINY else _TINY)
    result = d
    for m in range(1, _MAX_ITER):
        for numerator in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                          -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > _TINY else _TINY)
            c = 1.0 + numerator / c
            c = c if abs(c) > _TINY else _TINY
            result *= c * d
        if abs(c * d - 1.0) < _EPS:
            return result
    raise ArithmeticError(f"incomplete beta fraction did not converge (a={a}, b={b}, x={x})")


def _check(k: int, n: int, p: float) -> None:
    if n < 0 or not 0.0 <= p <= 1.0:
        raise ValueError(f"binomial(n={n!r}, p={p!r}): need n >= 0 and 0 <= p <= 1")


def at_most(k: int, n: int, p: float) -> float:
    """P[X <= k] for X ~ Binomial(n, p)."""
    _check(k, n, p)
    if k < 0:
        return 0.0
    if k >= n:
        return 1.0
    if p == 0.0 or p == 1.0:
        return 1.0 if p == 0.0 else 0.0
    return regularized_beta(n - k, k + 1, 1.0 - p)


def at_least(k: int, n: int, p: float) -> float:
    """P[X >= k] for X ~ Binomial(n, p)."""
    _check(k, n, p)
    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    if p == 0.0 or p == 1.0:
        return 0.0 if p == 0.0 else 1.0
    return regularized_beta(k, n - k + 1, p)


def student_t_cdf(t: float, df: float) -> float:
    """P[T <= t] for Student's t with ``df`` degrees of freedom."""
    if not df > 0:
        raise ValueError(f"student_t_cdf(df={df!r}): df must be > 0")
    half_tail = 0.5 * regularized_beta(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - half_tail if t > 0 else half_tail


def student_t_quantile(q: float, df: float) -> float:
    """The t with P[T <= t] = q (0.5 <= q < 1), by bisection to 1e-12."""
    if not 0.5 <= q < 1.0:
        raise ValueError(f"student_t_quantile(q={q!r}): q must lie in [0.5, 1)")
    lo, hi = 0.0, 1.0
    while student_t_cdf(hi, df) < q:
        lo, hi = hi, hi * 2.0
    while hi - lo > 1e-12 * max(1.0, hi):
        mid = (lo + hi) / 2.0
        if student_t_cdf(mid, df) < q:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2.0
