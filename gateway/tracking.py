"""Signed tracking tokens for our own pixel (``/t/o/<token>.gif``) and wrapped links
(``/t/c/<token>``), and the JSON hit the gateway writes for them.

Token = ``base64url(claims JSON) "." base64url(HMAC-SHA256(key, kind "." claims)[:16])``.
The claims are signed, not encrypted: put a ``subscriber_id`` in them rather than an
address, since links end up in browser histories and proxy logs. The kind ("o" or "c") is
part of the MAC, so a pixel token cannot be used as a redirect and vice versa. The click
target is sealed in the claims: the gateway redirects only there, never to a URL taken
from the request. Several keys may be configured: the first signs, all verify (rotation).

The hit JSON is the format ``udfs.parsers.tracker`` documents (version 1).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote, urlsplit

FORMAT_VERSION = 1
KINDS = {"o": "open", "c": "click"}
# What a token may carry; anything else in a verified token is ignored (forward compatible).
CLAIMS = ("message_id", "subscriber_id", "email", "campaign_id", "ab_test_id", "arm", "url",
          "meta")
_MAC_BYTES = 16  # 128 bits: ample against forgery, and keeps links short


class TokenError(ValueError):
    """A token that is malformed, tampered with, or of the wrong kind."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(key: str | bytes, kind: str, payload: str) -> bytes:
    key_bytes = key.encode() if isinstance(key, str) else key
    signed = f"{kind}.{payload}".encode("ascii")
    return hmac.new(key_bytes, signed, hashlib.sha256).digest()[:_MAC_BYTES]


def sign_token(kind: str, claims: Mapping[str, Any], key: str | bytes) -> str:
    """A token of ``kind`` ("o" pixel, "c" click) for ``claims`` (see CLAIMS)."""
    if kind not in KINDS:
        raise ValueError(f"token kind must be one of {sorted(KINDS)}, not {kind!r}")
    unknown = set(claims) - set(CLAIMS)
    if unknown:
        raise ValueError(f"unknown tracking claims: {sorted(unknown)}")
    if kind == "c":
        check_redirect(str(claims.get("url") or ""), ())
    payload = _b64(json.dumps(dict(claims), separators=(",", ":"), sort_keys=True,
                              ensure_ascii=False).encode("utf-8"))
    return f"{payload}.{_b64(_mac(key, kind, payload))}"


def read_token(kind: str, token: str, keys: Sequence[str | bytes]) -> dict[str, Any]:
    """The claims of a valid token; raises TokenError otherwise."""
    payload, dot, mac_text = token.partition(".")
    if not dot or not payload or not mac_text:
        raise TokenError("malformed token")
    try:
        mac = _unb64(mac_text)
        raw = _unb64(payload)
    except (binascii.Error, ValueError):
        raise TokenError("malformed token") from None
    if not any(hmac.compare_digest(mac, _mac(k, kind, payload)) for k in keys if k):
        raise TokenError("bad token signature")
    try:
        claims = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise TokenError("malformed token claims") from None
    if not isinstance(claims, dict):
        raise TokenError("malformed token claims")
    return {k: claims[k] for k in CLAIMS if claims.get(k) is not None}


def check_redirect(url: str, allowed_hosts: Sequence[str]) -> str:
    """``url`` if it is a safe redirect target; raises TokenError otherwise.

    http(s) only (no javascript:/data:), a host, no whitespace or control characters
    (they would split the Location header), and, when an allow-list is configured, a host
    equal to or under one of its domains: a second fence should a signing key leak.
    """
    if not url or any(ord(ch) <= 0x20 or ord(ch) == 0x7F or ch == "\\" for ch in url):
        raise TokenError("click target is not a plain URL")
    try:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
    except ValueError:
        raise TokenError("click target is not a URL") from None
    if parts.scheme not in ("http", "https") or not host:
        raise TokenError("click target must be an http(s) URL with a host")
    if allowed_hosts and not any(host == h.lower() or host.endswith("." + h.lower())
                                 for h in allowed_hosts):
        raise TokenError(f"click target host {host!r} is not in gateway.tracker.redirect_hosts")
    return url


def tracking_urls(base_url: str, claims: Mapping[str, Any], key: str | bytes,
                  ) -> dict[str, str]:
    """Pixel and (when claims has ``url``) click URLs under ``base_url`` (the gateway's
    public address), for whatever renders the email."""
    base = base_url.rstrip("/")
    pixel_claims = {k: v for k, v in claims.items() if k != "url"}
    urls = {"open": f"{base}/t/o/{quote(sign_token('o', pixel_claims, key))}.gif"}
    if claims.get("url"):
        urls["click"] = f"{base}/t/c/{quote(sign_token('c', claims, key))}"
    return urls


def hit_body(kind: str, claims: Mapping[str, Any], hit_id: str, received_ms: int,
             user_agent: str | None, ip: str | None) -> bytes:
    """The email.raw value for one pixel or click request (udfs.parsers.tracker format)."""
    hit: dict[str, Any] = {"v": FORMAT_VERSION, "type": KINDS[kind], "hit_id": hit_id,
                           "ts": received_ms}
    for name in CLAIMS:
        if name == "url" and kind != "c":
            continue
        if claims.get(name) is not None:
            hit[name] = claims[name]
    if user_agent:
        hit["user_agent"] = user_agent
    if ip:
        hit["ip"] = ip
    return json.dumps(hit, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
