"""`EventMaker` and `EventDependency` in a FastAPI application."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
from fastapi import Depends, FastAPI

from otel_kafka_events import (
    EventManager,
    EventPayload,
    MockEventManager,
    MockEventPublisher,
)
from otel_kafka_events.fastapi import EventDependency, EventMaker


class Viewed(EventPayload):
    page: str


class Events(EventMaker):
    async def initialize(self, manager: EventManager) -> None:
        self.viewed = await manager.create_publisher("viewed", Viewed)


async def test_handlers_get_initialized_publishers() -> None:
    dependency = EventDependency(Events())
    manager = MockEventManager("site", "what.ever")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await manager.initialize()
        await dependency.initialize(manager)
        yield
        await manager.aclose()

    app = FastAPI(lifespan=lifespan)

    @app.get("/{page}")
    async def view(page: str, events: Events = Depends(dependency)) -> str:  # noqa: B008
        event = await events.viewed.publish(Viewed(page=page))
        return str(event.id)

    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://site"
        ) as client,
    ):
        response = await client.get("/home")
        assert response.status_code == 200
        publisher = dependency.events.viewed
        assert isinstance(publisher, MockEventPublisher)
        assert publisher.published == [Viewed(page="home")]


async def test_uninitialized_dependency_says_so() -> None:
    dependency = EventDependency(Events())
    with pytest.raises(RuntimeError, match="initialize"):
        await dependency()
