"""The sample service's own tests, using only the plugin's fixtures."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

from sample_shop import Shop

from otel_kafka_events import KafkaEventManager, MockEventManager, MockEventPublisher
from otel_kafka_events.testing import EventsTopic
from otel_kafka_events_devstack import LocalKafkaStack


async def test_checkout_reaches_kafka(
    metrics_env: dict[str, str],
    events_topic: EventsTopic,
    consume_events: Callable[..., Awaitable[list[Any]]],
) -> None:
    shop = Shop.from_environment()
    assert isinstance(shop.manager, KafkaEventManager)
    await shop.start()
    await shop.checkout(2, Decimal("19.90"))
    assert await shop.manager.aclose() == 0

    [event] = await consume_events(events_topic, 1)
    assert event.event == "checkout_completed"
    assert event.value["total"] == Decimal("19.90")
    assert event.value["application"] == metrics_env["METRICS_APPLICATION"]


async def test_manager_from_topic_fixture(
    events_topic: EventsTopic,
    local_kafka_stack: LocalKafkaStack,
    local_kafka_env: dict[str, str],
    consume_events: Callable[..., Awaitable[list[Any]]],
) -> None:
    manager = KafkaEventManager(
        application=events_topic.application,
        topic_prefix=events_topic.topic_prefix,
        bootstrap_servers=local_kafka_stack.bootstrap_servers,
        registry_url=local_kafka_stack.registry_url,
        enable_idempotence="METRICS_ENABLE_IDEMPOTENCE" not in local_kafka_env,
    )
    assert manager.topic == events_topic.name
    shop = Shop(manager)
    await shop.start()
    await shop.checkout(1, Decimal("5.00"))
    await shop.stop()
    [event] = await consume_events(events_topic.name, 1)
    assert event.value["items"] == 1


async def test_checkout_with_the_mock(mock_event_manager: MockEventManager) -> None:
    shop = Shop(mock_event_manager)
    await shop.start()
    await shop.checkout(3, Decimal("1.50"))
    publisher = shop._checkouts
    assert publisher is not None
    assert isinstance(publisher, MockEventPublisher)
    publisher.published.assert_published_all([{"items": 3, "total": "1.50"}])
