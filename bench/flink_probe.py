"""What the bench reads from Flink and the OS while jobs run: per-vertex busy /
back-pressured / idle time and record counts (REST), checkpoint durations and state size
(REST), and the TaskManager's resident memory and CPU time (/proc of its pid; read only)."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devtools import flink_rest

CLK_TCK = os.sysconf("SC_CLK_TCK")


def _get(config: Mapping[str, Any], path: str) -> Any:
    return flink_rest._call(config, path)  # the devtools helper is the one REST client


COUNTERS = {"accumulateBusyTimeMs": "busy_ms",
            "accumulateBackPressuredTimeMs": "backpressured_ms",
            "accumulateIdleTimeMs": "idle_ms", "numRecordsIn": "records_in",
            "numRecordsOut": "records_out"}


def vertex_totals(config: Mapping[str, Any], job_id: str) -> dict[str, dict[str, float]]:
    """Per vertex name: busy / back-pressured / idle ms and records in / out so far,
    summed over subtasks (Flink's task counters; a source task reports no busy time)."""
    out = {}
    for v in _get(config, f"/jobs/{job_id}")["vertices"]:
        rows = _get(config, f"/jobs/{job_id}/vertices/{v['id']}/subtasks/metrics"
                            f"?get={','.join(COUNTERS)}&agg=sum")
        values = {COUNTERS[r["id"]]: float(r["sum"]) for r in rows
                  if r.get("sum") is not None and r["sum"] == r["sum"]}  # skip NaN
        out[v["name"]] = values | {"parallelism": v.get("parallelism", 1)}
    return out


def vertex_shares(totals: Mapping[str, Mapping[str, float]]) -> dict[str, dict[str, float]]:
    """Busy / back-pressured / idle share of each vertex's accounted time (0..1, NaN when
    the task does not report it, e.g. a source's busy time) and its record totals. Shares
    of the job's life so far, which is ratio-safe however late the REST cache was
    refreshed; call right after the run so that the life is mostly the run."""
    out = {}
    for name, t in totals.items():
        busy, bp, idle = (t.get(k, float("nan")) for k in ("busy_ms", "backpressured_ms",
                                                           "idle_ms"))
        accounted = sum(x for x in (busy, bp, idle) if x == x)
        out[name] = {"busy": busy / accounted if accounted else float("nan"),
                     "backpressured": bp / accounted if accounted else float("nan"),
                     "idle": idle / accounted if accounted else float("nan"),
                     "records_in": t.get("records_in", 0.0),
                     "records_out": t.get("records_out", 0.0)}
    return out


def fresh_vertex_totals(config: Mapping[str, Any], job_ids: Mapping[str, str],
                        cache_s: float = 11.0) -> dict[str, dict[str, dict[str, float]]]:
    """vertex_totals of several jobs, read twice: the REST metric cache refreshes on a
    request but answers that request from the old values (metrics.fetcher.update-interval,
    10 s by default)."""
    for job_id in job_ids.values():
        vertex_totals(config, job_id)
    time.sleep(cache_s)
    return {job: vertex_totals(config, job_id) for job, job_id in job_ids.items()}


def checkpoints(config: Mapping[str, Any], job_id: str) -> dict[str, Any]:
    """Completed checkpoint count, end-to-end duration (ms) avg/max/p99, the latest
    checkpoint's full state size (bytes)."""
    data = _get(config, f"/jobs/{job_id}/checkpoints")
    summary = data.get("summary", {}).get("end_to_end_duration", {})
    latest = (data.get("latest") or {}).get("completed") or {}
    return {"completed": data.get("counts", {}).get("completed", 0),
            "duration_ms_avg": summary.get("avg"), "duration_ms_max": summary.get("max"),
            "duration_ms_p99": summary.get("p99"),
            "state_bytes": int(latest.get("state_size") or latest.get("checkpointed_size")
                               or 0)}


def taskmanager_pid() -> int | None:
    """The pid of the local TaskManager JVM (the stack's cluster), found by command line."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if b"TaskManagerRunner" in cmd:
            return int(entry.name)
    return None


def _rss_and_cpu(pid: int) -> tuple[int, float]:
    rss = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) * 1024
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime
    return rss, cpu


def _tree(pid: int) -> list[int]:
    """pid and its descendants (a TaskManager's Python workers in process mode)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError):
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


@dataclass
class ProcessSampler:
    """Samples a process and its descendants every `interval` s in a thread: peak RSS of
    the tree and the CPU seconds it used between start() and stop() (a descendant that
    started and ended between two samples is missed)."""

    pid: int | None
    interval: float = 0.5
    peak_rss: int = 0
    cpu_s: float = 0.0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _cpu0: dict[int, float] = field(default_factory=dict)
    _cpu: dict[int, float] = field(default_factory=dict)

    def start(self) -> ProcessSampler:
        if self.pid:
            self._cpu0 = {p: cpu for p, (_, cpu) in self._sample().items()}
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> dict[int, tuple[int, float]]:
        out = {}
        for p in _tree(self.pid):
            with contextlib.suppress(OSError):
                out[p] = _rss_and_cpu(p)
        self._cpu.update({p: cpu for p, (_, cpu) in out.items()})
        return out

    def _run(self) -> None:
        while not self._stop.is_set():
            sample = self._sample()
            if self.pid not in sample:
                return
            self.peak_rss = max(self.peak_rss, sum(rss for rss, _ in sample.values()))
            self._stop.wait(self.interval)

    def stop(self) -> ProcessSampler:
        self._stop.set()
        if self._thread:
            self._thread.join()
            self._sample()
            # processes born after start() count from zero
            self.cpu_s = sum(cpu - self._cpu0.get(p, 0.0) for p, cpu in self._cpu.items())
        return self


def _tm_metrics(config: Mapping[str, Any], names: list[str]) -> dict[str, float]:
    """Named metrics of the (first) TaskManager right now; {} without a TaskManager."""
    tms = _get(config, "/taskmanagers")["taskmanagers"]
    if not tms:
        return {}
    rows = _get(config, f"/taskmanagers/{tms[0]['id']}/metrics?get={','.join(names)}")
    return {r["id"]: float(r["value"]) for r in rows}


HEAP_USED, HEAP_MAX = "Status.JVM.Memory.Heap.Used", "Status.JVM.Memory.Heap.Max"
GC_TIME, FULL_GCS = ("Status.JVM.GarbageCollector.All.Time",
                     "Status.JVM.GarbageCollector.G1_Old_Generation.Count")


def heap_used(config: Mapping[str, Any]) -> int:
    """JVM heap in use on the (first) TaskManager right now, bytes."""
    return int(_tm_metrics(config, [HEAP_USED]).get(HEAP_USED, 0))


@dataclass
class GcTotals:
    """The TaskManager JVM's garbage collection so far. Every job's tasks share that JVM,
    so a collection pause delays all of them at once."""

    pause_ms: float
    full_gcs: float
    heap_max: int

    @classmethod
    def now(cls, config: Mapping[str, Any]) -> GcTotals:
        m = _tm_metrics(config, [GC_TIME, FULL_GCS, HEAP_MAX])
        return cls(m.get(GC_TIME, 0.0), m.get(FULL_GCS, 0.0), int(m.get(HEAP_MAX, 0)))

    def since(self, earlier: GcTotals, seconds: float) -> dict[str, float]:
        """Pause ms per second and full (old-generation) collections between the two."""
        return {"gc_ms_per_s": round((self.pause_ms - earlier.pause_ms) / seconds, 1),
                "full_gcs": int(self.full_gcs - earlier.full_gcs),
                "heap_max_bytes": self.heap_max}


def wait_until(check, timeout_s: float, every: float = 0.5) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(every)
    return False
