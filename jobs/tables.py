"""CREATE TABLE statements for the production sources and sinks (Kafka, PostgreSQL),
built from the configuration. Jobs declare their tables through these functions so that
connector options live in one place; tests replace them with in-memory tables."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import settings
from jobs import avro_schema


def create_table(name: str, columns: str, opts: Mapping[str, str]) -> str:
    """CREATE TABLE name (columns) WITH (opts): `columns` is the DDL between the
    parentheses, one column (or constraint) per line."""
    options = ",\n  ".join(f"'{k}' = '{v}'" for k, v in opts.items())
    return f"CREATE TABLE {name} (\n  {columns}\n) WITH (\n  {options}\n)"


def client_properties(config: Mapping[str, Any], role: str) -> dict[str, str]:
    """kafka.<role>_properties (role: consumer or producer) as connector options."""
    return {f"properties.{k}": str(v)
            for k, v in (config["kafka"][f"{role}_properties"] or {}).items()}


def kafka_source_options(config: Mapping[str, Any], logical_topic: str,
                         group: str) -> dict[str, str]:
    kafka = config["kafka"]
    return client_properties(config, "consumer") | {
        "connector": "kafka",
        "topic": settings.topic(config, logical_topic),
        "properties.bootstrap.servers": kafka["bootstrap_servers"],
        "properties.group.id": f"{kafka['group_id_prefix']}.{group}",
        # First start reads the topic from the beginning; later starts resume from the
        # checkpointed (or committed) offsets, so nothing is skipped.
        "scan.startup.mode": "group-offsets",
        "properties.auto.offset.reset": "earliest",
        # Partitions without traffic must not hold back event time downstream.
        "scan.watermark.idle-timeout": "30 s",
    }


def kafka_sink_options(config: Mapping[str, Any], logical_topic: str,
                       job: str) -> dict[str, str]:
    kafka = config["kafka"]
    opts = client_properties(config, "producer") | {
        "connector": "kafka",
        "topic": settings.topic(config, logical_topic),
        "properties.bootstrap.servers": kafka["bootstrap_servers"],
        "sink.delivery-guarantee": kafka["delivery_guarantee"],
    }
    if kafka["delivery_guarantee"] == "exactly-once":
        opts["sink.transactional-id-prefix"] = (
            f"{kafka['transactional_id_prefix']}.{job}.{logical_topic}")
    return opts


def raw_source(config: Mapping[str, Any], name: str = "raw_webhooks",
               group: str = "normalize") -> str:
    """email.raw: key = request id, value = the HTTP body, headers carry the provider."""
    opts = kafka_source_options(config, "raw", group) | {
        "key.format": "raw",
        "key.fields": "request_id",
        "value.format": "raw",
        "value.fields-include": "EXCEPT_KEY",
    }
    return create_table(name, """request_id BYTES,
  body BYTES,
  headers MAP<STRING, BYTES> METADATA,
  src_topic STRING METADATA FROM 'topic' VIRTUAL,
  src_partition INT METADATA FROM 'partition' VIRTUAL,
  src_offset BIGINT METADATA FROM 'offset' VIRTUAL""", opts)


def events_source(config: Mapping[str, Any], logical_topic: str, group: str,
                  name: str) -> str:
    """An EmailEvent topic as an event-time source: `ts` (from event_time) carries the
    watermark, bounded by clean.out_of_orderness_s; `proc` is processing time."""
    opts = kafka_source_options(config, logical_topic, group) | {"value.format": "avro"}
    return create_table(name, event_time_columns(config), opts)


def event_time_columns(config: Mapping[str, Any]) -> str:
    """EmailEvent columns + rowtime `ts` with its watermark + processing time `proc`."""
    ooo = int(config["clean"]["out_of_orderness_s"])
    return f"""{avro_schema.column_ddl("EmailEvent")},
  ts AS TO_TIMESTAMP_LTZ(event_time, 3),
  proc AS PROCTIME(),
  WATERMARK FOR ts AS ts - INTERVAL '{ooo}' SECOND"""


def events_sink(config: Mapping[str, Any], logical_topic: str, job: str,
                name: str, key: str = "event_id") -> str:
    """An EmailEvent topic: email.events and email.late keyed by event_id,
    email.events.clean by subscriber_id (so one subscriber's events stay in order)."""
    opts = kafka_sink_options(config, logical_topic, job) | {
        "key.format": "raw",
        "key.fields": key,
        "value.format": "avro",
        "value.fields-include": "ALL",
    }
    return create_table(name, avro_schema.column_ddl("EmailEvent"), opts)


def dlq_sink(config: Mapping[str, Any], job: str, name: str = "dead_letters") -> str:
    """email.dlq: key = the raw record's key, value = DeadLetter."""
    opts = kafka_sink_options(config, "dlq", job) | {
        "key.format": "raw",
        "key.fields": "dlq_key",
        "value.format": "avro",
        "value.fields-include": "EXCEPT_KEY",
    }
    return create_table(name, f"""dlq_key BYTES,
  {avro_schema.column_ddl("DeadLetter")}""", opts)


def jdbc_sink(config: Mapping[str, Any], name: str, table: str, columns: str,
              primary_key: str) -> str:
    """A PostgreSQL table written with upserts on its primary key (idempotent on replay)."""
    url, user, password = settings.jdbc_url(config)
    opts = {
        "connector": "jdbc",
        "url": url,
        "table-name": table,
        "username": user,
        "password": password,
        "driver": "org.postgresql.Driver",
        "sink.buffer-flush.interval": "1 s",
        "sink.max-retries": "5",
    }
    return create_table(name, f"""{columns},
  PRIMARY KEY ({primary_key}) NOT ENFORCED""", opts)


def conversions_source(config: Mapping[str, Any], group: str,
                       name: str = "conversions_in") -> str:
    """commerce.conversions (Avro Conversion)."""
    opts = kafka_source_options(config, "conversions", group) | {"value.format": "avro"}
    return create_table(name, avro_schema.column_ddl("Conversion"), opts)


def upsert_kafka_sink(config: Mapping[str, Any], logical_topic: str, schema: str,
                      key: list[str], name: str) -> str:
    """A compacted/keyed topic of upserts (latest row per key; deletes are tombstones).
    Idempotent on replay, so at-least-once delivery is enough."""
    kafka = config["kafka"]
    opts = client_properties(config, "producer") | {
        "connector": "upsert-kafka",
        "topic": settings.topic(config, logical_topic),
        "properties.bootstrap.servers": kafka["bootstrap_servers"],
        "key.format": "avro",
        "value.format": "avro",
        "value.fields-include": "ALL",
    }
    return create_table(name, f"""{avro_schema.column_ddl(schema)},
  PRIMARY KEY ({", ".join(avro_schema.quote(k) for k in key)}) NOT ENFORCED""", opts)
