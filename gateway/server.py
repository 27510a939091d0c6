"""The HTTP gateway: ESP webhooks and our tracking hits in, raw records to email.raw out.

Routes:

=====================================  ==========================================================
``POST /webhooks/<provider>``          verify (per ``gateway.verify``), write the raw bytes, 200
``HEAD /webhooks/<provider>``          200 (Mandrill checks the URL exists before issuing a key)
``GET /t/o/<token>.gif``               record an open, answer a 1x1 transparent GIF
``GET /t/c/<token>``                   record a click, 302 to the URL sealed in the token
``GET /healthz`` / ``GET /readyz``     liveness / Kafka reachable
``GET /metrics``                       counters, Prometheus text format
=====================================  ==========================================================

Status codes: 2xx/302 only after Kafka acknowledged the write, so a sender retries anything
we did not store; 401 for a failed authenticity check (nothing is written); 503 when Kafka
fails, or when a provider's verification is on but its secrets are not set (our
misconfiguration: the sender should retry once it is fixed, not drop the event); 400 for a
bad tracking token; 404/405 unknown route; 411/413 missing length / body too large.

Why rejected requests are counted and logged, not written to email.dlq: an unauthenticated
body is attacker-controlled, so writing it would let anyone fill a topic with 30-day
retention; email.dlq's DeadLetter records point at an email.raw offset, which these never
had; and the genuine sender retries a 401, so fixing a wrong secret recovers the events.

Threads, not asyncio: kafka-python's producer is synchronous and thread-safe, and a
thread per connection waiting on its acknowledgement needs no new dependency.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from gateway import tracking
from gateway.capture import Captured, CaptureWriter, redact_headers
from gateway.certs import CertStore, https_fetch
from gateway.config import PROVIDERS, GatewaySettings
from gateway.kafka_writer import RawWriter, raw_headers
from gateway.mailgun_tokens import Check, ReplayGuard
from gateway.signatures import VERIFIERS, Verdict, header, sns_url_allowed, verify_ses

log = logging.getLogger("gateway")

# 1x1 transparent GIF89a: 2-colour table, graphic control extension marking colour 0
# transparent, one LZW-coded pixel.
PIXEL_GIF = (b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff"
             b"\x21\xf9\x04\x01\x00\x00\x00\x00"
             b"\x2c\x00\x00\x00\x00\x01\x00\x01\x00\x00"
             b"\x02\x02\x44\x01\x00\x3b")

_NO_CACHE = [("Cache-Control", "no-store, no-cache, must-revalidate, private"),
             ("Pragma", "no-cache"), ("Expires", "0")]


@dataclass
class Response:
    status: int
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)
    close: bool = False  # the request body was not read: the connection cannot be reused


def _json(code: int, **fields: Any) -> Response:
    return Response(code, json.dumps(fields, separators=(",", ":")).encode(),
                    [("Content-Type", "application/json")])


class Counters:
    """Thread-safe counters with labels, rendered in the Prometheus text format."""

    def __init__(self) -> None:
        self._values: dict[tuple[str, tuple[tuple[str, str], ...]], int] = {}
        self._lock = threading.Lock()

    def inc(self, name: str, **labels: str) -> None:
        key = (name, tuple(sorted(labels.items())))
        with self._lock:
            self._values[key] = self._values.get(key, 0) + 1

    def get(self, name: str, **labels: str) -> int:
        return self._values.get((name, tuple(sorted(labels.items()))), 0)

    def render(self) -> str:
        with self._lock:
            items = sorted(self._values.items())
        lines, typed = [], set()
        for (name, labels), value in items:
            if name not in typed:
                lines.append(f"# TYPE {name} counter")
                typed.add(name)
            text = ",".join(f'{k}="{v}"' for k, v in labels)
            lines.append(f"{name}{{{text}}} {value}" if text else f"{name} {value}")
        return "\n".join(lines) + "\n"


def _visit(url: str) -> None:
    """Confirm an SNS subscription by GETting its SubscribeURL, off the request thread."""
    def run() -> None:
        try:
            with urllib.request.urlopen(url, timeout=10) as response:  # URL host pinned by caller
                log.info("SNS subscription confirmed: HTTP %s", response.status)
        except Exception as exc:
            log.error("SNS subscription confirmation failed for %s: %s", url, exc)
    threading.Thread(target=run, name="sns-confirm", daemon=True).start()


class Gateway:
    """Request handling without HTTP plumbing: takes parsed requests, returns Responses."""

    def __init__(self, settings: GatewaySettings, writer: RawWriter, *,
                 clock: Callable[[], float] = time.time, certs: CertStore | None = None,
                 confirm: Callable[[str], None] = _visit,
                 capture: CaptureWriter | None = None) -> None:
        self.settings = settings
        self.writer = writer
        self.clock = clock
        self.counters = Counters()
        self._confirm = confirm
        ses = settings.provider("ses")
        if certs is None:
            certs = CertStore(ses.get("cert_dir") or None,
                              https_fetch if ses.get("fetch_certs") else None)
        self._verifiers: dict[str, Callable[..., Verdict]] = dict(VERIFIERS)
        self._verifiers["ses"] = partial(verify_ses, certs=certs)
        mailgun = settings.provider("mailgun")
        # Same window as the signature check, so an expired token is refused either way.
        self.replay = ReplayGuard(float(mailgun.get("max_age_s", 30600)),
                                  int(mailgun.get("replay_cache_size", 200000)))
        # Optional copy of every accepted request (gateway.capture_file) for replays.
        capture_file = settings.section.get("capture_file") or ""
        if capture is None and capture_file:
            capture = CaptureWriter(capture_file)
        self.capture = capture

    def close(self) -> None:
        if self.capture is not None:
            self.capture.close()

    def warnings(self) -> list[str]:
        """Configuration problems worth a log line at start-up."""
        out = []
        for name in PROVIDERS:
            if not self.settings.verifies(name):
                out.append(f"{name}: signature verification is OFF; records are written "
                           "with signature-verified=false")
            elif not self.settings.configured(name):
                out.append(f"{name}: verification is on but its secrets are not set; "
                           f"POST /webhooks/{name} answers 503")
        if not self.settings.tracker_keys:
            out.append("tracker: gateway.tracker.keys is empty; /t/o and /t/c answer 503")
        return out

    # --- webhooks ------------------------------------------------------------------------

    def handle_webhook(self, provider: str, headers: Mapping[str, str], body: bytes,
                       client_ip: str | None = None) -> Response:
        if provider not in VERIFIERS:
            return _json(404, error="unknown_provider")
        now = self.clock()
        verified = self.settings.verifies(provider)
        token = None
        if verified:
            verdict = Verdict(False, "not_configured")
            if self.settings.configured(provider):
                verdict = self._verifiers[provider](headers, body,
                                                    self.settings.provider(provider), now)
            if verdict.reason == "not_configured":
                # Missing or unusable secrets are our fault: 503 makes the sender retry
                # until it is fixed, where 401 would make some (Postmark) drop the event.
                self.counters.inc("gateway_rejected_total", provider=provider,
                                  reason="not_configured")
                log.error("%s webhook refused: verification is on but its secrets are "
                          "missing or unusable", provider)
                return _json(503, error="provider_not_configured")
            if not verdict.ok:
                return self._reject(provider, verdict.reason, body, client_ip)
            if verdict.replay_key is not None:
                token = verdict.replay_key
                early = self._check_replay(provider, token, verdict.replay_ts or 0.0, body,
                                           now, client_ip)
                if early is not None:
                    return early
        content_type = header(headers, "content-type") or ""
        request_id = uuid.uuid4().hex
        try:
            self._write(request_id, provider, content_type, body, int(now * 1000), verified,
                        headers)
        except Exception:
            if token is not None:
                self.replay.release(token)
            return _json(503, error="kafka_unavailable")
        if token is not None:
            self.replay.commit(token)
        if provider == "ses" and verified:
            self._sns_control(body)
        return Response(200, json.dumps({"request_id": request_id}).encode(),
                        [("Content-Type", "application/json"), ("X-Request-Id", request_id)])

    def _reject(self, provider: str, reason: str, body: bytes, client_ip: str | None,
                ) -> Response:
        self.counters.inc("gateway_rejected_total", provider=provider, reason=reason)
        # A digest, not the body: enough to match a sender's retry, no payload in logs.
        log.warning("%s webhook rejected: %s (client %s, %d bytes, sha256 %s)", provider,
                    reason, client_ip or "-", len(body),
                    hashlib.sha256(body).hexdigest()[:16])
        return _json(401, error="signature_invalid", reason=reason)

    def _check_replay(self, provider: str, token: str, ts: float, body: bytes, now: float,
                      client_ip: str | None) -> Response | None:
        check = self.replay.reserve(token, ts, body, now)
        if check is Check.NEW:
            return None
        if check is Check.DUPLICATE:
            # Already stored: a retry after our 200 got lost. Acknowledge, don't rewrite.
            self.counters.inc("gateway_duplicates_total", provider=provider)
            return _json(200, status="duplicate")
        if check is Check.IN_FLIGHT:
            return Response(503, b'{"error":"in_flight"}',
                            [("Content-Type", "application/json"), ("Retry-After", "5")])
        reason = "token_replayed" if check is Check.REPLAY else "stale_timestamp"
        return self._reject(provider, reason, body, client_ip)

    def _sns_control(self, body: bytes) -> None:
        try:
            message = json.loads(body)
        except ValueError:
            return
        kind = message.get("Type") if isinstance(message, dict) else None
        if kind not in ("SubscriptionConfirmation", "UnsubscribeConfirmation"):
            return
        url = str(message.get("SubscribeURL") or "")
        topic = message.get("TopicArn")
        auto = bool(self.settings.provider("ses").get("confirm_subscriptions"))
        if kind == "SubscriptionConfirmation" and auto and sns_url_allowed(url):
            log.info("SNS %s for %s: confirming via %s", kind, topic, url)
            self._confirm(url)
        else:
            log.warning("SNS %s for %s: not confirmed automatically "
                        "(gateway.ses.confirm_subscriptions); SubscribeURL: %s",
                        kind, topic, url)

    # --- tracking ------------------------------------------------------------------------

    def handle_pixel(self, token: str, headers: Mapping[str, str],
                     client_ip: str | None = None) -> Response:
        claims = self._claims("o", token)
        if isinstance(claims, Response):
            return claims
        try:
            self._write_hit("o", claims, headers, client_ip)
        except Exception:
            return _json(503, error="kafka_unavailable")
        return Response(200, PIXEL_GIF, [("Content-Type", "image/gif"), *_NO_CACHE])

    def handle_click(self, token: str, query: Mapping[str, list[str]],
                     headers: Mapping[str, str], client_ip: str | None = None) -> Response:
        claims = self._claims("c", token)
        if isinstance(claims, Response):
            return claims
        tracker = self.settings["tracker"]
        try:
            url = tracking.check_redirect(str(claims.get("url") or ""),
                                          tracker.get("redirect_hosts") or [])
        except tracking.TokenError as exc:
            return self._bad_token(str(exc))
        # A readable ?u= copy is allowed, but it must be the sealed URL: never redirect to,
        # or record, a target the token did not sign.
        given = query.get("u")
        if given and given[0] != url:
            return self._bad_token("u does not match the sealed URL")
        try:
            self._write_hit("c", claims, headers, client_ip)
        except Exception:
            if not tracker.get("redirect_when_kafka_down", True):
                return _json(503, error="kafka_unavailable")
            # The browser will not retry a 503, so failing would lose the click anyway and
            # also strand the reader; send them on and count the loss.
            self.counters.inc("gateway_tracker_hits_lost_total", kind="click")
        return Response(302, b"", [("Location", url), ("Cache-Control", "no-store"),
                                   ("Referrer-Policy", "no-referrer")])

    def _claims(self, kind: str, token: str) -> dict[str, Any] | Response:
        keys = self.settings.tracker_keys
        if not keys:
            return _json(503, error="tracker_not_configured")
        try:
            return tracking.read_token(kind, token, keys)
        except tracking.TokenError as exc:
            return self._bad_token(str(exc))

    def _bad_token(self, reason: str) -> Response:
        self.counters.inc("gateway_bad_tokens_total")
        log.info("tracking request refused: %s", reason)
        return Response(400, b"invalid tracking link\n", [("Content-Type", "text/plain")])

    def _write_hit(self, kind: str, claims: Mapping[str, Any], headers: Mapping[str, str],
                   client_ip: str | None) -> None:
        hit_id = uuid.uuid4().hex
        received_ms = int(self.clock() * 1000)
        body = tracking.hit_body(kind, claims, hit_id, received_ms,
                                 header(headers, "user-agent"), client_ip)
        self._write(hit_id, "tracker", "application/json", body, received_ms, True, headers)

    # --- the write -------------------------------------------------------------------------

    def _write(self, request_id: str, provider: str, content_type: str, body: bytes,
               received_ms: int, verified: bool, headers: Mapping[str, str]) -> None:
        kafka_headers = raw_headers(provider, content_type, received_ms, verified)
        try:
            self.writer.write(request_id.encode(), body, kafka_headers)
        except Exception as exc:
            self.counters.inc("gateway_write_failures_total", provider=provider)
            log.error("write to email.raw failed for %s request %s: %s", provider, request_id,
                      exc)
            raise
        self.counters.inc("gateway_written_total", provider=provider)
        if self.capture is not None:
            self._capture(self.capture, Captured(provider, content_type,
                                                 redact_headers(headers), body, received_ms,
                                                 request_id, verified))

    def _capture(self, capture: CaptureWriter, record: Captured) -> None:
        try:
            capture.append(record)
        except (OSError, ValueError) as exc:
            # The record is in Kafka already: failing the request would make the sender
            # retry and duplicate it, for the sake of a secondary copy.
            self.counters.inc("gateway_capture_failures_total", provider=record.provider)
            log.error("capture of %s request %s failed: %s", record.provider,
                      record.request_id, exc)

    def ready(self) -> bool:
        probe = getattr(self.writer, "ready", None)
        return bool(probe()) if callable(probe) else True


# --- HTTP plumbing ---------------------------------------------------------------------------

class _Handler(BaseHTTPRequestHandler):
    # Keep-alive: ESPs and the benchmark reuse connections.
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes; with Nagle on, a keep-alive client's delayed
    # ACK stalls every response by ~40 ms.
    disable_nagle_algorithm = True
    server_version = "email-gateway"
    sys_version = ""
    gateway: Gateway  # set on the per-server subclass

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    # Routes -------------------------------------------------------------------------------

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        path = parts.path
        if path == "/healthz":
            self._send(Response(200, b"ok\n", [("Content-Type", "text/plain")]))
        elif path == "/readyz":
            ready = self.gateway.ready()
            self._send(Response(200 if ready else 503, b"ready\n" if ready else b"not ready\n",
                                [("Content-Type", "text/plain")]))
        elif path == "/metrics":
            self._send(Response(200, self.gateway.counters.render().encode(),
                                [("Content-Type", "text/plain; version=0.0.4")]))
        elif path.startswith("/t/o/") and self._segment(path, "/t/o/"):
            token = self._segment(path, "/t/o/").removesuffix(".gif")
            self._track(lambda ip: self.gateway.handle_pixel(token, self.headers, ip), "open")
        elif path.startswith("/t/c/") and self._segment(path, "/t/c/"):
            token = self._segment(path, "/t/c/")
            query = parse_qs(parts.query)
            self._track(lambda ip: self.gateway.handle_click(token, query, self.headers, ip),
                        "click")
        elif self._provider(path) is not None:
            self._send(Response(405, b"", [("Allow", "POST, HEAD")]))
        else:
            self._send(_json(404, error="not_found"))

    def do_HEAD(self) -> None:
        path = urlsplit(self.path).path
        ok = path in ("/healthz",) or self._provider(path) in VERIFIERS
        self._send(Response(200 if ok else 404))

    def do_POST(self) -> None:
        provider = self._provider(urlsplit(self.path).path)
        if provider is None:
            self._count("other", 404)
            self._send(_json(404, error="not_found"), discard_body=True)
            return
        # Unknown names share one label so that random paths cannot grow the metrics.
        route = provider if provider in VERIFIERS else "other"
        body = self._read_body()
        if isinstance(body, Response):
            self._count(route, body.status)
            self._send(body)
            return
        response = self._safely(
            lambda: self.gateway.handle_webhook(provider, self.headers, body, self._client_ip()))
        self._count(route, response.status)
        self._send(response)

    def handle_expect_100(self) -> bool:
        # Refuse an oversized body before the client sends it.
        too_big = self._too_big(self.headers.get("Content-Length"))
        if too_big is not None:
            self._send(too_big)
            return False
        return super().handle_expect_100()

    # Helpers --------------------------------------------------------------------------------

    @staticmethod
    def _segment(path: str, prefix: str) -> str:
        rest = path[len(prefix):]
        return "" if "/" in rest else unquote(rest)

    @staticmethod
    def _provider(path: str) -> str | None:
        if not path.startswith("/webhooks/"):
            return None
        name = path[len("/webhooks/"):].rstrip("/")
        return name if name and "/" not in name else None

    def _track(self, handle: Callable[[str | None], Response], route: str) -> None:
        response = self._safely(lambda: handle(self._client_ip()))
        self._count(f"tracker_{route}", response.status)
        self._send(response)

    @staticmethod
    def _safely(handle: Callable[[], Response]) -> Response:
        # A bug must still produce an answer (500: the sender retries), not a dropped socket.
        try:
            return handle()
        except Exception:
            log.exception("unexpected error while handling a request")
            return _json(500, error="internal_error")

    def _count(self, route: str, status: int) -> None:
        self.gateway.counters.inc("gateway_requests_total", route=route, status=str(status))

    def _client_ip(self) -> str | None:
        hops = int(self.gateway.settings["trusted_proxy_hops"] or 0)
        forwarded = self.headers.get("X-Forwarded-For")
        if hops > 0 and forwarded:
            chain = [p.strip() for p in forwarded.split(",") if p.strip()]
            if chain:
                # Each trusted proxy appends the address it saw; the client is the entry
                # the outermost trusted proxy added. Entries left of it are client-forgeable.
                return chain[-hops] if len(chain) >= hops else chain[0]
        return self.client_address[0] if self.client_address else None

    def _too_big(self, length: str | None) -> Response | None:
        limit = int(self.gateway.settings["max_body_bytes"])
        try:
            size = int(length) if length is not None else 0
        except ValueError:
            return None
        if size > limit:
            return Response(413, f"body larger than {limit} bytes\n".encode(),
                            [("Content-Type", "text/plain")], close=True)
        return None

    def _read_body(self) -> bytes | Response:
        limit = int(self.gateway.settings["max_body_bytes"])
        encoding = (self.headers.get("Transfer-Encoding") or "").strip().lower()
        try:
            if encoding == "chunked":
                return self._read_chunked(limit)
            if encoding:
                return Response(501, b"unsupported transfer encoding\n", close=True)
            length = self.headers.get("Content-Length")
            if length is None:
                return Response(411, b"Content-Length required\n", close=True)
            try:
                size = int(length)
            except ValueError:
                size = -1
            if size < 0:
                return Response(400, b"bad Content-Length\n", close=True)
            too_big = self._too_big(length)
            if too_big is not None:
                return too_big
            body = self.rfile.read(size)
        except TimeoutError:
            return Response(408, b"request body timed out\n", close=True)
        if len(body) != size:
            return Response(400, b"body shorter than Content-Length\n", close=True)
        return body

    def _read_chunked(self, limit: int) -> bytes | Response:
        chunks, total = [], 0
        while True:
            line = self.rfile.readline(1026)
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                return Response(400, b"bad chunk\n", close=True)
            if size == 0:
                break
            total += size
            if total > limit:
                return Response(413, f"body larger than {limit} bytes\n".encode(),
                                [("Content-Type", "text/plain")], close=True)
            chunk = self.rfile.read(size)
            if len(chunk) != size or self.rfile.readline(3) not in (b"\r\n", b"\n"):
                return Response(400, b"bad chunk\n", close=True)
            chunks.append(chunk)
        while self.rfile.readline(8194) not in (b"\r\n", b"\n", b""):
            pass  # trailers carry nothing we use
        return b"".join(chunks)

    def _send(self, response: Response, discard_body: bool = False) -> None:
        if discard_body:
            response.close = True
        self.send_response(response.status)
        for name, value in response.headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(response.body)))
        if response.close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if self.command != "HEAD" and response.body:
            self.wfile.write(response.body)


class GatewayServer(ThreadingHTTPServer):
    daemon_threads = True
    # socketserver's default backlog of 5 drops connections in the bursts ESPs send (many
    # servers posting at once); a dropped SYN costs the sender a 1 s retransmit.
    request_queue_size = 1024

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients hanging up mid-response are routine; log quietly instead of a traceback.
        log.debug("connection error from %s", client_address, exc_info=True)


def make_server(gateway: Gateway, host: str = "127.0.0.1", port: int = 0) -> GatewayServer:
    """A bound, not yet serving, HTTP server (port 0 = ephemeral; see server_address)."""
    handler = type("GatewayHandler", (_Handler,), {
        "gateway": gateway, "timeout": float(gateway.settings["read_timeout_s"])})
    return GatewayServer((host, port), handler)
