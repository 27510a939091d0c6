"""Clean job: email.events -> email.events.clean (deduplicated, within allowed lateness,
stateful bot clicks flagged) + email.late (received more than the horizon after it
happened, with the reason; not deduplicated, since its duplicates may be forgotten).

Deduplication, the lateness split and the join of clicks with their messages' delivery
times are Flink SQL (Java operators, state with TTL); only clicks pass through one small
Python operator that flags bot clicks (udfs.click_bots), because that needs per-message
state, event-time and processing-time timers. A click leaves it once its verdict is final, or
after clean.bot_click_max_hold_ms with the verdict it has by then.

Duplicates dropped = numRecordsIn - numRecordsOut of the two Deduplicate operators
(Flink metrics, REST /jobs/<id>/vertices/<v>/metrics); late events = records written to
email.late."""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from typing import Any, NamedTuple

from pyflink.common import Row, Types
from pyflink.datastream import KeyedProcessFunction, RuntimeContext, TimeDomain
from pyflink.datastream.state import ValueStateDescriptor
from pyflink.java_gateway import get_gateway
from pyflink.table import DataTypes, Schema, StreamTableEnvironment, Table

import settings
from jobs import avro_schema, runtime, tables
from udfs.click_bots import ClickBotParams, MessageClicks

JOB_NAME = "email-clean"
FIELDS = avro_schema.field_names("EmailEvent")


class Outputs(NamedTuple):
    clean: Table  # EmailEvent columns
    late: Table   # EmailEvent columns, attributes['late_reason'] set


def _digest(*columns: str) -> str:
    """SQL for 32 hex characters of MD5 over the columns (strings, or cast to them).
    Each value goes in as length:value and NULL as 'n', which no length starts with, so
    distinct tuples stay distinct whatever characters the values hold."""
    parts = [f"COALESCE(CAST(CHAR_LENGTH({c}) AS STRING) || ':' || {c}, 'n')"
             for c in columns]
    return f"MD5({' || '.join(parts)})"


# What makes two events the same event when their ids differ: the fields the normalize
# job's content event id covers.
CONTENT_KEY = _digest("provider", "message_id", "subscriber_id", "event_type",
                      "CAST(event_time AS STRING)", "url")


def dedup_state_ttl(config: Mapping[str, Any]) -> str:
    return f"{int(config['clean']['dedup_horizon_h'])} h"


class ClickBotFlagger(KeyedProcessFunction):
    """Keyed by message and subscriber: each click with one delivery time of its message
    (every EmailEvent column, msg_key, delivered_at; a row per delivery, or one with
    none). udfs.click_bots.MessageClicks decides when each click goes out and with which
    verdict; this operator keeps it as keyed state and calls it on each row and timer."""

    def __init__(self, params: ClickBotParams, hold_ms: int, horizon_ms: int):
        self.params = params
        self.hold_ms = hold_ms
        self.horizon_ms = horizon_ms

    def open(self, runtime_context: RuntimeContext) -> None:
        # No StateTtlConfig: in thread mode on a cluster, PyFlink's TTL conversion tries to
        # start a Py4J gateway inside the TaskManager and fails (FileNotFoundError), so
        # state is cleared by an event-time timer one horizon after the message's last
        # click or delivery.
        self.book = runtime_context.get_state(
            ValueStateDescriptor("clicks", Types.PICKLED_BYTE_ARRAY()))
        self.expires_at = runtime_context.get_state(
            ValueStateDescriptor("expires_at", Types.LONG()))

    def _load(self) -> MessageClicks:
        # Only the data is state; the parameters come from the job's settings, so a
        # redeploy with other settings applies them to every message at once.
        raw = self.book.value()
        return MessageClicks(self.params, self.hold_ms, *(pickle.loads(raw) if raw else ()))

    def _save(self, book: MessageClicks, ctx: KeyedProcessFunction.Context,
              event_time: int | None = None):
        timers = ctx.timer_service()
        if event_time is not None:
            expires = event_time + self.horizon_ms
            current = self.expires_at.value()
            if current is None or expires > current:
                self.expires_at.update(expires)
                timers.register_event_time_timer(expires)
        hold_end = book.next_hold_end()
        if hold_end is not None:
            timers.register_processing_time_timer(hold_end)
        self.book.update(pickle.dumps((book.pending, book.recent, book.deliveries,
                                       book.seen)))

    def _emit(self, clicks: list[dict]):
        for click in clicks:
            yield Row(*(click[f] for f in FIELDS))

    def process_element(self, value: Row, ctx: KeyedProcessFunction.Context):
        # Retractions of the join (a click's row without delivery, replaced once one
        # arrives) come through as rows too; they repeat what is known and change nothing.
        timers = ctx.timer_service()
        book = self._load()
        click = value.as_dict()
        delivered_at = click.pop("delivered_at")
        out = book.add_click(click, timers.current_processing_time(),
                             timers.current_watermark(), delivered_at)
        if book.pending:  # final once the watermark passes click time + burst window
            timers.register_event_time_timer(
                value["event_time"] + self.params.burst_window_ms)
        self._save(book, ctx, max(value["event_time"], delivered_at or 0))
        yield from self._emit(out)

    def on_timer(self, timestamp: int, ctx: KeyedProcessFunction.OnTimerContext):
        timers = ctx.timer_service()
        book = self._load()
        watermark = timers.current_watermark()
        if ctx.time_domain() == TimeDomain.EVENT_TIME:
            watermark = max(watermark, timestamp)
            if timestamp == self.expires_at.value() and not book.pending:
                self.book.clear()
                self.expires_at.clear()
                return
        out = book.release(timers.current_processing_time(), watermark)
        self._save(book, ctx)
        yield from self._emit(out)


def _stage(t_env: StreamTableEnvironment, table: Table) -> Table:
    """The table planned on its own, as a stream that later queries read (its rowtime and
    watermarks kept). The records stay in Flink's internal format (RowData) on the Java
    side: PyFlink's to_data_stream converts each to a Row and back, and that hand-over's
    task was 21 % busy in the full bench, against 12 % with RowData."""
    jvm = get_gateway().jvm
    j_tenv = t_env._j_tenv
    row_data = table._j_table.getResolvedSchema().toPhysicalRowDataType().bridgedTo(
        jvm.org.apache.flink.table.data.RowData._java_lang_class)
    stream = j_tenv.toDataStream(table._j_table, row_data)
    schema = (Schema.new_builder()
              .column_by_metadata("rowtime", DataTypes.TIMESTAMP_LTZ(3))
              .watermark("rowtime", "SOURCE_WATERMARK()")
              .build())
    return Table(j_tenv.fromDataStream(stream, schema._j_schema), t_env)


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
    # retried webhook that arrives with a new provider event id. The content key is a
    # digest (CONTENT_KEY) so that each of the horizon's events keeps 32 characters of
    # state, as the id dedup does, rather than its message id, subscriber and url.
    t_env.execute_sql(f"""
        CREATE TEMPORARY VIEW unique_by_id AS
        SELECT {cols}, ts, proc FROM (
            SELECT *, ROW_NUMBER() OVER (PARTITION BY event_id ORDER BY proc) AS rn
            FROM classified WHERE NOT too_late)
        WHERE rn = 1""")
    t_env.execute_sql(f"""
        CREATE TEMPORARY VIEW unique_events AS
        SELECT {cols}, ts FROM (
            SELECT *, ROW_NUMBER() OVER (PARTITION BY {CONTENT_KEY} ORDER BY proc) AS rn
            FROM unique_by_id)
        WHERE rn = 1""")
    # Every query below reads this one stream. Each hand-over to the DataStream API (here,
    # and the clicks to Python) is planned on its own, so without it the source and both
    # deduplications ran twice, with their state.
    t_env.create_temporary_view("staged", _stage(t_env, t_env.sql_query(f"""
        SELECT {cols}, ts, FALSE AS too_late FROM unique_events
        UNION ALL
        SELECT {cols}, ts, TRUE AS too_late FROM classified WHERE too_late""")))
    # Each click meets the delivery times of its message in a regular join (Java, state
    # with the job's TTL), so only clicks reach the Python operator, not the deliveries
    # (about half of all events; passing them through Python halved the job's
    # throughput). The join does not wait for the watermark: a click goes out as soon
    # as its verdict is final or its hold is over (udfs.click_bots.MessageClicks).
    msg_key = "COALESCE(message_id, '') || '|' || subscriber_id"
    clicks = t_env.sql_query(f"""
        SELECT c.*, d.event_time AS delivered_at
        FROM (SELECT {cols}, {msg_key} AS msg_key
              FROM staged WHERE event_type = 'click' AND NOT too_late) AS c
        LEFT JOIN (SELECT {msg_key} AS msg_key, event_time
                   FROM staged WHERE event_type = 'delivered' AND NOT too_late) AS d
        ON c.msg_key = d.msg_key""")

    params = ClickBotParams(after_delivery_s=cfg["bot_click_after_delivery_s"],
                            burst_window_s=cfg["bot_burst_window_s"],
                            burst_min_links=int(cfg["bot_burst_min_links"]))
    flagged = (t_env.to_changelog_stream(clicks)
               .key_by(lambda r: r["msg_key"], key_type=Types.STRING())
               .process(ClickBotFlagger(params, int(cfg["bot_click_max_hold_ms"]),
                                        horizon_s * 1000),
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
