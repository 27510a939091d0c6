"""Signing webhook requests the way each provider does, for the end-to-end tests and the
gateway benchmark (the gateway's verification is in gateway/signatures.py)."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

# SNS's canonical string for a Notification: these keys, in this order, when present.
_SNS_SIGNED_KEYS = ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type")


def self_signed_cert(key: Any, common_name: str = "sns.amazonaws.com") -> bytes:
    """A PEM certificate for `key`, valid from yesterday to tomorrow (a stand-in for the
    SNS signing certificate, placed in the gateway's cert_dir)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import NameOID

    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=1)).sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM)


def sendgrid_headers(key: Any, body: bytes, timestamp: int) -> dict[str, str]:
    """Signed Event Webhook headers: ECDSA P-256/SHA-256 over timestamp + raw body."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    stamp = str(timestamp)
    der = key.sign(stamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    return {"Content-Type": "application/json",
            "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(der).decode(),
            "X-Twilio-Email-Event-Webhook-Timestamp": stamp}


def mailgun_signature(key: str, timestamp: int, token: str) -> dict[str, str]:
    """The body's `signature` block: HMAC-SHA256 of timestamp + token."""
    digest = hmac.new(key.encode(), f"{timestamp}{token}".encode(), hashlib.sha256)
    return {"timestamp": str(timestamp), "token": token, "signature": digest.hexdigest()}


def sign_sns(message: dict[str, Any], key: Any, cert_url: str) -> dict[str, Any]:
    """The SNS message with SignatureVersion 2 (RSA SHA-256) fields added."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    signed = dict(message, SignatureVersion="2", SigningCertURL=cert_url)
    canonical = "".join(f"{k}\n{signed[k]}\n" for k in _SNS_SIGNED_KEYS if k in signed)
    signed["Signature"] = base64.b64encode(
        key.sign(canonical.encode(), padding.PKCS1v15(), hashes.SHA256())).decode()
    return signed


def mandrill_signature(key: str, url: str, body: bytes) -> str:
    """X-Mandrill-Signature: HMAC-SHA1 over the URL and the sorted form fields."""
    pairs = sorted(parse_qsl(body.decode(), keep_blank_values=True), key=lambda kv: kv[0])
    signed = url + "".join(k + v for k, v in pairs)
    return base64.b64encode(hmac.new(key.encode(), signed.encode(), hashlib.sha1).digest()
                            ).decode()


def basic_auth(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


class ProviderKeys:
    """Fresh secrets for every provider, and the gateway settings that trust them. The SNS
    certificate is written to cert_dir under cert_name (the last part of SigningCertURL)."""

    def __init__(self, cert_dir: Path, cert_name: str, user: str) -> None:
        import secrets

        from cryptography.hazmat.primitives.asymmetric import ec, rsa

        self.sendgrid = ec.generate_private_key(ec.SECP256R1())
        self.sns = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.mailgun = secrets.token_hex(16)
        self.mandrill = secrets.token_urlsafe(16)
        # Postmark and SparkPost basic auth; SparkPost may use the token instead.
        self.basic = (user, secrets.token_urlsafe(12))
        self.sparkpost_token = secrets.token_urlsafe(16)
        self.tracker = secrets.token_urlsafe(24)
        self.cert_url = f"https://sns.eu-west-1.amazonaws.com/{cert_name}"
        (cert_dir / cert_name).write_bytes(self_signed_cert(self.sns))
        self.cert_dir = cert_dir

    def gateway_section(self, mandrill_url: str, topic_arn: str,
                        redirect_hosts: Sequence[str] = ()) -> dict[str, Any]:
        from cryptography.hazmat.primitives import serialization

        public = self.sendgrid.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        user, password = self.basic
        return {
            "sendgrid": {"public_key": base64.b64encode(public).decode()},
            "mailgun": {"signing_key": self.mailgun},
            "ses": {"topic_arns": [topic_arn], "cert_dir": str(self.cert_dir)},
            "postmark": {"username": user, "password": password},
            "sparkpost": {"username": user, "password": password,
                          "token": self.sparkpost_token},
            "mandrill": {"webhook_key": self.mandrill, "url": mandrill_url},
            "tracker": {"keys": [self.tracker], "redirect_hosts": list(redirect_hosts)},
        }
