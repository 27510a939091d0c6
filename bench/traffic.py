"""Seeded raw webhook traffic for the benchmark, and what the pipeline must make of it.

``generate(spec)`` plans campaigns (several with A/B arms of different click rates), sends
one message per (campaign, subscriber) draw and lets each message live: sent, then
delivered or bounced (hard/soft) or deferred-then-delivered, opens (some machine opens),
clicks (arm-dependent rate, a few scanner bursts right after delivery), unsubscribes and
complaints. Events reach the webhook endpoint after a random delay (a few seconds, some a
minute or two: out of order), SendGrid/SparkPost/Mandrill batch them, 10 % are delivered
twice (half with a new provider event id, the retry case the content dedup catches), some
arrive more than the dedup horizon late, and a few bodies are broken. Same spec and seed,
same bytes.

``truth(records, ...)`` runs the project's own pure-Python parser (udfs.normalize) over the
bodies and applies the clean job's rules (late by received - event time, keep-first dedup
by event id then by content), so the bench knows exactly how many records each output
topic must end with and which raw record first carried each clean event."""

from __future__ import annotations

import random
import time
from collections import Counter
from dataclasses import dataclass, field, replace

from bench.providers import BATCH_SIZE, TRACKER_TYPES, Event, body

SECOND, MINUTE, HOUR = 1000, 60_000, 3_600_000
ESPS = ("sendgrid", "mailgun", "ses", "postmark", "sparkpost", "mandrill")
ESP_WEIGHTS = (30, 20, 20, 10, 10, 10)
# Per delivered message. Click rates are per arm (see _campaigns); these are the rest.
OPEN_RATE, MACHINE_OPEN_SHARE, UNSUB_RATE, COMPLAINT_RATE = 0.30, 0.35, 0.003, 0.0008
BOUNCE_RATE, HARD_SHARE, DEFER_RATE, SCANNER_RATE = 0.02, 0.35, 0.03, 0.005
TRACKER_SHARE = 0.2  # engagement seen by our own pixel/link wrapper instead of the ESP


@dataclass(frozen=True)
class TrafficSpec:
    events: int                      # provider events to plan, duplicates included
    seed: int = 42
    campaigns: int = 40
    subscribers: int = 50_000
    duplicate_share: float = 0.10
    late_share: float = 0.01
    bad_share: float = 0.002
    start_ms: int = 0                # first event time; 0 = three hours ago
    span_ms: int = 2 * HOUR          # events happen within [start, start + span)
    horizon_ms: int = 48 * HOUR      # clean.dedup_horizon_h: older on arrival = late


@dataclass(frozen=True)
class RawRecord:
    key: bytes
    provider: str
    content_type: str
    body: bytes
    received_ms: int                 # when the request reached the gateway
    events: int                      # provider events in the body (0 for broken bodies)


@dataclass
class Campaign:
    campaign_id: str
    provider: str
    start_ms: int
    ab_test_id: str | None
    arms: dict[str, float] = field(default_factory=dict)  # arm -> click rate


def _campaigns(rng: random.Random, spec: TrafficSpec, start: int) -> list[Campaign]:
    out = []
    for c in range(spec.campaigns):
        provider = rng.choices(ESPS, ESP_WEIGHTS)[0]
        begin = start + int(rng.uniform(0, spec.span_ms * 0.3))
        cid = f"c{spec.seed}-{c}"
        if rng.random() < 0.6:  # an A/B(/n) test: arms differ in click rate
            names = "ABC"[: rng.choice((2, 2, 3))]
            base = rng.uniform(0.02, 0.04)
            arms = {a: base * (1 + 0.25 * i * rng.random()) for i, a in enumerate(names)}
            out.append(Campaign(cid, provider, begin, f"ab-{cid}", arms))
        else:
            out.append(Campaign(cid, provider, begin, None, {"": rng.uniform(0.02, 0.04)}))
    return out


def _message_events(rng: random.Random, spec: TrafficSpec, camp: Campaign, n: int,
                    end: int) -> list[Event]:
    """The provider events of one message, in event time."""
    sub = rng.randrange(spec.subscribers)
    arm = rng.choice(sorted(camp.arms))
    email = f"user{sub}@{rng.choice(('example.com', 'example.org', 'example.net'))}"
    sent = camp.start_ms + int(rng.uniform(0, spec.span_ms * 0.4))
    base = dict(provider=camp.provider, received_time=0, message_id=f"m{spec.seed}-{n}",
                email=email, subscriber_id=f"s{sub}", campaign_id=camp.campaign_id,
                ab_test_id=camp.ab_test_id, arm=arm or None)
    seq = iter(range(1000))

    def ev(kind: str, at: int, **kw) -> Event:
        provider = kw.pop("provider", camp.provider)
        return Event(**base | {"provider": provider}, event_type=kind, event_time=min(at, end),
                     provider_id=f"p{spec.seed}-{n}-{next(seq)}", **kw)

    out = [ev("sent", sent)] if camp.provider != "postmark" else []
    r = rng.random()
    if r < BOUNCE_RATE:
        hard = rng.random() < HARD_SHARE
        return [*out, ev("bounce", sent + rng.randint(2, 60) * SECOND,
                         bounce_class="hard" if hard else "soft")]
    delivered = sent + rng.randint(1, 10) * SECOND
    if r < BOUNCE_RATE + DEFER_RATE and camp.provider != "postmark":
        out.append(ev("deferred", delivered))
        delivered += rng.randint(1, 10) * MINUTE
    out.append(ev("delivered", delivered))

    def engagement(kind: str, at: int, **kw) -> Event:
        # Our own pixel/link wrapper sees part of the engagement instead of the ESP.
        if kind in TRACKER_TYPES and rng.random() < TRACKER_SHARE:
            kw["provider"] = "tracker"
        elif kind == "unsubscribe" and camp.provider == "ses":
            kw["provider"] = "tracker"  # SES has no unsubscribe event
        return ev(kind, at, **kw)

    if rng.random() < SCANNER_RATE:  # a link scanner: 3 clicks within a second of delivery
        for k in range(3):
            out.append(ev("click", delivered + 2 * SECOND + k * 200,
                          url=f"https://shop.example/p{k}", user_agent="Mozilla/5.0",
                          ip="203.0.113.9"))
    if rng.random() < OPEN_RATE:
        machine = rng.random() < MACHINE_OPEN_SHARE
        opened = delivered + (rng.randint(1, 20) * SECOND if machine
                              else int(rng.expovariate(1 / (20 * MINUTE))))
        out.append(engagement("open", opened, machine_open=machine))
        if rng.random() < camp.arms[arm] / OPEN_RATE:
            out.append(engagement("click", opened + int(rng.expovariate(1 / (40 * SECOND))),
                                  url=f"https://shop.example/p{rng.randrange(50)}"))
    if rng.random() < UNSUB_RATE:
        out.append(engagement("unsubscribe", delivered + rng.randint(1, 30) * MINUTE))
    if rng.random() < COMPLAINT_RATE:
        out.append(ev("complaint", delivered + rng.randint(1, 60) * MINUTE))
    return out


def _arrive(rng: random.Random, e: Event) -> Event:
    """When the webhook reaches us: seconds later, sometimes minutes (out of order)."""
    delay = int(rng.expovariate(1 / 2500)) + 200
    if rng.random() < 0.05:
        delay += rng.randint(10, 120) * SECOND
    return replace(e, received_time=e.event_time + delay)


def plan_events(spec: TrafficSpec) -> list[Event]:
    """Every provider event with its arrival time, duplicates and late ones included,
    sorted by arrival."""
    rng = random.Random(spec.seed)
    start = spec.start_ms or int(time.time() * 1000) - 3 * HOUR
    end = start + spec.span_ms
    campaigns = _campaigns(rng, spec, start)
    unique_target = round(spec.events / (1 + spec.duplicate_share))
    late_target = round(unique_target * spec.late_share)
    events: list[Event] = []
    n = 0
    while len(events) < unique_target - late_target:
        events.extend(_message_events(rng, spec, rng.choice(campaigns), n, end))
        n += 1
    events = [_arrive(rng, e) for e in events[: unique_target - late_target]]
    # Late: events of an old send (2-3 days ago) that only arrive now.
    for k in range(late_target):
        arrival = start + int(rng.uniform(0, spec.span_ms))
        old = rng.choice(events)
        events.append(replace(old, provider_id=f"late{spec.seed}-{k}", event_type="delivered",
                              message_id=f"old{spec.seed}-{k}", url=None, bounce_class=None,
                              event_time=arrival - spec.horizon_ms - rng.randint(1, 24) * HOUR,
                              received_time=arrival,
                              provider="tracker" if old.provider == "tracker"
                              else old.provider))
    # Fix the late ones the tracker cannot carry (it has no 'delivered').
    events = [replace(e, event_type="open") if e.provider == "tracker"
              and e.event_type not in TRACKER_TYPES else e for e in events]
    # Duplicates: a retry minutes later, half with a new provider event id.
    for k in range(spec.events - len(events)):
        original = events[rng.randrange(len(events))]
        retry = replace(original, received_time=original.received_time
                        + rng.randint(5, 600) * SECOND)
        if k % 2:
            retry = replace(retry, provider_id=f"{original.provider_id}-retry{k}")
        events.append(retry)
    events.sort(key=lambda e: e.received_time)
    return events


def generate(spec: TrafficSpec) -> list[RawRecord]:
    """The raw records (HTTP requests) in arrival order."""
    rng = random.Random(spec.seed + 1)
    records: list[RawRecord] = []
    pending: dict[str, list[Event]] = {}
    wanted: dict[str, int] = {}

    def emit(provider: str, events: list[Event]) -> None:
        payload, content_type = body(provider, events)
        records.append(RawRecord(f"r{spec.seed}-{len(records)}".encode(), provider,
                                 content_type, payload,
                                 max(e.received_time for e in events), len(events)))

    for e in plan_events(spec):
        if e.provider not in BATCH_SIZE:
            emit(e.provider, [e])
        else:
            batch = pending.setdefault(e.provider, [])
            batch.append(e)
            if len(batch) >= wanted.setdefault(e.provider,
                                               rng.randint(1, BATCH_SIZE[e.provider])):
                emit(e.provider, pending.pop(e.provider))
                del wanted[e.provider]
        if rng.random() < spec.bad_share:  # a body cut off mid-way (goes to email.dlq)
            records.append(RawRecord(f"r{spec.seed}-{len(records)}".encode(), "sendgrid",
                                     "application/json", b'[{"event": "delivered", "email": ',
                                     e.received_time, 0))
    for provider, batch in sorted(pending.items()):
        emit(provider, batch)
    return records


@dataclass
class Truth:
    """What the normalize and clean jobs must produce from a list of raw records."""

    events: int = 0                  # canonical events out of normalize (email.events)
    dead_letters: int = 0            # email.dlq records
    late: int = 0                    # email.late records
    clean: int = 0                   # email.events.clean records
    # event id -> index of the raw record that first carried it (clean events only)
    first_record: dict[str, int] = field(default_factory=dict)
    types: Counter = field(default_factory=Counter)     # clean events per type
    counts: Counter = field(default_factory=Counter)    # clean (campaign, arm, type)
    parse_seconds: float = 0.0       # time the pure-Python normalize took


def truth(records: list[RawRecord], hmac_key: str, horizon_ms: int) -> Truth:
    from udfs.normalize import NormalizeSettings, normalize

    settings = NormalizeSettings(hmac_key=hmac_key.encode(), metadata_fields={})
    out = Truth()
    ids: set[str] = set()
    contents: set[tuple] = set()
    for index, rec in enumerate(records):
        started = time.perf_counter()
        result = normalize(rec.provider, rec.body, rec.content_type, rec.received_ms, settings)
        out.parse_seconds += time.perf_counter() - started
        out.dead_letters += len(result.rejected) + (1 if result.control else 0)
        for e in result.events:
            out.events += 1
            if e["received_time"] - e["event_time"] > horizon_ms:
                out.late += 1
                continue
            content = (e["provider"], e["message_id"], e["subscriber_id"], e["event_type"],
                       e["event_time"], e["url"])
            if e["event_id"] in ids:
                continue
            ids.add(e["event_id"])
            if content in contents:
                continue
            contents.add(content)
            out.clean += 1
            out.first_record[e["event_id"]] = index
            out.types[e["event_type"]] += 1
            out.counts[(e["campaign_id"], e["arm"], e["event_type"])] += 1
    return out
