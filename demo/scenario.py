"""A small, fixed SendGrid scenario for the demo and the end-to-end test.

Two campaigns, seven subscribers, one retried (duplicate) batch, one body that is not JSON
and one event of a type nobody maps. `tag` makes campaign ids unique per run so that
repeated runs against the same topics and tables do not mix."""

from __future__ import annotations

import json

T0 = 1767268800  # 2026-01-01T12:00:00Z, SendGrid timestamps are epoch seconds


def _event(kind: str, subscriber: int, campaign: str, offset_s: int, **extra) -> dict:
    event = {
        "email": f"subscriber{subscriber}@example.net",
        "timestamp": T0 + offset_s,
        "event": kind,
        "sg_event_id": f"ev-{campaign}-{kind}-{subscriber}-{offset_s}",
        "sg_message_id": f"msg-{campaign}-{subscriber}.filter0001",
        "campaign_id": campaign,
        "subscriber_id": f"sub-{subscriber}",
    }
    event.update(extra)
    return event


def _body(events: list[dict]) -> bytes:
    # Real SendGrid bodies put CRLF after each array element.
    return ("[" + ",\r\n".join(json.dumps(e) for e in events) + "]\r\n").encode()


def sendgrid_batches(tag: str) -> list[bytes]:
    sale, welcome = f"spring-sale-{tag}", f"welcome-{tag}"
    delivered = [_event("delivered", s, sale, 0) for s in (1, 2, 3, 4)]
    delivered += [_event("delivered", s, welcome, 0) for s in (5, 6)]
    human_open = _event("open", 1, sale, 60, useragent="Mozilla/5.0 (Macintosh)",
                        ip="203.0.113.7", sg_machine_open=False)
    engagement = [
        human_open,
        _event("open", 2, sale, 61, useragent="Mozilla/5.0", sg_machine_open=True),
        _event("click", 1, sale, 90, url="https://shop.example.com/p/42",
               useragent="Mozilla/5.0 (Macintosh)", ip="203.0.113.7"),
        _event("bounce", 7, welcome, 5, type="bounce", status="5.1.1",
               reason="550 5.1.1 user unknown"),
        _event("unsubscribe", 5, welcome, 300),
        _event("spamreport", 6, welcome, 400),
        _event("teleported", 6, welcome, 500),
    ]
    return [
        _body(delivered),
        _body(engagement),
        _body([human_open]),          # SendGrid retried a batch: same event again
        b'[{"event": "delivered", "email": ',  # truncated body: not JSON
    ]


# What the normalize job must produce for sendgrid_batches(tag), per (campaign, type).
# The normalize job does not deduplicate (the clean job does), so the retried open counts.
EXPECTED_EVENT_COUNTS = {
    ("spring-sale", "delivered"): 4,
    ("spring-sale", "open"): 3,
    ("spring-sale", "click"): 1,
    ("welcome", "delivered"): 2,
    ("welcome", "bounce"): 1,
    ("welcome", "unsubscribe"): 1,
    ("welcome", "complaint"): 1,
}
EXPECTED_DEAD_LETTER_CODES = ["invalid_json", "unknown_event_type"]
