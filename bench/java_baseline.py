"""Baseline (a): the normalize + clean + count work as one Flink job whose every operator
is a Java one (PyFlink only builds the plan on the client): the ceiling for Flink on this
hardware.

raw topic -> parse_raw, a Java table function (bench/java/, Jackson; `make bench-deps`
builds it into bench/java/target/email-bench-udf.jar, shipped with the job by
pipeline.jars) that parses each body once and emits one row per provider event (batches
unnested, Mandrill's form field URL-decoded, SES's SNS `Message` parsed a second time) ->
canonical type by CASE -> event id (provider id, else SHA-256 of the content) -> late
split (received - event time > horizon) -> keep-first dedup by event id, then by content
(the clean job's two ROW_NUMBER()s) -> clean topic (JSON, keyed by subscriber) + per
(campaign, arm, type) counts (an upsert topic, so the bench can check them).

Why a UDTF and not pure SQL: the first version extracted the fields with ~45 JSON_VALUE
calls per event (COALESCE over each provider's path), and each call re-parses the whole
JSON text; it ran at 638 events/s against the PyFlink pipeline's 1,643 in the same run
(bench-quick of 2026-11-27 20:28) -- a "ceiling" below the thing it bounds. The other
pure-SQL route, a Kafka source with 'format' = 'json' and one union ROW schema, does not
fit this input: the value of email.raw is a batch (a top-level JSON array) for SendGrid
and SparkPost, a form field for Mandrill and a JSON string inside JSON for SES, and the
json format maps one record to one row, so the batches and Mandrill would still need the
re-parsing JSON functions. One Java parse per body is what a hand-written Flink job does.

Same input and dedup rules as the project's pipeline; what it leaves out (HMAC of
addresses without a subscriber id, IP masking, bot detection, attributes, Avro) is the
part of the work it does not need for these outputs. Submitted by bench/__main__.py:
    flink run -pym bench.java_baseline   (settings from EMAIL_STREAMING_CONFIG)"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import settings
from jobs import runtime, tables

JOB_NAME = "bench-java-baseline"
UDF_JAR = Path(__file__).resolve().parent / "java" / "target" / "email-bench-udf.jar"
UDF_CLASS = "email.bench.ParseRaw"
PARSED_COLUMNS = ("raw_type", "pid", "event_time", "message_id", "subscriber_id",
                  "campaign_id", "ab_test_id", "`arm`", "url", "severity")


def clean_topic(config: Mapping[str, Any]) -> str:
    return settings.topic(config, "clean") + ".java"


def counts_topic(config: Mapping[str, Any]) -> str:
    return settings.topic(config, "clean") + ".java-counts"


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
    """The view definitions, in order (each a CREATE TEMPORARY VIEW); `parse_raw` must be
    registered."""
    # Mailgun's 'failed' is a bounce when permanent, else a deferral.
    type_case = "WHEN LOWER(raw_type) = 'failed' THEN CASE WHEN severity = 'permanent' " \
        "THEN 'bounce' ELSE 'deferred' END " + " ".join(
        f"WHEN LOWER(raw_type) IN ({', '.join(repr(t) for t in names)}) THEN '{canon}'"
        for canon, names in _TYPES.items())
    return [
        f"""CREATE TEMPORARY VIEW bl_fields AS
        SELECT r.provider, r.received_time, r.proc, {", ".join(f"p.{c}" for c in PARSED_COLUMNS)}
        FROM (SELECT CAST(headers['provider'] AS STRING) AS provider,
                     CAST(CAST(headers['received-at'] AS STRING) AS BIGINT) AS received_time,
                     body, proc
              FROM {source}) AS r,
        LATERAL TABLE(parse_raw(r.provider, r.body)) AS p({", ".join(PARSED_COLUMNS)})""",
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
    if not UDF_JAR.is_file():
        raise SystemExit(f"{UDF_JAR} is missing: run `make bench-deps`")
    # The UDTF jar rides with the job (the cluster's lib/ does not hold it); keep the
    # connector jars when the settings ship those too, since this key replaces the list.
    jars = [*(runtime.jar_urls(config) if config["flink"]["add_jars"] else []),
            UDF_JAR.as_uri()]
    _, t_env = runtime.create_env(config, JOB_NAME, {"pipeline.jars": ";".join(jars)})
    t_env.get_config().set("table.exec.state.ttl", f"{config['clean']['dedup_horizon_h']} h")
    t_env.execute_sql(f"CREATE TEMPORARY FUNCTION parse_raw AS '{UDF_CLASS}' LANGUAGE JAVA")
    # A processing-time column declared on the source (not PROCTIME() in a view) keeps the
    # dedup sub-plan shared by both sinks; per view, the planner duplicates it per sink.
    ddl = tables.raw_source(config, "bl_raw", group="java-baseline")
    t_env.execute_sql(ddl.replace("\n) WITH (", ",\n  proc AS PROCTIME()\n) WITH (", 1))
    boot = config["kafka"]["bootstrap_servers"]
    # The same producer batching as the project's sinks (kafka.producer_properties).
    producer = "".join(f"'{k}' = '{v}', "
                       for k, v in tables.client_properties(config, "producer").items())
    t_env.execute_sql(f"""CREATE TABLE bl_clean_out ({CLEAN_COLUMNS}) WITH ({producer}
        'connector' = 'kafka', 'topic' = '{clean_topic(config)}',
        'properties.bootstrap.servers' = '{boot}',
        'key.format' = 'raw', 'key.fields' = 'subscriber_id',
        'value.format' = 'json', 'value.fields-include' = 'ALL',
        'sink.delivery-guarantee' = 'at-least-once')""")
    # Upserts, like the project's metrics job, so that the bench can check the final count
    # of every key against the truth (a primary key cannot hold NULL: no arm -> '').
    t_env.execute_sql(f"""CREATE TABLE bl_counts (campaign_id STRING NOT NULL,
        `arm` STRING NOT NULL, event_type STRING NOT NULL, events BIGINT,
        PRIMARY KEY (campaign_id, `arm`, event_type) NOT ENFORCED) WITH ({producer}
        'connector' = 'upsert-kafka', 'topic' = '{counts_topic(config)}',
        'properties.bootstrap.servers' = '{boot}',
        'key.format' = 'json', 'value.format' = 'json')""")
    for statement in build_sql("bl_raw", int(config["clean"]["dedup_horizon_h"]) * 3_600_000):
        t_env.execute_sql(statement)
    stmts = t_env.create_statement_set()
    stmts.add_insert_sql("INSERT INTO bl_clean_out SELECT * FROM bl_clean")
    stmts.add_insert_sql("""INSERT INTO bl_counts
        SELECT COALESCE(campaign_id, ''), COALESCE(`arm`, ''), event_type, COUNT(*)
        FROM bl_clean GROUP BY COALESCE(campaign_id, ''), COALESCE(`arm`, ''), event_type""")
    stmts.execute()


if __name__ == "__main__":
    main()
