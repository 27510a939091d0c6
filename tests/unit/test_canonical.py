"""udfs.canonical: the EmailEvent field contract, ids, privacy helpers, time and IP parsing."""

import ipaddress
import json
from decimal import Decimal
from pathlib import Path

import pytest

from udfs.canonical import (
    EMAIL_EVENT_FIELDS,
    EVENT_TYPES,
    PROVIDERS,
    TimestampError,
    _epoch_ms,
    compute_event_id,
    derive_subscriber_id,
    extract_address,
    hmac_address,
    is_naive_iso,
    looks_like_address,
    mask_ip,
    new_event,
    parse_ip,
    parse_timestamp,
    recipient_domain,
    redact_addresses,
    stringify,
)

AVSC = Path(__file__).resolve().parents[2] / "avro" / "EmailEvent.avsc"
KEY = b"test-key"
ANA_HASH = "6b1fed276e6c7334f986af236a02ff43e8f72ea0f6a2aa6e10ccaee8bd455494"


def minimal(**overrides):
    fields = dict(event_id="e1", provider="sendgrid", event_type="open",
                  event_time=1767268800000, received_time=1767268801000, subscriber_id="s1")
    fields.update(overrides)
    return new_event(**fields)


# ---------------------------------------------------------------- field contract

def test_field_list_matches_avsc_order():
    schema = json.loads(AVSC.read_text())
    assert tuple(f["name"] for f in schema["fields"]) == EMAIL_EVENT_FIELDS


def test_event_types_and_providers_match_avsc_docs():
    schema = {f["name"]: f for f in json.loads(AVSC.read_text())["fields"]}
    for name in EVENT_TYPES:
        assert name in schema["event_type"]["doc"]
    for name in PROVIDERS:
        assert name in schema["provider"]["doc"]


def test_new_event_has_every_key_in_order_with_defaults():
    event = minimal()
    assert tuple(event) == EMAIL_EVENT_FIELDS
    assert event == {
        "event_id": "e1", "provider": "sendgrid", "event_type": "open",
        "event_time": 1767268800000, "received_time": 1767268801000, "message_id": None,
        "subscriber_id": "s1", "recipient_domain": None, "campaign_id": None,
        "ab_test_id": None, "arm": None, "url": None, "bounce_class": None,
        "machine_open": None, "suspected_bot": False, "bot_reason": None, "user_agent": None,
        "ip": None, "attributes": {},
    }


@pytest.mark.parametrize("overrides, error", [
    ({"event_type": "resubscribe"}, ValueError),
    ({"provider": "acme"}, ValueError),
    ({"event_time": 1.5}, TypeError),
    ({"event_time": True}, TypeError),
    ({"subscriber_id": ""}, TypeError),
    ({"bounce_class": "medium"}, ValueError),
    ({"machine_open": "yes"}, TypeError),
    ({"suspected_bot": None}, TypeError),
    ({"url": 5}, TypeError),
    ({"attributes": {"n": 1}}, TypeError),
])
def test_new_event_rejects_programming_mistakes(overrides, error):
    with pytest.raises(error):
        minimal(**overrides)


# ---------------------------------------------------------------- ids

def test_event_id_is_32_hex_and_deterministic():
    a = compute_event_id("mandrill", message_id="m", subscriber_id="s", event_type="click",
                         event_time=1, url="https://x")
    b = compute_event_id("mandrill", message_id="m", subscriber_id="s", event_type="click",
                         event_time=1, url="https://x")
    assert a == b
    assert len(a) == 32 and int(a, 16) >= 0


BASE_CONTENT = dict(message_id="m", subscriber_id="s", event_type="click", event_time=1,
                    url="https://x")


@pytest.mark.parametrize("provider, change", [
    ("mailgun", {}), ("mandrill", {"message_id": "m2"}), ("mandrill", {"subscriber_id": "s2"}),
    ("mandrill", {"event_type": "open"}), ("mandrill", {"event_time": 2}),
    ("mandrill", {"url": "https://y"}), ("mandrill", {"extra": ("a",)}),
])
def test_event_id_changes_with_every_content_part(provider, change):
    assert compute_event_id(provider, **{**BASE_CONTENT, **change}) != \
        compute_event_id("mandrill", **BASE_CONTENT)


def test_event_id_separator_keeps_parts_apart():
    assert compute_event_id("ses", message_id="ab", subscriber_id="c") != \
        compute_event_id("ses", message_id="a", subscriber_id="bc")


def test_trusted_provider_id_ignores_content():
    a = compute_event_id("sparkpost", provider_event_id="42", event_time=1, url="u")
    b = compute_event_id("sparkpost", provider_event_id="42", event_time=2)
    assert a == b
    assert a != compute_event_id("sendgrid", provider_event_id="42")


# ---------------------------------------------------------------- subscriber, domain

def test_hmac_known_answer_and_normalisation():
    assert hmac_address("ana.silva@example.net", KEY) == ANA_HASH
    assert hmac_address("  Ana.Silva@EXAMPLE.net \n", KEY) == ANA_HASH
    assert hmac_address("ana.silva@example.net", b"other-key") != ANA_HASH


@pytest.mark.parametrize("metadata_id, address, expected", [
    ("u_1", "ana.silva@example.net", "u_1"),
    (12345, "ana.silva@example.net", "12345"),
    ("  u_2 ", None, "u_2"),
    ("", "ana.silva@example.net", ANA_HASH),
    (None, "Ana Silva <ANA.SILVA@example.net>", ANA_HASH),
    (True, "ana.silva@example.net", ANA_HASH),
    # a sender that uses the address as its id must not leak it
    ("ana.silva@example.net", None, ANA_HASH),
    (None, None, None),
    (None, "not-an-address", None),
])
def test_derive_subscriber_id(metadata_id, address, expected):
    assert derive_subscriber_id(metadata_id, address, KEY) == expected


@pytest.mark.parametrize("value, address, domain", [
    ("ana@Example.NET", "ana@Example.NET", "example.net"),
    ("Ana <ana@mail.example.org>", "ana@mail.example.org", "mail.example.org"),
    ("ana@example.org.", "ana@example.org.", "example.org"),
    ("@example.org", None, None),
    ("nobody", None, None),
    (None, None, None),
])
def test_extract_address_and_domain(value, address, domain):
    assert extract_address(value) == address
    assert recipient_domain(value) == domain


# ---------------------------------------------------------------- redaction

def test_redact_plain_and_bracketed_addresses():
    text = "550 5.1.1 <Ana.Silva@example.net>: no such user; cc bo@example.org."
    out = redact_addresses(text, KEY)
    assert out == (f"550 5.1.1 <hmac:{ANA_HASH}>: no such user; cc hmac:"
                   f"{hmac_address('bo@example.org', KEY)}.")


def test_redact_percent_encoded_address_in_url_keeps_parameter_name():
    url = "https://x.example.com/p?email=ana.silva%40example.net&b=1"
    assert redact_addresses(url, KEY) == f"https://x.example.com/p?email=hmac:{ANA_HASH}&b=1"


def test_redact_encoded_plus():
    out = redact_addresses("u=ana%2Bnews%40example.net", KEY)
    assert out == "u=hmac:" + hmac_address("ana+news@example.net", KEY)


def test_redact_leaves_other_text_alone():
    text = "Mozilla/5.0 (iPhone) @home 50%40 off"
    assert redact_addresses(text, KEY) == text
    assert not looks_like_address("user at example dot com")


# ---------------------------------------------------------------- stringify

@pytest.mark.parametrize("value, expected", [
    ("x", "x"), (1, "1"), (1.5, "1.5"), (True, "true"), (None, "null"),
    (["a", "b"], '["a","b"]'), ({"k": "ü"}, '{"k":"ü"}'),
])
def test_stringify(value, expected):
    assert stringify(value) == expected


# ---------------------------------------------------------------- time

@pytest.mark.parametrize("value, expected", [
    (1767268800, 1767268800000),                       # SendGrid seconds
    (1591726752372, 1591726752372),                    # SendGrid doc example in ms
    (1767272399.481203, 1767272399481),                # Mailgun float, µs truncated
    ("1767276000", 1767276000000),                     # SparkPost string seconds
    ("1767272399.9999", 1767272399999),
    (1767268800123456, 1767268800123),                 # µs
    (1767268800123456789, 1767268800123),              # ns
    ("2026-01-01T12:05:30.118Z", 1767269130118),       # SES
    ("2017-10-25T15:21:11.9065619Z", 1508944871906),   # Postmark, 7 digits
    ("2016-04-27T16:28:50.3963933-04:00", 1461788930396),
    ("2026-01-01T12:03:44.5512309-05:00", 1767287024551),
    ("2018-10-11T23:24:45.000+00:00", 1539300285000),  # SparkPost generation_failure
    ("2026-01-01T17:30:00+0530", 1767268800000),
    ("2026-01-01 12:00:00Z", 1767268800000),
    ("2014-06-01T12:00:00", 1401624000000),            # naive: read as UTC
    ("2026-01-01T12:00Z", 1767268800000),
])
def test_parse_timestamp(value, expected):
    assert parse_timestamp(value) == expected


@pytest.mark.parametrize("value", [
    None, True, "", "  ", "yesterday", "NaN", "Infinity", float("nan"), -5, 0, 5,
    "2026-13-01T00:00:00Z", "2026-02-30T00:00:00Z", "2026-01-01T00:00:00+25:00",
    "2150-01-01T00:00:00Z", [1767268800], {"t": 1},
])
def test_parse_timestamp_rejects(value):
    with pytest.raises(TimestampError):
        parse_timestamp(value)


@pytest.mark.parametrize("value", [
    1, 10**11 - 1, 10**11, 10**14 - 1, 10**14, 10**17 - 1, 10**17, 1767268800999999999,
    "1767268800", "1767268800123", "0001767268800",
])
def test_integer_epochs_take_the_fast_path_with_the_decimal_result(value):
    expected = _epoch_ms(Decimal(str(value).strip()), value)
    if 946_684_800_000 <= expected < 4_102_444_800_000:
        assert parse_timestamp(value) == expected
    else:
        with pytest.raises(TimestampError):
            parse_timestamp(value)


def test_is_naive_iso():
    assert is_naive_iso("2014-06-01T12:00:00")
    assert not is_naive_iso("2014-06-01T12:00:00Z")
    assert not is_naive_iso("2014-06-01T12:00:00.1-04:00")
    assert not is_naive_iso(1767268800)


# ---------------------------------------------------------------- ip

@pytest.mark.parametrize("value, expected", [
    ("203.0.113.77", "203.0.113.0"),
    ("2001:db8:abcd:12:1:2:3:4", "2001:db8:abcd::"),
    ("::ffff:203.0.113.77", "203.0.113.0"),
    ("203.0.113.77, 10.0.0.1", "203.0.113.0"),
    ("203.0.113.77:5123", "203.0.113.0"),
    ("[2001:db8:abcd:12::1]:443", "2001:db8:abcd::"),
    ("fe80::1%eth0", "fe80::"),
    ("not-an-ip", None),
    ("", None),
    (None, None),
    (1234, None),
])
def test_mask_ip(value, expected):
    assert mask_ip(value) == expected


@pytest.mark.parametrize("value", [
    "1.2.3.4", " 10.20.30.40 ", "0.0.0.0", "255.255.255.255", "256.1.1.1", "01.2.3.4",
    "1.2.3", "1.2.3.4.5", "1..3.4", "1.2.3.-4", "\u0661.2.3.4", "1.2.3.4\n", "+1.2.3.4",
])
def test_mask_ip_fast_ipv4_path_agrees_with_ipaddress(value):
    ip = parse_ip(value)
    expected = (None if ip is None
                else str(ipaddress.ip_network(f"{ip}/24", strict=False).network_address))
    assert mask_ip(value) == expected
