"""Programs that go wrong with secrets in their environment, for
``test_secret_canary.py``.

``python secret_scenarios.py NAME`` runs one scenario the way a service
would meet it: every log (structlog rendered as JSON, the standard library
at DEBUG, so aiokafka's and httpx's too) and every warning goes to stderr,
every error is printed with its full traceback (causes and contexts
included), and the configuration objects are printed as a developer would
print them. The test reads all of it. The environment (with the canary
password in every secret variable) is the test's.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import traceback
import warnings
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

from otel_kafka_events import EventPayload, metrics_configuration_factory


class Ping(EventPayload):
    """A minimal payload."""

    n: int


def setup_logging() -> None:
    """Everything a service could log, at every level, to stderr."""
    logging.basicConfig(level=logging.DEBUG, stream=sys.stderr)
    logging.captureWarnings(True)
    warnings.simplefilter("always")
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(default=repr),
        ],
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )


def show(error: BaseException) -> None:
    """An error as a service's crash would show it, plus its details."""
    traceback.print_exception(error, file=sys.stderr)
    print(repr(error), repr(error.args), file=sys.stderr)
    errors = getattr(error, "errors", None)
    if callable(errors):
        print(errors(), file=sys.stderr)
        print(error.json(), file=sys.stderr)  # type: ignore[attr-defined]


def configuration() -> None:
    """Read the configuration and print it (reprs, text, JSON, dumps)."""
    try:
        config = metrics_configuration_factory()
    except Exception as exc:
        show(exc)
        return
    print(repr(config), str(config), config.model_dump_json(), config.model_dump())
    for part in ("kafka", "schema_manager", "telemetry"):
        value = getattr(config, part, None)
        print(repr(value), str(value))
    print(config.telemetry.log_export)


async def publish() -> None:
    """Publish through a manager made from the environment, with whatever
    its broker and registry answer; then close it."""
    config = metrics_configuration_factory()
    manager = config.make_manager(
        close_timeout=2, delivery_timeout=1, retry_backoff=0.05
    )
    await attempt(manager.initialize)
    try:
        publisher = await manager.create_publisher("ping", Ping)
        await publisher.publish(Ping(n=1), wait=True)
    except Exception as exc:
        show(exc)
    print("undelivered", await manager.aclose())


async def forget() -> None:
    """Publish and never close: the manager reports what it lost."""
    manager = metrics_configuration_factory().make_manager()
    await attempt(manager.initialize)
    try:
        publisher = await manager.create_publisher("ping", Ping)
        await publisher.publish(Ping(n=1))
    except Exception as exc:
        show(exc)


async def attempt(step: Callable[[], Awaitable[Any]]) -> None:
    try:
        await step()
    except Exception as exc:
        show(exc)


SCENARIOS: dict[str, Callable[[], Any]] = {
    "configuration": configuration,
    "publish": lambda: asyncio.run(publish()),
    "forget": lambda: asyncio.run(forget()),
}


if __name__ == "__main__":
    setup_logging()
    SCENARIOS[sys.argv[1]]()
    if len(sys.argv) > 2 and sys.argv[2] == "crash":
        # An error nobody catches: Python prints it and exits with 1.
        metrics_configuration_factory()
