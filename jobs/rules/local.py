"""The rules on local in-memory inputs (JSON-lines files): what `validate` plans against and
what `test` runs the YAML cases on. Same columns, time attributes and changelog modes
(append-only) as the Kafka inputs of the real job, so a rule that plans here plans there."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from jobs import rules
from jobs.rules.files import SINK, Rule, SqlProblem


def create_table_env(config: Mapping[str, Any]) -> Any:
    """A local (MiniCluster) table environment for one CLI run."""
    from jobs import runtime

    _, t_env = runtime.create_env(config, f"{rules.JOB_NAME}-local",
                                  {"restart-strategy.type": "none"})
    return t_env


def declare_inputs(t_env: Any, config: Mapping[str, Any], data_dir: Path,
                   rows: Mapping[str, list[dict]] | None = None) -> None:
    """Each input as a bounded JSON-lines file table holding `rows[table]` (none: empty)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    for spec in rules.INPUTS:
        path = data_dir / f"{spec.table}.json"
        path.write_text("".join(json.dumps(r) + "\n" for r in (rows or {}).get(spec.table, [])))
        t_env.execute_sql(
            f"CREATE TEMPORARY TABLE {spec.table} (\n  {rules.input_columns(config, spec)}\n)"
            f" WITH ('connector' = 'filesystem', 'path' = '{path}', 'format' = 'json')")


def declare_plan_sink(t_env: Any, data_dir: Path) -> str:
    """An append-only sink with the journey_triggers columns: planning against it rejects
    rules whose output updates (the Kafka sink takes inserts only)."""
    t_env.execute_sql(
        f"CREATE TEMPORARY TABLE {SINK} (\n  {rules.trigger_columns()}\n) WITH ("
        f"'connector' = 'filesystem', 'path' = '{data_dir / 'out'}', 'format' = 'json')")
    return SINK


def validate(t_env: Any, config: Mapping[str, Any], rule_list: list[Rule],
             data_dir: Path) -> list[SqlProblem]:
    """Parse and plan the views and every rule; all problems, in file order."""
    declare_inputs(t_env, config, data_dir)
    sink = declare_plan_sink(t_env, data_dir)
    return rules.declare_rules(t_env, config, rule_list, plan_sink=sink)
