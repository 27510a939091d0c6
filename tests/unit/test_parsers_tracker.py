"""Our own tracker hits (pixel opens, wrapped-link clicks) -> canonical events."""

import json
from pathlib import Path

import pytest

from udfs.canonical import compute_event_id, hmac_address
from udfs.normalize import NormalizeSettings, normalize

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "webhooks" / "tracker"
KEY = b"test-key"
SETTINGS = NormalizeSettings(hmac_key=KEY)
RECEIVED = 1767300000000
ANA = "ana.silva@example.net"
ANA_ID = hmac_address(ANA, KEY)


def run(body, settings=SETTINGS):
    if isinstance(body, str):
        body = (FIXTURES / body).read_bytes()
    return normalize("tracker", body, "application/json", RECEIVED, settings)


def hit(**changes):
    value = json.loads((FIXTURES / "open.json").read_bytes())
    value.update(changes)
    return {k: v for k, v in value.items() if v is not None}


def body_of(*hits):
    return json.dumps(list(hits)).encode()


def test_pixel_open_exactly():
    result = run("open.json")
    assert result.rejected == [] and result.control is None
    assert result.events == [{
        # Pinned: the gateway's hit_id is the event id source.
        "event_id": "979fa57ed0315b8375bece0aee603fe2",
        "provider": "tracker",
        "event_type": "open",
        "event_time": 1767268800123,
        "received_time": RECEIVED,
        "message_id": "m-20260101-0001",
        "subscriber_id": "u_88213",
        "recipient_domain": None,
        "campaign_id": "spr26",
        "ab_test_id": "subject-test-1",
        "arm": "B",
        "url": None,
        "bounce_class": None,
        "machine_open": None,
        "suspected_bot": False,
        "bot_reason": None,
        "user_agent": "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) "
                      "AppleWebKit/605.1.15",
        "ip": "203.0.113.0",
        "attributes": {"provider_event_id": "0b9f6c2e6a1d4c0e9f3a51f7c2d8e4b1",
                       "provider_event_type": "open"},
    }]
    assert result.events[0]["event_id"] == compute_event_id(
        "tracker", provider_event_id="0b9f6c2e6a1d4c0e9f3a51f7c2d8e4b1")


def test_json_lines_capture():
    result = run("hits.txt")
    click, conversion = result.events
    assert click["event_type"] == "click"
    assert click["subscriber_id"] == ANA_ID
    assert click["recipient_domain"] == "example.net"
    assert click["url"] == f"https://shop.example.com/sale?e=hmac:{ANA_ID}"
    assert (click["suspected_bot"], click["bot_reason"]) == (True, "ua_automation")
    assert click["ip"] == "203.0.113.0"  # IPv4-mapped IPv6 masked as IPv4
    assert click["attributes"]["meta.link"] == "cta-main"
    assert conversion["event_type"] == "conversion"
    assert conversion["event_time"] == 1767270600000
    assert conversion["ip"] is None
    assert (conversion["attributes"]["order_id"], conversion["attributes"]["value"],
            conversion["attributes"]["currency"]) == ("o-991", "42.5", "EUR")
    assert [(r.code, r.raw) for r in result.rejected] == [
        ("invalid_format", json.dumps(json.loads(
            (FIXTURES / "hits.txt").read_text().splitlines()[2]),
            separators=(",", ":")).encode()),
        ("invalid_json", b"{not json"),
    ]
    dumped = json.dumps(result.events).lower()
    assert ANA not in dumped and "ana.silva%40example.net" not in dumped


def test_replayed_hit_keeps_its_id_and_two_hits_never_share_one():
    assert run("open.json").events == run("open.json").events
    first, second = run(body_of(hit(), hit(hit_id="other"))).events
    assert first["event_id"] != second["event_id"]


def test_without_hit_id_the_content_hash_is_used():
    [event] = run(body_of(hit(hit_id=None))).events
    assert event["event_id"] == compute_event_id(
        "tracker", message_id="m-20260101-0001", subscriber_id="u_88213", event_type="open",
        event_time=1767268800123)


def test_meta_wins_over_top_level_for_configured_names():
    settings = NormalizeSettings(hmac_key=KEY, metadata_fields={"tracker": {"arm": "variant"}})
    [event] = run(body_of(hit(meta={"variant": "C"})), settings).events
    assert event["arm"] == "C"
    [event] = run(body_of(hit(meta={"other": "x"})), settings).events
    assert event["arm"] == "B"


@pytest.mark.parametrize("changes, code", [
    ({"type": "click"}, "missing_field"),             # a click needs its url
    ({"type": "bounce"}, "unknown_event_type"),
    ({"ts": None}, "missing_field"),
    ({"ts": 12}, "invalid_timestamp"),
    ({"subscriber_id": None}, "missing_field"),
    ({"subscriber_id": None, "email": "not-an-address"}, "invalid_field"),
    ({"v": "1"}, "invalid_format"),
])
def test_bad_hits(changes, code):
    bad = hit(**changes)
    result = run(body_of(bad, hit()))
    assert len(result.events) == 1
    assert [(r.code, json.loads(r.raw)) for r in result.rejected] == [(code, bad)]
