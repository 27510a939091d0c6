"""The canonical EmailEvent model and the provider-independent helpers that build it.

Everything here is pure Python (no Flink imports) so the parsers and their tests run without
a JVM. The field list mirrors avro/EmailEvent.avsc; tests/unit/test_canonical.py checks that
the two stay identical.

Privacy rules implemented here (the normalize step is the only place that sees addresses):

* ``subscriber_id`` is the sender's own id when metadata carries one, else
  ``hmac_sha256(key, address.strip().lower())`` as 64 lower-case hex characters. A metadata
  id that itself looks like an address is hashed the same way, so a sender who uses the
  address as "user id" does not leak it.
* ``redact_addresses`` replaces every address-shaped substring (also ``%40``-encoded, as in
  URL query strings) with ``hmac:<that same 64-hex HMAC>``, so redacted values still join
  with ``subscriber_id``.
* ``mask_ip`` keeps the network, not the host: IPv4 -> /24 (last octet zeroed), IPv6 -> /48
  (the part a provider assigns to a site; the interface and subnet bits are zeroed).
  IPv4-mapped IPv6 addresses are treated as IPv4.
"""

from __future__ import annotations

import calendar
import hashlib
import hmac
import ipaddress
import json
import re
from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from typing import Any
from urllib.parse import unquote

PROVIDERS: tuple[str, ...] = (
    "sendgrid", "mailgun", "ses", "postmark", "sparkpost", "mandrill", "tracker",
)

EVENT_TYPES: tuple[str, ...] = (
    "sent", "delivered", "deferred", "dropped", "bounce", "open", "click",
    "unsubscribe", "complaint", "conversion",
)

# Events caused by a person (or a machine acting for one) on the recipient side: only these
# carry the recipient's IP/user agent, so only these get bot checks and a masked `ip`.
ENGAGEMENT_TYPES: frozenset[str] = frozenset({"open", "click", "unsubscribe", "complaint"})

BOUNCE_CLASSES: tuple[str, ...] = ("hard", "soft")

# The four canonical names whose metadata keys are configurable per provider.
METADATA_NAMES: tuple[str, ...] = ("subscriber_id", "campaign_id", "ab_test_id", "arm")

# Same order as avro/EmailEvent.avsc.
EMAIL_EVENT_FIELDS: tuple[str, ...] = (
    "event_id", "provider", "event_type", "event_time", "received_time", "message_id",
    "subscriber_id", "recipient_domain", "campaign_id", "ab_test_id", "arm", "url",
    "bounce_class", "machine_open", "suspected_bot", "bot_reason", "user_agent", "ip",
    "attributes",
)

_OPTIONAL_STR_FIELDS = (
    "message_id", "recipient_domain", "campaign_id", "ab_test_id", "arm", "url",
    "bounce_class", "bot_reason", "user_agent", "ip",
)

# Plausible event times; anything outside is a unit or parsing mistake, not a real event.
MIN_EVENT_TIME_MS = 946_684_800_000      # 2000-01-01T00:00:00Z
MAX_EVENT_TIME_MS = 4_102_444_800_000    # 2100-01-01T00:00:00Z


def new_event(
    *,
    event_id: str,
    provider: str,
    event_type: str,
    event_time: int,
    received_time: int,
    subscriber_id: str,
    message_id: str | None = None,
    recipient_domain: str | None = None,
    campaign_id: str | None = None,
    ab_test_id: str | None = None,
    arm: str | None = None,
    url: str | None = None,
    bounce_class: str | None = None,
    machine_open: bool | None = None,
    suspected_bot: bool = False,
    bot_reason: str | None = None,
    user_agent: str | None = None,
    ip: str | None = None,
    attributes: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Return a complete EmailEvent dict (every avsc key, avsc order), validating types.

    Raises ValueError/TypeError on a programming mistake; parsers never pass raw input here.
    """
    event: dict[str, Any] = {
        "event_id": event_id,
        "provider": provider,
        "event_type": event_type,
        "event_time": event_time,
        "received_time": received_time,
        "message_id": message_id,
        "subscriber_id": subscriber_id,
        "recipient_domain": recipient_domain,
        "campaign_id": campaign_id,
        "ab_test_id": ab_test_id,
        "arm": arm,
        "url": url,
        "bounce_class": bounce_class,
        "machine_open": machine_open,
        "suspected_bot": suspected_bot,
        "bot_reason": bot_reason,
        "user_agent": user_agent,
        "ip": ip,
        "attributes": dict(attributes or {}),
    }
    _validate(event)
    return event


def _validate(event: Mapping[str, Any]) -> None:
    if event["provider"] not in PROVIDERS:
        raise ValueError(f"provider {event['provider']!r} is not one of {PROVIDERS}")
    if event["event_type"] not in EVENT_TYPES:
        raise ValueError(f"event_type {event['event_type']!r} is not one of {EVENT_TYPES}")
    for name in ("event_id", "subscriber_id"):
        if not isinstance(event[name], str) or not event[name]:
            raise TypeError(f"{name} must be a non-empty str, got {event[name]!r}")
    for name in ("event_time", "received_time"):
        if not isinstance(event[name], int) or isinstance(event[name], bool):
            raise TypeError(f"{name} must be int epoch ms, got {event[name]!r}")
    for name in _OPTIONAL_STR_FIELDS:
        if event[name] is not None and not isinstance(event[name], str):
            raise TypeError(f"{name} must be str or None, got {event[name]!r}")
    if event["bounce_class"] not in (None, *BOUNCE_CLASSES):
        raise ValueError(f"bounce_class {event['bounce_class']!r} is not hard, soft or None")
    if event["machine_open"] not in (None, True, False):
        raise TypeError(f"machine_open must be bool or None, got {event['machine_open']!r}")
    if not isinstance(event["suspected_bot"], bool):
        raise TypeError("suspected_bot must be bool")
    for key, value in event["attributes"].items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise TypeError(f"attributes must map str to str, got {key!r}: {value!r}")


# ---------------------------------------------------------------- ids

def compute_event_id(
    provider: str,
    *,
    provider_event_id: str | None = None,
    message_id: str | None = None,
    subscriber_id: str = "",
    event_type: str = "",
    event_time: int = 0,
    url: str | None = None,
    extra: tuple[str, ...] = (),
) -> str:
    """Deterministic event id: 32 hex chars of SHA-256.

    With a trustworthy provider event id the hash covers only (provider, that id), so the
    same provider event always gets the same id. Otherwise it covers the event's content
    (provider, message id, subscriber, canonical type, event time, url, extra), which is
    identical in every retry of the same webhook. The subscriber is part of the content
    because one message id can cover many recipients (Mailgun batch sends, SES fan-out).
    Content ids therefore change if the HMAC key or the subscriber metadata mapping changes.
    """
    if provider_event_id:
        parts: tuple[str, ...] = ("id", provider, provider_event_id)
    else:
        parts = ("content", provider, message_id or "", subscriber_id, event_type,
                 str(event_time), url or "", *extra)
    # A separator that cannot occur in the parts keeps ("a", "bc") and ("ab", "c") apart.
    digest = hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()
    return digest[:32]


def hmac_address(address: str, key: bytes) -> str:
    """HMAC-SHA256 (hex) of the stripped, lower-cased address: the pseudonymous id."""
    return _hmac_hex(key, address.strip().lower())


@lru_cache(maxsize=16384)
def _hmac_hex(key: bytes, address: str) -> str:
    # Cached because one subscriber's events come in runs; hmac.digest is the one-shot C
    # path. The cache lives only in the worker's memory and holds at most 16,384 entries.
    return hmac.digest(key, address.encode("utf-8"), "sha256").hex()


def derive_subscriber_id(metadata_id: Any, address: str | None, key: bytes) -> str | None:
    """The sender's own id when given (non-empty), else the HMAC of the address.

    Returns None when neither is available; the caller turns that into a dead letter.
    """
    if metadata_id is not None and not isinstance(metadata_id, bool):
        text = stringify(metadata_id).strip()
        if text:
            # A sender that uses the address as its user id must not leak it.
            if looks_like_address(text):
                return hmac_address(extract_address(text) or text, key)
            return text
    clean = extract_address(address) if address else None
    if clean:
        return hmac_address(clean, key)
    return None


def extract_address(value: str | None) -> str | None:
    """The bare addr-spec from 'a@b', ' A@B ' or 'Name <a@b>'; None if there is no '@'."""
    if not isinstance(value, str):
        return None
    text = value.strip()
    if "<" in text and text.endswith(">"):
        text = text[text.rindex("<") + 1:-1].strip()
    if "@" not in text or text.startswith("@") or text.endswith("@"):
        return None
    return text


def recipient_domain(address: str | None) -> str | None:
    """Lower-cased domain after the last '@' (IDNA left as given); None if not an address."""
    clean = extract_address(address)
    if not clean:
        return None
    domain = clean.rsplit("@", 1)[1].strip().strip(".").lower()
    return domain or None


# ---------------------------------------------------------------- address redaction

# Local part: the characters seen in real mailbox names (plus %2B, an encoded '+').
# '=' and '&' are excluded so "?email=a@b.c" redacts only "a@b.c".
_ADDRESS_RE = re.compile(
    r"(?:[\w.+-]|%2[bB])+(?:@|%40)(?:[\w-]+\.)+[\w-]{2,}",
    re.UNICODE,
)


def looks_like_address(text: str) -> bool:
    return bool(_ADDRESS_RE.search(text))


def may_hold_address(text: str) -> bool:
    """False when ``text`` cannot contain an address, plain or percent-encoded (nor will
    its casefold(): case mappings make letters, never '@', '%' or digits)."""
    return "@" in text or "%40" in text


def redact_addresses(text: str, key: bytes) -> str:
    """Replace every address-shaped substring with ``hmac:<hex>`` of the decoded address."""
    if not may_hold_address(text):
        return text

    def _sub(match: re.Match[str]) -> str:
        return "hmac:" + hmac_address(unquote(match.group(0)), key)

    return _ADDRESS_RE.sub(_sub, text)


# ---------------------------------------------------------------- values

def stringify(value: Any) -> str:
    """Attribute value as a string: strings unchanged, everything else compact JSON."""
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)


# ---------------------------------------------------------------- time

class TimestampError(ValueError):
    """A timestamp that cannot be turned into UTC epoch milliseconds."""


_ISO_RE = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d{1,9}))?)?"
    r"\s*(Z|z|[+-]\d{2}(?::?\d{2})?)?$"
)


def parse_timestamp(value: Any) -> int:
    """UTC epoch milliseconds from an epoch number/numeric string or an ISO-8601 string.

    Epoch units are inferred from magnitude (seconds, ms, µs or ns), because providers mix
    them (SendGrid documents seconds but has sent ms). Fractions below 1 ms are truncated.
    ISO strings may carry up to 9 fraction digits and a Z or ±hh:mm offset; a naive string
    is read as UTC (see ``is_naive_iso`` to flag it).
    """
    if isinstance(value, bool) or value is None:
        raise TimestampError(f"not a timestamp: {value!r}")
    if type(value) is int or (isinstance(value, str) and value.isascii() and value.isdigit()):
        # The common case (an integer epoch) without Decimal; same result as _epoch_ms.
        ms = _int_epoch_ms(int(value), value)
    elif isinstance(value, int | float):
        ms = _epoch_ms(Decimal(str(value)), value)
    elif isinstance(value, str):
        text = value.strip()
        if not text:
            raise TimestampError("empty timestamp string")
        if text[4:5] == "-":  # a date (yyyy-): skip Decimal, whose refusal is costly
            ms = _iso_ms(text)
        else:
            try:
                number = Decimal(text)
            except InvalidOperation:
                ms = _iso_ms(text)
            else:
                ms = _epoch_ms(number, value)
    else:
        raise TimestampError(f"not a timestamp: {value!r}")
    if not MIN_EVENT_TIME_MS <= ms < MAX_EVENT_TIME_MS:
        raise TimestampError(f"timestamp {value!r} is outside 2000..2100")
    return ms


def _int_epoch_ms(number: int, original: Any) -> int:
    if number <= 0:
        raise TimestampError(f"not a positive finite epoch: {original!r}")
    if number < 10 ** 11:
        return number * 1000
    if number < 10 ** 14:
        return number
    if number < 10 ** 17:
        return number // 1000
    return number // 1_000_000


def _epoch_ms(number: Decimal, original: Any) -> int:
    if not number.is_finite() or number <= 0:
        raise TimestampError(f"not a positive finite epoch: {original!r}")
    magnitude = abs(number)
    if magnitude < Decimal(10) ** 11:
        ms = number * 1000
    elif magnitude < Decimal(10) ** 14:
        ms = number
    elif magnitude < Decimal(10) ** 17:
        ms = number / 1000
    else:
        ms = number / 1_000_000
    return int(ms)  # int() truncates toward zero; values are positive


def _iso_ms(text: str) -> int:
    match = _ISO_RE.match(text)
    if not match:
        raise TimestampError(f"unrecognised timestamp format: {text!r}")
    year, month, day, hour, minute = (int(match.group(i)) for i in range(1, 6))
    second = int(match.group(6) or 0)
    fraction = (match.group(7) or "").ljust(3, "0")[:3]
    try:
        # datetime validates the calendar (month 13, Feb 30) for us.
        datetime(year, month, day, hour, minute, second)
    except ValueError as exc:
        raise TimestampError(f"invalid date/time in {text!r}: {exc}") from None
    seconds = calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0))
    zone = match.group(8)
    if zone and zone not in ("Z", "z"):
        sign = -1 if zone[0] == "-" else 1
        digits = zone[1:].replace(":", "")
        hours, minutes = int(digits[:2]), int(digits[2:4] or 0)
        if hours > 23 or minutes > 59:
            raise TimestampError(f"invalid UTC offset in {text!r}")
        seconds -= sign * (hours * 3600 + minutes * 60)
    return seconds * 1000 + int(fraction)


def is_naive_iso(value: Any) -> bool:
    """True for an ISO date-time string without a zone (read as UTC, but worth flagging)."""
    if not isinstance(value, str):
        return False
    match = _ISO_RE.match(value.strip())
    return bool(match) and match.group(8) is None


# ---------------------------------------------------------------- ip

def parse_ip(value: Any) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The client IP from a header-like string ('a, b' lists, ports, zone ids); None if bad."""
    if not isinstance(value, str):
        return None
    text = value.split(",")[0].strip()
    if text.startswith("["):  # "[v6]:port"
        text = text[1:].split("]")[0]
    elif text.count(":") == 1:  # "v4:port"
        text = text.split(":")[0]
    text = text.split("%")[0]
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def mask_ip(value: Any) -> str | None:
    """IPv4 -> a.b.c.0 (/24); IPv6 -> its /48 network address; None if not an IP."""
    if isinstance(value, str):
        # Plain dotted IPv4 without the ipaddress module, which cost ~50 µs per call.
        octets = value.strip().split(".")
        if len(octets) == 4 and all(_is_octet(o) for o in octets):
            return f"{octets[0]}.{octets[1]}.{octets[2]}.0"
    ip = parse_ip(value)
    if ip is None:
        return None
    prefix = 24 if ip.version == 4 else 48
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False).network_address)


def _is_octet(text: str) -> bool:
    # ipaddress refuses leading zeros ("01"), so they take the slow path to be refused.
    return (0 < len(text) <= 3 and text.isascii() and text.isdigit()
            and (text == "0" or text[0] != "0") and int(text) <= 255)
