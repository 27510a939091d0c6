"""Suppression rules, re-subscribe semantics, soft-bounce window, tracking consent."""

from __future__ import annotations

import itertools
import random

import pytest

from udfs.scoring import ScoreState
from udfs.send_time import SendTimeState
from udfs.suppression import (
    Suppression,
    SuppressionParams,
    SuppressionState,
    feeds_engagement,
    tracking_allows,
)

D = 86_400_000
T0 = 1_704_067_200_000  # 2024-01-01T00:00:00Z


def ev(t: int, event_type: str, **extra: object) -> dict:
    return {"subscriber_id": "s1", "event_type": event_type, "event_time": t, **extra}


def soft(t: int) -> dict:
    return ev(t, "bounce", bounce_class="soft")


def status_of(events: list[dict], params: SuppressionParams | None = None) -> Suppression | None:
    state = SuppressionState(params)
    for e in events:
        state.add(e)
    return state.status()


# --- single rules ---------------------------------------------------------------------------


def test_no_events_no_suppression_and_other_events_ignored() -> None:
    state = SuppressionState()
    for et in ("delivered", "open", "click", "conversion", "sent", "dropped", "deferred"):
        assert not state.add(ev(T0, et))
    assert state.status() is None


def test_unsubscribe_scope_marketing() -> None:
    s = status_of([ev(T0 + 5, "unsubscribe"), ev(T0 + 9, "unsubscribe")])
    assert s == Suppression("unsubscribe", "marketing", T0 + 5, (("unsubscribe", T0 + 5),))
    assert s.blocks("marketing")
    assert not s.blocks("transactional")


def test_complaint_scope_all() -> None:
    s = status_of([ev(T0 + 7, "complaint"), ev(T0 + 3, "complaint")])
    assert (s.reason, s.scope, s.since) == ("complaint", "all", T0 + 3)
    assert s.blocks("transactional")


def test_hard_bounce_scope_all() -> None:
    s = status_of([ev(T0, "bounce", bounce_class="hard")])
    assert (s.reason, s.scope, s.since) == ("hard_bounce", "all", T0)


def test_unsubscribe_flagged_as_bot_is_still_honoured() -> None:
    assert status_of([ev(T0, "unsubscribe", suspected_bot=True)]).reason == "unsubscribe"


def test_several_reasons_primary_by_severity() -> None:
    s = status_of(
        [
            ev(T0, "unsubscribe"),
            ev(T0 + 1, "bounce", bounce_class="hard"),
            ev(T0 + 2, "complaint"),
        ]
    )
    assert (s.reason, s.scope, s.since) == ("complaint", "all", T0 + 2)
    assert s.reasons == (("complaint", T0 + 2), ("hard_bounce", T0 + 1), ("unsubscribe", T0))


# --- soft bounces ---------------------------------------------------------------------------


def test_three_soft_bounces_within_seven_days_inclusive_edge() -> None:
    s = status_of([soft(T0), soft(T0 + 3 * D), soft(T0 + 7 * D)])
    assert (s.reason, s.scope, s.since) == ("soft_bounces", "all", T0 + 7 * D)


def test_three_soft_bounces_one_ms_beyond_the_window_do_not_fire() -> None:
    assert status_of([soft(T0), soft(T0 + 3 * D), soft(T0 + 7 * D + 1)]) is None


def test_two_soft_bounces_do_not_fire() -> None:
    assert status_of([soft(T0), soft(T0 + 1)]) is None


def test_unknown_bounce_class_counts_as_soft() -> None:
    events = [ev(T0 + i * D, "bounce", bounce_class=None) for i in range(3)]
    assert status_of(events).reason == "soft_bounces"
    assert status_of(events[:2]) is None


def test_sliding_window_since_is_the_earliest_firing() -> None:
    # days 0, 5, 9, 11: {0,5,9} spans 9 d (no), {5,9,11} spans 6 d → fires at day 11.
    events = [soft(T0 + d * D) for d in (0, 5, 9, 11, 12, 13)]
    assert status_of(events).since == T0 + 11 * D


def test_configurable_threshold_and_window() -> None:
    p = SuppressionParams(soft_bounce_threshold=2, soft_bounce_window_days=1)
    assert status_of([soft(T0), soft(T0 + D)], p).since == T0 + D
    assert status_of([soft(T0), soft(T0 + D + 1)], p) is None
    one = SuppressionParams(soft_bounce_threshold=1)
    assert status_of([soft(T0 + 4), soft(T0 + 2)], one).since == T0 + 2


@pytest.mark.parametrize("perm", list(itertools.permutations(range(4))))
def test_soft_bounce_result_is_independent_of_arrival_order(perm: tuple[int, ...]) -> None:
    times = [T0, T0 + 6 * D, T0 + 2 * D, T0 + 9 * D]  # sorted: 0, 2, 6, 9 → fires at 6
    s = status_of([soft(times[i]) for i in perm])
    assert s.since == T0 + 6 * D


def test_late_soft_bounce_within_lateness_moves_since_earlier() -> None:
    state = SuppressionState()
    for d in (20, 21, 22):
        state.add(soft(T0 + d * D))
    assert state.status().since == T0 + 22 * D
    for d in (0, 1, 2):  # arrive late, still within window + lateness of the newest (22 d)
        state.add(soft(T0 + d * D))
    assert state.status().since == T0 + 2 * D


def test_soft_bounce_state_stays_bounded() -> None:
    state = SuppressionState()
    for d in range(1000):
        state.add(soft(T0 + d * D))
    assert state.status().since == T0 + 2 * D
    assert len(state.soft_bounce_times) <= 38  # window 7 d + lateness 30 d, one a day
    assert state.soft_bounce_times[-1] == T0 + 999 * D


def brute_force(events: list[dict], params: SuppressionParams) -> dict[str, int]:
    """The same rules computed from the whole set at once."""
    out: dict[str, int] = {}
    complaints = [e["event_time"] for e in events if e["event_type"] == "complaint"]
    hard = [
        e["event_time"]
        for e in events
        if e["event_type"] == "bounce" and e.get("bounce_class") == "hard"
    ]
    softs = sorted(
        e["event_time"]
        for e in events
        if e["event_type"] == "bounce" and e.get("bounce_class") != "hard"
    )
    unsubs = [e["event_time"] for e in events if e["event_type"] == "unsubscribe"]
    resubs = [e["event_time"] for e in events if e["event_type"] == "resubscribe"]
    if complaints:
        out["complaint"] = min(complaints)
    if hard:
        out["hard_bounce"] = min(hard)
    k, w = params.soft_bounce_threshold, params.window_ms
    fired = [softs[j] for j in range(k - 1, len(softs)) if softs[j] - softs[j - k + 1] <= w]
    if fired:
        out["soft_bounces"] = min(fired)
    last_resub = max(resubs, default=None)
    active = [u for u in unsubs if last_resub is None or u >= last_resub]
    if active:
        out["unsubscribe"] = min(active)
    return out


def apply(state: SuppressionState, e: dict) -> None:
    if e["event_type"] == "resubscribe":
        state.apply_consent(True, e["event_time"])
    else:
        state.add(e)


@pytest.mark.parametrize("seed", range(10))
def test_random_histories_match_brute_force_for_any_order(seed: int) -> None:
    rng = random.Random(seed)
    params = SuppressionParams()
    events = []
    for _ in range(rng.randrange(3, 25)):
        t = T0 + rng.randrange(25 * D)  # within the lateness bound, so exactness holds
        kind = rng.choice(
            [
                "soft",
                "soft",
                "soft",
                "hard",
                "complaint",
                "unsubscribe",
                "unsubscribe",
                "resubscribe",
                "resubscribe",
                "open",
            ]
        )
        if kind == "soft":
            events.append(soft(t))
        elif kind == "hard":
            events.append(ev(t, "bounce", bounce_class="hard"))
        else:
            events.append(ev(t, kind))
    expected = brute_force(events, params)
    for _ in range(30):
        rng.shuffle(events)
        state = SuppressionState(params)
        for e in events:
            apply(state, e)
        assert state.reasons() == expected


# --- re-subscribe ---------------------------------------------------------------------------


def test_resubscribe_lifts_an_unsubscribe() -> None:
    state = SuppressionState()
    state.add(ev(T0, "unsubscribe"))
    state.apply_consent(True, T0 + D)
    assert state.status() is None


def test_resubscribe_does_not_lift_complaint_or_bounces() -> None:
    state = SuppressionState()
    state.add(ev(T0, "unsubscribe"))
    state.add(ev(T0 + 1, "complaint"))
    state.apply_consent(True, T0 + D)
    assert state.status().reasons == (("complaint", T0 + 1),)
    hard = SuppressionState()
    hard.add(ev(T0, "bounce", bounce_class="hard"))
    hard.apply_consent(True, T0 + D)
    assert hard.status().reason == "hard_bounce"
    softly = SuppressionState()
    for d in range(3):
        softly.add(soft(T0 + d * D))
    softly.apply_consent(True, T0 + 5 * D)
    assert softly.status().reason == "soft_bounces"


def test_unsubscribe_after_resubscribe_suppresses_again_in_any_order() -> None:
    steps = [("unsub", T0), ("resub", T0 + D), ("unsub", T0 + 2 * D), ("unsub", T0 + 3 * D)]
    for perm in itertools.permutations(steps):
        state = SuppressionState()
        for kind, t in perm:
            if kind == "unsub":
                state.add(ev(t, "unsubscribe"))
            else:
                state.apply_consent(True, t)
        assert state.status().since == T0 + 2 * D, perm


def test_resubscribe_arriving_before_an_older_unsubscribe_still_lifts_it() -> None:
    state = SuppressionState()
    state.apply_consent(True, T0 + D)
    state.add(ev(T0, "unsubscribe"))  # late, older than the re-subscribe
    assert state.status() is None


def test_unsubscribe_at_same_millisecond_as_resubscribe_wins() -> None:
    for order in ("unsub first", "resub first"):
        state = SuppressionState()
        if order == "unsub first":
            state.add(ev(T0, "unsubscribe"))
            state.apply_consent(True, T0)
        else:
            state.apply_consent(True, T0)
            state.add(ev(T0, "unsubscribe"))
        assert state.status().reason == "unsubscribe", order


def test_consent_withdrawn_in_profile_is_an_unsubscribe() -> None:
    state = SuppressionState()
    state.apply_consent(None, T0)  # unknown: no change
    assert state.status() is None
    state.apply_consent(False, T0 + 1)
    assert (state.status().reason, state.status().since) == ("unsubscribe", T0 + 1)
    with pytest.raises(ValueError):
        state.apply_consent(True, "yesterday")  # type: ignore[arg-type]


def test_state_tuple_round_trip() -> None:
    state = SuppressionState()
    for e in [soft(T0), soft(T0 + D), ev(T0, "unsubscribe"), ev(T0 + 2, "complaint")]:
        state.add(e)
    state.apply_consent(True, T0 - 5)
    copy = SuppressionState.from_tuple(state.to_tuple())
    assert copy.to_tuple() == state.to_tuple()
    copy.add(soft(T0 + 2 * D))
    assert copy.status().reasons[-2] == ("soft_bounces", T0 + 2 * D)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"soft_bounce_threshold": 0},
        {"soft_bounce_threshold": 2.5},
        {"soft_bounce_window_days": -1},
        {"soft_bounce_lateness_days": float("nan")},
    ],
)
def test_bad_params_rejected(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        SuppressionParams(**kwargs)


# --- tracking consent -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("event_type", "consent", "expected"),
    [
        ("open", False, False),
        ("click", False, False),
        ("conversion", False, False),
        ("open", True, True),
        ("open", None, True),  # no flag yet: allowed by default
        ("bounce", False, True),  # mail-system events are not tracking data
        ("complaint", False, True),
        ("unsubscribe", False, True),
        ("delivered", False, True),
    ],
)
def test_feeds_engagement(event_type: str, consent: bool | None, expected: bool) -> None:
    assert feeds_engagement(ev(T0, event_type), consent) is expected


def test_unknown_consent_policy_is_a_parameter() -> None:
    assert tracking_allows(None) is True
    assert tracking_allows(None, unknown_allows=False) is False
    assert feeds_engagement(ev(T0, "click"), None, unknown_allows=False) is False


def test_withdrawn_tracking_stops_score_and_send_time_but_not_suppression() -> None:
    events = [ev(T0, "click"), ev(T0 + 1, "open"), ev(T0 + 2, "complaint")]
    score, hist, supp = ScoreState(), SendTimeState(), SuppressionState()
    for e in events:
        supp.add(e)  # suppression always sees every event
        if feeds_engagement(e, tracking_consent=False):
            score.add(e)
            hist.add(e)
    assert score.value_at(T0 + 2) == -25.0  # only the complaint
    assert score.last_human_time is None
    assert hist.is_empty
    assert supp.status().reason == "complaint"
