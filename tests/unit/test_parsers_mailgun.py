"""Mailgun event-data webhooks -> canonical events (via udfs.normalize.normalize)."""

import json
from pathlib import Path

import pytest

from udfs.canonical import compute_event_id, hmac_address
from udfs.normalize import NormalizeSettings, normalize

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "webhooks" / "mailgun"
KEY = b"test-key"
SETTINGS = NormalizeSettings(hmac_key=KEY)
RECEIVED = 1767300000000
LI = "li.wei@example.org"
LI_ID = hmac_address(LI, KEY)


def run(body, settings=SETTINGS, content_type="application/json"):
    if isinstance(body, str):
        body = (FIXTURES / body).read_bytes()
    return normalize("mailgun", body, content_type, RECEIVED, settings)


def fixture(name):
    return json.loads((FIXTURES / name).read_bytes())


def with_event_data(name, **changes):
    body = fixture(name)
    body["event-data"].update(changes)
    return json.dumps(body).encode()


def assert_no_address(result, *addresses):
    dumped = json.dumps(result.events, ensure_ascii=False).lower()
    for address in addresses:
        assert address.lower() not in dumped
        assert address.lower().replace("@", "%40") not in dumped


@pytest.mark.parametrize("name", ["clicked.json", "opened_apple.json", "failed_temporary.json",
                                  "failed_permanent.json", "failed_suppressed.json"])
def test_every_fixture_gives_one_event_without_the_address(name):
    result = run(name)
    assert len(result.events) == 1 and result.rejected == [] and result.control is None
    assert_no_address(result, LI)


def test_clicked_sample_exactly():
    event = run("clicked.json").events[0]
    assert event == {
        # Pinned: Mailgun's id is unique per day only, so it is hashed with the event time.
        "event_id": "02a82b39fd95be9e268ec28b4eb5b335",
        "provider": "mailgun",
        "event_type": "click",
        "event_time": 1767272399481,  # float seconds, µs truncated
        "received_time": RECEIVED,
        "message_id": "20260101120000.5f2a9c7e1b@mg.example.com",
        "subscriber_id": LI_ID,
        "recipient_domain": "example.org",
        "campaign_id": "onb-7",
        "ab_test_id": None,
        "arm": None,
        "url": "https://app.example.com/onboarding?step=2",
        "bounce_class": None,
        "machine_open": None,
        "suspected_bot": True,
        "bot_reason": "native_bot_generic",
        "user_agent": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Edg/131.0",
        "ip": "198.51.100.0",
        "attributes": {
            "meta.variant": "A",
            "provider_event_id": "Zr8TqkXwQm2Lp0Hd4sVbNA",
            "transport_id": "8c1f0e6ad2b94c7f9b3e55a1d07c6e2f4a9b8d3c1e7f6a5b40",
            "tags": '["onboarding","cohort-2026-01"]',
            "geo_country": "DE",
            "client_type": "browser",
            "device_type": "desktop",
            "provider_event_type": "clicked",
        },
    }
    assert event["event_id"] == compute_event_id(
        "mailgun", provider_event_id="Zr8TqkXwQm2Lp0Hd4sVbNA@1767272399481")


def test_arm_from_configured_user_variable():
    settings = NormalizeSettings(hmac_key=KEY, metadata_fields={"mailgun": {"arm": "variant"}})
    event = run("clicked.json", settings).events[0]
    assert (event["campaign_id"], event["arm"]) == ("onb-7", "A")
    assert "meta.variant" not in event["attributes"]


def test_opened_apple_bot_is_a_machine_open_and_subscriber_from_user_variables():
    event = run("opened_apple.json").events[0]
    assert event["event_type"] == "open"
    assert event["machine_open"] is True
    assert (event["suspected_bot"], event["bot_reason"]) == (True, "native_bot_apple")
    assert event["subscriber_id"] == "u-42"
    assert event["recipient_domain"] == "example.org"
    assert event["event_time"] == 1767272450000


@pytest.mark.parametrize("client_info, machine_open, bot", [
    ({"user-agent": "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1)", "bot": ""}, False,
     (False, None)),
    ({"user-agent": "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1)"}, None, (False, None)),
    ({"user-agent": "Mozilla/5.0 (iPhone)", "bot": "gmail"}, True, (True, "native_bot_gmail")),
])
def test_open_bot_flag_is_tri_state(client_info, machine_open, bot):
    event = run(with_event_data("opened_apple.json", **{"client-info": client_info,
                                                        "ip": "198.51.100.9"})).events[0]
    assert event["machine_open"] is machine_open
    assert (event["suspected_bot"], event["bot_reason"]) == bot


def test_failed_temporary_is_deferred():
    event = run("failed_temporary.json").events[0]
    assert (event["event_type"], event["bounce_class"]) == ("deferred", None)
    assert event["message_id"] == "20260101120000.5f2a9c7e1b@mg.example.com"  # <> stripped
    assert event["attributes"]["reason"] == "greylisted"
    assert event["attributes"]["smtp_code"] == "451"


def test_failed_permanent_is_hard_bounce_with_redacted_diagnostics():
    event = run("failed_permanent.json").events[0]
    assert (event["event_type"], event["bounce_class"]) == ("bounce", "hard")
    assert event["event_time"] == 1767272470250
    assert event["attributes"]["delayed_bounce"] == "true"
    assert event["attributes"]["smtp_message"] == f"5.1.1 <hmac:{LI_ID}> mailbox unavailable"
    assert event["attributes"]["smtp_description"] == f"No such user hmac:{LI_ID}"
    assert event["ip"] is None


def test_failed_suppress_bounce_is_dropped():
    event = run("failed_suppressed.json").events[0]
    assert (event["event_type"], event["bounce_class"]) == ("dropped", None)
    assert event["attributes"]["smtp_code"] == "605"


DROP = object()


@pytest.mark.parametrize("changes, code, words", [
    ({"severity": DROP}, "missing_field", "severity"),
    ({"severity": "fatal"}, "invalid_field", "'fatal'"),
    ({"event": "stored"}, "unknown_event_type", "'stored'"),
    ({"event": None}, "missing_field", "event"),
    ({"event": ["failed"]}, "invalid_field", "event"),
    ({"timestamp": "soon"}, "invalid_timestamp", "'soon'"),
    ({"timestamp": DROP}, "missing_field", "timestamp"),
    ({"recipient": DROP}, "missing_field", "recipient"),
])
def test_bad_event_data_is_dead_lettered_with_the_body(changes, code, words):
    body = fixture("failed_temporary.json")
    for key, value in changes.items():
        if value is DROP:
            del body["event-data"][key]
        else:
            body["event-data"][key] = value
    result = run(json.dumps(body).encode())
    assert result.events == []
    assert [r.code for r in result.rejected] == [code]
    assert words in result.rejected[0].message
    assert json.loads(result.rejected[0].raw) == body


def test_missing_event_data():
    result = run(b'{"signature": {"token": "t"}}')
    assert [(r.code, r.message) for r in result.rejected] == [
        ("missing_field", "mailgun: mailgun body.event-data is missing")]


def test_legacy_form_posts_are_rejected():
    body = b"event=opened&recipient=li.wei%40example.org&timestamp=1767272400"
    result = run(body, content_type="application/x-www-form-urlencoded")
    assert [(r.code, r.raw) for r in result.rejected] == [("invalid_format", body)]


def test_retry_keeps_event_id_and_day_scoped_ids_do_not_collide():
    first = run("clicked.json").events[0]["event_id"]
    assert run("clicked.json").events[0]["event_id"] == first
    # the same Mailgun id on another day is another event
    next_day = run(with_event_data("clicked.json", timestamp=1767358799.481203))
    assert next_day.events[0]["event_id"] != first
