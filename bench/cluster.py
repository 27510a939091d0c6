"""Submitting the bench's own Flink job modules (baseline, profiling variants) the way
`python -m jobs submit` submits the project's jobs: same client lib, conf dir and
settings file; the TaskManagers import bench/ from the checkout on their PYTHONPATH."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

import settings
from jobs.__main__ import JOBS, ROOT, _build_lock, submit
from stack.errors import StackError
from stack.flink import client_env, flink_home, link_lib_dir


def submit_any(job: str, config: dict, config_path: str,
               env_extra: Mapping[str, str] | None = None) -> str:
    """A project job by name (jobs/__main__.py) or a module path; returns the JobID.
    `env_extra` reaches the job's client process (where the pipeline is built)."""
    if job in JOBS and not env_extra:
        return submit(job, config, config_path)
    module = JOBS.get(job, job)
    rest = urlsplit(config["flink"]["rest_url"])
    stack_conf = ROOT / config["local_stack"]["dir"] / "flink" / "conf"
    conf_dir = stack_conf if stack_conf.is_dir() else flink_home() / "conf"
    with _build_lock():
        client_lib = link_lib_dir(ROOT / "build" / "flink-client-lib")
    argv = [str(flink_home() / "bin" / "flink"), "run", "-d", "-m", rest.netloc,
            "-pym", module]
    env = client_env(conf_dir)
    env["FLINK_LIB_DIR"] = str(client_lib)
    env[settings.FILE_ENV] = str(Path(config_path).resolve())
    env.update(env_extra or {})
    result = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True)
    match = re.search(r"JobID ([0-9a-f]{32})", result.stdout + result.stderr)
    if result.returncode != 0 or not match:
        raise StackError(f"submitting {module} failed (exit {result.returncode}):\n"
                         f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
    return match.group(1)
