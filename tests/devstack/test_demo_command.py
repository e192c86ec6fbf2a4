"""``otel-kafka-events demo``, the command the devstack adds to the group.

It runs through the runtime's command group, as a user runs it: the group
finds the command under the ``otel_kafka_events.commands`` entry points.
"""

from __future__ import annotations

import pytest
from click.testing import CliRunner, Result

from otel_kafka_events._cli import cli

from ..broker_support import BROKER_KIND

pytestmark = pytest.mark.integration


def invoke(*args: str) -> Result:
    """Run the command line in-process; stdout and stderr kept apart."""
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_demo_refuses_a_negative_count() -> None:
    result = invoke("demo", "--count", "-1")
    assert result.exit_code == 2
    assert "-1 is not in the range x>=0" in result.stderr


def test_demo_prints_its_topic() -> None:
    result = invoke("demo", "--count", "2", "--broker", BROKER_KIND)
    assert result.exit_code == 0, (result.stdout, result.stderr)
    assert "Topic otel_kafka_events.examples.demo" in result.stdout
    assert "Published 2 events" in result.stdout
    assert result.stdout.count('"username"') == 2
    assert "Read back 2 events" in result.stdout
    assert "Demo finished" in result.stdout
