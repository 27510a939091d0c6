"""The subscriber job on the MiniCluster: exact final rows of subscriber.scores,
subscriber.send_time and subscriber.suppressions for a scenario with every suppression
reason, a re-subscribe, withdrawn tracking consent, a time zone, a late event and an
erasure; the same rows again when the events arrive shuffled."""

from __future__ import annotations

import json
import random

import pytest

from jobs import avro_schema, subscriber
from udfs.scoring import ScoreState, round_score, score_events
from udfs.send_time import SendTimeState

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


def _run(t_env, job_config, tmp_path, events) -> dict[str, dict[str, tuple]]:
    out = subscriber.build(
        t_env, job_config,
        _file_table(t_env, tmp_path, "clean_in", "EmailEvent", "event_time", events),
        # like the production source: email.late's watermark follows received_time
        _file_table(t_env, tmp_path, "late_in", "EmailEvent", "received_time", LATE),
        _file_table(t_env, tmp_path, "profiles_in", "SubscriberProfile", "updated_at", PROFILES),
        _file_table(t_env, tmp_path, "erasure_in", "ErasureRequest", "requested_at", ERASURES))
    result = {}
    for name, table in zip(("scores", "send_time", "suppressions"), out, strict=True):
        schema = {"scores": subscriber.SCORES, "send_time": subscriber.SEND_TIME,
                  "suppressions": subscriber.SUPPRESSIONS}[name]
        assert table.get_schema().get_field_names() == avro_schema.field_names(schema)
        result[name] = _upserted(table)
    return result


def _upserted(table) -> dict[str, tuple]:
    """Apply the changelog the way the upsert sinks do: per subscriber_id, the latest
    INSERT/UPDATE_AFTER row, removed by a DELETE. (conftest.final_rows needs UPDATE_BEFORE
    rows, which the planner drops here because the tables have a primary key.)"""
    from pyflink.common import RowKind

    rows: dict[str, tuple] = {}
    with table.execute().collect() as results:
        for row in results:
            kind = row.get_row_kind()
            if kind in (RowKind.INSERT, RowKind.UPDATE_AFTER):
                rows[row[0]] = tuple(row)
            elif kind == RowKind.DELETE:
                assert rows.pop(row[0]) == tuple(row), "a DELETE must carry the deleted row"
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
    from pyflink.table import StreamTableEnvironment

    runs = []
    for seed in (None, 7):
        events = list(EVENTS)
        if seed is not None:
            random.Random(seed).shuffle(events)
        runs.append(_run(StreamTableEnvironment.create(stream_env), job_config,
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


def test_send_time_in_profile_time_zone(outputs):
    send = outputs[0]["send_time"]
    # Tuesday 09h in New York (14h UTC would be slot 38), from the subscriber's own data
    assert send["eng"][1:5] == (33, 1, 9, NY)
    assert send["eng"][6] == "subscriber"
    # too little data: population (uniform) fallback, slot 0, confidence 3/168
    assert send["track"] == ("track", 0, 0, 0, "Europe/Berlin", round(3 / 168, 6),
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
