"""A program that forgets ``aclose()`` is told what it lost.

The program publishes while Kafka cannot be reached, so its events stay
buffered, and returns without closing its manager: the interpreter's exit
reports how many events were never delivered, for which application, where
before the events vanished with exit status 0 and only aiokafka's
"Unclosed AIOKafkaProducer".
"""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

FORGETFUL = textwrap.dedent(
    """
    import asyncio, sys

    from otel_kafka_events import EventPayload, KafkaEventManager


    class Ping(EventPayload):
        n: int


    async def main():
        manager = KafkaEventManager(
            application="forgetful",
            topic_prefix="events",
            bootstrap_servers=sys.argv[1],
            registry_url=sys.argv[2],
        )
        await manager.initialize()
        publisher = await manager.create_publisher("ping", Ping)
        for n in range(5):
            await publisher.publish(Ping(n=n))


    asyncio.run(main())
    """
)


def unused_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@pytest.mark.parametrize("dev_mode", [False, True], ids=["plain", "dev-mode"])
def test_a_forgotten_close_reports_the_lost_events(
    tmp_path: Path, dev_mode: bool
) -> None:
    script = tmp_path / "forgetful.py"
    script.write_text(FORGETFUL)
    flags = ["-X", "dev"] if dev_mode else []
    done = subprocess.run(
        [
            sys.executable,
            *flags,
            str(script),
            f"127.0.0.1:{unused_port()}",
            f"http://127.0.0.1:{unused_port()}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    output = done.stdout + done.stderr
    assert (
        "KafkaEventManager of application 'forgetful' was not closed: 5 events"
        " accepted by publish() were never delivered"
    ) in output
    assert ("ResourceWarning: KafkaEventManager of application" in output) is dev_mode
