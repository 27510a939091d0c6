"""Figures from raw measurements: percentiles, rates, latencies. Pure functions (unit
tested); no Kafka or Flink here."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of unsorted values; 0.0 for none."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-q * len(ordered) // 100))))
    return float(ordered[rank - 1])


def summary_ms(values: Sequence[float]) -> dict[str, float]:
    """p50/p95/p99/max of millisecond values, rounded, plus how many."""
    return {"p50": round(percentile(values, 50), 1), "p95": round(percentile(values, 95), 1),
            "p99": round(percentile(values, 99), 1),
            "max": round(max(values), 1) if values else 0.0, "n": len(values)}


def rate(count: int, first_ms: int, last_ms: int) -> float:
    """Records per second over an append-time span (0 when the span is empty)."""
    span = (last_ms - first_ms) / 1000
    return count / span if span > 0 else 0.0


def _paired(raw_append: Mapping[int, int], first_record: Mapping[str, int],
            outputs: Iterable[tuple[str, str, int]]) -> Iterator[tuple[str, int, float]]:
    """(event type, raw append time, latency ms) per output whose event is known."""
    for event_id, event_type, appended in outputs:
        index = first_record.get(event_id)
        if index is not None and index in raw_append:
            yield event_type, raw_append[index], float(appended - raw_append[index])


def latencies(raw_append: Mapping[int, int], first_record: Mapping[str, int],
              outputs: Iterable[tuple[str, str, int]]) -> dict[str, list[float]]:
    """End-to-end latency per output record, ms: output append time minus the append time
    of the raw record that first carried the event. `raw_append` maps raw record index to
    its append time, `first_record` event id to that index, `outputs` yields (event id,
    event type, output append time). Events the map does not know (not from this phase)
    are skipped. Returns {'all': [...], 'non_click': [...], 'click': [...]}."""
    out: dict[str, list[float]] = {"all": [], "non_click": [], "click": []}
    for event_type, _, ms in _paired(raw_append, first_record, outputs):
        out["all"].append(ms)
        out["click" if event_type == "click" else "non_click"].append(ms)
    return out


def timeline(raw_append: Mapping[int, int], first_record: Mapping[str, int],
             outputs: Iterable[tuple[str, str, int]], bucket_ms: int = 10_000
             ) -> list[dict[str, float]]:
    """Latency over the run: per bucket of the raw records' append time (from the first
    one), p50/p99/max and count. A steady p99 with peaks says pauses (checkpoints, GC); a
    rising one says the pipeline falls behind the offered load."""
    pairs = [(sent, ms) for _, sent, ms in _paired(raw_append, first_record, outputs)]
    if not pairs:
        return []
    start = min(sent for sent, _ in pairs)
    buckets: dict[int, list[float]] = {}
    for sent, ms in pairs:
        buckets.setdefault((sent - start) // bucket_ms, []).append(ms)
    return [{"t_s": b * bucket_ms / 1000, "n": len(v), "p50": percentile(v, 50),
             "p99": percentile(v, 99), "max": max(v)} for b, v in sorted(buckets.items())]


def ratio(numerator: float, denominator: float) -> float | None:
    return round(numerator / denominator, 3) if denominator else None
