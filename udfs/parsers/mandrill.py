"""Mailchimp Transactional (Mandrill) webhooks: form field ``mandrill_events`` = JSON array.

The body is ``application/x-www-form-urlencoded`` with one field ``mandrill_events`` holding
up to 1000 events. A plain JSON array (or one event object) is accepted too, which is the
form a dead-lettered item is stored in, so it can be replayed alone.

Mapping (``event``): send->sent, delivered->delivered, deferral->deferred,
soft_bounce->bounce soft, hard_bounce->bounce hard, reject->dropped, open->open,
click->click, spam->complaint, unsub->unsubscribe. Sync events (``type`` whitelist/
blacklist/allowlist/denylist), inbound and anything else: unknown_event_type.

Traps handled:
* ``msg.opens`` / ``msg.clicks`` are the whole history so far, re-sent with every event:
  they are ignored; only the top-level event counts.
* No event id: the event id is a content hash of message id, type, ``ts`` and url.
* ``_id`` has been seen as "<n>.<id>" in later events: the message id is the part after
  the last dot.
* ``ts`` (event time, seconds) is used, never ``msg.ts`` (the send time).
* ``msg.metadata`` is the sender metadata; ``msg.tags`` become attributes.
* ``user_agent_parsed.type == "robot"`` (any case) is the weak native bot flag.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

from udfs.bots import native_bot_reason
from udfs.parsers import (
    Batch,
    BodyError,
    Draft,
    ParseContext,
    event_time,
    json_items,
    optional_dict,
    require_dict,
    require_text,
    text,
    unknown_type,
)

PROVIDER = "mandrill"
FORM_FIELD = "mandrill_events"

EVENT_TYPES: dict[str, tuple[str, str | None]] = {
    "send": ("sent", None),
    "delivered": ("delivered", None),
    "deferral": ("deferred", None),
    "soft_bounce": ("bounce", "soft"),
    "hard_bounce": ("bounce", "hard"),
    "reject": ("dropped", None),
    "open": ("open", None),
    "click": ("click", None),
    "spam": ("complaint", None),
    "unsub": ("unsubscribe", None),
}


def split(text_body: str, content_type: str | None) -> Batch:
    stripped = text_body.strip()
    is_form = (content_type or "").lower().startswith("application/x-www-form-urlencoded")
    if is_form or stripped.startswith(FORM_FIELD + "="):
        return Batch(json_items(_form_field(stripped)))
    return Batch(json_items(stripped))


def _form_field(body: str) -> str:
    try:
        fields = parse_qsl(body, keep_blank_values=True, encoding="utf-8", errors="strict")
    except UnicodeDecodeError as exc:
        raise BodyError("invalid_encoding",
                        f"form body has percent-encoded bytes that are not UTF-8: {exc}") \
            from None
    values = [value for name, value in fields if name == FORM_FIELD]
    if not values:
        raise BodyError("missing_field", f"form body has no '{FORM_FIELD}' field")
    if len(values) > 1:
        raise BodyError("invalid_format", f"form body has {len(values)} '{FORM_FIELD}' fields")
    return values[0]


def parse_item(value: Any, ctx: ParseContext) -> list[Draft]:
    event = require_dict(value, "mandrill event")
    if "event" not in event and "type" in event:
        raise unknown_type(PROVIDER, event.get("type"), "sync events are not message events")
    raw_type = require_text(event, "event", "mandrill event")
    if raw_type not in EVENT_TYPES:
        raise unknown_type(PROVIDER, raw_type)
    canonical, bounce_class = EVENT_TYPES[raw_type]
    msg = require_dict(event.get("msg"), "mandrill event.msg")

    message_id = text(msg.get("_id")) or text(event.get("_id"))
    ua_parsed = optional_dict(event.get("user_agent_parsed"))
    ua_type = text(ua_parsed.get("type"))
    attributes: dict[str, Any] = {
        "tags": msg.get("tags") or None,
        "subaccount": text(msg.get("subaccount")),
        "template": text(msg.get("template")),
        "state": text(msg.get("state")),
        "bounce_description": text(msg.get("bounce_description")),
        "bgtools_code": msg.get("bgtools_code"),
        "diag": text(msg.get("diag")),
        "geo_country": text(optional_dict(event.get("location")).get("country_short")),
        "ua_type": ua_type,
        "mobile": ua_parsed.get("mobile") if isinstance(ua_parsed.get("mobile"), bool)
        else None,
    }
    if canonical == "unsubscribe":
        attributes["unsubscribe_scope"] = "global"
    robot = ua_type is not None and ua_type.lower() == "robot"
    return [Draft(
        event_type=canonical,
        provider_type=raw_type,
        event_time=event_time(event, "ts", "mandrill event"),
        address=text(msg.get("email")),
        metadata=optional_dict(msg.get("metadata")),
        message_id=message_id.rsplit(".", 1)[-1] if message_id else None,
        url=text(event.get("url")) if canonical == "click" else None,
        bounce_class=bounce_class,
        # No MPP flag exists; a "robot" UA is the only native hint, and only a positive one.
        native_machine_open=True if robot and canonical == "open" else None,
        native_bot_reason=native_bot_reason(mandrill_ua_type=ua_type),
        user_agent=text(event.get("user_agent")),
        ip=text(event.get("ip")),
        attributes=attributes,
    )]
