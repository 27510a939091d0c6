"""Raw SendGrid webhooks -> normalize -> clean -> subscriber job on the local Flink cluster,
with profiles and an erasure request produced straight to their topics: the exact rows of
subscriber_scores, subscriber_send_time and subscriber_suppressions in PostgreSQL and the
latest records of the three compacted topics.

Covered: scores equal udfs.scoring on the same events, the best send hour in a profile's
time zone, suppression by unsubscribe, complaint, hard bounce and repeated soft bounces,
a re-subscribe (profile) lifting an unsubscribe, tracking consent withdrawn mid-scenario
(later opens and clicks stop counting), and an erasure after the subscriber's rows existed
(no row left, a tombstone as the latest record of every topic).

The job scores an event only once the watermark passes it, and small changes settle for
`subscriber.settle_s` of event time, so the test keeps sending "tick" deliveries of other
subscribers, later and later, one to every partition of the clean topic, until the rows
are final. Sources without data (email.late, privacy.erasure) hold event time back until
their 30 s idle timeout, which runs while the jobs start."""

from __future__ import annotations

import contextlib
import io
import json
import time
from concurrent.futures import ThreadPoolExecutor

import fastavro
import pytest

import settings
from devtools import flink_rest, kafka_io, postgres_io
from jobs import avro_schema
from jobs.__main__ import submit
from stack.postgres import apply_schema
from udfs import scoring
from udfs.send_time import SendTimeParams, SendTimeState
from udfs.suppression import feeds_engagement

pytestmark = pytest.mark.e2e

# SendGrid timestamps are epoch seconds. The clean job sends events received more than
# 48 h after they happened to email.late, so the scenario is recent: 40 minutes ago, which
# leaves room for ticks up to now.
T = int(time.time()) // 60 * 60 - 2400
NY, PARIS = "America/New_York", "Europe/Paris"
TRACKING_OFF_AT = T + 200   # the "track" subscriber withdraws tracking consent here
UA = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 Version/17.1"
HUMAN = {"useragent": UA, "ip": "203.0.113.7"}

# (subscriber, SendGrid event, seconds after T, extra fields)
SCENARIO = [
    # engaged, in New York: an open, three clicks (a minute apart: no bot burst, and well
    # after the delivery: no scanner click) and an Apple MPP machine open (weight 0)
    ("eng", "delivered", 0, {}),
    ("eng", "open", 60, {"sg_machine_open": False, **HUMAN}),
    ("eng", "click", 120, {"url": "https://shop.example/a", **HUMAN}),
    ("eng", "click", 180, {"url": "https://shop.example/b", **HUMAN}),
    ("eng", "click", 240, {"url": "https://shop.example/a", **HUMAN}),
    ("eng", "open", 600, {"sg_machine_open": True, "useragent": "Mozilla/5.0"}),
    ("unsub", "delivered", 0, {}),
    ("unsub", "open", 60, {"sg_machine_open": False, **HUMAN}),
    ("unsub", "unsubscribe", 300, {}),
    ("compl", "delivered", 0, {}),
    ("compl", "open", 90, {"sg_machine_open": False, **HUMAN}),
    ("compl", "spamreport", 400, {}),
    ("hard", "bounce", 10, {"type": "bounce", "status": "5.1.1"}),
    ("soft", "bounce", 100, {"type": "blocked"}),
    ("soft", "bounce", 200, {"type": "blocked"}),
    ("soft", "bounce", 300, {"type": "expired"}),
    # unsubscribed, then re-subscribed through its profile (produced once suppressed)
    ("resub", "delivered", 0, {}),
    ("resub", "open", 60, {"sg_machine_open": False, **HUMAN}),
    ("resub", "unsubscribe", 200, {}),
    # tracking consent withdrawn at T+200: the two opens before count, the opens and the
    # click after do not; the soft bounce (not from tracking) does
    ("track", "delivered", 0, {}),
    ("track", "open", 60, {"sg_machine_open": False, **HUMAN}),
    ("track", "open", 90, {"sg_machine_open": False, **HUMAN}),
    ("track", "open", 300, {"sg_machine_open": False, **HUMAN}),
    ("track", "open", 330, {"sg_machine_open": False, **HUMAN}),
    ("track", "click", 360, {"url": "https://shop.example/c", **HUMAN}),
    ("track", "bounce", 420, {"type": "blocked"}),
    # erased once its rows exist in all three tables
    ("gone", "delivered", 0, {}),
    ("gone", "open", 60, {"sg_machine_open": False, **HUMAN}),
    ("gone", "click", 120, {"url": "https://shop.example/d", **HUMAN}),
    ("gone", "unsubscribe", 500, {}),
]
SUBSCRIBERS = sorted({s for s, *_ in SCENARIO})
TICK_START_S, TICK_STEP_S = 800, 30

# Profiles produced before the webhooks: (subscriber, time_zone, tracking_consent, updated_at s)
PROFILES = [("eng", NY, True, T - 3600), ("gone", PARIS, True, T - 3600),
            ("track", None, False, TRACKING_OFF_AT)]
ZONES = {"eng": NY, "gone": PARIS}  # the latest profile's zone; others are UTC

SUPPRESSED = {  # subscriber: (reason, mail_scope, since s, reasons)
    "unsub": ("unsubscribe", "marketing", T + 300, "unsubscribe"),
    "compl": ("complaint", "all", T + 400, "complaint"),
    "hard": ("hard_bounce", "all", T + 10, "hard_bounce"),
    "soft": ("soft_bounces", "all", T + 300, "soft_bounces"),  # the third soft bounce
    "resub": ("unsubscribe", "marketing", T + 200, "unsubscribe"),  # until re-subscribed
    "gone": ("unsubscribe", "marketing", T + 500, "unsubscribe"),   # until erased
}
TIERS = {"eng": "engaged", "unsub": "unreachable", "compl": "unreachable",
         "hard": "unreachable", "soft": "unreachable", "resub": "unreachable",
         "track": "at_risk", "gone": "unreachable"}
TIERS_AFTER_RESUBSCRIBE = TIERS | {"resub": "at_risk"}  # no longer suppressed

CANONICAL = {"spamreport": "complaint"}
SCORE_COLS = avro_schema.field_names("SubscriberScore")
SEND_COLS = avro_schema.field_names("SubscriberSendTime")
SUPP_COLS = avro_schema.field_names("SubscriberSuppression")


def sid(name: str, tag: str) -> str:
    return f"{name}-{tag}"


def sg(kind, sub, offset_s, tag, **extra):
    event = {"email": f"{sub}@example.org", "timestamp": T + offset_s, "event": kind,
             "sg_message_id": f"m-{sub}.filter1", "subscriber_id": sub,
             "campaign_id": f"c-{tag}"}
    event.update(extra)
    return event


def body(events):
    return ("[" + ",\r\n".join(json.dumps(e) for e in events) + "]").encode()


def webhooks(tag):
    events = [sg(kind, sid(name, tag), offset, tag, **extra)
              for name, kind, offset, extra in SCENARIO]
    return [body(events[i:i + 10]) for i in range(0, len(events), 10)]


def canonical_events(name: str) -> list[dict]:
    """What the clean topic must hold for one scenario subscriber (the fields scoring reads)."""
    out = []
    for sub, kind, offset, extra in SCENARIO:
        if sub != name:
            continue
        event_type = CANONICAL.get(kind, kind)
        out.append({"subscriber_id": name, "event_type": event_type,
                    "event_time": (T + offset) * 1000,
                    "bounce_class": ({"bounce": "hard"}.get(extra["type"], "soft")
                                     if event_type == "bounce" else None),
                    "machine_open": extra.get("sg_machine_open") is True,
                    # normalize flags a native machine open as a bot too
                    "suspected_bot": extra.get("sg_machine_open") is True})
    return out


def tracking_at(name: str, t_ms: int) -> bool | None:
    """Tracking consent of the profile version in effect at t (None: no profile yet)."""
    versions = [(at * 1000, tracking) for sub, _, tracking, at in PROFILES if sub == name]
    current = [tracking for at, tracking in sorted(versions) if at <= t_ms]
    return current[-1] if current else None


def fed_events(name: str, params: scoring.ScoringParams) -> list[dict]:
    """The events that may change the subscriber's score: the job skips weight-0
    non-engagement events (deliveries, machine opens) and, without tracking consent,
    opens, clicks and conversions."""
    return sorted((e for e in canonical_events(name)
                   if (scoring.event_weight(e, params) != 0 or scoring.is_human_engagement(e)
                       or scoring.is_permanent_failure(e))
                   and feeds_engagement(e, tracking_at(name, e["event_time"]))),
                  key=lambda e: (e["event_time"], e["event_type"]))


def expected_scores(config, tag: str, tiers: dict[str, str]) -> dict[str, tuple]:
    cfg = config["subscriber"]["scoring"]
    params = scoring.ScoringParams(**cfg)
    rows = {}
    for name, tier in tiers.items():
        events = fed_events(name, params)
        as_of = max(e["event_time"] for e in events)
        # The `python -m udfs.scoring` command's code, on the events that fed the job.
        doc = {"half_life_days": cfg["half_life_days"], "weights": cfg["weights"],
               "as_of": as_of, "events": events}
        score = scoring.run(json.dumps(doc))["scores"][name]
        human = [e["event_time"] for e in events if scoring.is_human_engagement(e)]
        rows[sid(name, tag)] = (sid(name, tag), score, tier, max(human, default=None), as_of)
    return rows


def expected_send_times(config, tag: str, names: list[str]) -> dict[str, tuple]:
    params = scoring.ScoringParams(**config["subscriber"]["scoring"])
    send = dict(config["subscriber"]["send_time"])
    send_params = SendTimeParams(**send | {"kernel": tuple(send["kernel"])})
    rows = {}
    for name in names:
        state = SendTimeState(send_params)
        for e in fed_events(name, params):
            state.add(e, ZONES.get(name))  # the profiles' zones predate every event
        if state.is_empty:
            continue
        best = state.best()
        rows[sid(name, tag)] = (sid(name, tag), best.slot, best.weekday, best.hour,
                                ZONES.get(name, "UTC"), best.confidence, best.source,
                                best.effective_events, best.as_of)
    return rows


def expected_suppressions(tag: str, names: list[str]) -> dict[str, tuple]:
    return {sid(n, tag): (sid(n, tag), r, scope, since * 1000, reasons)
            for n, (r, scope, since, reasons) in SUPPRESSED.items() if n in names}


def avro_bytes(schema_name: str, record: dict) -> bytes:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, fastavro.parse_schema(avro_schema.load(schema_name)),
                               record)
    return buf.getvalue()


def produce_avro(bootstrap: str, topic: str, schema_name: str, records: list[dict]) -> None:
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    try:
        for record in records:
            producer.send(topic, key=record["subscriber_id"].encode(),
                          value=avro_bytes(schema_name, record))
        producer.flush(timeout=30)
    finally:
        producer.close()


def profile(sub, time_zone, tracking, updated_at_ms, marketing=None, marketing_at=None):
    return {"subscriber_id": sub, "time_zone": time_zone, "marketing_consent": marketing,
            "marketing_consent_at": marketing_at, "tracking_consent": tracking,
            "updated_at": updated_at_ms}


def tick_subscribers(config, tag) -> list[str]:
    """One subscriber id per partition of the clean topic (keyed by subscriber_id with
    Kafka's default partitioner), so that every partition's watermark moves."""
    from kafka.partitioner.default import murmur2

    partitions = config["kafka"]["topics"]["clean"]["partitions"]
    chosen: dict[int, str] = {}
    i = 0
    while len(chosen) < partitions:
        candidate = f"tick{i}-{tag}"
        chosen.setdefault((murmur2(candidate.encode()) & 0x7FFFFFFF) % partitions, candidate)
        i += 1
    return list(chosen.values())


def tick(subs, tag, k):
    offset = min(TICK_START_S + TICK_STEP_S * k, 2390)  # never in the future
    return body([sg("delivered", s, offset, tag) for s in subs])


def pg_rows(config, tag) -> dict[str, dict[str, tuple]]:
    ids = [sid(n, tag) for n in SUBSCRIBERS]
    out = {}
    for table, cols in (("subscriber_scores", SCORE_COLS),
                        ("subscriber_send_time", SEND_COLS),
                        ("subscriber_suppressions", SUPP_COLS)):
        rows = postgres_io.query(
            config, f"SELECT {', '.join(cols)} FROM {table} WHERE subscriber_id = ANY(%s)",
            (ids,))
        out[table] = {r[0]: tuple(r) for r in rows}
    return out


KEY_SCHEMA = fastavro.parse_schema({"type": "record", "name": "Key", "fields": [
    {"name": "subscriber_id", "type": "string"}]})


def topic_history(bootstrap: str, topic: str, schema_name: str) -> dict[str, list]:
    """Every record of an upsert topic, per key in offset order: decoded values, None for a
    tombstone (kafka_io.read_avro cannot decode those). Reads up to the current end."""
    from kafka import KafkaConsumer, TopicPartition

    schema = fastavro.parse_schema(avro_schema.load(schema_name))
    ends = kafka_io.end_offsets(bootstrap, topic)
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                             enable_auto_commit=False, auto_offset_reset="earliest")
    history: dict[str, list] = {}
    try:
        parts = [TopicPartition(topic, p) for p in ends]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        deadline = time.monotonic() + 30
        while (any(consumer.position(tp) < ends[tp.partition] for tp in parts)
               and time.monotonic() < deadline):
            for records in consumer.poll(timeout_ms=500).values():
                for msg in records:
                    key = fastavro.schemaless_reader(io.BytesIO(msg.key), KEY_SCHEMA)
                    value = (None if msg.value is None else
                             tuple(fastavro.schemaless_reader(io.BytesIO(msg.value),
                                                              schema).values()))
                    history.setdefault(key["subscriber_id"], []).append(value)
    finally:
        consumer.close()
    return history


def wait_until(produce_tick, config, tag, want, timeout_s):
    """Poll PostgreSQL (sending a tick between polls if given) until the rows equal `want`."""
    rows, k = {}, 0
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if produce_tick:
            produce_tick(k)
            k += 1
        poll_until = time.monotonic() + 3
        while time.monotonic() < poll_until:
            rows = pg_rows(config, tag)
            if rows == want:
                return rows
            time.sleep(0.5)
    return rows


def test_scores_send_hours_suppressions_consent_and_erasure(e2e_config):
    config, path, tag = e2e_config
    apply_schema(config)  # a stack started before 004_subscriber.sql existed lacks it
    bootstrap = config["kafka"]["bootstrap_servers"]
    raw = settings.topic(config, "raw")
    ticks = tick_subscribers(config, tag)
    everyone = list(TIERS)
    jobs = ["normalize", "clean", "subscriber"]
    with ThreadPoolExecutor(3) as pool:
        ids = dict(zip(jobs, pool.map(lambda job: submit(job, config, path), jobs),
                       strict=True))
    try:
        for job_id in ids.values():
            flink_rest.wait_running(config, job_id)
        # Profiles first: a profile must be in the job before event time passes the
        # events it governs (the track subscriber's withdrawal).
        produce_avro(bootstrap, settings.topic(config, "profiles"), "SubscriberProfile",
                     [profile(sid(n, tag), zone, tracking, at * 1000)
                      for n, zone, tracking, at in PROFILES])
        kafka_io.produce_raw(bootstrap, raw, "sendgrid", webhooks(tag))
        # Ticks only once the scenario is in the clean topic: a tick sent with it could
        # overtake its bodies (normalize reads the raw partitions in parallel) and move the
        # subscriber job's watermark past them.
        scenario_ids = {sid(n, tag) for n in SUBSCRIBERS}
        kafka_io.read_avro(
            bootstrap, settings.topic(config, "clean"), "EmailEvent",
            until=lambda r: sum(e["subscriber_id"] in scenario_ids for e in r)
            >= len(SCENARIO), timeout_s=120)

        # Phase 1: every subscriber scored, resub and gone still suppressed.
        before = {"subscriber_scores": expected_scores(config, tag, TIERS),
                  "subscriber_send_time": expected_send_times(config, tag, everyone),
                  "subscriber_suppressions": expected_suppressions(tag, everyone)}
        rows = wait_until(
            lambda k: kafka_io.produce_raw(bootstrap, raw, "sendgrid", [tick(ticks, tag, k)]),
            config, tag, before, timeout_s=120)
        assert rows == before

        # The job saw exactly the scenario (no event lost, flagged as a bot or duplicated).
        clean = kafka_io.read_avro(
            bootstrap, settings.topic(config, "clean"), "EmailEvent",
            until=lambda r: sum(e["subscriber_id"] in scenario_ids for e in r)
            >= len(SCENARIO), timeout_s=10)
        seen = sorted((e["subscriber_id"].removesuffix(f"-{tag}"), e["event_type"],
                       e["event_time"], e["bounce_class"], e["machine_open"] is True,
                       bool(e["suspected_bot"])) for e in clean
                      if not e["subscriber_id"].startswith("tick"))
        assert seen == sorted(tuple(e.values()) for n in SUBSCRIBERS
                              for e in canonical_events(n))

        # Phase 2: resub re-subscribes, gone is erased (both apply on arrival).
        now_ms = int(time.time() * 1000)
        produce_avro(bootstrap, settings.topic(config, "profiles"), "SubscriberProfile",
                     [profile(sid("resub", tag), None, None, now_ms, True, now_ms)])
        produce_avro(bootstrap, settings.topic(config, "erasure"), "ErasureRequest",
                     [{"subscriber_id": sid("gone", tag), "requested_at": now_ms,
                       "request_id": f"erase-{tag}"}])
        kept = [n for n in everyone if n != "gone"]
        scores = expected_scores(config, tag, {n: TIERS_AFTER_RESUBSCRIBE[n] for n in kept})
        after = {"subscriber_scores": scores,
                 "subscriber_send_time": expected_send_times(config, tag, kept),
                 "subscriber_suppressions": expected_suppressions(
                     tag, [n for n in kept if n != "resub"])}
        rows = wait_until(None, config, tag, after, timeout_s=30)
        assert rows == after

        # Spelled out: what the expectations above encode.
        assert set(rows["subscriber_suppressions"]) == {
            sid(n, tag) for n in ("unsub", "compl", "hard", "soft")}
        assert rows["subscriber_send_time"][sid("eng", tag)][4:7:2] == (NY, "subscriber")
        # too little data: the configured population curve's peak (08:00, Monday), not slot 0
        assert rows["subscriber_send_time"][sid("track", tag)][1:7:5] == (8, "population")
        track_score = rows["subscriber_scores"][sid("track", tag)][1]
        assert track_score == scoring.round_score(
            2 ** (-(420 - 60) / (30 * 86400)) + 2 ** (-(420 - 90) / (30 * 86400)) - 1)
        assert not any(sid("gone", tag) in table for table in rows.values())

        # The compacted topics: latest record per key = the PostgreSQL row, and a
        # tombstone for the erased subscriber (and for the lifted suppression).
        topics = {"subscriber_scores": ("scores", "SubscriberScore"),
                  "subscriber_send_time": ("send_time", "SubscriberSendTime"),
                  "subscriber_suppressions": ("suppressions", "SubscriberSuppression")}
        deadline = time.monotonic() + 30
        for table, (logical, schema) in topics.items():
            while True:
                history = topic_history(bootstrap, settings.topic(config, logical), schema)
                latest = {k: v[-1] for k, v in history.items() if k.endswith(f"-{tag}")
                          and not k.startswith("tick")}
                want = dict(after[table]) | {sid("gone", tag): None}
                if table == "subscriber_suppressions":
                    want[sid("resub", tag)] = None
                if latest == want or time.monotonic() > deadline:
                    break
                time.sleep(1)
            assert latest == want, table
            # the tombstones replaced real records
            assert history[sid("gone", tag)][0] is not None, table
    finally:
        for job_id in ids.values():
            with contextlib.suppress(OSError):
                flink_rest.cancel(config, job_id)
