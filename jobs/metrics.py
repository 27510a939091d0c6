"""Campaign metrics job: email.events.clean + commerce.conversions -> campaign.metrics
(upsert-kafka) + PostgreSQL campaign_metrics (JDBC upserts).

Per campaign, A/B test and arm, one row per minute of event time and one cumulative row.
The aggregations are plain (non-windowed) GROUP BYs, so a late event updates the row it
belongs to instead of being dropped after a window closed; the sinks upsert on the
primary key, so the tables always hold the current truth. State expires after
metrics.state_ttl_days without updates."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

from pyflink.table import StreamTableEnvironment, Table

import settings
from jobs import avro_schema, runtime, tables

JOB_NAME = "email-campaign-metrics"
KEY = ["campaign_id", "ab_test_id", "arm", "granularity", "window_start"]

# Every metric as an aggregate over the unified `facts` view below.
_COUNTS = """
    COUNT(*) FILTER (WHERE kind = 'delivered') AS delivered,
    COUNT(*) FILTER (WHERE kind = 'deferred') AS deferred,
    COUNT(*) FILTER (WHERE kind = 'dropped') AS dropped,
    COUNT(*) FILTER (WHERE kind = 'bounce' AND bounce_class = 'hard') AS bounces_hard,
    COUNT(*) FILTER (WHERE kind = 'bounce' AND bounce_class IS DISTINCT FROM 'hard')
        AS bounces_soft,
    COUNT(*) FILTER (WHERE kind = 'complaint') AS complaints,
    COUNT(*) FILTER (WHERE kind = 'unsubscribe') AS unsubscribes,
    COUNT(DISTINCT CASE WHEN kind = 'open' AND machine_open IS NOT TRUE AND NOT suspected_bot
                        THEN subscriber_id END) AS unique_human_opens,
    COUNT(DISTINCT CASE WHEN kind = 'open' AND machine_open IS TRUE
                        THEN subscriber_id END) AS unique_machine_opens,
    COUNT(DISTINCT CASE WHEN kind = 'click' AND NOT suspected_bot
                        THEN subscriber_id END) AS unique_clicks,
    COUNT(*) FILTER (WHERE kind = 'click' AND suspected_bot) AS bot_clicks,
    COUNT(*) FILTER (WHERE kind = 'conversion') AS conversions,
    COALESCE(SUM(`value`) FILTER (WHERE kind = 'conversion'), 0.0) AS conversion_value"""


_RATES = {
    "open_rate": "unique_human_opens",
    "click_rate": "unique_clicks",
    "conversion_rate": "conversions",
    "bounce_rate": "bounces_hard + bounces_soft",
    "complaint_rate": "complaints",
    "unsubscribe_rate": "unsubscribes",
}


class Outputs(NamedTuple):
    metrics: Table  # CampaignMetrics columns, updating (upsert on KEY)


def build(t_env: StreamTableEnvironment, config: Mapping[str, Any], events: str,
          conversions: str) -> Outputs:
    """`events`: EmailEvent columns (the clean stream); `conversions`: Conversion columns."""
    runtime.enable_mini_batch(t_env, config)
    t_env.get_config().set("table.exec.state.ttl",
                           f"{int(config['metrics']['state_ttl_days'])} d")
    # The shop may resend an order; count it once.
    t_env.execute_sql(f"""
        CREATE TEMPORARY VIEW unique_conversions AS
        SELECT * FROM (
            SELECT *, ROW_NUMBER() OVER (PARTITION BY order_id ORDER BY PROCTIME()) AS rn
            FROM {conversions})
        WHERE rn = 1""")
    # One row shape for emails and orders; orders come from commerce.conversions only
    # (the system of record), so tracker 'conversion' events are not counted twice.
    t_env.execute_sql(f"""
        CREATE TEMPORARY VIEW facts AS
        SELECT campaign_id, COALESCE(ab_test_id, '') AS ab_test_id, COALESCE(`arm`, '') AS `arm`,
               event_time, event_type AS kind, subscriber_id, machine_open, suspected_bot,
               bounce_class, CAST(NULL AS DOUBLE) AS `value`
        FROM {events}
        WHERE campaign_id IS NOT NULL AND event_type <> 'conversion'
        UNION ALL
        SELECT campaign_id, COALESCE(ab_test_id, ''), COALESCE(`arm`, ''), event_time,
               'conversion', subscriber_id, CAST(NULL AS BOOLEAN), FALSE,
               CAST(NULL AS STRING), `value`
        FROM unique_conversions
        WHERE campaign_id IS NOT NULL""")
    rates = ",\n".join(
        f"CASE WHEN delivered > 0 THEN CAST({num} AS DOUBLE) / delivered END AS {name}"
        for name, num in _RATES.items())
    counts = ", ".join(c for c in avro_schema.field_names("CampaignMetrics")
                       if c not in KEY and c not in _RATES)
    minute = "event_time - MOD(event_time, 60000)"
    metrics = t_env.sql_query(f"""
        SELECT campaign_id, ab_test_id, `arm`, granularity, window_start, {counts}, {rates}
        FROM (
            SELECT campaign_id, ab_test_id, `arm`, 'minute' AS granularity,
                   {minute} AS window_start, {_COUNTS}
            FROM facts GROUP BY campaign_id, ab_test_id, `arm`, {minute}
            UNION ALL
            SELECT campaign_id, ab_test_id, `arm`, 'total', CAST(0 AS BIGINT), {_COUNTS}
            FROM facts GROUP BY campaign_id, ab_test_id, `arm`)""")
    return Outputs(metrics=metrics)


def main() -> None:
    config = settings.load()
    _, t_env = runtime.create_env(config, JOB_NAME)
    t_env.execute_sql(tables.events_source(config, "clean", "metrics", "clean_events"))
    t_env.execute_sql(tables.conversions_source(config, "metrics"))
    t_env.execute_sql(tables.upsert_kafka_sink(config, "metrics", "CampaignMetrics", KEY,
                                               "campaign_metrics_topic"))
    t_env.execute_sql(tables.jdbc_sink(config, "campaign_metrics_table", "campaign_metrics",
                                       avro_schema.column_ddl("CampaignMetrics"),
                                       ", ".join(avro_schema.quote(k) for k in KEY)))
    out = build(t_env, config, "clean_events", "conversions_in")
    stmts = t_env.create_statement_set()
    stmts.add_insert("campaign_metrics_topic", out.metrics)
    stmts.add_insert("campaign_metrics_table", out.metrics)
    stmts.execute()


if __name__ == "__main__":
    main()
