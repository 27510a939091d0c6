"""A single Kafka broker in KRaft mode (broker + controller in one JVM) from jars/kafka,
and topic creation from the topology in settings (kafka.topics)."""

from __future__ import annotations

import base64
import subprocess
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from stack import preflight, processes
from stack.errors import StackError

LOG4J2 = """\
status = warn
appender.file.type = File
appender.file.name = file
appender.file.fileName = {log}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = file
logger.kafka.name = kafka
logger.kafka.level = WARN
logger.apache.name = org.apache.kafka
logger.apache.level = WARN
"""


class KafkaBroker:
    def __init__(self, config: Mapping[str, Any], stack_dir: Path):
        local = config["local_stack"]
        self.port = local["kafka_port"]
        self.controller_port = local["kafka_controller_port"]
        self.timeout = local["ready_timeout_s"]
        self.dir = stack_dir / "kafka"
        self.data = self.dir / "data"
        self.props = self.dir / "server.properties"
        self.pid_file = self.dir / "kafka.pid"
        self.log = self.dir / "kafka.out"

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def pid(self) -> int | None:
        return processes.read_pid(self.pid_file, str(self.props))

    def running(self) -> bool:
        return self.pid() is not None

    def _write_config(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.props.write_text("\n".join([
            "process.roles=broker,controller",
            "node.id=1",
            f"controller.quorum.voters=1@127.0.0.1:{self.controller_port}",
            f"listeners=PLAINTEXT://127.0.0.1:{self.port},"
            f"CONTROLLER://127.0.0.1:{self.controller_port}",
            f"advertised.listeners=PLAINTEXT://127.0.0.1:{self.port}",
            "controller.listener.names=CONTROLLER",
            "inter.broker.listener.name=PLAINTEXT",
            "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            f"log.dirs={self.data}",
            # One broker: every internal topic has one replica.
            "offsets.topic.replication.factor=1",
            "transaction.state.log.replication.factor=1",
            "transaction.state.log.min.isr=1",
            "share.coordinator.state.topic.replication.factor=1",
            "share.coordinator.state.topic.min.isr=1",
            "group.initial.rebalance.delay.ms=0",
            # Flink's exactly-once sink keeps transactions open for a checkpoint interval.
            "transaction.max.timeout.ms=900000",
            "auto.create.topics.enable=false",
            "",
        ]))
        (self.dir / "log4j2.properties").write_text(LOG4J2.format(log=self.dir / "server.log"))

    def _java(self, main: str, *args: str) -> list[str]:
        return ["java", "-Xms256m", "-Xmx768m",
                f"-Dlog4j2.configurationFile={self.dir / 'log4j2.properties'}",
                "-cp", preflight.kafka_classpath(), main, *args]

    def start(self) -> str:
        if self.running():
            return f"Kafka already running (pid {self.pid()}) on {self.bootstrap}"
        processes.require_free(self.port, "Kafka", "local_stack__kafka_port")
        processes.require_free(self.controller_port, "the Kafka controller",
                               "local_stack__kafka_controller_port")
        self._write_config()
        if not (self.data / "meta.properties").exists():
            cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
            result = subprocess.run(
                # `=`: a random id may start with "-", which argparse would take for an
                # option (seen in CI: "argument --cluster-id/-t: expected one argument").
                self._java("kafka.tools.StorageTool", "format", f"--cluster-id={cluster_id}",
                           "-c", str(self.props)),
                capture_output=True, text=True)
            if result.returncode != 0:
                raise StackError(f"formatting Kafka storage failed:\n{result.stdout}"
                                 f"{result.stderr}")
        pid = processes.spawn(self._java("kafka.Kafka", str(self.props)), self.log,
                              self.pid_file)
        # Liveness by pid, not by command line: the java launcher may re-exec itself while
        # starting, and its command line is briefly unreadable.
        processes.wait_until(self._ready, self.timeout, "Kafka", self.dir / "server.log",
                             alive=lambda: processes.alive(pid))
        return f"Kafka started (pid {pid}) on {self.bootstrap}"

    def _ready(self) -> bool:
        if not processes.port_open(self.port):
            return False
        try:
            admin = admin_client(self.bootstrap, timeout_ms=3000)
        except Exception:
            return False
        try:
            admin.list_topics()
            return True
        except Exception:
            return False
        finally:
            admin.close()

    def stop(self) -> str:
        pid = self.pid()
        if pid is None:
            return "Kafka not running"
        processes.terminate(pid, timeout_s=30)
        self.pid_file.unlink(missing_ok=True)
        return f"Kafka stopped (pid {pid})"

    def status(self) -> str:
        pid = self.pid()
        return f"Kafka: running (pid {pid}) on {self.bootstrap}" if pid else "Kafka: stopped"


def admin_client(bootstrap: str, timeout_ms: int = 10000):  # -> KafkaAdminClient
    from kafka.admin import KafkaAdminClient

    return KafkaAdminClient(bootstrap_servers=bootstrap, client_id="email-streaming-stack",
                            request_timeout_ms=timeout_ms)


def topic_specs(config: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The topology as a list of {name, partitions, replication, config} dicts."""
    replication = config["kafka"].get("replication_factor", 1)
    specs = []
    for spec in config["kafka"]["topics"].values():
        specs.append({
            "name": spec["name"],
            "partitions": int(spec.get("partitions", 1)),
            "replication": int(spec.get("replication_factor", replication)),
            "config": {str(k): str(v) for k, v in (spec.get("config") or {}).items()},
        })
    return specs


def ensure_topics(config: Mapping[str, Any], bootstrap: str | None = None) -> list[str]:
    """Create the topics that do not exist yet; existing ones are left as they are (a
    partition count differing from the topology is reported, never changed silently)."""
    from kafka.admin import NewTopic

    admin = admin_client(bootstrap or config["kafka"]["bootstrap_servers"])
    try:
        existing = set(admin.list_topics())
        wanted = topic_specs(config)
        new = [NewTopic(s["name"], s["partitions"], s["replication"], topic_configs=s["config"])
               for s in wanted if s["name"] not in existing]
        if new:
            admin.create_topics(new)
        messages = [f"created topic {t.name}" for t in new]
        present = [s for s in wanted if s["name"] in existing]
        if present:
            described = {d["name"]: len(d["partitions"])
                         for d in admin.describe_topics([s["name"] for s in present])}
            for s in present:
                if described.get(s["name"]) != s["partitions"]:
                    messages.append(f"WARNING: topic {s['name']} has {described.get(s['name'])} "
                                    f"partitions, the topology says {s['partitions']}")
        return messages
    finally:
        admin.close()
