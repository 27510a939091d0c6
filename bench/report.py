"""The bench's outputs: a markdown table, a PNG chart (bench/results/), and the one-line
JSON summary that `make bench` prints last."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bench.stats import ratio


def summary(results: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON object of the last output line (keys fixed by issue 8)."""
    pipe, java, peer = results["pipeline"], results.get("java") or {}, results.get("peer") or {}
    return {
        "events": results["events"],
        "seconds": pipe.get("seconds"),
        "events_per_s": pipe.get("events_per_s"),
        "java_baseline_events_per_s": java.get("events_per_s"),
        "ratio_vs_java": ratio(pipe.get("events_per_s") or 0, java.get("events_per_s") or 0),
        "peer_events_per_s": peer.get("events_per_s"),
        "ratio_vs_peer": ratio(pipe.get("events_per_s") or 0, peer.get("events_per_s") or 0),
        "latency_ms": {k: pipe.get("latency_ms", {}).get(k) for k in ("p50", "p95", "p99")},
        "latency_ms_non_click": {k: pipe.get("latency_ms_non_click", {}).get(k)
                                 for k in ("p50", "p95", "p99")},
        "offered_events_per_s": pipe.get("offered_events_per_s"),
        "events_per_s_per_core": pipe.get("events_per_s_per_core"),
        "checkpoint_ms_max": max((c.get("duration_ms_max") or 0
                                  for c in pipe.get("checkpoints", {}).values()), default=None),
        "state_bytes": sum(c.get("state_bytes", 0) for c in pipe.get("checkpoints", {}).values()),
        "peak_taskmanager_rss_mb": round(pipe.get("peak_tm_rss_bytes", 0) / 2**20),
        "python_parse_events_per_s": results.get("python_parse_events_per_s"),
        "mode": results.get("mode"),
    }


def _warmup_row(system: str, run: Mapping[str, Any] | None) -> str:
    run = run or {}
    return (f"| {system} its warm-up run before, on the same input (not compared) | "
            f"{_fmt(run.get('events_per_s'))} | – | – | {_fmt(run.get('clean_records'))} |")


def _fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        value = f"{value:,.0f}" if value >= 100 else f"{value:.2f}"
    elif isinstance(value, int):
        value = f"{value:,}"
    return f"{value}{unit}"


def markdown(results: Mapping[str, Any]) -> str:
    s = summary(results)
    pipe, java, peer = results["pipeline"], results.get("java") or {}, results.get("peer") or {}
    lines = [
        f"# Benchmark ({results.get('mode')}, {results.get('when', '')})", "",
        f"Input: {results['events']:,} provider events in {results['raw_records']:,} raw "
        f"webhook records (seed {results.get('seed')}); machine: {results.get('cores')} "
        f"cores, shared and noisy unless stated otherwise. Throughput is measured between "
        f"the first and the last output record's broker append time over a preloaded topic "
        f"(the clean job already running when normalize starts); the project and the Java "
        f"baseline are measured on their second run (the first warms the TaskManager's "
        f"JIT).",
        "", "| system | events/s | events/s per core | ratio to project | output records |",
        "|---|---|---|---|---|",
        f"| project: normalize → clean (2 PyFlink jobs) | {_fmt(pipe.get('events_per_s'))} | "
        f"{_fmt(pipe.get('events_per_s_per_core'))} | 1 | {_fmt(pipe.get('clean_records'))} |",
        _warmup_row("project:", results.get("pipeline_warmup")),
        f"| (a) pure-Java Flink: Jackson UDTF + SQL dedup/counts, one job"
        f"{'' if java.get('counts_match', True) else ' (counts DIFFER from the truth)'} | "
        f"{_fmt(java.get('events_per_s'))} | "
        f"{_fmt(java.get('events_per_s_per_core'))} | "
        f"{_fmt(ratio(java.get('events_per_s') or 0, pipe.get('events_per_s') or 0))} | "
        f"{_fmt(java.get('clean_records'))} |",
        _warmup_row("(a)", results.get("java_warmup")),
        f"| (b) Quix Streams (same Python parser) | {_fmt(peer.get('events_per_s'))} | "
        f"{_fmt(peer.get('events_per_s_per_core'))} | "
        f"{_fmt(ratio(peer.get('events_per_s') or 0, pipe.get('events_per_s') or 0))} | "
        f"{_fmt(peer.get('clean_records'))} |",
        f"| pure-Python parse only (udfs.normalize, 1 thread, no Flink) | "
        f"{_fmt(results.get('python_parse_events_per_s'))} | "
        f"{_fmt(results.get('python_parse_events_per_s'))} | – | – |",
        "", f"Project / Java baseline = **{_fmt(s['ratio_vs_java'])}** (goal ≥ 0.5).", "",
        "| project pipeline | value |", "|---|---|",
        f"| clean records expected / seen | {_fmt(pipe.get('clean_expected'))} / "
        f"{_fmt(pipe.get('clean_records'))} |",
    ]
    for stage, r in (pipe.get("stages") or {}).items():
        lines.append(f"| {stage} output rate (records/s) | {_fmt(r)} |")
    lines.append(f"| metrics job alone over the clean topic (clean events/s; "
                 f"{_fmt(pipe.get('metrics_upserts'))} upserts) | "
                 f"{_fmt(pipe.get('metrics_clean_events_per_s'))} |")
    lat, nc, ck = (pipe.get("latency_ms") or {}, pipe.get("latency_ms_non_click") or {},
                   pipe.get("latency_ms_click") or {})
    nz = pipe.get("latency_ms_normalize") or {}
    lines += [
        f"| offered load (events/s, ≈ half of saturation; normalize, clean and metrics "
        f"running), asked / achieved | "
        f"{_fmt(pipe.get('offered_events_per_s'))} / "
        f"{_fmt(pipe.get('achieved_offered_events_per_s'))} |",
        f"| latency raw → clean, all events, p50 / p95 / p99 (ms) | {_fmt(lat.get('p50'))} / "
        f"{_fmt(lat.get('p95'))} / {_fmt(lat.get('p99'))} (n={_fmt(lat.get('n'))}) |",
        f"| latency, non-click events p50 / p95 / p99 (ms) | {_fmt(nc.get('p50'))} / "
        f"{_fmt(nc.get('p95'))} / {_fmt(nc.get('p99'))} |",
        f"| latency, clicks (held up to clean.bot_click_max_hold_ms for the bot verdict) "
        f"p50 / p99 (ms) | {_fmt(ck.get('p50'))} / "
        f"{_fmt(ck.get('p99'))} |",
        f"| latency raw → email.events (the normalize job alone) p50 / p99 (ms) | "
        f"{_fmt(nz.get('p50'))} / {_fmt(nz.get('p99'))} |",
        f"| latency raw → clean over the paced run, p99 per 10 s of raw append time (ms) | "
        f"{' · '.join(_fmt(b['p99']) for b in pipe.get('latency_timeline') or []) or '–'} |",
        f"| TaskManager CPU while the load was offered (cores, of "
        f"{results.get('cores')}) | {_fmt(pipe.get('paced_tm_cores'))} |",
        f"| TaskManager GC while the load was offered: pause ms per s / full GCs / heap max "
        f"(MB) | {_fmt(pipe.get('paced_tm_gc_ms_per_s'))} / "
        f"{_fmt(pipe.get('paced_tm_full_gcs'))} / "
        f"{_fmt(round(pipe.get('tm_heap_max_bytes', 0) / 2**20))} |",
        f"| peak TaskManager RSS (MB) | {_fmt(round(pipe.get('peak_tm_rss_bytes', 0) / 2**20))} |",
        f"| TaskManager CPU seconds during the throughput run | {_fmt(pipe.get('tm_cpu_s'))} |",
    ]
    for job, c in (pipe.get("checkpoints") or {}).items():
        kb = c.get("state_bytes", 0) // 1024
        lines.append(f"| {job}: checkpoints / avg / max duration (ms) / state (KB) | "
                     f"{_fmt(c.get('completed'))} / {_fmt(c.get('duration_ms_avg'))} / "
                     f"{_fmt(c.get('duration_ms_max'))} / {_fmt(kb)} |")
    vertices = pipe.get("vertices") or {}
    if vertices:
        lines += ["", "Per-vertex shares of accounted time over each job's life up to the end "
                  "of the throughput run (Flink's accumulated busy / back-pressured / idle "
                  "ms; n/a: not reported, e.g. a source task's busy time) and record totals:",
                  "",
                  "| job | vertex | busy | back-pressured | idle | records in | out |",
                  "|---|---|---|---|---|---|---|"]

        def share(x: float) -> str:
            return "n/a" if x != x else f"{x:.0%}"  # NaN: not reported

        for job, vs in vertices.items():
            for name, v in vs.items():
                lines.append(f"| {job} | {name[:90]} | {share(v['busy'])} | "
                             f"{share(v['backpressured'])} | {share(v['idle'])} | "
                             f"{_fmt(v['records_in'])} | {_fmt(v['records_out'])} |")
    for title, key in (("Profile", "profile"),):
        if results.get(key):
            lines += ["", f"## {title}", "", "| variant | value |", "|---|---|"]
            lines += [f"| {k} | {_fmt(v)} |" for k, v in results[key].items()]
    return "\n".join(lines) + "\n"


def chart(results: Mapping[str, Any], path: Path) -> bool:
    """Bar chart of events/s per system; False when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    rows = [("project\n(PyFlink, 3 jobs)", results["pipeline"].get("events_per_s")),
            ("Java Flink\n(UDTF + SQL)", (results.get("java") or {}).get("events_per_s")),
            ("Quix Streams", (results.get("peer") or {}).get("events_per_s")),
            ("Python parse\nonly", results.get("python_parse_events_per_s"))]
    rows = [(n, v) for n, v in rows if v]
    fig, ax = plt.subplots(figsize=(7, 3.5))
    bars = ax.bar([n for n, _ in rows], [v for _, v in rows],
                  color=["#d62728", "#1f77b4", "#2ca02c", "#7f7f7f"][: len(rows)])
    ax.bar_label(bars, fmt="%.0f")
    ax.set_ylabel("events/s")
    ax.set_title(f"normalize + dedup + counts, {results['events']:,} events "
                 f"({results.get('mode')})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write(results: Mapping[str, Any], out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    mode = results.get("mode", "quick")
    md = out_dir / f"bench-{mode}.md"
    md.write_text(markdown(results))
    raw = out_dir / f"bench-{mode}.json"
    raw.write_text(json.dumps(results, indent=1, default=str))
    written = [md, raw]
    png = out_dir / f"bench-{mode}.png"
    if chart(results, png):
        written.append(png)
    return written
