"""Rules job: journey triggers from the SQL rule files in sql/rules/.

Clean events, conversions, subscriber profiles and engagement scores come in as tables
(Kafka in production, in-memory files in `test`/`validate`); sql/views.sql declares the
shared views over them once; each sql/rules/<rule_id>.sql is one
`INSERT INTO journey_triggers SELECT ...` written against those views. The job plans every
rule into one Flink job (one statement set) whose rows go to journey.triggers (Kafka, key
trigger_id) and PostgreSQL journey_triggers (upsert on trigger_id).

Only SQL runs: no Python function is registered in this job's table environment, and
validate() rejects a plan with a Python operator, so every rule runs on Java operators.

Commands: python -m jobs.rules validate | test | run | deploy (see __main__.py)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jobs import avro_schema
from jobs.rules.files import (
    SINK,
    Rule,
    SqlProblem,
    flink_message,
    problem_from_flink,
    read_rules,
    split_statements,
)

ROOT = Path(__file__).resolve().parents[2]
JOB_NAME = "email-journey-rules"
SCHEMA = "JourneyTrigger"


@dataclass(frozen=True)
class Input:
    """One input table the shared views read: its Avro schema and which field is time."""

    table: str
    schema: str
    time_field: str
    logical_topic: str


INPUTS = (
    Input("clean_events_in", "EmailEvent", "event_time", "clean"),
    Input("conversions_in", "Conversion", "event_time", "conversions"),
    Input("profiles_in", "SubscriberProfile", "updated_at", "profiles"),
    Input("scores_in", "SubscriberScore", "as_of", "scores"),
)


def out_of_orderness_s(config: Mapping[str, Any]) -> int:
    """rules.out_of_orderness_s, checked against the delay the clean job gives clicks
    (held until its watermark passes click time + burst window): a smaller value would
    make every click late for the rules, and event-time operators drop late rows."""
    ooo = int(config["rules"]["out_of_orderness_s"])
    floor = int(config["clean"]["out_of_orderness_s"]) + int(config["clean"]["bot_burst_window_s"])
    if ooo <= floor:
        raise ValueError(f"rules.out_of_orderness_s ({ooo}) must exceed "
                         f"clean.out_of_orderness_s + clean.bot_burst_window_s ({floor}): "
                         "the clean job emits clicks that far behind other events")
    return ooo


def input_columns(config: Mapping[str, Any], spec: Input) -> str:
    """The input's columns + rowtime `ts` with the watermark rules.out_of_orderness_s
    behind the newest time seen (rows older than that are late for every rule)."""
    ooo = out_of_orderness_s(config)
    return (f"{avro_schema.column_ddl(spec.schema)},\n"
            f"  ts AS TO_TIMESTAMP_LTZ({spec.time_field}, 3),\n"
            f"  WATERMARK FOR ts AS ts - INTERVAL '{ooo}' SECOND")


def _repo_path(setting: str) -> Path:
    """A path setting: absolute, or relative to the checkout. `flink run` starts the job's
    client in the checkout, where the modules may come from a shipped zip (then ROOT is
    not a folder): the working directory is the checkout there."""
    path = Path(setting)
    if path.is_absolute():
        return path
    return ROOT / path if ROOT.is_dir() else Path.cwd() / path


def rules_dir(config: Mapping[str, Any]) -> Path:
    return _repo_path(config["rules"]["dir"])


def views_path(config: Mapping[str, Any]) -> Path:
    return _repo_path(config["rules"]["views"])


def configure(t_env: Any, config: Mapping[str, Any]) -> None:
    """Table settings every rule relies on."""
    # Window TVFs and day arithmetic on TIMESTAMP_LTZ use the session time zone: pin it,
    # so that a rule's "day" does not depend on the machine that plans it.
    t_env.get_config().set("table.local-time-zone", config["rules"]["time_zone"])
    # Triggers are inserts keyed by a content hash: the PostgreSQL sink may upsert them on
    # trigger_id without an ON CONFLICT clause (which would keep state per trigger id).
    t_env.get_config().set("table.exec.sink.require-on-conflict", "false")
    # In mini-batch mode Flink 2.3 plans a keep-first deduplication (ROW_NUMBER over
    # processing time, e.g. engaged_no_conversion_incentive) as a Rank that emits updates,
    # which the append-only trigger sinks reject: keep it off whatever jobs default to.
    t_env.get_config().set("table.exec.mini-batch.enabled", "false")


def declare_views(t_env: Any, config: Mapping[str, Any],
                  path: Path | None = None) -> list[SqlProblem]:
    """Run the shared views file; returns its problems (empty when all views are fine)."""
    path = path or views_path(config)
    problems = []
    for stmt in split_statements(path):
        try:
            t_env.execute_sql(stmt.text)
        except Exception as exc:  # py4j raises Flink's exceptions as several Python types
            problems.append(problem_from_flink(stmt, flink_message(exc)))
    return problems


def declare_rule(t_env: Any, rule: Rule) -> list[SqlProblem]:
    """Create the rule's view (parses and validates its query against the views)."""
    if rule.problems:
        return list(rule.problems)
    try:
        t_env.execute_sql(rule.view_statement())
    except Exception as exc:
        return [problem_from_flink(rule.query, flink_message(exc))]
    return []


def plan_rule(t_env: Any, rule: Rule, sink: str) -> list[SqlProblem]:
    """Plan `INSERT INTO sink SELECT * FROM rule view`: checks the columns against the
    journey_triggers schema, that the rule's output is append-only (the sinks take
    inserts), and that no Python operator is in the plan."""
    try:
        plan = t_env.explain_sql(f"INSERT INTO {sink} SELECT * FROM {rule.view}")
    except Exception as exc:
        message = flink_message(exc)
        if "consuming update changes" in message:
            message += (" | a rule must emit each trigger once and never update it: use "
                        "windows, MATCH_RECOGNIZE or interval joins (sql/rules/README.md)")
        return [SqlProblem(rule.path, rule.query.line, message)]
    if "Python" in plan:
        return [SqlProblem(rule.path, rule.query.line,
                           "the plan has a Python operator; rules must be plain SQL")]
    return []


def trigger_columns() -> str:
    return avro_schema.column_ddl(SCHEMA)


def declare_rules(t_env: Any, config: Mapping[str, Any], rules: list[Rule],
                  plan_sink: str | None = None) -> list[SqlProblem]:
    """Views, then each rule's view (and plan, when plan_sink is given). All problems
    are collected, so one run reports every broken rule."""
    configure(t_env, config)
    problems = declare_views(t_env, config)
    if problems:
        return problems  # every rule would fail on the same broken view
    for rule in rules:
        rule_problems = declare_rule(t_env, rule)
        if not rule_problems and plan_sink:
            rule_problems = plan_rule(t_env, rule, plan_sink)
        problems += rule_problems
    return problems


def triggers(t_env: Any, rules: list[Rule]) -> Any:
    """All rules' triggers as one append-only table (JourneyTrigger columns)."""
    cols = avro_schema.select_list(SCHEMA)
    return t_env.sql_query("\nUNION ALL\n".join(
        f"SELECT {cols} FROM {rule.view}" for rule in rules))


__all__ = ["INPUTS", "JOB_NAME", "SINK", "Input", "declare_rules", "input_columns",
           "read_rules", "rules_dir", "triggers", "views_path"]
