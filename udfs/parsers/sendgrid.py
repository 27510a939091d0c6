"""SendGrid Event Webhook: a JSON array of event objects (CRLF after each element).

Mapping: processed->sent, deferred->deferred, delivered->delivered, bounce->bounce
(``type`` "bounce" = hard; "blocked" and "expired" = soft), dropped->dropped, open->open,
click->click, spamreport->complaint, unsubscribe/group_unsubscribe->unsubscribe
(``unsubscribe_scope`` global/group). group_resubscribe and anything else: unknown_event_type.

Traps handled:
* Custom args are flattened into the event: every key that is not a documented SendGrid
  field is treated as sender metadata.
* ``timestamp`` is seconds, but ms has been seen: units are inferred from magnitude.
* ``sg_event_id`` changes between retries of the same event (reported), so it is kept as
  an attribute only and the event id is a content hash.
* ``sg_message_id`` is missing on async bounces: the message id is its part before the
  first "." (the id the send API returns), else the local part of a SendGrid ``smtp-id``.
* ``ip`` is the recipient's on open/click but the sending IP on delivery events, so it is
  only used as client IP on engagement events and kept as ``sending_ip`` otherwise.
* ``category`` is a string or an array: always stored as a JSON array in ``tags``.
* ``sg_machine_open`` (Apple MPP only) is the native machine-open flag.
"""

from __future__ import annotations

from typing import Any

from udfs.canonical import ENGAGEMENT_TYPES
from udfs.parsers import (
    Batch,
    Draft,
    ParseContext,
    event_time,
    flag,
    json_items,
    optional_dict,
    require_dict,
    require_text,
    text,
    unknown_type,
)

PROVIDER = "sendgrid"

EVENT_TYPES = {
    "processed": "sent",
    "deferred": "deferred",
    "delivered": "delivered",
    "bounce": "bounce",
    "dropped": "dropped",
    "open": "open",
    "click": "click",
    "spamreport": "complaint",
    "unsubscribe": "unsubscribe",
    "group_unsubscribe": "unsubscribe",
}

# Documented SendGrid event fields; everything else in an event is a flattened custom arg.
RESERVED = frozenset({
    "email", "timestamp", "event", "smtp-id", "sg_message_id", "sg_event_id",
    "sg_machine_open", "sg_content_type", "sg_user_id", "response", "attempt", "ip", "tls",
    "cert_err", "category", "useragent", "url", "url_offset", "reason", "status", "type",
    "bounce_classification", "asm_group_id", "marketing_campaign_id",
    "marketing_campaign_name", "marketing_campaign_version", "marketing_campaign_split_id",
    "singlesend_id", "singlesend_name", "mc_stats", "phase_id", "sg_template_id",
    "sg_template_name", "send_at", "pool", "unique_args", "custom_args",
})

# Copied into attributes under the same name when present.
PASSTHROUGH = (
    "sg_event_id", "sg_message_id", "response", "status", "reason", "attempt", "tls",
    "bounce_classification", "asm_group_id", "marketing_campaign_name", "singlesend_name",
    "sg_template_id", "sg_template_name", "sg_content_type", "mc_stats", "phase_id",
)


def split(text_body: str, content_type: str | None) -> Batch:
    # The CRLF separators are plain JSON whitespace; parsing the raw text handles them.
    return Batch(json_items(text_body))


def parse_item(value: Any, ctx: ParseContext) -> list[Draft]:
    event = require_dict(value, "sendgrid event")
    raw_type = require_text(event, "event", "sendgrid event")
    canonical = EVENT_TYPES.get(raw_type)
    if canonical is None:
        raise unknown_type(PROVIDER, raw_type)

    attributes: dict[str, Any] = {key: event[key] for key in PASSTHROUGH if key in event}
    attributes["provider_event_id"] = attributes.pop("sg_event_id", None)
    smtp_id = text(event.get("smtp-id"))
    if smtp_id:
        attributes["rfc_message_id"] = smtp_id
    category = event.get("category")
    if category not in (None, "", []):
        attributes["tags"] = category if isinstance(category, list) else [category]
    offset = optional_dict(event.get("url_offset"))
    if offset:
        attributes["url_offset_index"] = offset.get("index")
        attributes["url_offset_type"] = offset.get("type")

    bounce_class = None
    if canonical == "bounce":
        bounce_type = text(event.get("type")) or "bounce"
        attributes["bounce_type"] = bounce_type
        bounce_class = "hard" if bounce_type == "bounce" else "soft"
    if raw_type in ("unsubscribe", "group_unsubscribe"):
        attributes["unsubscribe_scope"] = "group" if raw_type == "group_unsubscribe" else "global"

    client_ip = None
    if canonical in ENGAGEMENT_TYPES:
        client_ip = text(event.get("ip"))
    elif text(event.get("ip")):
        attributes["sending_ip"] = text(event.get("ip"))

    metadata = {key: val for key, val in event.items() if key not in RESERVED}
    # Older integrations nest the args instead of relying on flattening.
    for nested in ("unique_args", "custom_args"):
        metadata.update(optional_dict(event.get(nested)))

    return [Draft(
        event_type=canonical,
        provider_type=raw_type,
        event_time=event_time(event, "timestamp", "sendgrid event"),
        address=text(event.get("email")),
        metadata=metadata,
        native={
            "campaign_id": text(event.get("marketing_campaign_id"))
            or text(event.get("singlesend_id")),
            "ab_test_id": text(event.get("marketing_campaign_split_id")),
            "arm": text(event.get("marketing_campaign_version")),
        },
        message_id=_message_id(event),
        url=text(event.get("url")) if canonical == "click" else None,
        bounce_class=bounce_class,
        native_machine_open=flag(event.get("sg_machine_open")) if canonical == "open" else None,
        user_agent=text(event.get("useragent")),
        ip=client_ip,
        attributes=attributes,
    )]


def _message_id(event: dict[str, Any]) -> str | None:
    sg_message_id = text(event.get("sg_message_id"))
    if sg_message_id:
        return sg_message_id.split(".", 1)[0]
    smtp_id = text(event.get("smtp-id"))
    if smtp_id and "@" in smtp_id:
        local, host = smtp_id.strip("<>").split("@", 1)
        # Only SendGrid-generated Message-IDs embed the send API's message id.
        if "sendgrid" in host.lower() and local:
            return local
    return None
