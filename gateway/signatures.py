"""Webhook authenticity checks, one pure function per provider.

Every ``verify_<provider>(headers, body, secrets, now)`` looks only at its arguments (the
SNS one also takes a certificate source) and returns a ``Verdict``; none raises on bad
input. ``body`` is the raw request bytes: re-serialised JSON would break SendGrid's and
Mandrill's signatures, so nothing here parses and re-encodes before checking.

``secrets`` is the provider's section of the ``gateway`` settings (see ``gateway.config``);
``now`` is epoch seconds. Reason codes are short snake_case words meant for logs, metrics
and the 401 body.

Replay windows: a window shorter than the provider's retry horizon turns an outage on our
side into lost events, because providers are reported to resend the original signed
timestamp on retries. So the defaults follow the retry horizons (SendGrid 24 h, Mailgun
8 h, SNS 1 h), and Mailgun, whose signature does not cover the body, gets token-replay
rejection on top (``gateway.mailgun_tokens``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any, Protocol
from urllib.parse import parse_qsl, urlsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

# Signed timestamps a little in the future are clock skew, not an attack.
MAX_FUTURE_SKEW_S = 300.0

SENDGRID_SIGNATURE = "x-twilio-email-event-webhook-signature"
SENDGRID_TIMESTAMP = "x-twilio-email-event-webhook-timestamp"
MANDRILL_SIGNATURE = "x-mandrill-signature"
SPARKPOST_TOKEN = "x-messagesystems-webhook-token"

# sns.<region>.amazonaws.com, plus the China partition's .com.cn.
SNS_CERT_HOST = re.compile(r"^sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?$")

_SNS_NOTIFICATION_FIELDS = ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type")
_SNS_CONFIRMATION_FIELDS = ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token",
                            "TopicArn", "Type")
_SNS_TYPES = {"Notification": _SNS_NOTIFICATION_FIELDS,
              "SubscriptionConfirmation": _SNS_CONFIRMATION_FIELDS,
              "UnsubscribeConfirmation": _SNS_CONFIRMATION_FIELDS}
_SNS_HASHES: dict[str, type[hashes.HashAlgorithm]] = {"1": hashes.SHA1, "2": hashes.SHA256}


@dataclass(frozen=True)
class Verdict:
    ok: bool
    reason: str
    # Mailgun only: the signed token and its timestamp, for token-replay rejection, which
    # needs state and so happens in the server (gateway.mailgun_tokens), not here.
    replay_key: str | None = None
    replay_ts: float | None = None


OK = Verdict(True, "ok")


def _no(reason: str) -> Verdict:
    return Verdict(False, reason)


class CertSource(Protocol):
    def get(self, url: str) -> x509.Certificate:
        """The certificate at ``url``; raises on any failure (bad URL, unavailable)."""


def header(headers: Mapping[str, str], name: str) -> str | None:
    """Case-insensitive header lookup over a plain dict or an http.client.HTTPMessage."""
    value = headers.get(name)
    if value is not None:
        return value
    lowered = name.lower()
    for key, item in headers.items():
        if key.lower() == lowered:
            return item
    return None


def _text(value: Any) -> str:
    # YAML turns an all-digit secret set through an env var into an int.
    return "" if value is None else str(value)


def _window(ts: float, now: float, max_age_s: float) -> Verdict | None:
    if ts > now + MAX_FUTURE_SKEW_S:
        return _no("future_timestamp")
    if now - ts > max_age_s:
        return _no("stale_timestamp")
    return None


def _epoch(value: Any) -> float | None:
    try:
        ts = float(value)
    except (TypeError, ValueError):
        return None
    return ts if ts == ts and abs(ts) != float("inf") else None


# --- SendGrid: ECDSA P-256 / SHA-256 over timestamp header + raw body -------------------

@lru_cache(maxsize=8)
def _sendgrid_key(text: str) -> ec.EllipticCurvePublicKey:
    """SendGrid hands out base64 DER SubjectPublicKeyInfo; a PEM is accepted too."""
    text = text.strip()
    if text.startswith("-----BEGIN"):
        key = serialization.load_pem_public_key(text.encode())
    else:
        key = serialization.load_der_public_key(base64.b64decode("".join(text.split())))
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        raise ValueError("SendGrid verification key must be an EC P-256 public key")
    return key


def verify_sendgrid(headers: Mapping[str, str], body: bytes, secrets: Mapping[str, Any],
                    now: float) -> Verdict:
    """Secrets: ``public_key`` (base64 DER or PEM), ``max_age_s``."""
    key_text = _text(secrets.get("public_key"))
    if not key_text:
        return _no("not_configured")
    try:
        key = _sendgrid_key(key_text)
    except (ValueError, binascii.Error):
        return _no("not_configured")
    signature = header(headers, SENDGRID_SIGNATURE)
    stamp = header(headers, SENDGRID_TIMESTAMP)
    if not signature or not stamp:
        return _no("missing_signature")
    stamp = stamp.strip()
    if not stamp.isdigit():
        return _no("malformed_timestamp")
    try:
        der = base64.b64decode(signature, validate=True)
    except (binascii.Error, ValueError):
        return _no("malformed_signature")
    try:
        key.verify(der, stamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return _no("bad_signature")
    # Checked after the signature so a forged request learns nothing about our window.
    return _window(int(stamp), now, float(secrets.get("max_age_s", 90000))) or OK


# --- Mailgun: HMAC-SHA256(signing key, timestamp + token), inside the JSON body -----------

def _mailgun_block(body: bytes, content_type: str) -> dict[str, Any] | None:
    if content_type.lower().startswith("application/x-www-form-urlencoded"):
        # Legacy form posts: verified so they reach the DLQ with normalize's reason.
        try:
            form = dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
        except UnicodeDecodeError:
            return None
        return form
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    block = data.get("signature") if isinstance(data, dict) else None
    return block if isinstance(block, dict) else None


def verify_mailgun(headers: Mapping[str, str], body: bytes, secrets: Mapping[str, Any],
                   now: float) -> Verdict:
    """Secrets: ``signing_key``, ``max_age_s``. The verdict carries the token for replay
    rejection; the body is not covered by the HMAC, so that check is not optional."""
    key = _text(secrets.get("signing_key")).encode()
    if not key:
        return _no("not_configured")
    block = _mailgun_block(body, header(headers, "content-type") or "")
    if block is None:
        return _no("malformed_body")
    stamp, token = _text(block.get("timestamp")), _text(block.get("token"))
    candidates = [_text(block.get(name)).lower()
                  for name in ("signature", "parent-signature") if block.get(name)]
    if not stamp or not token or not candidates:
        return _no("missing_signature")
    expected = hmac.new(key, (stamp + token).encode(), hashlib.sha256).hexdigest()
    # A subaccount's post carries parent-signature under the parent's key: whichever
    # account's key is configured, one of the two matches.
    if not any(hmac.compare_digest(expected, c) for c in candidates):
        return _no("bad_signature")
    ts = _epoch(stamp)
    if ts is None:
        return _no("malformed_timestamp")
    stale = _window(ts, now, float(secrets.get("max_age_s", 30600)))
    return stale or Verdict(True, "ok", replay_key=token, replay_ts=ts)


# --- Amazon SES through SNS: RSA signature with the cert from SigningCertURL --------------

def sns_url_allowed(url: str, host_pattern: re.Pattern[str] = SNS_CERT_HOST) -> bool:
    """Whether a SigningCertURL / SubscribeURL points at an SNS endpoint over HTTPS."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return False
    return (parts.scheme == "https" and port in (None, 443) and parts.username is None
            and bool(host_pattern.match(parts.hostname or "")))


def sns_string_to_sign(message: Mapping[str, Any]) -> bytes | None:
    """The canonical ``key\\nvalue\\n`` string, or None if a required field is missing."""
    fields = _SNS_TYPES.get(_text(message.get("Type")))
    if fields is None:
        return None
    out = []
    for name in fields:
        value = message.get(name)
        if value is None:
            if name == "Subject":  # optional, and signed only when present
                continue
            return None
        if not isinstance(value, str):
            return None
        out.append(f"{name}\n{value}\n")
    return "".join(out).encode("utf-8")


def _iso_epoch(value: Any) -> float | None:
    try:
        return datetime.fromisoformat(_text(value)).timestamp()
    except ValueError:
        return None


def verify_ses(headers: Mapping[str, str], body: bytes, secrets: Mapping[str, Any],
               now: float, certs: CertSource) -> Verdict:
    """Secrets: ``topic_arns`` (required: without pinning, any AWS account's topic would
    pass, since AWS signs every topic's messages), ``max_age_s``."""
    topics = secrets.get("topic_arns") or []
    if not topics:
        return _no("not_configured")
    if _text(header(headers, "x-amz-sns-rawdelivery")).lower() == "true":
        return _no("unsigned_raw_delivery")
    try:
        message = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return _no("malformed_body")
    if not isinstance(message, dict):
        return _no("malformed_body")
    hash_cls = _SNS_HASHES.get(_text(message.get("SignatureVersion")))
    if hash_cls is None:
        return _no("unsupported_signature_version")
    cert_url = _text(message.get("SigningCertURL"))
    if not sns_url_allowed(cert_url):
        return _no("untrusted_cert_url")
    if message.get("TopicArn") not in topics:
        return _no("topic_not_allowed")
    to_sign = sns_string_to_sign(message)
    if to_sign is None:
        return _no("malformed_body")
    try:
        signature = base64.b64decode(_text(message.get("Signature")), validate=True)
    except (binascii.Error, ValueError):
        return _no("malformed_signature")
    if not signature:
        return _no("missing_signature")
    try:
        cert = certs.get(cert_url)
    except Exception:  # any fetch/parse problem: refuse, never guess
        return _no("cert_unavailable")
    if not cert.not_valid_before_utc.timestamp() <= now <= cert.not_valid_after_utc.timestamp():
        return _no("cert_expired")
    key = cert.public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        return _no("cert_unavailable")
    try:
        key.verify(signature, to_sign, padding.PKCS1v15(), hash_cls())
    except InvalidSignature:
        return _no("bad_signature")
    sent = _iso_epoch(message.get("Timestamp"))
    if sent is None:
        return _no("malformed_timestamp")
    return _window(sent, now, float(secrets.get("max_age_s", 3900))) or OK


# --- Postmark and SparkPost: no payload signature, shared credentials ---------------------

def _basic_auth_ok(headers: Mapping[str, str], username: str, password: str) -> bool:
    value = _text(header(headers, "authorization")).strip()
    scheme, _, encoded = value.partition(" ")
    if scheme.lower() != "basic" or not encoded:
        return False
    try:
        given = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        return False
    return hmac.compare_digest(given, f"{username}:{password}".encode())


def verify_postmark(headers: Mapping[str, str], body: bytes, secrets: Mapping[str, Any],
                    now: float) -> Verdict:
    """Secrets: ``username``, ``password`` (HTTP basic auth set on the Postmark webhook)."""
    username, password = _text(secrets.get("username")), _text(secrets.get("password"))
    if not username or not password:
        return _no("not_configured")
    if not header(headers, "authorization"):
        return _no("missing_credentials")
    return OK if _basic_auth_ok(headers, username, password) else _no("bad_credentials")


def verify_sparkpost(headers: Mapping[str, str], body: bytes, secrets: Mapping[str, Any],
                     now: float) -> Verdict:
    """Secrets: ``username`` + ``password`` (basic auth) and/or ``token`` (the
    X-MessageSystems-Webhook-Token header); either configured method passes."""
    username, password = _text(secrets.get("username")), _text(secrets.get("password"))
    token = _text(secrets.get("token"))
    if not (username and password) and not token:
        return _no("not_configured")
    given_token = header(headers, SPARKPOST_TOKEN)
    if not header(headers, "authorization") and not given_token:
        return _no("missing_credentials")
    if username and password and _basic_auth_ok(headers, username, password):
        return OK
    if token and given_token and hmac.compare_digest(given_token.encode(), token.encode()):
        return OK
    return _no("bad_credentials")


# --- Mandrill: base64 HMAC-SHA1(key, registered URL + sorted key+value form pairs) --------

def mandrill_signature(key: str, url: str, body: bytes) -> str:
    """The X-Mandrill-Signature for a form body (also used by tests and tools)."""
    pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, errors="strict")
    signed = url + "".join(k + v for k, v in sorted(pairs, key=lambda kv: kv[0]))
    digest = hmac.new(key.encode(), signed.encode("utf-8"), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def verify_mandrill(headers: Mapping[str, str], body: bytes, secrets: Mapping[str, Any],
                    now: float) -> Verdict:
    """Secrets: ``webhook_key``, ``url`` (exactly as registered with Mandrill: scheme, host,
    path, trailing slash and query all count). Mandrill signs no timestamp, so there is no
    window: a replay only repeats genuine events, which the clean job deduplicates."""
    key, url = _text(secrets.get("webhook_key")), _text(secrets.get("url"))
    if not key or not url:
        return _no("not_configured")
    given = header(headers, MANDRILL_SIGNATURE)
    if not given:
        return _no("missing_signature")
    try:
        expected = mandrill_signature(key, url, body)
    except UnicodeDecodeError:
        return _no("malformed_body")
    return OK if hmac.compare_digest(expected.encode(), given.strip().encode()) \
        else _no("bad_signature")


VERIFIERS = {
    "sendgrid": verify_sendgrid,
    "mailgun": verify_mailgun,
    "ses": verify_ses,
    "postmark": verify_postmark,
    "sparkpost": verify_sparkpost,
    "mandrill": verify_mandrill,
}
