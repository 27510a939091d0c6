"""The clean job on the MiniCluster: exact output for a scenario with duplicates (same id
and new id), shuffled order, events late within and beyond the horizon, and bot clicks."""

from __future__ import annotations

import copy
import json

import pytest

from jobs import avro_schema, clean, tables
from tests.job.conftest import final_rows

pytestmark = pytest.mark.job

T = 1767268800000  # 2026-01-01T12:00:00Z
S, H = 1000, 3600 * 1000


def event(event_id, event_type, t, message="m1", subscriber="s1", url=None, **extra):
    base = {f: None for f in avro_schema.field_names("EmailEvent")}
    base.update(event_id=event_id, provider="sendgrid", event_type=event_type, event_time=t,
                received_time=t + 5 * S, message_id=message, subscriber_id=subscriber,
                campaign_id="c1", url=url, suspected_bot=False, attributes={})
    base.update(extra)
    return base


SCENARIO = [  # arrival order
    event("d1", "delivered", T),
    event("o1", "open", T + 60 * S),
    event("c-scan", "click", T + 3 * S, url="https://x/a"),         # 3 s after delivery
    event("d1", "delivered", T),                                     # same id again
    event("o1-retry", "open", T + 60 * S),                           # new id, same content
    # new ids, and contents that differ only in where one field ends and the next begins,
    # or in NULL against '': four distinct events (the content key is a digest)
    event("o8", "open", T + 5 * S, message="m8", subscriber="8s"),
    event("o88", "open", T + 5 * S, message="m88", subscriber="s"),
    event("u-null", "open", T + 6 * S, message="m9", subscriber="s9"),
    event("u-empty", "open", T + 6 * S, message="m9", subscriber="s9", url=""),
    event("d2", "delivered", T, message="m2", subscriber="s2"),
    event("b3", "click", T + 102 * S, message="m2", subscriber="s2", url="https://x/c"),
    event("b1", "click", T + 100 * S, message="m2", subscriber="s2", url="https://x/a"),
    event("b2", "click", T + 101 * S, message="m2", subscriber="s2", url="https://x/b"),
    event("c-human", "click", T + 600 * S, url="https://x/a"),
    event("ua", "click", T + 700 * S, url="https://x/b", suspected_bot=True,
          bot_reason="ua_scanner"),
    # the click arrives before its delivery, both ahead of the watermark (T+690s) and
    # within the out-of-orderness: still a scanner
    event("c-first", "click", T + 804 * S, message="m7", subscriber="s7", url="https://x/a"),
    event("d7", "delivered", T + 800 * S, message="m7", subscriber="s7"),
    event("d6", "delivered", T + H, message="m6", subscriber="s6"),
    event("o3", "open", T + 3 * H, message="m3", subscriber="s3"),  # watermark -> T+3h-10s
    # behind the watermark (not beyond the horizon): judged and kept, never dropped
    event("c-late", "click", T + H + 2 * S, message="m6", subscriber="s6", url="https://x/a"),
    event("c-late-human", "click", T + H + 60 * S, message="m6", subscriber="s6",
          url="https://x/b"),
    # received 47 h after it happened: late, but within the 48 h horizon
    event("early", "open", T - 44 * H, message="m4", subscriber="s4", received_time=T + 3 * H),
    # received 49 h after it happened: beyond the horizon (twice: not deduplicated)
    event("old", "open", T - 46 * H, message="m5", subscriber="s5", received_time=T + 3 * H),
    event("old", "open", T - 46 * H, message="m5", subscriber="s5", received_time=T + 3 * H),
]


def _source(t_env, job_config, tmp_path):
    path = tmp_path / "events.json"
    path.write_text("\n".join(json.dumps(e) for e in SCENARIO) + "\n")
    t_env.execute_sql(f"""CREATE TEMPORARY TABLE events_in (
        {tables.event_time_columns(job_config)}
    ) WITH ('connector' = 'filesystem', 'path' = '{path}', 'format' = 'json')""")
    return "events_in"


def test_clean_scenario(t_env, job_config, tmp_path):
    # Verdicts as an event-time run gives them: a hold that runs out (processing time)
    # on a slow machine would send a click out before its delivery. The hold itself is
    # unit-tested (tests/unit/test_click_bots.py) and runs in the e2e tests.
    job_config = copy.deepcopy(job_config)
    job_config["clean"]["bot_click_max_hold_ms"] = 600_000
    out = clean.build(t_env, job_config, _source(t_env, job_config, tmp_path))
    names = out.clean.get_schema().get_field_names()
    output = final_rows(out.clean)
    rows = {r[0]: dict(zip(names, r, strict=True)) for r in output}
    assert sorted(r[0] for r in output) == sorted(
        ["d1", "o1", "c-scan", "d2", "b1", "b2", "b3", "c-human", "ua", "o3", "early",
         "c-first", "d7", "d6", "c-late", "c-late-human", "o8", "o88", "u-null", "u-empty"])
    flags = {eid: (r["suspected_bot"], r["bot_reason"]) for eid, r in rows.items()
             if r["event_type"] == "click"}
    assert flags == {
        "c-scan": (True, "click_soon_after_delivery"),
        "b1": (True, "click_burst"), "b2": (True, "click_burst"), "b3": (True, "click_burst"),
        "c-human": (False, None),
        "ua": (True, "ua_scanner"),
        "c-first": (True, "click_soon_after_delivery"),
        "c-late": (True, "click_soon_after_delivery"), "c-late-human": (False, None),
    }

    late = final_rows(out.late)
    assert [r[0] for r in late] == ["old", "old"]
    reason = dict(zip(out.late.get_schema().get_field_names(), late[0], strict=True))[
        "attributes"]["late_reason"]
    assert reason == "received 2940 min after the event; the horizon is 48 h"
