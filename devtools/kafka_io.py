"""Producing raw webhook bodies and reading Avro records, as a campaign tool would."""

from __future__ import annotations

import io
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any

import fastavro

from jobs import avro_schema


def produce_raw(bootstrap: str, topic: str, provider: str, bodies: Iterable[bytes],
                content_type: str = "application/json") -> int:
    """Write webhook bodies to email.raw the way the gateway does (key = request id, the
    gateway's headers; signature-verified false). Returns how many were sent."""
    from kafka import KafkaProducer

    from gateway.kafka_writer import raw_headers

    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    sent = 0
    try:
        for body in bodies:
            headers = raw_headers(provider, content_type, int(time.time() * 1000), False)
            producer.send(topic, key=uuid.uuid4().hex.encode(), value=body, headers=headers)
            sent += 1
        producer.flush(timeout=30)
    finally:
        producer.close()
    return sent


def decode(schema_name: str, value: bytes) -> dict[str, Any]:
    """Decode one schemaless Avro value (Flink's avro format writes no header)."""
    schema = fastavro.parse_schema(avro_schema.load(schema_name))
    return fastavro.schemaless_reader(io.BytesIO(value), schema)


def read_avro(bootstrap: str, topic: str, schema_name: str,
              until: Callable[[list[dict[str, Any]]], bool], timeout_s: float = 120.0,
              read_committed: bool = True) -> list[dict[str, Any]]:
    """Read a topic from the beginning and decode every value, until `until(records)`
    holds or the timeout passes; returns what was read (each record has a '_key')."""
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                             enable_auto_commit=False, group_id=None,
                             isolation_level="read_committed" if read_committed
                             else "read_uncommitted",
                             consumer_timeout_ms=1000)
    schema = fastavro.parse_schema(avro_schema.load(schema_name))
    records: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            for message in consumer:
                record = fastavro.schemaless_reader(io.BytesIO(message.value), schema)
                record["_key"] = message.key
                records.append(record)
            if until(records):
                break
    finally:
        consumer.close()
    return records


def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    """Current end offset per partition: records produced later have offsets >= these."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
        return {tp.partition: off for tp, off in consumer.end_offsets(partitions).items()}
    finally:
        consumer.close()
