"""Waits until a Kafka broker answers a metadata request with itself in the broker list.

An open port is not readiness: the KRaft controller may not have registered the broker yet, and
clients would then see an empty cluster. This is the check aiokafka's own test suite uses.
Exits 0 when ready; 1 on timeout or when the broker process (``--pid``) died first.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
from pathlib import Path

from aiokafka.client import AIOKafkaClient
from aiokafka.errors import KafkaError

POLL_INTERVAL_SECONDS = 0.5


def process_alive(pid: int) -> bool:
    """False once the process exited, even while it waits as a zombie for kafka.sh to reap it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


async def broker_listed(bootstrap_servers: str) -> bool:
    client = AIOKafkaClient(bootstrap_servers=bootstrap_servers, request_timeout_ms=5000)
    try:
        await client.bootstrap()
        return bool(client.cluster.brokers())
    except (KafkaError, OSError):
        return False
    finally:
        await client.close()


async def wait_until_ready(
    bootstrap_servers: str, pid: int | None, within_seconds: float
) -> str | None:
    """Returns None when ready, else the reason it never became ready."""
    deadline = time.monotonic() + within_seconds
    while time.monotonic() < deadline:
        if pid is not None and not process_alive(pid):
            return f"broker process {pid} exited"
        if await broker_listed(bootstrap_servers):
            return None
        await asyncio.sleep(POLL_INTERVAL_SECONDS)
    return f"no broker in the metadata of {bootstrap_servers} after {within_seconds:.0f}s"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bootstrap-servers", required=True)
    parser.add_argument("--pid", type=int, default=None, help="give up early if it exits")
    parser.add_argument("--timeout", type=float, default=90.0)
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    # Connection refusals while the JVM boots are expected; the caller reports the outcome.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    problem = asyncio.run(wait_until_ready(args.bootstrap_servers, args.pid, args.timeout))
    if problem is not None:
        sys.stderr.write(f"kafka_ready: {problem}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
