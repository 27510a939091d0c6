"""SparkPost (Bird) event webhooks -> canonical events (via udfs.normalize.normalize)."""

import copy
import json
from pathlib import Path

import pytest

from udfs.canonical import compute_event_id, hmac_address
from udfs.normalize import NormalizeSettings, normalize

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "webhooks" / "sparkpost"
KEY = b"test-key"
SETTINGS = NormalizeSettings(hmac_key=KEY)
RECEIVED = 1767300000000
JO = "jo.nakamura@example.jp"
JO_ID = hmac_address(JO, KEY)


def run(body, settings=SETTINGS):
    if isinstance(body, str):
        body = (FIXTURES / body).read_bytes()
    return normalize("sparkpost", body, "application/json", RECEIVED, settings)


def fixture(name):
    return json.loads((FIXTURES / name).read_bytes())


def click_with(**changes):
    item = copy.deepcopy(fixture("batch.json")[0])
    item["msys"]["track_event"].update(changes)
    return item


def assert_no_address(result, *addresses):
    dumped = json.dumps(result.events, ensure_ascii=False).lower()
    for address in addresses:
        assert address.lower() not in dumped
        assert address.lower().replace("@", "%40") not in dumped


def test_sample_click_exactly_and_ping_skipped():
    result = run("batch.json")
    assert result.rejected == [] and result.control is None
    assert result.events == [{
        # Pinned: SparkPost's own event_id is trusted, hashed with the provider name.
        "event_id": "bf8164532fc004d80a9e59ec53ac6789",
        "provider": "sparkpost",
        "event_type": "click",
        "event_time": 1767276000000,
        "received_time": RECEIVED,
        "message_id": "0004a1b2c3d4e5f60718",
        "subscriber_id": JO_ID,
        "recipient_domain": "example.jp",
        "campaign_id": "winter-promo",
        "ab_test_id": None,
        "arm": None,
        "url": "https://store.example.jp/winter?src=mail",
        "bounce_class": None,
        "machine_open": None,
        "suspected_bot": False,
        "bot_reason": None,
        "user_agent": "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_6) AppleWebKit/605.1.15",
        "ip": "192.0.2.0",
        "attributes": {
            "meta.variant": "hero-image-2",
            "meta.user_id": "u_88213",
            "transmission_id": "7391028475610293847",
            "template_id": "winter-2026",
            "template_version": "4",
            "mailbox_provider": "Gmail",
            "injection_time": "2026-01-01T13:55:12.000Z",
            "target_link_name": "cta-main",
            "provider_event_id": "2718281828459045235",
            "event_class": "track_event",
            "tags": '["promo","jp"]',
            "geo_country": "JP",
            "provider_event_type": "click",
        },
    }]
    assert result.events[0]["event_id"] == compute_event_id(
        "sparkpost", provider_event_id="2718281828459045235")
    assert_no_address(result, JO, "Jo.Nakamura@example.jp")


def test_configured_rcpt_meta_keys():
    settings = NormalizeSettings(hmac_key=KEY, metadata_fields={
        "sparkpost": {"subscriber_id": "user_id", "arm": "variant"}})
    [event] = run("batch.json", settings).events
    assert (event["subscriber_id"], event["arm"], event["campaign_id"]) == \
        ("u_88213", "hero-image-2", "winter-promo")
    assert event["recipient_domain"] == "example.jp"
    assert not any(k.startswith("meta.") for k in event["attributes"])


def test_only_pings_is_a_control_result():
    result = run("ping.json")
    assert (result.events, result.rejected, result.control) == ([], [], "sparkpost_ping")
    assert run(b"[]").control is None


def test_event_id_survives_batch_retry_and_lost_enrichment():
    first = run("batch.json").events[0]["event_id"]
    # past the 60-day enrichment cutoff the same event comes without campaign data
    late = click_with(campaign_id=None, rcpt_meta=None, transmission_id=None)
    [event] = run(json.dumps([late]).encode()).events
    assert event["event_id"] == first
    assert event["campaign_id"] is None
    assert event["message_id"] == "0004a1b2c3d4e5f60718"


def test_mixed_batch():
    result = run("mixed.json")
    assert [(e["event_type"], e["bounce_class"], e["attributes"]["provider_event_type"])
            for e in result.events] == [
        ("bounce", "hard", "bounce"),
        ("bounce", "soft", "out_of_band"),
        ("dropped", None, "generation_failure"),
        ("open", None, "open"),
        ("dropped", None, "policy_rejection"),
    ]
    hard, oob, generation, scanner_open, policy = result.events
    assert hard["attributes"]["raw_reason"] == f"550 5.1.1 <hmac:{JO_ID}>: user unknown"
    assert hard["attributes"]["bounce_code"] == "10"
    assert oob["attributes"]["delayed_bounce"] == "true"
    assert generation["event_time"] == 1539300285000  # ISO timestamp on this event type
    assert generation["event_id"] == compute_event_id(
        "sparkpost", provider_event_id="e0a1b2c3-d4e5-4f60-8718-293a4b5c6d7e")
    assert (scanner_open["suspected_bot"], scanner_open["bot_reason"]) == \
        (True, "ua_security_scanner")
    assert scanner_open["machine_open"] is None
    assert policy["message_id"] is None
    assert [r.code for r in result.rejected] == [
        "unknown_event_type", "unknown_event_type", "invalid_format"]
    assert "initial_open" in result.rejected[0].message
    assert "relay_injection" in result.rejected[1].message
    items = fixture("mixed.json")
    assert [json.loads(r.raw) for r in result.rejected] == [items[3], items[6], items[7]]
    assert_no_address(result, JO)


@pytest.mark.parametrize("bounce_class, expected", [
    ("10", ("bounce", "hard")), ("30", ("bounce", "hard")), (90, ("bounce", "hard")),
    *[(str(c), ("bounce", "soft")) for c in (20, 21, 22, 23, 24, 40, 60, 70, 80, 100)],
    *[(str(c), ("bounce", "soft")) for c in (50, 51, 52, 53, 54)],
    ("25", ("dropped", None)),
    ("1", ("bounce", None)), ("999", ("bounce", None)), ("abc", ("bounce", None)),
    (None, ("bounce", None)),
])
def test_bounce_classes(bounce_class, expected):
    item = {"msys": {"message_event": {
        "type": "bounce", "event_id": "1", "timestamp": "1767276100", "rcpt_to": JO,
        "bounce_class": bounce_class}}}
    [event] = run(json.dumps([item]).encode()).events
    assert (event["event_type"], event["bounce_class"]) == expected


@pytest.mark.parametrize("raw_type, canonical", [
    ("amp_click", "click"), ("amp_open", "open"), ("list_unsubscribe", "unsubscribe"),
    ("link_unsubscribe", "unsubscribe"), ("injection", "sent"), ("delivery", "delivered"),
    ("delay", "deferred"), ("spam_complaint", "complaint"),
    ("generation_rejection", "dropped"),
])
def test_type_mapping(raw_type, canonical):
    [event] = run(json.dumps([click_with(type=raw_type)]).encode()).events
    assert event["event_type"] == canonical
    assert event["url"] == ("https://store.example.jp/winter?src=mail"
                            if canonical == "click" else None)


def test_is_prefetched_is_the_native_machine_open_flag():
    [event] = run(json.dumps([click_with(type="open", is_prefetched=True)]).encode()).events
    assert event["machine_open"] is True
    assert (event["suspected_bot"], event["bot_reason"]) == (True, "native_machine_open")
    [human] = run(json.dumps([click_with(type="open", is_prefetched=False)]).encode()).events
    assert human["machine_open"] is False and human["suspected_bot"] is False


@pytest.mark.parametrize("item, code", [
    ({"not_msys": {}}, "missing_field"),
    ({"msys": "x"}, "invalid_format"),
    ({"msys": {"track_event": "x"}}, "invalid_format"),
    ({"msys": {"track_event": {"event_id": "1"}}}, "missing_field"),
    (click_with(timestamp="later"), "invalid_timestamp"),
    (click_with(rcpt_to=None, raw_rcpt_to=None), "missing_field"),
])
def test_bad_items_do_not_lose_the_good_one(item, code):
    good = fixture("batch.json")[0]
    result = run(json.dumps([item, good]).encode())
    assert len(result.events) == 1
    assert [(r.code, json.loads(r.raw)) for r in result.rejected] == [(code, item)]
