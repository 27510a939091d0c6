"""Capture files: raw requests as the gateway wrote them to email.raw, one JSON object per
line, and the replay that writes such a file into email.raw again (backfills, tests).

``python -m gateway.replay [--config FILE] --file CAPTURE.jsonl [--rate N]``

Line format (UTF-8 JSON, one request per line, blank lines ignored)::

    {"provider": "sendgrid", "content_type": "application/json",
     "headers": {"X-Twilio-Email-Event-Webhook-Signature": "...", ...},
     "body_b64": "<base64 of the raw body>", "received_at": 1767268800123}

The body is base64 because it must stay byte for byte what the sender signed: re-encoded
JSON would no longer verify. ``headers`` may be omitted (the replay does not use them;
they are there to re-check signatures). Optional fields, which the gateway writes:
``request_id`` (the email.raw key; replay reuses it so a replayed record can be traced to
the original request; a new one otherwise) and ``signature_verified`` (the gateway's own
verdict; false when absent, since nobody checked a hand-made line).

Credentials in ``headers`` (basic auth, SparkPost's token, cookies) are redacted when the
gateway captures: they are our shared secrets, not per-request signatures, and a capture
file gets copied around. Signature headers (SendGrid, Mandrill) are kept.

The replay checks the whole file before writing anything, so a broken line never leaves
half a backfill behind; it does not verify signatures again (the signed timestamps of a
backfill are usually outside the windows), it writes what the file says.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol

from gateway.config import PROVIDERS as WEBHOOK_PROVIDERS
from gateway.kafka_writer import raw_headers

# What the gateway writes (webhooks and its own tracking hits); a typo in a backfill file
# should fail here, not become a topic full of unknown_provider dead letters.
PROVIDERS = (*WEBHOOK_PROVIDERS, "tracker")
CREDENTIAL_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie",
                                "x-messagesystems-webhook-token"})
REDACTED = "[redacted]"
# Room for the key and headers on top of the body (as in `python -m gateway`).
RECORD_OVERHEAD = 64 * 1024
_MAX_ERRORS_SHOWN = 20


class CaptureError(ValueError):
    """A capture line that cannot be replayed; the message says which and why."""


@dataclass(frozen=True)
class Captured:
    provider: str
    content_type: str
    headers: dict[str, str]
    body: bytes
    received_at: int  # epoch ms, written as the record's received-at header
    request_id: str | None = None
    signature_verified: bool = False

    def to_line(self) -> str:
        """One line of a capture file (without the newline)."""
        data: dict[str, Any] = {
            "provider": self.provider, "content_type": self.content_type,
            "headers": self.headers, "body_b64": base64.b64encode(self.body).decode("ascii"),
            "received_at": self.received_at,
        }
        if self.request_id is not None:
            data["request_id"] = self.request_id
        if self.signature_verified:
            data["signature_verified"] = True
        return json.dumps(data, separators=(",", ":"), ensure_ascii=False)

    @classmethod
    def from_line(cls, line: str) -> Captured:
        try:
            data = json.loads(line)
        except ValueError as exc:
            raise CaptureError(f"not JSON: {exc}") from None
        if not isinstance(data, dict):
            raise CaptureError("not a JSON object")
        provider = data.get("provider")
        if provider not in PROVIDERS:
            raise CaptureError(f"provider must be one of {', '.join(PROVIDERS)}, "
                               f"not {provider!r}")
        # Required, though it may be "": the parsers tell form posts from JSON by it.
        content_type = data.get("content_type")
        if not isinstance(content_type, str):
            raise CaptureError("content_type must be a string")
        headers = data.get("headers", {})  # informational: replay does not use them
        if not isinstance(headers, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in headers.items()):
            raise CaptureError("headers must be an object of strings")
        body_b64 = data.get("body_b64")
        if not isinstance(body_b64, str):
            raise CaptureError("body_b64 is missing")
        try:
            body = base64.b64decode(body_b64, validate=True)
        except (binascii.Error, ValueError):
            raise CaptureError("body_b64 is not base64") from None
        received_at = data.get("received_at")
        # bool is an int in Python; `true` here is a mistake, not a time.
        if not isinstance(received_at, int) or isinstance(received_at, bool) \
                or received_at <= 0:
            raise CaptureError("received_at must be a positive integer (epoch ms)")
        request_id = data.get("request_id")
        if request_id is not None and (not isinstance(request_id, str) or not request_id):
            raise CaptureError("request_id must be a non-empty string")
        verified = data.get("signature_verified", False)
        if not isinstance(verified, bool):
            raise CaptureError("signature_verified must be true or false")
        return cls(provider, content_type, dict(headers), body, received_at, request_id,
                   verified)


def redact_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """Request headers as a capture stores them: credentials replaced by REDACTED."""
    return {name: REDACTED if name.lower() in CREDENTIAL_HEADERS else str(value)
            for name, value in headers.items()}


class CaptureWriter:
    """Appends captured requests to a file, one flushed line each, from many threads."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._file: IO[str] | None = self.path.open("a", encoding="utf-8")

    def append(self, record: Captured) -> None:
        line = record.to_line() + "\n"
        with self._lock:
            if self._file is None:
                raise ValueError(f"capture file {self.path} is closed")
            # A line per write and a flush: a crash loses at most the line being written,
            # and a half line is reported by the replay's check, not silently replayed.
            self._file.write(line)
            self._file.flush()

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


def read_capture(path: str | Path) -> Iterator[tuple[int, Captured | CaptureError]]:
    """(line number, record or the error for that line) for every non-blank line."""
    with Path(path).open(encoding="utf-8", errors="strict") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                yield number, Captured.from_line(line)
            except CaptureError as exc:
                yield number, exc


# --- replay ----------------------------------------------------------------------------------

class _Sender(Protocol):
    topic: str

    def send(self, key: bytes, value: bytes, headers: list[tuple[str, bytes]]) -> Any: ...

    def flush(self, timeout_s: float | None = None) -> None: ...


@dataclass
class ReplayResult:
    sent: int = 0
    failed: int = 0
    by_provider: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    aborted: str | None = None  # why the replay stopped early (Kafka unreachable)


def replay(records: Iterable[Captured], sender: _Sender, rate: float | None = None,
           flush_timeout_s: float = 60.0, clock: Callable[[], float] = time.monotonic,
           sleep: Callable[[float], None] = time.sleep) -> ReplayResult:
    """Write ``records`` to the sender's topic as the gateway writes requests, at most
    ``rate`` per second; returns after every record was acknowledged or failed."""
    result = ReplayResult()
    lock = threading.Lock()

    def failed(exc: BaseException) -> None:
        with lock:
            result.failed += 1
            if len(result.errors) < _MAX_ERRORS_SHOWN:
                result.errors.append(str(exc) or type(exc).__name__)

    start = clock()
    try:
        for index, record in enumerate(records):
            if rate:
                # Paced against the start, so a slow send is caught up rather than
                # stretching the whole replay.
                delay = start + index / rate - clock()
                if delay > 0:
                    sleep(delay)
            key = (record.request_id or uuid.uuid4().hex).encode()
            headers = raw_headers(record.provider, record.content_type, record.received_at,
                                  record.signature_verified)
            try:
                future = sender.send(key, record.body, headers)
            except Exception as exc:
                # Raised while Kafka is unreachable (after the producer's max block time):
                # stop at the first one instead of waiting that long for every line.
                result.aborted = f"{type(exc).__name__}: {exc}"
                break
            with lock:
                result.sent += 1
                result.by_provider[record.provider] += 1
            future.add_errback(failed)
    finally:
        sender.flush(flush_timeout_s)
    return result


def main(argv: list[str] | None = None) -> int:
    """``python -m gateway.replay``: write a capture file into email.raw."""
    import settings
    from gateway.config import GatewaySettings
    from gateway.kafka_writer import KafkaRawWriter

    parser = argparse.ArgumentParser(
        prog="python -m gateway.replay",
        description="Write a gateway capture file (JSON lines) into email.raw, with the "
                    "same key and headers as the gateway writes.")
    parser.add_argument("--config", help="YAML override file (else $EMAIL_STREAMING_CONFIG)")
    parser.add_argument("--file", required=True, help="capture file, JSON lines")
    parser.add_argument("--rate", type=float, default=None,
                        help="at most this many requests per second (default: unpaced)")
    args = parser.parse_args(argv)
    if args.rate is not None and args.rate <= 0:
        parser.error("--rate must be positive")

    try:
        config = settings.load(args.config)
    except settings.ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    # First pass: check every line, so that nothing is written from a broken file.
    count, largest, errors = 0, 0, []
    try:
        for number, item in read_capture(args.file):
            if isinstance(item, CaptureError):
                errors.append(f"{args.file}:{number}: {item}")
            else:
                count += 1
                largest = max(largest, len(item.body))
    except (OSError, UnicodeDecodeError) as exc:
        print(f"error: cannot read {args.file}: {exc}", file=sys.stderr)
        return 2
    if errors:
        for line in errors[:_MAX_ERRORS_SHOWN]:
            print(line, file=sys.stderr)
        more = len(errors) - _MAX_ERRORS_SHOWN
        print(f"error: {len(errors)} invalid line(s){f' ({more} not shown)' if more > 0 else ''}"
              "; nothing written", file=sys.stderr)
        return 2

    gw = GatewaySettings.from_config(config)
    topic = settings.topic(config, "raw")
    writer = KafkaRawWriter(config["kafka"]["bootstrap_servers"], topic,
                            timeout_s=float(gw["produce_timeout_s"]),
                            max_request_size=max(largest, int(gw["max_body_bytes"]))
                            + RECORD_OVERHEAD, client_id="email-gateway-replay")
    records = (item for _, item in read_capture(args.file) if isinstance(item, Captured))
    started = time.monotonic()
    try:
        result = replay(records, writer, args.rate)
    finally:
        writer.close()
    elapsed = time.monotonic() - started
    written = result.sent - result.failed
    providers = ", ".join(f"{p} {n}" for p, n in sorted(result.by_provider.items()))
    print(f"{args.file}: {count} request(s) read, {written} written to {topic}, "
          f"{result.failed} failed, {count - result.sent} not sent, in {elapsed:.1f} s "
          f"({providers or 'none'})")
    for error in result.errors:
        print(f"failed: {error}", file=sys.stderr)
    if result.aborted:
        print(f"error: stopped writing to {topic}: {result.aborted}", file=sys.stderr)
    return 1 if result.failed or result.aborted else 0
