"""SparkPost (Bird) event webhooks: a JSON array of ``{"msys": {"<class>": {event}}}``.

Mapping (on ``type``, not on the class key, since a generation_failure was captured under
message_event): injection->sent, delivery->delivered, delay->deferred,
bounce/out_of_band->by ``bounce_class`` (below), policy_rejection, generation_failure,
generation_rejection->dropped, spam_complaint->complaint, open/amp_open->open,
click/amp_click->click, list_unsubscribe/link_unsubscribe->unsubscribe.
initial_open/amp_initial_open are unknown_event_type: they repeat the same render as
``open`` (the pixel at the top), so counting both double-counts. relay_* (inbound) and
anything else: unknown_event_type.

``bounce_class`` codes: hard 10, 30, 90 -> bounce hard; soft 20-24, 40, 60, 70, 100 and
block 50-54 -> bounce soft (the doc calls soft/block "usually temporary"); 25 (admin:
SparkPost policy, nothing sent) -> dropped; 80 (subscribe auto-reply) -> bounce soft;
1 (undetermined) and unknown codes -> bounce with bounce_class null.

Traps handled:
* ``{"msys": {}}`` is the validation ping: skipped; a body of only pings gives the control
  result ``sparkpost_ping``.
* ``timestamp`` is a string of epoch seconds, but ISO on some events.
* ``event_id`` is a large integer or a UUID depending on the event: kept as a string and
  trusted (SparkPost documents it as the dedup key).
* The message id is ``message_id``, not ``transmission_id``: engagement on messages older
  than 60 days loses ``transmission_id``, ``campaign_id`` and ``rcpt_meta``, but keeps
  ``message_id``. ``transmission_id`` is kept as an attribute.
* ``rcpt_meta`` is the sender metadata; ``campaign_id`` and ``ab_test_id``/
  ``ab_test_version`` are the native fallbacks for campaign_id/ab_test_id/arm.
* ``is_prefetched`` (reported by Bird, unverified for these payloads) is used as the
  native machine-open flag when present.
"""

from __future__ import annotations

from typing import Any

from udfs.parsers import (
    Batch,
    Draft,
    ItemError,
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

PROVIDER = "sparkpost"

EVENT_TYPES = {
    "injection": "sent",
    "delivery": "delivered",
    "delay": "deferred",
    "bounce": "bounce",
    "out_of_band": "bounce",
    "policy_rejection": "dropped",
    "generation_failure": "dropped",
    "generation_rejection": "dropped",
    "spam_complaint": "complaint",
    "open": "open",
    "amp_open": "open",
    "click": "click",
    "amp_click": "click",
    "list_unsubscribe": "unsubscribe",
    "link_unsubscribe": "unsubscribe",
}

HARD_CLASSES = frozenset({10, 30, 90})
SOFT_CLASSES = frozenset({20, 21, 22, 23, 24, 40, 60, 70, 80, 100, 50, 51, 52, 53, 54})
DROPPED_CLASSES = frozenset({25})

PASSTHROUGH = (
    "transmission_id", "template_id", "template_version", "subaccount_id", "ip_pool",
    "sending_ip", "mailbox_provider", "injection_time", "num_retries", "reason",
    "raw_reason", "error_code", "fbtype", "report_by", "target_link_name", "routing_domain",
    "delv_method", "initial_pixel", "amp_enabled", "queue_time",
)


def split(text_body: str, content_type: str | None) -> Batch:
    items = json_items(text_body)
    real = [item for item in items if not _is_ping(item.value)]
    if items and not real:
        return Batch([], control="sparkpost_ping")
    return Batch(real)


def _is_ping(value: Any) -> bool:
    return isinstance(value, dict) and value.get("msys") == {}


def parse_item(value: Any, ctx: ParseContext) -> list[Draft]:
    wrapper = require_dict(value, "sparkpost item")
    if "msys" not in wrapper:
        raise ItemError("missing_field", "sparkpost item has no 'msys' wrapper")
    msys = require_dict(wrapper["msys"], "sparkpost msys")
    if len(msys) != 1:
        raise ItemError("invalid_format",
                        f"sparkpost msys must hold exactly one event class, got {sorted(msys)}")
    event_class, event = next(iter(msys.items()))
    event = require_dict(event, f"msys.{event_class}")
    raw_type = require_text(event, "type", f"msys.{event_class}")
    canonical = EVENT_TYPES.get(raw_type)
    if canonical is None:
        detail = ("initial_open repeats the open of the same render"
                  if raw_type in ("initial_open", "amp_initial_open") else "")
        raise unknown_type(PROVIDER, raw_type, detail)

    attributes: dict[str, Any] = {key: event[key] for key in PASSTHROUGH if key in event}
    attributes.update({
        "provider_event_id": text(event.get("event_id")),
        "event_class": event_class,
        "tags": event.get("rcpt_tags") or None,
        "geo_country": text(optional_dict(event.get("geo_ip")).get("country")),
    })
    bounce_class = None
    if canonical == "bounce":
        canonical, bounce_class = _bounce(event, attributes)
        if raw_type == "out_of_band":
            attributes["delayed_bounce"] = True
    if canonical == "unsubscribe":
        attributes["unsubscribe_scope"] = "global"

    machine_open = flag(event.get("is_prefetched")) if canonical == "open" else None
    event_id = text(event.get("event_id"))
    return [Draft(
        event_type=canonical,
        provider_type=raw_type,
        event_time=event_time(event, "timestamp", f"msys.{event_class}"),
        address=text(event.get("rcpt_to")) or text(event.get("raw_rcpt_to")),
        metadata=optional_dict(event.get("rcpt_meta")),
        native={
            "campaign_id": text(event.get("campaign_id")),
            "ab_test_id": text(event.get("ab_test_id")),
            "arm": text(event.get("ab_test_version")),
        },
        message_id=text(event.get("message_id")),
        url=text(event.get("target_link_url")) if canonical == "click" else None,
        bounce_class=bounce_class,
        native_machine_open=machine_open,
        user_agent=text(event.get("user_agent")),
        ip=text(event.get("ip_address")),
        trusted_event_id=event_id,
        attributes=attributes,
    )]


def _bounce(event: dict[str, Any], attributes: dict[str, Any]) -> tuple[str, str | None]:
    raw = event.get("bounce_class")
    try:
        code = int(raw) if raw is not None and not isinstance(raw, bool) else None
    except (TypeError, ValueError):
        code = None
    attributes["bounce_code"] = code if code is not None else text(raw)
    if code in HARD_CLASSES:
        return "bounce", "hard"
    if code in SOFT_CLASSES:
        return "bounce", "soft"
    if code in DROPPED_CLASSES:
        return "dropped", None
    return "bounce", None
