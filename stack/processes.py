"""Process bookkeeping for the local stack: pid files, port checks and readiness waits.

Stop only ever signals a pid that this stack recorded *and* whose command line still
mentions the stack's own directory, so a recycled pid or another user's process is never
touched, and nothing is ever killed by name."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from stack.errors import StackError


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def require_free(port: int, what: str, setting: str) -> None:
    if port_open(port):
        raise StackError(
            f"port {port} (for {what}) is already in use by another process. Stop that "
            f"process, or choose another port: EMAIL_STREAMING__{setting.upper()}=<port>")


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def read_pid(pid_file: Path, marker: str) -> int | None:
    """The recorded pid if that process is alive and is still ours (its command line
    contains `marker`, a path unique to this stack)."""
    try:
        pid = int(pid_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return pid if marker in cmdline(pid) else None


def alive(pid: int) -> bool:
    """The process exists and has not exited (a zombie has exited)."""
    return Path(f"/proc/{pid}").exists() and not _is_zombie(pid)


def spawn(argv: Sequence[str], log_file: Path, pid_file: Path,
          env: dict[str, str] | None = None, cwd: Path | None = None) -> int:
    """Start a detached daemon (own session, so Ctrl-C in the caller does not reach it)."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "ab") as log:
        proc = subprocess.Popen(list(argv), stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=env, cwd=cwd,
                                start_new_session=True)
    pid_file.write_text(f"{proc.pid}\n")
    return proc.pid


def terminate(pid: int, timeout_s: float = 30.0) -> None:
    """SIGTERM, then SIGKILL if it has not exited within timeout_s."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not alive(pid):
            return
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1].startswith("Z")
    except (OSError, IndexError):
        return True


def wait_until(check: Callable[[], bool], timeout_s: float, what: str, log_file: Path | None,
               alive: Callable[[], bool] | None = None) -> None:
    """Poll `check` until true; fail with the tail of the service's log on timeout or when
    the process died (`alive` false), so the user sees why."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        if alive is not None and not alive():
            raise StackError(f"{what} exited during start-up.{_log_tail(log_file)}")
        time.sleep(0.5)
    raise StackError(f"{what} was not ready after {timeout_s:.0f} s "
                     f"(local_stack.ready_timeout_s).{_log_tail(log_file)}")


def _log_tail(log_file: Path | None, lines: int = 25) -> str:
    if log_file is None or not log_file.exists():
        return ""
    tail = log_file.read_text(errors="replace").splitlines()[-lines:]
    return f"\nLast lines of {log_file}:\n  " + "\n  ".join(tail)
