"""Gateway authenticity checks with real crypto: keys and certificates made here, no network."""

import base64
import datetime as dt
import hashlib
import hmac
import json
from urllib.parse import quote

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

import settings
from gateway import signatures as sig
from gateway import tracking
from gateway.certs import CertError, CertStore
from gateway.config import DEFAULTS, GatewaySettings
from gateway.mailgun_tokens import Check, ReplayGuard
from udfs.normalize import NormalizeSettings, normalize

NOW = 1767268900.0


# --- SendGrid -----------------------------------------------------------------------------

SG_KEY = ec.generate_private_key(ec.SECP256R1())
SG_PUBLIC = base64.b64encode(SG_KEY.public_key().public_bytes(
    serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)).decode()
# Real SendGrid bodies put CRLF after each array element; the signature covers those bytes.
SG_BODY = (b'[{"email":"ana@example.net","timestamp":1767268800,"event":"open",'
           b'"sg_event_id":"q1W9","sg_message_id":"7Hq2.filter0"}\r\n]\r\n')


def sendgrid_headers(body=SG_BODY, stamp="1767268890", key=SG_KEY):
    der = key.sign(stamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    return {"X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(der).decode(),
            "X-Twilio-Email-Event-Webhook-Timestamp": stamp}


SG_SECRETS = {"public_key": SG_PUBLIC, "max_age_s": 600}


def test_sendgrid_accepts_its_own_signature():
    assert sig.verify_sendgrid(sendgrid_headers(), SG_BODY, SG_SECRETS, NOW) == sig.OK


def test_sendgrid_headers_are_case_insensitive_and_pem_keys_work():
    headers = {k.lower(): v for k, v in sendgrid_headers().items()}
    pem = SG_KEY.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    assert sig.verify_sendgrid(headers, SG_BODY, {"public_key": pem}, NOW).ok


@pytest.mark.parametrize(("case", "reason"), [
    ("tampered_body", "bad_signature"),
    ("reserialised_body", "bad_signature"),
    ("wrong_key", "bad_signature"),
    ("timestamp_swapped", "bad_signature"),
    ("stale", "stale_timestamp"),
    ("future", "future_timestamp"),
    ("no_signature", "missing_signature"),
    ("garbage_signature", "malformed_signature"),
    ("non_numeric_timestamp", "malformed_timestamp"),
])
def test_sendgrid_rejections(case, reason):
    headers, body, now = sendgrid_headers(), SG_BODY, NOW
    if case == "tampered_body":
        body = SG_BODY.replace(b'"open"', b'"click"')
    elif case == "reserialised_body":
        body = json.dumps(json.loads(SG_BODY)).encode()
    elif case == "wrong_key":
        headers = sendgrid_headers(key=ec.generate_private_key(ec.SECP256R1()))
    elif case == "timestamp_swapped":
        headers["X-Twilio-Email-Event-Webhook-Timestamp"] = "1767268891"
    elif case == "stale":
        now = NOW + 601
    elif case == "future":
        now = 1767268890 - sig.MAX_FUTURE_SKEW_S - 1
    elif case == "no_signature":
        del headers["X-Twilio-Email-Event-Webhook-Signature"]
    elif case == "garbage_signature":
        headers["X-Twilio-Email-Event-Webhook-Signature"] = "not base64!"
    elif case == "non_numeric_timestamp":
        headers = sendgrid_headers(stamp="12a")
    assert sig.verify_sendgrid(headers, body, SG_SECRETS, now) == sig.Verdict(False, reason)


def test_sendgrid_unusable_key_is_not_configured():
    p384 = ec.generate_private_key(ec.SECP384R1()).public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    for secrets in ({}, {"public_key": "%%%"}, {"public_key": base64.b64encode(p384).decode()}):
        assert sig.verify_sendgrid(sendgrid_headers(), SG_BODY, secrets, NOW).reason \
            == "not_configured"


# --- Mailgun ------------------------------------------------------------------------------

MG_KEY = "key-3ax6xnjp29jd6fds4gc373sgvjxteol0"
MG_TOKEN = "8c1f0e6ad2b94c7f9b3e55a1d07c6e2f4a9b8d3c1e7f6a5b40"


def mailgun_body(stamp="1767268800", token=MG_TOKEN, key=MG_KEY, field="signature", extra=None):
    digest = hmac.new(key.encode(), (stamp + token).encode(), hashlib.sha256).hexdigest()
    block = {"timestamp": stamp, "token": token, field: digest, **(extra or {})}
    return json.dumps({"signature": block, "event-data": {"event": "opened"}}).encode()


MG_SECRETS = {"signing_key": MG_KEY, "max_age_s": 30600}


def test_mailgun_accepts_and_hands_back_the_token_for_replay_checks():
    verdict = sig.verify_mailgun({}, mailgun_body(), MG_SECRETS, NOW)
    assert verdict == sig.Verdict(True, "ok", replay_key=MG_TOKEN, replay_ts=1767268800.0)


def test_mailgun_parent_signature_of_a_subaccount():
    body = mailgun_body(field="parent-signature", extra={"signature": "0" * 64})
    assert sig.verify_mailgun({}, body, MG_SECRETS, NOW).ok


def test_mailgun_legacy_form_post_is_verified_too():
    stamp = "1767268800"
    digest = hmac.new(MG_KEY.encode(), (stamp + MG_TOKEN).encode(), hashlib.sha256).hexdigest()
    body = f"timestamp={stamp}&token={MG_TOKEN}&signature={digest}&event=opened".encode()
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    assert sig.verify_mailgun(headers, body, MG_SECRETS, NOW).ok


@pytest.mark.parametrize(("body", "now", "reason"), [
    (mailgun_body(key="key-wrong"), NOW, "bad_signature"),
    (mailgun_body().replace(MG_TOKEN.encode(), b"x" * 50, 1), NOW, "bad_signature"),
    (mailgun_body(), 1767268800 + 30601, "stale_timestamp"),
    (mailgun_body(stamp="1767299999"), NOW, "future_timestamp"),
    (mailgun_body(stamp="soon"), NOW, "malformed_timestamp"),
    (b'{"signature": {"timestamp": "1", "token": "t"}}', NOW, "missing_signature"),
    (b'{"event-data": {}}', NOW, "malformed_body"),
    (b"not json", NOW, "malformed_body"),
])
def test_mailgun_rejections(body, now, reason):
    assert sig.verify_mailgun({}, body, MG_SECRETS, now) == sig.Verdict(False, reason)


def test_mailgun_without_key_is_not_configured():
    assert sig.verify_mailgun({}, mailgun_body(), {}, NOW).reason == "not_configured"


# --- Mailgun token replay -----------------------------------------------------------------

def test_replay_guard_accepts_a_token_once():
    guard = ReplayGuard(max_age_s=600)
    assert guard.reserve("t1", NOW, b"body", NOW) is Check.NEW
    assert guard.reserve("t1", NOW, b"body", NOW) is Check.IN_FLIGHT
    assert guard.reserve("t1", NOW, b"forged", NOW) is Check.REPLAY
    guard.commit("t1")
    assert guard.reserve("t1", NOW, b"body", NOW) is Check.DUPLICATE
    assert guard.reserve("t1", NOW, b"forged", NOW) is Check.REPLAY


def test_replay_guard_forgets_a_failed_write_so_the_retry_passes():
    guard = ReplayGuard(max_age_s=600)
    assert guard.reserve("t1", NOW, b"body", NOW) is Check.NEW
    guard.release("t1")
    assert guard.reserve("t1", NOW, b"body", NOW) is Check.NEW


def test_replay_guard_eviction_refuses_what_it_can_no_longer_remember():
    guard = ReplayGuard(max_age_s=600, max_entries=2)
    for i, token in enumerate(("a", "b", "c")):
        assert guard.reserve(token, NOW + i, b"x", NOW + i) is Check.NEW
        guard.commit(token)
    assert len(guard) == 2
    # "a" (ts NOW) was evicted: replaying it must not pass as new.
    assert guard.reserve("a", NOW, b"forged", NOW + 3) is Check.STALE
    # A newer token still gets in; it evicts "b" (NOW + 1), which raises the horizon again.
    assert guard.reserve("d", NOW + 5, b"x", NOW + 5) is Check.NEW
    assert guard.reserve("b", NOW + 1, b"forged", NOW + 5) is Check.STALE
    assert guard.reserve("e", NOW + 0.5, b"x", NOW + 5) is Check.STALE
    assert guard.reserve("c", NOW + 2, b"forged", NOW + 5) is Check.REPLAY


def test_replay_guard_drops_expired_tokens():
    guard = ReplayGuard(max_age_s=60)
    guard.reserve("old", NOW, b"x", NOW)
    guard.commit("old")
    guard.reserve("new", NOW + 100, b"x", NOW + 100)
    assert len(guard) == 1


# --- Amazon SES through SNS ---------------------------------------------------------------

CERT_URL = "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-test.pem"
TOPIC = "arn:aws:sns:eu-west-1:210987654321:ses-engagement"
SNS_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def make_cert(key=SNS_KEY, not_before=NOW - 86400, not_after=NOW + 86400):
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
    return (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(dt.datetime.fromtimestamp(not_before, dt.UTC))
            .not_valid_after(dt.datetime.fromtimestamp(not_after, dt.UTC))
            .sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM))


SNS_CERT = make_cert()
SES_RECORD = {"eventType": "Open", "mail": {"messageId": "0102019a"},
              "open": {"timestamp": "2026-01-01T12:05:30.118Z"}}


def sns_message(version="2", key=SNS_KEY, kind="Notification", **changes):
    message = {"Type": kind, "MessageId": "6f0c2a8e-3b71", "TopicArn": TOPIC,
               "Message": json.dumps(SES_RECORD), "Timestamp": "2026-01-01T12:05:31.902Z",
               "SignatureVersion": version, "SigningCertURL": CERT_URL,
               "UnsubscribeURL": "https://sns.eu-west-1.amazonaws.com/?Action=Unsubscribe"}
    if kind != "Notification":
        message.update(SubscribeURL="https://sns.eu-west-1.amazonaws.com/?Action=Confirm",
                       Token="2336412f37")
    message.update(changes)
    to_sign = sig.sns_string_to_sign(message)
    digest = hashes.SHA1() if version == "1" else hashes.SHA256()
    message["Signature"] = base64.b64encode(
        key.sign(to_sign, padding.PKCS1v15(), digest)).decode()
    return message


def sns_body(message):
    return json.dumps(message).encode()


SES_SECRETS = {"topic_arns": [TOPIC], "max_age_s": 3900}
SNS_NOW = dt.datetime(2026, 1, 1, 12, 6, tzinfo=dt.UTC).timestamp()


def store():
    certs = CertStore()
    certs.add(CERT_URL, SNS_CERT)
    return certs


def verify_ses(body, secrets=SES_SECRETS, now=SNS_NOW, certs=None, headers=None):
    return sig.verify_ses(headers or {}, body, secrets, now, certs or store())


@pytest.mark.parametrize("version", ["1", "2"])
def test_ses_accepts_both_signature_versions(version):
    assert verify_ses(sns_body(sns_message(version))) == sig.OK


def test_ses_subject_is_signed_when_present():
    message = sns_message(Subject="Amazon SES Email Event Notification")
    assert sig.sns_string_to_sign(message).startswith(b"Message\n")
    assert b"Subject\nAmazon SES" in sig.sns_string_to_sign(message)
    assert verify_ses(sns_body(message)).ok


def test_ses_subscription_confirmation_signs_its_own_fields():
    message = sns_message(kind="SubscriptionConfirmation")
    assert b"SubscribeURL\nhttps://sns" in sig.sns_string_to_sign(message)
    assert verify_ses(sns_body(message)).ok
    message["SubscribeURL"] = "https://sns.eu-west-1.amazonaws.com/?Action=Evil"
    assert verify_ses(sns_body(message)).reason == "bad_signature"


def test_ses_fetches_through_the_injected_fetcher_once():
    calls = []

    def fetch(url):
        calls.append(url)
        return SNS_CERT

    certs = CertStore(fetch=fetch)
    for _ in range(3):
        assert verify_ses(sns_body(sns_message()), certs=certs).ok
    assert calls == [CERT_URL]


def test_cert_store_reads_a_local_directory(tmp_path):
    (tmp_path / "SimpleNotificationService-test.pem").write_bytes(SNS_CERT)
    assert verify_ses(sns_body(sns_message()), certs=CertStore(tmp_path)).ok


def test_cert_store_never_fetches_from_an_unpinned_host():
    calls = []
    certs = CertStore(fetch=lambda url: calls.append(url) or SNS_CERT)
    for url in ("https://sns.eu-west-1.amazonaws.com.evil.example/x.pem",
                "http://sns.eu-west-1.amazonaws.com/x.pem",
                "https://user@sns.eu-west-1.amazonaws.com/x.pem",
                "https://sns.eu-west-1.amazonaws.com:8443/x.pem",
                "https://s3.amazonaws.com/x.pem"):
        with pytest.raises(CertError):
            certs.get(url)
    assert calls == []
    assert sig.sns_url_allowed("https://sns.cn-north-1.amazonaws.com.cn/x.pem")


def test_ses_rejections():
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    good = sns_message()
    tampered = dict(good, Message=good["Message"].replace("Open", "Click"))
    evil_url = sns_message(SigningCertURL="https://evil.example/cert.pem")
    cases = {
        "bad_signature": [verify_ses(sns_body(tampered)),
                          verify_ses(sns_body(sns_message(key=other_key)))],
        "untrusted_cert_url": [verify_ses(sns_body(evil_url))],
        "topic_not_allowed": [verify_ses(sns_body(sns_message(TopicArn=TOPIC + "-other")))],
        "stale_timestamp": [verify_ses(sns_body(good), now=SNS_NOW + 3900)],
        "cert_unavailable": [verify_ses(sns_body(good), certs=CertStore())],
        "cert_expired": [verify_ses(sns_body(good), now=NOW + 2 * 86400)],
        "unsupported_signature_version": [
            verify_ses(sns_body(dict(good, SignatureVersion="3")))],
        "unsigned_raw_delivery": [verify_ses(json.dumps(SES_RECORD).encode(),
                                             headers={"x-amz-sns-rawdelivery": "true"})],
        "malformed_body": [verify_ses(b"[1]"), verify_ses(b"Successfully validated"),
                           verify_ses(sns_body(dict(good, Type="Bogus")))],
        "malformed_signature": [verify_ses(sns_body(dict(good, Signature="@@")))],
        "not_configured": [verify_ses(sns_body(good), secrets={"topic_arns": []})],
    }
    for reason, verdicts in cases.items():
        for verdict in verdicts:
            assert verdict == sig.Verdict(False, reason), reason


def test_ses_cert_outside_its_validity_period():
    certs = CertStore()
    certs.add(CERT_URL, make_cert(not_before=SNS_NOW + 60, not_after=SNS_NOW + 86400))
    assert verify_ses(sns_body(sns_message()), certs=certs).reason == "cert_expired"


# --- Postmark and SparkPost (basic auth / token) -------------------------------------------

def basic(user, password):
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


PM_SECRETS = {"username": "postmark", "password": "s3cret:with:colons"}


def test_postmark_basic_auth():
    assert sig.verify_postmark(basic("postmark", "s3cret:with:colons"), b"{}", PM_SECRETS, NOW).ok
    assert sig.verify_postmark(basic("postmark", "wrong"), b"{}", PM_SECRETS, NOW).reason \
        == "bad_credentials"
    assert sig.verify_postmark({"Authorization": "Bearer abc"}, b"{}", PM_SECRETS, NOW).reason \
        == "bad_credentials"
    assert sig.verify_postmark({"Authorization": "Basic %%%"}, b"{}", PM_SECRETS, NOW).reason \
        == "bad_credentials"
    assert sig.verify_postmark({}, b"{}", PM_SECRETS, NOW).reason == "missing_credentials"
    assert sig.verify_postmark(basic("a", "b"), b"{}", {"username": "a"}, NOW).reason \
        == "not_configured"


def test_sparkpost_basic_auth_or_token_header():
    both = {"username": "sp", "password": "pw", "token": "tok-123"}
    assert sig.verify_sparkpost(basic("sp", "pw"), b"[]", both, NOW).ok
    token = {"X-MessageSystems-Webhook-Token": "tok-123"}
    assert sig.verify_sparkpost(token, b"[]", both, NOW).ok
    assert sig.verify_sparkpost(token, b"[]", {"token": "tok-123"}, NOW).ok
    assert sig.verify_sparkpost({"X-MessageSystems-Webhook-Token": "tok-124"}, b"[]", both,
                                NOW).reason == "bad_credentials"
    # Basic auth is not accepted when only a token is configured, and vice versa.
    assert sig.verify_sparkpost(basic("sp", "pw"), b"[]", {"token": "tok-123"}, NOW).reason \
        == "bad_credentials"
    assert sig.verify_sparkpost(token, b"[]", {"username": "sp", "password": "pw"},
                                NOW).reason == "bad_credentials"
    assert sig.verify_sparkpost({}, b"[]", both, NOW).reason == "missing_credentials"
    assert sig.verify_sparkpost({}, b"[]", {}, NOW).reason == "not_configured"


# --- Mandrill -----------------------------------------------------------------------------

MD_URL = "https://hooks.example.com/webhooks/mandrill"
MD_KEY = "Md-webhook-key_123"
MD_EVENTS = '[{"event":"open","ts":1767280000,"_id":"4e1d","msg":{"email":"sam@example.com"}}]'
MD_BODY = f"mandrill_events={quote(MD_EVENTS, safe='')}".encode()


def mandrill_header(url=MD_URL, key=MD_KEY, events=MD_EVENTS):
    # Written from the documented recipe, independently of the code under test.
    mac = hmac.new(key.encode(), (url + "mandrill_events" + events).encode(), hashlib.sha1)
    return {"X-Mandrill-Signature": base64.b64encode(mac.digest()).decode()}


MD_SECRETS = {"webhook_key": MD_KEY, "url": MD_URL}


def test_mandrill_signature_over_url_and_sorted_fields():
    assert sig.verify_mandrill(mandrill_header(), MD_BODY, MD_SECRETS, NOW).ok
    # Several fields are concatenated in key order whatever order they were posted in.
    body = b"zeta=2&alpha=1&mandrill_events=%5B%5D"
    mac = hmac.new(MD_KEY.encode(), (MD_URL + "alpha1mandrill_events[]zeta2").encode(),
                   hashlib.sha1)
    headers = {"x-mandrill-signature": base64.b64encode(mac.digest()).decode()}
    assert sig.verify_mandrill(headers, body, MD_SECRETS, NOW).ok


@pytest.mark.parametrize(("headers", "body", "reason"), [
    (mandrill_header(url=MD_URL + "/"), MD_BODY, "bad_signature"),
    (mandrill_header(key="other"), MD_BODY, "bad_signature"),
    (mandrill_header(), MD_BODY.replace(b"open", b"click"), "bad_signature"),
    ({}, MD_BODY, "missing_signature"),
    (mandrill_header(), b"mandrill_events=%ff%fe", "malformed_body"),
])
def test_mandrill_rejections(headers, body, reason):
    assert sig.verify_mandrill(headers, body, MD_SECRETS, NOW) == sig.Verdict(False, reason)


def test_mandrill_needs_key_and_url():
    assert sig.verify_mandrill(mandrill_header(), MD_BODY, {"webhook_key": MD_KEY},
                               NOW).reason == "not_configured"


# --- Tracking tokens ----------------------------------------------------------------------

TRACK_KEY = "tracker-key-1"
CLAIMS = {"message_id": "m-1", "subscriber_id": "u_88213", "campaign_id": "spr26",
          "ab_test_id": "subject-test-1", "arm": "B", "url": "https://shop.example.com/sale?x=1",
          "meta": {"link": "cta-main"}}


def test_token_round_trip_and_key_rotation():
    token = tracking.sign_token("c", CLAIMS, TRACK_KEY)
    assert tracking.read_token("c", token, [TRACK_KEY]) == CLAIMS
    assert tracking.read_token("c", token, ["new-key", TRACK_KEY]) == CLAIMS


def test_token_tampering_and_misuse_are_refused():
    token = tracking.sign_token("c", CLAIMS, TRACK_KEY)
    payload, mac = token.split(".")
    forged_claims = dict(CLAIMS, url="https://evil.example/")
    forged = tracking._b64(json.dumps(forged_claims).encode()) + "." + mac
    for bad, kind, keys in [(forged, "c", [TRACK_KEY]),          # other URL, old MAC
                            (token, "o", [TRACK_KEY]),           # click token as pixel
                            (token, "c", ["other-key"]),         # wrong key
                            (payload, "c", [TRACK_KEY]),         # unsigned
                            ("", "c", [TRACK_KEY]),
                            ("a.b.c!", "c", [TRACK_KEY])]:
        with pytest.raises(tracking.TokenError):
            tracking.read_token(kind, bad, keys)


@pytest.mark.parametrize("url", ["javascript:alert(1)", "//evil.example/", "https://",
                                 "https://a.example/\r\nSet-Cookie: x", "https:\\\\evil.example",
                                 "ftp://files.example/", ""])
def test_redirect_targets_must_be_plain_http_urls(url):
    with pytest.raises(tracking.TokenError):
        tracking.check_redirect(url, ())


def test_redirect_allow_list_matches_domains_and_subdomains():
    assert tracking.check_redirect("https://shop.example.com/x", ["example.com"])
    assert tracking.check_redirect("https://example.com/x", ["example.com"])
    with pytest.raises(tracking.TokenError):
        tracking.check_redirect("https://notexample.com/x", ["example.com"])


def test_sign_refuses_unknown_claims_and_unsafe_click_targets():
    with pytest.raises(ValueError):
        tracking.sign_token("o", {"password": "x"}, TRACK_KEY)
    with pytest.raises(ValueError):
        tracking.sign_token("c", {"url": "javascript:alert(1)"}, TRACK_KEY)


def test_hit_body_is_what_the_tracker_parser_reads():
    body = tracking.hit_body("c", CLAIMS, "0b9f6c2e6a1d4c0e9f3a51f7c2d8e4b1", 1767268800123,
                             "Mozilla/5.0", "203.0.113.77")
    result = normalize("tracker", body, "application/json", 1767268800200,
                       NormalizeSettings(hmac_key=b"k"))
    assert result.rejected == []
    [event] = result.events
    assert {k: event[k] for k in ("event_type", "event_time", "message_id", "subscriber_id",
                                  "campaign_id", "ab_test_id", "arm", "url")} == {
        "event_type": "click", "event_time": 1767268800123, "message_id": "m-1",
        "subscriber_id": "u_88213", "campaign_id": "spr26", "ab_test_id": "subject-test-1",
        "arm": "B", "url": "https://shop.example.com/sale?x=1"}
    assert event["attributes"]["provider_event_id"] == "0b9f6c2e6a1d4c0e9f3a51f7c2d8e4b1"
    # An open never carries the click target.
    assert "url" not in json.loads(tracking.hit_body("o", CLAIMS, "h", 1, None, None))


def test_tracking_urls():
    urls = tracking.tracking_urls("https://t.example.com/", CLAIMS, TRACK_KEY)
    assert urls["open"].startswith("https://t.example.com/t/o/") and urls["open"][-4:] == ".gif"
    token = urls["click"].rsplit("/", 1)[1]
    assert tracking.read_token("c", token, [TRACK_KEY])["url"] == CLAIMS["url"]
    pixel = urls["open"].rsplit("/", 1)[1].removesuffix(".gif")
    assert "url" not in tracking.read_token("o", pixel, [TRACK_KEY])


# --- Settings -----------------------------------------------------------------------------

def test_settings_defaults_and_partial_sections():
    defaults = GatewaySettings.from_config({})
    assert defaults.verifies("sendgrid") and not defaults.configured("sendgrid")
    assert defaults["max_body_bytes"] == 1_000_000
    gw = GatewaySettings.from_config({"gateway": {
        "verify": {"postmark": False}, "sparkpost": {"token": "t"},
        "tracker": {"keys": "only-one"}}})
    assert not gw.verifies("postmark") and gw.verifies("mailgun")
    assert gw.configured("sparkpost") and gw.provider("sparkpost")["username"] == ""
    assert gw.tracker_keys == ["only-one"]


def test_defaults_yaml_gateway_section_matches_the_code_defaults():
    section = settings.load(environ={}).get("gateway")
    if section is None:
        pytest.skip("settings/defaults.yaml has no gateway section yet")
    assert section == DEFAULTS
