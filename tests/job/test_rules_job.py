"""The journey rules on the MiniCluster: every shipped rule's YAML cases through the same
runner as `python -m jobs.rules test` (all cases in one Flink job), `validate` on a broken
rule, and the production job's plan with the Kafka and JDBC tables."""

from __future__ import annotations

import shutil

import pytest

from jobs import rules
from jobs.rules import cases, job
from jobs.rules.__main__ import main as rules_cli
from jobs.rules.files import read_rules

pytestmark = pytest.mark.job


def test_shipped_rules_pass_their_cases(t_env, job_config, tmp_path):
    rule_list = read_rules(rules.rules_dir(job_config))
    report = cases.run_cases(t_env, job_config, rule_list, tmp_path)
    assert report.ok, report.render()
    per_rule = {r.rule_id: [c for c in report.results if c.case.rule_id == r.rule_id]
                for r in rule_list}
    for rule_id, results in per_rule.items():
        assert any(not c.case.expect for c in results), f"{rule_id}: no must-not-fire case"
        assert any(c.actual for c in results), f"{rule_id} never fired"
    # Trigger ids are SHA-256 hex and unique (split_results reports a repeat as a problem).
    ids = [t["trigger_id"] for c in report.results for t in c.actual]
    assert len(ids) == len(set(ids)) and all(len(i) == 64 for i in ids)


def test_validate_prints_file_line_and_flink_message(job_config, tmp_path, capsys):
    good = rules.rules_dir(job_config) / "soft_bounce_verify.sql"
    shutil.copy(good, tmp_path / good.name)
    broken = tmp_path / "broken_rule.sql"
    broken.write_text(
        "-- rule: broken_rule\n-- detects: x\n-- action: y\n-- description: z\n"
        "INSERT INTO journey_triggers\n"
        "SELECT event_id, 'broken_rule', subscriber_id, campaign_id, 'y', '{}',\n"
        "       event_tme\n"  # line 7: typo
        "FROM clean_events;\n")
    updating = tmp_path / "updating_rule.sql"
    updating.write_text(
        "-- rule: updating_rule\n-- detects: x\n-- action: y\n-- description: z\n"
        "INSERT INTO journey_triggers\n"
        "SELECT MAX(event_id), 'updating_rule', subscriber_id, MAX(campaign_id), 'y', '{}',\n"
        "       MAX(event_time)\n"
        "FROM clean_events GROUP BY subscriber_id;\n")
    assert rules_cli(["validate", "--rules-dir", str(tmp_path)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert any(line.startswith(f"{broken}:7: ") and "event_tme" in line for line in out), out
    # An updating result cannot go to the append-only trigger sinks.
    assert any(line.startswith(f"{updating}:5: ") and "update" in line.lower()
               for line in out), out
    assert not any(str(tmp_path / good.name) in line for line in out)
    assert out[-1] == "1 of 3 rules valid; 2 problem(s)"


def test_production_job_plans_with_kafka_and_jdbc_tables(t_env, job_config):
    for spec in rules.INPUTS:
        t_env.execute_sql(job.kafka_input(job_config, spec).replace(
            "CREATE TABLE", "CREATE TEMPORARY TABLE", 1))
    t_env.execute_sql(job.kafka_sink(job_config).replace(
        "CREATE TABLE", "CREATE TEMPORARY TABLE", 1))
    from jobs import tables

    t_env.execute_sql(tables.jdbc_sink(job_config, job.JDBC_SINK, "journey_triggers",
                                       rules.trigger_columns(), "trigger_id").replace(
        "CREATE TABLE", "CREATE TEMPORARY TABLE", 1))
    out = job.build(t_env, job_config)
    stmts = t_env.create_statement_set()
    stmts.add_insert(job.KAFKA_SINK, out)
    stmts.add_insert(job.JDBC_SINK, out)
    plan = stmts.explain()
    assert "Python" not in plan  # every rule runs on Java operators
    for rule in read_rules(rules.rules_dir(job_config)):
        assert rule.rule_id in plan
