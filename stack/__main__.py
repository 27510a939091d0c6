"""python -m stack start|stop|status|topics|schema — the local stack's one interface.

start is idempotent: what runs already is left alone, what is missing is started.
stop ends only processes this stack started (pid files under local_stack.dir)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import settings
from stack import kafka, postgres, preflight
from stack.errors import StackError
from stack.flink import FlinkCluster, require_jars

ROOT = Path(__file__).resolve().parent.parent


def components(config):
    stack_dir = (ROOT / config["local_stack"]["dir"]).resolve()
    stack_dir.mkdir(parents=True, exist_ok=True)
    parts = {"kafka": kafka.KafkaBroker(config, stack_dir),
             "flink": FlinkCluster(config, stack_dir)}
    if not config["postgres"]["url"]:
        parts["postgres"] = postgres.EmbeddedPostgres(config, stack_dir)
    return parts


def start(config) -> None:
    preflight.java_version()
    preflight.kafka_classpath()
    require_jars(config)
    parts = components(config)
    print(parts["kafka"].start(), flush=True)
    for message in kafka.ensure_topics(config, parts["kafka"].bootstrap):
        print(f"  {message}")
    if "postgres" in parts:
        print(parts["postgres"].start(), flush=True)
    else:
        print("PostgreSQL: using postgres.url (no embedded server)")
    print(f"  schema applied: {', '.join(postgres.apply_schema(config))}")
    print(parts["flink"].start(), flush=True)


def stop(config) -> None:
    parts = components(config)
    # Flink first: its jobs are the clients of the other two.
    for name in ("flink", "kafka", "postgres"):
        if name in parts:
            print(parts[name].stop(), flush=True)


def status(config) -> int:
    parts = components(config)
    lines = [parts[name].status() for name in ("kafka", "postgres", "flink") if name in parts]
    print("\n".join(lines))
    return 0 if all(": running" in line for line in lines) else 3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stack", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["start", "stop", "status", "topics", "schema"])
    parser.add_argument("--config", help="YAML file merged over settings/defaults.yaml")
    args = parser.parse_args(argv)
    try:
        config = settings.load(args.config)
        if args.command == "start":
            start(config)
        elif args.command == "stop":
            stop(config)
        elif args.command == "status":
            return status(config)
        elif args.command == "topics":
            for message in kafka.ensure_topics(config) or ["all topics exist"]:
                print(message)
        elif args.command == "schema":
            print(f"schema applied: {', '.join(postgres.apply_schema(config))}")
    except (StackError, settings.ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
