"""The local stack's pure parts: topic topology, jar list, process bookkeeping."""

from __future__ import annotations

import os
import socket

import pytest

import settings
from stack import kafka, preflight, processes
from stack.errors import StackError

# DESIGN.md's topic table: every topic, and which are compacted.
DESIGN_TOPICS = {
    "email.raw", "email.events", "email.events.clean", "email.late", "email.dlq",
    "subscriber.profiles", "commerce.conversions", "privacy.erasure", "campaign.metrics",
    "subscriber.scores", "subscriber.send_time", "subscriber.suppressions",
    "campaign.ab_decisions", "journey.triggers",
}
COMPACTED = {"subscriber.profiles", "subscriber.scores", "subscriber.send_time",
             "subscriber.suppressions", "campaign.ab_decisions"}


def test_topology_matches_the_design():
    specs = {s["name"]: s for s in kafka.topic_specs(settings.load(environ={}))}
    assert set(specs) == DESIGN_TOPICS
    assert {n for n, s in specs.items()
            if s["config"].get("cleanup.policy") == "compact"} == COMPACTED
    assert specs["email.raw"]["config"]["retention.ms"] == str(7 * 24 * 3600 * 1000)
    assert all(s["replication"] == 1 and s["partitions"] >= 1 for s in specs.values())


def test_topology_values_are_strings_for_the_admin_api(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text("kafka:\n  topics:\n    late: {name: x.late, partitions: 2, "
                    "config: {retention.ms: 1000, min.insync.replicas: 1}}\n")
    spec = next(s for s in kafka.topic_specs(settings.load(path, environ={}))
                if s["name"] == "x.late")
    assert spec == {"name": "x.late", "partitions": 2, "replication": 1,
                    "config": {"retention.ms": "1000", "min.insync.replicas": "1"}}


def test_jar_list_comes_from_the_pom():
    jars = preflight.required_flink_jars()
    assert len(jars) == 5
    assert any(j.startswith("flink-sql-connector-kafka-") for j in jars)
    assert any(j.startswith("flink-connector-jdbc-postgres-") for j in jars)
    assert any(j.startswith("postgresql-42.") for j in jars)
    assert "flink-sql-avro-2.3.0.jar" in jars
    assert all("${" not in j for j in jars)


def test_missing_jars_are_named_with_the_fetch_command(tmp_path):
    (tmp_path / "flink-sql-avro-2.3.0.jar").write_bytes(b"")
    with pytest.raises(StackError) as err:
        preflight.flink_jars(tmp_path)
    message = str(err.value)
    assert "make jars" in message
    assert "flink-sql-connector-kafka-" in message
    assert "flink-sql-avro" not in message


def test_taken_port_is_reported_with_the_setting_to_change():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(StackError, match=rf"port {port}.*EMAIL_STREAMING__X__PORT"):
            processes.require_free(port, "test", "x__port")


def test_pid_file_of_a_foreign_process_is_ignored(tmp_path):
    pid_file = tmp_path / "x.pid"
    pid_file.write_text(f"{os.getpid()}\n")
    assert processes.read_pid(pid_file, "/definitely/not/in/our/cmdline") is None
    assert processes.read_pid(pid_file, "python") == os.getpid()
    assert processes.read_pid(tmp_path / "missing.pid", "python") is None
