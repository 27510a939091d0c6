"""Mailchimp Transactional (Mandrill) webhooks -> canonical events (via normalize)."""

import json
from pathlib import Path
from urllib.parse import parse_qs, quote_plus

import pytest

from udfs.canonical import compute_event_id, hmac_address
from udfs.normalize import NormalizeSettings, normalize

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "webhooks" / "mandrill"
FORM = "application/x-www-form-urlencoded"
KEY = b"test-key"
SETTINGS = NormalizeSettings(hmac_key=KEY)
RECEIVED = 1767300000000
SAM = "sam.okafor@example.com"
SAM_ID = hmac_address(SAM, KEY)
MESSAGE = "4e1d2c3b4a5968778695a4b3c2d1e0f9"


def run(body, content_type=FORM, settings=SETTINGS):
    if isinstance(body, str):
        body = (FIXTURES / body).read_bytes()
    return normalize("mandrill", body, content_type, RECEIVED, settings)


def events_of_fixture():
    return json.loads(parse_qs((FIXTURES / "batch.txt").read_text())["mandrill_events"][0])


def form(events):
    return ("mandrill_events=" + quote_plus(json.dumps(events))).encode()


def assert_no_address(result, *addresses):
    dumped = json.dumps(result.events, ensure_ascii=False).lower()
    for address in addresses:
        assert address.lower() not in dumped
        assert address.lower().replace("@", "%40") not in dumped


def test_form_batch_gives_three_events_and_one_dead_letter():
    result = run("batch.txt")
    assert [e["event_type"] for e in result.events] == ["open", "click", "bounce"]
    assert [r.code for r in result.rejected] == ["unknown_event_type"]
    assert "blacklist" in result.rejected[0].message
    # the dead letter is the sync event alone, as JSON, which replays on its own
    assert json.loads(result.rejected[0].raw) == events_of_fixture()[3]
    assert [r.code for r in run(result.rejected[0].raw, "application/json").rejected] == \
        ["unknown_event_type"]
    assert_no_address(result, SAM, "nobody@example.com", "hello@mail.example.com")


def test_open_sample_exactly_and_history_is_not_counted():
    opens = [e for e in run("batch.txt").events if e["event_type"] == "open"]
    # msg.opens holds two entries: still exactly one open, the top-level event
    assert opens == [{
        "event_id": "bad9edee153bbfc050e6817585fff812",  # pinned: content hash
        "provider": "mandrill",
        "event_type": "open",
        "event_time": 1767280000000,  # ts, not msg.ts (the send time)
        "received_time": RECEIVED,
        "message_id": MESSAGE,
        "subscriber_id": SAM_ID,
        "recipient_domain": "example.com",
        "campaign_id": "dg-52",
        "ab_test_id": None,
        "arm": None,
        "url": None,
        "bounce_class": None,
        "machine_open": None,  # Gmail's image proxy fetches when the person opens
        "suspected_bot": False,
        "bot_reason": None,
        "user_agent": "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 "
                      "(via ggpht.com GoogleImageProxy)",
        "ip": "66.249.84.0",
        "attributes": {
            "meta.variant": "2",
            "tags": '["digest","ab-subject-2"]',
            "state": "sent",
            "geo_country": "US",
            "ua_type": "Browser",
            "mobile": "false",
            "provider_event_type": "open",
        },
    }]
    assert opens[0]["event_id"] == compute_event_id(
        "mandrill", message_id=MESSAGE, subscriber_id=SAM_ID, event_type="open",
        event_time=1767280000000)


def test_click_with_robot_ua():
    click = run("batch.txt").events[1]
    assert click["url"] == "https://example.com/digest/52?utm_source=mail"
    assert (click["suspected_bot"], click["bot_reason"]) == (True, "native_robot")
    assert click["machine_open"] is None
    assert click["message_id"] == MESSAGE


def test_prefixed_id_is_reduced_to_the_message_id():
    event = events_of_fixture()[1]
    del event["msg"]["_id"]  # only the top-level "1773449.<id>" form is left
    [click] = run(form([event])).events
    assert click["message_id"] == MESSAGE


def test_hard_bounce_redacts_diag_and_maps_configured_subscriber():
    bounce = run("batch.txt").events[2]
    assert (bounce["event_type"], bounce["bounce_class"]) == ("bounce", "hard")
    nobody = hmac_address("nobody@example.com", KEY)
    assert bounce["attributes"]["diag"] == \
        f"smtp;550 5.1.1 The email account hmac:{nobody} does not exist"
    assert bounce["attributes"]["meta.user_id"] == "7781"
    settings = NormalizeSettings(hmac_key=KEY,
                                 metadata_fields={"mandrill": {"subscriber_id": "user_id"}})
    assert run("batch.txt", settings=settings).events[2]["subscriber_id"] == "7781"


def test_robot_open_is_a_machine_open():
    event = events_of_fixture()[0]
    event["user_agent_parsed"]["type"] = "robot"
    [opened] = run(form([event])).events
    assert opened["machine_open"] is True
    assert opened["bot_reason"] == "native_robot"


def test_whole_batch_retry_keeps_ids_and_json_body_equals_form_body():
    first = run("batch.txt").events
    assert run("batch.txt").events == first
    as_json = run(json.dumps(events_of_fixture()).encode(), "application/json")
    assert as_json.events == first
    # sniffed without a content type too
    assert run((FIXTURES / "batch.txt").read_bytes(), None).events == first


@pytest.mark.parametrize("raw_type, expected", [
    ("send", ("sent", None)), ("delivered", ("delivered", None)),
    ("deferral", ("deferred", None)), ("soft_bounce", ("bounce", "soft")),
    ("hard_bounce", ("bounce", "hard")), ("reject", ("dropped", None)),
    ("spam", ("complaint", None)), ("unsub", ("unsubscribe", None)),
])
def test_type_mapping(raw_type, expected):
    event = events_of_fixture()[0]
    event["event"] = raw_type
    [out] = run(form([event])).events
    assert (out["event_type"], out["bounce_class"]) == expected


@pytest.mark.parametrize("change, code", [
    ({"event": "inbound"}, "unknown_event_type"),
    ({"msg": None}, "missing_field"),
    ({"ts": None}, "missing_field"),
    ({"ts": "1e400"}, "invalid_timestamp"),
])
def test_bad_event_does_not_lose_the_others(change, code):
    good, bad = events_of_fixture()[0], {**events_of_fixture()[1], **change}
    result = run(form([bad, good]))
    assert [e["event_type"] for e in result.events] == ["open"]
    assert [(r.code, json.loads(r.raw)) for r in result.rejected] == [(code, bad)]


@pytest.mark.parametrize("body, code", [
    (b"other_field=1", "missing_field"),
    (b"mandrill_events=%5B%5D&mandrill_events=%5B%5D", "invalid_format"),
    (b"mandrill_events=%FF%FE", "invalid_encoding"),
    (b"mandrill_events=%5Bnot-json", "invalid_json"),
])
def test_bad_form_bodies_dead_letter_the_whole_body(body, code):
    result = run(body)
    assert [(r.code, r.raw) for r in result.rejected] == [(code, body)]


def test_empty_batch_is_nothing():
    assert run("empty.txt") == run(b"mandrill_events=%5B%5D")
    result = run("empty.txt")
    assert (result.events, result.rejected, result.control) == ([], [], None)
