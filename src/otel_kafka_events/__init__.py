"""Typed application events, published to Kafka and to OpenTelemetry.

A drop-in for the ``EventManager`` / ``EventPublisher`` interface of Safir's
``safir.metrics``: change the imports, keep the code. Every error is in
`otel_kafka_events.errors`; the transport seam is in
`otel_kafka_events.transport`; test helpers are in
`otel_kafka_events.testing`.
"""

import contextlib

from ._delivery._aiokafka import AiokafkaTransport
from ._delivery._ledger import DeliveryFailure, DeliveryStats
from ._delivery._transport import Transport
from ._encoding._codec import EventDecoder, decode
from ._encoding._models import EventMetadata, EventPayload, TracedEventMetadata
from ._encoding._registry import SchemaRegistrar, SchemaRegistry
from ._kafka import KafkaEventManager, KafkaEventPublisher
from ._manager import (
    EventManager,
    EventPublisher,
    FailedEventPublisher,
    MockEventManager,
    MockEventPublisher,
    NoopEventManager,
    NoopEventPublisher,
)
from ._mock import (
    ANY,
    NOT_NONE,
    BaseAssertionError,
    NotPublishedConsecutivelyError,
    NotPublishedError,
    PublishedCountError,
    PublishedList,
    PublishedTooFewError,
)
from ._options import (
    BufferOptions,
    DeliveryOptions,
    LogExportOptions,
    OverflowPolicy,
    TelemetryOptions,
)
from ._telemetry._log_destinations import LogExportStats
from ._version import __version__
from .config import (
    BaseMetricsConfiguration,
    DisabledMetricsConfiguration,
    EventsConfiguration,
    KafkaConnectionSettings,
    KafkaMetricsConfiguration,
    KafkaSecurityProtocol,
    MetricsConfiguration,
    MockMetricsConfiguration,
    SchemaManagerSettings,
    metrics_configuration_factory,
)
from .errors import (
    DuplicateEventError,
    EventDeliveryError,
    EventManagerError,
    EventManagerUninitializedError,
    EventManagerUnintializedError,
    EventManagerUsageError,
    KafkaTopicError,
    UnsupportedAvroSchemaError,
)

__all__ = [
    "ANY",
    "NOT_NONE",
    "AiokafkaTransport",
    "BaseAssertionError",
    "BaseMetricsConfiguration",
    "BufferOptions",
    "DeliveryFailure",
    "DeliveryOptions",
    "DeliveryStats",
    "DisabledMetricsConfiguration",
    "DuplicateEventError",
    "EventDecoder",
    "EventDeliveryError",
    "EventManager",
    "EventManagerError",
    "EventManagerUninitializedError",
    "EventManagerUnintializedError",
    "EventManagerUsageError",
    "EventMetadata",
    "EventPayload",
    "EventPublisher",
    "EventsConfiguration",
    "FailedEventPublisher",
    "KafkaConnectionSettings",
    "KafkaEventManager",
    "KafkaEventPublisher",
    "KafkaMetricsConfiguration",
    "KafkaSecurityProtocol",
    "KafkaTopicError",
    "LogExportOptions",
    "LogExportStats",
    "MetricsConfiguration",
    "MockEventManager",
    "MockEventPublisher",
    "MockMetricsConfiguration",
    "NoopEventManager",
    "NoopEventPublisher",
    "NotPublishedConsecutivelyError",
    "NotPublishedError",
    "OverflowPolicy",
    "PublishedCountError",
    "PublishedList",
    "PublishedTooFewError",
    "SchemaManagerSettings",
    "SchemaRegistrar",
    "SchemaRegistry",
    "TelemetryOptions",
    "TracedEventMetadata",
    "Transport",
    "UnsupportedAvroSchemaError",
    "__version__",
    "decode",
    "metrics_configuration_factory",
]


# Users see otel_kafka_events.KafkaEventManager, not a private module, in
# reprs, tracebacks and the API reference.
def _own_module(names: list[str]) -> None:
    for name in names:
        value = globals()[name]
        if getattr(value, "__module__", "").startswith(f"{__name__}."):
            with contextlib.suppress(AttributeError, TypeError):
                value.__module__ = __name__


_own_module(__all__)
