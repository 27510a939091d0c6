"""Benchmark of the clean job on the local Flink cluster: throughput and dedup state size.

    python -m bench.clean_bench [--events 200000] [--duplicates 0.10]

Preloads N canonical events (Avro, as the normalize job writes them) into a topic of its
own, with the given share of duplicates (half with the same event id, half a retry under
a new id), then runs the clean job over it and reports events/s from the job reaching
RUNNING to the last clean record, and the checkpointed state size per million distinct
event ids. Needs the local stack (python -m stack start). Prints a JSON line last."""

from __future__ import annotations

import argparse
import io
import json
import random
import sys
import tempfile
import time
import uuid

import fastavro
import yaml

import settings
from bench import flink_probe
from devtools import flink_rest
from jobs import avro_schema
from jobs.__main__ import submit
from stack import kafka

TYPES = [("delivered", 50), ("open", 25), ("click", 5), ("deferred", 5), ("bounce", 3),
         ("unsubscribe", 1), ("complaint", 1), ("sent", 10)]


def bench_config(tag: str) -> tuple[dict, str]:
    base = settings.load()
    override = {"kafka": {"group_id_prefix": f"bench-{tag}", "topics": {
        logical: {"name": f"{base['kafka']['topics'][logical]['name']}.bench-{tag}"}
        for logical in ("events", "clean", "late")}}}
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as handle:
        yaml.safe_dump(override, handle)
    return settings.load(handle.name), handle.name


def generate(n: int, duplicate_share: float, seed: int = 7) -> tuple[list[dict], int]:
    """Events plus the number of distinct ones the clean job must output."""
    rng = random.Random(seed)
    now = int(time.time() * 1000)
    kinds = [k for k, w in TYPES for _ in range(w)]
    fields = avro_schema.field_names("EmailEvent")
    unique = int(n / (1 + duplicate_share))
    events = []
    for i in range(unique):
        event = dict.fromkeys(fields)
        kind = rng.choice(kinds)
        event.update(event_id=f"e{i}", provider="sendgrid", event_type=kind,
                     event_time=now - 3_600_000 + i * 3_600_000 // unique,
                     received_time=now, message_id=f"m{i // 4}",
                     subscriber_id=f"s{rng.randrange(unique // 4 + 1)}",
                     campaign_id=f"c{rng.randrange(20)}", suspected_bot=False,
                     url=f"https://shop.example/p{rng.randrange(50)}" if kind == "click"
                     else None, attributes={})
        events.append(event)
    for j in range(n - unique):
        copy = dict(events[rng.randrange(unique)])
        if j % 2:
            copy["event_id"] = f"retry{j}"  # a new provider id for the same event
        events.insert(rng.randrange(len(events)), copy)
    return events, unique


def produce(bootstrap: str, topic: str, events: list[dict],
            partitions: list[int] | None = None) -> None:
    from kafka import KafkaProducer

    schema = fastavro.parse_schema(avro_schema.load("EmailEvent"))
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, batch_size=262144,
                             acks=1)
    for i, event in enumerate(events):
        buf = io.BytesIO()
        fastavro.schemaless_writer(buf, schema, event)
        producer.send(topic, key=event["event_id"].encode(), value=buf.getvalue(),
                      partition=partitions[i] if partitions else None)
        if i % 50000 == 0:
            print(f"\r  loading {i}/{len(events)}", end="", flush=True)
    producer.flush()
    producer.close()
    print(f"\r  loaded {len(events)} events into {topic}")


def topic_size(bootstrap: str, topic: str) -> int:
    from devtools.kafka_io import end_offsets

    return sum(end_offsets(bootstrap, topic).values())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.clean_bench")
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--duplicates", type=float, default=0.10)
    parser.add_argument("--timeout", type=float, default=600)
    args = parser.parse_args(argv)

    tag = uuid.uuid4().hex[:6]
    config, config_path = bench_config(tag)
    bootstrap = config["kafka"]["bootstrap_servers"]
    kafka.ensure_topics(config)
    events, unique = generate(args.events, args.duplicates)
    produce(bootstrap, settings.topic(config, "events"), events)
    # One event an hour later in every partition moves the watermark past every held-back
    # click (otherwise the partitions that got no such event hold it back until their
    # idle timeout).
    partitions = config["kafka"]["topics"]["events"]["partitions"]
    last = max(e["event_time"] for e in events) + 3_600_000
    produce(bootstrap, settings.topic(config, "events"),
            [dict(events[0], event_id=f"flush{p}", event_type="delivered", event_time=last,
                  message_id=f"flush{p}") for p in range(partitions)],
            partitions=list(range(partitions)))
    expected = unique + partitions

    job_id = submit("clean", config, config_path)
    try:
        flink_rest.wait_running(config, job_id)
        started = time.monotonic()
        clean_topic = settings.topic(config, "clean")
        done = 0
        while time.monotonic() - started < args.timeout:
            done = topic_size(bootstrap, clean_topic)
            print(f"\r  clean records {done}/{expected}", end="", flush=True)
            if done >= expected:
                break
            time.sleep(0.5)
        seconds = time.monotonic() - started
        print()
        if done < expected:
            print(f"error: only {done} of {expected} clean records after {seconds:.0f} s",
                  file=sys.stderr)
            return 1
        state = flink_rest.wait_checkpoint_state_size(config, job_id)
        shares = flink_probe.vertex_shares(
            flink_probe.fresh_vertex_totals(config, {"clean": job_id})["clean"])
        for name, share in shares.items():
            print(f"  busy {share['busy']:6.1%}  back-pressured {share['backpressured']:6.1%}"
                  f"  in {share['records_in']:>9,.0f}  {name[:90]}")
    finally:
        flink_rest.cancel(config, job_id)

    result = {
        "events": len(events) + partitions,
        "distinct_events": expected,
        "seconds": round(seconds, 2),
        "events_per_s": round((len(events) + partitions) / seconds),
        "checkpoint_state_bytes": state,
        "state_bytes_per_million_ids": round(state / expected * 1_000_000),
    }
    print(f"clean job: {result['events']} events in {result['seconds']} s = "
          f"{result['events_per_s']} events/s (parallelism {config['flink']['parallelism']}, "
          f"checkpoints every {config['flink']['checkpoint_interval_ms']} ms)")
    print(f"dedup state: {state / 1e6:.1f} MB for {expected} distinct events = "
          f"{result['state_bytes_per_million_ids'] / 1e6:.1f} MB per million event ids "
          "(hashmap backend checkpoint size)")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
