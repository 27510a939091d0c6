"""Provider parsers: raw webhook body -> items -> drafts of canonical events.

Every provider module exposes two functions, used only by ``udfs.normalize``:

* ``split(text, content_type) -> Batch`` unpacks the request body into items (one JSON
  object per provider event) or a control message. It raises ``BodyError`` when the body as
  a whole is unusable. Each ``Item`` carries the bytes to dead-letter if it fails: the item
  re-serialized as compact JSON, which every parser accepts again as a body on its own, so a
  dead letter can be replayed alone with the same provider.
* ``parse_item(value, ctx) -> list[Draft]`` maps one item to canonical drafts (SES fans one
  record out per recipient). It raises ``ItemError`` for a bad item.

Drafts still hold the raw address and unmasked IP; ``udfs.normalize`` turns them into
events (subscriber id, redaction, IP masking, bot checks, event id). Keeping that in one
place means no parser can forget the privacy rules.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from udfs.canonical import TimestampError, parse_timestamp, stringify


class ItemError(Exception):
    """One item cannot be normalized; ``code`` is the dead-letter code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class BodyError(ItemError):
    """The whole body cannot be used (dead-lettered with the whole body as raw)."""


@dataclass(frozen=True)
class Item:
    value: Any
    # The bytes, or a function that makes them: most items never fail, and serializing
    # every one up front was ~7 % of the parse time. Parsers do not modify item values,
    # so serializing later gives the same bytes.
    raw_source: bytes | Callable[[], bytes]
    # Set when the item could not even be decoded (a bad NDJSON line or Firehose record).
    error: ItemError | None = None

    @property
    def raw(self) -> bytes:
        source = self.raw_source
        return source if isinstance(source, bytes) else source()


@dataclass(frozen=True)
class Batch:
    items: list[Item]
    # Not an event and not an error, e.g. "sns_subscription_confirmation".
    control: str | None = None


@dataclass(frozen=True)
class ParseContext:
    provider: str
    received_time: int


@dataclass
class Draft:
    """What a parser knows about one canonical event, before privacy and id rules."""

    event_type: str
    provider_type: str
    event_time: int
    address: str | None = None
    # Sender-defined metadata (SendGrid custom args, Mailgun user-variables, SES tags, …):
    # the configurable subscriber/campaign/ab_test/arm keys are looked up here.
    metadata: Mapping[str, Any] = field(default_factory=dict)
    # Provider-native fallbacks for campaign_id / ab_test_id / arm / recipient_domain.
    native: dict[str, str | None] = field(default_factory=dict)
    message_id: str | None = None
    url: str | None = None
    bounce_class: str | None = None
    native_machine_open: bool | None = None
    native_bot_reason: str | None = None
    user_agent: str | None = None
    ip: str | None = None
    # Used as the event id source only when the provider's id is trustworthy.
    trusted_event_id: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------- helpers for parsers

def compact_json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


# One decoder for every call: json.loads with an argument builds a new one each time.
_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def load_json(text: str, what: str = "body") -> Any:
    """json.loads that also refuses NaN/Infinity; raises BodyError(invalid_json)."""
    try:
        return _DECODER.decode(text)
    except (ValueError, RecursionError) as exc:
        raise BodyError("invalid_json", f"{what} is not valid JSON: {exc}") from None


def json_items(text: str, *, allow_ndjson: bool = False) -> list[Item]:
    """Items of a JSON array, a single JSON object, or (optionally) JSON lines."""
    stripped = text.strip()
    if not stripped:
        raise BodyError("empty_body", "body is empty")
    try:
        data = load_json(stripped)
    except BodyError:
        if not allow_ndjson or "\n" not in stripped:
            raise
        return _ndjson_items(stripped)
    if isinstance(data, list):
        return [Item(value, partial(compact_json, value)) for value in data]
    if isinstance(data, dict):
        return [Item(data, partial(compact_json, data))]
    raise BodyError("invalid_format",
                    f"body must be a JSON array or object, got {type(data).__name__}")


def _ndjson_items(text: str) -> list[Item]:
    items = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = load_json(line, f"line {number}")
        except BodyError as exc:
            items.append(Item(None, line.encode("utf-8"), ItemError(exc.code, exc.message)))
            continue
        items.append(Item(value, partial(compact_json, value)))
    return items


def require_dict(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        raise ItemError("missing_field", f"{where} is missing")
    if not isinstance(value, dict):
        raise ItemError("invalid_format",
                        f"{where} must be a JSON object, got {type(value).__name__}")
    return value


def optional_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def text(value: Any) -> str | None:
    """A non-empty string from a string or number; None for anything else or blank."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return stringify(value)
    if isinstance(value, str):
        stripped = value.strip()
        return stripped or None
    return None


def require_text(mapping: Mapping[str, Any], key: str, where: str) -> str:
    value = text(mapping.get(key))
    if value is None:
        if mapping.get(key) is not None:
            raise ItemError("invalid_field",
                            f"{where}.{key} must be a non-empty string, got {mapping[key]!r}")
        raise ItemError("missing_field", f"{where}.{key} is missing")
    return value


def event_time(mapping: Mapping[str, Any], key: str, where: str) -> int:
    if key not in mapping or mapping[key] in (None, ""):
        raise ItemError("missing_field", f"{where}.{key} (event time) is missing")
    try:
        return parse_timestamp(mapping[key])
    except TimestampError as exc:
        raise ItemError("invalid_timestamp", f"{where}.{key}: {exc}") from None


def flag(value: Any) -> bool | None:
    """Tri-state boolean from true/false, "true"/"false", 1/0; None when absent/unclear."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in ("true", "1", "yes"):
            return True
        if lowered in ("false", "0", "no"):
            return False
    return None


def unknown_type(provider: str, value: Any, detail: str = "") -> ItemError:
    suffix = f": {detail}" if detail else ""
    return ItemError("unknown_event_type",
                     f"{provider} event type {value!r} has no canonical mapping{suffix}")
