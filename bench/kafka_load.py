"""Kafka side of the benchmark: bench topics, preloading and paced producing of raw
records (with a progress line), and reading append times back.

Every bench topic uses message.timestamp.type=LogAppendTime, so a record's timestamp is
the broker's append time: latency = output append time - raw append time, both taken by
the same clock, whatever the producers (Flink's sinks, Quix, this script) put in."""

from __future__ import annotations

import copy
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from bench.traffic import RawRecord
from gateway.kafka_writer import raw_headers
from stack import kafka as stack_kafka

APPEND_TIME = {"message.timestamp.type": "LogAppendTime"}


def create_topics(config: Mapping[str, Any], names: Mapping[str, int]) -> None:
    """Create topics (name -> partitions) with broker append times."""
    only = copy.deepcopy(dict(config))
    only["kafka"]["topics"] = {n: {"name": n, "partitions": p, "config": APPEND_TIME}
                               for n, p in names.items()}
    stack_kafka.ensure_topics(only)


def delete_topics(bootstrap: str, names: Iterable[str]) -> None:
    admin = stack_kafka.admin_client(bootstrap)
    try:
        admin.delete_topics(list(names))
    except Exception as exc:  # a leftover bench topic is harmless; say so and go on
        print(f"warning: could not delete bench topics: {exc}", file=sys.stderr)
    finally:
        admin.close()


def progress(label: str, done: int, total: int, extra: str = "") -> None:
    """One self-overwriting status line on stderr (stdout stays parseable)."""
    pct = 100 * done / total if total else 100
    print(f"\r  {label}: {done}/{total} ({pct:5.1f} %) {extra}   ", end="", file=sys.stderr,
          flush=True)


class _Producer:
    """librdkafka (confluent-kafka, installed with Quix Streams) rather than kafka-python:
    the paced load shares the 2 cores with the system it measures, and the bench process
    took 0.4-0.5 of a core with kafka-python at 4,400 events/s, 0.13-0.14 with librdkafka
    at 5,400. A failed delivery fails the run, since a lost raw record would show up as a
    missing clean event, not as an error."""

    def __init__(self, bootstrap: str):
        from confluent_kafka import Producer

        self._p = Producer({"bootstrap.servers": bootstrap, "acks": 1, "linger.ms": 10,
                            "batch.size": 512 * 1024, "message.max.bytes": 4 << 20,
                            "queue.buffering.max.messages": 1_000_000})
        self._error: Exception | None = None

    def _delivered(self, err: Any, _msg: Any) -> None:
        if err is not None and self._error is None:
            self._error = RuntimeError(f"a raw record was not delivered: {err}")

    def send(self, topic: str, rec: RawRecord) -> None:
        headers = raw_headers(rec.provider, rec.content_type, rec.received_ms, True)
        while True:
            try:
                self._p.produce(topic, value=rec.body, key=rec.key, headers=headers,
                                on_delivery=self._delivered)
                break
            except BufferError:  # local queue full: let deliveries drain, then retry
                self._p.poll(0.05)
        self._p.poll(0)

    def flush(self) -> None:
        if self._p.flush(120) > 0:
            raise RuntimeError("raw records still undelivered after 120 s")
        if self._error is not None:
            raise self._error


def preload(bootstrap: str, topic: str, records: Sequence[RawRecord]) -> float:
    """Write every record as fast as the producer goes; returns seconds taken."""
    producer = _Producer(bootstrap)
    started = time.monotonic()
    for i, rec in enumerate(records):
        producer.send(topic, rec)
        if i % 2000 == 0:
            progress("loading raw", i, len(records))
    producer.flush()
    progress("loading raw", len(records), len(records))
    print(file=sys.stderr)
    return time.monotonic() - started


def paced(bootstrap: str, topic: str, records: Sequence[RawRecord], rate_per_s: float,
          status: Callable[[], str] = lambda: "") -> float:
    """Write records at a fixed rate (records/s) on a schedule, so that a slow consumer
    does not slow the offered load down; returns the achieved rate.

    No flush per record batch and a status line at most once a second: flushing and
    asking for `status` every 200 records held the rate near 1,200 records/s whatever
    was asked. The producer's linger (10 ms) cannot distort latency, which is measured
    from the broker's append time of each raw record."""
    producer = _Producer(bootstrap)
    started = time.monotonic()
    next_status = started
    for i, rec in enumerate(records):
        due = started + i / rate_per_s
        now = time.monotonic()
        if due > now:
            time.sleep(due - now)
        producer.send(topic, rec)
        if now >= next_status:
            next_status = now + 1.0
            progress("offered load", i, len(records), status())
    producer.flush()
    progress("offered load", len(records), len(records))
    print(file=sys.stderr)
    return len(records) / (time.monotonic() - started)


def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    from devtools.kafka_io import end_offsets as ends

    return ends(bootstrap, topic)


def count(bootstrap: str, topic: str, since: Mapping[int, int] | None = None) -> int:
    ends = end_offsets(bootstrap, topic)
    return sum(off - (since or {}).get(p, 0) for p, off in ends.items())


def read(bootstrap: str, topic: str, since: Mapping[int, int] | None = None,
         timeout_s: float = 120.0) -> list[tuple[bytes | None, bytes | None, int]]:
    """(key, value, append time ms) of every record from `since` (default: the start) to
    the current end of the topic."""
    from kafka import KafkaConsumer, TopicPartition

    ends = end_offsets(bootstrap, topic)
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                             enable_auto_commit=False, max_partition_fetch_bytes=8 << 20,
                             fetch_max_bytes=32 << 20)
    out: list[tuple[bytes | None, bytes | None, int]] = []
    try:
        parts = [TopicPartition(topic, p) for p in ends]
        consumer.assign(parts)
        todo = {}
        for tp in parts:
            start = (since or {}).get(tp.partition, 0)
            if start < ends[tp.partition]:
                consumer.seek(tp, start)
                todo[tp] = ends[tp.partition]
            else:
                consumer.pause(tp)
        deadline = time.monotonic() + timeout_s
        while todo and time.monotonic() < deadline:
            for tp, batch in consumer.poll(timeout_ms=500, max_records=50_000).items():
                for m in batch:
                    if m.offset < todo.get(tp, -1):
                        out.append((m.key, m.value, m.timestamp))
                if tp in todo and consumer.position(tp) >= todo[tp]:
                    del todo[tp]
                    consumer.pause(tp)
    finally:
        consumer.close()
    return out


def append_span(bootstrap: str, topic: str) -> tuple[int, int, int]:
    """(records, first append time, last append time) of a whole topic."""
    stamps = [ts for _, _, ts in read(bootstrap, topic)]
    return len(stamps), min(stamps, default=0), max(stamps, default=0)
