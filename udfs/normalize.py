"""The normalize step: one raw webhook body -> canonical EmailEvent dicts + dead letters.

``normalize()`` is what the Flink job calls for each ``email.raw`` record. It never raises
on bad input: each failure becomes a ``Rejected`` (dead-letter code, message, the bytes to
replay), and one bad item in a batch never loses the good ones.

Dead-letter codes:

===================  ===============================================================
empty_body           the body is empty or only whitespace
invalid_encoding     not UTF-8 (body, percent-encoded form value, Firehose record)
invalid_json         not JSON (NaN/Infinity refused too)
invalid_format       JSON of the wrong shape (e.g. not an object, two msys classes,
                     an unsupported SNS type, legacy Mailgun form posts)
unknown_provider     the provider name is not one we parse
unknown_event_type   a provider event type with no canonical mapping (also the
                     deliberately unmapped ones: resubscribe, auto-replies, inbound)
missing_field        a required field is absent (event type, time, recipient, …)
invalid_field        a field is present but unusable (wrong type, unknown enum value)
invalid_timestamp    the event time cannot be parsed or is outside 2000..2100
internal_error       a bug in a parser; the message names the exception
===================  ===============================================================

``Rejected.raw`` is the whole body when the body itself is bad, else the failing item as
compact JSON, which the same provider's parser accepts as a body on its own.

Privacy rule: no raw email address leaves this module in an event. ``subscriber_id`` is
the sender's id or an HMAC of the address (see ``udfs.canonical``); parsers never copy
address fields into attributes; and as a last line of defence every address-shaped
substring of ``attributes`` (keys and values), ``url``, ``user_agent``, ``campaign_id``,
``ab_test_id`` and ``arm`` is replaced by ``hmac:<hex>``, and the recipient's own address
is replaced wherever it occurs (also in ``message_id`` and ``rfc_message_id``, which are
otherwise left alone because Message-IDs look like addresses).

Attributes (all values strings, non-strings as compact JSON):
``provider_event_type`` (always: the provider's own type, e.g. "group_unsubscribe"),
``meta.<key>`` for every sender metadata key not used for subscriber/campaign/A-B/arm,
and provider extras with shared names where they mean the same thing:
``provider_event_id``, ``transport_id`` (Mailgun token, SNS MessageId), ``tags``,
``rfc_message_id``, ``sending_ip``, ``geo_country``, ``unsubscribe_scope``, ``bounce_type``,
``smtp_response``/``smtp_status``/``reason``, ``delayed_bounce``, ``naive_time``, and
provider-specific ones documented in each parser.

Command: ``python -m udfs.normalize --provider P [--content-type T] FILE`` prints one JSON
object per line: each event exactly as written to ``email.events``, and each dead letter
as ``{"dead_letter": true, "error": code, "message": text, "provider": P}``. Control
results go to stderr. Exit status 0 whatever the input.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from types import ModuleType
from typing import Any

from udfs.bots import detect_bot, resolve_machine_open
from udfs.canonical import (
    ENGAGEMENT_TYPES,
    METADATA_NAMES,
    compute_event_id,
    derive_subscriber_id,
    extract_address,
    hmac_address,
    mask_ip,
    may_hold_address,
    new_event,
    recipient_domain,
    redact_addresses,
    stringify,
)
from udfs.parsers import (
    Draft,
    ItemError,
    ParseContext,
    mailgun,
    mandrill,
    postmark,
    sendgrid,
    ses,
    sparkpost,
    tracker,
)

PARSERS: dict[str, ModuleType] = {
    "sendgrid": sendgrid,
    "mailgun": mailgun,
    "ses": ses,
    "postmark": postmark,
    "sparkpost": sparkpost,
    "mandrill": mandrill,
    "tracker": tracker,
}

DEAD_LETTER_CODES: tuple[str, ...] = (
    "empty_body", "invalid_encoding", "invalid_json", "invalid_format", "unknown_provider",
    "unknown_event_type", "missing_field", "invalid_field", "invalid_timestamp",
    "internal_error",
)

# Message-ID values look like addresses; only the recipient's own address is removed there.
_ID_ATTRIBUTES = frozenset({"rfc_message_id"})


@dataclass(frozen=True)
class NormalizeSettings:
    hmac_key: bytes
    # per provider: canonical name -> metadata key; canonical names are subscriber_id,
    # campaign_id, ab_test_id, arm; a name not given maps to itself.
    metadata_fields: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    # fields_for() of every provider, built once (it was looked up per event).
    _fields: dict[str, dict[str, str]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Misconfiguration is a deployment error, so it fails loudly here, not per record.
        if not isinstance(self.hmac_key, bytes) or not self.hmac_key:
            raise ValueError("NormalizeSettings.hmac_key must be non-empty bytes")
        for provider, mapping in self.metadata_fields.items():
            if provider not in PARSERS:
                raise ValueError(f"metadata_fields: unknown provider {provider!r}")
            for name, key in mapping.items():
                if name not in METADATA_NAMES:
                    raise ValueError(f"metadata_fields.{provider}: {name!r} is not one of "
                                     f"{METADATA_NAMES}")
                if not isinstance(key, str) or not key:
                    raise ValueError(f"metadata_fields.{provider}.{name} must be a "
                                     "non-empty string")
        object.__setattr__(self, "_fields", {
            provider: {name: self.metadata_fields.get(provider, {}).get(name, name)
                       for name in METADATA_NAMES}
            for provider in PARSERS})

    def fields_for(self, provider: str) -> dict[str, str]:
        """canonical name -> metadata key for one provider, defaults filled in (shared:
        do not modify)."""
        return self._fields[provider]

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> NormalizeSettings:
        """From the ``normalize`` section of ``settings.load()``."""
        section = config.get("normalize", config)
        key = section["hmac_key"]
        return cls(hmac_key=key.encode("utf-8") if isinstance(key, str) else key,
                   metadata_fields=section.get("metadata_fields") or {})


@dataclass(frozen=True)
class Rejected:
    code: str        # machine-readable, one of DEAD_LETTER_CODES
    message: str     # human-readable, names the field/value
    raw: bytes       # the whole body if the body itself is bad, else that one item


@dataclass(frozen=True)
class Normalized:
    events: list[dict[str, Any]]      # each dict has exactly the EmailEvent.avsc keys
    rejected: list[Rejected]
    control: str | None = None        # e.g. "sns_subscription_confirmation"


def normalize(provider: str, body: bytes, content_type: str | None, received_time: int,
              settings: NormalizeSettings) -> Normalized:
    """Parse one raw webhook body of ``provider`` into events and dead letters."""
    raw = _as_bytes(body)
    try:
        return _normalize(provider, raw, content_type, int(received_time), settings)
    except Exception as exc:  # never raise into the job: a bug becomes a dead letter
        return Normalized([], [Rejected("internal_error", _describe(exc), raw)])


def _normalize(provider: str, raw: bytes, content_type: str | None, received_time: int,
               settings: NormalizeSettings) -> Normalized:
    name = provider.strip().lower() if isinstance(provider, str) else ""
    parser = PARSERS.get(name)
    if parser is None:
        return _body_rejected("unknown_provider",
                              f"provider {provider!r} is not one of {sorted(PARSERS)}", raw)
    try:
        text = raw.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        return _body_rejected("invalid_encoding", f"{name} body is not UTF-8: {exc}", raw)
    try:
        batch = parser.split(text, content_type)
    except ItemError as exc:
        return _body_rejected(exc.code, f"{name}: {exc.message}", raw)

    ctx = ParseContext(provider=name, received_time=received_time)
    events: list[dict[str, Any]] = []
    rejected: list[Rejected] = []
    for item in batch.items:
        if item.error is not None:
            rejected.append(Rejected(item.error.code, f"{name}: {item.error.message}",
                                     item.raw))
            continue
        try:
            drafts = parser.parse_item(item.value, ctx)
        except ItemError as exc:
            rejected.append(Rejected(exc.code, f"{name}: {exc.message}", item.raw))
            continue
        except Exception as exc:
            rejected.append(Rejected("internal_error", f"{name}: {_describe(exc)}", item.raw))
            continue
        for draft in drafts:
            try:
                events.append(_finish(draft, name, received_time, settings))
            except ItemError as exc:
                rejected.append(Rejected(exc.code, f"{name}: {exc.message}", item.raw))
            except Exception as exc:
                rejected.append(Rejected("internal_error", f"{name}: {_describe(exc)}",
                                         item.raw))
    return Normalized(events, rejected, batch.control)


def _finish(draft: Draft, provider: str, received_time: int,
            settings: NormalizeSettings) -> dict[str, Any]:
    key = settings.hmac_key
    fields = settings.fields_for(provider)
    mapped: dict[str, str] = {}
    consumed: set[str] = set()
    for name, metadata_key in fields.items():
        if metadata_key in draft.metadata:
            consumed.add(metadata_key)
            value = draft.metadata[metadata_key]
            if value not in (None, "") and not isinstance(value, bool):
                mapped[name] = stringify(value).strip()

    def pick(name: str) -> str | None:
        return mapped.get(name) or draft.native.get(name) or None

    subscriber_id = derive_subscriber_id(pick("subscriber_id"), draft.address, key)
    if subscriber_id is None:
        if draft.address:
            raise ItemError("invalid_field", "the recipient is not an email address and "
                                             f"no '{fields['subscriber_id']}' metadata is set")
        raise ItemError("missing_field", "no recipient address and no "
                                         f"'{fields['subscriber_id']}' metadata")

    address = extract_address(draft.address)
    redact = _redactor(address, key)
    attributes: dict[str, str] = {}
    for meta_key, value in draft.metadata.items():
        if meta_key not in consumed and value is not None:
            attributes[f"meta.{meta_key}"] = stringify(value)
    for attr_key, value in draft.attributes.items():
        if value is not None and value != [] and value != {}:
            attributes[attr_key] = stringify(value)
    attributes["provider_event_type"] = draft.provider_type
    attributes = {redact(k): (redact(v, generic=False) if k in _ID_ATTRIBUTES else redact(v))
                  for k, v in attributes.items()}

    event_type = draft.event_type
    native_reason = draft.native_bot_reason or (
        "native_machine_open" if draft.native_machine_open is True else None)
    suspected_bot, bot_reason = detect_bot(event_type, draft.user_agent, draft.ip,
                                           native_reason=native_reason)
    native_domain = draft.native.get("recipient_domain")
    return new_event(
        event_id=compute_event_id(
            provider, provider_event_id=draft.trusted_event_id, message_id=draft.message_id,
            subscriber_id=subscriber_id, event_type=event_type, event_time=draft.event_time,
            url=draft.url),
        provider=provider,
        event_type=event_type,
        event_time=draft.event_time,
        received_time=received_time,
        message_id=redact(draft.message_id, generic=False),
        subscriber_id=subscriber_id,
        recipient_domain=recipient_domain(address) or (native_domain.lower()
                                                       if native_domain else None),
        campaign_id=redact(pick("campaign_id")),
        ab_test_id=redact(pick("ab_test_id")),
        arm=redact(pick("arm")),
        url=redact(draft.url),
        bounce_class=draft.bounce_class if event_type == "bounce" else None,
        machine_open=resolve_machine_open(event_type, draft.user_agent, draft.ip,
                                          draft.native_machine_open),
        suspected_bot=suspected_bot,
        bot_reason=bot_reason,
        user_agent=redact(draft.user_agent),
        ip=mask_ip(draft.ip) if event_type in ENGAGEMENT_TYPES else None,
        attributes=attributes,
    )


@lru_cache(maxsize=4096)
def _own_address_pattern(address: str) -> re.Pattern[str]:
    return re.compile(re.escape(address), re.IGNORECASE)


def _redactor(address: str | None, key: bytes) -> Any:
    # The pattern (compiled and cached) and the address's HMAC are made only for a value
    # that holds the address, which casefold() finds first: compiling per event was a
    # third of the parse time, and hashing each address up front ~12 % of a worker's
    # (most events take the subscriber id from metadata, so nothing else hashes it).
    own = address.casefold() if address else None

    def redact(value: str | None, generic: bool = True) -> str | None:
        if value is None or not may_hold_address(value):
            return value
        if own is not None and own in value.casefold():
            value = _own_address_pattern(address).sub("hmac:" + hmac_address(address, key),
                                                      value)
        return redact_addresses(value, key) if generic else value

    return redact


def _body_rejected(code: str, message: str, raw: bytes) -> Normalized:
    return Normalized([], [Rejected(code, message, raw)])


def _as_bytes(body: Any) -> bytes:
    if isinstance(body, bytes):
        return body
    if isinstance(body, bytearray | memoryview):
        return bytes(body)
    if isinstance(body, str):
        return body.encode("utf-8")
    return b""


def _describe(exc: BaseException) -> str:
    return f"unexpected {type(exc).__name__}: {exc}"


# ---------------------------------------------------------------- command line

def _settings_from_project_config(config_path: str | None) -> NormalizeSettings:
    from settings import load  # only the command needs the YAML config

    return NormalizeSettings.from_config(load(config_path))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m udfs.normalize",
        description="Normalize one raw webhook body; print events and dead letters as JSON "
                    "lines.")
    parser.add_argument("--provider", required=True, help=", ".join(PARSERS))
    parser.add_argument("--content-type", default=None)
    parser.add_argument("--received-time", type=int, default=None,
                        help="epoch ms (default: now)")
    parser.add_argument("--config", default=None, help="override YAML for settings.load()")
    parser.add_argument("file", help="raw request body; '-' reads stdin")
    args = parser.parse_args(argv)

    try:
        settings = _settings_from_project_config(args.config)
    except Exception as exc:
        print(f"cannot load configuration: {exc}", file=sys.stderr)
        return 2
    try:
        if args.file == "-":
            body = sys.stdin.buffer.read()
        else:
            with open(args.file, "rb") as handle:
                body = handle.read()
    except OSError as exc:
        _print_line({"dead_letter": True, "error": "unreadable_input",
                     "message": f"cannot read {args.file}: {exc.strerror}",
                     "provider": args.provider})
        return 0

    received = args.received_time if args.received_time is not None \
        else int(time.time() * 1000)
    result = normalize(args.provider, body, args.content_type, received, settings)
    for event in result.events:
        _print_line(event)
    for rejected in result.rejected:
        _print_line({"dead_letter": True, "error": rejected.code, "message": rejected.message,
                     "provider": args.provider})
    if result.control:
        print(f"control: {result.control}", file=sys.stderr)
    return 0


def _print_line(obj: Mapping[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    sys.exit(main())
