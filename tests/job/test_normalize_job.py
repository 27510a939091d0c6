"""The normalize job on the MiniCluster with the SendGrid scenario: exact events, dead
letters and counts."""

from __future__ import annotations

from collections import Counter

import pytest

from demo.scenario import sendgrid_batches
from jobs import normalize
from tests.job.conftest import final_rows

pytestmark = pytest.mark.job


def _raw_table(t_env, records: list[tuple[str, bytes]]):
    from pyflink.table import DataTypes

    schema = DataTypes.ROW([
        DataTypes.FIELD("request_id", DataTypes.BYTES()),
        DataTypes.FIELD("body", DataTypes.BYTES()),
        DataTypes.FIELD("headers", DataTypes.MAP(DataTypes.STRING(), DataTypes.BYTES())),
        DataTypes.FIELD("src_topic", DataTypes.STRING()),
        DataTypes.FIELD("src_partition", DataTypes.INT()),
        DataTypes.FIELD("src_offset", DataTypes.BIGINT()),
    ])
    # PyFlink's BYTES accepts bytearray, not bytes.
    rows = [(bytearray(f"req-{i}".encode()), bytearray(body),
             {"provider": bytearray(provider.encode()),
              "received-at": bytearray(b"1767268900000")},
             "email.raw", 0, i)
            for i, (provider, body) in enumerate(records)]
    t_env.create_temporary_view("raw_in", t_env.from_elements(rows, schema))
    return "raw_in"


def test_sendgrid_scenario(t_env, job_config):
    batches = sendgrid_batches("t", t0=1767268800)
    source = _raw_table(t_env, [("sendgrid", b) for b in batches] + [("nosuchesp", b"[]")])
    out = normalize.build(t_env, job_config, source)

    events = [dict(zip(out.events.get_schema().get_field_names(), row, strict=True))
              for row in final_rows(out.events)]
    assert Counter((e["campaign_id"], e["event_type"]) for e in events) == Counter({
        ("spring-sale-t", "delivered"): 4, ("spring-sale-t", "open"): 3,
        ("spring-sale-t", "click"): 1, ("welcome-t", "delivered"): 2,
        ("welcome-t", "bounce"): 1, ("welcome-t", "unsubscribe"): 1,
        ("welcome-t", "complaint"): 1})
    assert all(e["received_time"] == 1767268900000 for e in events)
    bounce = next(e for e in events if e["event_type"] == "bounce")
    assert (bounce["bounce_class"], bounce["subscriber_id"]) == ("hard", "sub-7")
    # The retried batch repeats the open with the same event id (dedup happens later).
    opens = Counter(e["event_id"] for e in events if e["event_type"] == "open")
    assert sorted(opens.values()) == [1, 2]

    dead = {row[1]: row for row in final_rows(out.dead_letters)}
    assert sorted(dead) == ["invalid_json", "unknown_event_type", "unknown_provider"]
    key, _, message, topic, partition, offset, provider, failed_time, raw = dead["invalid_json"]
    assert (key, topic, partition, offset, provider, raw) == (
        b"req-3", "email.raw", 0, 3, "sendgrid", batches[3])
    assert message and failed_time > 1767268900000
    assert dead["unknown_provider"][6] == "nosuchesp"

    assert sorted(final_rows(out.counts)) == [
        ("spring-sale-t", "click", 1), ("spring-sale-t", "delivered", 4),
        ("spring-sale-t", "open", 3), ("welcome-t", "bounce", 1),
        ("welcome-t", "complaint", 1), ("welcome-t", "delivered", 2),
        ("welcome-t", "unsubscribe", 1)]
