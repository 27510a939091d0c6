"""python -m demo — start the local stack, run the normalize job, send a small SendGrid
scenario through it and print what came out of Kafka and PostgreSQL."""

from __future__ import annotations

import sys
import time
from collections import Counter

import settings
import stack.__main__ as stack_cli
from demo.scenario import EXPECTED_DEAD_LETTER_CODES, EXPECTED_EVENT_COUNTS, sendgrid_batches
from devtools import flink_rest, kafka_io, postgres_io
from jobs import normalize
from jobs.__main__ import submit
from stack.errors import StackError


def main() -> int:
    config = settings.load()
    try:
        stack_cli.start(config)
    except StackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    running = flink_rest.running_jobs(config, normalize.JOB_NAME)
    if running:
        job_id = running[0]
        print(f"normalize job already running: {job_id}")
    else:
        job_id = submit("normalize", config)
        print(f"submitted the normalize job: {job_id}")
    flink_rest.wait_running(config, job_id)

    tag = time.strftime("%H%M%S")
    bootstrap = config["kafka"]["bootstrap_servers"]
    batches = sendgrid_batches(tag)
    raw_start = kafka_io.end_offsets(bootstrap, settings.topic(config, "raw"))
    kafka_io.produce_raw(bootstrap, settings.topic(config, "raw"), "sendgrid", batches)
    print(f"\nproduced {len(batches)} SendGrid webhook bodies to "
          f"{settings.topic(config, 'raw')} (campaign ids end in -{tag})")

    expected_total = sum(EXPECTED_EVENT_COUNTS.values())
    rows = postgres_io.wait_for_rows(
        config, "SELECT campaign_id, event_type, events FROM event_type_counts "
                "WHERE campaign_id LIKE %s ORDER BY 1, 2", (f"%-{tag}",),
        until=lambda r: sum(x[2] for x in r) >= expected_total, timeout_s=120)
    events = [e for e in kafka_io.read_avro(
        bootstrap, settings.topic(config, "events"), "EmailEvent",
        until=lambda r: sum(1 for e in r if (e["campaign_id"] or "").endswith(tag))
        >= expected_total, timeout_s=60)
        if (e["campaign_id"] or "").endswith(tag)]
    dead = [d for d in kafka_io.read_avro(
        bootstrap, settings.topic(config, "dlq"), "DeadLetter",
        until=lambda r: False, timeout_s=3)
        if d["source_offset"] >= raw_start.get(d["source_partition"], 0)]

    print(f"\n{settings.topic(config, 'events')}: {len(events)} events (Avro)")
    print(f"  {'event_type':<12} {'subscriber':<10} {'machine_open':<12} event_id")
    for e in sorted(events, key=lambda e: (e["event_time"], e["event_type"])):
        print(f"  {e['event_type']:<12} {e['subscriber_id']:<10} "
              f"{e['machine_open']!s:<12} {e['event_id'][:40]}")
    print(f"\n{settings.topic(config, 'dlq')}: {len(dead)} dead letter(s)")
    for d in dead:
        print(f"  {d['error_code']:<20} {d['error_message'][:70]}")
    print("\nPostgreSQL event_type_counts:")
    for campaign, event_type, count in rows:
        print(f"  {campaign:<24} {event_type:<12} {count}")

    found = Counter((e["campaign_id"].removesuffix(f"-{tag}"), e["event_type"])
                    for e in events)
    table = {(c.removesuffix(f"-{tag}"), t): n for c, t, n in rows}
    ok = (found == Counter(EXPECTED_EVENT_COUNTS) and table == EXPECTED_EVENT_COUNTS
          and sorted(d["error_code"] for d in dead) == EXPECTED_DEAD_LETTER_CODES)
    print(f"\nresult: {'as expected' if ok else 'NOT as expected'} "
          f"({len(events)} events, {sum(table.values())} counted in PostgreSQL)")
    print("The stack keeps running: python -m stack status | python -m stack stop")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
