"""``python -m bench.gateway_bench [--requests N] [--concurrency C] [--provider P]``

Throughput and latency of the HTTP gateway against the local stack's real Kafka: the
gateway runs in this process on 127.0.0.1 (ephemeral port) with its real Kafka writer
(acks=all, so every 200 is a durable write), writing to a throw-away topic
``email.raw.bench-<tag>`` (deleted afterwards unless --keep-topic). C client threads send
N signed requests over keep-alive HTTP connections. Signing happens before the clock
starts, so the figures are the gateway's (verification + Kafka round trip + HTTP), except
that client and server threads share one interpreter: on a small machine the numbers are a
lower bound of what a separate gateway process does.

Prints requests/s, latency p50/p95/p99/max and errors, then one JSON line with the same
figures. Not a test: nothing is asserted except that the topic holds what was acknowledged.
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import http.client
import json
import logging
import secrets
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import settings
from devtools import webhook_signing as signing
from devtools.kafka_io import end_offsets
from gateway import tracking
from gateway.config import GatewaySettings
from gateway.kafka_writer import KafkaRawWriter
from gateway.server import Gateway, make_server
from stack import kafka

PROVIDERS = ("sendgrid", "mailgun", "ses", "postmark", "sparkpost", "mandrill", "tracker")
MAX_REQUESTS = 200_000
MAX_CONCURRENCY = 256
MANDRILL_URL = "https://hooks.example.com/webhooks/mandrill"
TOPIC_ARN = "arn:aws:sns:eu-west-1:111122223333:bench"
WARMUP = 20


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    body: bytes | None
    headers: dict[str, str]


@dataclass
class Results:
    latencies: list[float] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)


# --- signed requests, one builder per provider ---------------------------------------------

class Signer(signing.ProviderKeys):
    """Secrets made for this run, the matching gateway settings, and signed requests."""

    def __init__(self, cert_dir: Path) -> None:
        super().__init__(cert_dir, "SimpleNotificationService-bench.pem", "bench")

    def build(self, provider: str, i: int) -> Request:
        return getattr(self, f"_{provider}")(i, int(time.time()))

    def _auth(self) -> str:
        return signing.basic_auth(*self.basic)

    def _sendgrid(self, i: int, now: int) -> Request:
        # A typical batch: three events, CRLF-separated as SendGrid sends them.
        events = [{"email": f"user{i}@example.net", "timestamp": now - 60 + n, "event": kind,
                   "sg_event_id": f"bench-{i}-{n}", "sg_message_id": f"msg-{i}.filter0",
                   "campaign_id": "bench"} for n, kind in enumerate(("delivered", "open",
                                                                     "click"))]
        body = ("[" + ",\r\n".join(json.dumps(e) for e in events) + "\r\n]\r\n").encode()
        return Request("POST", "/webhooks/sendgrid", body,
                       signing.sendgrid_headers(self.sendgrid, body, now))

    def _mailgun(self, i: int, now: int) -> Request:
        # Every request needs its own token: the gateway refuses a token it has seen.
        body = json.dumps({
            "signature": signing.mailgun_signature(self.mailgun, now, secrets.token_hex(25)),
            "event-data": {"event": "delivered", "id": f"bench-{i}", "timestamp": now - 1.5,
                           "recipient": f"user{i}@example.org"}}).encode()
        return Request("POST", "/webhooks/mailgun", body, {"Content-Type": "application/json"})

    def _ses(self, i: int, now: int) -> Request:
        stamp = dt.datetime.fromtimestamp(now, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
        inner = {"eventType": "Delivery", "mail": {
            "timestamp": stamp, "messageId": f"bench-{i}", "destination": [
                f"user{i}@example.com"]}, "delivery": {"timestamp": stamp}}
        message = signing.sign_sns(
            {"Type": "Notification", "MessageId": str(uuid.uuid4()), "TopicArn": TOPIC_ARN,
             "Message": json.dumps(inner), "Timestamp": stamp}, self.sns, self.cert_url)
        return Request("POST", "/webhooks/ses", json.dumps(message).encode(),
                       {"Content-Type": "text/plain; charset=UTF-8"})

    def _postmark(self, i: int, now: int) -> Request:
        body = json.dumps({"RecordType": "Delivery", "MessageID": f"bench-{i}",
                           "Recipient": f"user{i}@example.com",
                           "DeliveredAt": "2026-01-01T12:00:00Z"}).encode()
        return Request("POST", "/webhooks/postmark", body,
                       {"Content-Type": "application/json", "Authorization": self._auth()})

    def _sparkpost(self, i: int, now: int) -> Request:
        body = json.dumps([{"msys": {"message_event": {
            "type": "delivery", "event_id": f"bench-{i}", "timestamp": str(now),
            "message_id": f"m-{i}", "rcpt_to": f"user{i}@example.jp"}}}]).encode()
        return Request("POST", "/webhooks/sparkpost", body,
                       {"Content-Type": "application/json", "Authorization": self._auth()})

    def _mandrill(self, i: int, now: int) -> Request:
        events = [{"event": "send", "ts": now, "_id": f"bench-{i}",
                   "msg": {"email": f"user{i}@example.com", "ts": now}}]
        body = ("mandrill_events=" + quote(json.dumps(events), safe="")).encode()
        return Request("POST", "/webhooks/mandrill", body, {
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Mandrill-Signature": signing.mandrill_signature(self.mandrill, MANDRILL_URL,
                                                               body)})

    def _tracker(self, i: int, now: int) -> Request:
        token = tracking.sign_token("o", {"message_id": f"bench-{i}",
                                          "subscriber_id": f"u{i}"}, self.tracker)
        return Request("GET", f"/t/o/{token}.gif", None, {"User-Agent": "bench/1"})


# --- load generation -----------------------------------------------------------------------

def run_clients(port: int, requests: list[Request], concurrency: int, deadline: float,
                results: Results, expected: Callable[[int], bool]) -> None:
    """Send every request once, from ``concurrency`` threads with one keep-alive connection
    each; stop at ``deadline`` (monotonic)."""
    next_index = iter(range(len(requests)))
    index_lock = threading.Lock()

    def worker() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            while time.monotonic() < deadline:
                with index_lock:
                    i = next(next_index, None)
                if i is None:
                    return
                request = requests[i]
                started = time.perf_counter()
                try:
                    conn.request(request.method, request.path, body=request.body,
                                 headers=request.headers)
                    response = conn.getresponse()
                    response.read()
                    outcome = str(response.status)
                    ok = expected(response.status)
                except (OSError, http.client.HTTPException) as exc:
                    outcome, ok = type(exc).__name__, False
                    conn.close()  # reconnects on the next request
                elapsed = time.perf_counter() - started
                with results.lock:
                    results.statuses[outcome] += 1
                    if ok:
                        results.latencies.append(elapsed)
        finally:
            conn.close()

    threads = [threading.Thread(target=worker, name=f"client-{n}", daemon=True)
               for n in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()) + 35)


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list (0 for an empty one)."""
    if not sorted_values:
        return 0.0
    rank = max(1, min(len(sorted_values), round(q / 100 * len(sorted_values) + 0.5)))
    return sorted_values[rank - 1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gateway_bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--provider", choices=PROVIDERS, default="sendgrid")
    parser.add_argument("--max-seconds", type=float, default=120.0,
                        help="stop sending after this long (default 120)")
    parser.add_argument("--config", help="YAML override file (else $EMAIL_STREAMING_CONFIG)")
    parser.add_argument("--keep-topic", action="store_true",
                        help="keep the bench topic instead of deleting it")
    args = parser.parse_args(argv)
    if not 1 <= args.requests <= MAX_REQUESTS:
        parser.error(f"--requests must be 1..{MAX_REQUESTS}")
    if not 1 <= args.concurrency <= MAX_CONCURRENCY:
        parser.error(f"--concurrency must be 1..{MAX_CONCURRENCY}")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("kafka").setLevel(logging.ERROR)

    config = settings.load(args.config)
    bootstrap = config["kafka"]["bootstrap_servers"]
    tag = uuid.uuid4().hex[:8]
    topic = f"{settings.topic(config, 'raw')}.bench-{tag}"
    # Only the bench topic: ensure_topics creates every topic of the config it is given.
    bench_config = copy.deepcopy(config)
    bench_config["kafka"]["topics"] = {
        "raw": {**config["kafka"]["topics"]["raw"], "name": topic}}
    try:
        kafka.ensure_topics(bench_config)
    except Exception as exc:
        print(f"error: cannot create {topic} at {bootstrap}: {exc} "
              "(is the local stack running? python -m stack status)", file=sys.stderr)
        return 2

    with tempfile.TemporaryDirectory(prefix="gateway-bench-") as cert_dir:
        signer = Signer(Path(cert_dir))
        # Verification stays on (the default) whatever the config says: it is part of
        # what is measured.
        gw_settings = GatewaySettings.from_section(
            {**(config.get("gateway") or {}), **signer.gateway_section(MANDRILL_URL, TOPIC_ARN),
             "verify": {p: True for p in PROVIDERS if p != "tracker"}})
        writer = KafkaRawWriter(bootstrap, topic,
                                timeout_s=float(gw_settings["produce_timeout_s"]))
        gateway = Gateway(gw_settings, writer)
        server = make_server(gateway, "127.0.0.1", 0)
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()
        port = server.server_address[1]
        ok_status = 200
        try:
            print(f"signing {args.requests + WARMUP} {args.provider} requests ...", flush=True)
            requests = [signer.build(args.provider, i) for i in range(args.requests + WARMUP)]
            # Warm-up: producer connections and metadata, first TLS-free HTTP connections.
            warm = Results()
            run_clients(port, requests[:WARMUP], min(args.concurrency, WARMUP),
                        time.monotonic() + 30, warm, lambda s: s == ok_status)
            results = Results()
            print(f"sending {args.requests} over {args.concurrency} connection(s) to "
                  f"http://127.0.0.1:{port} -> {topic}", flush=True)
            started = time.perf_counter()
            run_clients(port, requests[WARMUP:], args.concurrency,
                        time.monotonic() + args.max_seconds, results,
                        lambda s: s == ok_status)
            duration = time.perf_counter() - started
        finally:
            server.shutdown()
            server.server_close()
            writer.close()

    stored = sum(end_offsets(bootstrap, topic).values())
    if not args.keep_topic:
        _delete_topic(bootstrap, topic)

    latencies = sorted(results.latencies)
    ok = len(latencies)
    sent = sum(results.statuses.values())
    errors = {k: v for k, v in results.statuses.items() if k != str(ok_status)}
    summary = {
        "provider": args.provider, "requests": args.requests, "sent": sent, "ok": ok,
        "errors": sum(errors.values()), "error_kinds": errors,
        "concurrency": args.concurrency, "duration_s": round(duration, 3),
        "requests_per_s": round(ok / duration, 1) if duration > 0 else 0.0,
        "p50_ms": round(percentile(latencies, 50) * 1000, 2),
        "p95_ms": round(percentile(latencies, 95) * 1000, 2),
        "p99_ms": round(percentile(latencies, 99) * 1000, 2),
        "max_ms": round(latencies[-1] * 1000, 2) if latencies else 0.0,
        "records_in_topic": stored, "warmup_ok": len(warm.latencies), "topic": topic,
        "topic_deleted": not args.keep_topic,
    }
    print(f"{args.provider}: {ok}/{args.requests} ok in {duration:.2f} s = "
          f"{summary['requests_per_s']} requests/s (concurrency {args.concurrency})")
    print(f"latency ms: p50 {summary['p50_ms']}  p95 {summary['p95_ms']}  "
          f"p99 {summary['p99_ms']}  max {summary['max_ms']}")
    print(f"errors: {summary['errors']} {errors or ''}".rstrip())
    print(f"records in {topic}: {stored} (= {ok} ok + {len(warm.latencies)} warm-up ok "
          "expected)")
    print(json.dumps(summary, separators=(",", ":")))
    return 0 if not errors and stored == ok + len(warm.latencies) else 1


def _delete_topic(bootstrap: str, topic: str) -> None:
    admin = kafka.admin_client(bootstrap)
    try:
        admin.delete_topics([topic])
    except Exception as exc:  # a leftover bench topic is harmless; say so and go on
        print(f"warning: could not delete {topic}: {exc}", file=sys.stderr)
    finally:
        admin.close()


if __name__ == "__main__":
    sys.exit(main())
