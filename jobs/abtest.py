"""A/B decision job: email.events.clean -> campaign.ab_decisions (upsert-kafka, compacted,
key campaign_id + ab_test_id) + PostgreSQL ab_decisions (current decision per test) and
ab_decision_history (one row per decision version, keyed by the deterministic decision id).

Two stages:

1. Flink SQL counts per (campaign, A/B test, arm): delivered subscribers (the denominator)
   and unique successes for every metric (clicks without suspected bots, human opens without
   machine opens, conversions) with COUNT DISTINCT, like jobs/metrics.py. Java operators do
   the per-event work.
2. A Python KeyedProcessFunction keyed by (campaign, A/B test) receives that count changelog,
   keeps the latest counts per arm and the udfs.abtest.DecisionState, and runs
   udfs.abtest.decide on an event-time timer: one look per `look_interval_s` of event time
   with new counts (not per event: P(best) by Monte Carlo costs ~0.25 s for three arms), plus
   one look when the test matures and one at its deadline, so that a test whose traffic has
   stopped is still decided when event time moves on.

Emission: a row is written when the decision changed (new version: status or winner) or
when the per-arm counts changed since the last row. Looks with identical counts and decision
write nothing, so a quiet test costs no output; the history table gets only the rows that
start a new version (the numbers on which the decision was taken).

State: no StateTtlConfig (PyFlink's TTL conversion fails in thread mode on a cluster, see
jobs/clean.py); an event-time timer clears a test's state `state_retention_days` after its
last event. The SQL aggregation state uses table.exec.state.ttl with the same retention."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import pickle
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any, NamedTuple

from pyflink.common import Row, RowKind, Types
from pyflink.datastream import KeyedProcessFunction, RuntimeContext
from pyflink.datastream.state import ValueStateDescriptor
from pyflink.table import StreamTableEnvironment, Table

import settings
from jobs import avro_schema, runtime, tables
from udfs.abtest import (
    METRICS,
    AbTestDefinition,
    AbTestInputError,
    ArmCounts,
    Decision,
    DecisionState,
    decide,
)

JOB_NAME = "email-ab-decisions"
SCHEMA = "AbDecision"
KEY = ["campaign_id", "ab_test_id"]
HISTORY_KEY = ["decision_id"]
FIELDS = avro_schema.field_names(SCHEMA)
# Extra column of the Python operator's output: true when the row starts a new decision
# version, i.e. belongs in ab_decision_history.
NEW_VERSION = "new_version"

log = logging.getLogger(__name__)

def _epoch_ms(value: Any, what: str) -> int | None:
    """Epoch ms from an int, an ISO-8601 string or a datetime (YAML parses unquoted
    timestamps into datetime); naive times are UTC."""
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value)
        except ValueError as exc:
            raise AbTestInputError(f"{what}: not an ISO-8601 time: {value!r}") from exc
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        value = dt.datetime(value.year, value.month, value.day)
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        return int(value.timestamp() * 1000)
    raise AbTestInputError(f"{what}: expected epoch ms or an ISO-8601 time, got {value!r}")


def definition_for(cfg: Mapping[str, Any], ab_test_id: str, control_arm: str
                   ) -> AbTestDefinition:
    """The test's definition from `abtest.tests.<ab_test_id>`, defaults for missing keys.
    `control_arm` is the one already chosen for this test (see choose_control)."""
    test = cfg["tests"].get(ab_test_id) or {}
    metric = test.get("metric", cfg["metric"])
    if metric not in METRICS:
        raise AbTestInputError(f"abtest.tests.{ab_test_id}.metric must be one of "
                               f"{list(METRICS)}, got {metric!r}")
    elapsed = test.get("min_elapsed_s", cfg["min_elapsed_s"])
    if isinstance(elapsed, Mapping):  # per metric
        elapsed = elapsed.get(metric, 0)
    max_h = test.get("max_duration_h", cfg["max_duration_h"])
    split = test.get("expected_split")
    return AbTestDefinition(
        metric=metric,
        alpha=float(test.get("alpha", cfg["alpha"])),
        tau=float(test.get("tau", cfg["tau"])),
        control_arm=control_arm,
        min_delivered_per_arm=int(test.get("min_delivered_per_arm",
                                           cfg["min_delivered_per_arm"])),
        min_elapsed_ms=int(float(elapsed) * 1000),
        start_ms=_epoch_ms(test.get("start"), f"abtest.tests.{ab_test_id}.start"),
        deadline_ms=_epoch_ms(test.get("deadline"), f"abtest.tests.{ab_test_id}.deadline"),
        max_duration_ms=None if max_h is None else int(float(max_h) * 3_600_000),
        expected_split={str(k): float(v) for k, v in split.items()} if split else None,
        srm_alpha=float(test.get("srm_alpha", cfg["srm_alpha"])),
        keep_control_rel_loss=float(test.get("keep_control_rel_loss",
                                             cfg["keep_control_rel_loss"])),
        mc_draws=int(cfg["mc_draws"]),
    )


def choose_control(cfg: Mapping[str, Any], ab_test_id: str, arms_seen: Sequence[str]) -> str:
    """The test's control_arm if configured, else `default_control_arm` when the test has
    that arm, else the first arm seen."""
    configured = (cfg["tests"].get(ab_test_id) or {}).get("control_arm")
    if configured:
        return str(configured)
    default = cfg["default_control_arm"]
    return default if default in arms_seen else arms_seen[0]


def decision_id(campaign_id: str, ab_test_id: str, version: int) -> str:
    """Deterministic id of one decision version (unit separator: ids may contain '|')."""
    text = f"{campaign_id}\x1f{ab_test_id}\x1f{version}"
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _grid(t: int, interval_ms: int) -> int:
    """The first look time strictly after event time t (looks sit on a fixed grid, so every
    test in a replay looks at the same instants)."""
    return (t // interval_ms + 1) * interval_ms


def output_row_type():
    return avro_schema.row_type_info(SCHEMA, extra=[(NEW_VERSION, "BOOLEAN")])


def decision_row(campaign_id: str, ab_test_id: str, control_arm: str, alpha: float,
                 d: Decision) -> dict[str, Any]:
    """One output record (AbDecision fields + new_version) for a look's decision."""
    arms = [a.to_dict() for a in d.arms]
    return {
        "campaign_id": campaign_id,
        "ab_test_id": ab_test_id,
        "decision_id": decision_id(campaign_id, ab_test_id, d.version),
        "version": d.version,
        "status": d.status,
        "winner": d.winner,
        "significant": d.significant,
        "metric": d.metric,
        "control_arm": control_arm,
        "alpha": alpha,
        "decided_at": d.decided_ms,
        "look_time": d.look_ms,
        "srm_chi2": d.srm_chi2,
        "srm_p_value": d.srm_p_value,
        # Per-arm figures as JSON: the number of arms varies per test, and the repo's Avro
        # mapping (jobs/avro_schema.py) and the Postgres row both take it as one column.
        "arms": json.dumps(arms, separators=(",", ":"), allow_nan=False),
        NEW_VERSION: d.changed,
    }


class AbDecider(KeyedProcessFunction):
    """Keyed by (campaign, A/B test). Input: +I/+U rows of the per-arm count aggregation.

    State (one pickled dict, read and written whole: a test has a handful of arms):
    campaign/test ids, counts per arm in order seen, the pinned control arm, the
    DecisionState, the counts of the last emitted row, the first look time and the expiry."""

    def __init__(self, cfg: Mapping[str, Any]):
        self.cfg = dict(cfg)
        self.interval_ms = int(cfg["look_interval_s"]) * 1000
        self.retention_ms = int(cfg["state_retention_days"]) * 86_400_000

    def open(self, runtime_context: RuntimeContext) -> None:
        # No StateTtlConfig (thread mode on a cluster cannot convert it); a timer clears.
        self.test = runtime_context.get_state(
            ValueStateDescriptor("ab_test", Types.PICKLED_BYTE_ARRAY()))

    def _load(self) -> dict[str, Any] | None:
        raw = self.test.value()
        return pickle.loads(raw) if raw else None

    def process_element(self, value: Row, ctx: KeyedProcessFunction.Context):
        # -U/-D carry the old counts; the +U that follows carries the new ones.
        if value.get_row_kind() in (RowKind.UPDATE_BEFORE, RowKind.DELETE):
            return
        st = self._load() or {"campaign_id": value["campaign_id"],
                              "ab_test_id": value["ab_test_id"], "counts": {},
                              "control": None, "decision": None, "emitted": None,
                              "first_look": None, "expires": None}
        st["counts"][value["arm"]] = {"delivered": value["delivered"],
                                      "clicks": value["clicks"], "opens": value["opens"],
                                      "conversions": value["conversions"]}
        timers = ctx.timer_service()
        # A count updated by an event behind the watermark goes into the next regular look,
        # not a look in the past (look times must not run backwards).
        watermark = timers.current_watermark()
        look = _grid(max(value["last_event_time"], watermark), self.interval_ms)
        timers.register_event_time_timer(look)
        if st["first_look"] is None:
            st["first_look"] = look
            # Maturity and deadline looks, so a test is decided even if its traffic stopped.
            try:
                d = definition_for(self.cfg, st["ab_test_id"], "?")
            except AbTestInputError as exc:
                log.error("A/B test %s/%s: %s", st["campaign_id"], st["ab_test_id"], exc)
            else:
                start = d.start_ms if d.start_ms is not None else look
                extra = [start + d.min_elapsed_ms]
                ends = [e for e in (d.deadline_ms, None if d.max_duration_ms is None
                                    else start + d.max_duration_ms) if e is not None]
                if ends:
                    extra.append(min(ends))
                for t in extra:
                    if t > look:
                        timers.register_event_time_timer(t)
        expires = value["last_event_time"] + self.retention_ms
        if st["expires"] is None or expires > st["expires"]:
            st["expires"] = expires
            timers.register_event_time_timer(expires)
        self.test.update(pickle.dumps(st))

    def on_timer(self, timestamp: int, ctx: KeyedProcessFunction.OnTimerContext):
        st = self._load()
        if st is None:
            return
        if timestamp >= st["expires"]:
            self.test.clear()
            return
        arms_seen = list(st["counts"])
        if st["control"] is None:
            if len(arms_seen) < 2:
                return  # nothing to compare yet; the next count update schedules a look
            # Pinned at the first look: the running p-values are against this control.
            st["control"] = choose_control(self.cfg, st["ab_test_id"], arms_seen)
        try:
            d = definition_for(self.cfg, st["ab_test_id"], st["control"])
            if d.start_ms is None:
                # The test starts at its first look, also when that look had one arm only
                # (no decision yet): the maturity and deadline timers were set from it.
                d = replace(d, start_ms=st["first_look"])
            names = [d.control_arm] + [a for a in arms_seen if a != d.control_arm]
            if d.expected_split:  # arms named by the split are in the test from the start
                names += [a for a in d.expected_split if a not in names]
            arms = []
            for name in names:
                c = st["counts"].get(name) or {"delivered": 0, d.metric: 0}
                # A success can be counted before its delivery arrives (events are ordered
                # per subscriber, not per campaign); cap until the delivery shows up.
                arms.append(ArmCounts(name, c["delivered"], min(c[d.metric], c["delivered"])))
            prev = DecisionState.from_dict(st["decision"]) if st["decision"] else None
            decision = decide(d, arms, timestamp, prev)
        except AbTestInputError as exc:
            # A misconfigured test (e.g. an arm outside its expected_split) must not stop
            # every other test: log it and wait for a fixed config or more data.
            log.error("A/B test %s/%s at %d: %s", st["campaign_id"], st["ab_test_id"],
                      timestamp, exc)
            self.test.update(pickle.dumps(st))
            return
        st["decision"] = decision.state.to_dict()
        numbers = [(a.arm, a.delivered, a.successes) for a in arms]
        emit = decision.changed or numbers != st["emitted"]
        if emit:
            st["emitted"] = numbers
        self.test.update(pickle.dumps(st))
        if emit:
            row = decision_row(st["campaign_id"], st["ab_test_id"], d.control_arm, d.alpha,
                               decision)
            yield Row(*row.values())


class Outputs(NamedTuple):
    decisions: Table  # AbDecision columns: every emitted look (upsert on KEY)
    history: Table    # AbDecision columns: rows that start a new version (upsert on decision_id)


def build(t_env: StreamTableEnvironment, config: Mapping[str, Any], events: str) -> Outputs:
    """`events`: EmailEvent columns (the clean stream) with a watermark (rowtime `ts`)."""
    cfg = config["abtest"]
    t_env.get_config().set("table.exec.state.ttl", f"{int(cfg['state_retention_days'])} d")
    counts = t_env.sql_query(f"""
        SELECT campaign_id, ab_test_id, `arm`,
            COUNT(DISTINCT CASE WHEN event_type = 'delivered' THEN subscriber_id END)
                AS delivered,
            COUNT(DISTINCT CASE WHEN event_type = 'click' AND suspected_bot IS NOT TRUE
                                THEN subscriber_id END) AS clicks,
            COUNT(DISTINCT CASE WHEN event_type = 'open' AND machine_open IS NOT TRUE
                                     AND suspected_bot IS NOT TRUE
                                THEN subscriber_id END) AS opens,
            COUNT(DISTINCT CASE WHEN event_type = 'conversion' THEN subscriber_id END)
                AS conversions,
            MAX(event_time) AS last_event_time
        FROM {events}
        WHERE campaign_id IS NOT NULL AND ab_test_id IS NOT NULL AND ab_test_id <> ''
          AND `arm` IS NOT NULL AND `arm` <> ''
          AND event_type IN ('delivered', 'click', 'open', 'conversion')
        GROUP BY campaign_id, ab_test_id, `arm`""")
    decided = (t_env.to_changelog_stream(counts)
               .key_by(lambda r: f"{r['campaign_id']}\x1f{r['ab_test_id']}",
                       key_type=Types.STRING())
               .process(AbDecider(cfg), output_type=output_row_type())
               .name("decide A/B tests")
               .uid("decide-ab-tests"))
    t_env.create_temporary_view("ab_decided", t_env.from_data_stream(decided))
    cols = avro_schema.select_list(SCHEMA)
    return Outputs(decisions=t_env.sql_query(f"SELECT {cols} FROM ab_decided"),
                   history=t_env.sql_query(f"SELECT {cols} FROM ab_decided WHERE {NEW_VERSION}"))


def main() -> None:
    config = settings.load()
    _, t_env = runtime.create_env(config, JOB_NAME)
    t_env.execute_sql(tables.events_source(config, "clean", "abtest", "clean_events"))
    t_env.execute_sql(tables.upsert_kafka_sink(config, "ab_decisions", SCHEMA, KEY,
                                               "ab_decisions_topic"))
    columns = avro_schema.column_ddl(SCHEMA)
    t_env.execute_sql(tables.jdbc_sink(config, "ab_decisions_table", "ab_decisions", columns,
                                       ", ".join(KEY)))
    t_env.execute_sql(tables.jdbc_sink(config, "ab_history_table", "ab_decision_history",
                                       columns, ", ".join(HISTORY_KEY)))
    out = build(t_env, config, "clean_events")
    stmts = t_env.create_statement_set()
    stmts.add_insert("ab_decisions_topic", out.decisions)
    stmts.add_insert("ab_decisions_table", out.decisions)
    stmts.add_insert("ab_history_table", out.history)
    stmts.execute()


if __name__ == "__main__":
    main()
