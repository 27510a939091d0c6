"""Raw SendGrid batches in email.raw -> the normalize job on the local Flink cluster ->
Avro events in email.events, dead letters in email.dlq, counts in PostgreSQL."""

from __future__ import annotations

from collections import Counter

import pytest

import settings
from demo.scenario import sendgrid_batches
from devtools import flink_rest, kafka_io, postgres_io
from jobs.__main__ import submit

pytestmark = pytest.mark.e2e

EXPECTED = {
    ("spring-sale", "delivered"): 4,
    ("spring-sale", "open"): 3,
    ("spring-sale", "click"): 1,
    ("welcome", "delivered"): 2,
    ("welcome", "bounce"): 1,
    ("welcome", "unsubscribe"): 1,
    ("welcome", "complaint"): 1,
}


def test_sendgrid_batches_become_avro_events_dead_letters_and_postgres_counts(e2e_config):
    config, config_path, tag = e2e_config
    bootstrap = config["kafka"]["bootstrap_servers"]
    job_id = submit("normalize", config, config_path)
    try:
        flink_rest.wait_running(config, job_id)
        batches = sendgrid_batches(tag)
        assert kafka_io.produce_raw(bootstrap, settings.topic(config, "raw"), "sendgrid",
                                    batches) == 4

        def campaign(event):
            return event["campaign_id"].removesuffix(f"-{tag}")

        rows = postgres_io.wait_for_rows(
            config, "SELECT campaign_id, event_type, events FROM event_type_counts "
                    "WHERE campaign_id LIKE %s", (f"%-{tag}",),
            until=lambda rows: len(rows) == len(EXPECTED)
            and sum(r[2] for r in rows) == sum(EXPECTED.values()))
        assert {(c.removesuffix(f"-{tag}"), t): n for c, t, n in rows} == EXPECTED

        events = kafka_io.read_avro(bootstrap, settings.topic(config, "events"), "EmailEvent",
                                    until=lambda r: len(r) > sum(EXPECTED.values()),
                                    timeout_s=5)
        assert Counter((campaign(e), e["event_type"]) for e in events) == Counter(EXPECTED)
        assert all(e["_key"] == e["event_id"].encode() for e in events)
        opens = [e for e in events if e["event_type"] == "open"]
        assert sorted(e["machine_open"] for e in opens) == [False, False, True]
        # The address never leaves the normalize step; the domain does.
        assert not any("@" in str(v) for e in events for v in e.values())
        assert {e["recipient_domain"] for e in events} == {"example.net"}
        assert {e["subscriber_id"] for e in events if campaign(e) == "welcome"} == {
            "sub-5", "sub-6", "sub-7"}

        dead = kafka_io.read_avro(bootstrap, settings.topic(config, "dlq"), "DeadLetter",
                                  until=lambda r: len(r) >= 2, timeout_s=30)
        assert sorted(d["error_code"] for d in dead) == ["invalid_json", "unknown_event_type"]
        truncated = next(d for d in dead if d["error_code"] == "invalid_json")
        assert truncated["raw_value"] == batches[3]
        assert truncated["source_topic"] == settings.topic(config, "raw")
        assert truncated["provider"] == "sendgrid"
        assert b"teleported" in next(
            d for d in dead if d["error_code"] == "unknown_event_type")["raw_value"]
    finally:
        flink_rest.cancel(config, job_id)
