"""Amazon SES event publishing, as delivered by SNS (HTTP/S), raw SNS delivery or Firehose.

Accepted bodies:
* SNS envelope ``{"Type": "Notification", "MessageId", "Message": "<SES JSON string>", …}``;
  the SNS ``MessageId`` (stable across SNS retries) is kept as ``transport_id``.
  ``SubscriptionConfirmation`` / ``UnsubscribeConfirmation`` give the control results
  ``sns_subscription_confirmation`` / ``sns_unsubscribe_confirmation`` (no events, no dead
  letters: the gateway confirms out of band), and the first "Successfully validated SNS
  topic…" notification gives ``ses_setup_notification``.
* a bare SES record (SNS raw message delivery), or a JSON array of them;
* JSON lines of SES records (Firehose to S3);
* a Firehose HTTP endpoint request ``{"requestId", "records": [{"data": base64}]}``.

Mapping (``eventType``, or ``notificationType`` of identity notifications): Send->sent,
Reject->dropped, "Rendering Failure"->dropped, Delivery->delivered, DeliveryDelay->deferred,
Bounce: Permanent->bounce hard, Permanent/Suppressed|OnAccountSuppressionList->dropped
(SES suppression list, nothing was sent), Transient->bounce soft (terminal: SES only
publishes soft bounces it stopped retrying), Undetermined->bounce with bounce_class null;
Complaint->complaint, Open->open, Click->click, Subscription->unsubscribe when the new
preferences opt out of everything or of a topic; other subscription changes and other types
are unknown_event_type.

Traps handled:
* ``Message`` is a JSON string inside JSON (double-encoded).
* ``eventType`` has a space in "Rendering Failure" and its payload key is ``failure``.
* The event time is the event object's own ``timestamp``; ``mail.timestamp`` is the send
  time and is used only for Send/Reject/Rendering Failure, which happen at send time.
* One record fans out into one event per recipient of that event (``bouncedRecipients``,
  ``delivery.recipients``, …). Opens/clicks are tracked per message, so they fan out to all
  of ``mail.destination``; ``message_recipient_count`` marks that attribution is shared.
* ``mail.messageId`` (SES id) is the message id; the RFC Message-ID header is only kept as
  ``rfc_message_id``. ``mail.tags`` (name -> list of values) is the sender metadata.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from functools import partial
from typing import Any

from udfs.parsers import (
    Batch,
    BodyError,
    Draft,
    Item,
    ItemError,
    ParseContext,
    compact_json,
    event_time,
    json_items,
    load_json,
    optional_dict,
    require_dict,
    require_text,
    text,
    unknown_type,
)

PROVIDER = "ses"
SETUP_MESSAGE = "Successfully validated SNS topic"


@dataclass(frozen=True)
class SesRecord:
    record: Any
    transport_id: str | None = None
    firehose_request_id: str | None = None


def split(text_body: str, content_type: str | None) -> Batch:
    stripped = text_body.strip()
    if stripped.startswith(SETUP_MESSAGE):
        return Batch([], control="ses_setup_notification")
    items = json_items(stripped, allow_ndjson=True)
    if len(items) == 1 and isinstance(items[0].value, dict):
        data = items[0].value
        if "Type" in data and ("Message" in data or "TopicArn" in data):
            return _sns(data, stripped.encode("utf-8"))
        if "records" in data and "requestId" in data:
            return _firehose(data)
    return Batch([Item(SesRecord(i.value), i.raw_source, i.error) for i in items])


def _sns(envelope: dict[str, Any], raw: bytes) -> Batch:
    kind = envelope.get("Type")
    if kind == "SubscriptionConfirmation":
        return Batch([], control="sns_subscription_confirmation")
    if kind == "UnsubscribeConfirmation":
        return Batch([], control="sns_unsubscribe_confirmation")
    if kind != "Notification":
        raise BodyError("invalid_format", f"SNS message Type {kind!r} is not handled")
    message = envelope.get("Message")
    if not isinstance(message, str):
        raise BodyError("missing_field", "SNS Notification has no Message string")
    if message.strip().startswith(SETUP_MESSAGE):
        return Batch([], control="ses_setup_notification")
    record = load_json(message, "SNS Message")
    # The envelope is one SES event: replaying the whole body is the faithful retry.
    return Batch([Item(SesRecord(record, text(envelope.get("MessageId"))), raw)])


def _firehose(request: dict[str, Any]) -> Batch:
    records = request.get("records")
    if not isinstance(records, list):
        raise BodyError("invalid_format", "Firehose request 'records' must be an array")
    request_id = text(request.get("requestId"))
    items = []
    for index, entry in enumerate(records):
        # An undecodable record is kept inside a one-record request, which replays alone.
        raw = partial(compact_json, {**request, "records": [entry]})
        try:
            data = require_dict(entry, f"records[{index}]").get("data")
            decoded = base64.b64decode(data, validate=True).decode("utf-8")
            record = load_json(decoded, f"records[{index}].data")
        except (binascii.Error, TypeError, UnicodeDecodeError) as exc:
            error = ItemError("invalid_encoding", f"records[{index}].data is not base64 "
                                                  f"UTF-8 JSON: {exc}")
            items.append(Item(None, raw, error))
            continue
        except ItemError as exc:
            items.append(Item(None, raw, exc))
            continue
        # A decoded record is a bare SES record: the form that replays alone.
        items.append(Item(SesRecord(record, firehose_request_id=request_id),
                          partial(compact_json, record)))
    return Batch(items)


def parse_item(value: Any, ctx: ParseContext) -> list[Draft]:
    wrapped = value if isinstance(value, SesRecord) else SesRecord(value)
    record = require_dict(wrapped.record, "ses record")
    raw_type = text(record.get("eventType")) or text(record.get("notificationType"))
    if raw_type is None:
        raise ItemError("missing_field", "ses record has neither eventType nor notificationType")
    mail = require_dict(record.get("mail"), "ses record.mail")
    message_id = require_text(mail, "messageId", "mail")
    common = {
        "transport_id": wrapped.transport_id,
        "firehose_request_id": wrapped.firehose_request_id,
        "rfc_message_id": text(optional_dict(mail.get("commonHeaders")).get("messageId")),
        "source_arn": text(mail.get("sourceArn")),
    }
    metadata = _tags(mail.get("tags"))
    base = _event(raw_type, record, mail)
    destination = [a for a in mail.get("destination") or [] if isinstance(a, str)]
    recipients = base.recipients if base.recipients is not None else [(a, {}) for a in
                                                                        destination]
    if not recipients:
        raise ItemError("missing_field", f"ses {raw_type} record names no recipient")
    if base.per_message and len(recipients) > 1:
        common["message_recipient_count"] = len(recipients)

    drafts = []
    for address, extra in recipients:
        drafts.append(Draft(
            event_type=base.event_type,
            provider_type=raw_type,
            event_time=base.event_time,
            address=address,
            metadata=metadata,
            message_id=message_id,
            url=base.url,
            bounce_class=base.bounce_class,
            user_agent=base.user_agent,
            ip=base.ip,
            attributes={**common, **base.attributes, **extra},
        ))
    return drafts


@dataclass
class _Parsed:
    event_type: str
    event_time: int
    # None: use mail.destination; else (address, per-recipient attributes) pairs.
    recipients: list[tuple[str | None, dict[str, Any]]] | None = None
    per_message: bool = False
    bounce_class: str | None = None
    url: str | None = None
    user_agent: str | None = None
    ip: str | None = None
    attributes: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        self.attributes = self.attributes or {}


def _event(raw_type: str, record: dict[str, Any], mail: dict[str, Any]) -> _Parsed:
    if raw_type == "Send":
        return _Parsed("sent", event_time(mail, "timestamp", "mail"))
    if raw_type == "Reject":
        reject = optional_dict(record.get("reject"))
        return _Parsed("dropped", event_time(mail, "timestamp", "mail"),
                       attributes={"reason": text(reject.get("reason"))})
    if raw_type == "Rendering Failure":
        failure = optional_dict(record.get("failure"))
        return _Parsed("dropped", event_time(mail, "timestamp", "mail"), attributes={
            "template": text(failure.get("templateName")),
            "reason": text(failure.get("errorMessage"))})
    if raw_type == "Delivery":
        delivery = require_dict(record.get("delivery"), "ses record.delivery")
        return _Parsed(
            "delivered", event_time(delivery, "timestamp", "delivery"),
            recipients=[(a, {}) for a in delivery.get("recipients") or []
                        if isinstance(a, str)],
            attributes={"smtp_response": text(delivery.get("smtpResponse")),
                        "processing_time_ms": delivery.get("processingTimeMillis"),
                        "reporting_mta": text(delivery.get("reportingMTA"))})
    if raw_type == "DeliveryDelay":
        delay = require_dict(record.get("deliveryDelay"), "ses record.deliveryDelay")
        return _Parsed(
            "deferred", event_time(delay, "timestamp", "deliveryDelay"),
            recipients=_recipient_list(delay.get("delayedRecipients")),
            attributes={"delay_type": text(delay.get("delayType")),
                        "expiration_time": text(delay.get("expirationTime"))})
    if raw_type == "Bounce":
        return _bounce(require_dict(record.get("bounce"), "ses record.bounce"))
    if raw_type == "Complaint":
        complaint = require_dict(record.get("complaint"), "ses record.complaint")
        return _Parsed(
            "complaint", event_time(complaint, "timestamp", "complaint"),
            recipients=_recipient_list(complaint.get("complainedRecipients")),
            attributes={"feedback_id": text(complaint.get("feedbackId")),
                        "complaint_type": text(complaint.get("complaintFeedbackType")),
                        "complaint_subtype": text(complaint.get("complaintSubType"))})
    if raw_type in ("Open", "Click"):
        key = raw_type.lower()
        payload = require_dict(record.get(key), f"ses record.{key}")
        return _Parsed(
            key if key == "open" else "click", event_time(payload, "timestamp", key),
            per_message=True,
            url=text(payload.get("link")) if key == "click" else None,
            user_agent=text(payload.get("userAgent")), ip=text(payload.get("ipAddress")),
            attributes={"link_tags": payload.get("linkTags") or None})
    if raw_type == "Subscription":
        return _subscription(require_dict(record.get("subscription"),
                                          "ses record.subscription"))
    raise unknown_type(PROVIDER, raw_type)


def _bounce(bounce: dict[str, Any]) -> _Parsed:
    bounce_type = text(bounce.get("bounceType"))
    sub_type = text(bounce.get("bounceSubType"))
    attributes = {"bounce_type": bounce_type, "bounce_subtype": sub_type,
                  "feedback_id": text(bounce.get("feedbackId")),
                  "reporting_mta": text(bounce.get("reportingMTA"))}
    when = event_time(bounce, "timestamp", "bounce")
    recipients = _recipient_list(bounce.get("bouncedRecipients"))
    if bounce_type == "Permanent":
        if sub_type in ("Suppressed", "OnAccountSuppressionList"):
            return _Parsed("dropped", when, recipients, attributes=attributes)
        return _Parsed("bounce", when, recipients, bounce_class="hard", attributes=attributes)
    if bounce_type == "Transient":
        return _Parsed("bounce", when, recipients, bounce_class="soft", attributes=attributes)
    if bounce_type == "Undetermined":
        return _Parsed("bounce", when, recipients, attributes=attributes)
    if bounce_type is None:
        raise ItemError("missing_field", "bounce.bounceType is missing")
    raise ItemError("invalid_field", f"bounce.bounceType {bounce_type!r} is not "
                                     "Permanent, Transient or Undetermined")


def _subscription(sub: dict[str, Any]) -> _Parsed:
    when = event_time(sub, "timestamp", "subscription")
    new = optional_dict(sub.get("newTopicPreferences"))
    attributes: dict[str, Any] = {"contact_list": text(sub.get("contactList"))}
    if new.get("unsubscribeAll") is True:
        return _Parsed("unsubscribe", when, attributes={**attributes,
                                                        "unsubscribe_scope": "global"})
    old_status = {t.get("topicName"): t.get("subscriptionStatus")
                  for t in optional_dict(sub.get("oldTopicPreferences")).get(
                      "topicSubscriptionStatus") or [] if isinstance(t, dict)}
    opted_out = [t.get("topicName") for t in new.get("topicSubscriptionStatus") or []
                 if isinstance(t, dict) and t.get("subscriptionStatus") == "OptOut"
                 and old_status.get(t.get("topicName")) != "OptOut"]
    if opted_out:
        return _Parsed("unsubscribe", when, attributes={
            **attributes, "unsubscribe_scope": "topic", "topics": opted_out})
    raise unknown_type(PROVIDER, "Subscription",
                       "the change opts in or changes nothing, it is not an unsubscribe")


def _recipient_list(entries: Any) -> list[tuple[str | None, dict[str, Any]]]:
    out: list[tuple[str | None, dict[str, Any]]] = []
    for entry in entries or []:
        if isinstance(entry, str):
            out.append((entry, {}))
        elif isinstance(entry, dict):
            out.append((text(entry.get("emailAddress")), {
                "action": text(entry.get("action")),
                "smtp_status": text(entry.get("status")),
                "diagnostic_code": text(entry.get("diagnosticCode"))}))
    return out


def _tags(tags: Any) -> dict[str, Any]:
    """mail.tags maps a name to a list of values; a single value is unwrapped."""
    out: dict[str, Any] = {}
    for name, values in optional_dict(tags).items():
        if isinstance(values, list) and len(values) == 1:
            out[name] = values[0]
        elif values not in (None, []):
            out[name] = values
    return out
