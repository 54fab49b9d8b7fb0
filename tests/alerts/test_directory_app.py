"""The alerts process as an operator runs it: probes, metrics, `npsloop-alerts` serve and stop."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import textwrap

import httpx
import pytest

from npsloop_alerts.settings import AlertsSettings
from npsloop_shared.runtime import YOUNG_COLLECTION_THRESHOLD
from tests.alerts.conftest import ADMIN_TOKEN, CreateDatabase, free_port, running_app, until

pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module")
async def app_database_url(create_migrated_database: CreateDatabase) -> str:
    return await create_migrated_database()


async def test_readiness_names_kafka_when_the_broker_is_unreachable(
    app_database_url: str,
) -> None:
    settings = AlertsSettings(
        database_url=app_database_url,
        kafka_bootstrap_servers="127.0.0.1:9",
        admin_token=ADMIN_TOKEN,
    )
    async with running_app(settings) as app:
        ready = await app.get("/readyz")
        # The admin API keeps working; directory changes wait in the outbox.
        person = await app.put("/v1/people/during-outage", json={"name": "Still works"})

    assert ready.status_code == 503
    assert ready.headers["content-type"] == "application/problem+json"
    assert ready.json()["checks"] == {"database": "ok", "kafka": "unreachable"}
    assert ready.json()["detail"] == "not ready: kafka"
    assert person.status_code == 201


@pytest.mark.kafka
async def test_the_console_script_serves_by_default_and_stops_cleanly_on_sigterm(
    app_database_url: str, kafka_bootstrap: str
) -> None:
    port = free_port()
    env = {
        **os.environ,
        "NPSLOOP_DATABASE_URL": app_database_url,
        "NPSLOOP_KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "NPSLOOP_ADMIN_TOKEN": ADMIN_TOKEN,
        "NPSLOOP_LOG_LEVEL": "INFO",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "npsloop_alerts",
        "--port",
        str(port),
        env=env,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:

            async def ready() -> bool:
                try:
                    return (await http.get("/readyz")).status_code == 200
                except httpx.TransportError:
                    return False

            await until(ready, "npsloop-alerts never became ready", within=60)
            metrics = (await http.get("/metrics")).text
            health = (await http.get("/healthz")).json()
            anonymous = await http.get("/v1/accounts")
    finally:
        process.send_signal(signal.SIGTERM)
        _, logs = await asyncio.wait_for(process.communicate(), 60)

    # uvicorn shuts down gracefully, then re-raises the signal so supervisors see why it ended.
    assert process.returncode in {0, -signal.SIGTERM}
    assert b"Application shutdown complete" in logs
    assert "npsloop_alerts_directory_outbox_pending" in metrics
    assert health["status"] == "ok"
    assert anonymous.status_code == 401


@pytest.mark.kafka
async def test_the_served_app_settles_the_garbage_collector_once_started(
    app_database_url: str, kafka_bootstrap: str
) -> None:
    # In a process of its own: freezing the collector is process-wide.
    script = textwrap.dedent(
        """
        import asyncio, gc
        from npsloop_alerts.app import create_app

        async def main() -> None:
            for settle in (False, True):
                app = create_app(settle_gc_after_start=settle)
                async with app.router.lifespan_context(app):
                    print(settle, gc.get_freeze_count(), gc.get_threshold()[0])

        asyncio.run(main())
        """
    )
    env = {
        **os.environ,
        "NPSLOOP_DATABASE_URL": app_database_url,
        "NPSLOOP_KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "NPSLOOP_ADMIN_TOKEN": ADMIN_TOKEN,
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, env=env, stdout=asyncio.subprocess.PIPE
    )
    output, _ = await asyncio.wait_for(process.communicate(), 120)

    assert process.returncode == 0
    unsettled, settled = (line.split() for line in output.decode().splitlines())
    assert unsettled == ["False", "0", "700"]
    assert settled[0] == "True"
    # Everything start-up built (modules, pools, compiled templates) is out of the collector's way.
    assert int(settled[1]) > 10_000
    assert int(settled[2]) == YOUNG_COLLECTION_THRESHOLD
