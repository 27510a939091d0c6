"""Clean job: email.events -> email.events.clean (deduplicated, within allowed lateness,
stateful bot clicks flagged) + email.late (received more than the horizon after it
happened, with the reason; not deduplicated, since its duplicates may be forgotten).

Deduplication and the lateness split are Flink SQL (Java operators, state with TTL); only
clicks and deliveries pass through one small Python operator that flags bot clicks
(udfs.click_bots), because that needs per-message state and event-time timers.

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
from pyflink.table import StreamTableEnvironment, Table

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
    """Keyed by message and subscriber. Holds each click until the watermark passes
    click time + burst window: by then the delivery and every click that could form a
    burst with it have arrived, so the verdict is final when the click is emitted.

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
        # state is cleared by an event-time timer one horizon after the last event.
        self.delivered_at = runtime_context.get_state(
            ValueStateDescriptor("delivered_at", Types.LONG()))
        # (pending, recent): pending await their verdict; recent were emitted but can
        # still be part of a burst with later clicks.
        self.clicks = runtime_context.get_state(
            ValueStateDescriptor("clicks", Types.PICKLED_BYTE_ARRAY()))
        self.expires_at = runtime_context.get_state(
            ValueStateDescriptor("expires_at", Types.LONG()))

    def _touch(self, event_time: int, ctx: KeyedProcessFunction.Context) -> None:
        expires = event_time + self.horizon_ms
        current = self.expires_at.value()
        if current is None or expires > current:
            self.expires_at.update(expires)
            ctx.timer_service().register_event_time_timer(expires)

    def _load(self) -> tuple[list[dict], list[dict]]:
        raw = self.clicks.value()
        return pickle.loads(raw) if raw else ([], [])

    def process_element(self, value: Row, ctx: KeyedProcessFunction.Context):
        self._touch(value["event_time"], ctx)
        if value["event_type"] == "delivered":
            known = self.delivered_at.value()
            if known is None or value["event_time"] < known:
                self.delivered_at.update(value["event_time"])
            return
        pending, recent = self._load()
        pending.append(value.as_dict())
        self.clicks.update(pickle.dumps((pending, recent)))
        ctx.timer_service().register_event_time_timer(
            value["event_time"] + self.params.burst_window_ms)

    def on_timer(self, timestamp: int, ctx: KeyedProcessFunction.OnTimerContext):
        pending, recent = self._load()
        if timestamp == self.expires_at.value() and not pending:
            self.delivered_at.clear()
            self.clicks.clear()
            self.expires_at.clear()
            return
        window = self.params.burst_window_ms
        ready = [c for c in pending if c["event_time"] + window <= timestamp]
        if not ready:
            return
        waiting = [c for c in pending if c["event_time"] + window > timestamp]
        context = recent + pending
        verdicts = judge_clicks(context, self.delivered_at.value(), self.params)
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
        SELECT {cols} FROM (
            SELECT *, ROW_NUMBER() OVER (
                PARTITION BY provider, message_id, subscriber_id, event_type, event_time, url
                ORDER BY proc) AS rn
            FROM unique_by_id)
        WHERE rn = 1""")

    params = ClickBotParams(after_delivery_s=cfg["bot_click_after_delivery_s"],
                            burst_window_s=cfg["bot_burst_window_s"],
                            burst_min_links=int(cfg["bot_burst_min_links"]))
    clicks_and_deliveries = t_env.to_data_stream(t_env.sql_query(
        f"SELECT {cols} FROM unique_events WHERE event_type IN ('click', 'delivered')"))
    flagged = (clicks_and_deliveries
               .key_by(lambda r: f"{r['message_id'] or ''}|{r['subscriber_id']}",
                       key_type=Types.STRING())
               .process(ClickBotFlagger(params, horizon_s * 1000),
                        output_type=avro_schema.row_type_info("EmailEvent"))
               .name("flag bot clicks")
               .uid("flag-bot-clicks"))
    t_env.create_temporary_view("flagged_clicks", t_env.from_data_stream(flagged))
    clean = t_env.sql_query(f"""
        SELECT {cols} FROM unique_events WHERE event_type <> 'click'
        UNION ALL
        SELECT {cols} FROM flagged_clicks""")
    late_cols = cols.replace(
        "attributes",
        "MAP_UNION(attributes, MAP['late_reason', CONCAT('received ', "
        "CAST((received_time - event_time) / 60000 AS STRING), ' min after the event; "
        f"the horizon is {cfg['dedup_horizon_h']} h')]) AS attributes")
    late = t_env.sql_query(f"SELECT {late_cols} FROM classified WHERE too_late")
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
