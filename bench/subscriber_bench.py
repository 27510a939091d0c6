"""Benchmark of the subscriber job on the local Flink cluster: throughput, keyed state per
subscriber and suppression latency.

    python -m bench.subscriber_bench [--subscribers 20000] [--events 200000]

Preloads canonical events (Avro, keyed by subscriber_id as the clean job writes them) for
N subscribers into a clean topic of its own, over the last day in event-time order; the
job's other inputs (email.late, subscriber.profiles, privacy.erasure) get bench topics
with nothing in them. Then it runs the subscriber job and reports:

  * events/s from the job reaching RUNNING to the last output record (Kafka record
    timestamps of the three output topics). Events are scored once the watermark passes
    them, and the empty inputs hold the watermark back until their 30 s idle timeout, so
    the run lasts at least that long. Also reported: when the preload's last events
    reached the job (the suppression of a marker unsubscribe placed last in every
    partition, emitted on arrival); once the watermark moves, the operator interleaves
    scoring timers with input, so this is not an ingest-only rate.
  * the checkpointed state size per subscriber (hashmap backend, full checkpoint).
  * suppression latency: unsubscribes produced one at a time after the preload is done,
    wall time from the produce call to the suppression record read from
    subscriber.suppressions (p50 / max).

The outputs also go to the PostgreSQL tables (the production job); the bench's rows are
deleted afterwards, and so are its topics unless --keep-topics. Needs the local stack
(python -m stack start). Prints a JSON line last."""

from __future__ import annotations

import argparse
import io
import json
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Mapping
from typing import Any

import fastavro
import yaml

import settings
from devtools import flink_rest, postgres_io
from devtools.kafka_io import end_offsets
from jobs import avro_schema
from jobs.__main__ import submit
from stack import kafka
from stack.postgres import apply_schema
from udfs.scoring import ScoringParams, event_weight, is_human_engagement, is_permanent_failure
from udfs.send_time import SendTimeParams
from udfs.suppression import SuppressionParams, SuppressionState

# Event mix of one subscriber's mail over a day (relative weights).
TYPES = [("delivered", 450), ("sent", 100), ("open", 250), ("click", 60), ("deferred", 50),
         ("bounce", 30), ("unsubscribe", 5), ("complaint", 1)]
INPUTS = ("clean", "late", "profiles", "erasure")
OUTPUTS = {"scores": "SubscriberScore", "send_time": "SubscriberSendTime",
           "suppressions": "SubscriberSuppression"}
PG_TABLES = {"scores": "subscriber_scores", "send_time": "subscriber_send_time",
             "suppressions": "subscriber_suppressions"}
HOUR_MS, DAY_MS = 3_600_000, 86_400_000


def bench_config(tag: str) -> tuple[dict, str]:
    base = settings.load()
    override = {"kafka": {"group_id_prefix": f"bench-{tag}", "topics": {
        logical: {"name": f"{base['kafka']['topics'][logical]['name']}.bench-{tag}"}
        for logical in (*INPUTS, *OUTPUTS)}}}
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as handle:
        yaml.safe_dump(override, handle)
    return settings.load(handle.name), handle.name


def generate(tag: str, subscribers: int, n: int, seed: int = 7) -> list[dict]:
    """n events of `subscribers` subscribers over the last day (ending an hour ago), in
    event-time order: each partition of the clean topic is then in order, as the clean
    job's output roughly is."""
    rng = random.Random(seed)
    now = int(time.time() * 1000)
    start = now - 25 * HOUR_MS
    kinds = [k for k, w in TYPES for _ in range(w)]
    fields = avro_schema.field_names("EmailEvent")
    events = []
    for i in range(n):
        kind = rng.choice(kinds)
        event = dict.fromkeys(fields)
        event.update(
            event_id=f"e{i}", provider="sendgrid", event_type=kind,
            event_time=start + i * DAY_MS // n, received_time=now,
            message_id=f"m{rng.randrange(n // 4 + 1)}",
            subscriber_id=f"b{tag}-{rng.randrange(subscribers)}",
            campaign_id=f"c{rng.randrange(20)}",
            suspected_bot=kind == "click" and rng.random() < 0.05, attributes={})
        if kind == "open":
            event["machine_open"] = rng.random() < 0.4  # Apple MPP share of opens
        elif kind == "click":
            event["url"] = f"https://shop.example/p{rng.randrange(50)}"
        elif kind == "bounce":
            event["bounce_class"] = "hard" if rng.random() < 0.3 else "soft"
        events.append(event)
    return events


def expected_rows(config: Mapping[str, Any], events: list[dict]) -> dict[str, int]:
    """How many rows each output table must end with (the job's own rules): a score for
    every subscriber with an event that can move it, a send hour for every subscriber
    with human engagement, a suppression for every subscriber SuppressionState
    suppresses. Also 'stateful': subscribers that keep keyed state."""
    cfg = config["subscriber"]
    scoring = ScoringParams(**cfg["scoring"])
    send = SendTimeParams(**cfg["send_time"] | {"kernel": tuple(cfg["send_time"]["kernel"])})
    supp_params = SuppressionParams(**cfg["suppression"])
    scored, engaged = set(), set()
    supp: dict[str, SuppressionState] = {}
    for e in events:
        sid = e["subscriber_id"]
        if (event_weight(e, scoring) != 0 or is_human_engagement(e)
                or is_permanent_failure(e)):
            scored.add(sid)
        if is_human_engagement(e) and send.weights.get(e["event_type"], 0) > 0:
            engaged.add(sid)
        state = supp.setdefault(sid, SuppressionState(supp_params))
        state.add(e)
    suppressed = {s for s, st in supp.items() if st.status() is not None}
    has_supp_state = {s for s, st in supp.items()
                      if st.to_tuple() != SuppressionState(supp_params).to_tuple()}
    return {"scores": len(scored), "send_time": len(engaged),
            "suppressions": len(suppressed), "stateful": len(scored | has_supp_state),
            "_not_suppressed": sorted(scored - suppressed)}


def encode(schema: Any, record: dict) -> bytes:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, schema, record)
    return buf.getvalue()


def produce(bootstrap: str, topic: str, events: list[dict],
            partitions: list[int] | None = None, progress: bool = True) -> None:
    from kafka import KafkaProducer

    schema = fastavro.parse_schema(avro_schema.load("EmailEvent"))
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, batch_size=262144,
                             acks=1)
    for i, event in enumerate(events):
        producer.send(topic, key=event["subscriber_id"].encode(),
                      value=encode(schema, event),
                      partition=partitions[i] if partitions else None)
        if progress and i % 20000 == 0:
            print(f"\r  loading {i}/{len(events)}", end="", flush=True)
    producer.flush()
    producer.close()
    if progress:
        print(f"\r  loaded {len(events)} events into {topic}")


def pg_counts(config: Mapping[str, Any], tag: str) -> dict[str, int]:
    return {name: postgres_io.query(
        config, f"SELECT count(*) FROM {table} WHERE subscriber_id LIKE %s",
        (f"b{tag}-%",))[0][0] for name, table in PG_TABLES.items()}


def output_offsets(config: Mapping[str, Any]) -> int:
    bootstrap = config["kafka"]["bootstrap_servers"]
    return sum(sum(end_offsets(bootstrap, settings.topic(config, t)).values())
               for t in OUTPUTS)


def read_outputs(config: Mapping[str, Any], topic: str, schema_name: str
                 ) -> list[tuple[int, dict | None]]:
    """(record timestamp ms, decoded value or None for a tombstone) of a whole topic."""
    from kafka import KafkaConsumer, TopicPartition

    bootstrap = config["kafka"]["bootstrap_servers"]
    schema = fastavro.parse_schema(avro_schema.load(schema_name))
    ends = end_offsets(bootstrap, topic)
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                             enable_auto_commit=False)
    out = []
    try:
        parts = [TopicPartition(topic, p) for p in ends]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        while any(consumer.position(tp) < ends[tp.partition] for tp in parts):
            for records in consumer.poll(timeout_ms=500).values():
                out += [(m.timestamp, None if m.value is None else
                         fastavro.schemaless_reader(io.BytesIO(m.value), schema))
                        for m in records]
    finally:
        consumer.close()
    return out


def suppression_latency(config: Mapping[str, Any], subscribers: list[str],
                        template: dict) -> list[float]:
    """Seconds from producing an unsubscribe to reading its suppression record, one
    subscriber at a time (nothing else in flight)."""
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition

    bootstrap = config["kafka"]["bootstrap_servers"]
    topic = settings.topic(config, "suppressions")
    schema = fastavro.parse_schema(avro_schema.load("EmailEvent"))
    out_schema = fastavro.parse_schema(avro_schema.load("SubscriberSuppression"))
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                             enable_auto_commit=False, fetch_max_wait_ms=50)
    parts = [TopicPartition(topic, p) for p in end_offsets(bootstrap, topic)]
    consumer.assign(parts)
    consumer.seek_to_end(*parts)
    for tp in parts:
        consumer.position(tp)  # resolve the end now, not lazily after the produce
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=0, acks=1)
    latencies = []
    try:
        for i, sid in enumerate(subscribers):
            now = int(time.time() * 1000)
            event = dict(template, event_id=f"lat{i}", event_type="unsubscribe",
                         event_time=now, received_time=now, subscriber_id=sid,
                         message_id=f"lat{i}", url=None, bounce_class=None,
                         machine_open=None, suspected_bot=False)
            started = time.monotonic()
            producer.send(settings.topic(config, "clean"), key=sid.encode(),
                          value=encode(schema, event)).get(timeout=10)
            seen = None
            while seen is None and time.monotonic() - started < 60:
                for records in consumer.poll(timeout_ms=20).values():
                    for m in records:
                        if m.value is not None and fastavro.schemaless_reader(
                                io.BytesIO(m.value), out_schema)["subscriber_id"] == sid:
                            seen = time.monotonic()
            if seen is None:
                raise TimeoutError(f"no suppression record for {sid} within 60 s")
            latencies.append(seen - started)
            print(f"  unsubscribe {i + 1}/{len(subscribers)}: suppression visible after "
                  f"{latencies[-1] * 1000:.0f} ms")
            time.sleep(0.5)
    finally:
        producer.close()
        consumer.close()
    return latencies


def cleanup(config: Mapping[str, Any], tag: str, keep_topics: bool) -> None:
    for table in PG_TABLES.values():
        postgres_io.query(config, f"DELETE FROM {table} WHERE subscriber_id LIKE %s "
                                  "RETURNING 1", (f"b{tag}-%",))
    if keep_topics:
        return
    admin = kafka.admin_client(config["kafka"]["bootstrap_servers"])
    try:
        admin.delete_topics([settings.topic(config, t) for t in (*INPUTS, *OUTPUTS)])
    except Exception as exc:  # a leftover bench topic is harmless; say so and go on
        print(f"warning: could not delete the bench topics: {exc}", file=sys.stderr)
    finally:
        admin.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.subscriber_bench")
    parser.add_argument("--subscribers", type=int, default=20_000)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--latency-samples", type=int, default=10)
    parser.add_argument("--timeout", type=float, default=900)
    parser.add_argument("--keep-topics", action="store_true")
    args = parser.parse_args(argv)

    tag = uuid.uuid4().hex[:6]
    config, config_path = bench_config(tag)
    bootstrap = config["kafka"]["bootstrap_servers"]
    apply_schema(config)  # a stack started before 004_subscriber.sql existed lacks it
    kafka.ensure_topics(config)
    clean_topic = settings.topic(config, "clean")
    print(f"generating {args.events} events of {args.subscribers} subscribers (tag {tag})")
    events = generate(tag, args.subscribers, args.events)
    produce(bootstrap, clean_topic, events)
    # Last in every partition: a marker unsubscribe (its suppression is emitted on arrival,
    # so it shows when the preload is ingested), then a delivery an hour later that moves
    # the watermark past every pending event and settle timer.
    partitions = config["kafka"]["topics"]["clean"]["partitions"]
    last = events[-1]["event_time"]
    tail = [dict(events[0], event_id=f"mark{p}", event_type="unsubscribe", event_time=last,
                 subscriber_id=f"b{tag}-mark{p}", message_id=f"mark{p}")
            for p in range(partitions)]
    tail += [dict(events[0], event_id=f"flush{p}", event_type="delivered",
                  event_time=last + HOUR_MS, subscriber_id=f"b{tag}-flush{p}",
                  message_id=f"flush{p}") for p in range(partitions)]
    for e in tail:
        e.update(url=None, bounce_class=None, machine_open=None, suspected_bot=False)
    produce(bootstrap, clean_topic, tail, partitions=[p for p in range(partitions)] * 2,
            progress=False)
    total = len(events) + len(tail)
    expected = expected_rows(config, events + tail)
    want = {k: expected[k] for k in OUTPUTS}
    print(f"  expecting rows {want}")

    job_id = submit("subscriber", config, config_path)
    try:
        flink_rest.wait_running(config, job_id)
        running_wall = time.time()
        started = time.monotonic()
        # Done when PostgreSQL has every expected row and the output topics have not
        # grown for 5 s (later upserts of the same rows would still change offsets).
        counts, size, changed = {}, -1, time.monotonic()
        while time.monotonic() - started < args.timeout:
            counts, new_size = pg_counts(config, tag), output_offsets(config)
            if new_size != size:
                size, changed = new_size, time.monotonic()
            print(f"\r  {time.monotonic() - started:5.0f} s: rows "
                  + ", ".join(f"{k} {counts[k]}/{want[k]}" for k in OUTPUTS)
                  + f", output records {size}   ", end="", flush=True)
            if counts == want and time.monotonic() - changed > 5:
                break
            if time.monotonic() - changed > 60:
                break  # nothing moves any more: report what is missing
            time.sleep(0.5)
        print()
        if counts != want:
            print(f"error: rows {counts}, expected {want} after "
                  f"{time.monotonic() - started:.0f} s", file=sys.stderr)
            return 1
        state = flink_rest.wait_checkpoint_state_size(config, job_id)

        # The last output record and the markers' suppressions, by record timestamp (the
        # sinks leave it to the producer: wall-clock send time).
        stamps, marker_stamps = [], []
        for logical, schema in OUTPUTS.items():
            records = read_outputs(config, settings.topic(config, logical), schema)
            stamps += [ts for ts, _ in records]
            if logical == "suppressions":
                marker_stamps = [ts for ts, v in records if v and "-mark" in v["subscriber_id"]]
        last_output_s = max(stamps) / 1000 - running_wall
        last_input_s = max(marker_stamps) / 1000 - running_wall
        if not 0 < last_input_s <= last_output_s < time.time() - running_wall + 1:
            print("warning: output record timestamps are not wall-clock send times; "
                  "using the time the outputs stopped growing", file=sys.stderr)
            last_output_s = last_input_s = changed - started

        rng = random.Random(11)
        candidates = [s for s in expected["_not_suppressed"] if "-mark" not in s]
        chosen = rng.sample(candidates, min(args.latency_samples, len(candidates)))
        print(f"suppression latency: {len(chosen)} unsubscribes, one at a time")
        latencies = suppression_latency(config, chosen, events[0])
    finally:
        flink_rest.cancel(config, job_id)
        # The JDBC sink flushes its buffer while cancelling: delete the rows after that.
        deadline = time.monotonic() + 60
        while (flink_rest.job_state(config, job_id) not in ("CANCELED", "FAILED", "FINISHED")
               and time.monotonic() < deadline):
            time.sleep(0.5)
        cleanup(config, tag, args.keep_topics)

    result = {
        "events": total,
        "subscribers": args.subscribers,
        "stateful_subscribers": expected["stateful"],
        "output_rows": want,
        "seconds_to_last_output": round(last_output_s, 2),
        "events_per_s": round(total / last_output_s),
        "seconds_to_last_input": round(last_input_s, 2),
        "checkpoint_state_bytes": state,
        "state_bytes_per_subscriber": round(state / args.subscribers),
        "state_bytes_per_stateful_subscriber": round(state / expected["stateful"]),
        "suppression_latency_ms_p50": round(statistics.median(latencies) * 1000),
        "suppression_latency_ms_max": round(max(latencies) * 1000),
    }
    print(f"subscriber job: {total} events of {args.subscribers} subscribers, last output "
          f"after {result['seconds_to_last_output']} s = {result['events_per_s']} events/s "
          f"(last input reached the job after {result['seconds_to_last_input']} s; parallelism "
          f"{config['flink']['parallelism']}, checkpoints every "
          f"{config['flink']['checkpoint_interval_ms']} ms)")
    print(f"keyed state: {state / 1e6:.1f} MB checkpointed = "
          f"{result['state_bytes_per_subscriber']} bytes per subscriber "
          f"({result['state_bytes_per_stateful_subscriber']} per subscriber with state, "
          f"{expected['stateful']} of {args.subscribers}; hashmap backend)")
    print(f"suppression latency (unsubscribe in -> record in subscriber.suppressions): "
          f"p50 {result['suppression_latency_ms_p50']} ms, "
          f"max {result['suppression_latency_ms_max']} ms over {len(latencies)}")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
