"""Tools for the tests of a service that publishes events.

`MemoryTransport` and `MemorySchemaRegistry` run a real `KafkaEventManager`
with no broker and no socket (``transport=`` and ``registry=``). For pytest
fixtures, add ``pytest_plugins = ["otel_kafka_events.testing.pytest_plugin"]``
to a ``conftest.py``. `consume_events` reads back and decodes what a test
published to a broker, as `DecodedRecord` values; `EventsTopic` names a topic
by the settings a manager takes.

The local broker, schema registry and the other servers the fixtures start
are not part of this package: they come with the sibling distribution
``otel-kafka-events-devstack`` (package ``otel_kafka_events_devstack``),
which the ``testing`` extra installs.
"""

from .._encoding._records import DecodedRecord
from ._events import EventsTopic, ReadableStack, consume_events
from ._memory_registry import MemorySchemaRegistry
from ._memory_transport import MemoryRecord, MemoryTransport, SendError, SendOutcome

__all__ = [
    "DecodedRecord",
    "EventsTopic",
    "MemoryRecord",
    "MemorySchemaRegistry",
    "MemoryTransport",
    "ReadableStack",
    "SendError",
    "SendOutcome",
    "consume_events",
]
