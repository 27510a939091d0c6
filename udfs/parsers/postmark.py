"""Postmark webhooks: one JSON object per POST, discriminated by ``RecordType``.

Mapping: Delivery->delivered; Bounce by ``Type`` (the string; ``TypeCode`` only when
``Type`` is absent, because fixtures pair "SpamComplaint" with code 512):
HardBounce->bounce hard; SoftBounce, Transient, DnsError, Blocked, DMARCPolicy,
VirusNotification->bounce soft (temporary or policy, not a dead address); Unknown->bounce
with bounce_class null; BadEmailAddress, ManuallyDeactivated, Unconfirmed,
TemplateRenderingFailed, SMTPApiError->dropped (never attempted); SpamNotification,
SpamComplaint->complaint; AutoResponder, AddressChange, ChallengeVerification,
OpenRelayTest, InboundError and unknown values->unknown_event_type (auto-replies and
inbound, not delivery outcomes). RecordType SpamComplaint->complaint, Open->open, Click->click,
SubscriptionChange with ``SuppressSending: true`` and reason ManualSuppression (or none)
->unsubscribe; a suppression caused by HardBounce/SpamComplaint repeats an event already
received and a reactivation (``SuppressSending: false``) has no canonical type: both are
unknown_event_type.

Traps handled:
* Times are ISO-8601 with 7 fraction digits and a Z or a local offset (``-04:00``); a
  naive time is read as UTC and flagged with the attribute ``naive_time``.
* The recipient is ``Recipient`` on most records but ``Email`` on Bounce/SpamComplaint.
* No event id: bounces/complaints have a unique numeric ``ID`` (used); other records get a
  content hash (MessageID, type, time, link).
* ``Metadata`` is the sender metadata; ``Tag`` and ``MessageStream`` become attributes.
"""

from __future__ import annotations

from typing import Any

from udfs.canonical import is_naive_iso
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

PROVIDER = "postmark"

# Bounce Type -> (canonical type, bounce class).
BOUNCE_TYPES: dict[str, tuple[str, str | None]] = {
    "HardBounce": ("bounce", "hard"),
    "SoftBounce": ("bounce", "soft"),
    "Transient": ("bounce", "soft"),
    "DnsError": ("bounce", "soft"),
    "Blocked": ("bounce", "soft"),
    "DMARCPolicy": ("bounce", "soft"),
    "VirusNotification": ("bounce", "soft"),
    "Unknown": ("bounce", None),
    "BadEmailAddress": ("dropped", None),
    "ManuallyDeactivated": ("dropped", None),
    "Unconfirmed": ("dropped", None),
    "TemplateRenderingFailed": ("dropped", None),
    "SMTPApiError": ("dropped", None),
    "SpamNotification": ("complaint", None),
    "SpamComplaint": ("complaint", None),
}
BOUNCE_TYPE_CODES = {
    1: "HardBounce", 2: "Transient", 16: "Blocked", 512: "SpamNotification",
    4096: "SoftBounce", 100000: "DMARCPolicy",
}

TIME_FIELDS = {
    "Delivery": "DeliveredAt", "Bounce": "BouncedAt", "SpamComplaint": "BouncedAt",
    "Open": "ReceivedAt", "Click": "ReceivedAt", "SubscriptionChange": "ChangedAt",
}


def split(text_body: str, content_type: str | None) -> Batch:
    return Batch(json_items(text_body))


def parse_item(value: Any, ctx: ParseContext) -> list[Draft]:
    record = require_dict(value, "postmark record")
    record_type = require_text(record, "RecordType", "postmark record")
    if record_type not in TIME_FIELDS:
        raise unknown_type(PROVIDER, record_type)
    time_field = TIME_FIELDS[record_type]
    when = event_time(record, time_field, "postmark record")

    bounce_class = None
    provider_type = record_type
    trusted_id = None
    attributes: dict[str, Any] = {
        "tag": text(record.get("Tag")),
        "message_stream": text(record.get("MessageStream")),
        "server_id": record.get("ServerID"),
        "naive_time": True if is_naive_iso(record.get(time_field)) else None,
    }
    if record_type == "Delivery":
        canonical = "delivered"
        attributes["smtp_response"] = text(record.get("Details"))
    elif record_type in ("Bounce", "SpamComplaint"):
        canonical, bounce_class, provider_type = _bounce(record)
        bounce_id = text(record.get("ID"))
        attributes.update({
            "provider_event_id": bounce_id,
            "bounce_type": text(record.get("Type")),
            "bounce_type_code": record.get("TypeCode"),
            "description": text(record.get("Description")),
            "details": text(record.get("Details")),
            "inactive": record.get("Inactive") if isinstance(record.get("Inactive"),
                                                             bool) else None,
        })
        # A bounce ID is unique per bounce record and repeated on retries.
        trusted_id = f"bounce:{bounce_id}" if bounce_id else None
    elif record_type == "Open":
        canonical = "open"
        attributes.update({"first_open": record.get("FirstOpen"),
                           "read_seconds": record.get("ReadSeconds"),
                           "platform": text(record.get("Platform")),
                           "client": text(optional_dict(record.get("Client")).get("Name"))})
    elif record_type == "Click":
        canonical = "click"
        attributes.update({"click_location": text(record.get("ClickLocation")),
                           "platform": text(record.get("Platform"))})
    else:
        canonical = _subscription(record)
        attributes.update({"suppression_reason": text(record.get("SuppressionReason")),
                           "origin": text(record.get("Origin")),
                           "unsubscribe_scope": "stream"})

    geo = optional_dict(record.get("Geo"))
    attributes["geo_country"] = text(geo.get("CountryISOCode"))
    address = text(record.get("Email")) if record_type in ("Bounce", "SpamComplaint") \
        else text(record.get("Recipient"))
    return [Draft(
        event_type=canonical,
        provider_type=provider_type,
        event_time=when,
        address=address or text(record.get("Recipient")) or text(record.get("Email")),
        metadata=optional_dict(record.get("Metadata")),
        message_id=text(record.get("MessageID")),
        url=text(record.get("OriginalLink")) if canonical == "click" else None,
        bounce_class=bounce_class,
        user_agent=text(record.get("UserAgent")),
        ip=text(geo.get("IP")),
        trusted_event_id=trusted_id,
        attributes=attributes,
    )]


def _bounce(record: dict[str, Any]) -> tuple[str, str | None, str]:
    bounce_type = text(record.get("Type"))
    if bounce_type is None:
        code = record.get("TypeCode")
        bounce_type = BOUNCE_TYPE_CODES.get(code) if isinstance(code, int) else None
    if bounce_type is None:
        if record.get("RecordType") == "SpamComplaint":
            bounce_type = "SpamComplaint"
        else:
            raise ItemError("missing_field", "postmark bounce has neither Type nor a known "
                                             "TypeCode")
    mapped = BOUNCE_TYPES.get(bounce_type)
    if mapped is None:
        raise unknown_type(PROVIDER, f"Bounce/{bounce_type}",
                           "auto-replies, address changes and inbound errors are not "
                           "delivery outcomes")
    return mapped[0], mapped[1], f"{record.get('RecordType')}/{bounce_type}"


def _subscription(record: dict[str, Any]) -> str:
    suppress = record.get("SuppressSending")
    reason = text(record.get("SuppressionReason"))
    if suppress is True and reason in (None, "ManualSuppression"):
        return "unsubscribe"
    if suppress is True:
        raise unknown_type(PROVIDER, f"SubscriptionChange/{reason}",
                           "a suppression caused by a bounce or complaint repeats that event")
    if suppress is False:
        raise unknown_type(PROVIDER, "SubscriptionChange/reactivated",
                           "a reactivation (resubscribe) has no canonical type")
    raise ItemError("missing_field", "SubscriptionChange.SuppressSending is missing")
