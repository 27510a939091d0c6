"""The benchmark's load generator and figures (no Kafka, no Flink, nothing timed)."""

from __future__ import annotations

from collections import Counter
from itertools import pairwise

import pytest

from bench import flink_probe, report, stats, traffic
from bench.providers import PROVIDERS

START = 1_767_268_800_000  # fixed, so that runs are comparable byte for byte
SPEC = traffic.TrafficSpec(events=3000, seed=5, start_ms=START)


@pytest.fixture(scope="module")
def records() -> list[traffic.RawRecord]:
    return traffic.generate(SPEC)


@pytest.fixture(scope="module")
def truth(records) -> traffic.Truth:
    return traffic.truth(records, "test-key", SPEC.horizon_ms)


def test_same_seed_same_bytes(records):
    assert traffic.generate(SPEC) == records
    assert traffic.generate(traffic.TrafficSpec(events=3000, seed=6, start_ms=START)) != records


def test_every_provider_and_batching(records):
    providers = Counter(r.provider for r in records)
    assert set(providers) == set(PROVIDERS)
    assert max(r.events for r in records if r.provider == "sendgrid") > 1
    assert sum(r.events for r in records) == SPEC.events


def test_everything_parses_except_the_broken_bodies(records, truth):
    broken = sum(1 for r in records if r.events == 0)
    assert truth.events == SPEC.events
    assert truth.dead_letters == broken
    assert broken <= SPEC.events * SPEC.bad_share * 3


def test_duplicate_and_late_shares(truth):
    unique = round(SPEC.events / (1 + SPEC.duplicate_share))
    late = round(unique * SPEC.late_share)
    # clean = unique events minus the late ones; the duplicates (half with new ids) go,
    # and retries of a late event are late too.
    assert truth.clean == unique - late
    assert late <= truth.late <= late * (1 + 3 * SPEC.duplicate_share)


def test_mix_looks_like_a_campaign(truth):
    t = truth.types
    assert t["delivered"] > t["open"] > t["click"] > t["unsubscribe"]
    assert 0.2 < t["open"] / t["delivered"] < 0.4
    assert 0.01 < t["bounce"] / t["sent"] < 0.04
    arms = {arm for (_, arm, _) in truth.counts}
    assert {"A", "B"} <= arms


def test_out_of_order_arrival(records):
    from bench.traffic import plan_events

    events = plan_events(SPEC)
    assert [e.received_time for e in events] == sorted(e.received_time for e in events)
    assert any(a.event_time > b.event_time for a, b in pairwise(events))


def test_percentile_nearest_rank():
    values = list(range(1, 101))
    assert stats.percentile(values, 50) == 50
    assert stats.percentile(values, 99) == 99
    assert stats.percentile([7.0], 95) == 7.0
    assert stats.percentile([], 50) == 0.0


def test_latencies_join_by_first_raw_record():
    raw_append = {0: 1000, 1: 1500}
    first = {"a": 0, "b": 1, "c": 0}
    outputs = [("a", "open", 1200), ("b", "click", 9500), ("c", "sent", 1100),
               ("unknown", "open", 5000)]
    lat = stats.latencies(raw_append, first, outputs)
    assert sorted(lat["all"]) == [100.0, 200.0, 8000.0]
    assert lat["click"] == [8000.0]
    assert stats.rate(100, 1000, 3000) == 50.0
    assert stats.rate(100, 1000, 1000) == 0.0


def test_timeline_buckets_by_raw_append_time():
    raw_append = {0: 1000, 1: 4000, 2: 12500}
    first = {"a": 0, "b": 1, "c": 2}
    outputs = [("a", "open", 1300), ("b", "open", 4100), ("c", "open", 14500),
               ("unknown", "open", 5000)]
    assert stats.timeline(raw_append, first, outputs, bucket_ms=10_000) == [
        {"t_s": 0.0, "n": 2, "p50": 100.0, "p99": 300.0, "max": 300.0},
        {"t_s": 10.0, "n": 1, "p50": 2000.0, "p99": 2000.0, "max": 2000.0}]
    assert stats.timeline({}, {}, []) == []


def test_gc_figures_between_two_readings():
    before = flink_probe.GcTotals(pause_ms=1_000, full_gcs=2, heap_max=2**30)
    after = flink_probe.GcTotals(pause_ms=4_000, full_gcs=5, heap_max=2**30)
    assert after.since(before, seconds=120) == {"gc_ms_per_s": 25.0, "full_gcs": 3,
                                                "heap_max_bytes": 2**30}


def test_summary_and_markdown():
    results = {"mode": "quick", "events": 1000, "raw_records": 600, "seed": 1, "cores": 2,
               "python_parse_events_per_s": 2500,
               "pipeline": {"events_per_s": 400, "seconds": 2.5,
                            "latency_ms": {"p50": 10.0, "p95": 20.0, "p99": 30.0},
                            "checkpoints": {"clean": {"duration_ms_max": 80,
                                                      "state_bytes": 2048}}},
               "java": {"events_per_s": 1600}, "peer": {"events_per_s": 800}}
    s = report.summary(results)
    assert s["ratio_vs_java"] == 0.25
    assert s["peer_events_per_s"] == 800
    assert s["latency_ms"] == {"p50": 10.0, "p95": 20.0, "p99": 30.0}
    assert s["state_bytes"] == 2048
    md = report.markdown(results)
    assert "| (a) pure-Java Flink: Jackson UDTF + SQL dedup/counts, one job | 1,600 |" in md
