"""python -m jobs submit JOB [--from-savepoint PATH] | stop JOB_ID | list — run the jobs
of this repo on a Flink cluster. A redeploy is `stop` (stop-with-savepoint) followed by
`submit --from-savepoint` with the printed path.

The cluster is flink.rest_url (the local stack by default; point it elsewhere with
EMAIL_STREAMING__FLINK__REST_URL). The TaskManagers import the project's packages from
their PYTHONPATH, or, with flink.ship_code, from a zip shipped with the job (-pyfs)."""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import re
import subprocess
import sys
import urllib.request
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from urllib.parse import urlsplit

import settings
from stack.errors import StackError
from stack.flink import client_env, flink_home, link_lib_dir

ROOT = Path(__file__).resolve().parent.parent
JOBS = {"normalize": "jobs.normalize", "clean": "jobs.clean", "metrics": "jobs.metrics",
        "abtest": "jobs.abtest", "subscriber": "jobs.subscriber", "rules": "jobs.rules.job"}
SHIPPED_PACKAGES = ("jobs", "udfs", "settings", "stack")


def build_zip(target: Path | None = None) -> Path:
    target = target or ROOT / "build" / "email_streaming.zip"
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(f".{os.getpid()}.tmp")
    with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as zf:
        for package in SHIPPED_PACKAGES:
            for path in sorted((ROOT / package).rglob("*")):
                if path.suffix in (".py", ".yaml") and "__pycache__" not in path.parts:
                    zf.write(path, path.relative_to(ROOT))
        for path in sorted((ROOT / "avro").glob("*.avsc")):
            zf.write(path, path.relative_to(ROOT))
    # Atomic: a `flink run` started earlier may still be reading the previous zip.
    os.replace(partial, target)
    return target


@contextlib.contextmanager
def _build_lock() -> Iterator[None]:
    lock_path = ROOT / "build" / ".lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def submit(job: str, config: dict, config_path: str | None = None,
           detached: bool = True, savepoint: str | None = None,
           env_extra: Mapping[str, str] | None = None) -> str:
    """Run `flink run` for one job, by name (JOBS) or module path (e.g. the benchmark's
    baseline, bench.java_baseline); returns the JobID. The job's client process reads the
    same settings: the override file (config_path) and EMAIL_STREAMING__* variables, plus
    `env_extra`."""
    module = JOBS.get(job) or (job if "." in job else None)
    if module is None:
        raise StackError(f"unknown job {job!r}; jobs: {', '.join(sorted(JOBS))}")
    rest = urlsplit(config["flink"]["rest_url"])
    stack_conf = ROOT / config["local_stack"]["dir"] / "flink" / "conf"
    conf_dir = stack_conf if stack_conf.is_dir() else flink_home() / "conf"
    with _build_lock():
        # Concurrent submits (threads or processes) must not rebuild these under each other.
        shipped = build_zip()
        client_lib = link_lib_dir(ROOT / "build" / "flink-client-lib")
    argv = [str(flink_home() / "bin" / "flink"), "run", "-m", rest.netloc,
            *(["-pyfs", str(shipped)] if config["flink"]["ship_code"] else []),
            "-pym", module]
    if detached:
        argv.insert(2, "-d")
    if savepoint:
        # Resume: operator state and source offsets come from the savepoint.
        argv[2:2] = ["-s", savepoint]
    env = client_env(conf_dir)
    env["FLINK_LIB_DIR"] = str(client_lib)
    if config_path:
        env[settings.FILE_ENV] = str(Path(config_path).resolve())
    env.update(env_extra or {})
    result = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True)
    match = re.search(r"JobID ([0-9a-f]{32})", result.stdout + result.stderr)
    if result.returncode != 0 or not match:
        raise StackError(f"submitting {job} failed (exit {result.returncode}):\n"
                         f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
    return match.group(1)


def list_jobs(config: dict) -> list[dict]:
    url = config["flink"]["rest_url"].rstrip("/") + "/jobs/overview"
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return json.load(resp)["jobs"]
    except OSError as exc:
        raise StackError(f"cannot reach the Flink REST API at {url}: {exc}. "
                         "Is the cluster up? (python -m stack status)") from exc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p_submit = sub.add_parser("submit", help="submit a job (detached)")
    p_submit.add_argument("job", choices=sorted(JOBS))
    p_submit.add_argument("--from-savepoint", metavar="PATH",
                          help="resume from a savepoint (path printed by `stop`)")
    p_stop = sub.add_parser("stop", help="stop a job with a savepoint; prints its path")
    p_stop.add_argument("job_id")
    sub.add_parser("list", help="jobs on the cluster")
    parser.add_argument("--config", help="YAML file merged over settings/defaults.yaml")
    args = parser.parse_args(argv)
    try:
        config = settings.load(args.config)
        if args.command == "submit":
            job_id = submit(args.job, config, args.config, savepoint=args.from_savepoint)
            print(f"submitted {args.job}: JobID {job_id}")
        elif args.command == "stop":
            from devtools.flink_rest import stop_with_savepoint

            print(f"stopped {args.job_id}; savepoint: "
                  f"{stop_with_savepoint(config, args.job_id)}")
        else:
            for job in list_jobs(config):
                print(f"{job['jid']}  {job['state']:<10} {job['name']}")
    except (StackError, settings.ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
