"""The A/B decision job on the MiniCluster with seeded tests whose answer is known: a clear
winner, a sample ratio mismatch, and tests without a definition (defaults; control by
config name or first arm seen). Counts and statuses are exact; the statistics are compared
with udfs.abtest.decide on the same counts at the same look times.

Every event lies in [T, T + 50 s], inside one look interval, so the watermark never passes
a look while the file is read: each test's first look (T + 60 s) fires at the end of input
with the final counts, followed by its maturity and deadline looks (the final watermark
fires every timer). That makes the look sequence, and so every figure, deterministic."""

from __future__ import annotations

import hashlib
import json

import pytest

from jobs import abtest, avro_schema, tables
from tests.job.conftest import final_rows, new_table_env
from udfs.abtest import AbTestDefinition, ArmCounts, decide

pytestmark = pytest.mark.job

T = 1767268800000  # 2026-01-01T12:00:00Z, a minute boundary
S, H = 1000, 3_600_000
LOOK = T + 60 * S  # the first grid look after every event


def ev(kind, sub, campaign, test, arm, t, **extra):
    e = {f: None for f in avro_schema.field_names("EmailEvent")}
    e.update(event_id=f"{kind}-{sub}-{t}-{len(extra)}", provider="tracker", event_type=kind,
             event_time=t, received_time=t, subscriber_id=sub, campaign_id=campaign,
             ab_test_id=test, arm=arm, suspected_bot=False, attributes={})
    e.update(extra)
    return e


def arm_events(campaign, test, arm, delivered, successes, kind="click", **noise):
    """`delivered` deliveries, then `successes` subscribers with a success (the first ones
    twice: unique counting), plus noise that must not count: bot clicks, machine opens."""
    subs = [f"{test}-{arm}-{i}" for i in range(delivered)]
    out = [ev("delivered", s, campaign, test, arm, T + (i % 30) * S) for i, s in enumerate(subs)]
    for i, s in enumerate(subs[:successes]):
        extra = {"url": "https://shop.example/x"} if kind == "click" else {"machine_open": False}
        out.append(ev(kind, s, campaign, test, arm, T + (30 + i % 15) * S, **extra))
        if i < 3:
            out.append(ev(kind, s, campaign, test, arm, T + 48 * S, **extra))
    tail = subs[successes:]
    for i, s in enumerate(tail[:noise.get("bot_clicks", 0)]):
        out.append(ev("click", s, campaign, test, arm, T + 40 * S, url="https://x/y",
                      suspected_bot=True, bot_reason="click_burst", event_id=f"bot-{s}-{i}"))
    for s in tail[:noise.get("machine_opens", 0)]:
        out.append(ev("open", s, campaign, test, arm, T + 41 * S, machine_open=True))
    return out


EVENTS = [
    # 1. clear winner: B 6 % vs A 2 % on 1000 deliveries each (configured test)
    *arm_events("c1", "t-win", "A", 1000, 20, bot_clicks=15),
    *arm_events("c1", "t-win", "B", 1000, 60),
    # 2. SRM: 600 vs 400 deliveries against an expected 50/50 split; B far ahead on opens
    *arm_events("c1", "t-srm", "A", 600, 12, kind="open", machine_opens=30),
    *arm_events("c1", "t-srm", "B", 400, 40, kind="open"),
    # 3. no definition: defaults; B is seen first, but the config names A as control
    *arm_events("c2", "t-new", "B", 200, 8),
    *arm_events("c2", "t-new", "A", 200, 6),
    # 4. no definition and no arm named A: the first arm seen (red) is the control
    *arm_events("c2", "t-colors", "red", 50, 2),
    *arm_events("c2", "t-colors", "blue", 50, 3),
    # 5. the seeded campaign: B converts clicks at 3 %, A at 2 %, 8000 each
    *arm_events("c4", "t-lift", "A", 8000, 160),
    *arm_events("c4", "t-lift", "B", 8000, 240),
    # 6. an A/A campaign: both arms at 2 %
    *arm_events("c4", "t-aa", "A", 8000, 160),
    *arm_events("c4", "t-aa", "B", 8000, 160),
    # not part of any test
    ev("click", "x1", "c3", None, None, T + 5 * S, url="https://x/z"),
    ev("click", "x2", "c3", "", "", T + 5 * S, url="https://x/z"),
]

WIN_DEADLINE = T + 2 * H
CONFIG = {
    "look_interval_s": 60,
    "tests": {
        "t-win": {"control_arm": "A", "tau": 0.02, "min_delivered_per_arm": 500,
                  "min_elapsed_s": 0, "expected_split": {"A": 1, "B": 1},
                  "deadline": "2026-01-01T14:00:00Z"},
        "t-srm": {"metric": "opens", "tau": 0.02, "min_delivered_per_arm": 100,
                  "min_elapsed_s": 0, "expected_split": {"A": 1, "B": 1}},
        # the default tau (0.004) and maturity in deliveries only
        "t-lift": {"control_arm": "A", "min_elapsed_s": 0},
        "t-aa": {"control_arm": "A", "min_elapsed_s": 0},
    },
}
# What a test without a definition gets (the documented defaults of the abtest section).
DEFAULT_DEF = {"metric": "clicks", "alpha": 0.05, "tau": 0.004, "min_delivered_per_arm": 500,
               "min_elapsed_ms": H, "max_duration_ms": 48 * H, "keep_control_rel_loss": 0.0075}


def expected(definition, arms, looks):
    """decide() over the job's look sequence; returns (last decision, versions started)."""
    state, started = None, []
    for look in looks:
        d = decide(definition, arms, look, state)
        state = d.state
        if d.changed:
            started.append(d)
    return d, started


@pytest.fixture(scope="module")
def job_output(stream_env, job_config, tmp_path_factory):

    t_env = new_table_env(stream_env, job_config)
    path = tmp_path_factory.mktemp("abtest") / "events.json"
    path.write_text("\n".join(json.dumps(e) for e in EVENTS) + "\n")
    t_env.execute_sql(f"""CREATE TEMPORARY TABLE clean_in (
        {tables.event_time_columns(job_config)}
    ) WITH ('connector' = 'filesystem', 'path' = '{path}', 'format' = 'json')""")
    out = abtest.build(t_env, job_config | {"abtest": job_config["abtest"] | CONFIG}, "clean_in")
    names = out.decisions.get_schema().get_field_names()
    assert names == avro_schema.field_names("AbDecision")
    # One job for both outputs would be nicer, but final_rows collects one table; the
    # scenario is small and the answer is deterministic, so two runs give the same rows.
    rows = [dict(zip(names, r, strict=True)) for r in final_rows(out.decisions)]
    history = [dict(zip(names, r, strict=True)) for r in final_rows(out.history)]
    latest = {}
    for r in rows:  # what the upsert sinks hold: the last row per (campaign, test)
        latest[(r["campaign_id"], r["ab_test_id"])] = r
    return rows, latest, history


def _check_against(row, decision, control):
    assert (row["status"], row["winner"], row["version"], row["decided_at"]) == (
        decision.status, decision.winner, decision.version, decision.decided_ms)
    assert row["significant"] is decision.significant
    assert row["control_arm"] == control
    assert row["srm_p_value"] == decision.srm_p_value
    assert json.loads(row["arms"]) == [a.to_dict() for a in decision.arms]


def test_clear_winner(job_output):
    rows, latest, history = job_output
    row = latest[("c1", "t-win")]
    arms = [ArmCounts("A", 1000, 20), ArmCounts("B", 1000, 60)]
    definition = AbTestDefinition(metric="clicks", alpha=0.05, tau=0.02, control_arm="A",
                                  min_delivered_per_arm=500, deadline_ms=WIN_DEADLINE,
                                  max_duration_ms=48 * H, expected_split={"A": 1.0, "B": 1.0},
                                  keep_control_rel_loss=0.0075)
    decision, _ = expected(definition, arms, [LOOK, WIN_DEADLINE])
    assert (row["status"], row["winner"], row["version"], row["metric"]) == (
        "winner", "B", 1, "clicks")
    assert [(a["arm"], a["delivered"], a["successes"]) for a in json.loads(row["arms"])] == [
        ("A", 1000, 20), ("B", 1000, 60)]
    _check_against(row, decision, "A")
    assert row["look_time"] == LOOK and row["decided_at"] == LOOK
    # The deadline look found the same counts and the same (sticky) decision: no new row.
    assert [r["version"] for r in rows if r["ab_test_id"] == "t-win"] == [1]
    want_id = hashlib.sha256(b"c1\x1ft-win\x1f1").hexdigest()[:32]
    assert row["decision_id"] == want_id == abtest.decision_id("c1", "t-win", 1)
    assert [r["decision_id"] for r in history if r["ab_test_id"] == "t-win"] == [want_id]


def test_sample_ratio_mismatch_blocks_the_winner(job_output):
    _, latest, history = job_output
    row = latest[("c1", "t-srm")]
    arms = [ArmCounts("A", 600, 12), ArmCounts("B", 400, 40)]
    definition = AbTestDefinition(metric="opens", alpha=0.05, tau=0.02, control_arm="A",
                                  min_delivered_per_arm=100, max_duration_ms=48 * H,
                                  expected_split={"A": 1.0, "B": 1.0},
                                  keep_control_rel_loss=0.0075)
    decision, _ = expected(definition, arms, [LOOK, LOOK + 48 * H])
    assert (row["status"], row["winner"], row["significant"], row["metric"]) == (
        "srm_alert", None, False, "opens")
    assert row["srm_p_value"] < 0.001
    # machine opens and the repeated opens do not count
    assert [(a["arm"], a["delivered"], a["successes"]) for a in json.loads(row["arms"])] == [
        ("A", 600, 12), ("B", 400, 40)]
    _check_against(row, decision, "A")
    # B would have won without the mismatch: its corrected p-value is below alpha.
    assert json.loads(row["arms"])[1]["p_value"] < 0.05
    assert [(r["version"], r["status"]) for r in history if r["ab_test_id"] == "t-srm"] == [
        (1, "srm_alert")]


def test_tests_without_definition_get_defaults(job_output):
    rows, latest, history = job_output
    # default control arm by name, although B was seen first; arms listed control first
    row = latest[("c2", "t-new")]
    arms = [ArmCounts("A", 200, 6), ArmCounts("B", 200, 8)]
    definition = AbTestDefinition(control_arm="A", **DEFAULT_DEF)
    looks = [LOOK, LOOK + H, LOOK + 48 * H]  # first look, maturity, deadline
    decision, started = expected(definition, arms, looks)
    assert [(d.version, d.status) for d in started] == [(1, "collecting"), (2, "deadline_best")]
    assert (row["status"], row["metric"], row["significant"], row["version"]) == (
        "deadline_best", "clicks", False, 2)
    _check_against(row, decision, "A")
    assert row["decided_at"] == LOOK + 48 * H
    new_history = sorted((r["version"], r["status"], r["decision_id"]) for r in history
                         if r["ab_test_id"] == "t-new")
    assert new_history == [(1, "collecting", abtest.decision_id("c2", "t-new", 1)),
                           (2, "deadline_best", abtest.decision_id("c2", "t-new", 2))]
    # the maturity look changed nothing (not mature: 200 < 500 deliveries): no row
    assert [r["version"] for r in rows if r["ab_test_id"] == "t-new"] == [1, 2]

    colors = latest[("c2", "t-colors")]
    arms = [ArmCounts("red", 50, 2), ArmCounts("blue", 50, 3)]
    decision, _ = expected(AbTestDefinition(control_arm="red", **DEFAULT_DEF), arms, looks)
    assert colors["control_arm"] == "red"
    _check_against(colors, decision, "red")

    # events outside any A/B test produce nothing
    assert set(latest) == {("c1", "t-win"), ("c1", "t-srm"), ("c2", "t-new"),
                           ("c2", "t-colors"), ("c4", "t-lift"), ("c4", "t-aa")}


@pytest.mark.parametrize("test_id, arms", [
    ("t-lift", [("A", 8000, 160), ("B", 8000, 240)]),
    ("t-aa", [("A", 8000, 160), ("B", 8000, 160)]),
])
def test_seeded_lift_declares_b_and_aa_declares_no_winner(job_output, test_id, arms):
    rows, latest, _ = job_output
    row = latest[("c4", test_id)]
    assert [(a["arm"], a["delivered"], a["successes"]) for a in json.loads(row["arms"])] == arms
    definition = AbTestDefinition(control_arm="A", **DEFAULT_DEF | {"min_elapsed_ms": 0})
    decision, _ = expected(definition, [ArmCounts(*a) for a in arms],
                           [LOOK, LOOK + 48 * H])
    _check_against(row, decision, "A")
    if test_id == "t-lift":
        assert (row["status"], row["winner"], row["significant"], row["version"]) == (
            "winner", "B", True, 1)
        assert row["decision_id"] == abtest.decision_id("c4", "t-lift", 1)
    else:
        assert "winner" not in {r["status"] for r in rows if r["ab_test_id"] == "t-aa"}
        assert (row["status"], row["significant"]) == ("deadline_best", False)
