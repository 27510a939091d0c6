"""The gateway over real HTTP on 127.0.0.1 (ephemeral port), with an in-memory producer."""

import http.client
import json
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import quote

import pytest

from gateway import tracking
from gateway.certs import CertStore
from gateway.config import GatewaySettings
from gateway.server import PIXEL_GIF, Gateway, make_server
from tests.unit.test_gateway_signatures import (
    CERT_URL,
    MD_BODY,
    MD_KEY,
    MD_URL,
    MG_KEY,
    SG_BODY,
    SG_PUBLIC,
    SNS_CERT,
    SNS_NOW,
    TOPIC,
    basic,
    mailgun_body,
    mandrill_header,
    sendgrid_headers,
    sns_body,
    sns_message,
)

NOW_MS = int(SNS_NOW * 1000)
TRACK_KEY = "tracker-key-1"
TARGET = "https://shop.example.com/sale?utm_content=b&x=1"
CLAIMS = {"message_id": "m-20260101-0001", "subscriber_id": "u_88213", "campaign_id": "spr26",
          "ab_test_id": "subject-test-1", "arm": "B", "meta": {"link": "cta-main"}}
BASE = {
    "max_body_bytes": 4096,
    "read_timeout_s": 5,
    "verify": {"postmark": False},
    "sendgrid": {"public_key": SG_PUBLIC, "max_age_s": 600},
    "mailgun": {"signing_key": MG_KEY},
    "ses": {"topic_arns": [TOPIC]},
    "mandrill": {"webhook_key": MD_KEY, "url": MD_URL},
    "sparkpost": {"username": "sp", "password": "pw"},
    "tracker": {"keys": [TRACK_KEY], "redirect_hosts": ["example.com"]},
}


class FakeWriter:
    """Stands in for Kafka: keeps what was acknowledged, or fails like a broker outage."""

    def __init__(self):
        self.records = []
        self.fail = False
        self.is_ready = True
        self._lock = threading.Lock()

    def write(self, key, value, headers):
        if self.fail:
            raise TimeoutError("no broker acknowledged the write")
        with self._lock:
            self.records.append((key, value, list(headers)))

    def ready(self):
        return self.is_ready


class Client:
    def __init__(self, server, gateway, writer, confirmed):
        self.host, self.port = server.server_address[:2]
        self.gateway, self.writer, self.confirmed = gateway, writer, confirmed

    def request(self, method, path, body=None, headers=None):
        conn = http.client.HTTPConnection(self.host, self.port, timeout=10)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            response = conn.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            conn.close()

    def raw(self, data):
        """Send raw bytes, return the whole response (the server closes the connection)."""
        with socket.create_connection((self.host, self.port), timeout=10) as sock:
            sock.sendall(data)
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks)

    def metric(self, name, **labels):
        return self.gateway.counters.get(name, **labels)


def merged(base, override):
    out = dict(base)
    for key, value in override.items():
        out[key] = merged(out[key], value) if isinstance(value, dict) and key in out else value
    return out


@pytest.fixture
def serve():
    servers = []

    def start(**overrides):
        writer, confirmed = FakeWriter(), []
        certs = CertStore()
        certs.add(CERT_URL, SNS_CERT)
        gateway = Gateway(GatewaySettings.from_section(merged(BASE, overrides)), writer,
                          clock=lambda: SNS_NOW, certs=certs, confirm=confirmed.append)
        server = make_server(gateway, "127.0.0.1", 0)
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02},
                         daemon=True).start()
        servers.append(server)
        return Client(server, gateway, writer, confirmed)

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture
def client(serve):
    return serve()


# --- health ---------------------------------------------------------------------------------

def test_health_and_readiness(client):
    assert client.request("GET", "/healthz")[::2] == (200, b"ok\n")
    assert client.request("GET", "/readyz")[0] == 200
    client.writer.is_ready = False
    assert client.request("GET", "/readyz")[0] == 503
    assert client.request("HEAD", "/healthz")[0] == 200


# --- webhooks -------------------------------------------------------------------------------

def test_signed_sendgrid_batch_is_written_byte_for_byte(client):
    headers = {**sendgrid_headers(), "Content-Type": "application/json"}
    status, response_headers, body = client.request("POST", "/webhooks/sendgrid", SG_BODY,
                                                    headers)
    assert status == 200
    request_id = json.loads(body)["request_id"]
    assert response_headers["X-Request-Id"] == request_id and len(request_id) == 32
    assert client.writer.records == [(request_id.encode(), SG_BODY, [
        ("provider", b"sendgrid"), ("content-type", b"application/json"),
        ("received-at", str(NOW_MS).encode()), ("signature-verified", b"true")])]


def test_bad_signature_is_401_and_not_written(client):
    headers = {**sendgrid_headers(), "Content-Type": "application/json"}
    status, _, body = client.request("POST", "/webhooks/sendgrid",
                                     SG_BODY.replace(b"open", b"click"), headers)
    assert status == 401
    assert json.loads(body) == {"error": "signature_invalid", "reason": "bad_signature"}
    status, _, _ = client.request("POST", "/webhooks/sendgrid", SG_BODY,
                                  {"Content-Type": "application/json"})
    assert status == 401
    assert client.writer.records == []
    assert client.metric("gateway_rejected_total", provider="sendgrid",
                         reason="bad_signature") == 1
    assert client.metric("gateway_rejected_total", provider="sendgrid",
                         reason="missing_signature") == 1
    metrics = client.request("GET", "/metrics")[2].decode()
    assert 'gateway_rejected_total{provider="sendgrid",reason="bad_signature"} 1' in metrics
    assert 'gateway_requests_total{route="sendgrid",status="401"} 2' in metrics


def test_mailgun_token_is_accepted_once(client):
    body = mailgun_body()
    assert client.request("POST", "/webhooks/mailgun", body)[0] == 200
    # The sender's retry of the same request: acknowledged, not written again.
    status, _, reply = client.request("POST", "/webhooks/mailgun", body)
    assert (status, json.loads(reply)) == (200, {"status": "duplicate"})
    # The same signature block on another body is a replay.
    forged = body.replace(b'"opened"', b'"unsubscribed"')
    status, _, reply = client.request("POST", "/webhooks/mailgun", forged)
    assert (status, json.loads(reply)["reason"]) == (401, "token_replayed")
    assert [value for _, value, _ in client.writer.records] == [body]


def test_mailgun_retry_after_kafka_failure_is_accepted(client):
    client.writer.fail = True
    assert client.request("POST", "/webhooks/mailgun", mailgun_body())[0] == 503
    client.writer.fail = False
    assert client.request("POST", "/webhooks/mailgun", mailgun_body())[0] == 200
    assert len(client.writer.records) == 1


def test_producer_failure_is_503_and_nothing_claimed(client):
    client.writer.fail = True
    status, _, body = client.request("POST", "/webhooks/sendgrid", SG_BODY, sendgrid_headers())
    assert (status, json.loads(body)) == (503, {"error": "kafka_unavailable"})
    assert client.metric("gateway_write_failures_total", provider="sendgrid") == 1


def test_verification_off_writes_signature_verified_false(client):
    body = b'{"RecordType":"Open","MessageID":"3c0e"}'
    status, _, _ = client.request("POST", "/webhooks/postmark", body,
                                  {"Content-Type": "application/json"})
    assert status == 200
    [(_, value, headers)] = client.writer.records
    assert value == body and ("signature-verified", b"false") in headers


def test_basic_auth_providers(serve):
    client = serve(verify={"postmark": True}, postmark={"username": "pm", "password": "pw"})
    assert client.request("POST", "/webhooks/postmark", b"{}", basic("pm", "pw"))[0] == 200
    assert client.request("POST", "/webhooks/postmark", b"{}", basic("pm", "no"))[0] == 401
    assert client.request("POST", "/webhooks/sparkpost", b"[]", basic("sp", "pw"))[0] == 200
    assert len(client.writer.records) == 2


def test_unconfigured_provider_is_503_so_the_sender_retries(serve):
    client = serve(sparkpost={"username": "", "password": ""})
    assert client.request("POST", "/webhooks/sparkpost", b"[]", basic("sp", "pw"))[0] == 503
    assert client.writer.records == []
    assert any("sparkpost" in w for w in client.gateway.warnings())
    broken = serve(sendgrid={"public_key": "not a key"})
    assert broken.request("POST", "/webhooks/sendgrid", SG_BODY, sendgrid_headers())[0] == 503


def test_mandrill_form_post_keeps_its_content_type(client):
    headers = {**mandrill_header(), "Content-Type": "application/x-www-form-urlencoded"}
    assert client.request("POST", "/webhooks/mandrill", MD_BODY, headers)[0] == 200
    [(_, value, kafka_headers)] = client.writer.records
    assert value == MD_BODY
    assert ("content-type", b"application/x-www-form-urlencoded") in kafka_headers
    # Mandrill checks the URL with HEAD before it issues a key.
    assert client.request("HEAD", "/webhooks/mandrill")[0] == 200


def test_sns_notification_with_injected_certificate(client):
    body = sns_body(sns_message())
    headers = {"Content-Type": "text/plain; charset=UTF-8",
               "x-amz-sns-message-type": "Notification"}
    assert client.request("POST", "/webhooks/ses", body, headers)[0] == 200
    assert client.writer.records[0][1] == body
    tampered = body.replace(b"Open", b"Click")
    assert client.request("POST", "/webhooks/ses", tampered, headers)[0] == 401


def test_sns_subscription_confirmation_is_logged_not_visited_by_default(client, caplog):
    message = sns_message(kind="SubscriptionConfirmation")
    with caplog.at_level("WARNING", logger="gateway"):
        assert client.request("POST", "/webhooks/ses", sns_body(message))[0] == 200
    assert client.confirmed == []
    assert message["SubscribeURL"] in caplog.text
    assert len(client.writer.records) == 1  # kept: the normalize step treats it as control


def test_sns_subscription_confirmation_visited_when_configured(serve):
    client = serve(ses={"confirm_subscriptions": True})
    message = sns_message(kind="SubscriptionConfirmation")
    assert client.request("POST", "/webhooks/ses", sns_body(message))[0] == 200
    assert client.confirmed == [message["SubscribeURL"]]


def test_routes_and_methods(client):
    assert client.request("POST", "/webhooks/nosuch", b"{}")[0] == 404
    assert client.request("POST", "/elsewhere", b"{}")[0] == 404
    assert client.request("GET", "/webhooks/sendgrid")[0] == 405
    assert client.request("GET", "/nothing")[0] == 404
    assert client.request("PUT", "/webhooks/sendgrid", b"{}")[0] == 501
    assert client.metric("gateway_requests_total", route="other", status="404") == 2


# --- body limits and framing -----------------------------------------------------------------

def test_oversized_body_is_413_and_not_written(client):
    status, headers, _ = client.request("POST", "/webhooks/postmark", b"x" * 4097)
    assert status == 413 and headers["Connection"] == "close"
    assert client.request("POST", "/webhooks/postmark", b"x" * 4096)[0] == 200
    assert [len(v) for _, v, _ in client.writer.records] == [4096]


def test_oversized_body_refused_before_100_continue(client):
    reply = client.raw(b"POST /webhooks/postmark HTTP/1.1\r\nHost: t\r\n"
                       b"Content-Length: 999999\r\nExpect: 100-continue\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 413") and b"100 Continue" not in reply


def test_chunked_bodies_are_reassembled_and_limited(client):
    chunked = (b"POST /webhooks/postmark HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
               b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\n")
    assert client.raw(chunked).startswith(b"HTTP/1.1 200")
    assert client.writer.records[0][1] == b"hello world"
    big = (b"POST /webhooks/postmark HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
           b"1001\r\n" + b"x" * 4097 + b"\r\n0\r\n\r\n")
    assert client.raw(big).startswith(b"HTTP/1.1 413")
    assert len(client.writer.records) == 1


def test_missing_length_is_411(client):
    reply = client.raw(b"POST /webhooks/postmark HTTP/1.1\r\nHost: t\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 411")


def test_keep_alive_and_concurrency(client):
    conn = http.client.HTTPConnection(client.host, client.port, timeout=10)
    for i in range(3):
        conn.request("POST", "/webhooks/postmark", body=f'{{"n":{i}}}'.encode())
        response = conn.getresponse()
        assert response.status == 200
        response.read()
    conn.close()
    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(
            lambda i: client.request("POST", "/webhooks/postmark", f'{{"n":{i}}}'.encode())[0],
            range(3, 43)))
    assert statuses == [200] * 40
    assert sorted(json.loads(v)["n"] for _, v, _ in client.writer.records) == list(range(43))
    assert len({k for k, _, _ in client.writer.records}) == 43  # one request id each


# --- tracking -------------------------------------------------------------------------------

def pixel_path(claims=CLAIMS, key=TRACK_KEY):
    return f"/t/o/{tracking.sign_token('o', claims, key)}.gif"


def click_path(url=TARGET, key=TRACK_KEY, kind="c"):
    return f"/t/c/{tracking.sign_token(kind, {**CLAIMS, 'url': url}, key)}"


def test_pixel_returns_a_gif_and_records_the_open(client):
    ua = "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X)"
    status, headers, body = client.request("GET", pixel_path(), headers={"User-Agent": ua})
    assert (status, headers["Content-Type"], body) == (200, "image/gif", PIXEL_GIF)
    assert "no-store" in headers["Cache-Control"]
    assert PIXEL_GIF.startswith(b"GIF89a\x01\x00\x01\x00") and PIXEL_GIF.endswith(b";")
    [(key, value, kafka_headers)] = client.writer.records
    hit = json.loads(value)
    assert hit == {"v": 1, "type": "open", "hit_id": key.decode(), "ts": NOW_MS,
                   **CLAIMS, "user_agent": ua, "ip": "127.0.0.1"}
    assert kafka_headers == [("provider", b"tracker"), ("content-type", b"application/json"),
                             ("received-at", str(NOW_MS).encode()),
                             ("signature-verified", b"true")]


def test_click_redirects_only_to_the_sealed_url(client):
    status, headers, _ = client.request("GET", click_path())
    assert (status, headers["Location"]) == (302, TARGET)
    hit = json.loads(client.writer.records[0][1])
    assert (hit["type"], hit["url"]) == ("click", TARGET)
    # A readable copy of the target is fine when it matches, refused when it does not.
    assert client.request("GET", click_path() + "?u=" + quote(TARGET, safe=""))[0] == 302
    status, headers, _ = client.request("GET", click_path() + "?u=https%3A%2F%2Fevil.example")
    assert status == 400 and "Location" not in headers
    assert len(client.writer.records) == 2


@pytest.mark.parametrize("path", [
    click_path(key="someone-elses-key"),
    click_path(kind="o").replace("/t/c/", "/t/c/x"),
    pixel_path().replace("/t/o/", "/t/c/").removesuffix(".gif"),   # pixel token as a link
    "/t/c/not-a-token",
    click_path(url="https://evil.example/"),                       # not in redirect_hosts
    pixel_path(key="someone-elses-key"),
])
def test_bad_tracking_tokens_are_400_and_never_redirect(client, path):
    status, headers, _ = client.request("GET", path)
    assert status == 400 and "Location" not in headers
    assert client.writer.records == []


def test_tampered_click_token_is_refused(client):
    token = click_path().removeprefix("/t/c/")
    _, mac = token.split(".")
    evil = tracking._b64(json.dumps({**CLAIMS, "url": "https://shop.example.com/x"}).encode())
    assert client.request("GET", f"/t/c/{evil}.{mac}")[0] == 400


def test_tracking_when_kafka_is_down(serve):
    client = serve()
    client.writer.fail = True
    assert client.request("GET", pixel_path())[0] == 503
    # The reader still gets where they clicked; the lost hit is counted.
    status, headers, _ = client.request("GET", click_path())
    assert (status, headers["Location"]) == (302, TARGET)
    assert client.metric("gateway_tracker_hits_lost_total", kind="click") == 1
    strict = serve(tracker={"redirect_when_kafka_down": False})
    strict.writer.fail = True
    assert strict.request("GET", click_path())[0] == 503


def test_tracker_without_keys_is_503(serve):
    client = serve(tracker={"keys": []})
    assert client.request("GET", pixel_path())[0] == 503


def test_client_ip_from_trusted_proxy(serve):
    client = serve(trusted_proxy_hops=1)
    client.request("GET", pixel_path(), headers={"X-Forwarded-For": "1.2.3.4, 203.0.113.77"})
    assert json.loads(client.writer.records[0][1])["ip"] == "203.0.113.77"
    direct = serve()
    direct.request("GET", pixel_path(), headers={"X-Forwarded-For": "203.0.113.77"})
    assert json.loads(direct.writer.records[0][1])["ip"] == "127.0.0.1"
