"""Raw SendGrid webhooks -> normalize -> clean -> campaign metrics on the local Flink
cluster, with the clean and metrics jobs stopped with a savepoint halfway and resumed:
the PostgreSQL rows must equal the scenario's ground truth (no loss, no double count
across the restart) and email.late must hold exactly the too-late event."""

from __future__ import annotations

import contextlib
import json
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

import settings
from devtools import flink_rest, kafka_io, postgres_io
from jobs.__main__ import submit

pytestmark = pytest.mark.e2e

# SendGrid timestamps are epoch seconds. Lateness is judged against the time the gateway
# received the webhook (now), so the scenario happens an hour ago, on a minute boundary.
T = int(time.time()) // 60 * 60 - 3600


def sg(kind, sub, arm, offset_s, tag, **extra):
    event = {"email": f"{sub}@example.org", "timestamp": T + offset_s, "event": kind,
             "sg_message_id": f"m-{sub}.filter1", "subscriber_id": sub,
             "campaign_id": f"c-{tag}", "ab_test_id": "t1", "arm": arm}
    event.update(extra)
    return event


def body(events):
    return ("[" + ",\r\n".join(json.dumps(e) for e in events) + "]").encode()


def halves(tag):
    delivered = [sg("delivered", s, arm, 0, tag) for s, arm in
                 [("a1", "A"), ("a2", "A"), ("a3", "A"), ("a4", "A"),
                  ("b1", "B"), ("b2", "B"), ("b3", "B"), ("b4", "B")]]
    a1_open = sg("open", "a1", "A", 60, tag, sg_machine_open=False)
    first = [
        body(delivered),
        body([a1_open, sg("open", "a2", "A", 61, tag, sg_machine_open=True),
              sg("open", "b1", "B", 90, tag, sg_machine_open=False),
              sg("click", "b1", "B", 3, tag, url="https://shop.example/x"),
              sg("bounce", "b4", "B", 10, tag, type="bounce")]),
    ]
    second = [
        body([a1_open]),  # retried batch after the restart: must still be a duplicate
        body([sg("open", "a3", "A", 120, tag, sg_machine_open=False),
              sg("click", "a1", "A", 300, tag, url="https://shop.example/y"),
              sg("unsubscribe", "b2", "B", 400, tag), sg("spamreport", "a4", "A", 500, tag),
              sg("delivered", "b5", "B", -3600, tag)]),      # late, within the horizon
        body([sg("open", "a1", "A", -49 * 3600, tag)]),      # received > 48 h after
    ]
    return first, second


ZERO = {"delivered": 0, "deferred": 0, "dropped": 0, "bounces_hard": 0, "bounces_soft": 0,
        "complaints": 0, "unsubscribes": 0, "unique_human_opens": 0,
        "unique_machine_opens": 0, "unique_clicks": 0, "bot_clicks": 0, "conversions": 0}
EXPECTED_TOTALS = {
    "A": ZERO | {"delivered": 4, "unique_human_opens": 2, "unique_machine_opens": 1,
                 "unique_clicks": 1, "complaints": 1},
    "B": ZERO | {"delivered": 5, "bounces_hard": 1, "unique_human_opens": 1,
                 "bot_clicks": 1, "unsubscribes": 1},
}


def totals(config, tag):
    cols = list(ZERO)
    rows = postgres_io.query(
        config, f"SELECT arm, {', '.join(cols)} FROM campaign_metrics "
                "WHERE campaign_id = %s AND granularity = 'total'", (f"c-{tag}",))
    return {r[0]: dict(zip(cols, r[1:], strict=True)) for r in rows}


def test_pipeline_survives_stop_with_savepoint_and_counts_exactly(e2e_config):
    config, path, tag = e2e_config
    bootstrap = config["kafka"]["bootstrap_servers"]
    raw = settings.topic(config, "raw")
    first, second = halves(tag)
    with ThreadPoolExecutor(3) as pool:
        ids = dict(zip(["normalize", "clean", "metrics"],
                       pool.map(lambda job: submit(job, config, path),
                                ["normalize", "clean", "metrics"]), strict=True))
    try:
        for job_id in ids.values():
            flink_rest.wait_running(config, job_id)
        # Deliveries first, as in life: sent together, b1's scanner click could be judged
        # before its delivery arrived (see tests/e2e/test_abtest_e2e.py).
        total = ("SELECT SUM(delivered), SUM(unique_human_opens) FROM campaign_metrics "
                 "WHERE campaign_id = %s AND granularity = 'total'")
        kafka_io.produce_raw(bootstrap, raw, "sendgrid", first[:1])
        rows = postgres_io.wait_for_rows(config, total, (f"c-{tag}",),
                                         until=lambda r: r[0][0] == 8)
        assert rows[0][0] == 8
        kafka_io.produce_raw(bootstrap, raw, "sendgrid", first[1:])
        # a1's open is in the dedup state before the savepoint, so its retry tests the restore
        rows = postgres_io.wait_for_rows(config, total, (f"c-{tag}",),
                                         until=lambda r: r[0][1] == 2)
        assert rows[0] == (8, 2)

        savepoints = {job: flink_rest.stop_with_savepoint(config, ids[job])
                      for job in ("clean", "metrics")}
        kafka_io.produce_raw(bootstrap, raw, "sendgrid", second[:2])
        for job in ("clean", "metrics"):
            ids[job] = submit(job, config, path, savepoint=savepoints[job])
            flink_rest.wait_running(config, ids[job])
        kafka_io.produce_raw(bootstrap, raw, "sendgrid", second[2:])

        late = kafka_io.read_avro(bootstrap, settings.topic(config, "late"), "EmailEvent",
                                  until=lambda r: len(r) >= 1, timeout_s=90)
        final = {}
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and final != EXPECTED_TOTALS:
            final = totals(config, tag)
            time.sleep(1)
        assert final == EXPECTED_TOTALS

        late = kafka_io.read_avro(bootstrap, settings.topic(config, "late"), "EmailEvent",
                                  until=lambda r: False, timeout_s=3)
        assert [(e["subscriber_id"], e["event_type"], e["event_time"]) for e in late] == [
            ("a1", "open", (T - 49 * 3600) * 1000)]
        assert "the horizon is 48 h" in late[0]["attributes"]["late_reason"]
        # The open retried after the restart was recognized from the restored dedup state:
        # the clean stream holds it once (unique counts in the totals would hide a repeat).
        cleaned = kafka_io.read_avro(bootstrap, settings.topic(config, "clean"), "EmailEvent",
                                     until=lambda r: False, timeout_s=3)
        assert [(e["subscriber_id"], e["event_time"]) for e in cleaned
                if e["event_type"] == "open"].count(("a1", (T + 60) * 1000)) == 1
        assert len(cleaned) == 18  # 9 delivered, 4 opens, 2 clicks, bounce, unsub., complaint
        minute_b = postgres_io.query(
            config, "SELECT delivered FROM campaign_metrics WHERE campaign_id = %s AND "
                    "arm = 'B' AND granularity = 'minute' AND window_start = %s",
            (f"c-{tag}", (T - 3600) * 1000))
        assert minute_b == [(1,)]
    finally:
        for job_id in ids.values():
            with contextlib.suppress(OSError):
                flink_rest.cancel(config, job_id)
