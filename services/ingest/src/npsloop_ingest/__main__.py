"""`npsloop-ingest`: serve the ingest API with uvicorn (uvloop + httptools)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import uvicorn
from pydantic import ValidationError

from npsloop_ingest.settings import IngestSettings

EPILOG = """\
configuration (environment):
  NPSLOOP_KAFKA_BOOTSTRAP_SERVERS   Kafka brokers, e.g. 127.0.0.1:9092
  NPSLOOP_INGEST_SOURCES            JSON {source_id: {"type": "api", "token": "...",
                                    "signing_secret": "whsec_..."}} (either credential optional)
  NPSLOOP_INGEST_ACK_TIMEOUT        seconds to wait for Kafka's ack before answering 503 (5)
  NPSLOOP_INGEST_TOPIC_PARTITIONS, NPSLOOP_INGEST_TOPIC_REPLICATION_FACTOR,
  NPSLOOP_INGEST_TOPIC_RETENTION_MS  used when the topic is created (6, 1, 7 days)
  NPSLOOP_LOG_LEVEL, NPSLOOP_LOG_FORMAT (json|text)
"""


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="npsloop-ingest",
        description="Receive NPS responses over HTTP and put them on Kafka; "
        "202 only after Kafka acknowledged them.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default: %(default)s)"
    )
    parser.add_argument(
        "--port", type=int, default=8000, help="port to bind (default: %(default)s)"
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="uvicorn worker processes (default: %(default)s). Each keeps its own /metrics: "
        "prefer one worker per container and more replicas",
    )
    parser.add_argument(
        "--access-log", action="store_true", help="log every request (off: it costs throughput)"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        settings = IngestSettings()
    except ValidationError as exc:
        sys.stderr.write(f"npsloop-ingest: invalid configuration:\n{_describe(exc)}\n")
        return 2
    uvicorn.run(
        "npsloop_ingest.app:app_from_environment",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        loop="uvloop",
        http="httptools",
        log_config=None,  # our JSON logging, configured by the factory in each worker
        access_log=args.access_log,
        # Nothing here uses the client address, and the `Server` header only advertises
        # versions; both cost time on every request.
        proxy_headers=False,
        server_header=False,
        # In-flight requests wait at most the ack timeout; let them finish on shutdown.
        timeout_graceful_shutdown=int(settings.ingest_ack_timeout) + 5,
    )
    return 0


def _describe(exc: ValidationError) -> str:
    # Never echo the input: NPSLOOP_INGEST_SOURCES holds tokens and signing secrets.
    return "\n".join(
        f"  {'.'.join(str(part) for part in error['loc'])}: {error['msg']}"
        for error in exc.errors(include_url=False, include_input=False)
    )


if __name__ == "__main__":
    sys.exit(main())
