"""Amazon SES (SNS, raw delivery, Firehose) -> canonical events (via normalize)."""

import copy
import json
from pathlib import Path

import pytest

from udfs.canonical import hmac_address
from udfs.normalize import NormalizeSettings, normalize

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "webhooks" / "ses"
KEY = b"test-key"
SETTINGS = NormalizeSettings(hmac_key=KEY)
RECEIVED = 1767300000000
KOFI = "kofi.mensah@example.com"
AMA = "ama.owusu@example.com"
KOFI_ID = hmac_address(KOFI, KEY)
AMA_ID = hmac_address(AMA, KEY)
SES_ID = "0102019a1b2c3d4e-5f6a7b8c-1d2e-4f30-a1b2-c3d4e5f60718-000000"


def run(body, settings=SETTINGS, content_type="text/plain; charset=UTF-8"):
    if isinstance(body, str):
        body = (FIXTURES / body).read_bytes()
    return normalize("ses", body, content_type, RECEIVED, settings)


def fixture(name):
    return json.loads((FIXTURES / name).read_bytes())


def sns_record(name):
    return json.loads(fixture(name)["Message"])


def in_sns(record, message_id="11111111-2222-3333-4444-555555555555"):
    envelope = fixture("sns_open.json")
    envelope["MessageId"] = message_id
    envelope["Message"] = json.dumps(record)
    return json.dumps(envelope).encode()


def assert_no_address(result, *addresses):
    dumped = json.dumps(result.events, ensure_ascii=False).lower()
    for address in addresses:
        assert address.lower() not in dumped
        assert address.lower().replace("@", "%40") not in dumped


def test_sns_open_sample_exactly():
    result = run("sns_open.json")
    assert result.rejected == [] and result.control is None
    assert result.events == [{
        "event_id": "f187daf14c8e6f19c76625b7bdbd7cfe",  # pinned: content hash
        "provider": "ses",
        "event_type": "open",
        "event_time": 1767269130118,  # open.timestamp, not mail.timestamp (the send)
        "received_time": RECEIVED,
        "message_id": SES_ID,
        "subscriber_id": KOFI_ID,
        "recipient_domain": "example.com",
        "campaign_id": None,
        "ab_test_id": None,
        "arm": None,
        "url": None,
        "bounce_class": None,
        "machine_open": True,
        "suspected_bot": True,
        "bot_reason": "heuristic_apple_mpp",
        "user_agent": "Mozilla/5.0",
        "ip": "17.58.63.0",
        "attributes": {
            "meta.campaign": "jan-picks",
            "meta.variant": "b",
            "meta.ses:configuration-set": "marketing-events",
            "meta.ses:from-domain": "mail.example.com",
            "transport_id": "6f0c2a8e-3b71-5d9e-a4c2-91e0b7d3f5aa",
            "rfc_message_id": "<cafe1234.5678@app.example.com>",
            "provider_event_type": "Open",
        },
    }]
    assert_no_address(result, KOFI, "news@mail.example.com")


def test_configured_tag_names():
    settings = NormalizeSettings(hmac_key=KEY, metadata_fields={
        "ses": {"campaign_id": "campaign", "arm": "variant"}})
    event = run("sns_open.json", settings).events[0]
    assert (event["campaign_id"], event["arm"]) == ("jan-picks", "b")


@pytest.mark.parametrize("body, control", [
    ("subscription_confirmation.json", "sns_subscription_confirmation"),
    ("setup_notification.json", "ses_setup_notification"),
    (b"Successfully validated SNS topic for Amazon SES event publishing.",
     "ses_setup_notification"),
    (json.dumps({"Type": "UnsubscribeConfirmation", "MessageId": "x", "Message": "bye",
                 "TopicArn": "arn"}).encode(), "sns_unsubscribe_confirmation"),
])
def test_control_messages_are_neither_events_nor_errors(body, control):
    result = run(body)
    assert (result.events, result.rejected, result.control) == ([], [], control)


def test_bounce_fans_out_per_bounced_recipient():
    result = run("sns_bounce_two_recipients.json")
    assert result.rejected == []
    assert [(e["event_type"], e["bounce_class"], e["subscriber_id"]) for e in result.events] \
        == [("bounce", "hard", KOFI_ID), ("bounce", "hard", AMA_ID)]
    kofi, ama = result.events
    assert kofi["event_id"] != ama["event_id"]
    assert kofi["event_time"] == ama["event_time"] == 1767268809001
    assert kofi["campaign_id"] == "jan-picks"  # tag named like the default
    assert kofi["attributes"]["diagnostic_code"] == f"smtp; 550 5.1.1 user unknown hmac:{KOFI_ID}"
    assert kofi["attributes"]["bounce_subtype"] == "General"
    assert kofi["attributes"]["feedback_id"] == "fb-0001"
    assert "message_recipient_count" not in kofi["attributes"]
    assert_no_address(result, KOFI, AMA)


@pytest.mark.parametrize("bounce_type, sub_type, expected", [
    ("Permanent", "General", ("bounce", "hard")),
    ("Permanent", "NoEmail", ("bounce", "hard")),
    ("Permanent", "Suppressed", ("dropped", None)),
    ("Permanent", "OnAccountSuppressionList", ("dropped", None)),
    ("Transient", "MailboxFull", ("bounce", "soft")),
    ("Undetermined", "Undetermined", ("bounce", None)),
])
def test_bounce_types(bounce_type, sub_type, expected):
    record = sns_record("sns_bounce_two_recipients.json")
    record["bounce"].update(bounceType=bounce_type, bounceSubType=sub_type)
    events = run(in_sns(record)).events
    assert {(e["event_type"], e["bounce_class"]) for e in events} == {expected}


@pytest.mark.parametrize("bounce_type, code", [(None, "missing_field"),
                                               ("Sideways", "invalid_field")])
def test_bad_bounce_type(bounce_type, code):
    record = sns_record("sns_bounce_two_recipients.json")
    record["bounce"]["bounceType"] = bounce_type
    body = in_sns(record)
    result = run(body)
    assert [(r.code, r.raw) for r in result.rejected] == [(code, body)]


def test_open_tracked_per_message_fans_out_and_says_so():
    record = sns_record("sns_open.json")
    record["mail"]["destination"] = [KOFI, AMA]
    events = run(in_sns(record)).events
    assert [e["subscriber_id"] for e in events] == [KOFI_ID, AMA_ID]
    assert {e["attributes"]["message_recipient_count"] for e in events} == {"2"}


def test_raw_delivery_click_redacts_address_in_url():
    result = run("raw_click.json", content_type="application/json")
    [click] = result.events
    assert click["event_type"] == "click"
    assert click["url"] == f"https://shop.example.com/jan?ref=mail&u=hmac:{KOFI_ID}"
    assert click["attributes"]["link_tags"] == '{"slot":["hero"]}'
    assert click["event_time"] == 1767269400000
    assert click["suspected_bot"] is False and click["machine_open"] is None
    assert_no_address(result, KOFI)


def test_same_record_via_sns_or_raw_delivery_has_the_same_event_id():
    raw = fixture("raw_click.json")
    via_raw = run(json.dumps(raw).encode()).events[0]["event_id"]
    via_sns = run(in_sns(raw)).events[0]["event_id"]
    via_sns_retry = run(in_sns(raw)).events[0]["event_id"]
    assert via_raw == via_sns == via_sns_retry


def test_firehose_request_keeps_good_records():
    result = run("firehose.json", content_type="application/json")
    assert [(e["event_type"], e["attributes"]["provider_event_type"]) for e in result.events] \
        == [("delivered", "Delivery"), ("dropped", "Rendering Failure")]
    delivered, render = result.events
    assert delivered["event_time"] == 1767268805500
    assert delivered["attributes"]["firehose_request_id"] == \
        "ed4acda5-034f-9f42-bba1-f29aea6d7d8f"
    assert render["event_time"] == 1767268802415  # send-time failure: mail.timestamp
    assert render["attributes"]["template"] == "jan-picks-v2"
    assert [r.code for r in result.rejected] == ["unknown_event_type", "invalid_encoding"]
    # the decoded record is dead-lettered, and replays alone as a raw-delivery body
    replay = run(result.rejected[0].raw)
    assert [r.code for r in replay.rejected] == ["unknown_event_type"]
    assert json.loads(result.rejected[1].raw) == {
        **fixture("firehose.json"), "records": [{"data": "!!!not base64"}]}
    assert_no_address(result, KOFI, AMA)


def test_json_lines_from_firehose_to_s3():
    lines = [json.dumps(fixture("raw_click.json")), json.dumps(sns_record("sns_open.json"))]
    result = run("\n".join(lines).encode())
    assert [e["event_type"] for e in result.events] == ["click", "open"]


def _record(event_type, payload_key, payload, destination=(KOFI,)):
    record = copy.deepcopy(sns_record("sns_open.json"))
    record.pop("open")
    record["eventType"] = event_type
    record["mail"]["destination"] = list(destination)
    if payload_key:
        record[payload_key] = payload
    return record


@pytest.mark.parametrize("record, expected", [
    (_record("Send", "send", {}), [("sent", 1767268802415, KOFI_ID)]),
    (_record("Reject", "reject", {"reason": "Bad content"}),
     [("dropped", 1767268802415, KOFI_ID)]),
    (_record("DeliveryDelay", "deliveryDelay", {
        "timestamp": "2026-01-01T12:30:00.000Z", "delayType": "TransientCommunicationFailure",
        "delayedRecipients": [{"emailAddress": AMA, "status": "4.4.1"}]}, (KOFI, AMA)),
     [("deferred", 1767270600000, AMA_ID)]),
    (_record("Complaint", "complaint", {
        "timestamp": "2026-01-01T13:00:00.000Z", "complaintFeedbackType": "abuse",
        "feedbackId": "fb-2", "complainedRecipients": [{"emailAddress": KOFI}]}),
     [("complaint", 1767272400000, KOFI_ID)]),
    (_record("Subscription", "subscription", {
        "timestamp": "2026-01-01T14:00:00.000Z", "contactList": "news",
        "newTopicPreferences": {"unsubscribeAll": True}}),
     [("unsubscribe", 1767276000000, KOFI_ID)]),
    (_record("Subscription", "subscription", {
        "timestamp": "2026-01-01T14:00:00.000Z", "contactList": "news",
        "newTopicPreferences": {"topicSubscriptionStatus": [
            {"topicName": "sales", "subscriptionStatus": "OptOut"}]},
        "oldTopicPreferences": {"topicSubscriptionStatus": [
            {"topicName": "sales", "subscriptionStatus": "OptIn"}]}}),
     [("unsubscribe", 1767276000000, KOFI_ID)]),
])
def test_other_event_types(record, expected):
    result = run(in_sns(record))
    assert result.rejected == []
    assert [(e["event_type"], e["event_time"], e["subscriber_id"]) for e in result.events] \
        == expected


def test_topic_unsubscribe_names_the_topics():
    record = _record("Subscription", "subscription", {
        "timestamp": "2026-01-01T14:00:00.000Z", "newTopicPreferences": {
            "topicSubscriptionStatus": [{"topicName": "sales", "subscriptionStatus": "OptOut"}]}})
    attributes = run(in_sns(record)).events[0]["attributes"]
    assert (attributes["unsubscribe_scope"], attributes["topics"]) == ("topic", '["sales"]')


def test_identity_notification_uses_notification_type():
    record = _record("Delivery", "delivery", {"timestamp": "2026-01-01T12:00:05.500Z",
                                              "recipients": [KOFI]})
    record["notificationType"] = record.pop("eventType")
    assert [e["event_type"] for e in run(in_sns(record)).events] == ["delivered"]


@pytest.mark.parametrize("record, code", [
    (_record("Subscription", "subscription", {
        "timestamp": "2026-01-01T14:00:00.000Z",
        "newTopicPreferences": {"unsubscribeAll": False}}), "unknown_event_type"),
    (_record("Open", "open", {"ipAddress": "17.58.63.20"}), "missing_field"),  # no open time
    (_record("Open", "open", {"timestamp": "2026-01-01T25:00:00Z"}), "invalid_timestamp"),
    (_record("Bounce", "bounce", {"bounceType": "Permanent", "timestamp":
                                  "2026-01-01T12:00:00Z", "bouncedRecipients": []}),
     "missing_field"),
    ({"eventType": "Open"}, "missing_field"),            # no mail object
    ({"eventType": "Open", "mail": []}, "invalid_format"),
    ({"mail": {"messageId": "x"}}, "missing_field"),       # no event type
])
def test_bad_records(record, code):
    result = run(in_sns(record))
    assert result.events == []
    assert [r.code for r in result.rejected] == [code]


@pytest.mark.parametrize("envelope, code", [
    ({"Type": "Notification", "MessageId": "x", "TopicArn": "a", "Message": "{not json"},
     "invalid_json"),
    ({"Type": "Notification", "MessageId": "x", "TopicArn": "a"}, "missing_field"),
    ({"Type": "Weird", "MessageId": "x", "TopicArn": "a", "Message": "{}"}, "invalid_format"),
])
def test_bad_sns_envelopes_dead_letter_the_whole_body(envelope, code):
    body = json.dumps(envelope).encode()
    result = run(body)
    assert [(r.code, r.raw) for r in result.rejected] == [(code, body)]
