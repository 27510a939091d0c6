"""Simulation of the decision procedure under continuous monitoring (udfs.abtest.decide,
the code the A/B job runs): A/A campaigns must not produce more false winners than alpha,
and a real lift must be found. The figures are printed (pytest -s) for the report."""

from __future__ import annotations

import statistics

import numpy as np

from udfs.abtest import AbTestDefinition, ArmCounts, decide

DEFINITION = AbTestDefinition(metric="clicks", alpha=0.05, tau=0.004, control_arm="A",
                              min_delivered_per_arm=1000)
BATCH = 500      # deliveries per arm between two looks
LOOKS = 40       # up to 20,000 deliveries per arm


def run_campaigns(rate_a: float, rate_b: float, campaigns: int, seed: int
                  ) -> list[tuple[str | None, int | None]]:
    """(winner, deliveries per arm at the decision) per campaign, looking after every
    batch; the first winner is final (decisions are sticky)."""
    rng = np.random.default_rng(seed)
    clicks_a = rng.binomial(BATCH, rate_a, size=(campaigns, LOOKS)).cumsum(axis=1)
    clicks_b = rng.binomial(BATCH, rate_b, size=(campaigns, LOOKS)).cumsum(axis=1)
    results = []
    for c in range(campaigns):
        state, outcome = None, (None, None)
        for look in range(LOOKS):
            delivered = BATCH * (look + 1)
            decision = decide(DEFINITION, [
                ArmCounts("A", delivered, int(clicks_a[c, look])),
                ArmCounts("B", delivered, int(clicks_b[c, look]))], look * 60_000, state)
            state = decision.state
            if decision.status == "winner":
                outcome = (decision.winner, delivered)
                break
        results.append(outcome)
    return results


def test_aa_campaigns_false_winner_rate_stays_at_or_below_alpha():
    results = run_campaigns(0.02, 0.02, campaigns=1000, seed=11)
    false_winners = sum(1 for winner, _ in results if winner is not None)
    rate = false_winners / len(results)
    print(f"\nA/A: {false_winners} false winners in {len(results)} campaigns = {rate:.1%} "
          f"(alpha {DEFINITION.alpha:.0%}, a look every {BATCH} deliveries per arm, "
          f"up to {LOOKS} looks)")
    assert rate <= DEFINITION.alpha


def test_real_lift_is_found_with_high_power():
    results = run_campaigns(0.02, 0.03, campaigns=300, seed=12)
    decided = [n for winner, n in results if winner == "B"]
    wrong = sum(1 for winner, _ in results if winner == "A")
    power = len(decided) / len(results)
    median = statistics.median(decided)
    print(f"\nA/B 2% vs 3%: power {power:.1%}, median {median:,.0f} deliveries per arm to "
          f"decision, {wrong} wrong winners in {len(results)} campaigns")
    assert power >= 0.9
    assert wrong == 0
