"""Raw SendGrid webhooks -> normalize -> clean -> rules job on the local Flink cluster ->
journey.triggers (Kafka) and PostgreSQL journey_triggers.

Then the rules job is redeployed (stop with savepoint, resubmit) while the same raw input
is sent again: only the new events trigger. Finally a second rules job reads the whole
clean topic again from the start (a full replay): it emits the same trigger ids, so the
topic holds no new id and PostgreSQL no new row."""

from __future__ import annotations

import contextlib
import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

import settings
from devtools import flink_rest, kafka_io, postgres_io
from jobs.__main__ import submit
from jobs.rules import deploy
from jobs.rules.job import job_name
from stack.postgres import apply_schema
from tests.e2e.test_subscriber_e2e import tick_subscribers

pytestmark = pytest.mark.e2e

# The clean job holds each click until its watermark passes click time + burst window, or
# for at most clean.bot_click_max_hold_ms, so clicks reach the clean topic after later
# non-click events. The rules job tolerates that
# (rules.out_of_orderness_s), but with sparse test traffic one event far ahead would make
# the held clicks late. So: the scenario spans < 60 s; an event at T + RELEASE_S moves the
# clean job's watermark past the clicks while the rules' watermark (RELEASE_S - 60 s) stays
# before them; once the clicks are in the clean topic, an event far ahead flushes the rules.
OUT_OF_ORDER_S = 60
RELEASE_S = 50

# Lateness is judged against the time the gateway received the webhook (now), so the
# first part of the scenario happens an hour ago. SendGrid timestamps are epoch seconds.
T = int(time.time()) - 3600


def sg(kind, sub, at_s, tag, **extra):
    event = {"email": f"{sub}@example.org", "timestamp": at_s, "event": kind,
             "sg_message_id": f"m-{sub}-{at_s}.filter1",
             "sg_event_id": f"{tag}-{sub}-{kind}-{at_s}",
             "subscriber_id": f"{tag}-{sub}", "campaign_id": f"c-{tag}"}
    event.update(extra)
    return event


def body(events):
    return json.dumps(events).encode()


def first_part(tag):
    """Events from T + 5 s to T + 30 s (after T + RELEASE_S - OUT_OF_ORDER_S)."""
    product = "https://shop.example/products/"
    return [
        body([sg("open", "s1", T + 5, tag, sg_machine_open=False),
              sg("click", "s1", T + 10, tag, url=product + "p1"),
              sg("click", "s1", T + 20, tag, url=product + "p2"),
              sg("click", "s1", T + 30, tag, url=product + "p3")]),
        body([sg("bounce", "s2", T + 5, tag, type="blocked"),
              sg("bounce", "s2", T + 25, tag, type="blocked"),
              sg("bounce", "s4", T + 5, tag, type="blocked")]),  # one soft bounce: no trigger
    ]


def flush(config, tag, at_s):
    """Events of other subscribers, one on each partition of the clean topic, that move
    event time (the watermark) past the scenario, as later traffic would. (A partition
    without them would hold the watermark back until it counts as idle, 30 s.)"""
    return body([sg("delivered", "tick", at_s, tag, subscriber_id=sub)
                 for sub in tick_subscribers(config, tag)])


def pg_triggers(config, tag):
    return postgres_io.query(
        config, "SELECT trigger_id, rule_id, subscriber_id, action, created_at "
                "FROM journey_triggers WHERE subscriber_id LIKE %s ORDER BY trigger_id",
        (f"{tag}-%",))


def clean_events(config, until):
    return kafka_io.read_avro(config["kafka"]["bootstrap_servers"],
                              settings.topic(config, "clean"), "EmailEvent", until=until,
                              timeout_s=120)


def count(events, event_type):
    return sum(e["event_type"] == event_type for e in events)


def kafka_triggers(config, until, timeout_s=120.0):
    return kafka_io.read_avro(config["kafka"]["bootstrap_servers"],
                              settings.topic(config, "triggers"), "JourneyTrigger",
                              until=until, timeout_s=timeout_s)


def test_rules_job_from_raw_webhooks_to_triggers_with_redeploy_and_replay(e2e_config,
                                                                          tmp_path):
    _, path, tag = e2e_config
    override = yaml.safe_load(Path(path).read_text())
    override["rules"] = {"out_of_orderness_s": OUT_OF_ORDER_S}
    Path(path).write_text(yaml.safe_dump(override))
    config = settings.load(path)
    apply_schema(config)  # journey_triggers may be newer than the running stack
    bootstrap = config["kafka"]["bootstrap_servers"]
    raw = settings.topic(config, "raw")
    ids: dict[str, str] = {}
    try:
        with ThreadPoolExecutor(3) as pool:
            ids.update(zip(["normalize", "clean", "rules"],
                           pool.map(lambda job: submit(job, config, path),
                                    ["normalize", "clean", "rules"]), strict=True))
        for job_id in ids.values():
            flink_rest.wait_running(config, job_id)
        first = first_part(tag)
        kafka_io.produce_raw(bootstrap, raw, "sendgrid", [*first, flush(config, tag,
                                                                          T + RELEASE_S)])
        clean = clean_events(config, until=lambda r: count(r, "click") >= 3
                             and count(r, "bounce") >= 3)
        assert [e["suspected_bot"] for e in clean if e["event_type"] == "click"] == [False] * 3
        kafka_io.produce_raw(bootstrap, raw, "sendgrid", [flush(config, tag, T + 3000)])

        expected = {("product_click_push", f"{tag}-s1", "push_offer"),
                    ("high_intent_product_clicks", f"{tag}-s1", "accelerate"),
                    ("soft_bounce_verify", f"{tag}-s2", "verify_address")}
        rows = postgres_io.wait_for_rows(
            config, "SELECT rule_id, subscriber_id, action FROM journey_triggers "
                    "WHERE subscriber_id LIKE %s", (f"{tag}-%",),
            until=lambda r: len(r) >= 3, timeout_s=180)
        assert set(rows) == expected and len(rows) == 3
        records = kafka_triggers(config, until=lambda r: len(r) >= 3)
        assert {(r["rule_id"], r["subscriber_id"], r["action"]) for r in records} == expected
        assert all(r["_key"].decode() == r["trigger_id"] for r in records)
        before = pg_triggers(config, tag)
        assert {r[0] for r in before} == {r["trigger_id"] for r in records}
        push = next(r for r in records if r["rule_id"] == "product_click_push")
        assert json.loads(push["payload"])["product_id"] == "p1"
        assert push["event_time"] == (T + 10) * 1000

        # Redeploy from a savepoint; meanwhile the same raw input arrives again (a
        # webhook retry storm) and one new pile of soft bounces.
        deployed = deploy.deploy(config, path)
        assert deployed.stopped == ids["rules"] and deployed.savepoint
        ids["rules"] = deployed.job_id
        flink_rest.wait_running(config, deployed.job_id)
        assert flink_rest.running_jobs(config, job_name(config)) == [deployed.job_id]
        now = int(time.time())
        kafka_io.produce_raw(bootstrap, raw, "sendgrid", [
            *first,
            body([sg("bounce", "s3", now - 120, tag, type="blocked"),
                  sg("bounce", "s3", now - 110, tag, type="blocked")])])
        # The flush goes only once the new bounces are in the clean topic: sent together,
        # it could overtake them (raw records are spread over partitions that normalize
        # reads in parallel), and the rules' watermark (now - 60 s) would make them late.
        clean_events(config, until=lambda r: count(r, "bounce") >= 5)
        kafka_io.produce_raw(bootstrap, raw, "sendgrid", [flush(config, tag, now)])
        rows = postgres_io.wait_for_rows(
            config, "SELECT rule_id, subscriber_id FROM journey_triggers "
                    "WHERE subscriber_id LIKE %s", (f"{tag}-%",),
            until=lambda r: len(r) >= 4, timeout_s=180)
        assert sorted(rows) == sorted([(rule, sub) for rule, sub, _ in expected]
                                      + [("soft_bounce_verify", f"{tag}-s3")])
        records = kafka_triggers(config, until=lambda r: len(r) >= 4)
        time.sleep(5)  # anything the resent input wrongly triggered would show up now
        records = kafka_triggers(config, until=lambda r: False, timeout_s=3)
        assert len(records) == 4  # the resent input triggered nothing again
        after_deploy = pg_triggers(config, tag)

        # Full replay: a second rules job with its own consumer group reads the clean
        # topic from the beginning and writes to the same topic and table.
        replay_path = tmp_path / "replay.yaml"
        override["kafka"]["group_id_prefix"] += "-replay"
        replay_path.write_text(yaml.safe_dump(override))
        replay_config = settings.load(replay_path)
        ids["replay"] = submit("rules", replay_config, str(replay_path))
        flink_rest.wait_running(config, ids["replay"])
        records = kafka_triggers(config, until=lambda r: len(r) >= 8, timeout_s=180)
        assert len(records) == 8, records  # every trigger emitted again ...
        assert len({r["_key"] for r in records}) == 4  # ... with the same ids
        assert pg_triggers(config, tag) == after_deploy  # same rows, same created_at
        assert [r[:4] for r in after_deploy if r[0] in {b[0] for b in before}] == \
            [r[:4] for r in before]
    finally:
        for job_id in ids.values():
            with contextlib.suppress(OSError):
                flink_rest.cancel(config, job_id)
