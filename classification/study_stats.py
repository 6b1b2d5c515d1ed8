"""Inference for the reproduction study: paired comparisons over seeds.

Every arm of the study is trained once per seed, and seed ``s`` fixes the initial weights,
the data order and the augmentation of every arm (common random numbers), so arms are
compared by their per-seed *differences*. The tests here are scipy.stats' own; this module
only composes them:

* ``paired_test``: the paired t-test (``scipy.stats.ttest_rel``) with its 95% confidence
  interval, and the one-sided test of "the effect is at least the paper's" (``ttest_1samp``
  against the paper's value), which is how the data can *exclude* an effect of that size;
* ``tost_paired``: equivalence within ``+/- margin`` by two one-sided tests;
* ``holm``: Holm's step-down adjustment of a family of p-values (the one piece of
  arithmetic written here: it only sorts and scales p-values);
* ``paired_power`` / ``seeds_needed`` / ``detectable_effect``: power of the two-sided paired
  t-test from the noncentral t distribution (``scipy.stats.nct``), used to size the study
  from a pilot, to report the power achieved and the smallest effect a study could detect.
"""
from __future__ import annotations

import math
from typing import Dict, List, Optional, Sequence

import numpy as np

__all__ = ['paired_test', 'tost_paired', 'holm', 'paired_power', 'seeds_needed', 'detectable_effect', 'pilot_sd']


def _differences(a: Sequence[float], b: Sequence[float]) -> np.ndarray:
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f'paired samples must be two equally long 1-D sequences, got shapes {a.shape} and {b.shape}')
    if a.size < 2:
        raise ValueError(f'a paired test needs at least 2 pairs, got {a.size}')
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        raise ValueError('paired samples contain NaN or inf')
    return a - b


def paired_test(a: Sequence[float], b: Sequence[float], paper_effect: Optional[float] = None,
                confidence: float = 0.95) -> Dict[str, float]:
    """Paired t-test of ``a - b`` (pairs are seeds).

    Returns ``n``, ``mean_diff``, ``sd_diff`` (ddof=1), ``se``, ``t``, ``df``, ``p`` (two-sided),
    ``ci_low``/``ci_high`` (``confidence`` interval of the mean difference) and, with
    ``paper_effect`` (assumed > 0), ``p_below_paper``: the one-sided p-value of H0 "the mean
    difference is at least ``paper_effect``"; small values mean the data exclude an effect as
    large as the paper's.

    Example (Student's sleep data, as in R's ``t.test(..., paired = TRUE)``):
        >>> drug2 = [1.9, 0.8, 1.1, 0.1, -0.1, 4.4, 5.5, 1.6, 4.6, 3.4]
        >>> drug1 = [0.7, -1.6, -0.2, -1.2, -0.1, 3.4, 3.7, 0.8, 0.0, 2.0]
        >>> r = paired_test(drug2, drug1)
        >>> round(r['t'], 4), round(r['p'], 6), round(r['ci_low'], 4), round(r['ci_high'], 4)
        (4.0621, 0.002833, 0.7001, 2.4599)
    """
    from scipy import stats

    diff = _differences(a, b)
    result = stats.ttest_rel(a, b)
    ci = result.confidence_interval(confidence)
    sd = float(np.std(diff, ddof=1))
    out = dict(n=int(diff.size), mean_diff=float(diff.mean()), sd_diff=sd, se=sd / math.sqrt(diff.size),
               t=float(result.statistic), df=float(result.df), p=float(result.pvalue),
               ci_low=float(ci.low), ci_high=float(ci.high))
    if sd == 0.0:  # every seed gave the same difference: the t statistic is undefined
        out.update(t=math.copysign(math.inf, out['mean_diff']) if out['mean_diff'] else 0.0,
                   p=0.0 if out['mean_diff'] else 1.0, ci_low=out['mean_diff'], ci_high=out['mean_diff'])
    if paper_effect is not None:
        below = stats.ttest_1samp(diff, popmean=paper_effect, alternative='less')
        out['p_below_paper'] = float(below.pvalue) if sd > 0 else float(out['mean_diff'] >= paper_effect)
    return out


def tost_paired(a: Sequence[float], b: Sequence[float], margin: float) -> Dict[str, float]:
    """Two one-sided tests of equivalence: H0 ``|mean(a - b)| >= margin``.

    ``p`` is the larger of the two one-sided p-values; ``p < alpha`` shows the difference lies
    within ``+/- margin``. Dual to the ``1 - 2 alpha`` confidence interval lying inside the
    margins (``ci90_low``/``ci90_high`` are returned for that reading).
    """
    from scipy import stats

    if not margin > 0:
        raise ValueError(f'equivalence margin must be > 0, got {margin}')
    diff = _differences(a, b)
    lower = stats.ttest_1samp(diff, popmean=-margin, alternative='greater')
    upper = stats.ttest_1samp(diff, popmean=margin, alternative='less')
    ci = stats.ttest_1samp(diff, popmean=0.0).confidence_interval(0.90)
    return dict(margin=margin, p_lower=float(lower.pvalue), p_upper=float(upper.pvalue),
                p=float(max(lower.pvalue, upper.pvalue)), ci90_low=float(ci.low), ci90_high=float(ci.high))


def holm(pvalues: Sequence[float]) -> List[float]:
    """Holm's step-down adjusted p-values, in the input order.

    Example:
        >>> [round(p, 3) for p in holm([0.01, 0.04, 0.03])]
        [0.03, 0.06, 0.06]
    """
    p = np.asarray(pvalues, dtype=float)
    if p.ndim != 1 or np.any((p < 0) | (p > 1)) or np.any(~np.isfinite(p)):
        raise ValueError(f'p-values must be a 1-D sequence in [0, 1], got {list(pvalues)}')
    m = p.size
    order = np.argsort(p, kind='stable')
    adjusted = np.empty(m)
    running = 0.0
    for rank, idx in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[idx]))
        adjusted[idx] = running
    return adjusted.tolist()


def paired_power(n: int, sd_diff: float, effect: float, alpha: float) -> float:
    """Power of the two-sided paired t-test at level ``alpha`` with ``n`` pairs to detect a
    true mean difference ``effect`` when the differences have standard deviation ``sd_diff``.

    Example (Cohen's d = 1, n = 10, alpha = 0.05: 0.803, as in G*Power):
        >>> round(paired_power(10, 1.0, 1.0, 0.05), 3)
        0.803

    A large noncentrality stays finite (scipy's ``nct.cdf`` gives NaN far in its lower tail, so
    the lower rejection region is taken as the upper one of the mirrored distribution):
        >>> round(paired_power(8, 0.186, 0.5, 0.05 / 3), 4)
        0.9997
    """
    from scipy import stats

    if n < 2:
        raise ValueError(f'power needs at least 2 pairs, got {n}')
    if not (sd_diff > 0 and 0 < alpha < 1):
        raise ValueError(f'need sd_diff > 0 and 0 < alpha < 1, got {sd_diff} and {alpha}')
    df = n - 1
    noncentrality = effect / (sd_diff / math.sqrt(n))
    critical = stats.t.ppf(1 - alpha / 2, df)
    # P(T > c) + P(T < -c) for T ~ nct(df, nc); -T ~ nct(df, -nc) gives the second term stably
    power = float(stats.nct.sf(critical, df, noncentrality) + stats.nct.sf(critical, df, -noncentrality))
    if not math.isfinite(power):
        raise ArithmeticError(f'power is not finite (n={n}, sd_diff={sd_diff}, effect={effect}, alpha={alpha})')
    return min(power, 1.0)


def seeds_needed(sd_diff: float, effect: float, alpha: float, power: float, n_min: int = 2,
                 n_max: int = 1000) -> Optional[int]:
    """Smallest number of seeds in ``[n_min, n_max]`` whose paired t-test reaches ``power``;
    ``None`` when even ``n_max`` does not."""
    for n in range(max(2, n_min), n_max + 1):
        if paired_power(n, sd_diff, effect, alpha) >= power:
            return n
    return None


def detectable_effect(n: int, sd_diff: float, alpha: float, power: float = 0.8) -> float:
    """The smallest true mean difference the two-sided paired t-test with ``n`` pairs detects
    with probability ``power`` at level ``alpha`` (the root of ``paired_power`` in the effect,
    ``scipy.optimize.brentq``).

    Example (the inverse of ``paired_power``'s: with n = 10 at alpha = 0.05, power 0.803 is
    reached at Cohen's d = 1, as in G*Power; power 0.8 needs a little less):
        >>> round(detectable_effect(10, 1.0, 0.05, 0.803), 3), round(detectable_effect(10, 1.0, 0.05), 3)
        (1.0, 0.996)
    """
    from scipy import optimize

    if not 0 < power < 1:
        raise ValueError(f'power must be in (0, 1), got {power}')
    paired_power(n, sd_diff, 0.0, alpha)  # validates n, sd_diff and alpha
    high = sd_diff
    while paired_power(n, sd_diff, high, alpha) < power:
        high *= 2
    return float(optimize.brentq(lambda e: paired_power(n, sd_diff, e, alpha) - power, 0.0, high, xtol=1e-10))


def pilot_sd(differences: Sequence[Sequence[float]]) -> float:
    """Pooled standard deviation (ddof=1 per group) of several groups of paired differences,
    e.g. the per-seed differences of the pilot's contrasts."""
    groups = [np.asarray(d, dtype=float) for d in differences if len(d) >= 2]
    if not groups:
        raise ValueError('the pilot needs at least 2 seeds per contrast')
    dof = sum(g.size - 1 for g in groups)
    return math.sqrt(sum(((g - g.mean()) ** 2).sum() for g in groups) / dof)
