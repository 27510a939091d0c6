"""Normalize job: email.raw (webhook bodies as bytes) -> email.events (one canonical Avro
EmailEvent per provider event) + email.dlq (anything that could not be parsed, with the
reason and the original bytes) + PostgreSQL event_type_counts (per campaign and type).

Parsing is one Python table function (udfs.normalize, pure Python, unit-tested without a
JVM); everything around it is Flink SQL so the routing and the counting run in Java."""

from __future__ import annotations

import logging
import operator
import time
from collections.abc import Iterator, Mapping
from typing import Any, NamedTuple

from pyflink.table import StreamTableEnvironment, Table
from pyflink.table.udf import FunctionContext, TableFunction, udtf

import settings
from jobs import avro_schema, runtime, tables

JOB_NAME = "email-normalize"
log = logging.getLogger(__name__)

# What the table function emits per input record: a kind ('event' or 'rejected'), the
# EmailEvent fields (set for events) and the DeadLetter reason (set for rejects).
REJECT_COLUMNS = [("error_code", "STRING"), ("error_message", "STRING"),
                  ("reject_provider", "STRING"), ("raw_value", "BYTES")]


def _result_types() -> list:
    columns = [("kind", "STRING"), *avro_schema.columns("EmailEvent"), *REJECT_COLUMNS]
    return [avro_schema.data_type(t) for _, t in columns]


def result_columns() -> list[str]:
    return ["kind", *avro_schema.field_names("EmailEvent"), *(c for c, _ in REJECT_COLUMNS)]


def _header(headers: Mapping[str, bytes] | None, name: str) -> str | None:
    value = (headers or {}).get(name)
    if value is None:
        return None
    return value.decode("utf-8", "replace") if isinstance(value, bytes | bytearray) else value


class NormalizeRaw(TableFunction):
    """One raw webhook body in, one row per canonical event or rejected item out.
    Never raises: a failure inside the parser becomes a dead letter, so a bad record can
    not stop the job."""

    def __init__(self, hmac_key: str, metadata_fields: Mapping[str, Mapping[str, str]]):
        self.hmac_key = hmac_key
        self.metadata_fields = {k: dict(v) for k, v in metadata_fields.items()}
        self.fields = avro_schema.field_names("EmailEvent")
        # The event's columns in schema order in one C call (a generator over the field
        # names was 0.9 % of the Python worker's samples).
        self.columns = operator.itemgetter(*self.fields)
        # Thread mode's converter cannot take a null MAP (NullPointerException in
        # PythonTypeUtils), so rejected rows carry an empty map instead of no event.
        self.no_event = tuple({} if f == "attributes" else None for f in self.fields)

    def open(self, function_context: FunctionContext) -> None:
        from udfs.normalize import NormalizeSettings

        self.settings = NormalizeSettings(hmac_key=self.hmac_key.encode(),
                                          metadata_fields=self.metadata_fields)
        group = function_context.get_metric_group()
        self.events_out = group.counter("normalize_events")
        self.rejected_out = group.counter("normalize_rejected")

    def eval(self, headers: Mapping[str, bytes] | None, body: bytes | None
             ) -> Iterator[tuple]:
        from udfs.normalize import normalize

        provider = _header(headers, "provider")
        received = _header(headers, "received-at")
        now = int(time.time() * 1000)
        try:
            received_time = int(received) if received else now
        except ValueError:
            received_time = now
        body = bytes(body or b"")
        try:
            result = normalize(provider or "", body, _header(headers, "content-type"),
                               received_time, self.settings)
            rejected = [(r.code, r.message, r.raw) for r in result.rejected]
            if result.control:
                # Not an event and not an error (e.g. an SNS subscription confirmation):
                # dead-lettered under its own code so that somebody acts on it.
                rejected.append((f"control_{result.control}",
                                 f"control message: {result.control}", body))
            events = result.events
        except Exception as exc:  # the parser's contract is to never raise; belt and braces
            log.exception("normalize failed")
            events, rejected = [], [("internal_error", f"{type(exc).__name__}: {exc}", body)]
        # Counted once per record, not per row: a counter call per row was 1.4 % of
        # the Python worker's samples.
        if events:
            self.events_out.inc(len(events))
        if rejected:
            self.rejected_out.inc(len(rejected))
        columns = self.columns
        for event in events:
            yield ("event", *columns(event), None, None, None, None)
        for code, message, raw in rejected:
            yield ("rejected", *self.no_event, code, message, provider, raw)


def normalize_function(config: Mapping[str, Any]):
    cfg = config["normalize"]
    return udtf(NormalizeRaw(cfg["hmac_key"], cfg["metadata_fields"]),
                result_types=_result_types())


class Outputs(NamedTuple):
    events: Table        # EmailEvent columns, in schema order
    dead_letters: Table  # dlq_key + DeadLetter columns
    counts: Table        # campaign_id ('' when none), event_type, events (updating)


def build(t_env: StreamTableEnvironment, config: Mapping[str, Any], source: str) -> Outputs:
    """The job between its tables. `source` (production: email.raw in Kafka; tests: an
    in-memory table) has columns request_id, body, headers, src_topic, src_partition,
    src_offset. The caller inserts the outputs into its sinks."""
    runtime.enable_mini_batch(t_env, config)
    t_env.create_temporary_function("normalize_raw", normalize_function(config))
    cols = ", ".join(avro_schema.quote(c) for c in result_columns())
    t_env.execute_sql(f"""
        CREATE TEMPORARY VIEW normalized AS
        SELECT s.request_id, s.src_topic, s.src_partition, s.src_offset, n.*
        FROM {source} AS s, LATERAL TABLE(normalize_raw(s.headers, s.body)) AS n({cols})""")
    return Outputs(
        events=t_env.sql_query(f"""
            SELECT {avro_schema.select_list("EmailEvent")}
            FROM normalized WHERE kind = 'event'"""),
        dead_letters=t_env.sql_query("""
            SELECT request_id AS dlq_key, error_code, error_message,
                   src_topic AS source_topic, src_partition AS source_partition,
                   src_offset AS source_offset, reject_provider AS provider,
                   CAST(UNIX_TIMESTAMP() * 1000 AS BIGINT) AS failed_time, raw_value
            FROM normalized WHERE kind = 'rejected'"""),
        counts=t_env.sql_query("""
            SELECT COALESCE(campaign_id, '') AS campaign_id, event_type, COUNT(*) AS events
            FROM normalized WHERE kind = 'event'
            GROUP BY COALESCE(campaign_id, ''), event_type"""),
    )


def python_options(config: Mapping[str, Any]) -> dict[str, str]:
    """Flink options for this job's Python worker (normalize.python_execution_mode):
    the parser is stateless, so process mode's separate workers pay off here."""
    cfg = config["normalize"]
    options = {"python.execution-mode": cfg["python_execution_mode"]}
    if cfg["python_execution_mode"] == "process":
        options["python.fn-execution.bundle.time"] = str(int(cfg["python_bundle_time_ms"]))
    return options


def main() -> None:
    config = settings.load()
    env, t_env = runtime.create_env(config, JOB_NAME, python_options(config))
    env.set_parallelism(config["normalize"]["parallelism"] or config["flink"]["parallelism"])
    t_env.execute_sql(tables.raw_source(config))
    t_env.execute_sql(tables.events_sink(config, "events", "normalize", "email_events"))
    t_env.execute_sql(tables.dlq_sink(config, "normalize"))
    t_env.execute_sql(tables.jdbc_sink(
        config, "event_type_counts", "event_type_counts",
        "campaign_id STRING NOT NULL, event_type STRING NOT NULL, events BIGINT NOT NULL",
        "campaign_id, event_type"))
    out = build(t_env, config, "raw_webhooks")
    stmts = t_env.create_statement_set()
    stmts.add_insert("email_events", out.events)
    stmts.add_insert("dead_letters", out.dead_letters)
    stmts.add_insert("event_type_counts", out.counts)
    stmts.execute()


if __name__ == "__main__":
    main()
