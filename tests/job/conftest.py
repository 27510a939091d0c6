"""Job tests: Flink jobs on the local MiniCluster inside one JVM shared by the whole run
(the gateway JVM is a per-process singleton; each new job costs seconds, a new JVM ~20 s).

The connector/format jars go on that JVM's classpath (FLINK_TEST_LIBS), so jobs run with
flink.add_jars off, and tests can call Flink's Java classes (e.g. the Avro converter)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import settings

ROOT = Path(__file__).resolve().parents[2]
os.environ.setdefault("FLINK_TESTING", "1")
os.environ.setdefault("FLINK_TEST_LIBS", str(ROOT / "jars" / "flink" / "*"))


@pytest.fixture(scope="session")
def job_config() -> dict:
    return settings.load(environ={"EMAIL_STREAMING__FLINK__ADD_JARS": "false"})


@pytest.fixture(scope="session")
def stream_env(job_config):
    from jobs import runtime

    env, _ = runtime.create_env(job_config, "job-tests",
                                {"python.fn-execution.bundle.size": "1",
                                 # a failing job must fail the test, not restart forever
                                 "restart-strategy.type": "none"})
    return env


def new_table_env(stream_env, job_config):
    """A fresh table environment (own temporary views and functions) on the shared JVM,
    with the jobs' table settings (a job's settings reach the shared env when it runs)."""
    from pyflink.table import StreamTableEnvironment

    from jobs import runtime

    t_env = StreamTableEnvironment.create(stream_env)
    runtime.configure_table_env(t_env, job_config)
    return t_env


@pytest.fixture
def t_env(stream_env, job_config):
    return new_table_env(stream_env, job_config)


def final_rows(table) -> list[tuple]:
    """Run a (possibly updating) query to the end and apply its changelog: the rows a
    sink with a primary key would hold afterwards."""
    from pyflink.common import RowKind

    state: list[tuple] = []
    with table.execute().collect() as results:
        for row in results:
            values = tuple(row)
            if row.get_row_kind() in (RowKind.INSERT, RowKind.UPDATE_AFTER):
                state.append(values)
            else:
                state.remove(values)
    return state
