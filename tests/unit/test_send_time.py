"""Best send hour: reference example E9 (Part B4), time zones, order-independence."""

from __future__ import annotations

import math
import pickle
import random
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from udfs.send_time import (
    HOURS_PER_WEEK,
    REFERENCE_HOURLY_POPULATION,
    SendTimeParams,
    SendTimeResult,
    SendTimeState,
    choose_slot,
    normalize_population,
    should_emit_send_time,
    slot_of,
    smooth,
)

D = 86_400_000
HOUR = 3_600_000
T0 = 1_704_067_200_000  # 2024-01-01T00:00:00Z, a Monday

# Reference E9 population (hour of day 0..23), argmax 8.
# fmt: off
E9_POP = [.010, .006, .004, .003, .003, .006, .020, .050, .080, .075, .065, .060,
          .065, .060, .050, .045, .045, .050, .055, .065, .070, .060, .040, .023]
# fmt: on
E9_EVENTS = [(8, 1), (8, 3), (9, 7), (20, 14), (8, 30), (21, 60)]  # (local hour, age days)
E9_PARAMS = SendTimeParams(half_life_days=45, slots=24, pseudo_events=3, min_events=3)


def ms(y: int, mo: int, d: int, h: int, mi: int = 0, tz: str = "UTC") -> int:
    zone = UTC if tz == "UTC" else ZoneInfo(tz)
    return int(datetime(y, mo, d, h, mi, tzinfo=zone).timestamp() * 1000)


def ev(t: int, event_type: str = "click", **extra: object) -> dict:
    return {"subscriber_id": "s1", "event_type": event_type, "event_time": t, **extra}


def e9_state(as_of: int = T0) -> SendTimeState:
    state = SendTimeState(E9_PARAMS)
    for hour, age in E9_EVENTS:
        state.add_at_slot(hour, 1.0, as_of - age * D)
    return state


# --- reference worked numbers ---------------------------------------------------------------


def test_e9_best_hour_and_effective_events() -> None:
    result = e9_state().best(T0, E9_POP)
    assert result.slot == 8
    assert result.hour == 8
    assert result.weekday is None
    assert result.source == "subscriber"
    assert result.effective_events == 4.670174
    assert result.value == 0.224355


def test_e9_top_five_smoothed_values() -> None:
    state = e9_state()
    counts = state.counts_at(T0)
    h_u = math.fsum(counts)
    pi = normalize_population(E9_POP, 24)
    q = [(c + 3 * p) / (h_u + 3) for c, p in zip(counts, pi, strict=True)]
    sm = smooth(q, (0.25, 0.5, 0.25))
    top = sorted(range(24), key=lambda s: -sm[s])[:5]
    assert top == [8, 9, 7, 20, 21]
    assert [round(sm[s], 4) for s in top] == [0.2244, 0.1708, 0.1031, 0.0911, 0.0744]


def test_e9_restricted_window() -> None:
    result = e9_state().best(T0, E9_POP, allowed=range(12, 24))
    assert result.slot == 20
    assert result.value == 0.091133


def test_e9_cold_user_falls_back_to_population() -> None:
    state = SendTimeState(E9_PARAMS)
    state.add_at_slot(22, 1.0, T0 - 2 * D)
    result = state.best(T0, E9_POP)
    assert result.effective_events == 0.969663
    assert result.source == "population"
    assert result.slot == 8
    # Without the threshold, shrinkage alone would pick 22 (the reference's warning).
    no_threshold = SendTimeState(SendTimeParams(half_life_days=45, slots=24, min_events=0))
    no_threshold.add_at_slot(22, 1.0, T0 - 2 * D)
    assert no_threshold.best(T0, E9_POP).slot == 22


def test_e9_confidence_is_posterior_mass_around_the_best_hour() -> None:
    state = e9_state()
    counts = state.counts_at(T0)
    h_u = math.fsum(counts)
    pi = normalize_population(E9_POP, 24)
    q = [(c + 3 * p) / (h_u + 3) for c, p in zip(counts, pi, strict=True)]
    result = state.best(T0, E9_POP)
    assert result.confidence == round(q[7] + q[8] + q[9], 6) == 0.531437
    # Fallback: population mass of hours 7..9.
    cold = SendTimeState(E9_PARAMS).best(T0, E9_POP)
    assert cold.confidence == round((0.05 + 0.08 + 0.075) / math.fsum(E9_POP), 6)
    assert cold.effective_events == 0.0


def test_defaults_follow_the_reference() -> None:
    p = SendTimeParams()
    assert (p.half_life_days, p.slots, p.pseudo_events, p.min_events) == (45.0, 168, 3.0, 3.0)
    assert p.kernel == (0.25, 0.5, 0.25)
    assert dict(p.weights) == {"click": 1.0, "open": 0.5, "conversion": 1.0}
    assert p.population == REFERENCE_HOURLY_POPULATION == tuple(E9_POP)


# --- the configured population prior -------------------------------------------------------

E9_MASS_7_TO_9 = (0.05 + 0.08 + 0.075) / 1.01  # E9 sums to 1.01


def test_default_population_fallback_is_the_reference_peak_hour_not_slot_0() -> None:
    """No argument: the configured curve (E9, tiled over the week); ties between the seven
    equal days go to the earliest, so Monday 08:00 local time."""
    state = SendTimeState()
    state.add(ev(ms(2024, 1, 3, 22)))  # one click, Wednesday 22:00: too little data
    result = state.best()
    assert (result.slot, result.weekday, result.hour) == (8, 0, 8)
    assert result.source == "population"
    assert result.effective_events == 1.0
    assert result.confidence == round(E9_MASS_7_TO_9 / 7, 6) == 0.028996
    assert result.value == round(0.08 / 1.01 / 7, 6)
    # Empty state, hour-of-day histogram: hour 8 with the E9 mass of hours 7..9.
    hourly = SendTimeState(SendTimeParams(slots=24)).best(T0)
    assert (hourly.slot, hourly.weekday, hourly.hour) == (8, None, 8)
    assert hourly.confidence == round(E9_MASS_7_TO_9, 6)
    # The configured curve is what choose_slot uses when given no population ...
    assert choose_slot([0.0] * 24, E9_PARAMS) == choose_slot([0.0] * 24, E9_PARAMS, E9_POP)
    # ... and the reference's example reproduces with it (E9 best hour and value).
    assert e9_state().best(T0) == e9_state().best(T0, E9_POP)
    assert e9_state().best(T0).value == 0.224355


def test_uniform_population_is_an_explicit_choice() -> None:
    result = SendTimeState(SendTimeParams(population=None)).best(T0)
    assert (result.slot, result.confidence) == (0, round(3 / 168, 6))


def test_weekly_population_curve_picks_its_weekday_and_shrinks_subscribers() -> None:
    # A 168-slot curve: Thursday 19:00 is the population's favourite hour.
    weekly = [1.0] * HOURS_PER_WEEK
    weekly[3 * 24 + 19] = 5.0
    params = SendTimeParams(population=weekly)
    assert params.population == tuple(weekly)
    cold = SendTimeState(params).best(T0)
    assert (cold.slot, cold.weekday, cold.hour, cold.source) == (91, 3, 19, "population")
    assert cold.confidence == round(7 / 172, 6)
    # Shrinkage: a subscriber with 3 clicks at Monday 09:00 and one at Monday 10:00 is
    # still read from their own data (slot 9 smoothed beats slot 91).
    warm = SendTimeState(params)
    for week, hour in ((0, 9), (1, 9), (2, 9), (3, 10)):
        warm.add(ev(T0 + week * 7 * D + hour * HOUR))
    assert (warm.best().slot, warm.best().source) == (9, "subscriber")
    # Folded to hour of day when the histogram has 24 slots: hour 19 wins.
    assert SendTimeState(SendTimeParams(slots=24, population=weekly)).best(T0).slot == 19


def test_population_prior_moves_near_ties_toward_popular_hours() -> None:
    # Equal subscriber counts at 03:00 and 20:00: the prior breaks the tie toward 20:00
    # (E9: 0.070 vs 0.003), where a uniform prior would take the earlier slot.
    counts = [0.0] * 24
    counts[3] = counts[20] = 2.0
    assert choose_slot(counts, SendTimeParams(slots=24)).slot == 20
    assert choose_slot(counts, SendTimeParams(slots=24, population=None)).slot == 3


# --- which events count ------------------------------------------------------------------


def test_only_human_engagement_counts_with_its_weight() -> None:
    state = SendTimeState()
    t = ms(2024, 1, 3, 10)  # Wednesday 10:00 UTC → slot 2·24+10
    assert state.add(ev(t, "click"))
    assert state.add(ev(t, "open", machine_open=False))
    assert state.add(ev(t, "conversion"))
    assert not state.add(ev(t, "open", machine_open=True))
    assert not state.add(ev(t, "click", suspected_bot=True))
    assert not state.add(ev(t, "delivered"))
    assert not state.add(ev(t, "bounce", bounce_class="soft"))
    assert not state.add(ev(t, "unsubscribe"))
    counts = state.counts_at(t)
    assert counts[58] == 2.5
    assert math.fsum(counts) == 2.5


def test_weight_override_and_zero_weight() -> None:
    state = SendTimeState(SendTimeParams(weights={"open": 0.0, "reply": 2.0}))
    assert not state.add(ev(T0, "open"))
    assert state.add(ev(T0, "reply"))
    assert state.counts_at(T0)[0] == 2.0


# --- time zones ------------------------------------------------------------------------------


def test_slot_numbering_in_utc() -> None:
    assert slot_of(T0) == 0  # Monday 00:00
    assert slot_of(T0 + HOUR - 1) == 0
    assert slot_of(T0 + HOUR) == 1
    assert slot_of(T0 + 7 * D - 1) == 167  # Sunday 23:59:59.999
    assert slot_of(T0 + 7 * D) == 0
    assert slot_of(T0 + 2 * D + 15 * HOUR, slots=24) == 15
    assert slot_of(T0 - 1) == 167  # before the epoch week boundary


def test_slot_in_subscriber_time_zone() -> None:
    # Monday 02:00 UTC is Sunday 21:00 in New York (EST, UTC−5) and Monday 11:00 in Tokyo.
    t = T0 + 2 * HOUR
    assert slot_of(t, "America/New_York") == 6 * 24 + 21
    assert slot_of(t, "Asia/Tokyo") == 11
    assert slot_of(t, "Asia/Kolkata") == 7  # 07:30, UTC+5:30
    assert slot_of(t, None) == 2
    assert slot_of(t, "Not/AZone") == 2  # unknown name → UTC
    assert slot_of(t, "") == 2
    assert slot_of(t, "Not/AZone", default_time_zone="Asia/Tokyo") == 11


def test_dst_spring_forward_keeps_wall_clock_hour() -> None:
    ny = "America/New_York"
    # 2024-03-10 02:00 EST → 03:00 EDT.  09:00 local before and after the switch is 14:00 UTC
    # on Saturday and 13:00 UTC on Monday, yet both are local hour 9.
    before = ms(2024, 3, 9, 14)
    after = ms(2024, 3, 11, 13)
    assert slot_of(before, ny) == 5 * 24 + 9
    assert slot_of(after, ny) == 0 * 24 + 9
    # Across the gap: 06:59 UTC is 01:59 EST, 07:00 UTC is 03:00 EDT (local 02h never exists).
    assert slot_of(ms(2024, 3, 10, 6, 59), ny) == 6 * 24 + 1
    assert slot_of(ms(2024, 3, 10, 7, 0), ny) == 6 * 24 + 3


def test_dst_fall_back_repeated_hour_maps_to_one_slot() -> None:
    ny = "America/New_York"
    # 2024-11-03: 01:30 EDT (05:30 UTC) and 01:30 EST (06:30 UTC) are both local hour 1.
    first, second = ms(2024, 11, 3, 5, 30), ms(2024, 11, 3, 6, 30)
    assert slot_of(first, ny) == slot_of(second, ny) == 6 * 24 + 1
    state = SendTimeState()
    state.add(ev(first), "America/New_York")
    state.add(ev(second), "America/New_York")
    assert state.counts_at(second)[6 * 24 + 1] == pytest.approx(1.0 + 2 ** (-1 / (45 * 24)))


def test_daily_reader_across_dst_lands_in_one_hour_of_day() -> None:
    state = SendTimeState(SendTimeParams(slots=24))
    for day in range(1, 21):  # March 1..20 2024 spans the switch on the 10th
        state.add(ev(ms(2024, 3, day, 9, 15, tz="America/New_York")), "America/New_York")
    counts = state.counts_at(state.ref_time)
    assert [s for s, c in enumerate(counts) if c > 0] == [9]
    assert state.best().slot == 9


# --- order independence and stability -----------------------------------------------------


@pytest.mark.parametrize("seed", range(4))
def test_shuffled_arrival_gives_same_histogram_and_choice(seed: int) -> None:
    rng = random.Random(seed)
    events = [
        ev(
            T0 + rng.randrange(120 * D),
            rng.choice(["click", "open", "conversion", "delivered"]),
            machine_open=rng.choice([True, False, None]),
        )
        for _ in range(80)
    ]
    zone = rng.choice(["Europe/Berlin", "America/Los_Angeles", None])
    reference = SendTimeState()
    for e in sorted(events, key=lambda e: e["event_time"]):
        reference.add(e, zone)
    as_of = reference.ref_time + D
    ref_counts = reference.counts_at(as_of)
    results = set()
    for _ in range(30):
        rng.shuffle(events)
        state = SendTimeState()
        for e in events:
            state.add(e, zone)
        assert state.ref_time == reference.ref_time
        for a, b in zip(state.counts_at(as_of), ref_counts, strict=True):
            assert a == pytest.approx(b, rel=1e-12, abs=1e-15)
        results.add(state.best(as_of))
    assert len(results) == 1


def test_ties_are_broken_by_lowest_slot_whatever_the_order() -> None:
    # The same instant seen from two zones lands in slots 0 (UTC) and 9 (Tokyo): exact tie
    # under a uniform population.
    params = SendTimeParams(min_events=0, population=None)
    arrivals = [
        (ev(T0), "UTC"),
        (ev(T0), "Asia/Tokyo"),
        (ev(T0 - D), "UTC"),
        (ev(T0 - D), "Asia/Tokyo"),
    ]
    results = set()
    for perm in ([0, 1, 2, 3], [3, 2, 1, 0], [1, 3, 0, 2], [2, 0, 3, 1]):
        state = SendTimeState(params)
        for i in perm:
            state.add(*arrivals[i])
        results.add(state.best(T0).slot)
    assert results == {0}
    # A last-bit difference (as different arrival orders can produce) is still a tie.
    counts = [0.0] * 24
    counts[10], counts[20] = 1.0, 1.0 + 1e-13
    assert choose_slot(counts, SendTimeParams(slots=24, min_events=0, population=None)).slot == 10


def test_long_horizon_is_stable() -> None:
    rng = random.Random(5)
    params = SendTimeParams()
    state = SendTimeState(params)
    t = T0
    expected = [0.0] * HOURS_PER_WEEK
    events = []
    for _ in range(20_000):  # ~30 years, one event every ~13 h
        t += rng.randrange(26 * HOUR)
        events.append(t)
        state.add(ev(t))
    end = events[-1]
    for e in events:
        expected[slot_of(e)] += 2.0 ** (-(end - e) / params.half_life_ms)
    for a, b in zip(state.counts_at(end), expected, strict=True):
        assert a == pytest.approx(b, rel=1e-9, abs=1e-12)
    assert all(math.isfinite(c) for c in state.counts)
    assert state.counts_at(end + 10_000 * 365 * D) == [0.0] * HOURS_PER_WEEK


def test_read_before_latest_event_is_refused() -> None:
    state = SendTimeState()
    state.add(ev(T0 + D))
    with pytest.raises(ValueError, match="holds events up to"):
        state.counts_at(T0)


def test_merge_equals_adding_everything_and_serves_as_population() -> None:
    rng = random.Random(9)
    events = [ev(T0 + rng.randrange(60 * D)) for _ in range(50)]
    whole, a, b = SendTimeState(), SendTimeState(), SendTimeState()
    for i, e in enumerate(events):
        whole.add(e)
        (a if i % 3 else b).add(e)
    a.merge(b)
    assert a.ref_time == whole.ref_time
    for x, y in zip(a.counts, whole.counts, strict=True):
        assert x == pytest.approx(y, rel=1e-12, abs=1e-15)
    pop = whole.population_distribution()
    assert math.fsum(pop) == pytest.approx(1.0)
    assert max(range(HOURS_PER_WEEK), key=lambda s: pop[s]) == max(
        range(HOURS_PER_WEEK), key=lambda s: whole.counts[s]
    )


# --- shrinkage, smoothing, population ------------------------------------------------------


def test_circular_smoothing_wraps_sunday_night_to_monday_morning() -> None:
    q = [0.0] * HOURS_PER_WEEK
    q[167] = 1.0
    sm = smooth(q, (0.25, 0.5, 0.25))
    assert (sm[166], sm[167], sm[0], sm[1]) == (0.25, 0.5, 0.25, 0.0)


def test_population_normalisation() -> None:
    assert normalize_population(None, 24) == [1 / 24] * 24
    assert normalize_population([0] * 24, 24) == [1 / 24] * 24
    tiled = normalize_population(E9_POP, HOURS_PER_WEEK)
    assert len(tiled) == 168
    assert tiled[8] == tiled[8 + 24 * 6]
    assert math.fsum(tiled) == pytest.approx(1.0)
    folded = normalize_population(tiled, 24)  # 168 → 24: summed per hour of day
    assert folded == pytest.approx(normalize_population(E9_POP, 24), rel=1e-12)
    with pytest.raises(ValueError, match="expected 168"):
        normalize_population([1.0] * 100, HOURS_PER_WEEK)
    with pytest.raises(ValueError):
        normalize_population([-1.0] + [1.0] * 23, 24)


def test_hour_of_week_result_fields_and_fallback_with_empty_state() -> None:
    state = SendTimeState()
    for week in range(6):  # Tuesdays 19:xx in Berlin (UTC+1 in winter)
        state.add(ev(ms(2024, 1, 2, 18, 20) + week * 7 * D), "Europe/Berlin")
    result = state.best()
    assert (result.slot, result.weekday, result.hour) == (1 * 24 + 19, 1, 19)
    assert result.source == "subscriber"
    empty = SendTimeState().best(population=[0.0] * 50 + [1.0] + [0.0] * 117)
    assert (empty.slot, empty.source, empty.as_of) == (50, "population", None)


def test_concentrated_reader_is_more_confident_than_scattered_one() -> None:
    focused, scattered = SendTimeState(), SendTimeState()
    for i in range(12):
        focused.add(ev(T0 + i * 7 * D + 9 * HOUR))
        scattered.add(ev(T0 + i * 7 * D + (i * 13 % 24) * HOUR + (i % 7) * D))
    end = max(focused.ref_time, scattered.ref_time)
    assert focused.best(end).confidence > 0.5 > scattered.best(end).confidence


def test_allowed_slots_validation() -> None:
    with pytest.raises(ValueError):
        e9_state().best(T0, E9_POP, allowed=[])
    with pytest.raises(ValueError):
        e9_state().best(T0, E9_POP, allowed=[24])


def test_should_emit_send_time() -> None:
    p = SendTimeParams()
    base = SendTimeResult(9, 0, 9, 0.40, "subscriber", 5.0, 0.2, T0)
    assert should_emit_send_time(None, base, p)
    assert should_emit_send_time(base, base.__class__(10, 0, 10, 0.40, "subscriber", 5, 0.2, T0), p)
    assert should_emit_send_time(base, base.__class__(9, 0, 9, 0.40, "population", 5, 0.2, T0), p)
    assert not should_emit_send_time(
        base, base.__class__(9, 0, 9, 0.44, "subscriber", 6, 0.2, T0), p
    )
    assert should_emit_send_time(base, base.__class__(9, 0, 9, 0.46, "subscriber", 6, 0.2, T0), p)


def test_state_tuple_round_trip_and_params_pickle() -> None:
    state = e9_state()
    copy = SendTimeState.from_tuple(state.to_tuple(), E9_PARAMS)
    assert copy.to_tuple() == state.to_tuple()
    assert copy.best(T0, E9_POP) == state.best(T0, E9_POP)
    with pytest.raises(ValueError):
        SendTimeState.from_tuple(state.to_tuple())  # 24 slots into a 168-slot state
    assert pickle.loads(pickle.dumps(E9_PARAMS)) == E9_PARAMS
    assert hash(SendTimeParams()) == hash(SendTimeParams())


@pytest.mark.parametrize(
    "kwargs",
    [
        {"slots": 48},
        {"half_life_days": 0},
        {"kernel": (0.5, 0.5)},
        {"kernel": (0.0, 0.0, 0.0)},
        {"kernel": (-0.1, 1.0, 0.1)},
        {"weights": {"click": -1}},
        {"confidence_window": 200},
        {"default_time_zone": "Mars/Olympus"},
        {"population": [1.0] * 100},
        {"population": [-1.0] + [1.0] * 23},
        {"population": [float("nan")] * 24},
        {"population": "0.1,0.2"},
        {"population": 3},
    ],
)
def test_bad_params_rejected(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        SendTimeParams(**kwargs)
