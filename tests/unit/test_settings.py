"""settings: defaults, override file, environment variables, validation."""

from __future__ import annotations

import pytest

import settings
from jobs import tables
from settings import ConfigError


def test_defaults_load_and_name_every_topic():
    config = settings.load(environ={})
    assert settings.topic(config, "raw") == "email.raw"
    assert settings.topic(config, "clean") == "email.events.clean"
    assert config["flink"]["parallelism"] == 1
    with pytest.raises(ConfigError, match="no topic 'nope'"):
        settings.topic(config, "nope")


def test_override_file_is_merged_over_defaults(tmp_path):
    path = tmp_path / "prod.yaml"
    path.write_text("kafka:\n  bootstrap_servers: broker:9092\n"
                    "  topics:\n    raw: {name: prod.raw}\n"
                    "normalize:\n  metadata_fields: {sendgrid: {subscriber_id: uid}}\n")
    config = settings.load(path, environ={})
    assert config["kafka"]["bootstrap_servers"] == "broker:9092"
    assert settings.topic(config, "raw") == "prod.raw"
    # partitions of the overridden topic keep their default; other topics are untouched
    assert config["kafka"]["topics"]["raw"]["partitions"] == 3
    assert settings.topic(config, "events") == "email.events"
    assert config["normalize"]["metadata_fields"] == {"sendgrid": {"subscriber_id": "uid"}}


def test_file_from_environment_variable(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("flink: {parallelism: 4}\n")
    assert settings.load(environ={"EMAIL_STREAMING_CONFIG": str(path)})["flink"][
        "parallelism"] == 4


def test_environment_variables_win_and_are_parsed_as_yaml(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("flink: {parallelism: 4}\n")
    config = settings.load(path, environ={
        "EMAIL_STREAMING__FLINK__PARALLELISM": "2",
        "EMAIL_STREAMING__FLINK__ADD_JARS": "true",
        "EMAIL_STREAMING__NORMALIZE__HMAC_KEY": "s3cret",
        "UNRELATED": "x",
    })
    assert config["flink"]["parallelism"] == 2
    assert config["flink"]["add_jars"] is True
    assert config["normalize"]["hmac_key"] == "s3cret"


@pytest.mark.parametrize("environ, message", [
    ({"EMAIL_STREAMING__FLINK__PARALELISM": "2"}, "unknown setting 'flink.paralelism'"),
    ({"EMAIL_STREAMING__KAFKA__DELIVERY_GUARANTEE": "maybe"}, "at-least-once or exactly-once"),
    ({"EMAIL_STREAMING__FLINK__PARALLELISM": "0"}, "flink.parallelism must be a positive"),
    ({"EMAIL_STREAMING__KAFKA__TOPICS__RAW__PARTITIONS": "-1"}, "raw.partitions"),
    ({"EMAIL_STREAMING__FLINK____X": "1"}, "empty key segment"),
    ({"EMAIL_STREAMING__NORMALIZE__PYTHON_EXECUTION_MODE": "threads"},
     "process or thread, not 'threads'"),
    ({"EMAIL_STREAMING__NORMALIZE__PARALLELISM": "0"}, "normalize.parallelism must be"),
])
def test_bad_overrides_are_errors_that_say_where(environ, message):
    with pytest.raises(ConfigError, match=message):
        settings.load(environ=environ)


def test_unknown_key_in_file_names_the_file(tmp_path):
    path = tmp_path / "typo.yaml"
    path.write_text("postgres:\n  uri: postgresql://x\n")
    with pytest.raises(ConfigError, match=r"typo.yaml: unknown setting 'postgres.uri'"):
        settings.load(path, environ={})


def test_missing_file_is_an_error():
    with pytest.raises(ConfigError, match="does not exist"):
        settings.load("/nonexistent/config.yaml", environ={})


def test_postgres_url_embedded_default_and_jdbc_form():
    config = settings.load(environ={})
    assert settings.postgres_url(config) == "postgresql://email:email@127.0.0.1:15432/email"
    assert settings.jdbc_url(config) == ("jdbc:postgresql://127.0.0.1:15432/email",
                                         "email", "email")


def test_external_postgres_url_with_quoted_password():
    config = settings.load(environ={
        "EMAIL_STREAMING__POSTGRES__URL":
            "postgresql://app:p%40ss@db.internal:6543/mail?sslmode=require"})
    assert settings.jdbc_url(config) == (
        "jdbc:postgresql://db.internal:6543/mail?sslmode=require", "app", "p@ss")


def test_non_postgres_url_is_rejected():
    config = settings.load(environ={"EMAIL_STREAMING__POSTGRES__URL": "mysql://x@y/z"})
    with pytest.raises(ConfigError, match="postgresql://"):
        settings.jdbc_url(config)


def test_normalize_runs_its_parser_in_process_mode_unless_told_otherwise():
    from jobs.normalize import python_options

    config = settings.load(environ={})
    assert python_options(config) == {"python.execution-mode": "process",
                                      "python.fn-execution.bundle.time": "100"}
    thread = settings.load(environ={"EMAIL_STREAMING__NORMALIZE__PYTHON_EXECUTION_MODE":
                                    "thread"})
    assert python_options(thread) == {"python.execution-mode": "thread"}


def test_kafka_client_properties_reach_every_source_and_sink(tmp_path):
    path = tmp_path / "override.yaml"
    path.write_text("kafka:\n  consumer_properties: {max.poll.records: 2000}\n"
                    "  producer_properties: {linger.ms: 0, compression.type: lz4}\n")
    config = settings.load(path, environ={})
    source = tables.events_source(config, "events", "clean", "src")
    assert "'properties.fetch.min.bytes' = '65536'" in source  # defaults stay
    assert "'properties.max.poll.records' = '2000'" in source
    for sink in (tables.events_sink(config, "clean", "clean", "out"),
                 tables.upsert_kafka_sink(config, "scores", "SubscriberScore",
                                          ["subscriber_id"], "scores")):
        assert "'properties.linger.ms' = '0'" in sink
        assert "'properties.compression.type' = 'lz4'" in sink
        assert "'properties.batch.size' = '131072'" in sink
