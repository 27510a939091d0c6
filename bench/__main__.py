"""python -m bench [--mode quick|full] — the pipeline benchmark of issue 8.

On the running local stack, with topics and consumer groups of its own (suffix
.bench-<tag>, deleted afterwards unless --keep-topics):

1. generates seeded raw webhook traffic (bench/traffic.py) and works out with the
   project's own parser what the jobs must output (which also times the parser alone);
2. preloads it into the raw topic, runs the normalize and clean jobs over it (clean
   first, then normalize) once into warm-up topics and then again, and measures on the
   second run sustained throughput (first to last output append time), per-vertex busy
   time, TaskManager memory and CPU (with its Python workers); then the metrics job over
   the finished clean topic;
3. offers new traffic at half the measured rate, measures raw → clean latency from broker
   append times, then reads checkpoint durations and state sizes and cancels the jobs;
4. (before 2.) runs baseline (a), one pure-Java Flink SQL job (bench/java_baseline.py),
   twice (the first warms up), and (b) Quix Streams (bench/quix_peer.py) over the same
   preloaded records;
5. writes bench/results/bench-<mode>.{md,json,png} and prints one JSON line last.

Progress goes to stderr; stdout carries the summary. Figures from a shared machine are
noisy: compare ratios from the same run, not absolutes across runs."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml

import settings
from bench import flink_probe, java_baseline, kafka_load, report, traffic
from bench.stats import latencies, rate, summary_ms, timeline
from devtools import flink_rest
from jobs.__main__ import submit

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
MODES = {"quick": {"events": 100_000, "paced_s": 30.0, "timeout_s": 240.0},
         "full": {"events": 300_000, "paced_s": 120.0, "timeout_s": 1200.0}}
OUTPUT_TOPICS = ("events", "clean", "late", "dlq", "metrics")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def bench_config(tag: str) -> tuple[dict, str]:
    """Settings with every topic renamed <name>.bench-<tag> and own consumer groups."""
    base = settings.load()
    override = {"kafka": {"group_id_prefix": f"bench-{tag}", "topics": {
        logical: {"name": f"{spec['name']}.bench-{tag}"}
        for logical, spec in base["kafka"]["topics"].items()}}}
    with tempfile.NamedTemporaryFile("w", prefix="bench-", suffix=".yaml",
                                     delete=False) as handle:
        yaml.safe_dump(override, handle)
    return settings.load(handle.name), handle.name


def wait_for(label: str, current: Callable[[], int], expected: int, timeout_s: float,
             settle_s: float = 20.0) -> int:
    """Poll a record count until it reaches `expected`, or stops growing for settle_s
    after reaching 95 % of it, or the timeout passes; returns the last count."""
    deadline = time.monotonic() + timeout_s
    last, last_change = -1, time.monotonic()
    while time.monotonic() < deadline:
        n = current()
        kafka_load.progress(label, n, expected)
        if n >= expected:
            break
        if n != last:
            last, last_change = n, time.monotonic()
        elif n >= 0.95 * expected and time.monotonic() - last_change > settle_s:
            break
        time.sleep(0.5)
    print(file=sys.stderr)
    return n


def start_clean_then_normalize(config: dict, path: str, ids: dict[str, str],
                               env_extra: Mapping[str, str] | None = None) -> None:
    """Submit clean, wait until it runs, then normalize; `ids` gets each job id as soon as
    it is submitted, so that the caller can cancel whatever started. Clean first: it runs
    before its input arrives, as in production where the jobs run on. Started together,
    normalize worked through the preloaded topic while clean was still starting (its
    Python operator takes seconds), and the figure measured clean's start-up instead of
    the pipeline's throughput."""
    for job in ("clean", "normalize"):
        log(f"submitting {job} ...")
        ids[job] = submit(job, config, path, env_extra=env_extra)
        flink_rest.wait_running(config, ids[job])


def _decode_event(value: bytes, schema: Any) -> tuple[str, str]:
    import fastavro

    record = fastavro.schemaless_reader(io.BytesIO(value), schema)
    return record["event_id"], record["event_type"]


def run_pipeline(config: dict, path: str, records: list, truth: traffic.Truth,
                 spec: traffic.TrafficSpec, paced_s: float, timeout_s: float) -> dict:
    boot = config["kafka"]["bootstrap_servers"]
    topic = {t: settings.topic(config, t) for t in ("raw", *OUTPUT_TOPICS)}
    tm = flink_probe.ProcessSampler(flink_probe.taskmanager_pid()).start()
    ids: dict[str, str] = {}
    out: dict[str, Any] = {"job_ids": ids}
    try:
        start_clean_then_normalize(config, path, ids)
        started = time.monotonic()
        seen = wait_for("clean records", lambda: kafka_load.count(boot, topic["clean"]),
                        truth.clean, timeout_s)
        seconds_wall = time.monotonic() - started
        tm.stop()
        _fail_if_restarted(config, ids)
        totals = flink_probe.fresh_vertex_totals(config, ids)
        spans = {t: kafka_load.append_span(boot, topic[t]) for t in ("events", "clean")}
        first = spans["events"][1]
        last = spans["clean"][2]
        cores = os.cpu_count() or 1
        events_per_s = rate(truth.events, first, last)
        out |= {
            "clean_expected": truth.clean, "clean_records": seen,
            "seconds": round((last - first) / 1000, 2),
            "seconds_from_running": round(seconds_wall, 2),
            "events_per_s": round(events_per_s), "events_per_s_per_core":
                round(events_per_s / cores), "cores": cores,
            "stages": {f"{t} ({n:,} records)": round(rate(n, a, b))
                       for t, (n, a, b) in spans.items()},
            "vertices": {j: flink_probe.vertex_shares(t) for j, t in totals.items()},
            "peak_tm_rss_bytes": tm.peak_rss, "tm_cpu_s": round(tm.cpu_s, 1),
            "tm_heap_used_bytes": flink_probe.heap_used(config),
        }
        log(f"normalize -> clean: {truth.events:,} events, {seen:,}/{truth.clean:,} clean, "
            f"{events_per_s:,.0f} events/s")
        # The metrics job on its own over the finished clean topic, then it runs on with
        # the others for the paced phase. (Running during the throughput phase, it took
        # a third of the CPU that normalize and clean share.)
        out |= run_metrics(config, path, ids, truth, timeout_s)
        if paced_s > 0 and events_per_s > 0:
            out |= run_paced(config, events_per_s / 2, paced_s, spec, timeout_s)
            _fail_if_restarted(config, ids)
        out["checkpoints"] = {j: flink_probe.checkpoints(config, i) for j, i in ids.items()}
    finally:
        tm.stop()
        for job_id in ids.values():
            with contextlib.suppress(Exception):
                flink_rest.cancel(config, job_id)
    return out


def run_metrics(config: dict, path: str, ids: dict[str, str], truth: traffic.Truth,
                timeout_s: float) -> dict:
    """Start the metrics job over the clean topic (complete by now) and measure how fast
    it works through it: clean records / its output's first-to-last append time. Its
    output is upserts (mini-batched), whose number is not known beforehand, so it is done
    when the output has been quiet for a few seconds."""
    boot = config["kafka"]["bootstrap_servers"]
    metrics_topic = settings.topic(config, "metrics")
    log("submitting metrics ...")
    ids["metrics"] = submit("metrics", config, path)
    flink_rest.wait_running(config, ids["metrics"])
    deadline = time.monotonic() + timeout_s
    last, quiet_since = -1, time.monotonic()
    while time.monotonic() < deadline:
        n = kafka_load.count(boot, metrics_topic)
        kafka_load.progress("metrics records", n, n)
        if n != last:
            last, quiet_since = n, time.monotonic()
        elif n > 0 and time.monotonic() - quiet_since > 5:
            break
        time.sleep(0.5)
    print(file=sys.stderr)
    n, first, end = kafka_load.append_span(boot, metrics_topic)
    metrics_per_s = rate(truth.clean, first, end)
    log(f"metrics: {truth.clean:,} clean events -> {n:,} upserts, {metrics_per_s:,.0f} "
        "clean events/s")
    return {"metrics_clean_events_per_s": round(metrics_per_s), "metrics_upserts": n}


def _fail_if_restarted(config: dict, ids: Mapping[str, str]) -> None:
    """A job that failed and restarted replays from its last checkpoint and writes its
    outputs again (more clean records than expected, figures of a broken run): stop with
    its failure instead of reporting them."""
    for name, job_id in ids.items():
        failure = flink_rest.first_failure(config, job_id)
        if failure:
            raise RuntimeError(f"the {name} job failed during the run: {failure}")


def run_paced(config: dict, offered_events_per_s: float, seconds: float,
              spec: traffic.TrafficSpec, timeout_s: float) -> dict:
    """New traffic at a fixed rate into the running pipeline; latency per clean event."""
    import fastavro

    from jobs import avro_schema

    boot = config["kafka"]["bootstrap_servers"]
    raw_topic, clean_topic = settings.topic(config, "raw"), settings.topic(config, "clean")
    now = int(time.time() * 1000)
    pspec = replace(spec, seed=spec.seed + 1000, events=int(offered_events_per_s * seconds),
                    start_ms=now, span_ms=int(seconds * 1000))
    records = traffic.generate(pspec)
    truth = traffic.truth(records, config["normalize"]["hmac_key"], spec.horizon_ms)
    events_topic = settings.topic(config, "events")
    raw_since = kafka_load.end_offsets(boot, raw_topic)
    events_since = kafka_load.end_offsets(boot, events_topic)
    clean_since = kafka_load.end_offsets(boot, clean_topic)
    log(f"offered load: {offered_events_per_s:,.0f} events/s for {seconds:.0f} s "
        f"({len(records):,} records, {truth.events:,} events)")
    tm = flink_probe.ProcessSampler(flink_probe.taskmanager_pid()).start()
    gc_before = flink_probe.GcTotals.now(config)
    paced_started = time.monotonic()
    achieved = kafka_load.paced(
        boot, raw_topic, records, len(records) / seconds,
        status=lambda: f"clean {kafka_load.count(boot, clean_topic, clean_since):,}")
    paced_s = time.monotonic() - paced_started
    tm_cores = tm.stop().cpu_s / paced_s
    gc = flink_probe.GcTotals.now(config).since(gc_before, paced_s)
    achieved_events = truth.events * achieved / len(records)
    log(f"offered load achieved: {achieved_events:,.0f} events/s ({achieved:,.0f} records/s)")
    seen = wait_for("clean records (paced)",
                    lambda: kafka_load.count(boot, clean_topic, clean_since),
                    truth.clean, timeout_s / 2)
    index = {r.key: i for i, r in enumerate(records)}
    raw_append = {index[k]: ts for k, _, ts in kafka_load.read(boot, raw_topic, raw_since)
                  if k in index}
    schema = fastavro.parse_schema(avro_schema.load("EmailEvent"))
    outputs = [(*_decode_event(v, schema), ts)
               for _, v, ts in kafka_load.read(boot, clean_topic, clean_since)]
    lat = latencies(raw_append, truth.first_record, outputs)
    # The normalize hop alone (raw -> email.events) tells which job a delay comes from.
    # email.events still holds the duplicates: each event's first record counts.
    first_out: dict[str, tuple[str, int]] = {}
    for _, v, ts in kafka_load.read(boot, events_topic, events_since):
        event_id, event_type = _decode_event(v, schema)
        if event_id not in first_out or ts < first_out[event_id][1]:
            first_out[event_id] = (event_type, ts)
    normalized = [(e, t, ts) for e, (t, ts) in first_out.items()]
    return {"offered_events_per_s": round(offered_events_per_s),
            "offered_records_per_s": round(achieved, 1),
            "achieved_offered_events_per_s": round(achieved_events),
            "paced_clean_expected": truth.clean, "paced_clean_records": seen,
            "latency_ms": summary_ms(lat["all"]),
            "latency_ms_non_click": summary_ms(lat["non_click"]),
            "latency_ms_click": summary_ms(lat["click"]),
            "latency_ms_normalize": summary_ms(
                latencies(raw_append, truth.first_record, normalized)["all"]),
            "paced_tm_cores": round(tm_cores, 2),
            "paced_tm_gc_ms_per_s": gc["gc_ms_per_s"], "paced_tm_full_gcs": gc["full_gcs"],
            "tm_heap_max_bytes": gc["heap_max_bytes"],
            "latency_timeline": timeline(raw_append, truth.first_record, outputs)}


WARMUP_TOPICS = ("events", "clean", "late", "dlq")


def warmup_overrides(config: Mapping[str, Any]) -> dict[str, str]:
    """Settings (as environment variables) for a warm-up run beside the measured one, of
    the Java baseline or of the pipeline: own consumer groups and output topics."""
    return {"EMAIL_STREAMING__KAFKA__GROUP_ID_PREFIX":
            f"{config['kafka']['group_id_prefix']}-warmup",
            **{f"EMAIL_STREAMING__KAFKA__TOPICS__{t.upper()}__NAME":
               f"{settings.topic(config, t)}.warmup" for t in WARMUP_TOPICS}}


def warm_up_pipeline(config: dict, path: str, truth: traffic.Truth,
                     timeout_s: float) -> dict:
    """normalize -> clean once over the preloaded topic into warm-up topics, so that the
    measured run, like the Java baseline's second run, finds the TaskManager's JIT warm
    (a fresh TaskManager ran the pipeline at about half the speed of a warm one)."""
    overrides = warmup_overrides(config)
    warm = settings.load(path, environ={**os.environ, **overrides})
    boot = warm["kafka"]["bootstrap_servers"]
    log("warming up: normalize -> clean into warm-up topics ...")
    ids: dict[str, str] = {}
    try:
        start_clean_then_normalize(warm, path, ids, env_extra=overrides)
        seen = wait_for("clean records (warm-up)",
                        lambda: kafka_load.count(boot, settings.topic(warm, "clean")),
                        truth.clean, timeout_s)
        _fail_if_restarted(warm, ids)
    finally:
        for job_id in ids.values():
            with contextlib.suppress(Exception):
                flink_rest.cancel(warm, job_id)
    spans = {t: kafka_load.append_span(boot, settings.topic(warm, t))
             for t in ("events", "clean")}
    eps = rate(truth.events, spans["events"][1], spans["clean"][2])
    log(f"pipeline warm-up: {seen:,}/{truth.clean:,} clean, {eps:,.0f} events/s")
    return {"events_per_s": round(eps), "clean_records": seen}


def run_java(config: dict, path: str, truth: traffic.Truth, timeout_s: float,
             overrides: Mapping[str, str] | None = None) -> dict:
    """One run of baseline (a) over the preloaded raw topic; `overrides` (see
    warmup_overrides) for a run beside the measured one."""
    if overrides:
        config = settings.load(path, environ={**os.environ, **overrides})
    boot = config["kafka"]["bootstrap_servers"]
    topic = java_baseline.clean_topic(config)
    log("submitting the pure-Java Flink SQL baseline"
        f"{' (warm-up run)' if overrides else ''} ...")
    job_id = submit("bench.java_baseline", config, path, env_extra=overrides)
    tm = flink_probe.ProcessSampler(flink_probe.taskmanager_pid())
    try:
        flink_rest.wait_running(config, job_id)
        tm.start()
        seen = wait_for("java baseline records", lambda: kafka_load.count(boot, topic),
                        truth.clean, timeout_s)
        tm.stop()
        counts_match = _wait_java_counts(boot, java_baseline.counts_topic(config), truth)
        ckpt = flink_probe.checkpoints(config, job_id)
    finally:
        tm.stop()
        flink_rest.cancel(config, job_id)
    _, first, last = kafka_load.append_span(boot, topic)
    eps = rate(truth.events, first, last)
    # Said now too: a later phase that fails takes the report with it.
    log(f"java baseline: {seen:,}/{truth.clean:,} clean, counts "
        f"{'match' if counts_match else 'DIFFER'}, {eps:,.0f} events/s")
    return {"events_per_s": round(eps), "events_per_s_per_core": round(eps / (os.cpu_count()
                                                                            or 1)),
            "clean_records": seen, "counts_match": counts_match,
            "seconds": round((last - first) / 1000, 2),
            "tm_cpu_s": round(tm.cpu_s, 1), "checkpoints": ckpt}


def _wait_java_counts(boot: str, topic: str, truth: traffic.Truth,
                      timeout_s: float = 30.0) -> bool:
    """Whether the baseline's final (campaign, arm, type) counts equal the truth's; the
    last upserts may land a moment after the last clean record, hence the polling."""
    expected = {(c or "", a or "", t): n for (c, a, t), n in truth.counts.items()}
    deadline = time.monotonic() + timeout_s
    while True:
        final: dict[tuple, int] = {}
        for key, value, _ in kafka_load.read(boot, topic):
            k = json.loads(key or b"{}")
            final[(k.get("campaign_id"), k.get("arm"), k.get("event_type"))] = \
                json.loads(value)["events"] if value else 0
        if final == expected or time.monotonic() > deadline:
            if final != expected:
                log(f"java baseline counts differ from the truth in "
                    f"{len(set(final.items()) ^ set(expected.items()))} entries")
            return final == expected
        time.sleep(2)


def run_peer(config: dict, path: str, tag: str, truth: traffic.Truth,
             timeout_s: float) -> dict:
    boot = config["kafka"]["bootstrap_servers"]
    out_topic = settings.topic(config, "clean") + ".quix"
    state_dir = tempfile.mkdtemp(prefix="bench-quix-")
    log("starting the Quix Streams peer ...")
    log_path = Path(state_dir) / "quix.log"
    # Quix copies the source timestamp into its repartition topic, so its first output
    # append time does not show when it started working; the clock starts at spawn
    # (which charges it its start-up, a few seconds).
    spawned_ms = int(time.time() * 1000)
    with open(log_path, "w") as log_file:  # the child keeps its own handle
        proc = subprocess.Popen(
            [sys.executable, "-m", "bench.quix_peer", "--config", path, "--raw",
             settings.topic(config, "raw"), "--out", out_topic, "--group",
             f"bench-{tag}-quix", "--state-dir", state_dir], cwd=ROOT,
            stdout=subprocess.DEVNULL, stderr=log_file)
    sampler = flink_probe.ProcessSampler(proc.pid).start()
    try:
        def progress() -> int:
            if proc.poll() is not None:  # died: report it instead of waiting out the timeout
                raise RuntimeError(f"quix peer exited {proc.returncode}: "
                                   f"{log_path.read_text()[-2000:]}")
            return kafka_load.count(boot, out_topic)

        seen = wait_for("quix peer records", progress, truth.clean, timeout_s)
    finally:
        sampler.stop()
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        if proc.returncode not in (0, -15):
            log(log_path.read_text()[-2000:])
        shutil.rmtree(state_dir, ignore_errors=True)
    _, _, last = kafka_load.append_span(boot, out_topic)
    eps = rate(truth.events, spawned_ms, last)
    log(f"quix peer: {seen:,}/{truth.clean:,} clean, {eps:,.0f} events/s")
    return {"events_per_s": round(eps), "events_per_s_per_core": round(eps),
            "clean_records": seen, "seconds": round((last - spawned_ms) / 1000, 2),
            "cpu_s": round(sampler.cpu_s, 1), "peak_rss_bytes": sampler.peak_rss,
            "note": "one process (one core at most)"}


def cleanup(config: Mapping[str, Any], tag: str, seeds: list[int]) -> None:
    from kafka.admin import KafkaAdminClient

    boot = config["kafka"]["bootstrap_servers"]
    admin = KafkaAdminClient(bootstrap_servers=boot)
    try:
        names = [t for t in admin.list_topics() if f"bench-{tag}" in t]
    finally:
        admin.close()
    kafka_load.delete_topics(boot, names)
    with contextlib.suppress(Exception):  # rows the jobs upserted for the bench campaigns
        from devtools.postgres_io import query

        for table in ("event_type_counts", "campaign_metrics"):
            for seed in seeds:
                query(config, f"DELETE FROM {table} WHERE campaign_id LIKE %s RETURNING 1",
                      (f"c{seed}-%",))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=sorted(MODES), default="quick")
    parser.add_argument("--events", type=int, help="override the mode's event count")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--paced-s", type=float, help="seconds of offered load (0 = skip)")
    parser.add_argument("--skip-java", action="store_true")
    parser.add_argument("--skip-peer", action="store_true")
    parser.add_argument("--keep-topics", action="store_true")
    args = parser.parse_args(argv)
    mode = MODES[args.mode] | ({"events": args.events} if args.events else {}) | (
        {"paced_s": args.paced_s} if args.paced_s is not None else {})

    tag = uuid.uuid4().hex[:6]
    config, path = bench_config(tag)
    boot = config["kafka"]["bootstrap_servers"]
    parts = {settings.topic(config, t): config["kafka"]["topics"][t].get("partitions", 1)
             for t in ("raw", *OUTPUT_TOPICS, "conversions")}
    warm = settings.load(path, environ={**os.environ, **warmup_overrides(config)})
    parts |= {settings.topic(warm, t): config["kafka"]["topics"][t].get("partitions", 1)
              for t in WARMUP_TOPICS}
    for cfg in (config, warm):
        parts[java_baseline.clean_topic(cfg)] = 3
        parts[java_baseline.counts_topic(cfg)] = 3
    parts[settings.topic(config, "clean") + ".quix"] = 3
    kafka_load.create_topics(config, parts)

    spec = traffic.TrafficSpec(events=mode["events"], seed=args.seed,
                               horizon_ms=int(config["clean"]["dedup_horizon_h"]) * 3_600_000)
    log(f"bench {tag}: generating {spec.events:,} events (seed {spec.seed}) ...")
    records = traffic.generate(spec)
    truth = traffic.truth(records, config["normalize"]["hmac_key"], spec.horizon_ms)
    log(f"  {len(records):,} raw records; expected: {truth.events:,} events, "
        f"{truth.clean:,} clean, {truth.late:,} late, {truth.dead_letters:,} dead letters")
    kafka_load.preload(boot, settings.topic(config, "raw"), records)
    results: dict[str, Any] = {
        "mode": args.mode, "when": time.strftime("%Y-%m-%d %H:%M"), "seed": spec.seed,
        "events": truth.events, "raw_records": len(records), "cores": os.cpu_count(),
        "expected": {"clean": truth.clean, "late": truth.late,
                     "dead_letters": truth.dead_letters, "types": dict(truth.types)},
        "python_parse_events_per_s": round(truth.events / truth.parse_seconds),
    }
    try:
        # Baselines first, so that they read exactly the preloaded records (the pipeline's
        # paced phase appends more to the raw topic).
        if not args.skip_java:
            # Twice: the first run warms the TaskManager's JIT (on a TaskManager fresh
            # from `stack start` the baseline ran at 7,528 events/s, on a warm one at
            # 16,728-19,789). The pipeline gets its own warm-up run below.
            results["java_warmup"] = run_java(config, path, truth, mode["timeout_s"],
                                              warmup_overrides(config))
            results["java"] = run_java(config, path, truth, mode["timeout_s"])
        if not args.skip_peer:
            results["peer"] = run_peer(config, path, tag, truth, mode["timeout_s"])
        results["pipeline_warmup"] = warm_up_pipeline(config, path, truth,
                                                      mode["timeout_s"])
        results["pipeline"] = run_pipeline(config, path, records, truth, spec,
                                           mode["paced_s"], mode["timeout_s"])
    finally:
        if not args.keep_topics:
            cleanup(config, tag, [spec.seed, spec.seed + 1000])
        os.unlink(path)
    for written in report.write(results, RESULTS):
        log(f"wrote {written.relative_to(ROOT)}")
    print(report.markdown(results))
    print(json.dumps(report.summary(results), separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
