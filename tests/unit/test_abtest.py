"""Unit tests for udfs.abtest: the reference's worked numbers (Part A5) and properties.

Reference: shared/reference/ab-testing-and-scoring.md, examples E1-E5.
"""

from __future__ import annotations

import itertools
import json
import math
import random
import subprocess
import sys
from pathlib import Path

import pytest

from udfs import abtest
from udfs.abtest import (
    AbTestDefinition,
    AbTestInputError,
    ArmCounts,
    DecisionState,
    RunningPValue,
    bayes_monte_carlo,
    bayes_summary,
    chi2_sf,
    decide,
    expected_shortfall,
    holm,
    msprt,
    msprt_confidence_sequence,
    prob_greater,
    regularized_gamma_q,
    run_look,
    srm_test,
)

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "abtest"


def _tau(tau2: float) -> float:
    return math.sqrt(tau2)


# ------------------------------------------------------------------------------------------
# E1 / E1b / E1c: mSPRT
# ------------------------------------------------------------------------------------------

# (τ², log Λ, Λ, always-valid p, CS low, CS high) for A 200/10k vs B 260/10k.
E1 = [
    (1e-4, 2.2611, 9.5940, 0.10423, -0.00055, 0.01255),
    (1.6e-5, 2.3696, 10.6927, 0.09352, -0.00057, 0.01257),
    (2.5e-5, 2.4556, 11.6530, 0.08581, -0.00046, 0.01246),
    (1e-3, 1.2839, 3.6108, 0.27695, -0.00117, 0.01317),
]


@pytest.mark.parametrize(("tau2", "log_lam", "lam", "p", "lo", "hi"), E1)
def test_e1_msprt_matches_reference(tau2, log_lam, lam, p, lo, hi):
    r = msprt(200, 10_000, 260, 10_000, _tau(tau2))
    assert r.variance == pytest.approx(4.492400e-06, rel=1e-6)
    assert r.delta == pytest.approx(0.0060, abs=1e-12)
    assert round(r.log_lambda, 4) == log_lam
    assert round(math.exp(r.log_lambda), 4) == lam
    assert round(r.p_value, 5) == p
    cs = msprt_confidence_sequence(200, 10_000, 260, 10_000, _tau(tau2), 0.05)
    assert cs is not None
    assert round(cs[0], 5) == lo
    assert round(cs[1], 5) == hi


@pytest.mark.parametrize(
    ("tau2", "log_lam", "lam", "p", "lo", "hi"),
    [
        (1.6e-5, 5.7956, 328.85, 0.00304, 0.00220, 0.01580),
        (1e-4, 6.5494, 698.84, 0.00143, 0.00226, 0.01574),
    ],
)
def test_e1b_significant_case(tau2, log_lam, lam, p, lo, hi):
    r = msprt(200, 10_000, 290, 10_000, _tau(tau2))
    assert r.variance == pytest.approx(4.775900e-06, rel=1e-6)
    assert round(r.log_lambda, 4) == log_lam
    assert round(math.exp(r.log_lambda), 2) == lam
    assert round(r.p_value, 5) == p
    lo_got, hi_got = msprt_confidence_sequence(200, 10_000, 290, 10_000, _tau(tau2), 0.05)
    assert (round(lo_got, 5), round(hi_got, 5)) == (lo, hi)


def test_e1c_running_minimum_over_looks():
    looks = [
        (2_000, 40, 55, 1.1619, 0.86063),
        (4_000, 95, 120, 1.2746, 0.78454),
        (6_000, 140, 178, 2.4116, 0.41466),
        (8_000, 170, 221, 5.9292, 0.16866),
        (10_000, 200, 260, 9.5940, 0.10423),
    ]
    state = RunningPValue()
    for n, xa, xb, lam, p_run in looks:
        r = msprt(xa, n, xb, n, 0.01)
        assert round(math.exp(r.log_lambda), 4) == lam
        state = state.update(r)
        assert round(state.p_value, 5) == p_run
        assert state.direction == 1
    assert state.looks == 5


def test_msprt_is_symmetric_in_the_arms():
    a = msprt(200, 10_000, 260, 9_000, 0.004)
    b = msprt(260, 9_000, 200, 10_000, 0.004)
    assert a.log_lambda == pytest.approx(b.log_lambda, rel=1e-12)
    assert a.delta == pytest.approx(-b.delta)


@pytest.mark.parametrize(
    ("xc", "nc", "xt", "nt"),
    [
        (0, 0, 0, 0),  # nothing delivered
        (0, 0, 5, 100),  # control empty
        (5, 100, 0, 0),  # treatment empty
        (0, 500, 0, 500),  # V = 0, no successes anywhere
        (0, 1, 1, 1),  # V = 0 with a difference: no variance estimate, no evidence
        (100, 100, 0, 100),  # V = 0, all vs nothing
    ],
)
def test_msprt_degenerate_cases_give_no_evidence(xc, nc, xt, nt):
    r = msprt(xc, nc, xt, nt, 0.01)
    assert r.log_lambda == 0.0
    assert r.p_value == 1.0
    assert r.variance == 0.0
    assert msprt_confidence_sequence(xc, nc, xt, nt, 0.01, 0.05) is None


def test_msprt_huge_counts_do_not_overflow():
    r = msprt(20_000_000, 1_000_000_000, 30_000_000, 1_000_000_000, 0.004)
    assert math.isfinite(r.log_lambda) and r.log_lambda > 1e4
    assert r.p_value == 0.0
    tiny = msprt(1, 1_000_000_000, 999_999_999, 1_000_000_000, 0.004)
    assert tiny.p_value == 0.0


def test_msprt_no_difference_never_rejects():
    # Δ = 0 leaves only the ½·ln(V/(V+τ²)) < 0 term, so Λ < 1 and p = 1.
    r = msprt(200, 10_000, 200, 10_000, 0.01)
    assert r.log_lambda < 0
    assert r.p_value == 1.0


@pytest.mark.parametrize(
    "args",
    [(5, 4, 1, 10, 0.01), (1, 10, -1, 10, 0.01), (1, 10, 1, 10, 0.0), (1, 10, 1, 10, -1.0)],
)
def test_msprt_rejects_bad_input(args):
    with pytest.raises(AbTestInputError):
        msprt(*args)


def test_running_p_value_is_monotone_over_looks():
    rng = random.Random(7)
    for _ in range(30):
        state, prev = RunningPValue(), 1.0
        xa = xb = n = 0
        for _ in range(40):
            xa += sum(rng.random() < 0.02 for _ in range(300))
            xb += sum(rng.random() < 0.025 for _ in range(300))
            n += 300
            state = state.update(msprt(xa, n, xb, n, 0.004))
            assert state.p_value <= prev
            prev = state.p_value


def test_running_p_value_remembers_direction_of_its_minimum():
    s = RunningPValue().update(msprt(290, 10_000, 200, 10_000, 0.01))
    assert s.direction == -1
    # A later, weaker look the other way does not move the minimum or its direction.
    s = s.update(msprt(300, 20_000, 340, 20_000, 0.01))
    assert s.direction == -1 and s.p_value < 0.002 and s.looks == 2
    assert RunningPValue.from_dict(json.loads(json.dumps(s.to_dict()))) == s


# ------------------------------------------------------------------------------------------
# E5: Holm
# ------------------------------------------------------------------------------------------


def test_e5_holm():
    assert holm([0.01, 0.02, 0.04]) == pytest.approx([0.03, 0.04, 0.04])
    assert holm([0.04, 0.01, 0.02]) == pytest.approx([0.04, 0.03, 0.04])


def test_holm_properties():
    rng = random.Random(3)
    for _ in range(200):
        m = rng.randint(1, 8)
        p = [rng.random() ** 3 for _ in range(m)]
        adj = holm(p)
        for i in range(m):
            assert p[i] <= adj[i] <= min(1.0, m * p[i]) + 1e-15
            for j in range(m):
                if p[i] <= p[j]:
                    assert adj[i] <= adj[j]  # adjusting keeps the order of the raw p-values
    assert holm([0.3]) == [0.3]
    assert holm([]) == []
    with pytest.raises(AbTestInputError):
        holm([0.1, 1.5])


# ------------------------------------------------------------------------------------------
# E2 / E3: Bayesian
# ------------------------------------------------------------------------------------------

E2 = [
    # (A successes, n), (B successes, n), P(B>A), E[loss] ship A, E[loss] ship B
    ((3, 10), (6, 10), 0.900810, 2.593721e-01, 9.372055e-03),
    ((200, 10_000), (260, 10_000), 0.997678, 6.000260e-03, 1.459764e-06),
    ((200, 10_000), (230, 10_000), 0.928017, 3.065191e-03, 6.579075e-05),
]


@pytest.mark.parametrize(("arm_a", "arm_b", "p_b", "loss_a", "loss_b"), E2)
def test_e2_beta_binomial_exact(arm_a, arm_b, p_b, loss_a, loss_b):
    r = bayes_summary([arm_a, arm_b])
    assert r.exact
    assert round(r.prob_best[1], 6) == p_b
    assert sum(r.prob_best) == pytest.approx(1.0, abs=1e-12)
    assert r.expected_loss[0] == pytest.approx(loss_a, rel=5e-7)
    assert r.expected_loss[1] == pytest.approx(loss_b, rel=5e-7)


def test_prob_greater_both_summation_sides_agree():
    # a <= c sums directly, a > c goes through the complement: both must give the same value.
    for a, b, c, d in [(4, 8, 7, 5), (201, 9801, 261, 9741), (50, 70, 3, 9)]:
        assert prob_greater(a, b, c, d) + prob_greater(c, d, a, b) == pytest.approx(1.0)
    assert prob_greater(1, 1, 1, 1) == pytest.approx(0.5)
    # P(Beta(2,1) > U(0,1)) = ∫ 2x·x dx = 2/3
    assert prob_greater(2, 1, 1, 1) == pytest.approx(2 / 3)
    # E[max(X−Y,0)] for two independent uniforms = 1/6
    assert expected_shortfall(1, 1, 1, 1) == pytest.approx(1 / 6)
    with pytest.raises(AbTestInputError):
        prob_greater(1.5, 1, 2.5, 1)


def test_prob_best_keeps_tiny_probabilities():
    r = bayes_summary([(1012, 50_600), (1482, 49_400)])
    assert 0 < r.prob_best[0] < 1e-20
    assert 0 < r.expected_loss[1] < 1e-25


def test_e3_three_arms_monte_carlo():
    counts = [(200, 10_000), (230, 10_000), (260, 10_000)]
    r = bayes_summary(counts, draws=100_000, seed=42)
    assert not r.exact
    # 1-D integration values from the reference; MC tolerance as the reference suggests.
    for got, want in zip(r.prob_best, [0.0013221, 0.0848774, 0.9138005], strict=True):
        assert got == pytest.approx(want, abs=0.003)
    for got, want in zip(r.expected_loss, [0.006085, 0.003087, 0.0000862], strict=True):
        assert got == pytest.approx(want, abs=3e-5)
    assert sum(r.prob_best) == pytest.approx(1.0, abs=1e-12)
    # fixed seed: the same counts always give the same figures
    assert bayes_summary(counts, draws=100_000, seed=42) == r


def test_two_arm_exact_agrees_with_monte_carlo():
    for counts in ([(3, 10), (6, 10)], [(200, 10_000), (230, 10_000)], [(40, 2_000), (55, 2_000)]):
        exact = bayes_summary(counts)
        mc = bayes_monte_carlo(counts, draws=40_000, seed=1)
        for e, m in zip(exact.prob_best, mc.prob_best, strict=True):
            assert m == pytest.approx(e, abs=0.01)
        for e, m in zip(exact.expected_loss, mc.expected_loss, strict=True):
            assert m == pytest.approx(e, abs=max(0.02 * e, 2e-5))


def test_prob_best_sums_to_one_for_many_arms():
    rng = random.Random(5)
    for k in (1, 2, 3, 5):
        counts = []
        for _ in range(k):
            n = rng.randint(0, 3_000)
            counts.append((rng.randint(0, n // 10), n))
        r = bayes_summary(counts, draws=2_000, seed=9)
        assert sum(r.prob_best) == pytest.approx(1.0, abs=1e-9)
        assert min(r.expected_loss) >= 0.0
        assert len(r.prob_best) == len(r.expected_loss) == k


# ------------------------------------------------------------------------------------------
# E4: SRM
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("observed", "weights", "chi2", "p"),
    [
        ([50_600, 49_400], [1, 1], 14.4, 1.478e-4),
        ([50_250, 49_750], [1, 1], 2.5, 0.1138),
        ([10_000, 10_300, 9_700], [1, 1, 1], 18.0, 1.234e-4),
        ([1_100, 4_400, 4_500], [10, 45, 45], 12.222, 0.002218),
    ],
)
def test_e4_srm(observed, weights, chi2, p):
    r = srm_test(observed, weights)
    assert r is not None
    assert round(r.chi2, 3) == pytest.approx(chi2)
    assert r.df == len(observed) - 1
    assert r.p_value == pytest.approx(p, rel=5e-4)


def test_chi2_general_tail_matches_closed_forms_and_tables():
    for x in (0.01, 0.5, 1.0, 3.84, 14.4, 40.0, 120.0):
        assert regularized_gamma_q(0.5, x / 2) == pytest.approx(chi2_sf(x, 1), rel=1e-10)
        assert regularized_gamma_q(1.0, x / 2) == pytest.approx(chi2_sf(x, 2), rel=1e-10)
    # 95 % and 99.9 % critical values of the chi-square distribution
    for x, df in [
        (7.814727903251178, 3),
        (9.487729036781154, 4),
        (11.070497693516351, 5),
        (18.307038053275146, 10),
    ]:
        assert chi2_sf(x, df) == pytest.approx(0.05, rel=1e-9)
    assert chi2_sf(16.266236196238129, 3) == pytest.approx(0.001, rel=1e-9)
    # Q(3/2, 3) = erfc(√3) + 2·√(3/π)·e^−3 (chi-square df 3 at 6)
    closed = math.erfc(math.sqrt(3)) + 2 * math.sqrt(3 / math.pi) * math.exp(-3)
    assert chi2_sf(6.0, 3) == pytest.approx(closed, rel=1e-12)
    assert chi2_sf(0.0, 4) == 1.0
    assert 0.0 < chi2_sf(400.0, 3) < 1e-80
    xs = [0.1 * i for i in range(1, 400)]
    tail = [chi2_sf(x, 6) for x in xs]
    assert all(a > b for a, b in itertools.pairwise(tail))


def test_srm_nothing_to_test():
    assert srm_test([0, 0], [1, 1]) is None
    with pytest.raises(AbTestInputError):
        srm_test([1, 2], [1, 0])
    with pytest.raises(AbTestInputError):
        srm_test([1, 2], [1])


# ------------------------------------------------------------------------------------------
# decide(): the decision procedure
# ------------------------------------------------------------------------------------------


def _defn(**kw) -> AbTestDefinition:
    base = {"metric": "clicks", "alpha": 0.05, "tau": 0.01, "control_arm": "A"}
    base.update(kw)
    return AbTestDefinition(**base)


def _arms(*triples) -> list[ArmCounts]:
    return [ArmCounts(a, n, x) for a, n, x in triples]


def test_decide_declares_significant_treatment():
    d = decide(_defn(), _arms(("A", 10_000, 200), ("B", 10_000, 290)), look_ms=1_000)
    assert (d.status, d.winner, d.significant) == ("winner", "B", True)
    a, b = d.arms
    assert a.control and a.p_value_raw is None and a.p_value is None
    assert b.p_value_raw == pytest.approx(0.0014309, rel=1e-4)
    assert b.p_value == b.p_value_running == b.p_value_raw  # one look, one treatment
    assert b.rate == pytest.approx(0.029)
    assert d.version == 1 and d.decided_ms == 1_000 and d.changed
    assert d.srm_p_value == pytest.approx(1.0)


def test_decide_not_significant_keeps_collecting():
    d = decide(_defn(), _arms(("A", 10_000, 200), ("B", 10_000, 260)), look_ms=0)
    assert (d.status, d.winner, d.significant) == ("collecting", None, False)
    assert d.arms[1].prob_best == pytest.approx(0.997678, abs=1e-6)


def test_decide_control_can_win():
    d = decide(_defn(), _arms(("A", 10_000, 290), ("B", 10_000, 200)), look_ms=0)
    assert (d.status, d.winner) == ("winner", "A")


def test_decide_waits_for_maturity():
    arms = _arms(("A", 10_000, 200), ("B", 10_000, 290))
    d = decide(_defn(min_delivered_per_arm=20_000), arms, look_ms=0)
    assert d.status == "collecting"
    defn = _defn(min_elapsed_ms=3_600_000)
    d1 = decide(defn, arms, look_ms=1_000_000)
    assert d1.status == "collecting" and d1.state.started_ms == 1_000_000
    d2 = decide(defn, arms, look_ms=4_599_999, state=d1.state)
    assert d2.status == "collecting"
    d3 = decide(defn, arms, look_ms=4_600_000, state=d2.state)
    assert (d3.status, d3.winner, d3.version, d3.decided_ms) == ("winner", "B", 2, 4_600_000)
    # an explicit start time overrides the first look
    d4 = decide(_defn(min_elapsed_ms=3_600_000, start_ms=0), arms, look_ms=3_600_000)
    assert d4.status == "winner"


def test_winner_is_sticky_against_later_noise():
    defn = _defn()
    d1 = decide(defn, _arms(("A", 10_000, 200), ("B", 10_000, 290)), look_ms=10)
    # Later cumulative counts put the control ahead; the declared winner stays.
    d2 = decide(defn, _arms(("A", 40_000, 1_000), ("B", 40_000, 900)), look_ms=20, state=d1.state)
    assert (d2.status, d2.winner, d2.version, d2.decided_ms, d2.changed) == (
        "winner",
        "B",
        1,
        10,
        False,
    )
    assert d2.arms[1].p_value_raw > d2.arms[1].p_value_running  # running minimum kept


def test_evidence_in_the_other_direction_does_not_crown_a_treatment():
    defn = _defn(min_elapsed_ms=100, start_ms=0)
    d1 = decide(defn, _arms(("A", 10_000, 290), ("B", 10_000, 200)), look_ms=50)  # immature
    assert d1.status == "collecting" and d1.state.running["B"].direction == -1
    d2 = decide(defn, _arms(("A", 20_000, 300), ("B", 20_000, 340)), look_ms=150, state=d1.state)
    # B now leads and its running p is tiny, but that evidence said B was worse.
    assert d2.arms[1].p_value < 0.05
    assert d2.status == "collecting" and d2.winner is None


def test_srm_alert_blocks_winner_and_latches():
    defn = _defn()
    d1 = decide(defn, _arms(("A", 50_600, 1_012), ("B", 49_400, 1_482)), look_ms=1)
    assert (d1.status, d1.winner) == ("srm_alert", None)
    assert d1.srm_p_value == pytest.approx(1.478e-4, rel=1e-3)
    d2 = decide(defn, _arms(("A", 60_000, 1_200), ("B", 60_000, 1_800)), look_ms=2, state=d1.state)
    assert (d2.status, d2.winner) == ("srm_alert", None)
    assert d2.srm_p_value == pytest.approx(1.0)


def test_srm_overrides_an_earlier_winner():
    defn = _defn()
    d1 = decide(defn, _arms(("A", 10_000, 200), ("B", 10_000, 290)), look_ms=1)
    assert d1.status == "winner"
    d2 = decide(defn, _arms(("A", 50_600, 1_012), ("B", 49_400, 1_482)), look_ms=2, state=d1.state)
    assert (d2.status, d2.winner, d2.version) == ("srm_alert", None, 2)


def test_srm_uses_expected_split():
    defn = _defn(expected_split={"A": 10, "B": 45, "C": 45}, srm_alpha=0.01, mc_draws=500)
    d = decide(defn, _arms(("A", 1_100, 20), ("B", 4_400, 90), ("C", 4_500, 95)), look_ms=0)
    assert d.srm_p_value == pytest.approx(0.002218, rel=1e-3)
    assert d.status == "srm_alert"
    ok = decide(
        _defn(expected_split={"A": 1, "B": 9}),
        _arms(("A", 1_000, 20), ("B", 9_000, 180)),
        look_ms=0,
    )
    assert ok.srm_p_value == pytest.approx(1.0) and ok.status == "collecting"


def test_deadline_best_is_min_expected_loss_and_not_significant():
    defn = _defn(deadline_ms=1_000)
    arms = _arms(("A", 10_000, 200), ("B", 10_000, 260))
    assert decide(defn, arms, look_ms=999).status == "collecting"
    d = decide(defn, arms, look_ms=1_000)
    assert (d.status, d.winner, d.significant) == ("deadline_best", "B", False)
    # sticky: a later look with the control ahead does not change the forced choice
    later = decide(
        defn, _arms(("A", 20_000, 500), ("B", 20_000, 400)), look_ms=2_000, state=d.state
    )
    assert (later.status, later.winner, later.changed) == ("deadline_best", "B", False)


def test_deadline_prefers_control_on_ties_and_negligible_loss():
    tie = decide(_defn(deadline_ms=0), _arms(("A", 5_000, 100), ("B", 5_000, 100)), look_ms=0)
    assert (tie.status, tie.winner) == ("deadline_best", "A")
    arms = _arms(("A", 10_000, 200), ("B", 10_000, 203))
    assert decide(_defn(deadline_ms=0), arms, look_ms=0).winner == "B"
    d = decide(_defn(deadline_ms=0, keep_control_rel_loss=0.1), arms, look_ms=0)
    assert d.arms[0].expected_loss < 0.1 * 0.02
    assert d.winner == "A"


def test_max_duration_counts_from_start():
    defn = _defn(max_duration_ms=500)
    arms = _arms(("A", 10_000, 200), ("B", 10_000, 260))
    d1 = decide(defn, arms, look_ms=1_000)
    d2 = decide(defn, arms, look_ms=1_499, state=d1.state)
    d3 = decide(defn, arms, look_ms=1_500, state=d2.state)
    assert (d1.status, d2.status, d3.status) == ("collecting", "collecting", "deadline_best")


def test_significant_winner_beats_the_deadline():
    d = decide(_defn(deadline_ms=0), _arms(("A", 10_000, 200), ("B", 10_000, 290)), look_ms=5)
    assert (d.status, d.significant) == ("winner", True)


def test_abn_holm_and_winner_rules():
    defn = _defn(mc_draws=2_000)
    d = decide(defn, _arms(("A", 10_000, 200), ("B", 10_000, 290), ("C", 10_000, 205)), look_ms=0)
    raw_b = d.arms[1].p_value_raw
    assert d.arms[1].p_value == pytest.approx(2 * raw_b)  # Holm with m = 2, B smallest
    assert (d.status, d.winner) == ("winner", "B")
    assert sum(a.prob_best for a in d.arms) == pytest.approx(1.0)
    # Control wins only when it is significantly better than every treatment.
    d = decide(defn, _arms(("A", 10_000, 290), ("B", 10_000, 200), ("C", 10_000, 280)), look_ms=0)
    assert (d.status, d.winner) == ("collecting", None)
    d = decide(defn, _arms(("A", 10_000, 290), ("B", 10_000, 200), ("C", 10_000, 190)), look_ms=0)
    assert (d.status, d.winner) == ("winner", "A")


def test_abn_leader_must_be_the_significant_arm():
    # C is significant vs control, but B (smaller sample) leads without significance: wait.
    defn = _defn(expected_split={"A": 10, "B": 1, "C": 10}, mc_draws=2_000)
    d = decide(defn, _arms(("A", 10_000, 200), ("B", 1_000, 30), ("C", 10_000, 290)), look_ms=0)
    assert d.arms[2].p_value < 0.05 < d.arms[1].p_value
    assert (d.status, d.winner) == ("collecting", None)


def test_corrected_p_values_never_rise_across_looks():
    rng = random.Random(11)
    defn = _defn(tau=0.004, mc_draws=200)
    state, prev = None, [1.0, 1.0]
    counts = {"A": [0, 0], "B": [0, 0], "C": [0, 0]}
    rates = {"A": 0.02, "B": 0.024, "C": 0.02}
    for look in range(25):
        for arm, (n, x) in counts.items():
            counts[arm] = [n + 400, x + sum(rng.random() < rates[arm] for _ in range(400))]
        d = decide(defn, _arms(*[(a, n, x) for a, (n, x) in counts.items()]), look, state)
        state = d.state
        now = [d.arms[1].p_value, d.arms[2].p_value]
        assert all(n_ <= p_ for n_, p_ in zip(now, prev, strict=True))
        prev = now


def test_decide_is_deterministic_and_state_round_trips_through_json():
    defn = _defn(mc_draws=1_000, min_elapsed_ms=10)
    looks = [
        _arms(("A", 2_000, 40), ("B", 2_000, 55), ("C", 2_000, 41)),
        _arms(("A", 6_000, 140), ("B", 6_000, 178), ("C", 6_000, 120)),
        _arms(("A", 10_000, 200), ("B", 10_000, 290), ("C", 10_000, 210)),
    ]
    s1 = s2 = None
    for t, arms in enumerate(looks):
        d1 = decide(defn, arms, look_ms=t * 10, state=s1)
        restored = None if s2 is None else DecisionState.from_dict(json.loads(json.dumps(s2)))
        d2 = decide(defn, arms, look_ms=t * 10, state=restored)
        assert d1 == d2
        s1, s2 = d1.state, d1.state.to_dict()
    assert (d1.status, d1.winner, d1.version) == ("winner", "B", 2)


@pytest.mark.parametrize(
    ("kw", "arms", "message"),
    [
        ({}, [("A", 10, 1)], "at least two arms"),
        ({}, [("A", 10, 1), ("A", 10, 1)], "appears twice"),
        ({"control_arm": "Z"}, [("A", 10, 1), ("B", 10, 1)], "control arm 'Z'"),
        ({}, [("A", 10, 11), ("B", 10, 1)], "successes (11) > delivered (10)"),
        ({}, [("A", -1, 0), ("B", 10, 1)], ">= 0"),
        ({"metric": "revenue"}, [("A", 10, 1), ("B", 10, 1)], "metric must be one of"),
        ({"alpha": 1.5}, [("A", 10, 1), ("B", 10, 1)], "alpha"),
        ({"tau": 0}, [("A", 10, 1), ("B", 10, 1)], "tau"),
        ({"expected_split": {"A": 1}}, [("A", 10, 1), ("B", 10, 1)], "expected_split"),
        ({"expected_split": {"A": 1, "B": 0}}, [("A", 10, 1), ("B", 10, 1)], "weight"),
        ({"mc_draws": 0}, [("A", 10, 1), ("B", 10, 1)], "mc_draws"),
    ],
)
def test_decide_rejects_bad_input(kw, arms, message):
    with pytest.raises(AbTestInputError) as err:
        decide(_defn(**kw), _arms(*arms), look_ms=0)
    assert message in str(err.value)


# ------------------------------------------------------------------------------------------
# The analyst command
# ------------------------------------------------------------------------------------------

TOP_FIELDS = {"status", "winner", "significant", "metric", "srm_p_value", "srm_chi2", "arms"}
ARM_FIELDS = {
    "arm",
    "control",
    "delivered",
    "successes",
    "rate",
    "p_value_raw",
    "p_value",
    "prob_best",
    "expected_loss",
}


def _run_cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "udfs.abtest", *args],
        cwd=ROOT,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _look_doc(**over):
    doc = {
        "metric": "clicks",
        "alpha": 0.05,
        "tau": 0.01,
        "arms": [
            {"arm": "A", "control": True, "delivered": 10_000, "successes": 200},
            {"arm": "B", "control": False, "delivered": 10_000, "successes": 290},
        ],
    }
    doc.update(over)
    return doc


def test_cli_prints_one_json_object(tmp_path):
    path = tmp_path / "look.json"
    path.write_text(json.dumps(_look_doc()))
    proc = _run_cli(str(path))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("\n") == 1
    out = json.loads(proc.stdout)
    assert set(out) == TOP_FIELDS
    assert (out["status"], out["winner"], out["metric"]) == ("winner", "B", "clicks")
    assert out["srm_p_value"] == pytest.approx(1.0)
    a, b = out["arms"]
    assert set(a) == set(b) == ARM_FIELDS
    assert (a["arm"], a["rate"], a["p_value_raw"], a["p_value"]) == ("A", 0.02, None, None)
    assert b["p_value_raw"] == pytest.approx(0.00143095, rel=1e-5)
    assert b["p_value"] == b["p_value_raw"]
    assert a["prob_best"] + b["prob_best"] == pytest.approx(1.0)
    assert b["expected_loss"] < a["expected_loss"]
    # same code path as the library
    assert out == json.loads(json.dumps(run_look(_look_doc())))


def test_cli_reads_stdin_and_expected_split_list():
    doc = _look_doc(expected_split=[1, 1], alpha=0.001)
    proc = _run_cli("-", stdin=json.dumps(doc))
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert (out["status"], out["winner"]) == ("collecting", None)


@pytest.mark.parametrize(
    ("name", "status", "winner"),
    [
        ("e1b_winner.json", "winner", "B"),
        ("e1_collecting.json", "collecting", None),
        ("e1_deadline.json", "deadline_best", "B"),
        ("e3_abc.json", "collecting", None),
        ("e4_srm.json", "srm_alert", None),
    ],
)
def test_fixtures(name, status, winner):
    out = run_look(json.loads((FIXTURES / name).read_text()))
    assert (out["status"], out["winner"]) == (status, winner)
    assert sum(a["prob_best"] for a in out["arms"]) == pytest.approx(1.0)


def test_cli_fixture_e3_abc_figures():
    proc = _run_cli(str(FIXTURES / "e3_abc.json"))
    assert proc.returncode == 0, proc.stderr
    arms = json.loads(proc.stdout)["arms"]
    for arm, want in zip(arms, [0.0013221, 0.0848774, 0.9138005], strict=True):
        assert arm["prob_best"] == pytest.approx(want, abs=0.006)  # 20k draws
    # Holm with m = 2: C has the smaller raw p and is doubled
    assert arms[2]["p_value"] == pytest.approx(2 * arms[2]["p_value_raw"])
    assert arms[2]["p_value_raw"] == pytest.approx(0.09352, abs=1e-5)  # E1, τ² = 1.6e-5


def _arm(name, delivered, successes, control=False):
    return {"arm": name, "control": control, "delivered": delivered, "successes": successes}


BAD_INPUTS = [
    ("missing-tau", {k: v for k, v in _look_doc().items() if k != "tau"}, "missing field(s): tau"),
    (
        "no-control",
        _look_doc(arms=[_arm("A", 10, 1), _arm("B", 10, 1)]),
        'exactly one arm must have "control": true, got 0',
    ),
    (
        "two-controls",
        _look_doc(arms=[_arm("A", 10, 1, True), _arm("B", 10, 1, True)]),
        "got 2 (A, B)",
    ),
    (
        "successes>delivered",
        _look_doc(arms=[_arm("A", 10, 1, True), _arm("B", 10, 11)]),
        "successes (11) > delivered (10)",
    ),
    ("negative", _look_doc(arms=[_arm("A", -10, 0, True), _arm("B", 10, 1)]), "must be >= 0"),
    (
        "float-count",
        _look_doc(arms=[_arm("A", 10.5, 1, True), _arm("B", 10, 1)]),
        "arms[0].delivered must be a whole number",
    ),
    (
        "arm-missing-field",
        _look_doc(arms=[{"arm": "A", "control": True, "delivered": 10}, _arm("B", 10, 1)]),
        "arms[0]: missing field(s): successes",
    ),
    ("one-arm", _look_doc(arms=[_arm("A", 10, 1, True)]), "at least two"),
    ("duplicate-arm", _look_doc(arms=[_arm("A", 10, 1, True), _arm("A", 10, 1)]), "twice"),
    ("bad-alpha", _look_doc(alpha=0), "alpha must be in (0, 1)"),
    ("string-tau", _look_doc(tau="0.01"), "tau must be a number"),
    ("bad-metric", _look_doc(metric="revenue"), "metric must be one of"),
    ("unknown-key", _look_doc(expected_splits=[1, 1]), "unknown field(s): expected_splits"),
    ("split-length", _look_doc(expected_split=[1, 1, 1]), "3 weights for 2 arms"),
    ("not-object", [1, 2], "must be a JSON object"),
]


@pytest.mark.parametrize(("case", "doc", "message"), BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS])
def test_run_look_rejects_bad_input(case, doc, message):
    with pytest.raises(AbTestInputError) as err:
        run_look(doc)
    assert message in str(err.value)


@pytest.mark.parametrize(
    ("case", "doc", "message"),
    [BAD_INPUTS[1], BAD_INPUTS[2], BAD_INPUTS[3], BAD_INPUTS[0]],
    ids=["no-control", "two-controls", "successes>delivered", "missing-tau"],
)
def test_cli_bad_input_exits_non_zero(tmp_path, case, doc, message):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(doc))
    proc = _run_cli(str(path))
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.startswith("error: ") and message in proc.stderr


def test_cli_invalid_json_and_missing_file(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text("{not json")
    proc = _run_cli(str(path))
    assert proc.returncode == 2 and "not valid JSON" in proc.stderr
    proc = _run_cli(str(tmp_path / "absent.json"))
    assert proc.returncode == 2 and "cannot read" in proc.stderr


def test_main_in_process(tmp_path, capsys):
    path = tmp_path / "look.json"
    path.write_text(json.dumps(_look_doc()))
    assert abtest.main([str(path)]) == 0
    assert json.loads(capsys.readouterr().out)["winner"] == "B"
