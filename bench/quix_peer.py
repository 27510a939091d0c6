"""Baseline (b): the same normalize + dedup + counts in Quix Streams, a Python stream
processor on Kafka (librdkafka client, RocksDB state), as one process.

raw topic -> the project's own parser (udfs.normalize, so the extraction work is the
same) -> drop late -> keep-first dedup by content (state keyed through group_by, a
repartition topic like Flink's keyBy; Quix allows one group_by per dataframe, and an
exact redelivery has the same content, so this also drops same-id duplicates) -> clean
topic (JSON) -> a second dataframe over it: per (campaign, arm, type) counts (state;
every update written to a counts topic).

    python -m bench.quix_peer --config FILE --raw TOPIC --out TOPIC --group G --state-dir D

Runs until killed (the bench stops it once the output is complete)."""

from __future__ import annotations

import argparse
import logging
from typing import Any

import settings


def build(app: Any, raw_topic: str, out_topic: str, hmac_key: str, horizon_ms: int) -> None:
    from udfs.normalize import NormalizeSettings, normalize

    norm = NormalizeSettings(hmac_key=hmac_key.encode(), metadata_fields={})
    raw = app.topic(raw_topic, value_deserializer="bytes", key_deserializer="bytes")
    out = app.topic(out_topic, value_serializer="json", key_serializer="str")
    counts = app.topic(out_topic + ".counts", value_serializer="json", key_serializer="str")

    def parse(value: bytes, key: Any, timestamp: int, headers: Any) -> list[dict]:
        h = {k: v.decode() for k, v in (headers or [])}
        received = int(h.get("received-at") or timestamp)
        result = normalize(h.get("provider", ""), value, h.get("content-type"), received, norm)
        return [e for e in result.events if received - e["event_time"] <= horizon_ms]

    def count(value: dict, state: Any) -> dict:
        n = state.get("n", 0) + 1
        state.set("n", n)
        return {"campaign_id": value["campaign_id"], "arm": value["arm"],
                "event_type": value["event_type"], "events": n}

    def first(value: dict, state: Any) -> bool:
        # Keyed by content: a redelivery with the same id has the same content too.
        if state.get("seen"):
            return False
        state.set("seen", True)
        return True

    sdf = app.dataframe(raw)
    sdf = sdf.apply(parse, metadata=True, expand=True)
    sdf = sdf.group_by(lambda e: "|".join(str(e[k]) for k in (
        "provider", "message_id", "subscriber_id", "event_type", "event_time", "url")),
        name="by_content")
    sdf = sdf.filter(first, stateful=True)
    sdf.to_topic(out, key=lambda e: e["subscriber_id"] or "")
    # Counts: a second dataframe over the clean topic, re-keyed by campaign/arm/type.
    clean = app.dataframe(app.topic(out_topic, value_deserializer="json",
                                    key_deserializer="str"))
    clean = clean.group_by(lambda e: f"{e['campaign_id']}|{e['arm']}|{e['event_type']}",
                           name="by_campaign")
    clean = clean.apply(count, stateful=True)
    clean.to_topic(counts)


def main(argv: list[str] | None = None) -> None:
    from quixstreams import Application

    parser = argparse.ArgumentParser(prog="python -m bench.quix_peer")
    parser.add_argument("--config", required=True)
    parser.add_argument("--raw", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--state-dir", required=True)
    args = parser.parse_args(argv)
    config = settings.load(args.config)
    app = Application(broker_address=config["kafka"]["bootstrap_servers"],
                      consumer_group=args.group, auto_offset_reset="earliest",
                      state_dir=args.state_dir, loglevel=logging.WARNING,
                      # Checkpoint/commit like the Flink jobs (10 s default).
                      commit_interval=config["flink"]["checkpoint_interval_ms"] / 1000)
    build(app, args.raw, args.out, config["normalize"]["hmac_key"],
          int(config["clean"]["dedup_horizon_h"]) * 3_600_000)
    app.run()


if __name__ == "__main__":
    main()
