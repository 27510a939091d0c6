"""Our own tracking events (pixel opens, wrapped-link clicks), as the gateway writes them.

Format (version 1). The gateway decodes the signed token of ``GET /t/o/{token}`` or
``GET /t/c/{token}`` and writes one JSON object per hit to ``email.raw`` with provider
``tracker`` and content type ``application/json``::

    {
      "v": 1,                                  # optional; other versions are rejected
      "type": "open",                          # open | click | unsubscribe | conversion
      "hit_id": "0b9f6c2e6a1d4c0e9f3a51f7c2d8e4b1",  # unique per HTTP request; the event id
      "ts": 1767268800123,                     # when the request arrived: epoch ms
                                               # (seconds or ISO-8601 are accepted too)
      "message_id": "m-20260101-0001",         # from the token (optional)
      "subscriber_id": "u_88213",              # from the token; or, if the token only
      "email": "ana@example.net",              #   has the address, that (hashed here)
      "campaign_id": "spr26",                  # optional, from the token
      "ab_test_id": "subject-test-1",          # optional, from the token
      "arm": "B",                              # optional, from the token
      "url": "https://shop.example.com/sale",  # click: the target sealed in the token
      "user_agent": "Mozilla/5.0 (…)",         # request User-Agent
      "ip": "203.0.113.77",                    # client IP (unmasked; masked here)
      "meta": {"link": "cta-main"},            # optional extra token fields
      "order_id": "o-991", "value": 42.5, "currency": "EUR"   # conversion only, optional
    }

A body may also be a JSON array of such objects or JSON lines (captures and backfills).
``meta`` is the sender metadata for the configurable field names; the top-level
``subscriber_id``/``campaign_id``/``ab_test_id``/``arm`` are the native values used when
``meta`` does not carry them. The tracker has no machine-open flag: bot checks use the UA/IP.
``hit_id`` is generated once per request and stored in the raw record, so a replay keeps
the same event id while two real hits never share one.
"""

from __future__ import annotations

from typing import Any

from udfs.parsers import (
    Batch,
    Draft,
    ItemError,
    ParseContext,
    event_time,
    json_items,
    optional_dict,
    require_dict,
    require_text,
    text,
    unknown_type,
)

PROVIDER = "tracker"
VERSION = 1
EVENT_TYPES = ("open", "click", "unsubscribe", "conversion")


def split(text_body: str, content_type: str | None) -> Batch:
    return Batch(json_items(text_body, allow_ndjson=True))


def parse_item(value: Any, ctx: ParseContext) -> list[Draft]:
    hit = require_dict(value, "tracker hit")
    version = hit.get("v", VERSION)
    if version != VERSION:
        raise ItemError("invalid_format", f"tracker format version {version!r} is not "
                                          f"supported (expected {VERSION})")
    raw_type = require_text(hit, "type", "tracker hit")
    if raw_type not in EVENT_TYPES:
        raise unknown_type(PROVIDER, raw_type)
    url = text(hit.get("url"))
    if raw_type == "click" and url is None:
        raise ItemError("missing_field", "tracker click has no url")

    attributes: dict[str, Any] = {"provider_event_id": text(hit.get("hit_id"))}
    if raw_type == "conversion":
        attributes.update({"order_id": text(hit.get("order_id")),
                           "value": hit.get("value"), "currency": text(hit.get("currency"))})
    if raw_type == "unsubscribe":
        attributes["unsubscribe_scope"] = text(hit.get("scope")) or "global"
    return [Draft(
        event_type=raw_type,
        provider_type=raw_type,
        event_time=event_time(hit, "ts", "tracker hit"),
        address=text(hit.get("email")),
        metadata=optional_dict(hit.get("meta")),
        native={
            "subscriber_id": text(hit.get("subscriber_id")),
            "campaign_id": text(hit.get("campaign_id")),
            "ab_test_id": text(hit.get("ab_test_id")),
            "arm": text(hit.get("arm")),
        },
        message_id=text(hit.get("message_id")),
        url=url if raw_type in ("click", "conversion") else None,
        user_agent=text(hit.get("user_agent")),
        ip=text(hit.get("ip")),
        trusted_event_id=text(hit.get("hit_id")),
        attributes=attributes,
    )]
