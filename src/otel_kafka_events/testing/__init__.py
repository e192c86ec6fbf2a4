"""A local Kafka stack for development and tests: brokers and a registry.

Everything here runs on 127.0.0.1 without Docker: a Kafka-protocol broker
(Tansu or noida-db from PyPI, or Apache Kafka itself from Maven Central's
jars), `LocalSchemaRegistry`, an in-memory server speaking the Confluent
Schema Registry REST API, and `OtlpReceiver`, which records what an OTLP/HTTP
exporter sends. Two peers written by others judge the same things:
`ApicurioRegistry` (Apicurio Registry from Maven Central, on Java 21+) and
`OtelCollector` (an OpenTelemetry Collector built by
``scripts/build-collector``). None of it is meant for production.

Install with the ``testing`` extra. For pytest fixtures, add
``pytest_plugins = ["otel_kafka_events.testing.pytest_plugin"]`` to a
``conftest.py``. `consume_events` reads back and decodes what a test
published; `EventsTopic` names a topic by the settings a manager takes.
"""

from typing import TYPE_CHECKING

from ._broker_base import BrokerCapabilities, LocalBroker
from ._environment import stack_environment
from ._events import EventsTopic, consume_events
from ._memory_registry import MemorySchemaRegistry
from ._memory_transport import MemoryRecord, MemoryTransport, SendError, SendOutcome
from ._noida import NoidaBroker
from ._redis import RedisServer
from ._registry import LocalSchemaRegistry
from ._stack import BROKER_ENV_VAR, BROKER_KINDS, LocalKafkaStack, make_broker
from ._tansu import TansuBroker

if TYPE_CHECKING:
    from ._apache_kafka import ApacheKafkaBroker
    from ._apicurio import ApicurioRegistry
    from ._otelcol import KafkaLogsSource, OtelCollector
    from ._otlp import OtlpReceiver, ReceivedLog

__all__ = [
    "BROKER_ENV_VAR",
    "BROKER_KINDS",
    "ApacheKafkaBroker",
    "ApicurioRegistry",
    "BrokerCapabilities",
    "EventsTopic",
    "KafkaLogsSource",
    "LocalBroker",
    "LocalKafkaStack",
    "LocalSchemaRegistry",
    "MemoryRecord",
    "MemorySchemaRegistry",
    "MemoryTransport",
    "NoidaBroker",
    "OtelCollector",
    "OtlpReceiver",
    "ReceivedLog",
    "RedisServer",
    "SendError",
    "SendOutcome",
    "TansuBroker",
    "consume_events",
    "make_broker",
    "stack_environment",
]


def __getattr__(name: str) -> object:
    # Imported lazily: the Apache Kafka launcher pulls in Maven resolution
    # that most users of this module never need.
    if name == "ApacheKafkaBroker":
        from ._apache_kafka import ApacheKafkaBroker

        return ApacheKafkaBroker
    if name == "ApicurioRegistry":
        from ._apicurio import ApicurioRegistry

        return ApicurioRegistry
    # These need opentelemetry-proto (the ``otel`` extra).
    if name in ("OtlpReceiver", "ReceivedLog"):
        from . import _otlp

        return getattr(_otlp, name)
    if name in ("OtelCollector", "KafkaLogsSource"):
        from . import _otelcol

        return getattr(_otelcol, name)
    raise AttributeError(name)
