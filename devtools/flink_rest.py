"""The few Flink REST calls the demo and tests need."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Mapping
from typing import Any


def _call(config: Mapping[str, Any], path: str, method: str = "GET") -> Any:
    url = config["flink"]["rest_url"].rstrip("/") + path
    req = urllib.request.Request(url, method=method)
    with urllib.request.urlopen(req, timeout=10) as resp:
        body = resp.read()
    return json.loads(body) if body else None


def job_state(config: Mapping[str, Any], job_id: str) -> str:
    return _call(config, f"/jobs/{job_id}")["state"]


def wait_running(config: Mapping[str, Any], job_id: str, timeout_s: float = 120.0) -> None:
    """Wait until every task of the job runs (sources consume from then on)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        info = _call(config, f"/jobs/{job_id}")
        if info["state"] in ("FAILED", "CANCELED", "FINISHED"):
            raise RuntimeError(f"job {job_id} is {info['state']}: {first_failure(config, job_id)}")
        failure = first_failure(config, job_id)
        if failure:  # restarting after a failure: report it instead of waiting it out
            raise RuntimeError(f"job {job_id} failed while starting: {failure}")
        if info["state"] == "RUNNING" and all(
                v["status"] == "RUNNING" for v in info["vertices"]):
            return
        time.sleep(1)
    raise TimeoutError(f"job {job_id} not running after {timeout_s:.0f} s")


def first_failure(config: Mapping[str, Any], job_id: str) -> str:
    """The oldest exception the job recorded (root cause first), or ''."""
    exceptions = _call(config, f"/jobs/{job_id}/exceptions")
    entries = (exceptions.get("exceptionHistory") or {}).get("entries") or []
    if entries:
        return entries[-1].get("stacktrace", "")[:4000]
    return (exceptions.get("root-exception") or "")[:4000]


def cancel(config: Mapping[str, Any], job_id: str) -> None:
    _call(config, f"/jobs/{job_id}?mode=cancel", method="PATCH")


def running_jobs(config: Mapping[str, Any], name: str) -> list[str]:
    jobs = _call(config, "/jobs/overview")["jobs"]
    return [j["jid"] for j in jobs if j["name"] == name and j["state"] == "RUNNING"]


def _post(config: Mapping[str, Any], path: str, body: dict) -> Any:
    url = config["flink"]["rest_url"].rstrip("/") + path
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read() or b"null")


def stop_with_savepoint(config: Mapping[str, Any], job_id: str,
                        target_dir: str | None = None, timeout_s: float = 120.0) -> str:
    """Stop a job with a savepoint (sources stop, state is snapshotted, sinks flush) and
    return the savepoint path to resume from. Without target_dir the cluster's
    execution.checkpointing.savepoint-dir is used."""
    body: dict[str, Any] = {"drain": False}
    if target_dir:
        body["targetDirectory"] = target_dir
    trigger = _post(config, f"/jobs/{job_id}/stop", body)["request-id"]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = _call(config, f"/jobs/{job_id}/savepoints/{trigger}")
        if status["status"]["id"] == "COMPLETED":
            operation = status["operation"]
            if "failure-cause" in operation:
                raise RuntimeError(f"stop-with-savepoint of {job_id} failed: "
                                   f"{operation['failure-cause'].get('stack-trace', '')[:3000]}")
            return operation["location"]
        time.sleep(1)
    raise TimeoutError(f"savepoint of job {job_id} not done after {timeout_s:.0f} s")


def wait_checkpoint_state_size(config: Mapping[str, Any], job_id: str,
                               timeout_s: float = 60.0) -> int:
    """Full state size in bytes of the next checkpoint that completes from now on (so it
    covers everything processed so far)."""
    def latest() -> dict | None:
        return (_call(config, f"/jobs/{job_id}/checkpoints").get("latest") or {}).get(
            "completed")

    before = (latest() or {}).get("id", -1)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        done = latest()
        if done and done["id"] > before:
            return int(done.get("state_size") or done.get("checkpointed_size") or 0)
        time.sleep(1)
    raise TimeoutError(f"no checkpoint of job {job_id} completed within {timeout_s:.0f} s")
