"""`AiokafkaTransport` without a broker: what the broker's answers about a
topic mean (a leader being elected is an outage, a missing topic is not)."""

from __future__ import annotations

from typing import Any

import pytest

from otel_kafka_events._delivery._aiokafka import AiokafkaTransport
from otel_kafka_events._delivery._transport import TopicInfo


class FakeAdmin:
    """Answers every ``describe_topics`` with ``answer``."""

    def __init__(self, answer: list[dict[str, Any]]) -> None:
        self.answer = answer

    async def describe_topics(self, topics: list[str]) -> list[dict[str, Any]]:
        return self.answer


class FakeProducer:
    """Stands for a started producer (topic checks need one)."""


async def described(answer: list[dict[str, Any]]) -> TopicInfo:
    transport = AiokafkaTransport(
        producer=FakeProducer(),
        admin_client=FakeAdmin(answer),
        manage_clients=False,
    )
    await transport.start()
    return await transport.describe_topic("t")


@pytest.mark.parametrize(
    ("code", "name", "retriable"),
    [
        (5, "LEADER_NOT_AVAILABLE", True),
        (3, "UNKNOWN_TOPIC_OR_PARTITION", True),
        (29, "TOPIC_AUTHORIZATION_FAILED", False),
    ],
)
async def test_a_topic_error_says_whether_asking_again_may_help(
    code: int, name: str, retriable: bool
) -> None:
    info = await described([{"topic": "t", "error_code": code, "partitions": []}])
    assert (info.partitions, info.error_code) == ((), code)
    assert (info.error_name, info.retriable) == (name, retriable)


async def test_a_usable_topic_lists_its_partitions() -> None:
    partitions = [{"partition": 1}, {"partition": 0}]
    info = await described([{"topic": "t", "error_code": 0, "partitions": partitions}])
    assert info == TopicInfo((0, 1))
