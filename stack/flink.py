"""A Flink standalone cluster (one JobManager, one TaskManager) started with the scripts
that ship in the PyFlink wheel, configured from flink-conf/config.yaml plus the local
ports and directories."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from stack import preflight, processes
from stack.errors import StackError

ROOT = Path(__file__).resolve().parent.parent
CLUSTER_CONFIG = ROOT / "flink-conf" / "config.yaml"


def link_lib_dir(lib_dir: Path) -> Path:
    """A Flink lib/ folder of links: the wheel's lib/, opt/flink-python (JobManager and
    TaskManager must load the Python operators from their own classpath) and the
    connector jars from jars/flink. Connectors in lib/ are loaded once per JVM; shipped
    with every job they are loaded again per job and leak Metaspace until the
    TaskManager dies. Used for the local cluster and for the `flink run` client, which
    needs the connectors to plan a job."""
    jars_dir = ROOT / "jars" / "flink"
    preflight.flink_jars(jars_dir)
    home = flink_home()
    wanted = {jar.name: jar.resolve() for jar in [
        *(home / "lib").glob("*.jar"), *(home / "opt").glob("flink-python-*.jar"),
        *jars_dir.glob("*.jar")]}
    if lib_dir.is_dir() and {p.name: p.resolve() for p in lib_dir.iterdir()} == wanted:
        return lib_dir  # unchanged: a running client or cluster may be reading it
    if lib_dir.exists():
        shutil.rmtree(lib_dir)
    lib_dir.mkdir(parents=True)
    for name, target in wanted.items():
        (lib_dir / name).symlink_to(target)
    return lib_dir


def flink_home() -> Path:
    import pyflink

    return Path(pyflink.__file__).resolve().parent


def client_env(conf_dir: Path | None = None) -> dict[str, str]:
    """Environment for Flink's scripts. Thread mode embeds the interpreter that is first
    on PATH, so the venv's bin must lead PATH in every process that runs Python code."""
    env = dict(os.environ)
    venv_bin = str(Path(sys.executable).parent)
    env["PATH"] = venv_bin + os.pathsep + env.get("PATH", "")
    env["VIRTUAL_ENV"] = str(Path(sys.executable).parent.parent)
    env["FLINK_HOME"] = str(flink_home())
    if conf_dir is not None:
        env["FLINK_CONF_DIR"] = str(conf_dir)
    return env


class FlinkCluster:
    def __init__(self, config: Mapping[str, Any], stack_dir: Path):
        local = config["local_stack"]
        self.rest_port = local["flink_rest_port"]
        self.rpc_port = local["flink_rpc_port"]
        self.timeout = local["ready_timeout_s"]
        self.dir = stack_dir / "flink"
        self.conf_dir = self.dir / "conf"
        self.log_dir = self.dir / "log"
        self.pid_dir = self.dir / "run"
        self.lib_dir = self.dir / "lib"

    @property
    def rest_url(self) -> str:
        return f"http://127.0.0.1:{self.rest_port}"

    def _env(self) -> dict[str, str]:
        env = client_env(self.conf_dir)
        env["FLINK_LOG_DIR"] = str(self.log_dir)
        env["FLINK_LIB_DIR"] = str(self.lib_dir)
        # Thread mode runs every job's Python code in ONE interpreter per TaskManager, so
        # modules imported by one job stay in sys.modules for the next; imported from a
        # job's shipped zip, they point into a folder deleted when that job ends and later
        # jobs fail with ModuleNotFoundError. Importing the project from this checkout
        # gives every job the same, lasting module paths.
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
        env["FLINK_PID_DIR"] = str(self.pid_dir)
        return env

    def write_config(self) -> Path:
        for d in (self.conf_dir, self.log_dir, self.pid_dir, self.dir / "tmp"):
            d.mkdir(parents=True, exist_ok=True)
        link_lib_dir(self.lib_dir)
        wheel_conf = flink_home() / "conf"
        for name in ("log4j.properties", "log4j-console.properties", "log4j-cli.properties",
                     "log4j-session.properties"):
            shutil.copy(wheel_conf / name, self.conf_dir / name)
        (self.conf_dir / "masters").write_text(f"127.0.0.1:{self.rest_port}\n")
        (self.conf_dir / "workers").write_text("127.0.0.1\n")
        conf = yaml.safe_load(CLUSTER_CONFIG.read_text())
        # Java 17 module opens that Flink needs (reflection into java.util etc.) ship in
        # the wheel's default config; keep them.
        wheel_defaults = yaml.safe_load((wheel_conf / "config.yaml").read_text())
        conf["env.java.opts.all"] = wheel_defaults["env"]["java"]["opts"]["all"]
        python = str(Path(sys.executable))
        conf.update({
            "jobmanager.rpc.address": "127.0.0.1",
            "jobmanager.rpc.port": self.rpc_port,
            "taskmanager.host": "127.0.0.1",
            "rest.address": "127.0.0.1",
            "rest.bind-address": "127.0.0.1",
            "rest.port": self.rest_port,
            "jobmanager.bind-host": "127.0.0.1",
            "taskmanager.bind-host": "127.0.0.1",
            "execution.checkpointing.dir": (self.dir / "checkpoints").as_uri(),
            "execution.checkpointing.savepoint-dir": (self.dir / "savepoints").as_uri(),
            "io.tmp.dirs": str(self.dir / "tmp"),
            "python.executable": python,
            "python.client.executable": python,
        })
        (self.conf_dir / "config.yaml").write_text(yaml.safe_dump(conf, sort_keys=True))
        return self.conf_dir

    def _daemon_pids(self, ours_only: bool = True) -> list[int]:
        """Pids from Flink's own pid files; with ours_only, only those whose command line
        names this stack's config dir (safe to signal)."""
        pids = []
        for pid_file in self.pid_dir.glob("*.pid"):
            for line in pid_file.read_text().split():
                if not line.isdigit():
                    continue
                if (str(self.conf_dir) in processes.cmdline(int(line)) if ours_only
                        else processes.alive(int(line))):
                    pids.append(int(line))
        return pids

    def overview(self) -> dict[str, Any] | None:
        try:
            with urllib.request.urlopen(f"{self.rest_url}/overview", timeout=2) as resp:
                return json.load(resp)
        except OSError:
            return None

    def _ready(self) -> bool:
        info = self.overview()
        return bool(info) and info.get("taskmanagers", 0) >= 1

    def start(self) -> str:
        if self._daemon_pids() and self._ready():
            return f"Flink already running at {self.rest_url}"
        processes.require_free(self.rest_port, "the Flink REST endpoint",
                               "local_stack__flink_rest_port")
        processes.require_free(self.rpc_port, "Flink JobManager RPC",
                               "local_stack__flink_rpc_port")
        self.write_config()
        bin_dir = flink_home() / "bin"
        result = subprocess.run([str(bin_dir / "start-cluster.sh")], env=self._env(),
                                capture_output=True, text=True)
        if result.returncode != 0:
            raise StackError(f"start-cluster.sh failed:\n{result.stdout}{result.stderr}")
        log = next(iter(sorted(self.log_dir.glob("*standalonesession*.log"))), None)
        processes.wait_until(self._ready, self.timeout, "Flink (JobManager + TaskManager)",
                             log, alive=lambda: bool(self._daemon_pids(ours_only=False)))
        return f"Flink started at {self.rest_url} (logs in {self.log_dir})"

    def stop(self) -> str:
        pids = self._daemon_pids()
        if not pids:
            return "Flink not running"
        subprocess.run([str(flink_home() / "bin" / "stop-cluster.sh")], env=self._env(),
                       capture_output=True, text=True)
        # stop-cluster.sh only sends the signal; wait for the exit so the ports are free
        # when this returns (SIGKILL after 30 s).
        for pid in pids:
            processes.terminate(pid, timeout_s=30)
        return f"Flink stopped (pids {', '.join(map(str, pids))})"

    def status(self) -> str:
        info = self.overview()
        if info:
            return (f"Flink: running at {self.rest_url}: {info.get('taskmanagers')} "
                    f"TaskManager(s), {info.get('slots-available')}/{info.get('slots-total')} "
                    f"slots free, {info.get('jobs-running')} job(s) running")
        return "Flink: stopped" if not self._daemon_pids() else "Flink: starting or unhealthy"


def require_jars(config: Mapping[str, Any]) -> None:
    preflight.flink_jars(ROOT / config["flink"]["jars_dir"])
