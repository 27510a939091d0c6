"""Execution environment shared by every job: parallelism, checkpointing, Python thread
mode and the connector jars, all from settings."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pyflink.common import Configuration
from pyflink.datastream import CheckpointingMode, StreamExecutionEnvironment
from pyflink.table import StreamTableEnvironment

ROOT = Path(__file__).resolve().parent.parent


def jar_urls(config: Mapping[str, Any]) -> list[str]:
    from stack.preflight import flink_jars

    return [p.resolve().as_uri() for p in flink_jars(ROOT / config["flink"]["jars_dir"])]


def _put_interpreter_on_path() -> None:
    """Thread mode loads pemja from the `python` first on PATH; when a job runs in-process
    (MiniCluster: tests, `python -m jobs.<job>`) that must be this interpreter's venv."""
    bin_dir = str(Path(sys.executable).parent)
    path = os.environ.get("PATH", "")
    if path.split(os.pathsep)[0] != bin_dir:
        os.environ["PATH"] = bin_dir + os.pathsep + path


def create_env(config: Mapping[str, Any], job_name: str,
               extra: Mapping[str, str] | None = None
               ) -> tuple[StreamExecutionEnvironment, StreamTableEnvironment]:
    """A streaming env + table env configured for one job.

    Connector jars go to pipeline.jars unless flink.add_jars is false (a cluster whose
    lib/ already holds them, like the Docker image): jars there and in the job would be
    loaded twice by different class loaders."""
    _put_interpreter_on_path()
    conf = Configuration()
    conf.set_string("python.execution-mode", "thread")
    conf.set_string("pipeline.name", job_name)
    # Chained operators hand each record on without a defensive copy. Without it, copying
    # rows (RowDataSerializer.copy) was a quarter to a third of the samples of the busiest
    # task threads (JFR, normalize -> clean). Safe here: the SQL operators copy what they
    # buffer, Python operators serialize their input, and there are no Java user functions.
    conf.set_string("pipeline.object-reuse", "true")
    if config["flink"]["add_jars"]:
        conf.set_string("pipeline.jars", ";".join(jar_urls(config)))
    for key, value in (extra or {}).items():
        conf.set_string(key, value)
    env = StreamExecutionEnvironment.get_execution_environment(conf)
    env.set_parallelism(config["flink"]["parallelism"])
    env.enable_checkpointing(config["flink"]["checkpoint_interval_ms"],
                             CheckpointingMode.EXACTLY_ONCE)
    t_env = StreamTableEnvironment.create(env)
    t_env.get_config().set("pipeline.name", job_name)
    configure_table_env(t_env, config)
    return env, t_env


def configure_table_env(t_env: StreamTableEnvironment, config: Mapping[str, Any]) -> None:
    """Table settings every job runs with (job tests apply them to their own envs).
    Mini-batch is off unless a job enables it: set on one table env it reaches others of
    the same execution env, and it changes how event time moves (watermarks only at batch
    ends), which the subscriber job's tier reviews depend on."""
    t_env.get_config().set("table.exec.sink.require-on-conflict", "false")
    t_env.get_config().set("table.exec.mini-batch.enabled", "false")


def enable_mini_batch(t_env: StreamTableEnvironment, config: Mapping[str, Any]) -> None:
    """For jobs whose SQL aggregations write updates downstream (metrics, normalize's
    counts): one update per key per batch instead of one per event. Not for every job:
    it holds records back for up to the batch latency, and the clean job's deduplication
    is on the latency path of every event."""
    latency_ms = int(config["flink"]["mini_batch_latency_ms"])
    if latency_ms > 0:
        t_env.get_config().set("table.exec.mini-batch.enabled", "true")
        t_env.get_config().set("table.exec.mini-batch.allow-latency", f"{latency_ms} ms")
        t_env.get_config().set("table.exec.mini-batch.size",
                               str(int(config["flink"]["mini_batch_size"])))
