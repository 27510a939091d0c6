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
            exceptions = _call(config, f"/jobs/{job_id}/exceptions")
            raise RuntimeError(f"job {job_id} is {info['state']}: "
                               f"{(exceptions.get('root-exception') or '')[:3000]}")
        if info["state"] == "RUNNING" and all(
                v["status"] == "RUNNING" for v in info["vertices"]):
            return
        time.sleep(1)
    raise TimeoutError(f"job {job_id} not running after {timeout_s:.0f} s")


def cancel(config: Mapping[str, Any], job_id: str) -> None:
    _call(config, f"/jobs/{job_id}?mode=cancel", method="PATCH")


def running_jobs(config: Mapping[str, Any], name: str) -> list[str]:
    jobs = _call(config, "/jobs/overview")["jobs"]
    return [j["jid"] for j in jobs if j["name"] == name and j["state"] == "RUNNING"]
