"""Submitting and redeploying the rules job on the cluster (flink.rest_url), through the
same `flink run` wrapper and REST helpers as every other job."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from devtools import flink_rest
from jobs.__main__ import list_jobs, submit
from jobs.rules.job import job_name
from stack.errors import StackError

JOB = "rules"  # the key in jobs.__main__.JOBS
# Job states after which a job holds no slots and no state to carry over.
ENDED = {"FINISHED", "CANCELED", "FAILED"}


@dataclass(frozen=True)
class Deployed:
    job_id: str
    stopped: str | None = None    # the job that was replaced
    savepoint: str | None = None  # where its state went


def run(config: Mapping[str, Any], config_path: str | None = None) -> str:
    """Submit the rules job (detached); returns its JobID."""
    return submit(JOB, dict(config), config_path)


def deploy(config: Mapping[str, Any], config_path: str | None = None) -> Deployed:
    """Stop the running rules job of this deployment with a savepoint and submit the
    current rules from it. Operators whose generated ids are unchanged get their state
    back (open matches, join buffers, windows); state of operators that changed or went
    away is dropped (ignore-unclaimed-state). Without a running job: a plain submit."""
    name = job_name(config)
    # Every job of this deployment that has not ended: one that is restarting or still
    # starting must not be overlooked (a second job would write the same triggers).
    active = [j for j in list_jobs(dict(config))
              if j["name"] == name and j["state"] not in ENDED]
    if len(active) > 1:
        raise StackError(f"{len(active)} jobs named {name!r} are active "
                         f"({', '.join(j['jid'] for j in active)}); stop all but one first")
    if not active:
        return Deployed(run(config, config_path))
    old = active[0]
    if old["state"] != "RUNNING":
        raise StackError(f"the rules job {old['jid']} is {old['state']}: a savepoint needs a "
                         "running job; wait, or cancel it (python -m jobs list) and `run`")
    savepoint = flink_rest.stop_with_savepoint(config, old["jid"])
    job_id = submit(JOB, dict(config), config_path, savepoint=savepoint)
    return Deployed(job_id, old["jid"], savepoint)
