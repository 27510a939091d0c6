"""A/B/n winner statistics that stay valid while a campaign is watched continuously.

Pure Python (stdlib ``math``/``random`` only) so that the Flink A/B job, the unit tests and
the analyst command all run exactly the same code, with no JVM and no numpy.

What is here (formulas in each docstring; background in
``shared/reference/ab-testing-and-scoring.md`` Part A):

* :func:`msprt` - mixture SPRT (normal mixture, normal approximation) for the difference of
  two proportions, giving the likelihood ratio Λ and ``p = min(1, 1/Λ)`` at one look;
* :class:`RunningPValue` - the always-valid p-value, the running minimum of those p over looks;
* :func:`holm` - Holm step-down correction across the treatments of an A/B/n test;
* :func:`prob_greater`, :func:`expected_shortfall`, :func:`bayes_summary` - Beta-Binomial
  P(best) and expected loss (exact for two arms, seeded Monte Carlo for three or more);
* :func:`chi2_sf`, :func:`srm_test` - sample-ratio-mismatch chi-square test;
* :func:`decide` - one look of the decision procedure (status, winner, per-arm figures and
  the new state to keep);
* :func:`main` - ``python -m udfs.abtest FILE``: one look from a JSON file, one JSON object out.

Decision rules (see :func:`decide` for details):

* ``srm_alert`` wins over everything and is latched: once the delivered counts contradict the
  expected split (p < ``srm_alpha``) the test's data is suspect and no winner is reported.
* ``winner`` needs maturity (every arm has ``min_delivered_per_arm`` deliveries and
  ``min_elapsed_ms`` has passed since the start) and a Holm-corrected always-valid p-value below
  ``alpha``. It is sticky: later noise never revokes or changes it (only an SRM alert does).
* ``deadline_best`` is the forced choice at the deadline when nothing was significant: the arm
  with the lowest expected loss, explicitly ``significant = False``. It is sticky too.
* otherwise ``collecting``.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "COLLECTING",
    "DEADLINE_BEST",
    "METRICS",
    "SRM_ALERT",
    "STATUSES",
    "WINNER",
    "AbTestDefinition",
    "AbTestInputError",
    "ArmCounts",
    "ArmResult",
    "BayesResult",
    "Decision",
    "DecisionState",
    "MsprtResult",
    "RunningPValue",
    "SrmResult",
    "bayes_monte_carlo",
    "bayes_summary",
    "chi2_sf",
    "decide",
    "expected_shortfall",
    "holm",
    "main",
    "msprt",
    "msprt_confidence_sequence",
    "parse_look",
    "prob_greater",
    "regularized_gamma_q",
    "run_look",
    "srm_test",
]

# Success definitions the A/B job knows how to count (the metric is only a label here):
# clicks = unique clickers without suspected bots, opens = unique human opens (machine opens
# excluded), conversions = unique converters. Rejecting other names catches config typos.
METRICS: tuple[str, ...] = ("clicks", "opens", "conversions")

COLLECTING = "collecting"
WINNER = "winner"
DEADLINE_BEST = "deadline_best"
SRM_ALERT = "srm_alert"
STATUSES: tuple[str, ...] = (COLLECTING, WINNER, DEADLINE_BEST, SRM_ALERT)

# Two floats this close are a tie (exact two-arm losses of identical arms differ by rounding
# only); ties go to the control so that "no difference" never switches what is sent.
_TIE = 1e-12


class AbTestInputError(ValueError):
    """Input that cannot describe an A/B test look (bad counts, no control, ...)."""


# ---------------------------------------------------------------------------------------------
# Sequential test: mixture SPRT on the difference of two proportions
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MsprtResult:
    """One look of the mixture SPRT of a treatment against the control.

    ``log_lambda`` is ln Λ; ``p_value`` is min(1, 1/Λ) at this look only (not yet the running
    minimum); ``delta`` = p̂_t − p̂_c; ``variance`` = V (0.0 when undefined).
    """

    log_lambda: float
    p_value: float
    delta: float
    variance: float


def _check_counts(successes: int, delivered: int, what: str) -> None:
    if delivered < 0 or successes < 0:
        raise AbTestInputError(
            f"{what}: counts must be >= 0 (delivered={delivered}, successes={successes})"
        )
    if successes > delivered:
        raise AbTestInputError(f"{what}: successes ({successes}) > delivered ({delivered})")


def _check_tau(tau: float) -> None:
    if not (isinstance(tau, int | float) and math.isfinite(tau) and tau > 0):
        raise AbTestInputError(f"tau must be a finite number > 0, got {tau!r}")


def msprt(
    control_successes: int,
    control_delivered: int,
    treatment_successes: int,
    treatment_delivered: int,
    tau: float,
) -> MsprtResult:
    """Mixture SPRT likelihood ratio of "the rates differ" against "they are equal".

    With p̂ = x/n per arm, the normal approximation Δ̂ ~ N(Δ, V) and a N(0, τ²) mixture over
    the true difference Δ::

        V = p̂c(1−p̂c)/nc + p̂t(1−p̂t)/nt,    Δ̂ = p̂t − p̂c
        Λ = sqrt(V/(V+τ²)) · exp(τ²Δ̂² / (2V(V+τ²)))
        p = min(1, 1/Λ)

    Λ is a non-negative martingale under H₀, so by Ville's inequality P(sup Λ ≥ 1/α) ≤ α:
    the running minimum of p over looks may be watched continuously (:class:`RunningPValue`).
    ``tau`` is the mixing *standard deviation* on the absolute difference (τ² is its variance);
    fix it before the test starts, e.g. to the smallest lift worth detecting.

    Everything is computed as ln Λ: the exponent grows like n·Δ² and overflows exp() for
    large campaigns, while 1/Λ simply underflows to 0.0.

    Degenerate cases return "no evidence" (ln Λ = 0, p = 1), never a division by zero:

    * an arm with n = 0: its rate is undefined;
    * V = 0, i.e. both observed rates are 0 or 1: the normal approximation has no variance
      estimate, and treating V→0 as certainty would let 0/1 vs 1/1 "prove" a difference.
      Conservative by design: the test waits until one arm shows variation.
    """
    _check_counts(control_successes, control_delivered, "control")
    _check_counts(treatment_successes, treatment_delivered, "treatment")
    _check_tau(tau)
    if control_delivered == 0 or treatment_delivered == 0:
        return MsprtResult(log_lambda=0.0, p_value=1.0, delta=0.0, variance=0.0)
    pc = control_successes / control_delivered
    pt = treatment_successes / treatment_delivered
    delta = pt - pc
    v = pc * (1.0 - pc) / control_delivered + pt * (1.0 - pt) / treatment_delivered
    if v <= 0.0:
        return MsprtResult(log_lambda=0.0, p_value=1.0, delta=delta, variance=0.0)
    tau2 = tau * tau
    # ½·ln(V/(V+τ²)) = −½·ln(1+τ²/V); log1p keeps precision when τ² ≪ V (early looks).
    log_lambda = -0.5 * math.log1p(tau2 / v) + tau2 * delta * delta / (2.0 * v * (v + tau2))
    p_value = 1.0 if log_lambda <= 0.0 else math.exp(-log_lambda)
    return MsprtResult(log_lambda=log_lambda, p_value=p_value, delta=delta, variance=v)


def msprt_confidence_sequence(
    control_successes: int,
    control_delivered: int,
    treatment_successes: int,
    treatment_delivered: int,
    tau: float,
    alpha: float,
) -> tuple[float, float] | None:
    """Always-valid (1−α) confidence interval for Δ = p_t − p_c at this look (the set Λ < 1/α).

    Δ̂ ± sqrt( V(V+τ²)/τ² · (2·ln(1/α) + ln((V+τ²)/V)) ).  ``None`` when V is undefined
    (an arm with n = 0, or both rates 0 or 1), for the same reasons as :func:`msprt`.
    """
    if not 0.0 < alpha < 1.0:
        raise AbTestInputError(f"alpha must be in (0, 1), got {alpha!r}")
    r = msprt(control_successes, control_delivered, treatment_successes, treatment_delivered, tau)
    if r.variance <= 0.0:
        return None
    v, tau2 = r.variance, tau * tau
    half = math.sqrt(v * (v + tau2) / tau2 * (2.0 * math.log(1.0 / alpha) + math.log1p(tau2 / v)))
    return (r.delta - half, r.delta + half)


@dataclass(frozen=True)
class RunningPValue:
    """Always-valid p-value of one treatment-vs-control pair: p₀ = 1, p_t = min(p_{t−1}, 1/Λ_t).

    The streaming job keeps one per (test, treatment). ``direction`` is the sign of Δ̂ at the
    look that set the current minimum (+1 treatment ahead, −1 behind, 0 never below 1), so the
    decision knows which way the evidence pointed, even if the observed rates cross later.
    """

    p_value: float = 1.0
    direction: int = 0
    looks: int = 0

    def update(self, result: MsprtResult) -> RunningPValue:
        """The state after one more look (pure: returns a new object)."""
        if result.p_value < self.p_value:
            sign = (result.delta > 0) - (result.delta < 0)
            return RunningPValue(result.p_value, sign, self.looks + 1)
        return RunningPValue(self.p_value, self.direction, self.looks + 1)

    def to_dict(self) -> dict[str, Any]:
        return {"p_value": self.p_value, "direction": self.direction, "looks": self.looks}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RunningPValue:
        return cls(float(d["p_value"]), int(d["direction"]), int(d["looks"]))


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm step-down adjusted p-values (family-wise error control across m comparisons).

    Sort ascending p₍₁₎ ≤ … ≤ p₍ₘ₎; p̃₍ᵣ₎ = max_{s≤r} min(1, (m−s+1)·p₍ₛ₎); returned in the
    input order. Rejecting every p̃ < α keeps P(any false rejection) ≤ α for any dependence,
    and always-valid p-values evaluated at a stopping time are valid inputs. Uniformly more
    powerful than Bonferroni (m·p). Ties keep input order, which does not change the result.
    """
    for p in p_values:
        if not (isinstance(p, int | float) and 0.0 <= p <= 1.0):
            raise AbTestInputError(f"p-values must be in [0, 1], got {p!r}")
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [1.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


# ---------------------------------------------------------------------------------------------
# Bayesian view: Beta-Binomial P(best) and expected loss
# ---------------------------------------------------------------------------------------------


def _lbeta(a: float, b: float) -> float:
    return math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)


def _prob_second_greater_sum(a1: float, b1: float, a2: int, b2: float) -> float:
    """P(X₂ > X₁), X₁ ~ Beta(a1, b1), X₂ ~ Beta(a2, b2), a2 a positive integer (Evan Miller):

        Σ_{i=0}^{a2−1} B(a1+i, b1+b2) / ((b2+i)·B(1+i, b2)·B(a1, b1))

    Successive terms differ by the factor (a1+i)(b2+i) / ((a1+b1+b2+i)(1+i)), so the sum
    costs one log per term; it is accumulated in log space because the first terms underflow
    to 0.0 for large counts even when the total is not small.
    """
    log_term = _lbeta(a1, b1 + b2) - _lbeta(a1, b1)
    top, scaled = log_term, 1.0  # sum = scaled · exp(top), top = largest log term so far
    for i in range(a2 - 1):
        log_term += math.log((a1 + i) * (b2 + i) / ((a1 + b1 + b2 + i) * (1.0 + i)))
        if log_term > top:
            scaled = scaled * math.exp(top - log_term) + 1.0
            top = log_term
        else:
            scaled += math.exp(log_term - top)
    return scaled * math.exp(top)


def _is_pos_int(x: float) -> bool:
    return x >= 1 and float(x).is_integer()


def _prob_greater_both(a: float, b: float, c: float, d: float) -> tuple[float, float]:
    """(P(X > Y), P(Y > X)) for X ~ Beta(a, b), Y ~ Beta(c, d) from a single exact sum.

    The side that is summed directly keeps full relative precision even when it is tiny
    (e.g. 1e-28); the other is its complement (ties have probability 0).
    """
    for name, v in (("a", a), ("b", b), ("c", c), ("d", d)):
        if not (math.isfinite(v) and v > 0):
            raise AbTestInputError(f"Beta parameter {name} must be finite and > 0, got {v!r}")
    a_ok, c_ok = _is_pos_int(a), _is_pos_int(c)
    if not (a_ok or c_ok):
        raise AbTestInputError("exact Beta comparison needs a or c to be a whole number")
    if a_ok and (not c_ok or a <= c):
        x_wins = min(1.0, max(0.0, _prob_second_greater_sum(c, d, int(a), b)))
        return x_wins, 1.0 - x_wins
    y_wins = min(1.0, max(0.0, _prob_second_greater_sum(a, b, int(c), d)))
    return 1.0 - y_wins, y_wins


def prob_greater(a: float, b: float, c: float, d: float) -> float:
    """P(X > Y) for independent X ~ Beta(a, b), Y ~ Beta(c, d); exact closed-form sum.

    Needs ``a`` or ``c`` to be a whole number (always true for Beta(1+s, 1+n−s) posteriors).
    Sums over the smaller whole-number first parameter, so the cost is O(min successes):
    P(X > Y) directly (a terms) or as 1 − P(Y > X) (c terms).
    """
    return _prob_greater_both(a, b, c, d)[0]


def expected_shortfall(a: float, b: float, c: float, d: float) -> float:
    """E[max(X − Y, 0)] for X ~ Beta(a, b), Y ~ Beta(c, d); exact.

    This is the expected loss of shipping Y when X might be better (Stucchio; VWO "potential
    loss"). Size-biasing a Beta gives E[X·1{X>Y}] = a/(a+b)·P(X' > Y), X' ~ Beta(a+1, b), so

        E[max(X−Y, 0)] = a/(a+b)·h(a+1, b, c, d) − c/(c+d)·h(a, b, c+1, d),  h = P(X > Y).

    Clamped at 0 because the two terms cancel to rounding error when Y clearly dominates.
    """
    value = a / (a + b) * prob_greater(a + 1, b, c, d) - c / (c + d) * prob_greater(a, b, c + 1, d)
    return max(0.0, value)


@dataclass(frozen=True)
class BayesResult:
    """Per-arm P(best) and expected loss E[max_j p_j − p_k] under Beta(1+s, 1+n−s) posteriors.

    ``exact`` is True for two arms (closed form), False for Monte Carlo (3+ arms).
    """

    prob_best: tuple[float, ...]
    expected_loss: tuple[float, ...]
    exact: bool


def bayes_summary(
    counts: Sequence[tuple[int, int]], draws: int = 20_000, seed: int = 0
) -> BayesResult:
    """P(best) and expected loss per arm; ``counts`` = [(successes, delivered), ...].

    Posterior of arm k with a uniform prior: p_k ~ Beta(1 + s_k, 1 + n_k − s_k).

    * two arms: P(B best) = P(p_B > p_A) and the losses E[max(p_B − p_A, 0)] (of choosing A)
      and E[max(p_A − p_B, 0)] (of choosing B) in closed form, so the usual A/B case is exact
      and free of sampling noise;
    * three or more: ``draws`` joint posterior draws with ``random.Random(seed)``; P(best) is
      the share of draws an arm is the maximum (ties go to the first arm), loss the mean of
      max_j p_j − p_k. A fixed seed makes the same counts always give the same figures, so a
      replayed stream yields identical decisions; standard error ≈ sqrt(P(1−P)/draws).

    One arm: P(best) = 1, loss 0. The P(best) values sum to 1.
    """
    if not counts:
        raise AbTestInputError("bayes_summary needs at least one arm")
    for k, (s, n) in enumerate(counts):
        _check_counts(s, n, f"arm #{k}")
    if draws < 1:
        raise AbTestInputError(f"draws must be >= 1, got {draws!r}")
    post = [(1 + s, 1 + n - s) for s, n in counts]
    if len(post) == 1:
        return BayesResult((1.0,), (0.0,), exact=True)
    if len(post) == 2:
        (aa, ba), (ab, bb) = post
        p_a, p_b = _prob_greater_both(aa, ba, ab, bb)
        loss_a = expected_shortfall(ab, bb, aa, ba)
        loss_b = expected_shortfall(aa, ba, ab, bb)
        return BayesResult((p_a, p_b), (loss_a, loss_b), exact=True)
    return bayes_monte_carlo(counts, draws=draws, seed=seed)


def bayes_monte_carlo(
    counts: Sequence[tuple[int, int]], draws: int = 20_000, seed: int = 0
) -> BayesResult:
    """Monte Carlo P(best) and expected loss for any number of arms (used for 3+ arms).

    Draws p_k ~ Beta(1 + s_k, 1 + n_k − s_k) jointly ``draws`` times from
    ``random.Random(seed)``: P(best)_k = share of draws where arm k is the maximum (ties to
    the first), loss_k = mean of max_j p_j − p_k. Public so that the exact two-arm figures can
    be checked against it.
    """
    if not counts:
        raise AbTestInputError("bayes_monte_carlo needs at least one arm")
    for k, (s, n) in enumerate(counts):
        _check_counts(s, n, f"arm #{k}")
    if draws < 1:
        raise AbTestInputError(f"draws must be >= 1, got {draws!r}")
    post = [(1 + s, 1 + n - s) for s, n in counts]
    rng = random.Random(seed)
    k = len(post)
    wins = [0] * k
    loss = [0.0] * k
    for _ in range(draws):
        sample = [rng.betavariate(a, b) for a, b in post]
        top = max(sample)
        wins[sample.index(top)] += 1
        for j, v in enumerate(sample):
            loss[j] += top - v
    return BayesResult(tuple(w / draws for w in wins), tuple(x / draws for x in loss), exact=False)


# ---------------------------------------------------------------------------------------------
# Sample ratio mismatch
# ---------------------------------------------------------------------------------------------


def regularized_gamma_q(s: float, x: float) -> float:
    """Regularized upper incomplete gamma Q(s, x) = Γ(s, x)/Γ(s), s > 0, x ≥ 0.

    Below x < s + 1 the power series of P(s, x) = 1 − Q converges fast; above it the
    continued fraction for Q does (modified Lentz), so neither needs many terms and Q keeps
    its relative precision deep in the tail, where SRM p-values like 1e-4 live.
    """
    if not (s > 0 and math.isfinite(s)):
        raise AbTestInputError(f"s must be finite and > 0, got {s!r}")
    if x < 0 or math.isnan(x):
        raise AbTestInputError(f"x must be >= 0, got {x!r}")
    if x == 0:
        return 1.0
    if math.isinf(x):
        return 0.0
    log_prefactor = s * math.log(x) - x - math.lgamma(s)
    if x < s + 1.0:
        term = total = 1.0 / s
        k = s
        while abs(term) > abs(total) * 1e-16:
            k += 1.0
            term *= x / k
            total += term
        return max(0.0, 1.0 - total * math.exp(log_prefactor))
    tiny = 1e-300
    b = x + 1.0 - s
    c = 1.0 / tiny
    d = 1.0 / b
    frac = d
    for i in range(1, 10_000):
        an = -i * (i - s)
        b += 2.0
        d = an * d + b
        d = tiny if abs(d) < tiny else d
        c = b + an / c
        c = tiny if abs(c) < tiny else c
        d = 1.0 / d
        step = d * c
        frac *= step
        if abs(step - 1.0) < 1e-16:
            break
    return min(1.0, math.exp(log_prefactor) * frac)


def chi2_sf(x: float, df: int) -> float:
    """Chi-square survival function P(χ²_df ≥ x) = Q(df/2, x/2).

    Closed forms where they exist: df = 1 → erfc(√(x/2)); df = 2 → exp(−x/2).
    """
    if not (isinstance(df, int) and df >= 1):
        raise AbTestInputError(f"df must be an integer >= 1, got {df!r}")
    if x < 0 or math.isnan(x):
        raise AbTestInputError(f"chi-square statistic must be >= 0, got {x!r}")
    if df == 1:
        return math.erfc(math.sqrt(x / 2.0))
    if df == 2:
        return math.exp(-x / 2.0)
    return regularized_gamma_q(df / 2.0, x / 2.0)


@dataclass(frozen=True)
class SrmResult:
    """χ² statistic, degrees of freedom and p-value of one SRM check."""

    chi2: float
    df: int
    p_value: float


def srm_test(observed: Sequence[int], weights: Sequence[float]) -> SrmResult | None:
    """Chi-square goodness of fit of delivered counts against the intended split.

    e_j = w_j/Σw · Σo;  χ² = Σ (o_j − e_j)²/e_j;  df = k − 1;  p = P(χ²_df ≥ χ²).
    A tiny p means the split is broken (one arm throttled, bouncing, or suppressed after
    assignment), so the arms are no longer comparable. ``None`` when there is nothing to
    test (fewer than two arms, or no deliveries yet).
    """
    if len(observed) != len(weights):
        raise AbTestInputError("observed and weights must have the same length")
    for o in observed:
        if o < 0:
            raise AbTestInputError(f"observed counts must be >= 0, got {o!r}")
    for w in weights:
        if not (math.isfinite(w) and w > 0):
            raise AbTestInputError(f"split weights must be finite and > 0, got {w!r}")
    total = sum(observed)
    if len(observed) < 2 or total == 0:
        return None
    wsum = math.fsum(weights)
    chi2 = 0.0
    for o, w in zip(observed, weights, strict=True):
        e = total * w / wsum
        chi2 += (o - e) ** 2 / e
    df = len(observed) - 1
    return SrmResult(chi2=chi2, df=df, p_value=chi2_sf(chi2, df))


# ---------------------------------------------------------------------------------------------
# Decision procedure for one look
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AbTestDefinition:
    """Parameters of one A/B/n test. Times are event-time epoch milliseconds.

    * ``metric``: one of :data:`METRICS` (a label here; the job counts successes by it).
    * ``alpha``: family-wise error rate of the sequential test (Holm across treatments).
    * ``tau``: mixing standard deviation of the mSPRT, in absolute rate units (0.004 = 0.4 pp).
    * ``control_arm``: name of the control; it must be one of the arms at every look.
    * ``min_delivered_per_arm`` / ``min_elapsed_ms``: maturity; no winner before both hold
      (responses are delayed, early responders are not representative).
    * ``start_ms``: when the test started; ``None`` = the first look's time (kept in state).
    * ``deadline_ms`` (absolute) / ``max_duration_ms`` (after start): at the first look at or
      after the earlier of the two, an undecided test is closed as ``deadline_best``.
    * ``expected_split``: arm → weight (any positive scale); ``None`` = equal split.
    * ``srm_alpha``: SRM threshold on the χ² p-value.
    * ``keep_control_rel_loss``: at the deadline, keep the control when its expected loss is
      at most this × the control rate (switching would gain less than that); 0 = pure minimum
      expected loss.
    * ``mc_draws`` / ``seed``: Monte Carlo for P(best) with 3+ arms.
    """

    metric: str
    alpha: float
    tau: float
    control_arm: str
    min_delivered_per_arm: int = 0
    min_elapsed_ms: int = 0
    start_ms: int | None = None
    deadline_ms: int | None = None
    max_duration_ms: int | None = None
    expected_split: Mapping[str, float] | None = None
    srm_alpha: float = 0.001
    keep_control_rel_loss: float = 0.0
    mc_draws: int = 20_000
    seed: int = 0

    def validate(self) -> None:
        """Raise :class:`AbTestInputError` with a readable message when a field is invalid."""
        if self.metric not in METRICS:
            raise AbTestInputError(f"metric must be one of {list(METRICS)}, got {self.metric!r}")
        if not (isinstance(self.alpha, int | float) and 0.0 < self.alpha < 1.0):
            raise AbTestInputError(f"alpha must be in (0, 1), got {self.alpha!r}")
        _check_tau(self.tau)
        if not (isinstance(self.control_arm, str) and self.control_arm):
            raise AbTestInputError("control_arm must be a non-empty string")
        if not (isinstance(self.srm_alpha, int | float) and 0.0 < self.srm_alpha < 1.0):
            raise AbTestInputError(f"srm_alpha must be in (0, 1), got {self.srm_alpha!r}")
        for name in ("min_delivered_per_arm", "min_elapsed_ms", "mc_draws", "seed"):
            v = getattr(self, name)
            if not _is_int(v) or v < (1 if name == "mc_draws" else 0):
                raise AbTestInputError(
                    f"{name} must be a whole number >= {1 if name == 'mc_draws' else 0}, got {v!r}"
                )
        for name in ("start_ms", "deadline_ms", "max_duration_ms"):
            v = getattr(self, name)
            if v is not None and not _is_int(v):
                raise AbTestInputError(f"{name} must be a whole number or null, got {v!r}")
        if self.max_duration_ms is not None and self.max_duration_ms < 0:
            raise AbTestInputError("max_duration_ms must be >= 0")
        if not (
            isinstance(self.keep_control_rel_loss, int | float)
            and math.isfinite(self.keep_control_rel_loss)
            and self.keep_control_rel_loss >= 0
        ):
            raise AbTestInputError("keep_control_rel_loss must be a finite number >= 0")
        if self.expected_split is not None:
            for arm, w in self.expected_split.items():
                if not (
                    isinstance(w, int | float)
                    and not isinstance(w, bool)
                    and math.isfinite(w)
                    and w > 0
                ):
                    raise AbTestInputError(
                        f"expected_split weight of arm {arm!r} must be a number > 0, got {w!r}"
                    )


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


@dataclass(frozen=True)
class ArmCounts:
    """Cumulative counts of one arm at a look: delivered (denominator) and successes."""

    arm: str
    delivered: int
    successes: int


@dataclass(frozen=True)
class DecisionState:
    """What the job keeps per (campaign, test) between looks.

    ``running``: per treatment arm, its :class:`RunningPValue`. ``status``/``winner``: the
    current decision, whose ``decided_ms`` is when it was reached. ``version`` increases by
    one every time (status, winner) changes, starting at 1 on the first look, so
    (test, version) identifies a decision deterministically. JSON-friendly via ``to_dict``.
    """

    running: Mapping[str, RunningPValue] = field(default_factory=dict)
    status: str = COLLECTING
    winner: str | None = None
    started_ms: int | None = None
    decided_ms: int | None = None
    version: int = 0
    looks: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "running": {arm: r.to_dict() for arm, r in self.running.items()},
            "status": self.status,
            "winner": self.winner,
            "started_ms": self.started_ms,
            "decided_ms": self.decided_ms,
            "version": self.version,
            "looks": self.looks,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DecisionState:
        status = d.get("status", COLLECTING)
        if status not in STATUSES:
            raise AbTestInputError(f"unknown status in state: {status!r}")
        return cls(
            running={a: RunningPValue.from_dict(r) for a, r in d.get("running", {}).items()},
            status=status,
            winner=d.get("winner"),
            started_ms=d.get("started_ms"),
            decided_ms=d.get("decided_ms"),
            version=int(d.get("version", 0)),
            looks=int(d.get("looks", 0)),
        )


@dataclass(frozen=True)
class ArmResult:
    """Per-arm figures of one look. p-values are ``None`` for the control (it is not tested).

    ``p_value_raw`` = min(1, 1/Λ) at this look; ``p_value_running`` = its running minimum
    (always valid); ``p_value`` = Holm-corrected running p-value across treatments.
    ``rate`` is ``None`` while nothing was delivered.
    """

    arm: str
    control: bool
    delivered: int
    successes: int
    rate: float | None
    p_value_raw: float | None
    p_value_running: float | None
    p_value: float | None
    prob_best: float
    expected_loss: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "arm": self.arm,
            "control": self.control,
            "delivered": self.delivered,
            "successes": self.successes,
            "rate": self.rate,
            "p_value_raw": self.p_value_raw,
            "p_value_running": self.p_value_running,
            "p_value": self.p_value,
            "prob_best": self.prob_best,
            "expected_loss": self.expected_loss,
        }


@dataclass(frozen=True)
class Decision:
    """Outcome of one look: the decision, per-arm figures, SRM result and the state to keep.

    ``significant`` is True only for ``winner`` (``deadline_best`` is a forced choice).
    ``changed`` says whether (status, winner) differ from the previous look, i.e. whether a
    new decision version was produced.
    """

    status: str
    winner: str | None
    significant: bool
    metric: str
    look_ms: int
    decided_ms: int | None
    version: int
    changed: bool
    srm_chi2: float | None
    srm_p_value: float | None
    arms: tuple[ArmResult, ...]
    state: DecisionState

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly view (without the state, which the job stores separately)."""
        return {
            "status": self.status,
            "winner": self.winner,
            "significant": self.significant,
            "metric": self.metric,
            "look_ms": self.look_ms,
            "decided_ms": self.decided_ms,
            "version": self.version,
            "srm_chi2": self.srm_chi2,
            "srm_p_value": self.srm_p_value,
            "arms": [a.to_dict() for a in self.arms],
        }


def _validate_arms(definition: AbTestDefinition, arms: Sequence[ArmCounts]) -> None:
    if len(arms) < 2:
        raise AbTestInputError(f"an A/B test needs at least two arms, got {len(arms)}")
    seen: set[str] = set()
    for a in arms:
        if not (isinstance(a.arm, str) and a.arm):
            raise AbTestInputError(f"arm names must be non-empty strings, got {a.arm!r}")
        if a.arm in seen:
            raise AbTestInputError(f"arm {a.arm!r} appears twice")
        seen.add(a.arm)
        if not (_is_int(a.delivered) and _is_int(a.successes)):
            raise AbTestInputError(
                f"arm {a.arm!r}: delivered and successes must be whole "
                f"numbers, got {a.delivered!r} and {a.successes!r}"
            )
        _check_counts(a.successes, a.delivered, f"arm {a.arm!r}")
    if definition.control_arm not in seen:
        raise AbTestInputError(
            f"control arm {definition.control_arm!r} is not among the arms {sorted(seen)}"
        )
    if definition.expected_split is not None:
        missing = seen - set(definition.expected_split)
        extra = set(definition.expected_split) - seen
        if missing or extra:
            raise AbTestInputError(
                f"expected_split must name exactly the arms {sorted(seen)} "
                f"(missing {sorted(missing)}, unknown {sorted(extra)})"
            )


def _significant_winner(
    arms: Sequence[ArmCounts],
    control: str,
    rates: Mapping[str, float | None],
    corrected: Mapping[str, float],
    running: Mapping[str, RunningPValue],
    alpha: float,
) -> str | None:
    """The arm the sequential test supports, or None.

    The candidate is the arm with the best observed rate (ties: control first, then input
    order). A treatment wins when its Holm-corrected p < alpha, the evidence pointed its way
    (direction +1 at the running minimum) and it is ahead of the control now. The control
    wins when it is significantly better than every treatment (all p < alpha, direction −1,
    all behind now). Treatments are only tested against the control, so in A/B/n a treatment
    that leads without being significant blocks a significant runner-up: we wait rather
    than declare an arm that the data currently ranks second.
    """
    rc = rates[control]
    if rc is None:
        return None
    order = [control] + [a.arm for a in arms if a.arm != control]
    best, best_rate = control, rc
    for arm in order[1:]:
        r = rates[arm]
        if r is not None and r > best_rate:
            best, best_rate = arm, r
    if best != control:
        ok = corrected[best] < alpha and running[best].direction > 0
        return best if ok else None
    for t in order[1:]:
        rt = rates[t]
        if not (corrected[t] < alpha and running[t].direction < 0 and rt is not None and rt < rc):
            return None
    return control


def _deadline_choice(
    arms: Sequence[ArmCounts],
    control: str,
    rates: Mapping[str, float | None],
    losses: Mapping[str, float],
    keep_control_rel_loss: float,
) -> str:
    """Forced choice: lowest expected loss; the control on ties or when its loss is negligible.

    "Negligible" = at most keep_control_rel_loss × control rate (VWO's threshold of caring),
    because switching away from the control for an expected gain below that is not worth it.
    """
    best_loss = min(losses.values())
    rc = rates[control]
    if losses[control] <= best_loss + _TIE:
        return control
    if rc is not None and losses[control] <= keep_control_rel_loss * rc:
        return control
    for a in arms:
        if losses[a.arm] <= best_loss + _TIE:
            return a.arm
    raise AssertionError("unreachable: some arm has the minimum loss")


def decide(
    definition: AbTestDefinition,
    arms: Sequence[ArmCounts],
    look_ms: int,
    state: DecisionState | None = None,
) -> Decision:
    """Evaluate one look of an A/B/n test from cumulative per-arm counts.

    Steps, in order:

    1. mSPRT of every treatment against the control (:func:`msprt`), folded into the running
       always-valid p-value (:class:`RunningPValue`); Holm across treatments (:func:`holm`).
    2. Beta-Binomial P(best) and expected loss (:func:`bayes_summary`), reported beside it.
    3. SRM χ² of delivered counts against ``expected_split`` (:func:`srm_test`).
    4. Status, first rule that applies:

       * ``srm_alert`` if the SRM p-value < ``srm_alpha`` now or at any earlier look
         (latched: a broken split taints all data collected so far; restart the test);
         winner ``None``, overriding even an earlier winner.
       * an earlier ``winner`` or ``deadline_best`` is kept unchanged (sticky: once campaign
         tools acted on it, noise must not flip it; the running p-values cannot rise anyway).
       * ``winner`` if mature (every arm ≥ ``min_delivered_per_arm`` and at least
         ``min_elapsed_ms`` since the start) and the sequential test picks an arm (see
         ``_significant_winner``; it may be the control).
       * ``deadline_best`` if the deadline is reached: lowest expected loss, not significant.
       * ``collecting``.

    The state is never mutated; the new one is in ``Decision.state``. Looks must be given
    with cumulative counts; ``look_ms`` is event time (the job's watermark or the latest
    event time), so replays give the same decisions.
    """
    definition.validate()
    _validate_arms(definition, arms)
    if not _is_int(look_ms):
        raise AbTestInputError(f"look_ms must be a whole number, got {look_ms!r}")
    prev = state if state is not None else DecisionState()
    control = definition.control_arm
    by_arm = {a.arm: a for a in arms}
    c = by_arm[control]
    treatments = [a for a in arms if a.arm != control]

    started = (
        definition.start_ms
        if definition.start_ms is not None
        else prev.started_ms
        if prev.started_ms is not None
        else look_ms
    )

    rates = {a.arm: (a.successes / a.delivered if a.delivered else None) for a in arms}
    raw: dict[str, float] = {}
    running = dict(prev.running)
    for t in treatments:
        r = msprt(c.successes, c.delivered, t.successes, t.delivered, definition.tau)
        raw[t.arm] = r.p_value
        running[t.arm] = running.get(t.arm, RunningPValue()).update(r)
    corrected = dict(
        zip(
            [t.arm for t in treatments],
            holm([running[t.arm].p_value for t in treatments]),
            strict=True,
        )
    )

    bayes = bayes_summary(
        [(a.successes, a.delivered) for a in arms], draws=definition.mc_draws, seed=definition.seed
    )
    prob_best = dict(zip(by_arm, bayes.prob_best, strict=True))
    losses = dict(zip(by_arm, bayes.expected_loss, strict=True))

    split = definition.expected_split
    weights = [float(split[a.arm]) if split is not None else 1.0 for a in arms]
    srm = srm_test([a.delivered for a in arms], weights)

    status, winner = COLLECTING, None
    if prev.status == SRM_ALERT or (srm is not None and srm.p_value < definition.srm_alpha):
        status = SRM_ALERT
    elif prev.status in (WINNER, DEADLINE_BEST):
        status, winner = prev.status, prev.winner
    else:
        mature = (
            all(a.delivered >= definition.min_delivered_per_arm for a in arms)
            and look_ms - started >= definition.min_elapsed_ms
        )
        if mature:
            winner = _significant_winner(arms, control, rates, corrected, running, definition.alpha)
        deadlines = [
            d
            for d in (
                definition.deadline_ms,
                None
                if definition.max_duration_ms is None
                else started + definition.max_duration_ms,
            )
            if d is not None
        ]
        if winner is not None:
            status = WINNER
        elif deadlines and look_ms >= min(deadlines):
            status = DEADLINE_BEST
            winner = _deadline_choice(
                arms, control, rates, losses, definition.keep_control_rel_loss
            )

    changed = prev.looks == 0 or (status, winner) != (prev.status, prev.winner)
    new_state = DecisionState(
        running=running,
        status=status,
        winner=winner,
        started_ms=started,
        decided_ms=look_ms if changed else prev.decided_ms,
        version=prev.version + 1 if changed else prev.version,
        looks=prev.looks + 1,
    )
    results = tuple(
        ArmResult(
            arm=a.arm,
            control=a.arm == control,
            delivered=a.delivered,
            successes=a.successes,
            rate=rates[a.arm],
            p_value_raw=raw.get(a.arm),
            p_value_running=running[a.arm].p_value if a.arm != control else None,
            p_value=corrected.get(a.arm),
            prob_best=prob_best[a.arm],
            expected_loss=losses[a.arm],
        )
        for a in arms
    )
    return Decision(
        status=status,
        winner=winner,
        significant=status == WINNER,
        metric=definition.metric,
        look_ms=look_ms,
        decided_ms=new_state.decided_ms,
        version=new_state.version,
        changed=changed,
        srm_chi2=None if srm is None else srm.chi2,
        srm_p_value=None if srm is None else srm.p_value,
        arms=results,
        state=new_state,
    )


# ---------------------------------------------------------------------------------------------
# Analyst command: python -m udfs.abtest FILE
# ---------------------------------------------------------------------------------------------

_REQUIRED_KEYS = ("metric", "alpha", "tau", "arms")
# Optional keys map 1:1 onto AbTestDefinition fields, plus look_ms (the look's event time).
_OPTIONAL_KEYS = (
    "expected_split",
    "min_delivered_per_arm",
    "min_elapsed_ms",
    "start_ms",
    "deadline_ms",
    "max_duration_ms",
    "srm_alpha",
    "keep_control_rel_loss",
    "mc_draws",
    "seed",
    "look_ms",
)
_ARM_KEYS = ("arm", "control", "delivered", "successes")


def _number(v: object, what: str) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise AbTestInputError(f"{what} must be a number, got {v!r}")
    return float(v)


def parse_look(doc: object) -> tuple[AbTestDefinition, list[ArmCounts], int]:
    """Turn the command's JSON document into (definition, arms, look_ms); strict on purpose.

    ``{"metric", "alpha", "tau", "arms": [{"arm", "control", "delivered", "successes"}],
    "expected_split"?}``; ``control`` defaults to false and exactly one arm must be true.
    ``expected_split`` is either a list of weights in arm order or an object arm → weight.
    Any other :class:`AbTestDefinition` field may be given too (see ``_OPTIONAL_KEYS``);
    unknown keys are rejected so that a misspelt option never silently does nothing.
    """
    if not isinstance(doc, dict):
        raise AbTestInputError("input must be a JSON object")
    missing = [k for k in _REQUIRED_KEYS if k not in doc]
    if missing:
        raise AbTestInputError(f"missing field(s): {', '.join(missing)}")
    unknown = sorted(set(doc) - set(_REQUIRED_KEYS) - set(_OPTIONAL_KEYS))
    if unknown:
        raise AbTestInputError(
            f"unknown field(s): {', '.join(unknown)}; allowed: "
            f"{', '.join(_REQUIRED_KEYS + _OPTIONAL_KEYS)}"
        )
    if not isinstance(doc["metric"], str):
        raise AbTestInputError(f"metric must be a string, got {doc['metric']!r}")
    raw_arms = doc["arms"]
    if not isinstance(raw_arms, list) or len(raw_arms) < 2:
        raise AbTestInputError("arms must be a list of at least two objects")
    arms: list[ArmCounts] = []
    controls: list[str] = []
    for i, item in enumerate(raw_arms):
        if not isinstance(item, dict):
            raise AbTestInputError(f"arms[{i}] must be an object")
        miss = [k for k in ("arm", "delivered", "successes") if k not in item]
        if miss:
            raise AbTestInputError(f"arms[{i}]: missing field(s): {', '.join(miss)}")
        extra = sorted(set(item) - set(_ARM_KEYS))
        if extra:
            raise AbTestInputError(f"arms[{i}]: unknown field(s): {', '.join(extra)}")
        name = item["arm"]
        if not isinstance(name, str) or not name:
            raise AbTestInputError(f"arms[{i}].arm must be a non-empty string, got {name!r}")
        is_control = item.get("control", False)
        if not isinstance(is_control, bool):
            raise AbTestInputError(f"arms[{i}].control must be true or false")
        for k in ("delivered", "successes"):
            if not _is_int(item[k]):
                raise AbTestInputError(f"arms[{i}].{k} must be a whole number, got {item[k]!r}")
        arms.append(ArmCounts(name, item["delivered"], item["successes"]))
        if is_control:
            controls.append(name)
    if len(controls) != 1:
        raise AbTestInputError(
            f'exactly one arm must have "control": true, got '
            f"{len(controls)}" + (f" ({', '.join(controls)})" if controls else "")
        )
    split = doc.get("expected_split")
    if isinstance(split, list):
        if len(split) != len(arms):
            raise AbTestInputError(f"expected_split has {len(split)} weights for {len(arms)} arms")
        split = {a.arm: w for a, w in zip(arms, split, strict=True)}
    elif split is not None and not isinstance(split, dict):
        raise AbTestInputError(
            "expected_split must be a list of weights or an object arm -> weight"
        )
    extra_fields = {
        k: doc[k] for k in _OPTIONAL_KEYS if k in doc and k not in ("expected_split", "look_ms")
    }
    for k in ("srm_alpha", "keep_control_rel_loss"):
        if k in extra_fields:
            extra_fields[k] = _number(extra_fields[k], k)
    definition = AbTestDefinition(
        metric=doc["metric"],
        alpha=_number(doc["alpha"], "alpha"),
        tau=_number(doc["tau"], "tau"),
        control_arm=controls[0],
        expected_split=split,
        **extra_fields,
    )
    look_ms = doc.get("look_ms", 0)
    if not _is_int(look_ms):
        raise AbTestInputError(f"look_ms must be a whole number, got {look_ms!r}")
    return definition, arms, look_ms


def run_look(doc: object) -> dict[str, Any]:
    """One look through :func:`decide`, as the JSON object the command prints.

    Fields: ``status``, ``winner``, ``significant``, ``metric``, ``srm_p_value``,
    ``srm_chi2`` and ``arms`` (each ``arm``, ``control``, ``delivered``, ``successes``,
    ``rate``, ``p_value_raw``, ``p_value``, ``prob_best``, ``expected_loss``). With one look
    the running p-value equals the raw one, so it is not repeated.
    """
    definition, arms, look_ms = parse_look(doc)
    d = decide(definition, arms, look_ms)
    return {
        "status": d.status,
        "winner": d.winner,
        "significant": d.significant,
        "metric": d.metric,
        "srm_p_value": d.srm_p_value,
        "srm_chi2": d.srm_chi2,
        "arms": [{k: v for k, v in a.to_dict().items() if k != "p_value_running"} for a in d.arms],
    }


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m udfs.abtest FILE`` (``-`` = stdin): print one look's decision as JSON.

    Exit status 0 on success, 2 on bad input (message on stderr).
    """
    parser = argparse.ArgumentParser(
        prog="python -m udfs.abtest",
        description="Evaluate one look of an A/B/n test (mSPRT + Holm, Bayesian P(best), SRM).",
    )
    parser.add_argument("file", help="JSON file with metric, alpha, tau, arms (- for stdin)")
    args = parser.parse_args(argv)
    try:
        if args.file == "-":
            text = sys.stdin.read()
        else:
            with open(args.file, encoding="utf-8") as fh:
                text = fh.read()
    except OSError as exc:
        print(f"error: cannot read {args.file}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        print(f"error: {args.file} is not valid JSON: {exc}", file=sys.stderr)
        return 2
    try:
        out = run_look(doc)
    except AbTestInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(out, allow_nan=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
