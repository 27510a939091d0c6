"""Signed webhooks over real HTTP -> the gateway (in-process, real Kafka writer) ->
email.raw -> the normalize job on the local Flink cluster -> email.events / email.dlq,
checked record by record; and a capture file replayed into email.raw by
`python -m gateway.replay`.

Secrets are generated here (EC P-256 for SendGrid, an RSA certificate for SNS, HMAC keys,
basic-auth credentials), the SNS certificate is served from a local cert_dir, and the
expected events are computed by the unit-tested reference (udfs.normalize.normalize) on
the very bytes that reached email.raw, plus hard-coded counts from the fixtures."""

from __future__ import annotations

import base64
import datetime as dt
import http.client
import json
import secrets
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric import ec, rsa

import settings
from devtools import flink_rest, kafka_io
from devtools import webhook_signing as signing
from gateway import tracking
from gateway.capture import REDACTED, Captured, CaptureWriter
from gateway.config import GatewaySettings
from gateway.kafka_writer import KafkaRawWriter
from gateway.server import PIXEL_GIF, Gateway, make_server
from jobs.__main__ import submit
from stack import kafka
from udfs.normalize import NormalizeSettings, normalize

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "webhooks"
TOPIC_ARN = "arn:aws:sns:eu-west-1:210987654321:ses-engagement"
MANDRILL_URL = "https://hooks.example.com/webhooks/mandrill"
CLICK_TARGET = "https://shop.example.com/sale?utm_content=e2e"
RECIPIENTS = ("ana.silva@example.net", "li.wei@example.org", "kofi.mensah@example.com",
              "ama.owusu@example.com", "maria.gonzalez@example.com", "jo.nakamura@example.jp",
              "sam.okafor@example.com", "nobody@example.com")

# From the fixtures (see the unit tests of each parser): what each request must become.
EXPECTED_TYPES = Counter({
    ("sendgrid", "delivered"): 1, ("sendgrid", "open"): 1, ("sendgrid", "click"): 1,
    ("mailgun", "click"): 1,
    ("ses", "bounce"): 2,  # one SNS notification, two bounced recipients
    ("postmark", "bounce"): 1,
    ("sparkpost", "click"): 1,
    ("mandrill", "open"): 1, ("mandrill", "click"): 1, ("mandrill", "bounce"): 1,
    ("tracker", "open"): 1, ("tracker", "click"): 1,
})
# The malformed (signed) SendGrid body, and Mandrill's blacklist item (not an event type).
EXPECTED_DEAD = Counter({("sendgrid", "invalid_json"): 1,
                         ("mandrill", "unknown_event_type"): 1})
# 6 signed webhooks + the malformed one + pixel + click; the bad signature writes nothing.
EXPECTED_RAW = 9


# --- secrets and signing -------------------------------------------------------------------

def sendgrid_headers(key: ec.EllipticCurvePrivateKey, body: bytes) -> dict[str, str]:
    return signing.sendgrid_headers(key, body, int(time.time()))


def mailgun_body(key: str, fixture: bytes) -> bytes:
    # The HMAC covers timestamp + token only; a fresh pair keeps it inside the window.
    data = json.loads(fixture)
    data["signature"] = signing.mailgun_signature(key, int(time.time()),
                                                  secrets.token_hex(25))
    return json.dumps(data).encode()


def sns_body(key: rsa.RSAPrivateKey, cert_url: str, fixture: bytes) -> bytes:
    message = json.loads(fixture)
    message["Timestamp"] = dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds") \
        .replace("+00:00", "Z")
    return json.dumps(signing.sign_sns(message, key, cert_url)).encode()


def mandrill_signature(key: str, body: bytes) -> str:
    return signing.mandrill_signature(key, MANDRILL_URL, body)


basic = signing.basic_auth


# --- Kafka and config helpers --------------------------------------------------------------

def read_raw(bootstrap: str, topic: str, timeout_s: float = 30.0) -> list[Any]:
    """Every record of a topic up to its current end offsets (keys, values, headers)."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                             enable_auto_commit=False)
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        end = consumer.end_offsets(partitions)
        records: list[Any] = []
        deadline = time.monotonic() + timeout_s
        while any(consumer.position(tp) < end[tp] for tp in partitions):
            assert time.monotonic() < deadline, f"{topic}: not read to its end in time"
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend(batch)
        return records
    finally:
        consumer.close()


def total(bootstrap: str, topic: str) -> int:
    return sum(kafka_io.end_offsets(bootstrap, topic).values())


def write_override(e2e_path: str, target: Path, extra: dict[str, Any]) -> str:
    """The e2e override (per-run topics) plus ``extra``, as one file: settings.load takes
    one override file."""
    data = yaml.safe_load(Path(e2e_path).read_text()) or {}
    for section, values in extra.items():
        merged = data.setdefault(section, {})
        for key, value in values.items():
            if isinstance(value, dict) and isinstance(merged.get(key), dict):
                merged[key] = {**merged[key], **value}
            else:
                merged[key] = value
    target.write_text(yaml.safe_dump(data))
    return str(target)


def call(port: int, method: str, path: str, body: bytes | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


# --- the test ------------------------------------------------------------------------------

def test_signed_webhooks_through_gateway_and_flink_give_exact_events_and_dead_letters(
        e2e_config, tmp_path):
    _, e2e_path, tag = e2e_config
    keys = signing.ProviderKeys(tmp_path, f"SimpleNotificationService-e2e-{tag}.pem",
                                f"postmark-{tag}")
    config_path = write_override(e2e_path, tmp_path / "gateway.yaml",
                                 {"gateway": keys.gateway_section(
                                     MANDRILL_URL, TOPIC_ARN, redirect_hosts=["example.com"])})
    config = settings.load(config_path)
    bootstrap = config["kafka"]["bootstrap_servers"]
    raw_topic = settings.topic(config, "raw")

    # The job reads email.raw from the beginning (group offsets, earliest reset), so it
    # can start while the requests are sent: submitting is the slow part of the test.
    pool = ThreadPoolExecutor(max_workers=1)
    submitted = pool.submit(submit, "normalize", config, config_path)

    writer = KafkaRawWriter(bootstrap, raw_topic, timeout_s=10.0)
    capture_path = tmp_path / "capture.jsonl"
    gateway = Gateway(GatewaySettings.from_config(config), writer,
                      capture=CaptureWriter(capture_path))
    assert gateway.warnings() == []  # every provider verified, with its secrets set
    server = make_server(gateway, "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                     daemon=True).start()
    port = server.server_address[1]
    job_id = None
    try:
        fixture = {p: (FIXTURES / p / f).read_bytes() for p, f in (
            ("sendgrid", "batch.json"), ("mailgun", "clicked.json"),
            ("ses", "sns_bounce_two_recipients.json"), ("postmark", "bounce_hard.json"),
            ("sparkpost", "batch.json"), ("mandrill", "batch.txt"))}
        sent: dict[str, tuple[bytes, dict[str, str]]] = {
            "sendgrid": (fixture["sendgrid"],
                         sendgrid_headers(keys.sendgrid, fixture["sendgrid"])),
            "mailgun": (mailgun_body(keys.mailgun, fixture["mailgun"]),
                        {"Content-Type": "application/json"}),
            "ses": (sns_body(keys.sns, keys.cert_url, fixture["ses"]),
                    {"Content-Type": "text/plain; charset=UTF-8",
                     "x-amz-sns-message-type": "Notification"}),
            "postmark": (fixture["postmark"], {"Content-Type": "application/json",
                                               "Authorization": basic(*keys.basic)}),
            "sparkpost": (fixture["sparkpost"], {"Content-Type": "application/json",
                                                 "X-MessageSystems-Webhook-Token":
                                                     keys.sparkpost_token}),
            "mandrill": (fixture["mandrill"], {
                "Content-Type": "application/x-www-form-urlencoded",
                "X-Mandrill-Signature": mandrill_signature(keys.mandrill,
                                                           fixture["mandrill"])}),
        }
        request_ids: dict[str, str] = {}
        for provider, (body, headers) in sent.items():
            status, _, answer = call(port, "POST", f"/webhooks/{provider}", body, headers)
            assert status == 200, (provider, answer)
            request_ids[json.loads(answer)["request_id"]] = provider

        # Signed by somebody else's key: 401, and nothing reaches email.raw.
        forged = sendgrid_headers(ec.generate_private_key(ec.SECP256R1()), fixture["sendgrid"])
        status, _, answer = call(port, "POST", "/webhooks/sendgrid", fixture["sendgrid"],
                                 forged)
        assert (status, json.loads(answer)["reason"]) == (401, "bad_signature")

        # Authentic but broken: accepted (the sender must not retry it forever), and the
        # normalize job dead-letters it with the original bytes.
        malformed = fixture["sendgrid"][:120]
        status, _, answer = call(port, "POST", "/webhooks/sendgrid", malformed,
                                 sendgrid_headers(keys.sendgrid, malformed))
        assert status == 200
        request_ids[json.loads(answer)["request_id"]] = "sendgrid-malformed"

        claims = {"message_id": f"m-{tag}", "subscriber_id": "u_e2e", "campaign_id": "e2e"}
        pixel = tracking.sign_token("o", claims, keys.tracker)
        status, headers, answer = call(port, "GET", f"/t/o/{pixel}.gif",
                                       headers={"User-Agent": "Mozilla/5.0 (e2e)"})
        assert (status, headers["Content-Type"], answer) == (200, "image/gif", PIXEL_GIF)
        click = tracking.sign_token("c", {**claims, "url": CLICK_TARGET}, keys.tracker)
        status, headers, _ = call(port, "GET", f"/t/c/{click}",
                                  headers={"User-Agent": "Mozilla/5.0 (e2e)"})
        assert (status, headers["Location"]) == (302, CLICK_TARGET)
        assert gateway.counters.get("gateway_rejected_total", provider="sendgrid",
                                    reason="bad_signature") == 1

        # email.raw: exactly what was acknowledged, with the gateway's key and headers.
        raw = read_raw(bootstrap, raw_topic)
        assert len(raw) == EXPECTED_RAW
        by_key = {r.key.decode(): r for r in raw}
        assert len(by_key) == EXPECTED_RAW
        bodies = {**{p: b for p, (b, _) in sent.items()}, "sendgrid-malformed": malformed}
        now_ms = int(time.time() * 1000)
        for record in raw:
            headers = dict(record.headers)
            assert [name for name, _ in record.headers] == [
                "provider", "content-type", "received-at", "signature-verified"]
            assert headers["signature-verified"] == b"true"
            assert now_ms - 120_000 < int(headers["received-at"]) <= now_ms
            name = request_ids.get(record.key.decode())
            if name is None:  # a tracker hit: its id is the gateway's hit id
                assert headers["provider"] == b"tracker"
                assert json.loads(record.value)["hit_id"] == record.key.decode()
                continue
            assert record.value == bodies[name]
            assert headers["provider"] == name.split("-")[0].encode()
            content_type = sent.get(name, sent["sendgrid"])[1]["Content-Type"]
            assert headers["content-type"] == content_type.encode()
        assert sorted(json.loads(r.value)["type"] for r in raw
                      if dict(r.headers)["provider"] == b"tracker") == ["click", "open"]

        # The capture holds the same requests, credentials redacted, signatures kept.
        captured = [Captured.from_line(line) for line in capture_path.read_text().splitlines()]
        assert sorted((c.request_id, c.body, c.received_at) for c in captured) == sorted(
            (r.key.decode(), r.value, int(dict(r.headers)["received-at"])) for r in raw)
        by_provider = {c.provider: c for c in captured}
        assert by_provider["postmark"].headers["Authorization"] == REDACTED
        assert by_provider["sparkpost"].headers["X-MessageSystems-Webhook-Token"] == REDACTED
        assert by_provider["mandrill"].headers["X-Mandrill-Signature"] \
            == sent["mandrill"][1]["X-Mandrill-Signature"]

        # The reference: the unit-tested normalizer on the same bytes and headers.
        norm = NormalizeSettings.from_config(config)
        expected_events: list[dict[str, Any]] = []
        expected_dead: list[tuple[str, str, str, bytes, int, int]] = []
        for record in raw:
            headers = {k: v.decode() for k, v in record.headers}
            result = normalize(headers["provider"], record.value, headers["content-type"],
                               int(headers["received-at"]), norm)
            assert result.control is None
            expected_events.extend(result.events)
            expected_dead.extend((r.code, r.message, headers["provider"], r.raw,
                                  record.partition, record.offset) for r in result.rejected)
        assert Counter((e["provider"], e["event_type"]) for e in expected_events) \
            == EXPECTED_TYPES
        assert Counter((d[2], d[0]) for d in expected_dead) == EXPECTED_DEAD

        job_id = submitted.result(timeout=120)
        flink_rest.wait_running(config, job_id)
        events_topic, dlq_topic = settings.topic(config, "events"), settings.topic(config, "dlq")
        events = kafka_io.read_avro(bootstrap, events_topic, "EmailEvent",
                                    until=lambda r: len(r) >= len(expected_events),
                                    timeout_s=60)
        dead = kafka_io.read_avro(bootstrap, dlq_topic, "DeadLetter",
                                  until=lambda r: len(r) >= len(expected_dead), timeout_s=30)
        # Nothing more arrives (no duplicates, nothing extra), given a moment to show up.
        time.sleep(2)
        assert total(bootstrap, events_topic) == len(expected_events)
        assert total(bootstrap, dlq_topic) == len(expected_dead)

        assert all(e.pop("_key") == e["event_id"].encode() for e in events)
        assert sorted(events, key=lambda e: e["event_id"]) == sorted(
            expected_events, key=lambda e: e["event_id"])
        assert Counter(e["provider"] for e in events) == Counter(
            {"sendgrid": 3, "mailgun": 1, "ses": 2, "postmark": 1, "sparkpost": 1,
             "mandrill": 3, "tracker": 2})
        assert len({e["event_id"] for e in events}) == len(events)
        # The recipients' addresses never leave the normalize step.
        text = json.dumps(events, default=str).lower()
        assert not [a for a in RECIPIENTS if a in text]

        assert sorted((d["error_code"], d["error_message"], d["provider"], d["raw_value"],
                       d["source_partition"], d["source_offset"]) for d in dead) \
            == sorted(expected_dead)
        assert {d["source_topic"] for d in dead} == {raw_topic}
        broken = next(d for d in dead if d["error_code"] == "invalid_json")
        assert broken["raw_value"] == malformed
    finally:
        server.shutdown()
        server.server_close()
        writer.close()
        gateway.close()
        if job_id is None:
            try:
                job_id = submitted.result(timeout=120)
            except Exception:
                job_id = None
        pool.shutdown(wait=False)
        if job_id is not None:
            flink_rest.cancel(config, job_id)


def test_replay_writes_a_capture_file_into_email_raw_byte_for_byte(e2e_config, tmp_path):
    _, e2e_path, tag = e2e_config
    raw_topic = f"email.raw.e2e-{tag}.replay"
    config_path = write_override(e2e_path, tmp_path / "replay.yaml",
                                 {"kafka": {"topics": {"raw": {"name": raw_topic}}}})
    config = settings.load(config_path)
    kafka.ensure_topics(config)
    bootstrap = config["kafka"]["bootstrap_servers"]

    lines = [
        {"provider": "sendgrid", "content_type": "application/json",
         "headers": {"X-Twilio-Email-Event-Webhook-Timestamp": "1767268890"},
         "body": (FIXTURES / "sendgrid" / "batch.json").read_bytes(),
         "received_at": 1767268900123, "request_id": f"req-{tag}-1",
         "signature_verified": True},
        {"provider": "mandrill", "content_type": "application/x-www-form-urlencoded",
         "headers": {}, "body": (FIXTURES / "mandrill" / "batch.txt").read_bytes(),
         "received_at": 1767268900456},
        # Not UTF-8 and with CRLFs: base64 carries any bytes unchanged.
        {"provider": "postmark", "content_type": "application/json; charset=latin-1",
         "headers": {}, "body": b'{"RecordType": "Open", "x": "\xe9\xff"}\r\n\x00',
         "received_at": 1767268900789},
        {"provider": "tracker", "content_type": "application/json", "headers": {},
         "body": (FIXTURES / "tracker" / "open.json").read_bytes(),
         "received_at": 1767268901000},
    ]
    capture = tmp_path / "capture.jsonl"
    with capture.open("w") as handle:
        for line in lines:
            data = {k: v for k, v in line.items() if k != "body"}
            data["body_b64"] = base64.b64encode(line["body"]).decode()
            handle.write(json.dumps(data) + "\n\n")  # blank lines are allowed

    def replay(path: Path) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "gateway.replay", "--config", config_path, "--file",
             str(path), "--rate", "100"], cwd=ROOT, capture_output=True, text=True,
            timeout=60)

    result = replay(capture)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"4 request(s) read, 4 written to {raw_topic}, 0 failed" in result.stdout

    # A broken line anywhere: refused before anything is written.
    broken = tmp_path / "broken.jsonl"
    broken.write_text(capture.read_text() + '{"provider": "sendgrid", "content_type": "", '
                      '"body_b64": "!!", "received_at": 1}\n')
    result = replay(broken)
    assert result.returncode == 2
    assert "broken.jsonl:9: body_b64 is not base64" in result.stderr

    records = read_raw(bootstrap, raw_topic)
    assert len(records) == len(lines)
    by_body = {r.value: r for r in records}
    for line in lines:
        record = by_body[line["body"]]
        assert record.headers == [
            ("provider", line["provider"].encode()),
            ("content-type", line["content_type"].encode()),
            ("received-at", str(line["received_at"]).encode()),
            ("signature-verified", b"true" if line.get("signature_verified") else b"false")]
        if "request_id" in line:
            assert record.key == line["request_id"].encode()
        else:
            assert len(record.key) == 32 and int(record.key, 16) >= 0
