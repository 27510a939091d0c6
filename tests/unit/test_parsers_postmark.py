"""Postmark webhooks -> canonical events (via udfs.normalize.normalize)."""

import json
from pathlib import Path

import pytest

from udfs.canonical import compute_event_id, hmac_address
from udfs.normalize import NormalizeSettings, normalize

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "webhooks" / "postmark"
KEY = b"test-key"
SETTINGS = NormalizeSettings(hmac_key=KEY)
RECEIVED = 1767300000000
MARIA = "maria.gonzalez@example.com"
MARIA_ID = hmac_address(MARIA, KEY)


def run(body, settings=SETTINGS):
    if isinstance(body, str):
        body = (FIXTURES / body).read_bytes()
    return normalize("postmark", body, "application/json", RECEIVED, settings)


def fixture(name):
    return json.loads((FIXTURES / name).read_bytes())


def changed(name, **changes):
    record = fixture(name)
    record.update(changes)
    return json.dumps(record).encode()


def assert_no_address(result, *addresses):
    dumped = json.dumps(result.events, ensure_ascii=False).lower()
    for address in addresses:
        assert address.lower() not in dumped
        assert address.lower().replace("@", "%40") not in dumped


def test_open_sample_exactly():
    result = run("open.json")
    assert result.rejected == [] and result.control is None
    assert result.events == [{
        "event_id": "8ef78c8e66d3e8846e2cbdae927f6650",  # pinned: content hash
        "provider": "postmark",
        "event_type": "open",
        "event_time": 1767287024551,  # 12:03:44.5512309-05:00 -> 17:03:44.551Z
        "received_time": RECEIVED,
        "message_id": "3c0e9a7d-51b2-4f8e-9d1a-6b7c2e4f8a10",
        "subscriber_id": MARIA_ID,
        "recipient_domain": "example.com",
        "campaign_id": "inv-rem-3",
        "ab_test_id": None,
        "arm": None,
        "url": None,
        "bounce_class": None,
        "machine_open": True,
        "suspected_bot": True,
        "bot_reason": "heuristic_apple_mpp",
        "user_agent": "Mozilla/5.0",
        "ip": "17.58.96.0",
        "attributes": {
            "meta.variant": "short-subject",
            "tag": "invoice-reminder",
            "message_stream": "outbound",
            "first_open": "false",
            "read_seconds": "0",
            "platform": "Mobile",
            "client": "Apple Mail",
            "geo_country": "US",
            "provider_event_type": "Open",
        },
    }]
    assert_no_address(result, MARIA)


def test_arm_from_configured_metadata_key():
    settings = NormalizeSettings(hmac_key=KEY, metadata_fields={"postmark": {"arm": "variant"}})
    assert run("open.json", settings).events[0]["arm"] == "short-subject"


def test_retried_open_keeps_its_id_and_a_later_open_gets_another():
    first = run("open.json").events[0]["event_id"]
    assert run("open.json").events[0]["event_id"] == first
    later = run(changed("open.json", ReceivedAt="2026-01-01T12:09:00.0000000-05:00"))
    assert later.events[0]["event_id"] != first


def test_hard_bounce_uses_the_bounce_id_and_redacts_details():
    result = run("bounce_hard.json")
    [event] = result.events
    assert (event["event_type"], event["bounce_class"]) == ("bounce", "hard")
    assert event["event_time"] == 1508944871906
    assert event["event_id"] == compute_event_id(
        "postmark", provider_event_id="bounce:4323372036854775807")
    assert event["attributes"]["details"] == (
        "smtp;550 5.1.1 The email account that you tried to reach does not exist: "
        f"hmac:{MARIA_ID}")
    assert event["attributes"]["inactive"] == "true"
    assert event["attributes"]["provider_event_type"] == "Bounce/HardBounce"
    assert event["ip"] is None
    assert_no_address(result, MARIA, "billing@app.example.com")


def test_spam_complaint_with_code_512_is_a_complaint():
    [event] = run("spam_complaint_code512.json").events
    assert event["event_type"] == "complaint"
    assert event["bounce_class"] is None
    assert event["event_time"] == 1461788930396  # -04:00 offset


def test_naive_time_is_read_as_utc_and_flagged():
    [event] = run("click_naive.json").events
    assert event["event_type"] == "click"
    assert event["event_time"] == 1401624000000
    assert event["attributes"]["naive_time"] == "true"
    assert event["url"] == "https://example.com/pay"
    assert event["ip"] == "198.51.100.0"
    assert event["attributes"]["click_location"] == "HTML"


def test_subscription_change_is_unsubscribe_with_metadata_subscriber():
    [event] = run("subscription_change.json").events
    assert event["event_type"] == "unsubscribe"
    assert event["subscriber_id"] == "cust-981"
    assert event["recipient_domain"] == "example.com"
    assert event["event_time"] == 1767337200123
    assert event["attributes"]["suppression_reason"] == "ManualSuppression"


def test_delivery():
    body = json.dumps({"RecordType": "Delivery", "MessageID": "m-1", "Recipient": MARIA,
                       "DeliveredAt": "2026-01-01T12:00:01.1234567Z",
                       "Details": "Test delivery webhook details", "Metadata": {}}).encode()
    [event] = run(body).events
    assert (event["event_type"], event["event_time"]) == ("delivered", 1767268801123)
    assert event["attributes"]["smtp_response"] == "Test delivery webhook details"


@pytest.mark.parametrize("bounce_type, code, expected", [
    ("HardBounce", 1, ("bounce", "hard")),
    ("SoftBounce", 4096, ("bounce", "soft")),
    ("Transient", 2, ("bounce", "soft")),
    ("DnsError", 8, ("bounce", "soft")),
    ("Blocked", 16, ("bounce", "soft")),
    ("DMARCPolicy", 100000, ("bounce", "soft")),
    ("Unknown", 1024, ("bounce", None)),
    ("BadEmailAddress", 100000, ("dropped", None)),
    ("ManuallyDeactivated", 8192, ("dropped", None)),
    ("SpamNotification", 512, ("complaint", None)),
    (None, 1, ("bounce", "hard")),       # Type missing: TypeCode decides
    (None, 4096, ("bounce", "soft")),
])
def test_bounce_types(bounce_type, code, expected):
    record = fixture("bounce_hard.json")
    record.update(TypeCode=code)
    if bounce_type is None:
        del record["Type"]
    else:
        record["Type"] = bounce_type
    [event] = run(json.dumps(record).encode()).events
    assert (event["event_type"], event["bounce_class"]) == expected


@pytest.mark.parametrize("body, code, words", [
    ("auto_responder.json", "unknown_event_type", "Bounce/AutoResponder"),
    (changed("bounce_hard.json", Type=None, TypeCode=777), "missing_field", "TypeCode"),
    (changed("subscription_change.json", SuppressSending=False), "unknown_event_type",
     "reactivated"),
    (changed("subscription_change.json", SuppressionReason="HardBounce"),
     "unknown_event_type", "HardBounce"),
    (changed("subscription_change.json", SuppressSending=None), "missing_field",
     "SuppressSending"),
    (changed("open.json", RecordType="Inbound"), "unknown_event_type", "'Inbound'"),
    (changed("open.json", ReceivedAt="2026-01-01 noon"), "invalid_timestamp", "ReceivedAt"),
    (changed("open.json", Recipient=None), "missing_field", "recipient"),
])
def test_rejects_carry_the_record(body, code, words):
    raw = (FIXTURES / body).read_bytes() if isinstance(body, str) else body
    result = run(raw)
    assert result.events == []
    assert [r.code for r in result.rejected] == [code]
    assert words in result.rejected[0].message
    assert json.loads(result.rejected[0].raw) == json.loads(raw)
