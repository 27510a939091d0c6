"""``python -m gateway [--config FILE] [--host H] [--port P]``: serve until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from types import FrameType

import settings
from gateway.config import GatewaySettings
from gateway.kafka_writer import KafkaRawWriter
from gateway.server import Gateway, make_server

log = logging.getLogger("gateway")

# Room for the key and headers on top of the body, so the producer never refuses a body the
# gateway accepted.
_RECORD_OVERHEAD = 64 * 1024


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gateway", description=__doc__)
    parser.add_argument("--config", help="YAML override file (else $EMAIL_STREAMING_CONFIG)")
    parser.add_argument("--host", help="bind address (default: gateway.host)")
    parser.add_argument("--port", type=int, help="port (default: gateway.port)")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # kafka-python narrates every reconnect at INFO/WARNING; its errors (connection refused,
    # authentication) still show, and they back off to one every ~30 s.
    if args.log_level.upper() != "DEBUG":
        logging.getLogger("kafka").setLevel(logging.ERROR)

    try:
        config = settings.load(args.config)
    except settings.ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    gw_settings = GatewaySettings.from_config(config)
    writer = KafkaRawWriter(config["kafka"]["bootstrap_servers"], settings.topic(config, "raw"),
                            timeout_s=float(gw_settings["produce_timeout_s"]),
                            max_request_size=int(gw_settings["max_body_bytes"])
                            + _RECORD_OVERHEAD)
    writer.start_probe()
    gateway = Gateway(gw_settings, writer)
    for warning in gateway.warnings():
        log.warning(warning)

    server = make_server(gateway, args.host or gw_settings["host"],
                         args.port if args.port is not None else int(gw_settings["port"]))
    host, port = server.server_address[:2]
    log.info("gateway listening on http://%s:%s, writing to %s", host, port, writer.topic)

    def stop(signum: int, frame: FrameType | None) -> None:
        # shutdown() blocks until serve_forever returns, so it cannot run on that thread.
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        server.serve_forever()
    finally:
        server.server_close()
        writer.close()
        gateway.close()
        log.info("gateway stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
