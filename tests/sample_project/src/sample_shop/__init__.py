"""A tiny shop service: declares its events once, publishes on checkout."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated

from pydantic import Field

from otel_kafka_events import (
    EventManager,
    EventPayload,
    EventPublisher,
    metrics_configuration_factory,
)

__all__ = ["EVENTS", "CheckoutCompleted", "Shop"]


class CheckoutCompleted(EventPayload):
    """A customer paid."""

    items: int
    total: Annotated[Decimal, Field(max_digits=10, decimal_places=2)]


EVENTS = {"checkout_completed": CheckoutCompleted}
"""Every event the service publishes; ``otel-kafka-events check`` reads it."""


class Shop:
    """The service's logic, publishing through whatever manager it is given."""

    def __init__(self, manager: EventManager) -> None:
        self.manager = manager
        self._checkouts: EventPublisher[CheckoutCompleted] | None = None

    @classmethod
    def from_environment(cls) -> Shop:
        """The shop as deployed: the manager the environment describes."""
        return cls(metrics_configuration_factory().make_manager())

    async def start(self) -> None:
        """Initialize the manager and create the publishers."""
        await self.manager.initialize()
        self._checkouts = await self.manager.create_publisher(
            "checkout_completed", EVENTS["checkout_completed"]
        )

    async def checkout(self, items: int, total: Decimal) -> None:
        """Record a checkout."""
        assert self._checkouts is not None, "call start() first"
        await self._checkouts.publish(CheckoutCompleted(items=items, total=total))

    async def stop(self) -> None:
        """Deliver what is pending."""
        await self.manager.aclose()
