"""Engagement score: reference numbers (Part B2, E7), order-independence, tiers, command."""

from __future__ import annotations

import json
import math
import pickle
import random
import subprocess
import sys
from pathlib import Path

import pytest

from udfs.scoring import (
    DEFAULT_WEIGHTS,
    MS_PER_DAY,
    ScoreOutput,
    ScoreState,
    ScoringParams,
    event_weight,
    main,
    round_score,
    score_events,
    should_emit,
    tier_for,
)

REPO = Path(__file__).resolve().parents[2]
D = MS_PER_DAY
T0 = 1_704_067_200_000  # 2024-01-01T00:00:00Z


def ev(t: int, event_type: str, sid: str = "s1", **extra: object) -> dict:
    return {"subscriber_id": sid, "event_type": event_type, "event_time": t, **extra}


def e7_events(sid: str = "s1") -> list[dict]:
    # Reference E7: click day 0, human open day 10, purchase day 40, MPP open day 45.
    return [
        ev(T0, "click", sid),
        ev(T0 + 10 * D, "open", sid, machine_open=False),
        ev(T0 + 40 * D, "conversion", sid),
        ev(T0 + 45 * D, "open", sid, machine_open=True),
    ]


def closed_form(events: list[dict], t: int, params: ScoringParams) -> float:
    h = params.half_life_ms
    return math.fsum(
        event_weight(e, params) * 2.0 ** (-(t - e["event_time"]) / h)
        for e in events
        if e["event_time"] <= t
    )


# --- reference worked numbers ---------------------------------------------------------


def test_e7_reference_values() -> None:
    state = ScoreState()
    for e in e7_events():
        state.add(e)
    assert round_score(state.value_at(T0 + 45 * D)) == 10.415097
    assert round_score(state.value_at(T0 + 60 * D)) == 7.364586
    expected = 3 * 2 ** (-2) + 1 * 2 ** (-50 / 30) + 10 * 2 ** (-20 / 30)
    assert state.value_at(T0 + 60 * D) == pytest.approx(expected, rel=1e-14)


def test_e7_reference_values_in_reverse_arrival() -> None:
    state = ScoreState()
    for e in reversed(e7_events()):
        state.add(e)
    assert round_score(state.value_at(T0 + 45 * D)) == 10.415097
    assert round_score(state.value_at(T0 + 60 * D)) == 7.364586


def test_default_weights_match_reference_table() -> None:
    assert dict(DEFAULT_WEIGHTS) == {
        "sent": 0.0,
        "delivered": 0.0,
        "deferred": 0.0,
        "dropped": 0.0,
        "open": 1.0,
        "click": 3.0,
        "reply": 5.0,
        "conversion": 10.0,
        "bounce_soft": -1.0,
        "bounce_hard": -10.0,
        "unsubscribe": -10.0,
        "complaint": -25.0,
    }
    assert ScoringParams().half_life_days == 30.0


def test_single_event_halves_every_half_life() -> None:
    state = ScoreState(ScoringParams(half_life_days=7))
    state.add(ev(T0, "click"))
    assert state.value_at(T0) == 3.0
    assert state.value_at(T0 + 7 * D) == 1.5
    assert state.value_at(T0 + 21 * D) == 0.375


# --- weights ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("event", "weight"),
    [
        (ev(T0, "open", machine_open=True), 0.0),
        (ev(T0, "open", machine_open=False), 1.0),
        (ev(T0, "open"), 1.0),  # unknown machine_open counts as human
        (ev(T0, "open", machine_open=None), 1.0),
        (ev(T0, "click", suspected_bot=True), 0.0),
        (ev(T0, "click", suspected_bot=False), 3.0),
        (ev(T0, "conversion"), 10.0),
        (ev(T0, "delivered"), 0.0),
        (ev(T0, "bounce", bounce_class="hard"), -10.0),
        (ev(T0, "bounce", bounce_class="soft"), -1.0),
        (ev(T0, "bounce", bounce_class=None), -1.0),  # unknown class = soft
        (ev(T0, "unsubscribe"), -10.0),
        (ev(T0, "complaint"), -25.0),
        (ev(T0, "pageview"), 0.0),  # unknown type weighs 0
    ],
)
def test_event_weights(event: dict, weight: float) -> None:
    assert event_weight(event, ScoringParams()) == weight


def test_weights_merge_over_defaults_and_bounce_alias() -> None:
    p = ScoringParams(weights={"click": 2.0, "bounce": -4, "pageview": 0.5})
    assert p.weights["click"] == 2.0
    assert p.weights["open"] == 1.0  # kept from defaults
    assert p.weights["bounce_hard"] == p.weights["bounce_soft"] == -4.0
    assert "bounce" not in p.weights
    assert event_weight(ev(T0, "pageview"), p) == 0.5
    explicit = ScoringParams(weights={"bounce": -4, "bounce_hard": -20})
    assert explicit.weights["bounce_hard"] == -20.0
    assert explicit.weights["bounce_soft"] == -4.0


def test_params_are_read_only_hashable_and_picklable() -> None:
    p = ScoringParams(weights={"click": 2.0})
    with pytest.raises(TypeError):
        p.weights["click"] = 5.0  # type: ignore[index]
    assert hash(p) == hash(ScoringParams(weights={"click": 2.0}))
    q = pickle.loads(pickle.dumps(p))
    assert q == p
    assert q.weights["click"] == 2.0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"half_life_days": 0},
        {"half_life_days": -1},
        {"half_life_days": math.inf},
        {"weights": {"click": "3"}},
        {"weights": {"click": True}},
        {"weights": {"click": math.nan}},
        {"weights": {"": 1}},
        {"weights": [("click", 1)]},
        {"active_min_score": 0},
        {"active_min_score": 6, "engaged_min_score": 5},
        {"engaged_max_days": 100, "active_max_days": 90},
        {"emit_abs_epsilon": -1},
    ],
)
def test_bad_params_rejected(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        ScoringParams(**kwargs)


# --- order independence -----------------------------------------------------------------


def random_events(rng: random.Random, n: int, span_days: float, sid: str = "s1") -> list[dict]:
    types = [
        "delivered",
        "open",
        "open",
        "click",
        "conversion",
        "bounce",
        "unsubscribe",
        "complaint",
        "sent",
        "reply",
    ]
    out = []
    for _ in range(n):
        et = rng.choice(types)
        extra: dict = {}
        if et == "open":
            extra["machine_open"] = rng.choice([True, False, None])
        if et == "bounce":
            extra["bounce_class"] = rng.choice(["hard", "soft", None])
        if et == "click":
            extra["suspected_bot"] = rng.random() < 0.2
        out.append(ev(T0 + rng.randrange(int(span_days * D)), et, sid, **extra))
    return out


@pytest.mark.parametrize("seed", range(5))
def test_shuffled_arrival_gives_same_state(seed: int) -> None:
    rng = random.Random(seed)
    params = ScoringParams()
    events = random_events(rng, 60, 200)
    as_of = max(e["event_time"] for e in events) + 3 * D
    reference = closed_form(events, as_of, params)
    outputs = set()
    for _ in range(50):
        rng.shuffle(events)
        state = ScoreState(params)
        for e in events:
            state.add(e)
        assert state.value_at(as_of) == pytest.approx(reference, rel=1e-12, abs=1e-12)
        assert state.ref_time == max(e["event_time"] for e in events)
        outputs.add(state.output(as_of))
    assert len(outputs) == 1  # rounded score, tier, last human time: identical


def test_late_event_is_decayed_from_its_own_time() -> None:
    in_order, late_first = ScoreState(), ScoreState()
    for e in [ev(T0, "click"), ev(T0 + 30 * D, "open")]:
        in_order.add(e)
    for e in [ev(T0 + 30 * D, "open"), ev(T0, "click")]:
        late_first.add(e)
    assert late_first.value_at(T0 + 30 * D) == in_order.value_at(T0 + 30 * D) == 2.5


def test_merge_equals_adding_everything() -> None:
    rng = random.Random(7)
    events = random_events(rng, 40, 90)
    whole, left, right = ScoreState(), ScoreState(), ScoreState()
    for i, e in enumerate(events):
        whole.add(e)
        (left if i % 2 else right).add(e)
    left.merge(right)
    t = whole.ref_time
    assert left.ref_time == t
    assert left.value_at(t) == pytest.approx(whole.value_at(t), rel=1e-12, abs=1e-12)
    assert left.last_human_time == whole.last_human_time
    assert left.unreachable_since == whole.unreachable_since


# --- numerical stability ----------------------------------------------------------------


def test_long_horizon_fifty_years_of_events() -> None:
    rng = random.Random(11)
    params = ScoringParams()
    events = [
        ev(
            T0 + i * 4 * 3_600_000 + rng.randrange(3_600_000),
            rng.choice(["open", "click", "delivered", "conversion"]),
        )
        for i in range(110_000)
    ]  # ~50 years
    state = ScoreState(params)
    for e in events:
        state.add(e)
    as_of = events[-1]["event_time"]
    assert state.value_at(as_of) == pytest.approx(closed_form(events, as_of, params), rel=1e-9)
    assert math.isfinite(state.value) and abs(state.value) < 1e4


def test_extreme_gaps_underflow_to_zero_without_error() -> None:
    state = ScoreState()
    state.add(ev(T0, "click"))
    far = T0 + 10_000 * 365 * D  # ten thousand years later
    assert state.value_at(far) == 0.0
    state.add(ev(far, "open"))
    assert state.value_at(far) == 1.0
    state.add(ev(T0 - 10_000 * 365 * D, "conversion"))  # absurdly late arrival
    assert state.value_at(far) == 1.0
    assert state.ref_time == far


def test_read_before_latest_event_is_refused() -> None:
    state = ScoreState()
    state.add(ev(T0 + D, "click"))
    with pytest.raises(ValueError, match="already holds events"):
        state.value_at(T0)
    assert ScoreState().value_at(T0) == 0.0


def test_state_tuple_round_trip() -> None:
    state = ScoreState()
    for e in [*e7_events(), ev(T0 + 50 * D, "complaint")]:
        state.add(e)
    copy = ScoreState.from_tuple(state.to_tuple())
    assert copy.to_tuple() == state.to_tuple()
    assert copy.output() == state.output()


# --- tiers --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("score", "days_since_human", "unreachable", "tier"),
    [
        (5.0, 30, False, "engaged"),
        (4.999, 1, False, "active"),
        (50.0, 30.001, False, "active"),  # strong score but not recent enough
        (1.0, 90, False, "active"),
        (0.999, 5, False, "at_risk"),
        (-20.0, 5, False, "at_risk"),
        (3.0, 90.001, False, "at_risk"),
        (0.5, 180, False, "at_risk"),
        (0.5, 180.001, False, "dormant"),
        (0.0, None, False, "dormant"),  # never engaged
        (50.0, 0, True, "unreachable"),
    ],
)
def test_tier_thresholds(
    score: float, days_since_human: float | None, unreachable: bool, tier: str
) -> None:
    as_of = T0 + 400 * D
    last = None if days_since_human is None else as_of - round(days_since_human * D)
    assert tier_for(score, last, as_of, ScoringParams(), unreachable) == tier


def test_custom_tier_thresholds() -> None:
    p = ScoringParams(
        engaged_min_score=2,
        engaged_max_days=7,
        active_min_score=0.5,
        active_max_days=14,
        at_risk_max_days=14,
    )
    as_of = T0 + 100 * D
    assert tier_for(2.0, as_of - 7 * D, as_of, p) == "engaged"
    assert tier_for(2.0, as_of - 8 * D, as_of, p) == "active"
    assert tier_for(0.4, as_of - 8 * D, as_of, p) == "at_risk"
    assert tier_for(2.0, as_of - 15 * D, as_of, p) == "dormant"


def test_output_of_e7_and_unreachable_rules() -> None:
    state = ScoreState()
    for e in e7_events():
        state.add(e)
    out = state.output()  # as of the latest event (day 45, the MPP open)
    assert out == ScoreOutput(10.415097, "engaged", T0 + 40 * D, T0 + 45 * D)
    assert state.output(T0 + 45 * D, suppressed=True).tier == "unreachable"
    state.add(ev(T0 + 46 * D, "bounce", bounce_class="soft"))
    assert state.output().tier == "engaged"  # a soft bounce is not permanent
    state.add(ev(T0 + 47 * D, "bounce", bounce_class="hard"))
    assert state.output().tier == "unreachable"
    assert state.unreachable_since == T0 + 47 * D
    complained = ScoreState()
    complained.add(ev(T0, "complaint"))
    assert complained.output().tier == "unreachable"
    assert complained.output().score == -25.0


def test_machine_open_is_not_human_engagement() -> None:
    state = ScoreState()
    state.add(ev(T0, "open", machine_open=True))
    state.add(ev(T0, "click", suspected_bot=True))
    assert state.last_human_time is None
    assert state.output() == ScoreOutput(0.0, "dormant", None, T0)


def test_next_review_time_tracks_tier_decay() -> None:
    state = ScoreState()
    state.add(ev(T0, "conversion"))  # 10 points, human
    tiers = []
    t = T0
    while (nxt := state.next_review_time(t)) is not None:
        assert nxt > t
        assert state.output(nxt - 1).tier == state.output(t).tier  # no change before
        t = nxt
        tiers.append(state.output(t).tier)
    # score 10 → 5 after one half-life (30 d) = engaged_max_days: both candidates coincide
    assert tiers[0] == "active"
    assert tiers[-1] == "dormant"
    assert t == T0 + 180 * D + 1
    assert state.output(T0 + 30 * D).tier == "engaged"
    assert state.next_review_time(t) is None


def test_next_review_time_none_when_unreachable() -> None:
    state = ScoreState()
    state.add(ev(T0, "complaint"))
    assert state.next_review_time(T0) is None
    assert ScoreState().next_review_time(T0) is None


# --- emit on change -----------------------------------------------------------------------


def test_should_emit_rules() -> None:
    p = ScoringParams()  # abs 0.5, rel 0.1
    base = ScoreOutput(10.0, "engaged", T0, T0)
    assert should_emit(None, base, p)
    assert should_emit(base, ScoreOutput(10.0, "active", T0, T0), p)  # tier change
    assert not should_emit(base, ScoreOutput(10.9, "engaged", T0, T0), p)  # < 10 %
    assert should_emit(base, ScoreOutput(11.0, "engaged", T0, T0), p)  # = 10 %
    assert should_emit(base, ScoreOutput(9.0, "engaged", T0, T0), p)
    small = ScoreOutput(1.0, "active", T0, T0)
    assert not should_emit(small, ScoreOutput(1.4, "active", T0, T0), p)  # < abs 0.5
    assert should_emit(small, ScoreOutput(1.5, "active", T0, T0), p)
    # a newer last-human time alone does not emit
    assert not should_emit(base, ScoreOutput(10.0, "engaged", T0 + D, T0 + D), p)


def test_emit_on_change_over_a_stream() -> None:
    # Deliveries only decay the score; they emit once the drop exceeds the epsilon.
    state = ScoreState()
    events = [ev(T0, "conversion")] + [ev(T0 + i * D, "delivered") for i in range(1, 8)]
    emitted = []
    last = None
    for e in events:
        state.add(e)
        out = state.output()
        if should_emit(last, out, state.params):
            emitted.append(out)
            last = out
    # 10 → 10·2^(−d/30) drops by ≥ 10 % from day 5 (0.891); day 4 is 0.912.
    assert [o.as_of for o in emitted] == [T0, T0 + 5 * D]


# --- batch scoring and the command ---------------------------------------------------------


def test_score_events_ignores_events_after_as_of() -> None:
    events = [*e7_events("a"), ev(T0 + 46 * D, "conversion", "a"), ev(T0 + 50 * D, "click", "b")]
    scores = score_events(events, T0 + 45 * D)
    assert set(scores) == {"a"}  # b only has future events
    assert round_score(scores["a"]) == 10.415097
    at_edge = score_events([ev(T0, "click", "c")], T0)  # event exactly at as_of counts
    assert at_edge == {"c": 3.0}


def run_cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "udfs.scoring", *args],
        cwd=REPO,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


def write(tmp_path: Path, doc: object, name: str = "in.json") -> Path:
    path = tmp_path / name
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc), encoding="utf-8")
    return path


def e7_doc() -> dict:
    events = [
        *e7_events("alice"),
        ev(T0 + 5 * D, "bounce", "bob", bounce_class="hard"),
        ev(T0 + 61 * D, "click", "bob"),  # after as_of: ignored
        ev(T0 + 70 * D, "click", "carol"),  # carol has only future events
    ]
    return {
        "half_life_days": 30,
        "weights": dict(DEFAULT_WEIGHTS),
        "as_of": T0 + 60 * D,
        "events": events,
    }


def test_cli_prints_exact_json(tmp_path: Path) -> None:
    res = run_cli(str(write(tmp_path, e7_doc())))
    assert res.returncode == 0, res.stderr
    # bob: −10 · 2^(−55/30) = −2.8061551...; his click and carol lie after as_of
    assert res.stdout == '{"scores": {"alice": 7.364586, "bob": -2.806155}}\n'
    assert res.stderr == ""


def test_cli_is_independent_of_event_order_in_the_file(tmp_path: Path) -> None:
    doc = e7_doc()
    outputs = set()
    rng = random.Random(3)
    for i in range(5):
        rng.shuffle(doc["events"])
        res = run_cli(str(write(tmp_path, doc, f"in{i}.json")))
        assert res.returncode == 0, res.stderr
        outputs.add(res.stdout)
    assert len(outputs) == 1


def test_cli_defaults_and_partial_weights(tmp_path: Path) -> None:
    # No weights → defaults; partial weights merge over defaults; H changes the decay.
    doc = {"as_of": T0 + 10 * D, "events": [ev(T0, "click", "x"), ev(T0, "open", "y")]}
    res = run_cli(str(write(tmp_path, doc)))
    assert json.loads(res.stdout) == {
        "scores": {"x": round(3 * 2 ** (-1 / 3), 6), "y": round(2 ** (-1 / 3), 6)}
    }
    doc.update(half_life_days=10, weights={"click": 8})
    res = run_cli(str(write(tmp_path, doc)))
    assert res.stdout == '{"scores": {"x": 4.0, "y": 0.5}}\n'


def test_cli_reads_stdin() -> None:
    doc = {"as_of": T0, "events": [ev(T0, "conversion", "z")]}
    res = run_cli("-", stdin=json.dumps(doc))
    assert res.returncode == 0
    assert res.stdout == '{"scores": {"z": 10.0}}\n'


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not valid JSON"),
        ([], "top level must be a JSON object"),
        ({"events": []}, "as_of: required"),
        ({"as_of": "2024-01-01", "events": []}, "as_of: expected integer"),
        ({"as_of": 1.5, "events": []}, "as_of: expected integer"),
        ({"as_of": T0}, "events: required"),
        ({"as_of": T0, "events": {}}, "events: required"),
        ({"as_of": T0, "events": [5]}, "events[0]: expected an object"),
        (
            {"as_of": T0, "events": [{"event_type": "open", "event_time": T0}]},
            "events[0].subscriber_id",
        ),
        (
            {"as_of": T0, "events": [ev(T0, "open"), {"subscriber_id": "a", "event_time": T0}]},
            "events[1].event_type",
        ),
        ({"as_of": T0, "events": [ev(T0 + 0.5, "open")]}, "events[0].event_time"),
        ({"as_of": T0, "events": [ev(T0, "open", machine_open="yes")]}, "events[0].machine_open"),
        ({"as_of": T0, "events": [ev(T0, "bounce", bounce_class=1)]}, "events[0].bounce_class"),
        ({"as_of": T0, "half_life_days": 0, "events": []}, "half_life_days"),
        ({"as_of": T0, "half_life_days": "30", "events": []}, "half_life_days"),
        ({"as_of": T0, "weights": {"click": "3"}, "events": []}, "weights.click"),
        ({"as_of": T0, "weights": [1], "events": []}, "weights: expected an object"),
        ({"as_of": T0, "halflife_days": 30, "events": []}, "unknown top-level key"),
    ],
)
def test_cli_bad_input_exits_non_zero(tmp_path: Path, content: object, message: str) -> None:
    res = run_cli(str(write(tmp_path, content)))
    assert res.returncode == 2
    assert res.stdout == ""
    assert message in res.stderr
    assert res.stderr.startswith("error: ")


def test_cli_missing_file_and_usage(tmp_path: Path) -> None:
    res = run_cli(str(tmp_path / "nope.json"))
    assert res.returncode == 2
    assert "cannot read" in res.stderr
    res = run_cli()
    assert res.returncode == 2
    assert "usage" in res.stderr


def test_main_in_process(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, {"as_of": T0, "events": [ev(T0, "click", "k")]})
    assert main([str(path)]) == 0
    assert capsys.readouterr().out == '{"scores": {"k": 3.0}}\n'
