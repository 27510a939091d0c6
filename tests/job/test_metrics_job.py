"""The campaign metrics job on the MiniCluster: exact minute and total rows for a seeded
A/B scenario with machine opens, bot clicks, a late event and a resent order."""

from __future__ import annotations

import json

import pytest

from jobs import avro_schema, metrics, tables
from tests.job.conftest import final_rows

pytestmark = pytest.mark.job

T = 1767268800000  # 2026-01-01T12:00:00Z, a minute boundary
S, M = 1000, 60_000


def ev(kind, sub, arm, t, campaign="c1", **extra):
    e = {f: None for f in avro_schema.field_names("EmailEvent")}
    e.update(event_id=f"{kind}-{sub}-{t}", provider="tracker", event_type=kind, event_time=t,
             received_time=t, subscriber_id=sub, campaign_id=campaign, ab_test_id="t1",
             arm=arm, suspected_bot=False, attributes={})
    e.update(extra)
    return e


EVENTS = [
    *(ev("delivered", s, "A", T) for s in ("s1", "s2", "s3")),
    *(ev("delivered", s, "B", T) for s in ("s4", "s5")),
    ev("open", "s1", "A", T + 30 * S, machine_open=False),
    ev("open", "s2", "A", T + 40 * S, machine_open=True),
    ev("open", "s1", "A", T + 90 * S),
    ev("click", "s1", "A", T + 95 * S, url="u"),
    ev("click", "s3", "A", T + 100 * S, url="u", suspected_bot=True, bot_reason="click_burst"),
    ev("bounce", "s6", "A", T + 5 * S, bounce_class="hard"),
    ev("dropped", "s8", "A", T + 6 * S),
    ev("complaint", "s2", "A", T + 200 * S),
    ev("open", "s4", "B", T + 70 * S),
    ev("open", "s5", "B", T + 75 * S, suspected_bot=True, bot_reason="ua_scanner"),
    ev("bounce", "s7", "B", T + 5 * S, bounce_class="soft"),
    ev("deferred", "s9", "B", T + 7 * S),
    ev("unsubscribe", "s5", "B", T + 210 * S),
    ev("delivered", "s10", "B", T - 30 * M),           # arrives last, 30 min late
    ev("open", "s11", "A", T, campaign=None),           # no campaign: not a campaign metric
]
CONVERSIONS = [
    {"order_id": "o1", "subscriber_id": "s1", "campaign_id": "c1", "ab_test_id": "t1",
     "arm": "A", "value": 50.0, "currency": "EUR", "event_time": T + 300 * S},
    {"order_id": "o1", "subscriber_id": "s1", "campaign_id": "c1", "ab_test_id": "t1",
     "arm": "A", "value": 50.0, "currency": "EUR", "event_time": T + 300 * S},  # resent
    {"order_id": "o2", "subscriber_id": "s4", "campaign_id": "c1", "ab_test_id": "t1",
     "arm": "B", "value": 20.0, "currency": "EUR", "event_time": T + 400 * S},
    {"order_id": "o3", "subscriber_id": "s9", "campaign_id": "c2", "ab_test_id": None,
     "arm": None, "value": 10.0, "currency": "EUR", "event_time": T + 400 * S},
]


def _file_table(t_env, tmp_path, name, columns, rows):
    path = tmp_path / f"{name}.json"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    t_env.execute_sql(f"CREATE TEMPORARY TABLE {name} ({columns}) WITH ("
                      f"'connector' = 'filesystem', 'path' = '{path}', 'format' = 'json')")
    return name


def test_metrics_scenario(t_env, job_config, tmp_path):
    events = _file_table(t_env, tmp_path, "clean_in", tables.event_time_columns(job_config),
                         EVENTS)
    conversions = _file_table(t_env, tmp_path, "conv_in",
                              avro_schema.column_ddl("Conversion"), CONVERSIONS)
    out = metrics.build(t_env, job_config, events, conversions)
    names = out.metrics.get_schema().get_field_names()
    assert names == avro_schema.field_names("CampaignMetrics")
    rows = {tuple(r[:5]): dict(zip(names[5:], r[5:], strict=True))
            for r in final_rows(out.metrics)}

    def counts(row):
        return {k: v for k, v in row.items() if not k.endswith("_rate")}

    zero = dict.fromkeys(names[5:17], 0) | {"conversion_value": 0.0}
    assert counts(rows[("c1", "t1", "A", "total", 0)]) == zero | {
        "delivered": 3, "dropped": 1, "bounces_hard": 1, "complaints": 1,
        "unique_human_opens": 1, "unique_machine_opens": 1, "unique_clicks": 1,
        "bot_clicks": 1, "conversions": 1, "conversion_value": 50.0}
    assert counts(rows[("c1", "t1", "B", "total", 0)]) == zero | {
        "delivered": 3, "deferred": 1, "bounces_soft": 1, "unsubscribes": 1,
        "unique_human_opens": 1, "conversions": 1, "conversion_value": 20.0}
    a = rows[("c1", "t1", "A", "total", 0)]
    assert (a["open_rate"], a["click_rate"], a["bounce_rate"], a["unsubscribe_rate"]) == (
        pytest.approx(1 / 3), pytest.approx(1 / 3), pytest.approx(1 / 3), 0.0)
    c2 = rows[("c2", "", "", "total", 0)]
    assert (c2["conversions"], c2["conversion_value"], c2["open_rate"]) == (1, 10.0, None)

    assert counts(rows[("c1", "t1", "A", "minute", T)]) == zero | {
        "delivered": 3, "dropped": 1, "bounces_hard": 1, "unique_human_opens": 1,
        "unique_machine_opens": 1}
    assert counts(rows[("c1", "t1", "A", "minute", T + M)]) == zero | {
        "unique_human_opens": 1, "unique_clicks": 1, "bot_clicks": 1}
    assert counts(rows[("c1", "t1", "B", "minute", T - 30 * M)]) == zero | {"delivered": 1}
    # c1/A: minutes T, T+1, T+3, T+5 + total; c1/B: T-30, T, T+1, T+3, T+6 + total;
    # c2: minute T+6 + total
    assert len(rows) == 13
    assert counts(rows[("c2", "", "", "minute", T + 6 * M)]) == zero | {
        "conversions": 1, "conversion_value": 10.0}
