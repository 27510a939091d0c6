"""Clean job: email.events -> email.events.clean (deduplicated, within allowed lateness,
stateful bot clicks flagged) + email.late (received more than the horizon after it
happened, with the reason; not deduplicated, since its duplicates may be forgotten).

Deduplication, the lateness split and finding each click's delivery are Flink SQL (Java
operators, state with TTL); only clicks pass through one small Python operator that flags
bot clicks (udfs.click_bots), because a burst needs per-message state and event-time
timers.

Duplicates dropped = numRecordsIn - numRecordsOut of the two Deduplicate operators
(Flink metrics, REST /jobs/<id>/vertices/<v>/metrics); late events = records written to
email.late."""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from typing import Any, NamedTuple

from pyflink.common import Row, Types
from pyflink.datastream import KeyedProcessFunction, RuntimeContext
from pyflink.datastream.state import ValueStateDescriptor
from pyflink.table import DataTypes, Schema, StreamTableEnvironment, Table

import settings
from jobs import avro_schema, runtime, tables
from udfs.click_bots import ClickBotParams, judge_clicks

JOB_NAME = "email-clean"
FIELDS = avro_schema.field_names("EmailEvent")


class Outputs(NamedTuple):
    clean: Table  # EmailEvent columns
    late: Table   # EmailEvent columns, attributes['late_reason'] set


def dedup_state_ttl(config: Mapping[str, Any]) -> str:
    return f"{int(config['clean']['dedup_horizon_h'])} h"


class ClickBotFlagger(KeyedProcessFunction):
    """Clicks only, keyed by message and subscriber, each with its delivery time from the
    temporal join. Holds each click until the watermark passes click time + burst window:
    by then every click that could form a burst with it has arrived, so the verdict is
    final when the click is emitted.

    The clean stream is append-only, so a delivery that arrives behind the watermark (its
    partition was idle and joined late) cannot revise a verdict already emitted: such a
    click counts as human. With steady traffic every partition is active and this does
    not happen; with sparse traffic, send deliveries before the clicks they explain."""

    def __init__(self, params: ClickBotParams, horizon_ms: int):
        self.params = params
        self.horizon_ms = horizon_ms

    def open(self, runtime_context: RuntimeContext) -> None:
        # No StateTtlConfig: in thread mode on a cluster, PyFlink's TTL conversion tries to
        # start a Py4J gateway inside the TaskManager and fails (FileNotFoundError), so
        # state is cleared by an event-time timer one horizon after the last click.
        # (pending, recent): pending await their verdict; recent were emitted but can
        # still be part of a burst with later clicks.
        self.clicks = runtime_context.get_state(
            ValueStateDescriptor("clicks", Types.PICKLED_BYTE_ARRAY()))
        self.expires_at = runtime_context.get_state(
            ValueStateDescriptor("expires_at", Types.LONG()))

    def _load(self) -> tuple[list[dict], list[dict]]:
        raw = self.clicks.value()
        return pickle.loads(raw) if raw else ([], [])

    def process_element(self, value: Row, ctx: KeyedProcessFunction.Context):
        expires = value["event_time"] + self.horizon_ms
        current = self.expires_at.value()
        if current is None or expires > current:
            self.expires_at.update(expires)
            ctx.timer_service().register_event_time_timer(expires)
        pending, recent = self._load()
        pending.append(value.as_dict())
        self.clicks.update(pickle.dumps((pending, recent)))
        ctx.timer_service().register_event_time_timer(
            value["event_time"] + self.params.burst_window_ms)

    def on_timer(self, timestamp: int, ctx: KeyedProcessFunction.OnTimerContext):
        pending, recent = self._load()
        if timestamp == self.expires_at.value() and not pending:
            self.clicks.clear()
            self.expires_at.clear()
            return
        window = self.params.burst_window_ms
        ready = [c for c in pending if c["event_time"] + window <= timestamp]
        if not ready:
            return
        waiting = [c for c in pending if c["event_time"] + window > timestamp]
        context = recent + pending
        verdicts = judge_clicks(context, self.params)
        judged = {id(c): v for c, v in zip(context, verdicts, strict=True)}
        for click in ready:
            click["suspected_bot"], click["bot_reason"] = judged[id(click)]
            yield Row(*(click[f] for f in FIELDS))
        recent = [c for c in recent + ready if c["event_time"] >= timestamp - 2 * window]
        self.clicks.update(pickle.dumps((waiting, recent)))


def build(t_env: StreamTableEnvironment, config: Mapping[str, Any], source: str) -> Outputs:
    """`source` has the EmailEvent columns plus rowtime `ts` (with watermark) and
    processing time `proc`."""
    cfg = config["clean"]
    horizon_s = int(cfg["dedup_horizon_h"]) * 3600
    t_env.get_config().set("table.exec.state.ttl", dedup_state_ttl(config))
    cols = avro_schema.select_list("EmailEvent")
    # Late = received more than the horizon after it happened. Judged on the record's own
    # times (not the watermark) so that a replay or a restart from a savepoint, which
    # starts without a watermark, classifies every event exactly as the first run did.
    t_env.execute_sql(f"""
        CREATE TEMPORARY VIEW classified AS
        SELECT {cols}, ts, proc,
               received_time - event_time > {horizon_s * 1000} AS too_late
        FROM {source}""")
    # Two keep-first deduplications: by event id, then by content, which catches a
    # retried webhook that arrives with a new provider event id.
    t_env.execute_sql(f"""
        CREATE TEMPORARY VIEW unique_by_id AS
        SELECT {cols}, ts, proc FROM (
            SELECT *, ROW_NUMBER() OVER (PARTITION BY event_id ORDER BY proc) AS rn
            FROM classified WHERE NOT too_late)
        WHERE rn = 1""")
    t_env.execute_sql(f"""
        CREATE TEMPORARY VIEW unique_events AS
        SELECT {cols}, ts FROM (
            SELECT *, ROW_NUMBER() OVER (
                PARTITION BY provider, message_id, subscriber_id, event_type, event_time, url
                ORDER BY proc) AS rn
            FROM unique_by_id)
        WHERE rn = 1""")
    # Every query below reads this one stream. Each hand-over to the DataStream API (here,
    # and the clicks to Python) is planned on its own, so without it the source and both
    # deduplications ran twice, with their state.
    staged = t_env.to_data_stream(t_env.sql_query(f"""
        SELECT {cols}, ts, FALSE AS too_late FROM unique_events
        UNION ALL
        SELECT {cols}, ts, TRUE AS too_late FROM classified WHERE too_late"""))
    t_env.create_temporary_view("staged", t_env.from_data_stream(
        staged, Schema.new_builder()
        .column_by_metadata("rowtime", DataTypes.TIMESTAMP_LTZ(3))
        .watermark("rowtime", "SOURCE_WATERMARK()")
        .build()))
    # Each click gets the time of its message's delivery from an event-time temporal join
    # (the latest delivery at or before the click), in Java operators: deliveries are
    # about half of all events and never reach Python. The join waits for the watermark,
    # so a delivery that arrives a little after its click still counts; a click behind
    # the watermark is joined at the next watermark, not dropped.
    msg_key = "COALESCE(message_id, '') || '|' || subscriber_id"
    t_env.execute_sql(f"""
        CREATE TEMPORARY VIEW deliveries AS
        SELECT msg_key, event_time AS delivered_at, rowtime FROM (
            SELECT {msg_key} AS msg_key, event_time, rowtime,
                   ROW_NUMBER() OVER (PARTITION BY {msg_key} ORDER BY rowtime DESC) AS rn
            FROM staged WHERE event_type = 'delivered' AND NOT too_late)
        WHERE rn = 1""")
    t_env.execute_sql(f"""
        CREATE TEMPORARY VIEW staged_clicks AS
        SELECT {cols}, rowtime, {msg_key} AS msg_key
        FROM staged WHERE event_type = 'click' AND NOT too_late""")
    clicks = t_env.sql_query(f"""
        SELECT {avro_schema.select_list("EmailEvent", "c.")}, c.msg_key, d.delivered_at
        FROM staged_clicks AS c
        LEFT JOIN deliveries FOR SYSTEM_TIME AS OF c.rowtime AS d ON c.msg_key = d.msg_key""")

    params = ClickBotParams(after_delivery_s=cfg["bot_click_after_delivery_s"],
                            burst_window_s=cfg["bot_burst_window_s"],
                            burst_min_links=int(cfg["bot_burst_min_links"]))
    flagged = (t_env.to_data_stream(clicks)
               .key_by(lambda r: r["msg_key"], key_type=Types.STRING())
               .process(ClickBotFlagger(params, horizon_s * 1000),
                        output_type=avro_schema.row_type_info("EmailEvent"))
               .name("flag bot clicks")
               .uid("flag-bot-clicks"))
    t_env.create_temporary_view("flagged_clicks", t_env.from_data_stream(flagged))
    clean = t_env.sql_query(f"""
        SELECT {cols} FROM staged WHERE NOT too_late AND event_type <> 'click'
        UNION ALL
        SELECT {cols} FROM flagged_clicks""")
    late_cols = cols.replace(
        "attributes",
        "MAP_UNION(attributes, MAP['late_reason', CONCAT('received ', "
        "CAST((received_time - event_time) / 60000 AS STRING), ' min after the event; "
        f"the horizon is {cfg['dedup_horizon_h']} h')]) AS attributes")
    late = t_env.sql_query(f"SELECT {late_cols} FROM staged WHERE too_late")
    return Outputs(clean=clean, late=late)


def main() -> None:
    config = settings.load()
    _, t_env = runtime.create_env(config, JOB_NAME)
    t_env.execute_sql(tables.events_source(config, "events", "clean", "email_events_in"))
    t_env.execute_sql(tables.events_sink(config, "clean", "clean", "email_events_clean",
                                         key="subscriber_id"))
    t_env.execute_sql(tables.events_sink(config, "late", "clean", "email_late"))
    out = build(t_env, config, "email_events_in")
    stmts = t_env.create_statement_set()
    stmts.add_insert("email_events_clean", out.clean)
    stmts.add_insert("email_late", out.late)
    stmts.execute()


if __name__ == "__main__":
    main()
