"""Mailgun webhooks (event-data format): one JSON object ``{signature, event-data}`` per POST.

Mapping (``event-data.event``): accepted->sent, rejected->dropped, delivered->delivered,
failed+severity "temporary"->deferred, failed+permanent with a ``suppress-*`` reason->dropped
(Mailgun did not even try: address previously bounced/unsubscribed/complained),
failed+permanent otherwise->bounce hard, opened->open, clicked->click,
unsubscribed->unsubscribe, complained->complaint. Anything else: unknown_event_type.

Traps handled:
* ``event-data.timestamp`` is a float of seconds with microseconds; ms are truncated, not
  rounded through binary floats.
* ``event-data.id`` is unique only within a day, so the event id hashes it together with
  the event time.
* ``severity`` decides temporary vs permanent failures (``failed`` is not always a bounce).
* ``message-id`` comes without angle brackets; brackets are stripped if present anyway.
* ``client-info.bot`` ("apple", "gmail", "generic", "" = checked and not a bot) is the native
  bot/machine-open flag on opens and clicks.
* ``user-variables`` values come back as strings; they are the sender metadata.
* The signature token (stable per delivery attempt set) is kept as ``transport_id``.
The legacy form-encoded webhook format (before 2018) is rejected as ``invalid_format``.
"""

from __future__ import annotations

from typing import Any

from udfs.bots import native_bot_reason
from udfs.canonical import ENGAGEMENT_TYPES
from udfs.parsers import (
    Batch,
    BodyError,
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

PROVIDER = "mailgun"

EVENT_TYPES = {
    "accepted": "sent",
    "rejected": "dropped",
    "delivered": "delivered",
    "opened": "open",
    "clicked": "click",
    "unsubscribed": "unsubscribe",
    "complained": "complaint",
}


def split(text_body: str, content_type: str | None) -> Batch:
    if (content_type or "").lower().startswith(("application/x-www-form-urlencoded",
                                                "multipart/form-data")):
        raise BodyError("invalid_format",
                        "legacy form-encoded Mailgun webhooks are not supported; "
                        "configure the JSON (event-data) webhooks")
    return Batch(json_items(text_body))


def parse_item(value: Any, ctx: ParseContext) -> list[Draft]:
    body = require_dict(value, "mailgun body")
    if "event-data" not in body:
        raise ItemError("missing_field", "mailgun body.event-data is missing")
    data = require_dict(body["event-data"], "mailgun event-data")
    raw_type = require_text(data, "event", "event-data")
    canonical, bounce_class = _map_type(raw_type, data)
    when = event_time(data, "timestamp", "event-data")

    status = optional_dict(data.get("delivery-status"))
    flags = optional_dict(data.get("flags"))
    client = optional_dict(data.get("client-info"))
    provider_id = text(data.get("id"))
    attributes: dict[str, Any] = {
        "provider_event_id": provider_id,
        "transport_id": text(optional_dict(body.get("signature")).get("token")),
        "tags": data.get("tags") or None,
        "reason": text(data.get("reason")),
        "severity": text(data.get("severity")),
        "smtp_code": status.get("code"),
        "smtp_message": text(status.get("message")),
        "smtp_description": text(status.get("description")),
        "enhanced_code": text(status.get("enhanced-code")),
        "attempt": status.get("attempt-no"),
        "delayed_bounce": True if flags.get("is-delayed-bounce") is True else None,
        "test_mode": True if flags.get("is-test-mode") is True else None,
        "geo_country": text(optional_dict(data.get("geolocation")).get("country")),
        "client_type": text(client.get("client-type")),
        "device_type": text(client.get("device-type")),
        "batch_id": text(optional_dict(data.get("batch")).get("id")),
        "template": text(optional_dict(data.get("template")).get("name")),
        "account_id": text(optional_dict(data.get("account")).get("id")),
        "sending_domain": text(optional_dict(data.get("domain")).get("name")),
        "campaigns": data.get("campaigns") or None,
    }

    bot = client.get("bot") if "bot" in client else None
    machine_open = None
    native_reason = None
    if canonical in ("open", "click") and isinstance(bot, str):
        native_reason = native_bot_reason(mailgun_bot=bot)
        if canonical == "open":
            # "" means Mailgun looked and found no bot: a real False, not unknown.
            machine_open = bool(bot.strip())

    headers = optional_dict(optional_dict(data.get("message")).get("headers"))
    message_id = text(headers.get("message-id"))
    return [Draft(
        event_type=canonical,
        provider_type=raw_type,
        event_time=when,
        address=text(data.get("recipient")),
        metadata=optional_dict(data.get("user-variables")),
        native={"recipient_domain": text(data.get("recipient-domain"))},
        message_id=message_id.strip("<>") if message_id else None,
        url=text(data.get("url")) if canonical == "click" else None,
        bounce_class=bounce_class,
        native_machine_open=machine_open,
        native_bot_reason=native_reason,
        user_agent=text(client.get("user-agent")),
        ip=text(data.get("ip")) if canonical in ENGAGEMENT_TYPES else None,
        # Day-scoped id: unique together with the event time.
        trusted_event_id=f"{provider_id}@{when}" if provider_id else None,
        attributes=attributes,
    )]


def _map_type(raw_type: str, data: dict[str, Any]) -> tuple[str, str | None]:
    if raw_type != "failed":
        canonical = EVENT_TYPES.get(raw_type)
        if canonical is None:
            raise unknown_type(PROVIDER, raw_type)
        return canonical, None
    severity = text(data.get("severity"))
    if severity is None:
        raise ItemError("missing_field",
                        "event-data.severity is missing on a 'failed' event "
                        "(needed to tell temporary from permanent failures)")
    if severity == "temporary":
        return "deferred", None
    if severity == "permanent":
        reason = (text(data.get("reason")) or "").lower()
        if reason.startswith("suppress"):
            return "dropped", None
        return "bounce", "hard"
    raise ItemError("invalid_field",
                    f"event-data.severity {severity!r} is neither 'temporary' nor 'permanent'")
