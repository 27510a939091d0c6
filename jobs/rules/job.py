"""The rules job as submitted to a cluster (`python -m jobs.rules run|deploy`, or
`python -m jobs submit rules`): Kafka inputs -> shared views -> every rule in rules.dir ->
journey.triggers (Kafka, key trigger_id) + PostgreSQL journey_triggers (upsert).

Both sinks take the same rows. Replays are harmless: a trigger id is a hash of the rule,
the subscriber and the matched events, so a replayed trigger has the id it had before;
PostgreSQL upserts the same row and a consumer of the topic keeps the first record per
key."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import settings
from jobs import rules, runtime, tables
from jobs.rules.files import read_rules

KAFKA_SINK = "journey_triggers_topic"
JDBC_SINK = "journey_triggers_table"
GROUP = "rules"


def job_name(config: Mapping[str, Any]) -> str:
    """The job's name on the cluster; it carries the consumer group prefix, so that
    `deploy` finds this deployment's job and not another one's (tests, a second team)."""
    return f"{rules.JOB_NAME} [{config['kafka']['group_id_prefix']}]"


def kafka_input(config: Mapping[str, Any], spec: rules.Input) -> str:
    opts = tables.kafka_source_options(config, spec.logical_topic, GROUP)
    opts["value.format"] = "avro"
    return tables.create_table(spec.table, rules.input_columns(config, spec), opts)


def kafka_sink(config: Mapping[str, Any]) -> str:
    opts = tables.kafka_sink_options(config, "triggers", GROUP) | {
        "key.format": "raw",
        "key.fields": "trigger_id",
        "value.format": "avro",
        "value.fields-include": "ALL",
    }
    return tables.create_table(KAFKA_SINK, rules.trigger_columns(), opts)


def build(t_env: Any, config: Mapping[str, Any]) -> Any:
    """Declare the rules over the inputs already in t_env; returns the trigger table.
    Raises ValueError listing every broken rule (the job must not start half)."""
    rule_list = read_rules(rules.rules_dir(config))
    if not rule_list:
        raise ValueError(f"no rules in {rules.rules_dir(config)}")
    problems = rules.declare_rules(t_env, config, rule_list)
    if problems:
        raise ValueError("broken rules:\n" + "\n".join(map(str, problems)))
    return rules.triggers(t_env, rule_list)


def main() -> None:
    config = settings.load()
    _, t_env = runtime.create_env(config, job_name(config), {
        # A redeploy after a rule was removed or reshaped must still start: the state of
        # operators that no longer exist is dropped, the rest is restored.
        "execution.state-recovery.ignore-unclaimed-state": "true",
    })
    for spec in rules.INPUTS:
        t_env.execute_sql(kafka_input(config, spec))
    t_env.execute_sql(kafka_sink(config))
    t_env.execute_sql(tables.jdbc_sink(config, JDBC_SINK, "journey_triggers",
                                       rules.trigger_columns(), "trigger_id"))
    out = build(t_env, config)
    stmts = t_env.create_statement_set()
    stmts.add_insert(KAFKA_SINK, out)
    stmts.add_insert(JDBC_SINK, out)
    stmts.execute()


if __name__ == "__main__":
    main()
