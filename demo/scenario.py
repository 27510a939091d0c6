"""A small, fixed SendGrid scenario for the demo and the end-to-end test.

Two campaigns, seven subscribers, one retried (duplicate) batch, one body that is not JSON
and one event of a type nobody maps. `tag` makes campaign ids unique per run so that
repeated runs against the same topics and tables do not mix."""

from __future__ import annotations

import json
import time


def start_of_scenario() -> int:
    """Ten minutes ago on a minute boundary, in epoch seconds (SendGrid's unit). Recent,
    because the clean job sends events received more than its horizon (48 h) after they
    happened to email.late."""
    return int(time.time()) // 60 * 60 - 600


def _event(kind: str, subscriber: int, campaign: str, offset_s: int, t0: int,
           **extra) -> dict:
    event = {
        "email": f"subscriber{subscriber}@example.net",
        "timestamp": t0 + offset_s,
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


def sendgrid_batches(tag: str, t0: int | None = None) -> list[bytes]:
    t0 = start_of_scenario() if t0 is None else t0
    sale, welcome = f"spring-sale-{tag}", f"welcome-{tag}"
    delivered = [_event("delivered", s, sale, 0, t0) for s in (1, 2, 3, 4)]
    delivered += [_event("delivered", s, welcome, 0, t0) for s in (5, 6)]
    human_open = _event("open", 1, sale, 60, t0, useragent="Mozilla/5.0 (Macintosh)",
                        ip="203.0.113.7", sg_machine_open=False)
    engagement = [
        human_open,
        _event("open", 2, sale, 61, t0, useragent="Mozilla/5.0", sg_machine_open=True),
        _event("click", 1, sale, 90, t0, url="https://shop.example.com/p/42",
               useragent="Mozilla/5.0 (Macintosh)", ip="203.0.113.7"),
        _event("bounce", 7, welcome, 5, t0, type="bounce", status="5.1.1",
               reason="550 5.1.1 user unknown"),
        _event("unsubscribe", 5, welcome, 300, t0),
        _event("spamreport", 6, welcome, 400, t0),
        _event("teleported", 6, welcome, 500, t0),
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
# After the clean job (the retried open removed) and the metrics job, per campaign.
EXPECTED_CLEAN_EVENTS = sum(EXPECTED_EVENT_COUNTS.values()) - 1
EXPECTED_TOTALS = {
    "spring-sale": {"delivered": 4, "unique_human_opens": 1, "unique_machine_opens": 1,
                    "unique_clicks": 1, "bot_clicks": 0, "bounces_hard": 0,
                    "unsubscribes": 0, "complaints": 0},
    "welcome": {"delivered": 2, "unique_human_opens": 0, "unique_machine_opens": 0,
                "unique_clicks": 0, "bot_clicks": 0, "bounces_hard": 1,
                "unsubscribes": 1, "complaints": 1},
}
