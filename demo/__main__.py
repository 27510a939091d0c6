"""python -m demo — start the local stack, run the normalize, clean and campaign metrics
jobs, send a small SendGrid scenario through them and print what came out of Kafka and
PostgreSQL, compared with the scenario's known answer."""

from __future__ import annotations

import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import settings
import stack.__main__ as stack_cli
from demo.scenario import (
    EXPECTED_CLEAN_EVENTS,
    EXPECTED_DEAD_LETTER_CODES,
    EXPECTED_EVENT_COUNTS,
    EXPECTED_TOTALS,
    sendgrid_batches,
)
from devtools import flink_rest, kafka_io, postgres_io
from jobs import clean, metrics, normalize
from jobs.__main__ import submit
from stack.errors import StackError

JOBS = {"normalize": normalize.JOB_NAME, "clean": clean.JOB_NAME, "metrics": metrics.JOB_NAME}


def ensure_jobs(config: dict) -> dict[str, str]:
    """The running job id per job, submitting (in parallel) those not running yet."""
    running = {job: flink_rest.running_jobs(config, name) for job, name in JOBS.items()}
    missing = [job for job, ids in running.items() if not ids]
    with ThreadPoolExecutor(max(len(missing), 1)) as pool:
        submitted = dict(zip(missing, pool.map(lambda job: submit(job, config), missing),
                             strict=True))
    ids = {job: (running[job] or [submitted.get(job)])[0] for job in JOBS}
    for job, job_id in ids.items():
        print(f"{job:<10} job {job_id} ({'submitted' if job in submitted else 'running'})")
        flink_rest.wait_running(config, job_id)
    return ids


def main() -> int:
    config = settings.load()
    try:
        stack_cli.start(config)
        ensure_jobs(config)
    except (StackError, RuntimeError, TimeoutError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    tag = time.strftime("%H%M%S")
    bootstrap = config["kafka"]["bootstrap_servers"]
    batches = sendgrid_batches(tag)
    raw_start = kafka_io.end_offsets(bootstrap, settings.topic(config, "raw"))
    kafka_io.produce_raw(bootstrap, settings.topic(config, "raw"), "sendgrid", batches)
    print(f"\nproduced {len(batches)} SendGrid webhook bodies to "
          f"{settings.topic(config, 'raw')} (campaign ids end in -{tag})")

    def ours(record: dict) -> bool:
        return (record["campaign_id"] or "").endswith(tag)

    def campaign(name: str) -> str:
        return name.removesuffix(f"-{tag}")

    cols = list(EXPECTED_TOTALS["welcome"])
    totals_sql = (f"SELECT campaign_id, {', '.join(cols)} FROM campaign_metrics "
                  "WHERE campaign_id LIKE %s AND granularity = 'total' ORDER BY 1")
    rows = postgres_io.wait_for_rows(
        config, totals_sql, (f"%-{tag}",), timeout_s=120,
        until=lambda r: {campaign(c): dict(zip(cols, v, strict=True))
                         for c, *v in r} == EXPECTED_TOTALS)
    totals = {campaign(c): dict(zip(cols, v, strict=True)) for c, *v in rows}
    events = [e for e in kafka_io.read_avro(
        bootstrap, settings.topic(config, "events"), "EmailEvent", timeout_s=30,
        until=lambda r: sum(map(ours, r)) >= sum(EXPECTED_EVENT_COUNTS.values()))
        if ours(e)]
    cleaned = [e for e in kafka_io.read_avro(
        bootstrap, settings.topic(config, "clean"), "EmailEvent", timeout_s=30,
        until=lambda r: sum(map(ours, r)) >= EXPECTED_CLEAN_EVENTS) if ours(e)]
    dead = [d for d in kafka_io.read_avro(
        bootstrap, settings.topic(config, "dlq"), "DeadLetter",
        until=lambda r: False, timeout_s=3)
        if d["source_offset"] >= raw_start.get(d["source_partition"], 0)]

    print(f"\n{settings.topic(config, 'events')}: {len(events)} events (Avro) from the "
          "normalize job")
    print(f"  {'event_type':<12} {'subscriber':<10} {'machine_open':<12} event_id")
    for e in sorted(events, key=lambda e: (e["event_time"], e["event_type"])):
        print(f"  {e['event_type']:<12} {e['subscriber_id']:<10} "
              f"{e['machine_open']!s:<12} {e['event_id'][:40]}")
    print(f"\n{settings.topic(config, 'dlq')}: {len(dead)} dead letter(s)")
    for d in dead:
        print(f"  {d['error_code']:<20} {d['error_message'][:70]}")
    print(f"\n{settings.topic(config, 'clean')}: {len(cleaned)} events after the clean job "
          f"({len(events) - len(cleaned)} duplicate(s) removed)")
    print("\nPostgreSQL campaign_metrics (granularity 'total'):")
    print(f"  {'campaign':<12} " + " ".join(f"{c:>9.9}" for c in cols))
    for name, values in totals.items():
        print(f"  {name:<12} " + " ".join(f"{values[c]:>9}" for c in cols))

    found = Counter((campaign(e["campaign_id"]), e["event_type"]) for e in events)
    ok = (found == Counter(EXPECTED_EVENT_COUNTS) and len(cleaned) == EXPECTED_CLEAN_EVENTS
          and totals == EXPECTED_TOTALS
          and sorted(d["error_code"] for d in dead) == EXPECTED_DEAD_LETTER_CODES)
    print(f"\nresult: {'as expected' if ok else 'NOT as expected'} ({len(events)} events, "
          f"{len(cleaned)} clean, {len(dead)} dead letters, metrics "
          f"{'match' if totals == EXPECTED_TOTALS else 'differ'})")
    print("The stack and the jobs keep running: python -m jobs list | python -m stack stop")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
