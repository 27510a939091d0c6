"""End-to-end fixtures: the real local stack (Kafka, PostgreSQL, Flink cluster).

The stack is started if it is not running (and stopped again afterwards in that case).
Each test gets its own topics and consumer groups through a config override file, so
tests never see each other's records or the demo's."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml

import settings
from stack import kafka

ROOT = Path(__file__).resolve().parents[2]


def _stack(command: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stack", command], cwd=ROOT,
                          capture_output=True, text=True)


@pytest.fixture(scope="session")
def local_stack():
    started_here = _stack("status").returncode != 0
    if started_here:
        result = _stack("start")
        assert result.returncode == 0, f"stack start failed:\n{result.stdout}{result.stderr}"
    yield
    if started_here:
        _stack("stop")


@pytest.fixture
def e2e_config(local_stack, tmp_path) -> tuple[dict, str, str]:
    """(config, override file path, tag) with topics and groups unique to this test."""
    tag = uuid.uuid4().hex[:8]
    base = settings.load()
    override = {
        "kafka": {
            "group_id_prefix": f"e2e-{tag}",
            "topics": {logical: {"name": f"{spec['name']}.e2e-{tag}"}
                       for logical, spec in base["kafka"]["topics"].items()},
        },
    }
    path = tmp_path / "e2e.yaml"
    path.write_text(yaml.safe_dump(override))
    config = settings.load(path)
    kafka.ensure_topics(config)
    return config, str(path), tag
