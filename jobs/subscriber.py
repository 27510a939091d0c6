"""Subscriber job: email.events.clean + email.late + subscriber.profiles + privacy.erasure ->
subscriber.scores, subscriber.send_time, subscriber.suppressions (upsert-kafka, compacted,
key subscriber_id) + the same as PostgreSQL upserts.

SQL unions the four inputs into one row shape (a `kind` column says which input), and ONE
Python KeyedProcessFunction keyed by subscriber_id keeps everything about a subscriber in a
single pickled state value: one Python operator and one state read/write per record is the
cheapest shape in thread mode. The math is udfs.scoring / udfs.send_time / udfs.suppression.

Time and order
  * Suppressions apply on arrival (lowest latency; SuppressionState is order-free).
  * Score and send-time events wait in state until the watermark passes their event time,
    then apply with the profile version in effect at that time (tracking consent, time
    zone). So a profile that arrives after the events it governs still decides them, and
    the result does not depend on how the inputs interleave.
  * Outputs are emitted on change: at once when should_emit says the change matters, and
    otherwise once `settle_s` of event time later if the exact row differs. A row is always
    "output as of the latest scored event", so the final rows are the same for any arrival
    order.
  * Tier review timers move quiet subscribers down the tiers as event time passes. The
    end-of-input watermark (Long.MAX, bounded runs only) is not a time, so reviews ignore it.
  * The send-time population prior (shrinkage target and fallback) is the configured curve
    `subscriber.send_time.population`, not a live aggregate: a population computed in
    the job would have to reach every key (a broadcast) and would make each row depend on
    how that stream interleaves with the keyed events. See udfs/send_time.py.

Erasure: the request clears the subscriber's state and emits DELETE rows (RowKind.DELETE
through from_changelog_stream) for every output row it had; the upsert sinks turn them into
tombstones and SQL DELETEs. Only a marker (the request time) stays until the watermark is
`erasure_memory_days` past the request, so that events and profiles up to the request time
that arrive afterwards (late events, a replay of the clean topic) are dropped instead of
bringing the subscriber back. Events after the request time are new data and kept."""

from __future__ import annotations

import bisect
import pickle
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from pyflink.common import Row, RowKind, Types
from pyflink.datastream import KeyedProcessFunction, OutputTag, RuntimeContext
from pyflink.datastream.state import ValueStateDescriptor
from pyflink.table import Schema, StreamTableEnvironment, Table

import settings
from jobs import avro_schema, runtime, tables
from udfs.scoring import (
    MS_PER_DAY,
    ScoreOutput,
    ScoreState,
    ScoringParams,
    event_weight,
    is_human_engagement,
    is_permanent_failure,
    should_emit,
)
from udfs.send_time import (
    SendTimeParams,
    SendTimeResult,
    SendTimeState,
    resolve_zone,
    should_emit_send_time,
)
from udfs.suppression import SuppressionParams, SuppressionState, feeds_engagement

JOB_NAME = "email-subscriber"
SCORES, SEND_TIME, SUPPRESSIONS = "SubscriberScore", "SubscriberSendTime", "SubscriberSuppression"
KEY = ["subscriber_id"]
MAX_WATERMARK = 2**63 - 1
# Profile versions kept per subscriber: enough for consent flip-flops around late events,
# small enough to keep the state bounded.
MAX_PROFILE_VERSIONS = 8



@dataclass(frozen=True)
class JobParams:
    scoring: ScoringParams
    send_time: SendTimeParams
    suppression: SuppressionParams
    settle_ms: int  # small changes are emitted this long (event time) after they happened
    # How long (event time) events up to an erasure are still recognised and dropped; it
    # must exceed how far behind the watermark late events can arrive (email.late).
    erasure_memory_ms: int


def job_params(config: Mapping[str, Any]) -> JobParams:
    """All subscriber parameters from the `subscriber:` config section."""
    cfg = config["subscriber"]
    send = dict(cfg["send_time"])
    if "kernel" in send:
        send["kernel"] = tuple(send["kernel"])
    return JobParams(
        scoring=ScoringParams(**cfg["scoring"]),
        send_time=SendTimeParams(**send),
        suppression=SuppressionParams(**cfg["suppression"]),
        settle_ms=int(float(cfg["settle_s"]) * 1000),
        erasure_memory_ms=int(float(cfg["erasure_memory_days"]) * MS_PER_DAY),
    )


def changelog_schema(schema: str) -> Schema:
    """Table schema of an output stream: the Avro columns, primary key subscriber_id, so
    the planner knows the stream is keyed like the sinks (no upsert materializer)."""
    builder = Schema.new_builder()
    for name, flink_type in avro_schema.columns(schema):
        builder.column(name, flink_type)
    return builder.primary_key(*KEY).build()


# --------------------------------------------------------------------------------------
# Keyed state of one subscriber
# --------------------------------------------------------------------------------------

# A pending event: only what the scoring and send-time code reads.
_EVENT_FIELDS = ("event_time", "event_type", "bounce_class", "machine_open", "suspected_bot")


def _new_state() -> dict[str, Any]:
    return {
        "score": None,      # ScoreState.to_tuple()
        "send": None,       # (ref_time, ((slot, count), ...)) nonzero slots only
        "supp": None,       # SuppressionState.to_tuple()
        "profiles": [],     # [(updated_at, tracking_consent, time_zone)] sorted, newest last
        "pending": [],      # events waiting for the watermark, as _EVENT_FIELDS tuples
        "out": {SCORES: None, SEND_TIME: None, SUPPRESSIONS: None},  # last emitted rows
        "settle_at": None,  # event-time timer for the exact row of small changes
        "review_at": None,  # event-time timer for the next tier change without events
        "as_of_floor": None,  # latest review time: scores never go back before it
        "erased_before": None,  # erasure marker (request time)
    }


def _is_empty(st: dict[str, Any]) -> bool:
    return (st["score"] is None and st["send"] is None and st["supp"] is None
            and not st["profiles"] and not st["pending"]
            and all(v is None for v in st["out"].values()))


def _profile_at(profiles: list[tuple], t: int) -> tuple[bool | None, str | None]:
    """(tracking_consent, time_zone) of the version in effect at t; none yet → unknown."""
    i = bisect.bisect_right([p[0] for p in profiles], t)
    if i == 0:
        return None, None
    _, tracking, zone = profiles[i - 1]
    return tracking, zone


class SubscriberProcessor(KeyedProcessFunction):
    """Keyed by subscriber_id; input rows have the `unified` view's columns."""

    SEND_TIME_TAG = OutputTag("send_time", avro_schema.row_type_info(SEND_TIME))
    SUPPRESSION_TAG = OutputTag("suppressions", avro_schema.row_type_info(SUPPRESSIONS))

    def __init__(self, params: JobParams):
        self.params = params

    def open(self, runtime_context: RuntimeContext) -> None:
        # One pickled value instead of several states: one read and one write per record.
        # No StateTtlConfig (thread mode on a cluster cannot convert it); erasure and the
        # marker timer clear it.
        self.state = runtime_context.get_state(
            ValueStateDescriptor("subscriber", Types.PICKLED_BYTE_ARRAY()))

    # ---- state helpers ----------------------------------------------------------------

    def _load(self) -> dict[str, Any]:
        raw = self.state.value()
        return pickle.loads(raw) if raw else _new_state()

    def _save(self, st: dict[str, Any]) -> None:
        if _is_empty(st) and st["erased_before"] is None:
            self.state.clear()
        else:
            self.state.update(pickle.dumps(st, protocol=pickle.HIGHEST_PROTOCOL))

    def _score(self, st: dict[str, Any]) -> ScoreState:
        p = self.params.scoring
        return ScoreState(p) if st["score"] is None else ScoreState.from_tuple(st["score"], p)

    def _send(self, st: dict[str, Any]) -> SendTimeState:
        p = self.params.send_time
        if st["send"] is None:
            return SendTimeState(p)
        # Stored sparse: a subscriber engages in few of the 168 slots, and the dense
        # histogram would be ~1.5 KB of the ~1.9 KB state.
        ref_time, sparse = st["send"]
        counts = [0.0] * p.slots
        for slot, count in sparse:
            counts[slot] = count
        return SendTimeState.from_tuple((ref_time, counts), p)

    @staticmethod
    def _send_tuple(send: SendTimeState) -> tuple | None:
        if send.is_empty:
            return None
        ref_time, counts = send.to_tuple()
        return ref_time, tuple((i, c) for i, c in enumerate(counts) if c != 0.0)

    def _supp(self, st: dict[str, Any]) -> SuppressionState:
        p = self.params.suppression
        return (SuppressionState(p) if st["supp"] is None
                else SuppressionState.from_tuple(st["supp"], p))

    # ---- outputs ------------------------------------------------------------------------

    @staticmethod
    def _changes(name: str, prev: tuple | None, new: tuple | None):
        """Changelog rows turning the last emitted row `prev` into `new` (None = no row)."""
        tag = {SCORES: None, SEND_TIME: SubscriberProcessor.SEND_TIME_TAG,
               SUPPRESSIONS: SubscriberProcessor.SUPPRESSION_TAG}[name]

        def out(values: tuple, kind: RowKind):
            row = Row(*values)
            row.set_row_kind(kind)
            return row if tag is None else (tag, row)

        if prev == new:
            return
        if prev is None:
            yield out(new, RowKind.INSERT)
        elif new is None:
            yield out(prev, RowKind.DELETE)
        else:
            # Full retraction pairs: collectors see exact changes, and the upsert sinks
            # drop the UPDATE_BEFORE rows (the planner knows the key).
            yield out(prev, RowKind.UPDATE_BEFORE)
            yield out(new, RowKind.UPDATE_AFTER)

    def _emit(self, st: dict[str, Any], name: str, new: tuple | None):
        prev = st["out"][name]
        st["out"][name] = new
        yield from self._changes(name, prev, new)

    def _score_row(self, sid: str, st: dict[str, Any]) -> tuple[tuple | None, ScoreOutput | None]:
        if st["score"] is None:
            return None, None
        score = self._score(st)
        as_of = max(score.ref_time, st["as_of_floor"] or score.ref_time)
        out = score.output(as_of, suppressed=self._supp(st).status() is not None)
        return (sid, out.score, out.tier, out.last_human_engagement_time, out.as_of), out

    def _send_row(self, sid: str, st: dict[str, Any]) -> tuple[tuple | None, SendTimeResult | None]:
        if st["send"] is None:
            return None, None
        res = self._send(st).best()  # population: the configured prior (params)
        zone = st["profiles"][-1][2] if st["profiles"] else None
        if resolve_zone(zone, None) is None:
            zone = self.params.send_time.default_time_zone
        return (sid, res.slot, res.weekday, res.hour, zone, res.confidence, res.source,
                res.effective_events, res.as_of), res

    def _supp_row(self, sid: str, st: dict[str, Any]) -> tuple | None:
        status = self._supp(st).status()
        if status is None:
            return None
        return (sid, status.reason, status.scope, status.since,
                ",".join(r for r, _ in status.reasons))

    def _emit_changed(self, sid: str, st: dict[str, Any], now: int, ctx, settle: bool = False):
        """Emit score/send-time rows whose change matters; schedule the settle timer for
        rows that changed only a little (or emit them exactly if `settle`)."""
        new_score, score_out = self._score_row(sid, st)
        prev_score = st["out"][SCORES]
        if new_score != prev_score:
            prev_out = None if prev_score is None else ScoreOutput(*prev_score[1:])
            if settle or score_out is None or should_emit(prev_out, score_out,
                                                          self.params.scoring):
                yield from self._emit(st, SCORES, new_score)
        new_send, send_res = self._send_row(sid, st)
        prev_send = st["out"][SEND_TIME]
        if new_send != prev_send:
            prev_res = None if prev_send is None else SendTimeResult(
                prev_send[1], prev_send[2], prev_send[3], prev_send[5], prev_send[6],
                prev_send[7], 0.0, prev_send[8])
            if settle or send_res is None or should_emit_send_time(prev_res, send_res,
                                                                  self.params.send_time):
                yield from self._emit(st, SEND_TIME, new_send)
        pending_change = (new_score != st["out"][SCORES] or new_send != st["out"][SEND_TIME])
        if pending_change and st["settle_at"] is None:
            st["settle_at"] = now + self.params.settle_ms
            ctx.timer_service().register_event_time_timer(st["settle_at"])
        self._schedule_review(st, now, ctx)

    def _schedule_review(self, st: dict[str, Any], now: int, ctx) -> None:
        if st["score"] is None:
            return
        score = self._score(st)
        as_of = max(now, score.ref_time)
        review = score.next_review_time(as_of, suppressed=self._supp(st).status() is not None)
        if review is not None and review != st["review_at"]:
            st["review_at"] = review
            ctx.timer_service().register_event_time_timer(review)

    # ---- input --------------------------------------------------------------------------

    def process_element(self, value: Row, ctx: KeyedProcessFunction.Context):
        st = self._load()
        sid, kind, t = value["subscriber_id"], value["kind"], value["t"]
        if kind == "erasure":
            yield from self._erase(st, t, ctx)
            return
        if st["erased_before"] is not None and t <= st["erased_before"]:
            return  # belongs to erased data
        supp = self._supp(st)
        before = supp.status()
        if kind == "profile":
            versions = [p for p in st["profiles"] if p[0] != t]
            bisect.insort(versions, (t, value["tracking_consent"], value["time_zone"]),
                          key=lambda p: p[0])
            st["profiles"] = versions[-MAX_PROFILE_VERSIONS:]
            supp.apply_consent(value["marketing_consent"], value["marketing_consent_at"] or t)
        else:
            event = {f: t if f == "event_time" else value[f] for f in _EVENT_FIELDS}
            supp.add(event)
            if self._scores_event(event):
                st["pending"].append(tuple(event[f] for f in _EVENT_FIELDS))
                ctx.timer_service().register_event_time_timer(t)
        kept = supp.to_tuple()
        st["supp"] = None if kept == SuppressionState(supp.params).to_tuple() else kept
        if supp.status() != before:
            yield from self._emit(st, SUPPRESSIONS, self._supp_row(sid, st))
            # The tier says "unreachable" while suppressed: re-evaluate it now.
            yield from self._emit_changed(sid, st, ctx.timer_service().current_watermark(), ctx)
        self._save(st)

    def _scores_event(self, event: Mapping[str, Any]) -> bool:
        """Whether the event can change the score or send-time state at all; weight-0
        events (deliveries) are skipped so that they neither re-date nor re-emit rows."""
        return (event_weight(event, self.params.scoring) != 0
                or is_human_engagement(event) or is_permanent_failure(event))

    def _erase(self, st: dict[str, Any], requested_at: int, ctx):
        for name in (SCORES, SEND_TIME, SUPPRESSIONS):
            yield from self._emit(st, name, None)
        marker = max(requested_at, st["erased_before"] or requested_at)
        st = _new_state()
        st["erased_before"] = marker
        ctx.timer_service().register_event_time_timer(marker + self.params.erasure_memory_ms)
        self._save(st)

    # ---- timers -------------------------------------------------------------------------

    def on_timer(self, timestamp: int, ctx: KeyedProcessFunction.OnTimerContext):
        raw = self.state.value()
        if not raw:
            return
        st = pickle.loads(raw)
        sid = ctx.get_current_key()
        marker = st["erased_before"]
        if marker is not None and timestamp >= marker + self.params.erasure_memory_ms:
            st["erased_before"] = None
        due = [e for e in st["pending"] if e[0] <= timestamp]
        if due:
            st["pending"] = [e for e in st["pending"] if e[0] > timestamp]
            self._apply(st, sorted(due, key=lambda e: (e[0], e[1])))
        settle = st["settle_at"] is not None and timestamp >= st["settle_at"]
        if settle:
            st["settle_at"] = None
        end_of_input = ctx.timer_service().current_watermark() >= MAX_WATERMARK
        if st["review_at"] is not None and timestamp >= st["review_at"]:
            st["review_at"] = None
            if not end_of_input:
                st["as_of_floor"] = max(timestamp, st["as_of_floor"] or timestamp)
        if due or settle or st["as_of_floor"] == timestamp:
            yield from self._emit_changed(sid, st, timestamp, ctx, settle=settle)
        self._save(st)

    def _apply(self, st: dict[str, Any], events: list[tuple]) -> None:
        score, send = self._score(st), self._send(st)
        for values in events:
            event = dict(zip(_EVENT_FIELDS, values, strict=True))
            tracking, zone = _profile_at(st["profiles"], event["event_time"])
            if not feeds_engagement(event, tracking):
                continue
            score.add(event)
            send.add(event, zone)
        st["score"] = None if score.is_empty else score.to_tuple()
        st["send"] = self._send_tuple(send)


# --------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------


class Outputs(NamedTuple):
    scores: Table         # SubscriberScore columns, changelog keyed by subscriber_id
    send_time: Table      # SubscriberSendTime columns
    suppressions: Table   # SubscriberSuppression columns


def build(t_env: StreamTableEnvironment, config: Mapping[str, Any], events: str, late: str,
          profiles: str, erasures: str) -> Outputs:
    """`events`, `late`: EmailEvent columns + rowtime `ts`; `profiles`: SubscriberProfile
    columns + rowtime `ts`; `erasures`: ErasureRequest columns + rowtime `ts`. The rowtimes
    only drive the watermark; the logic reads event_time / updated_at / requested_at."""
    params = job_params(config)
    nulls = {"event_type": "STRING", "bounce_class": "STRING", "machine_open": "BOOLEAN",
             "suspected_bot": "BOOLEAN", "time_zone": "STRING", "marketing_consent": "BOOLEAN",
             "marketing_consent_at": "BIGINT", "tracking_consent": "BOOLEAN"}

    def select(kind: str, t: str, present: set[str]) -> str:
        cols = ", ".join(c if c in present else f"CAST(NULL AS {typ}) AS {c}"
                         for c, typ in nulls.items())
        return f"SELECT '{kind}' AS kind, subscriber_id, {t} AS t, {cols}, ts"

    event_cols = {"event_type", "bounce_class", "machine_open", "suspected_bot"}
    profile_cols = {"time_zone", "marketing_consent", "marketing_consent_at", "tracking_consent"}
    # One row shape for all inputs: one Python operator instead of one per input.
    unified = t_env.sql_query(f"""
        SELECT kind, subscriber_id, t, {", ".join(nulls)} FROM (
            {select("event", "event_time", event_cols)} FROM {events}
            UNION ALL
            {select("event", "event_time", event_cols)} FROM {late}
            UNION ALL
            {select("profile", "updated_at", profile_cols)} FROM {profiles}
            UNION ALL
            {select("erasure", "requested_at", set())} FROM {erasures})""")
    processed = (t_env.to_data_stream(unified)
                 .key_by(lambda r: r["subscriber_id"], key_type=Types.STRING())
                 .process(SubscriberProcessor(params),
                          output_type=avro_schema.row_type_info(SCORES))
                 .name("subscriber state")
                 .uid("subscriber-state"))
    return Outputs(
        scores=t_env.from_changelog_stream(processed, changelog_schema(SCORES)),
        send_time=t_env.from_changelog_stream(
            processed.get_side_output(SubscriberProcessor.SEND_TIME_TAG),
            changelog_schema(SEND_TIME)),
        suppressions=t_env.from_changelog_stream(
            processed.get_side_output(SubscriberProcessor.SUPPRESSION_TAG),
            changelog_schema(SUPPRESSIONS)),
    )


# --------------------------------------------------------------------------------------
# Production sources and sinks
# --------------------------------------------------------------------------------------


def _kafka_table(config: Mapping[str, Any], logical_topic: str, name: str, columns: str,
                 rowtime: str) -> str:
    ooo = int(config["clean"]["out_of_orderness_s"])
    opts = tables.kafka_source_options(config, logical_topic, "subscriber") | {
        "value.format": "avro"}
    options = ",\n  ".join(f"'{k}' = '{v}'" for k, v in opts.items())
    return f"""CREATE TABLE {name} (
  {columns},
  ts AS TO_TIMESTAMP_LTZ({rowtime}, 3),
  WATERMARK FOR ts AS ts - INTERVAL '{ooo}' SECOND
) WITH (
  {options}
)"""


def late_source(config: Mapping[str, Any], name: str = "late_events") -> str:
    """email.late with its watermark on received_time: its events are days behind by
    definition, and a watermark on event_time would hold back the whole job."""
    return _kafka_table(config, "late", name, avro_schema.column_ddl("EmailEvent"),
                        "received_time")


def profiles_source(config: Mapping[str, Any], name: str = "profiles") -> str:
    return _kafka_table(config, "profiles", name, avro_schema.column_ddl("SubscriberProfile"),
                        "updated_at")


def erasure_source(config: Mapping[str, Any], name: str = "erasures") -> str:
    return _kafka_table(config, "erasure", name, avro_schema.column_ddl("ErasureRequest"),
                        "requested_at")


SINKS = {  # avro schema: (logical topic, Kafka table, PostgreSQL table)
    SCORES: ("scores", "scores_topic", "subscriber_scores"),
    SEND_TIME: ("send_time", "send_time_topic", "subscriber_send_time"),
    SUPPRESSIONS: ("suppressions", "suppressions_topic", "subscriber_suppressions"),
}


def statements(t_env: StreamTableEnvironment, config: Mapping[str, Any]):
    """The job's INSERTs into the Kafka and PostgreSQL sinks, sources already declared as
    clean_events, late_events, profiles and erasures."""
    out = build(t_env, config, "clean_events", "late_events", "profiles", "erasures")
    stmts = t_env.create_statement_set()
    for schema, table in zip((SCORES, SEND_TIME, SUPPRESSIONS), out, strict=True):
        topic, kafka_table, pg_table = SINKS[schema]
        t_env.execute_sql(tables.upsert_kafka_sink(config, topic, schema, KEY, kafka_table))
        t_env.execute_sql(tables.jdbc_sink(config, f"{pg_table}_table", pg_table,
                                           avro_schema.column_ddl(schema), "subscriber_id"))
        stmts.add_insert(kafka_table, table)
        stmts.add_insert(f"{pg_table}_table", table)
    return stmts


def main() -> None:
    config = settings.load()
    _, t_env = runtime.create_env(config, JOB_NAME)
    t_env.execute_sql(tables.events_source(config, "clean", "subscriber", "clean_events"))
    t_env.execute_sql(late_source(config))
    t_env.execute_sql(profiles_source(config))
    t_env.execute_sql(erasure_source(config))
    statements(t_env, config).execute()


if __name__ == "__main__":
    main()
