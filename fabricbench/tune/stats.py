"""Is a candidate really faster? Paired, interleaved repeats and a confidence interval of the speed-up.

Default and candidate run alternately (each in fresh processes), so slow drifts of a shared machine hit both;
pair i is (default run i, candidate run i). The speed-up is default time / candidate time; its interval is a
t-interval on the paired log ratios (ratios are multiplicative, and their logs are close to normal), turned
back into a ratio. A gain is claimed only when the whole interval lies above 1 and the speed-up is at least MIN_GAIN: smaller
differences are below what repeated runs resolve on a shared cluster and not worth a configuration change.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# Two-sided 95% Student t quantiles (t_{0.975, df}); beyond 30 degrees of freedom the normal value is close.
_T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
         11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120, 17: 2.110, 18: 2.101, 19: 2.093,
         20: 2.086, 22: 2.074, 24: 2.064, 26: 2.056, 28: 2.048, 30: 2.042}


def t975(df: int) -> float:
    if df < 1:
        return math.inf
    if df in _T975:
        return _T975[df]
    below = [k for k in _T975 if k <= df]
    return _T975[max(below)] if df <= 30 else 1.96


MIN_GAIN = 0.02  # 2%


@dataclass(frozen=True)
class RatioCI:
    """Speed-up of a candidate over the default (>1: candidate faster), with a 95% interval."""

    speedup: float
    low: float
    high: float
    pairs: int

    @property
    def verdict(self) -> str:
        if self.pairs < 2:
            return "inconclusive (fewer than 2 pairs)"
        if self.significant_gain:
            return "faster"
        if self.high < 1.0:
            return "slower"
        return "no significant gain"

    @property
    def significant_gain(self) -> bool:
        return self.pairs >= 2 and self.low > 1.0 and self.speedup >= 1.0 + MIN_GAIN

    def text(self) -> str:
        return f"{self.speedup:.3f}x (95% CI {self.low:.3f}-{self.high:.3f}, {self.pairs} pairs)"


def ratio_ci(default_us, candidate_us) -> RatioCI:
    """Paired samples (same length, same order) -> the speed-up default/candidate with its 95% interval."""
    d = np.asarray(default_us, dtype=float)
    c = np.asarray(candidate_us, dtype=float)
    if d.shape != c.shape:
        raise ValueError(f"paired samples differ in length: {d.size} default, {c.size} candidate")
    keep = np.isfinite(d) & np.isfinite(c) & (d > 0) & (c > 0)
    logs = np.log(d[keep]) - np.log(c[keep])
    n = int(logs.size)
    if n == 0:
        return RatioCI(math.nan, math.nan, math.nan, 0)
    mean = float(logs.mean())
    if n == 1:
        return RatioCI(math.exp(mean), 0.0, math.inf, 1)
    half = t975(n - 1) * float(logs.std(ddof=1)) / math.sqrt(n)
    return RatioCI(math.exp(mean), math.exp(mean - half), math.exp(mean + half), n)
