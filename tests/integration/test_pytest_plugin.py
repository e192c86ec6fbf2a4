"""The pytest plugin of ``otel_kafka_events.testing``, in a user's suite.

Its broker fixtures start the devstack's `LocalKafkaStack`; what they do
without the devstack installed is tested in test_distributions.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from otel_kafka_events_devstack import BROKER_ENV_VAR

_PLUGIN_TEST = textwrap.dedent(
    """
    import pytest
    from aiokafka import AIOKafkaProducer

    @pytest.mark.asyncio
    async def test_topic_round_trip(local_kafka_stack, kafka_topic):
        assert kafka_topic.startswith("test.test_topic_round_trip_")
        producer = AIOKafkaProducer(
            bootstrap_servers=local_kafka_stack.bootstrap_servers
        )
        await producer.start()
        try:
            await producer.send_and_wait(kafka_topic, b"hello")
        finally:
            await producer.stop()
        records = await local_kafka_stack.consume(kafka_topic, 1, timeout=10)
        assert [r.value for r in records] == [b"hello"]
        assert local_kafka_stack.broker.name == "noida"
    """
)


def test_pytest_plugin_fixtures(tmp_path: Path) -> None:
    (tmp_path / "conftest.py").write_text(
        'pytest_plugins = ["otel_kafka_events.testing.pytest_plugin"]\n'
    )
    (tmp_path / "test_inner.py").write_text(_PLUGIN_TEST)
    # Strict mode: the plugin's async fixture must not depend on auto mode.
    (tmp_path / "pytest.ini").write_text(
        "[pytest]\nasyncio_mode = strict\n"
        "asyncio_default_fixture_loop_scope = function\n"
    )
    env = {**os.environ, BROKER_ENV_VAR: "noida"}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout
