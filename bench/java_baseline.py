"""Baseline (a): the normalize + clean + count work as one pure Flink SQL job, no Python
UDF, so every operator is a Java one (PyFlink only builds the plan on the client).

raw topic -> unnest batches (JSON_QUERY ... RETURNING ARRAY, URL_DECODE for Mandrill,
the SNS Message for SES) -> fields by JSON_VALUE paths of each provider -> canonical type
by CASE -> late split (received - event time > horizon) -> keep-first dedup by event id,
then by content (the clean job's two ROW_NUMBER()s) -> clean topic (JSON, keyed by
subscriber) + per (campaign, arm, type) counts (blackhole sink: the count operator runs,
its output is not shipped anywhere).

Same input and dedup rules as the project's pipeline; what it leaves out (HMAC of
addresses without a subscriber id, IP masking, bot detection, attributes, Avro) is the
part of the work a Java UDF would have to add. Submitted by bench/__main__.py:
    flink run -pym bench.java_baseline   (settings from EMAIL_STREAMING_CONFIG)"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import settings
from jobs import runtime, tables

JOB_NAME = "bench-java-baseline"


def clean_topic(config: Mapping[str, Any]) -> str:
    return settings.topic(config, "clean") + ".java"


def _jv(*paths: str) -> str:
    """COALESCE of JSON_VALUE over paths of the event object `ev` (each provider keeps a
    field at its own path; the first one present wins)."""
    calls = [f"JSON_VALUE(ev, '{p}')" for p in paths]
    return calls[0] if len(calls) == 1 else f"COALESCE({', '.join(calls)})"


def _meta(name: str) -> str:
    return _jv(f"$.{name}", f"$[''user-variables''].{name}", f"$.mail.tags.{name}[0]",
               f"$.Metadata.{name}", f"$.rcpt_meta.{name}", f"$.msg.metadata.{name}")


_ISO = ("$.delivery.timestamp", "$.open.timestamp", "$.click.timestamp",
        "$.bounce.timestamp", "$.complaint.timestamp", "$.deliveryDelay.timestamp",
        "$.mail.timestamp", "$.DeliveredAt", "$.ReceivedAt", "$.BouncedAt", "$.ChangedAt")

_TYPES = {
    "sent": ("processed", "accepted", "send", "injection"),
    "delivered": ("delivered", "delivery"),
    "deferred": ("deferred", "deliverydelay", "delay", "deferral"),
    "bounce": ("bounce", "hard_bounce", "soft_bounce"),
    "open": ("open", "opened"),
    "click": ("click", "clicked"),
    "unsubscribe": ("unsubscribe", "unsubscribed", "unsub", "list_unsubscribe",
                    "subscriptionchange", "group_unsubscribe"),
    "complaint": ("spamreport", "complained", "complaint", "spamcomplaint", "spam_complaint",
                  "spam"),
}


def build_sql(source: str, horizon_ms: int) -> list[str]:
    """The view definitions, in order (each a CREATE TEMPORARY VIEW)."""
    # Mailgun's 'failed' is a bounce when permanent, else a deferral.
    type_case = "WHEN LOWER(raw_type) = 'failed' THEN CASE WHEN severity = 'permanent' " \
        "THEN 'bounce' ELSE 'deferred' END " + " ".join(
        f"WHEN LOWER(raw_type) IN ({', '.join(repr(t) for t in names)}) THEN '{canon}'"
        for canon, names in _TYPES.items())
    iso = _jv(*_ISO)
    return [
        f"""CREATE TEMPORARY VIEW bl_items AS
        SELECT provider, received_time, proc, item FROM (
            SELECT CAST(headers['provider'] AS STRING) AS provider,
                   CAST(CAST(headers['received-at'] AS STRING) AS BIGINT) AS received_time,
                   CAST(body AS STRING) AS b, proc
            FROM {source}) AS r
        CROSS JOIN UNNEST(
            CASE WHEN provider IN ('sendgrid', 'sparkpost')
                      THEN JSON_QUERY(b, '$' RETURNING ARRAY<STRING>)
                 WHEN provider = 'mandrill'
                      THEN JSON_QUERY(URL_DECODE(SUBSTRING(b FROM 17)), '$'
                                      RETURNING ARRAY<STRING>)
                 WHEN provider = 'ses' THEN ARRAY[JSON_VALUE(b, '$.Message')]
                 ELSE ARRAY[b] END) AS t(item)""",
        """CREATE TEMPORARY VIEW bl_objects AS
        SELECT provider, received_time, proc,
               CASE provider
                 WHEN 'sparkpost' THEN COALESCE(JSON_QUERY(item, '$.msys.message_event'),
                                                JSON_QUERY(item, '$.msys.track_event'),
                                                JSON_QUERY(item, '$.msys.unsubscribe_event'))
                 WHEN 'mailgun' THEN JSON_QUERY(item, '$[''event-data'']')
                 ELSE item END AS ev
        FROM bl_items""",
        f"""CREATE TEMPORARY VIEW bl_fields AS
        SELECT provider, received_time, proc,
               {_jv("$.event", "$.eventType", "$.RecordType", "$.type")} AS raw_type,
               {_jv("$.sg_event_id", "$.id", "$.event_id", "$._id", "$.hit_id")} AS pid,
               CASE WHEN provider = 'tracker' THEN CAST(JSON_VALUE(ev, '$.ts') AS BIGINT)
                    WHEN provider IN ('ses', 'postmark') THEN
                         1000 * UNIX_TIMESTAMP(SUBSTRING({iso} FROM 1 FOR 19),
                                               'yyyy-MM-dd''T''HH:mm:ss')
                         + CAST(SUBSTRING({iso} FROM 21 FOR 3) AS BIGINT)
                    ELSE CAST(1000 * CAST({_jv("$.timestamp", "$.ts")} AS DOUBLE) AS BIGINT)
               END AS event_time,
               {_jv("$.sg_message_id", "$.message.headers[''message-id'']",
                    "$.mail.messageId", "$.MessageID", "$.message_id", "$.msg._id")}
                   AS message_id,
               {_meta("subscriber_id")} AS subscriber_id,
               {_meta("campaign_id")} AS campaign_id,
               {_meta("ab_test_id")} AS ab_test_id,
               {_meta("arm")} AS `arm`,
               {_jv("$.url", "$.click.link", "$.OriginalLink", "$.target_link_url")} AS url,
               JSON_VALUE(ev, '$.severity') AS severity
        FROM bl_objects""",
        f"""CREATE TEMPORARY VIEW bl_events AS
        SELECT COALESCE(provider || ':' || pid,
                        SHA256(CONCAT_WS('|', provider, message_id, subscriber_id, event_type,
                                         CAST(event_time AS STRING), COALESCE(url, ''))))
                   AS event_id,
               provider, event_type, event_time, received_time, message_id, subscriber_id,
               campaign_id, ab_test_id, `arm`, url,
               received_time - event_time > {horizon_ms} AS too_late, proc
        FROM (SELECT *, CASE {type_case} END AS event_type FROM bl_fields)
        WHERE event_type IS NOT NULL""",
        """CREATE TEMPORARY VIEW bl_by_id AS
        SELECT * FROM (
            SELECT *, ROW_NUMBER() OVER (PARTITION BY event_id ORDER BY proc) AS rn
            FROM bl_events WHERE NOT too_late)
        WHERE rn = 1""",
        """CREATE TEMPORARY VIEW bl_clean AS
        SELECT event_id, provider, event_type, event_time, received_time, message_id,
               subscriber_id, campaign_id, ab_test_id, `arm`, url FROM (
            SELECT event_id, provider, event_type, event_time, received_time, message_id,
                   subscriber_id, campaign_id, ab_test_id, `arm`, url, ROW_NUMBER() OVER (
                PARTITION BY provider, message_id, subscriber_id, event_type, event_time, url
                ORDER BY proc) AS rn2
            FROM bl_by_id)
        WHERE rn2 = 1""",
    ]


CLEAN_COLUMNS = """event_id STRING, provider STRING, event_type STRING, event_time BIGINT,
  received_time BIGINT, message_id STRING, subscriber_id STRING, campaign_id STRING,
  ab_test_id STRING, `arm` STRING, url STRING"""


def main() -> None:
    config = settings.load()
    _, t_env = runtime.create_env(config, JOB_NAME)
    # UNIX_TIMESTAMP parses in the session zone; provider times are UTC.
    t_env.get_config().set("table.local-time-zone", "UTC")
    t_env.get_config().set("table.exec.state.ttl", f"{config['clean']['dedup_horizon_h']} h")
    # A processing-time column declared on the source (not PROCTIME() in a view) keeps the
    # dedup sub-plan shared by both sinks; per view, the planner duplicates it per sink.
    ddl = tables.raw_source(config, "bl_raw", group="java-baseline")
    t_env.execute_sql(ddl.replace("\n) WITH (", ",\n  proc AS PROCTIME()\n) WITH (", 1))
    kafka = config["kafka"]
    t_env.execute_sql(f"""CREATE TABLE bl_clean_out ({CLEAN_COLUMNS}) WITH (
        'connector' = 'kafka', 'topic' = '{clean_topic(config)}',
        'properties.bootstrap.servers' = '{kafka["bootstrap_servers"]}',
        'key.format' = 'raw', 'key.fields' = 'subscriber_id',
        'value.format' = 'json', 'value.fields-include' = 'ALL',
        'sink.delivery-guarantee' = 'at-least-once')""")
    t_env.execute_sql("""CREATE TABLE bl_counts (campaign_id STRING, `arm` STRING,
        event_type STRING, events BIGINT) WITH ('connector' = 'blackhole')""")
    for statement in build_sql("bl_raw", int(config["clean"]["dedup_horizon_h"]) * 3_600_000):
        t_env.execute_sql(statement)
    stmts = t_env.create_statement_set()
    stmts.add_insert_sql("INSERT INTO bl_clean_out SELECT * FROM bl_clean")
    stmts.add_insert_sql("""INSERT INTO bl_counts
        SELECT campaign_id, `arm`, event_type, COUNT(*) FROM bl_clean
        GROUP BY campaign_id, `arm`, event_type""")
    stmts.execute()


if __name__ == "__main__":
    main()
