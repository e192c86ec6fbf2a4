"""Reading back what a test published: a topic fixture and decoded events.

`EventsTopic` is the topic a `KafkaEventManager` publishes to, split into
the ``topic_prefix`` and ``application`` the manager is built from (its
topic is ``{topic_prefix}.{application}``), so a test never splits a topic
name by hand. `consume_events` reads a topic from the beginning and decodes
each record through the registry.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from .._encoding._records import DecodedRecord, RecordDecoder

if TYPE_CHECKING:
    from aiokafka.structs import ConsumerRecord

__all__ = ["EventsTopic", "ReadableStack", "consume_events"]


class ReadableStack(Protocol):
    """A broker and registry to read events back from.

    ``LocalKafkaStack`` of ``otel-kafka-events-devstack`` is one.
    """

    @property
    def registry_url(self) -> str:
        """Base URL of the schema registry holding the schemas."""
        ...

    async def consume(
        self, topic: str, count: int, timeout: float = ...
    ) -> list[ConsumerRecord[Any, Any]]:
        """The first ``count`` records of ``topic``, from the beginning."""
        ...


@dataclass(frozen=True)
class EventsTopic:
    """An events topic and the manager settings that name it.

    Attributes
    ----------
    topic_prefix
        ``topic_prefix`` of the manager (``METRICS_EVENTS_TOPIC_PREFIX``).
    application
        ``application`` of the manager (``METRICS_APPLICATION``).
    """

    topic_prefix: str
    application: str

    @property
    def name(self) -> str:
        """The topic name, ``{topic_prefix}.{application}``."""
        return f"{self.topic_prefix}.{self.application}"


async def consume_events(
    stack: ReadableStack, topic: str, count: int, *, timeout: float = 10.0
) -> list[DecodedRecord]:
    """Read the first ``count`` records of ``topic`` and decode them.

    Parameters
    ----------
    stack
        The stack whose broker and registry hold the records and schemas.
    topic
        The topic to read, from the beginning.
    count
        How many records to wait for.
    timeout
        Seconds to wait for them.

    Returns
    -------
    list of DecodedRecord
        In partition order; each has the decoded fields in ``value``, the
        event name, headers and trace id.

    Raises
    ------
    TimeoutError
        If fewer than ``count`` records arrive in time; the message says how
        many did.
    """
    records = await stack.consume(topic, count, timeout=timeout)
    decoder = RecordDecoder(stack.registry_url)
    return [await decoder.decode(record) for record in records]
