"""The project's single configuration: defaults in defaults.yaml, then an optional override
file, then environment variables. Everything reads it through load()."""

from __future__ import annotations

import copy
import fnmatch
import os
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

# Read through importlib.resources so that the packages also work from the zip that
# `python -m jobs submit` ships to a Flink cluster.
DEFAULTS = resources.files(__name__).joinpath("defaults.yaml")
FILE_ENV = "EMAIL_STREAMING_CONFIG"
ENV_PREFIX = "EMAIL_STREAMING__"


class ConfigError(ValueError):
    """A configuration value or override that cannot be used; the message says where."""


# Maps below these paths hold free-form keys (topic settings, per-provider field names):
# they are merged without checking each key against the defaults.
FREE_FORM = ("kafka.topics.*", "kafka.consumer_properties", "kafka.producer_properties",
             "normalize.metadata_fields", "abtest.tests",
             "subscriber.scoring.weights", "subscriber.send_time.weights")


def _merge(base: dict[str, Any], override: Mapping[str, Any], where: str, path: str = "") -> None:
    free = any(fnmatch.fnmatchcase(path.rstrip("."), pattern) for pattern in FREE_FORM)
    for key, value in override.items():
        dotted = f"{path}{key}"
        if key not in base and not free:
            raise ConfigError(
                f"{where}: unknown setting '{dotted}' (see settings/defaults.yaml)")
        if isinstance(base.get(key), dict) and isinstance(value, Mapping):
            _merge(base[key], value, where, dotted + ".")
        else:
            base[key] = copy.deepcopy(value)


def _env_overrides(environ: Mapping[str, str]) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for name in sorted(environ):
        if not name.startswith(ENV_PREFIX):
            continue
        keys = [k.lower() for k in name[len(ENV_PREFIX):].split("__")]
        if not all(keys):
            raise ConfigError(f"environment variable {name}: empty key segment")
        value: Any = yaml.safe_load(environ[name]) if environ[name] != "" else ""
        for key in reversed(keys):
            value = {key: value}
        out.append((f"environment variable {name}", value))
    return out


def load(path: str | os.PathLike[str] | None = None,
         environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Return the effective configuration as a nested dict.

    `path` (or $EMAIL_STREAMING_CONFIG) names a YAML file merged over the defaults;
    EMAIL_STREAMING__SECTION__KEY variables are applied last.
    """
    environ = os.environ if environ is None else environ
    config: dict[str, Any] = yaml.safe_load(DEFAULTS.read_text())
    override_path = path or environ.get(FILE_ENV)
    if override_path:
        p = Path(override_path)
        if not p.is_file():
            raise ConfigError(f"config file {p} does not exist (from {FILE_ENV} or --config)")
        data = yaml.safe_load(p.read_text()) or {}
        if not isinstance(data, Mapping):
            raise ConfigError(f"config file {p}: top level must be a mapping")
        _merge(config, data, f"config file {p}")
    for where, data in _env_overrides(environ):
        _merge(config, data, where)
    _validate(config)
    return config


def _validate(config: Mapping[str, Any]) -> None:
    topics = config["kafka"]["topics"]
    for logical, spec in topics.items():
        if not isinstance(spec, Mapping) or not spec.get("name"):
            raise ConfigError(f"kafka.topics.{logical}: needs a 'name'")
        partitions = spec.get("partitions", 1)
        if not isinstance(partitions, int) or partitions < 1:
            raise ConfigError(f"kafka.topics.{logical}.partitions must be a positive integer")
    guarantee = config["kafka"]["delivery_guarantee"]
    if guarantee not in ("at-least-once", "exactly-once"):
        raise ConfigError(
            f"kafka.delivery_guarantee must be at-least-once or exactly-once, not {guarantee!r}")
    for key in ("parallelism", "checkpoint_interval_ms"):
        if not isinstance(config["flink"][key], int) or config["flink"][key] < 1:
            raise ConfigError(f"flink.{key} must be a positive integer")
    norm = config["normalize"]
    if norm["python_execution_mode"] not in ("process", "thread"):
        raise ConfigError("normalize.python_execution_mode must be process or thread, not "
                          f"{norm['python_execution_mode']!r}")
    if norm["parallelism"] is not None and (
            not isinstance(norm["parallelism"], int) or norm["parallelism"] < 1):
        raise ConfigError("normalize.parallelism must be a positive integer or null")


def topic(config: Mapping[str, Any], logical: str) -> str:
    """The Kafka topic name for a logical topic (raw, events, dlq, ...)."""
    try:
        return config["kafka"]["topics"][logical]["name"]
    except KeyError:
        raise ConfigError(f"no topic '{logical}' in kafka.topics") from None


def postgres_url(config: Mapping[str, Any]) -> str:
    """libpq URL of the PostgreSQL the jobs write to (the embedded one unless url is set)."""
    pg = config["postgres"]
    if pg["url"]:
        return pg["url"]
    return (f"postgresql://{pg['user']}:{pg['password']}@127.0.0.1:{pg['embedded_port']}"
            f"/{pg['database']}")


def jdbc_url(config: Mapping[str, Any]) -> tuple[str, str, str]:
    """(jdbc url, user, password) for the Flink JDBC connector, derived from postgres_url."""
    from urllib.parse import unquote, urlsplit

    parts = urlsplit(postgres_url(config))
    if parts.scheme not in ("postgresql", "postgres"):
        raise ConfigError(f"postgres.url must start with postgresql://, got {parts.scheme}://")
    host = parts.hostname or "127.0.0.1"
    port = parts.port or 5432
    query = f"?{parts.query}" if parts.query else ""
    return (f"jdbc:postgresql://{host}:{port}{parts.path}{query}",
            unquote(parts.username or ""), unquote(parts.password or ""))
