"""The one write the gateway makes: a raw request to email.raw, acknowledged by all ISRs.

``RawWriter`` is the interface the server depends on, so tests pass an in-memory object
and the server never imports Kafka. ``write`` returns only after the broker acknowledged
(acks=all) and raises otherwise; the server turns that into 503 so the sender retries.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Sequence
from typing import Any, Protocol

log = logging.getLogger("gateway")


def raw_headers(provider: str, content_type: str, received_ms: int,
                verified: bool) -> list[tuple[str, bytes]]:
    """The Kafka headers of an email.raw record, which the normalize job reads; the gateway
    and the capture replay both build them here so that a replayed record is
    indistinguishable from a live one."""
    return [
        ("provider", provider.encode()),
        # http.client decodes header values as Latin-1, so this restores the bytes.
        ("content-type", content_type.encode("latin-1", "replace")),
        ("received-at", str(received_ms).encode()),
        ("signature-verified", b"true" if verified else b"false"),
    ]


class RawWriter(Protocol):
    def write(self, key: bytes, value: bytes, headers: Sequence[tuple[str, bytes]]) -> None:
        """Write one record; return after the broker's acknowledgement, raise on failure."""

    def ready(self) -> bool:
        """Whether a write is likely to succeed now (for /readyz); must not block."""


class KafkaRawWriter:
    """kafka-python producer. It starts, and the gateway answers 503, while Kafka is down:
    nothing blocks longer than ``timeout_s``."""

    def __init__(self, bootstrap_servers: str, topic: str, timeout_s: float = 10.0,
                 max_request_size: int = 1_048_576, client_id: str = "email-gateway",
                 api_version: tuple[int, ...] = (4, 0)) -> None:
        self.topic = topic
        self._timeout_s = timeout_s
        self._bootstrap = [a.strip() for a in bootstrap_servers.split(",") if a.strip()]
        timeout_ms = int(timeout_s * 1000)
        self._config: dict[str, Any] = {
            "bootstrap_servers": bootstrap_servers,
            "client_id": client_id,
            "acks": "all",
            # Retries inside the producer are safe (no duplicates from them) and bounded
            # by delivery_timeout_ms, so a failed future means the record is not written
            # and the sender's retry is the only copy.
            "enable_idempotence": True,
            "linger_ms": 2,
            "max_block_ms": timeout_ms,
            "request_timeout_ms": max(1000, timeout_ms // 2),
            "delivery_timeout_ms": timeout_ms,
            "max_request_size": max_request_size,
            # Without it kafka-python bootstraps inside the constructor, blocking for up to
            # 30 s while Kafka is down. Each connection still negotiates with ApiVersions
            # and clamps down to what the broker supports, so an older broker works too.
            "api_version": api_version,
        }
        self._producer: Any = None
        self._lock = threading.Lock()
        self._ok = False
        self._warm = False
        self._last_write = float("-inf")
        self._stop = threading.Event()

    def _get(self) -> Any:
        with self._lock:
            if self._producer is None:
                from kafka import KafkaProducer

                self._producer = KafkaProducer(**self._config)
            return self._producer

    def write(self, key: bytes, value: bytes, headers: Sequence[tuple[str, bytes]]) -> None:
        self._last_write = time.monotonic()
        try:
            future = self._get().send(self.topic, key=key, value=value, headers=list(headers))
            # Slightly longer than delivery_timeout_ms so the producer reports its own error.
            future.get(timeout=self._timeout_s + 2)
        except Exception:
            self._ok = False
            raise
        self._ok = True

    def send(self, key: bytes, value: bytes, headers: Sequence[tuple[str, bytes]]) -> Any:
        """Queue one record without waiting for it (bulk replays): returns kafka-python's
        future; call ``flush`` and then check each future's ``succeeded()``."""
        self._last_write = time.monotonic()
        return self._get().send(self.topic, key=key, value=value, headers=list(headers))

    def flush(self, timeout_s: float | None = None) -> None:
        """Wait until every queued record is acknowledged or has failed."""
        with self._lock:
            producer = self._producer
        if producer is not None:
            producer.flush(timeout=timeout_s)

    def ready(self) -> bool:
        """The latest write's outcome, or the background probe's when writes are idle.
        (kafka-python's bootstrap_connected() is no help: it is true while a bootstrap is
        still in progress.)"""
        return self._ok

    def start_probe(self, interval_s: float = 15.0) -> None:
        """Probe now (connecting the producer before the first request) and again whenever
        no write has happened for ``interval_s``."""
        def run() -> None:
            while not self._stop.is_set():
                if time.monotonic() - self._last_write >= interval_s:
                    self._probe()
                self._stop.wait(interval_s)
        threading.Thread(target=run, name="kafka-probe", daemon=True).start()

    def _probe(self) -> None:
        # A broker accepting connections, plus the writes' own outcomes, is as close to
        # "Kafka is up" as a non-blocking probe gets without kafka-python internals.
        ok = any(_reachable(address) for address in self._bootstrap)
        if ok and not self._warm:
            try:
                self._get().partitions_for(self.topic)  # connects the producer early
                self._warm = True
            except Exception:
                ok = False
        if not ok:
            log.warning("Kafka not reachable at %s; requests answer 503 until it is",
                        ",".join(self._bootstrap))
        self._ok = ok

    def close(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        with self._lock:
            if self._producer is not None:
                self._producer.flush(timeout=timeout_s)
                self._producer.close(timeout=timeout_s)
                self._producer = None


def _reachable(address: str, timeout_s: float = 2.0) -> bool:
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]") or "localhost", int(port)),
                                      timeout=timeout_s):
            return True
    except (OSError, ValueError):
        return False
