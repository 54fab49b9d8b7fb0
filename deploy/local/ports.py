"""Choosing local TCP ports for servers started by the runner, the tests and the benchmarks."""

from __future__ import annotations

import random
import socket

# Linux hands out ephemeral ports (the local side of every outgoing connection) from
# 32768-60999. A port chosen there can be taken by some client's connection between our choice
# and the server's bind, so chosen ports come from below that range.
_STABLE_RANGE = range(20_000, 32_768)


def port_is_free(port: int) -> bool:
    with socket.socket() as probe:
        # As servers bind (uvicorn, Kafka): a port lingering in TIME_WAIT counts as free.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A port on 127.0.0.1 that is free now and outside the kernel's ephemeral range."""
    for _ in range(200):
        port = random.choice(_STABLE_RANGE)  # noqa: S311 - not a secret, just spreading choices
        if port_is_free(port):
            return port
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        chosen: int = probe.getsockname()[1]
        return chosen
