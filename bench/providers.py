"""Webhook bodies the way each ESP sends them, for the benchmark's load generator.

Shapes follow tests/fixtures/webhooks/ (one realistic body per provider and event type):
SendGrid, SparkPost and Mandrill post batches, the others one event per request, SES
wraps its record in an SNS notification. Every body carries the sender metadata the
normalize job maps (subscriber_id, campaign_id, ab_test_id, arm) where that provider
puts custom data, so the Java baseline can extract the same fields with JSON paths.
Signatures are not added: the bench writes to the raw topic behind the gateway."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import quote

PROVIDERS = ("sendgrid", "mailgun", "ses", "postmark", "sparkpost", "mandrill", "tracker")
# Providers that post several events per request, with the largest batch the bench makes.
BATCH_SIZE = {"sendgrid": 8, "sparkpost": 6, "mandrill": 4}
# The tracker (own pixel and link wrapper) only sees engagement.
TRACKER_TYPES = ("open", "click", "unsubscribe")


@dataclass(frozen=True)
class Event:
    """One provider event as the generator plans it (canonical type, times in ms)."""

    provider: str
    event_type: str          # canonical: sent, delivered, deferred, bounce, open, ...
    event_time: int
    received_time: int
    provider_id: str
    message_id: str
    email: str
    subscriber_id: str
    campaign_id: str
    ab_test_id: str | None
    arm: str | None
    url: str | None = None
    bounce_class: str | None = None
    machine_open: bool = False
    user_agent: str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64)"
    ip: str = "198.51.100.23"


def _meta(e: Event) -> dict[str, str]:
    meta = {"subscriber_id": e.subscriber_id, "campaign_id": e.campaign_id}
    if e.ab_test_id:
        meta |= {"ab_test_id": e.ab_test_id, "arm": e.arm or ""}
    return meta


def _iso(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[
        :-3] + "Z"


def _sendgrid(e: Event) -> dict:
    kind = {"sent": "processed", "complaint": "spamreport"}.get(e.event_type, e.event_type)
    item = {"email": e.email, "timestamp": e.event_time // 1000, "event": kind,
            "sg_event_id": e.provider_id, "sg_message_id": f"{e.message_id}.filter0001",
            **_meta(e)}
    if e.event_type == "bounce":
        item |= {"type": "bounce" if e.bounce_class == "hard" else "blocked",
                 "status": "5.1.1", "reason": "550 5.1.1 user unknown"}
    if e.event_type in ("open", "click"):
        item |= {"useragent": e.user_agent, "ip": e.ip}
    if e.event_type == "open":
        item["sg_machine_open"] = e.machine_open
    if e.url:
        item["url"] = e.url
    return item


def _mailgun(e: Event) -> dict:
    kind = {"sent": "accepted", "open": "opened", "click": "clicked",
            "unsubscribe": "unsubscribed", "complaint": "complained",
            "bounce": "failed", "deferred": "failed"}.get(e.event_type, e.event_type)
    data: dict = {"event": kind, "id": e.provider_id, "timestamp": e.event_time / 1000,
                  "recipient": e.email, "recipient-domain": e.email.split("@")[1],
                  "user-variables": _meta(e),
                  "message": {"headers": {"message-id": f"{e.message_id}@mg.example.com"}}}
    if kind == "failed":
        permanent = e.event_type == "bounce" and e.bounce_class == "hard"
        data |= {"severity": "permanent" if permanent else "temporary",
                 "reason": "bounce" if e.event_type == "bounce" else "generic",
                 "delivery-status": {"code": 550 if permanent else 421,
                                     "message": "mailbox unavailable"}}
        if e.event_type == "bounce" and not permanent:
            data["severity"] = "temporary"
    if e.event_type in ("open", "click"):
        data |= {"ip": e.ip, "client-info": {"client-type": "browser",
                                             "user-agent": e.user_agent}}
    if e.url:
        data["url"] = e.url
    return {"signature": {"timestamp": str(e.received_time // 1000), "token": e.provider_id,
                          "signature": "0" * 64}, "event-data": data}


def _ses(e: Event) -> dict:
    mail = {"timestamp": _iso(e.event_time - 1000), "messageId": e.message_id,
            "source": "news@mail.example.com", "destination": [e.email],
            "tags": {k: [v] for k, v in _meta(e).items()}}
    when = _iso(e.event_time)
    kind, payload_key, payload = {
        "sent": ("Send", "send", {}),
        "delivered": ("Delivery", "delivery", {"timestamp": when, "recipients": [e.email],
                                               "smtpResponse": "250 ok"}),
        "deferred": ("DeliveryDelay", "deliveryDelay", {
            "timestamp": when, "delayType": "TransientCommunicationFailure",
            "delayedRecipients": [{"emailAddress": e.email}]}),
        "bounce": ("Bounce", "bounce", {
            "timestamp": when,
            "bounceType": "Permanent" if e.bounce_class == "hard" else "Transient",
            "bounceSubType": "General", "bouncedRecipients": [{"emailAddress": e.email}]}),
        "complaint": ("Complaint", "complaint", {
            "timestamp": when, "complainedRecipients": [{"emailAddress": e.email}]}),
        "open": ("Open", "open", {"timestamp": when, "ipAddress": e.ip,
                                  "userAgent": e.user_agent}),
        "click": ("Click", "click", {"timestamp": when, "ipAddress": e.ip,
                                     "userAgent": e.user_agent, "link": e.url}),
        "unsubscribe": ("Subscription", "subscription", {"timestamp": when}),
    }[e.event_type]
    if kind == "Send":
        mail["timestamp"] = when
    record = {"eventType": kind, "mail": mail, payload_key: payload}
    return {"Type": "Notification", "MessageId": e.provider_id,
            "TopicArn": "arn:aws:sns:eu-west-1:111122223333:bench",
            "Message": json.dumps(record, separators=(",", ":")),
            "Timestamp": _iso(e.received_time), "SignatureVersion": "2",
            "Signature": "bench", "SigningCertURL": "https://sns.example/cert.pem"}


def _postmark(e: Event) -> dict:
    when = _iso(e.event_time)
    base = {"MessageID": e.message_id, "Recipient": e.email, "Metadata": _meta(e),
            "MessageStream": "outbound", "Tag": e.campaign_id}
    if e.event_type == "delivered":
        return base | {"RecordType": "Delivery", "DeliveredAt": when, "Details": "250 ok"}
    if e.event_type == "bounce":
        return base | {"RecordType": "Bounce", "BouncedAt": when, "ID": e.provider_id,
                       "Type": "HardBounce" if e.bounce_class == "hard" else "SoftBounce",
                       "Email": e.email}
    if e.event_type == "open":
        return base | {"RecordType": "Open", "ReceivedAt": when, "FirstOpen": True,
                       "UserAgent": e.user_agent, "Geo": {"IP": e.ip},
                       "Client": {"Name": "Apple Mail" if e.machine_open else "Chrome"}}
    if e.event_type == "click":
        return base | {"RecordType": "Click", "ReceivedAt": when, "OriginalLink": e.url,
                       "UserAgent": e.user_agent, "Geo": {"IP": e.ip}}
    if e.event_type == "complaint":
        return base | {"RecordType": "SpamComplaint", "BouncedAt": when,
                       "ID": e.provider_id, "Email": e.email, "Type": "SpamComplaint"}
    if e.event_type == "unsubscribe":
        return base | {"RecordType": "SubscriptionChange", "ChangedAt": when,
                       "SuppressSending": True, "SuppressionReason": "ManualSuppression"}
    raise ValueError(f"postmark does not post {e.event_type}")


def _sparkpost(e: Event) -> dict:
    kind = {"sent": "injection", "delivered": "delivery", "deferred": "delay",
            "complaint": "spam_complaint", "unsubscribe": "list_unsubscribe"}.get(
        e.event_type, e.event_type)
    cls = {"open": "track_event", "click": "track_event",
           "unsubscribe": "unsubscribe_event"}.get(e.event_type, "message_event")
    event = {"type": kind, "event_id": e.provider_id, "timestamp": str(e.event_time // 1000),
             "message_id": e.message_id, "rcpt_to": e.email,
             "campaign_id": e.campaign_id, "rcpt_meta": _meta(e)}
    if e.event_type == "bounce":
        event["bounce_class"] = "10" if e.bounce_class == "hard" else "21"
    if e.event_type in ("open", "click"):
        event |= {"user_agent": e.user_agent, "ip_address": e.ip}
    if e.event_type == "open":
        event["is_prefetched"] = e.machine_open
    if e.url:
        event["target_link_url"] = e.url
    return {"msys": {cls: event}}


def _mandrill(e: Event) -> dict:
    kind = {"sent": "send", "deferred": "deferral", "complaint": "spam",
            "unsubscribe": "unsub"}.get(e.event_type, e.event_type)
    if e.event_type == "bounce":
        kind = "hard_bounce" if e.bounce_class == "hard" else "soft_bounce"
    event = {"event": kind, "ts": e.event_time // 1000, "_id": e.provider_id,
             "msg": {"ts": e.event_time // 1000 - 60, "_id": e.message_id, "email": e.email,
                     "state": "sent", "metadata": _meta(e)}}
    if e.event_type in ("open", "click"):
        event |= {"ip": e.ip, "user_agent": e.user_agent}
    if e.url:
        event["url"] = e.url
    return event


def _tracker(e: Event) -> dict:
    hit = {"v": 1, "type": e.event_type, "hit_id": e.provider_id, "ts": e.event_time,
           "message_id": e.message_id, **_meta(e), "user_agent": e.user_agent, "ip": e.ip}
    if e.url:
        hit["url"] = e.url
    return hit


_ITEM = {"sendgrid": _sendgrid, "mailgun": _mailgun, "ses": _ses, "postmark": _postmark,
         "sparkpost": _sparkpost, "mandrill": _mandrill, "tracker": _tracker}


def body(provider: str, events: Sequence[Event]) -> tuple[bytes, str]:
    """(HTTP body, content type) of one request carrying `events` (one unless the provider
    batches)."""
    items = [_ITEM[provider](e) for e in events]
    if provider == "sendgrid":
        # Real SendGrid bodies put CRLF after each array element.
        return ("[" + ",\r\n".join(json.dumps(i) for i in items) + "]\r\n").encode(), \
            "application/json"
    if provider == "sparkpost":
        return json.dumps(items).encode(), "application/json"
    if provider == "mandrill":
        return ("mandrill_events=" + quote(json.dumps(items), safe="")).encode(), \
            "application/x-www-form-urlencoded"
    if len(items) != 1:
        raise ValueError(f"{provider} posts one event per request")
    content_type = "text/plain; charset=UTF-8" if provider == "ses" else "application/json"
    return json.dumps(items[0]).encode(), content_type
