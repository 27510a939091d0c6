"""SendGrid Event Webhook -> canonical events (via udfs.normalize.normalize)."""

import json
from pathlib import Path

from udfs.canonical import EMAIL_EVENT_FIELDS, compute_event_id, hmac_address
from udfs.normalize import NormalizeSettings, normalize

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "webhooks" / "sendgrid"
KEY = b"test-key"
SETTINGS = NormalizeSettings(hmac_key=KEY)
RECEIVED = 1767300000000
ANA = "ana.silva@example.net"
ANA_ID = hmac_address(ANA, KEY)
BO_ID = hmac_address("bo@example.org", KEY)


def run(body, settings=SETTINGS):
    if isinstance(body, str):
        body = (FIXTURES / body).read_bytes()
    return normalize("sendgrid", body, "application/json", RECEIVED, settings)


def assert_no_address(result, *addresses):
    dumped = json.dumps(result.events, ensure_ascii=False).lower()
    for address in addresses:
        assert address.lower() not in dumped
        assert address.lower().replace("@", "%40") not in dumped


def test_fixture_keeps_sendgrid_crlf_framing():
    assert b"},\r\n{" in (FIXTURES / "batch.json").read_bytes()


def test_batch_gives_three_events_in_order():
    result = run("batch.json")
    assert result.rejected == [] and result.control is None
    assert [e["event_type"] for e in result.events] == ["delivered", "open", "click"]
    assert all(tuple(e) == EMAIL_EVENT_FIELDS for e in result.events)
    assert_no_address(result, ANA)


def test_delivered_event_exactly():
    delivered = run("batch.json").events[0]
    assert delivered == {
        # Pinned: a changed id scheme would duplicate every event across a redeploy.
        "event_id": "e49c563787f7d91f87bde89e285cac94",
        "provider": "sendgrid",
        "event_type": "delivered",
        "event_time": 1767268800000,
        "received_time": RECEIVED,
        "message_id": "7Hq2kP0aRZe",
        "subscriber_id": ANA_ID,
        "recipient_domain": "example.net",
        "campaign_id": None,
        "ab_test_id": None,
        "arm": None,
        "url": None,
        "bounce_class": None,
        "machine_open": None,
        "suspected_bot": False,
        "bot_reason": None,
        "user_agent": None,
        "ip": None,  # the sending IP is not the recipient's
        "attributes": {
            "meta.campaign_key": "spr26",
            "meta.variant": "B",
            "sg_message_id": "7Hq2kP0aRZe.filter0913p1mdw1-2210-65A1B2C3-5.0",
            "response": "250 2.0.0 queued",
            "tls": "1",
            "provider_event_id": "ZGVsaXZlcmVkLTAtOTkxLTdIcTJrUDBhUlplLTA",
            "rfc_message_id": "<7Hq2kP0aRZe@ismtpd0042p1mdw1.sendgrid.net>",
            "tags": '["spring-sale","variant-b"]',
            "sending_ip": "149.72.10.20",
            "provider_event_type": "delivered",
        },
    }


def test_event_id_is_the_content_hash_not_sg_event_id():
    delivered = run("batch.json").events[0]
    assert delivered["event_id"] == compute_event_id(
        "sendgrid", message_id="7Hq2kP0aRZe", subscriber_id=ANA_ID, event_type="delivered",
        event_time=1767268800000)


def test_open_uses_sg_machine_open():
    opened = run("batch.json").events[1]
    assert opened["event_time"] == 1767268861000
    assert opened["machine_open"] is True
    assert (opened["suspected_bot"], opened["bot_reason"]) == (True, "native_machine_open")
    assert opened["ip"] == "17.58.101.0"
    assert opened["user_agent"] == "Mozilla/5.0"


def test_click_keeps_url_and_offset():
    click = run("batch.json").events[2]
    assert click["url"] == "https://shop.example.com/sale?utm_content=b"
    assert click["machine_open"] is None
    assert click["suspected_bot"] is False
    assert click["ip"] == "203.0.113.0"
    assert click["attributes"]["url_offset_index"] == "1"
    assert click["attributes"]["url_offset_type"] == "html"


def test_configured_metadata_fields_pick_flattened_custom_args():
    settings = NormalizeSettings(
        hmac_key=KEY, metadata_fields={"sendgrid": {"campaign_id": "campaign_key",
                                                    "arm": "variant"}})
    events = run("batch.json", settings).events
    assert {(e["campaign_id"], e["arm"]) for e in events} == {("spr26", "B")}
    assert not any(k.startswith("meta.") for e in events for k in e["attributes"])


def test_subscriber_id_from_custom_arg_wins_over_address():
    body = json.dumps([{"email": ANA, "timestamp": 1767268800, "event": "open",
                        "sg_message_id": "abc.filter", "subscriber_id": "cust-7"}]).encode()
    event = run(body).events[0]
    assert event["subscriber_id"] == "cust-7"
    assert event["recipient_domain"] == "example.net"


def test_retry_with_new_sg_event_ids_keeps_event_ids():
    first = run("batch.json").events
    items = json.loads((FIXTURES / "batch.json").read_bytes())
    for n, item in enumerate(items):
        item["sg_event_id"] = f"retry-{n}"  # reported: retries can carry new sg_event_ids
    retried = run(json.dumps(items).encode()).events
    assert [e["event_id"] for e in retried] == [e["event_id"] for e in first]
    assert len({e["event_id"] for e in first}) == 3


def test_identical_repost_gives_identical_events():
    assert run("batch.json").events == run("batch.json").events


def test_mixed_batch_keeps_good_items_and_dead_letters_bad_ones():
    result = run("mixed.json")
    assert [(e["event_type"], e["attributes"]["provider_event_type"])
            for e in result.events] == [
        ("bounce", "bounce"), ("bounce", "bounce"), ("sent", "processed"),
        ("unsubscribe", "group_unsubscribe"), ("complaint", "spamreport")]
    assert [r.code for r in result.rejected] == [
        "unknown_event_type", "missing_field", "invalid_timestamp", "invalid_format"]
    assert "group_resubscribe" in result.rejected[0].message
    assert "timestamp" in result.rejected[1].message
    assert "'yesterday'" in result.rejected[2].message
    # each dead letter is that one item, compact, replayable on its own
    items = json.loads((FIXTURES / "mixed.json").read_bytes())
    assert json.loads(result.rejected[0].raw) == items[4]
    assert result.rejected[3].raw == b'"not an object"'
    assert_no_address(result, "Ana.Silva@Example.NET", "bo@example.org")


def test_async_bounce_without_sg_message_id_uses_smtp_id():
    hard, blocked = run("mixed.json").events[:2]
    assert hard["message_id"] == "7Hq2kP0aRZe"
    assert hard["subscriber_id"] == ANA_ID  # address case does not matter
    assert hard["bounce_class"] == "hard"
    assert hard["attributes"]["reason"] == \
        f"550 5.1.1 <hmac:{ANA_ID}>: Recipient address rejected"
    assert hard["attributes"]["bounce_classification"] == "Invalid Address"
    assert blocked["bounce_class"] == "soft"
    assert blocked["attributes"]["bounce_type"] == "blocked"
    assert blocked["message_id"] == "Zz9"


def test_millisecond_timestamp_string_category_and_marketing_fallbacks():
    processed = run("mixed.json").events[2]
    assert processed["event_time"] == 1591726752372
    assert processed["attributes"]["tags"] == '["single-send"]'
    assert (processed["campaign_id"], processed["ab_test_id"], processed["arm"]) == \
        ("ss-1", "split-7", "A")
    assert processed["subscriber_id"] == BO_ID


def test_group_unsubscribe_scope_and_ipv6_mask():
    unsub = run("mixed.json").events[3]
    assert unsub["attributes"]["unsubscribe_scope"] == "group"
    assert unsub["attributes"]["asm_group_id"] == "42"
    assert unsub["ip"] == "2001:db8:abcd::"
    assert unsub["suspected_bot"] is False


def test_address_valued_custom_arg_is_redacted():
    body = json.dumps([{"email": ANA, "timestamp": 1767268800, "event": "delivered",
                        "sg_message_id": "abc.filter", "reply_to": "Other.Person@Example.com",
                        "note": {"cc": ["third@example.org"]}}]).encode()
    event = run(body).events[0]
    assert event["attributes"]["meta.reply_to"] == \
        "hmac:" + hmac_address("other.person@example.com", KEY)
    assert_no_address(run(body), ANA, "Other.Person@Example.com", "third@example.org")


def test_single_object_body_is_accepted():
    items = json.loads((FIXTURES / "batch.json").read_bytes())
    single = run(json.dumps(items[0]).encode())
    assert single.events == run("batch.json").events[:1]


def test_body_level_errors_keep_the_whole_body():
    for body, code in [(b"", "empty_body"), (b"  \r\n", "empty_body"),
                       (b"[{", "invalid_json"), (b"42", "invalid_format"),
                       (b'[{"event": "open", "timestamp": NaN}]', "invalid_json")]:
        result = run(body)
        assert result.events == []
        assert [(r.code, r.raw) for r in result.rejected] == [(code, body)]
