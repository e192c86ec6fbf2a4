"""A manager's lifecycle leaves nothing behind, under ``python -X dev -W error``.

Development mode turns on asyncio's debug checks and ResourceWarnings;
``-W error`` makes any warning fatal. Each scenario runs in its own
interpreter, whose stderr must not mention a destroyed task, an exception
never retrieved, or a warning.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap

import pytest

from otel_kafka_events.testing import LocalKafkaStack

from .test_reliability_delivery import dead_servers

SCRIPT = textwrap.dedent(
    """
    import asyncio, sys
    from otel_kafka_events import EventPayload, KafkaEventManager

    class Ping(EventPayload):
        n: int

    async def main(bootstrap, registry, scenario):
        manager = KafkaEventManager(
            application="lifecycle", topic_prefix="clean",
            bootstrap_servers=bootstrap, registry_url=registry,
            delivery_timeout=30, retry_backoff=0.05,
            raise_on_error=scenario == "failed-initialize",
        )
        if scenario == "failed-initialize":
            try:
                await manager.initialize()
            except Exception as exc:
                print("initialize failed:", type(exc).__name__)
            await manager.aclose(timeout=2)
            return
        await manager.initialize()
        publisher = await manager.create_publisher("ping", Ping)
        for n in range(50):
            await publisher.publish(Ping(n=n))
        if scenario == "normal":
            await publisher.publish(Ping(n=50), wait=True)
        print("undelivered:", await manager.aclose(timeout=2))

    asyncio.run(main(*sys.argv[1:]))
    """
)

FORBIDDEN = (
    "Task was destroyed",
    "never retrieved",
    "ResourceWarning",
    "RuntimeWarning",
    "Traceback",
    "Unclosed",
)


def run(
    bootstrap: str, registry: str, scenario: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-X",
            "dev",
            "-W",
            "error",
            "-c",
            SCRIPT,
            bootstrap,
            registry,
            scenario,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize("scenario", ["normal", "failed-initialize", "outage"])
async def test_lifecycle_is_clean_under_dev_mode(
    local_kafka_stack: LocalKafkaStack, scenario: str
) -> None:
    if scenario == "normal":
        await local_kafka_stack.create_topic("clean.lifecycle", exist_ok=True)
        bootstrap = local_kafka_stack.bootstrap_servers
    else:
        bootstrap = dead_servers()
    result = await asyncio.to_thread(
        run, bootstrap, local_kafka_stack.registry_url, scenario
    )
    assert result.returncode == 0, result.stderr
    for text in FORBIDDEN:
        assert text not in result.stderr, result.stderr
    expected = {
        "normal": "undelivered: 0",
        "failed-initialize": "initialize failed: BrokerUnavailableError",
        "outage": "undelivered: 50",
    }[scenario]
    assert expected in result.stdout
