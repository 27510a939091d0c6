"""The subscriber job on the MiniCluster: exact final rows of subscriber.scores,
subscriber.send_time and subscriber.suppressions for a scenario with every suppression
reason, a re-subscribe, withdrawn tracking consent, a time zone, a late event and an
erasure; the same rows again when the events arrive shuffled. A second run checks the
tier reviews of quiet subscribers, row by row."""

from __future__ import annotations

import itertools
import json
import math
import random

import pytest

from jobs import avro_schema, subscriber
from tests.job.conftest import new_table_env
from udfs.scoring import ScoreState, round_score, score_events
from udfs.send_time import REFERENCE_HOURLY_POPULATION, SendTimeState

pytestmark = pytest.mark.job

T = 1767614400000  # Monday 2026-01-05T12:00:00Z
M, H, D = 60_000, 3_600_000, 86_400_000
NY = "America/New_York"  # UTC-5 in January


def ev(sub, kind, t, **extra):
    e = {f: None for f in avro_schema.field_names("EmailEvent")}
    e.update(event_id=f"{sub}-{kind}-{t}", provider="tracker", event_type=kind, event_time=t,
             received_time=t + 2000, subscriber_id=sub, campaign_id="c1",
             suspected_bot=False, attributes={})
    e.update(extra)
    return e


TUE_0915_NY = T + 26 * H + 15 * M  # Tuesday 14:15Z = 09:15 in New York
EVENTS = [
    # engaged, in New York: clicks on Tuesdays 09:xx local, opens 10:xx local
    ev("eng", "delivered", T),
    ev("eng", "click", TUE_0915_NY),
    ev("eng", "click", TUE_0915_NY + 20 * M),
    ev("eng", "click", TUE_0915_NY + 7 * D),
    ev("eng", "open", TUE_0915_NY + H, machine_open=False),
    ev("eng", "open", TUE_0915_NY + 7 * D + H),
    ev("eng", "open", T + 2 * H, machine_open=True),           # machine open: weight 0
    ev("eng", "click", T + 3 * H, suspected_bot=True, bot_reason="click_burst"),
    # active: two human opens
    ev("act", "open", T + 5 * D),
    ev("act", "open", T + 5 * D + H),
    # at risk: an open and, a day later, a soft bounce
    ev("risk", "open", T),
    ev("risk", "bounce", T + D, bounce_class="soft"),
    # dormant: two soft bounces in 8 days (not 3 within 7), no engagement
    ev("dorm", "bounce", T, bounce_class="soft"),
    ev("dorm", "bounce", T + 8 * D, bounce_class="soft"),
    # suppressions
    ev("unsub", "open", T),
    ev("unsub", "unsubscribe", T + H),
    ev("resub", "open", T),
    ev("resub", "unsubscribe", T + H),                         # lifted by the profile at T+2h
    ev("compl", "open", T),
    ev("compl", "complaint", T + H),
    ev("hard", "bounce", T + H, bounce_class="hard"),
    ev("worse", "unsubscribe", T),                              # then a complaint: an update
    ev("worse", "complaint", T + H),
    ev("soft", "bounce", T, bounce_class="soft"),
    ev("soft", "bounce", T + 3 * D, bounce_class="soft"),
    ev("soft", "bounce", T + 6 * D, bounce_class=None),         # unknown class = soft
    # tracking consent withdrawn at T+3h: later opens and clicks do not count
    ev("track", "open", T + H),
    ev("track", "open", T + 4 * H),
    ev("track", "click", T + 5 * H),
    ev("track", "bounce", T + 6 * H, bounce_class="soft"),      # not tracking: counts
    # erased at T+6h
    ev("gone", "open", T),
    ev("gone", "click", T + H),
    ev("gone", "unsubscribe", T + 2 * H),
]
LATE = [ev("act", "click", T - 3 * D, received_time=T + 5 * D)]  # from email.late
PROFILES = [
    {"subscriber_id": "eng", "time_zone": NY, "marketing_consent": True,
     "tracking_consent": True, "updated_at": T - D},
    {"subscriber_id": "resub", "time_zone": None, "marketing_consent": True,
     "marketing_consent_at": T + 2 * H, "tracking_consent": None, "updated_at": T + 2 * H},
    {"subscriber_id": "track", "time_zone": "Europe/Berlin", "marketing_consent": None,
     "tracking_consent": False, "updated_at": T + 3 * H},
    {"subscriber_id": "gone", "time_zone": "Europe/Paris", "marketing_consent": True,
     "tracking_consent": True, "updated_at": T - D},
]
ERASURES = [{"subscriber_id": "gone", "requested_at": T + 6 * H, "request_id": "r1"}]


def _file_table(t_env, tmp_path, name, schema, rowtime, rows):
    path = tmp_path / f"{name}.json"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    t_env.execute_sql(f"""CREATE TEMPORARY TABLE {name} (
        {avro_schema.column_ddl(schema)},
        ts AS TO_TIMESTAMP_LTZ({rowtime}, 3),
        WATERMARK FOR ts AS ts - INTERVAL '10' SECOND
    ) WITH ('connector' = 'filesystem', 'path' = '{path}', 'format' = 'json')""")
    return name


def _outputs(t_env, job_config, tmp_path, events, late=LATE, profiles=PROFILES,
             erasures=ERASURES):
    """The job on file sources: (scores, send_time, suppressions) tables."""
    return subscriber.build(
        t_env, job_config,
        _file_table(t_env, tmp_path, "clean_in", "EmailEvent", "event_time", events),
        # like the production source: email.late's watermark follows received_time
        _file_table(t_env, tmp_path, "late_in", "EmailEvent", "received_time", late),
        _file_table(t_env, tmp_path, "profiles_in", "SubscriberProfile", "updated_at", profiles),
        _file_table(t_env, tmp_path, "erasure_in", "ErasureRequest", "requested_at", erasures))


def _run(t_env, job_config, tmp_path, events) -> dict[str, dict[str, tuple]]:
    out = _outputs(t_env, job_config, tmp_path, events)
    result = {}
    for name, table in zip(("scores", "send_time", "suppressions"), out, strict=True):
        schema = {"scores": subscriber.SCORES, "send_time": subscriber.SEND_TIME,
                  "suppressions": subscriber.SUPPRESSIONS}[name]
        assert table.get_schema().get_field_names() == avro_schema.field_names(schema)
        result[name] = _upserted(table)
    return result


def _changelog(table) -> list[tuple[str, tuple]]:
    """Every row the table emits, in order, as (row kind, values)."""
    with table.execute().collect() as results:
        return [(row.get_row_kind().name, tuple(row)) for row in results]


def _upserted(table) -> dict[str, tuple]:
    """Apply the changelog the way the upsert sinks do: per subscriber_id, the latest
    INSERT/UPDATE_AFTER row, removed by a DELETE. (conftest.final_rows needs UPDATE_BEFORE
    rows, which the planner drops here because the tables have a primary key.)"""
    rows: dict[str, tuple] = {}
    for kind, row in _changelog(table):
        if kind in ("INSERT", "UPDATE_AFTER"):
            rows[row[0]] = row
        elif kind == "DELETE":
            assert rows.pop(row[0]) == row, "a DELETE must carry the deleted row"
    return rows


def _fed(sub: str) -> list[dict]:
    """The events of `sub` that may feed its score and send hour."""
    events = [e for e in EVENTS + LATE if e["subscriber_id"] == sub]
    if sub == "track":  # tracking withdrawn at T+3h: later opens/clicks are dropped
        events = [e for e in events if e["event_type"] == "bounce" or e["event_time"] < T + 3 * H]
    return events


def _expected_score(sub: str, tier: str) -> tuple:
    events = _fed(sub)
    state = ScoreState()
    for e in events:
        # what the job folds in: weight-0 events (deliveries, machine opens, bot clicks)
        # are skipped there, so that they do not move as_of
        if e["event_type"] != "delivered" and not e["machine_open"] and not e["suspected_bot"]:
            state.add(e)
    as_of = state.ref_time
    score = round_score(score_events(events, as_of)[sub])
    return (sub, score, tier, state.last_human_time, as_of)


EXPECTED_SUPPRESSIONS = {
    "unsub": ("unsub", "unsubscribe", "marketing", T + H, "unsubscribe"),
    "compl": ("compl", "complaint", "all", T + H, "complaint"),
    "hard": ("hard", "hard_bounce", "all", T + H, "hard_bounce"),
    "soft": ("soft", "soft_bounces", "all", T + 6 * D, "soft_bounces"),
    "worse": ("worse", "complaint", "all", T + H, "complaint,unsubscribe"),
}
TIERS = {"eng": "engaged", "act": "active", "risk": "at_risk", "dorm": "dormant",
         "unsub": "unreachable", "resub": "at_risk", "compl": "unreachable",
         "hard": "unreachable", "soft": "unreachable", "track": "at_risk",
         "worse": "unreachable"}


def test_scenario_has_no_tier_review_inside_it():
    """Tier reviews fire on the watermark while the input is read; none may fall inside the
    scenario's time span, or intermediate watermarks would make the final rows racy."""
    end = max(e["event_time"] for e in EVENTS)
    for sub in TIERS:
        state = ScoreState()
        for e in _fed(sub):
            state.add(e)
        review = state.next_review_time(state.ref_time)
        assert review is None or review > end + 10_000, sub


@pytest.fixture(scope="module")
def outputs(stream_env, job_config, tmp_path_factory):

    runs = []
    for seed in (None, 7):
        events = list(EVENTS)
        if seed is not None:
            random.Random(seed).shuffle(events)
        runs.append(_run(new_table_env(stream_env, job_config), job_config,
                         tmp_path_factory.mktemp(f"run{seed}"), events))
    return runs


def test_scores(outputs):
    scores = outputs[0]["scores"]
    assert scores == {sub: _expected_score(sub, tier) for sub, tier in TIERS.items()}
    # the late click (weight 3, three days before) is in act's score
    assert scores["act"][1] > 3


ZONES = {"eng": NY, "track": "Europe/Berlin"}  # the profiles' zones; others have none


def _expected_send_time(sub: str) -> tuple:
    state = SendTimeState()
    for e in _fed(sub):
        # the zone of the profile version in effect at the event (eng's predates its events;
        # track's came after its only counted open)
        state.add(e, NY if sub == "eng" else None)
    best = state.best()
    return (sub, best.slot, best.weekday, best.hour, ZONES.get(sub, "UTC"), best.confidence,
            best.source, best.effective_events, best.as_of)


# π of the default population curve over slots 7..9 of a 168-slot week (one day's share)
FALLBACK_CONFIDENCE = round(
    math.fsum(REFERENCE_HOURLY_POPULATION[7:10]) / math.fsum(REFERENCE_HOURLY_POPULATION) / 7, 6)


def test_send_time_in_profile_time_zone(outputs):
    send = outputs[0]["send_time"]
    # Tuesday 09h in New York (14h UTC would be slot 38), from the subscriber's own data
    assert send["eng"][1:5] == (33, 1, 9, NY)
    assert send["eng"][6] == "subscriber"
    # too little data: fallback to the configured population curve (the reference's, peak
    # 08:00 local, the same on every day, so Monday), confidence = its mass at 07-09h
    assert send["track"] == ("track", 8, 0, 8, "Europe/Berlin", FALLBACK_CONFIDENCE,
                             "population", 0.5, T + H)
    subs = ["eng", "act", "risk", "unsub", "resub", "compl", "track"]
    assert send == {sub: _expected_send_time(sub) for sub in subs}


def test_suppressions(outputs):
    # resub's unsubscribe was lifted by the profile; gone was erased
    assert outputs[0]["suppressions"] == EXPECTED_SUPPRESSIONS


def test_erasure_leaves_nothing(outputs):
    for run in outputs:
        for name, rows in run.items():
            assert "gone" not in rows, name


def test_tracking_consent_withdrawn(outputs):
    # only the open at T+1h and the soft bounce at T+6h count
    assert outputs[0]["scores"]["track"][1] == round_score(
        1.0 * 2 ** (-5 / (24 * 30)) - 1.0)


def test_arrival_order_does_not_matter(outputs):
    assert outputs[1] == outputs[0]


def test_production_plan_needs_no_upsert_materializer(t_env, job_config):
    """The changelog streams carry the sinks' key, so neither the Kafka nor the JDBC sink
    needs a SinkUpsertMaterializer (extra state) or UPDATE_BEFORE rows."""
    from jobs import tables

    config = job_config

    t_env.execute_sql(tables.events_source(config, "clean", "subscriber", "clean_events"))
    t_env.execute_sql(subscriber.late_source(config))
    t_env.execute_sql(subscriber.profiles_source(config))
    t_env.execute_sql(subscriber.erasure_source(config))
    stmts = subscriber.statements(t_env, config)
    plan = stmts.explain()
    for _, kafka_table, pg_table in subscriber.SINKS.values():
        assert f"Sink(table=[default_catalog.default_database.{kafka_table}]" in plan
        assert f"Sink(table=[default_catalog.default_database.{pg_table}_table]" in plan
    assert "SinkUpsertMaterializer" not in plan
    assert "upsertMaterialize=[true]" not in plan


def test_config_defaults_equal_the_udfs_defaults_and_overrides_apply():
    import settings
    from udfs.scoring import ScoringParams
    from udfs.send_time import SendTimeParams
    from udfs.suppression import SuppressionParams

    p = subscriber.job_params(settings.load(environ={}))
    assert (p.scoring, p.send_time, p.suppression) == (
        ScoringParams(), SendTimeParams(), SuppressionParams())
    p = subscriber.job_params(settings.load(environ={
        "EMAIL_STREAMING__SUBSCRIBER__SCORING__HALF_LIFE_DAYS": "10",
        "EMAIL_STREAMING__SUBSCRIBER__SCORING__WEIGHTS__CLICK": "4",
        "EMAIL_STREAMING__SUBSCRIBER__SEND_TIME__SLOTS": "24",
        "EMAIL_STREAMING__SUBSCRIBER__SUPPRESSION__SOFT_BOUNCE_THRESHOLD": "2",
        "EMAIL_STREAMING__SUBSCRIBER__SETTLE_S": "5"}))
    assert p.scoring.half_life_days == 10 and p.scoring.weights["click"] == 4.0
    assert p.scoring.weights["complaint"] == -25.0  # the other weights keep their defaults
    assert p.send_time.slots == 24
    assert p.suppression.soft_bounce_threshold == 2 and p.settle_ms == 5000


# --------------------------------------------------------------------------------------
# Tier reviews: quiet subscribers move down the tiers as event time passes
# --------------------------------------------------------------------------------------

# Both click at T, T+1h, T+2h (score ~9: engaged); "quiet" never comes back, "back" clicks
# again at T+100d. The other inputs each end with a row at T+200d, so the job's watermark
# reaches T+200d-10s before the end of input (the end-of-input watermark makes no
# reviews): the file sources' WatermarkAssigner emits a watermark right after any record
# that moves it by more than the auto-watermark interval, so this does not depend on
# timing, and timers fire in timestamp order however far one watermark jumps.
END = T + 200 * D
QUIET_EVENTS = [ev(sub, "click", T + i * H) for i in range(3) for sub in ("quiet", "back")]
QUIET_EVENTS += [ev("back", "click", T + 100 * D),
                 ev("clock", "delivered", END)]  # weight 0: no state, only event time
QUIET_LATE = [ev("clock", "delivered", END - D, received_time=END)]
QUIET_PROFILES = [{"subscriber_id": "clock", "time_zone": None, "marketing_consent": None,
                   "marketing_consent_at": None, "tracking_consent": None, "updated_at": END}]
QUIET_ERASURES = [{"subscriber_id": "clock", "requested_at": END, "request_id": "r-clock"}]


def _crossing(ref: int, value: float, threshold: float, half_life_ms: float) -> int:
    """First ms at which value·2^(-(t-ref)/H) is below threshold (ScoreState's rule)."""
    return math.floor(ref + half_life_ms * math.log2(value / threshold)) + 1


def _expected_review_rows(job_config) -> dict[str, list[tuple]]:
    """The score rows, in order, spelled out with default thresholds (engaged: score >= 5
    and last human engagement <= 30 d ago; active: >= 1 and <= 90 d; at_risk: <= 180 d)
    and emit rules (tier change, or |change| >= 0.5: at once; else settled, as of the
    review that caused it)."""
    p = subscriber.job_params(job_config).scoring
    assert (p.engaged_min_score, p.engaged_max_days, p.active_min_score, p.active_max_days,
            p.at_risk_max_days, p.emit_abs_epsilon) == (5, 30, 1, 90, 180, 0.5)
    hl = p.half_life_ms
    state = ScoreState(p)
    rows = []
    for i, tier in enumerate(("active", "engaged", "engaged")):  # 3, ~6, ~9
        state.add(ev("x", "click", T + i * H))
        rows.append((state.value, tier, T + i * H, T + i * H))
    ref, s2 = T + 2 * H, state.value

    def at(t: int, tier: str, last: int = ref, base: float = s2, since: int = ref) -> tuple:
        return (base * 2 ** (-(t - since) / hl), tier, last, t)

    common = [
        *rows,
        at(_crossing(ref, s2, 5, hl), "active"),       # score < 5
        at(ref + 30 * D + 1, "active"),                # 30 d quiet: score 5 -> 4.5, emitted
        at(ref + 90 * D + 1, "at_risk"),               # 90 d quiet
        at(_crossing(ref, s2, 1, hl), "at_risk"),      # score < 1: small change, settled
    ]
    quiet = [*common, at(ref + 180 * D + 1, "dormant")]
    # back: the click at T+100d brings it back to active; the review it had planned at
    # ref+180d is superseded.
    t_back = T + 100 * D
    s_back = s2 * 2 ** (-(t_back - ref) / hl) + 3
    again = {"last": t_back, "base": s_back, "since": t_back}
    back = [
        *common,
        (s_back, "active", t_back, t_back),
        at(t_back + 30 * D + 1, "active", **again),             # score halves: emitted
        at(_crossing(t_back, s_back, 1, hl), "at_risk", **again),  # score < 1
        at(t_back + 90 * D + 1, "at_risk", **again),            # 90 d: 1 -> 0.49, emitted
    ]                                                           # dormant at +180 d > END
    return {sub: [(sub, round_score(v), tier, last, as_of) for v, tier, last, as_of in seq]
            for sub, seq in (("quiet", quiet), ("back", back))}


def test_quiet_subscribers_move_down_the_tiers(stream_env, job_config, tmp_path):
    out = _outputs(new_table_env(stream_env, job_config), job_config, tmp_path,
                   QUIET_EVENTS, QUIET_LATE, QUIET_PROFILES, QUIET_ERASURES)
    scores = _changelog(out.scores)
    expected = _expected_review_rows(job_config)
    for sub, rows in expected.items():
        # each update comes as the full pair: UPDATE_BEFORE (the previous row) + UPDATE_AFTER
        want = [("INSERT", rows[0])]
        for prev, row in itertools.pairwise(rows):
            want += [("UPDATE_BEFORE", prev), ("UPDATE_AFTER", row)]
        got = [(kind, row) for kind, row in scores if row[0] == sub]
        assert got == want, sub
    assert {row[0] for _, row in scores} == {"quiet", "back"}
    assert [row[2] for row in expected["quiet"]] == [
        "active", "engaged", "engaged", "active", "active", "at_risk", "at_risk", "dormant"]
    assert expected["back"][-1][2:] == ("at_risk", T + 100 * D, T + 190 * D + 1)
