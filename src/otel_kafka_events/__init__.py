"""Typed application events, published to Kafka and to OpenTelemetry.

A drop-in for the ``EventManager`` / ``EventPublisher`` interface of Safir's
``safir.metrics``: change the imports, keep the code.
"""

from ._codec import EventDecoder, decode
from ._exceptions import (
    BrokerUnavailableError,
    DuplicateEventError,
    EventBufferFullError,
    EventDeliveryAbortedError,
    EventDeliveryError,
    EventDeliveryTimeoutError,
    EventDroppedError,
    EventManagerClosedError,
    EventManagerError,
    EventManagerUninitializedError,
    EventManagerUnintializedError,
    EventManagerUsageError,
    EventPayloadError,
    EventRejectedError,
    EventTooLargeError,
    IdempotenceUnsupportedError,
    IncompatibleSchemaError,
    InvalidEventNameError,
    KafkaTopicError,
    NotAcknowledgedError,
    SchemaRegistryError,
    UnsupportedAvroSchemaError,
)
from ._kafka import KafkaEventManager, KafkaEventPublisher
from ._ledger import DeliveredEvent, DeliveryFailure, DeliveryStats
from ._manager import (
    EventManager,
    EventPublisher,
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
from ._models import EventMetadata, EventPayload, TracedEventMetadata
from ._options import BufferOptions, LogExport, OverflowPolicy, TelemetryOptions
from ._version import __version__
from .config import (
    BaseMetricsConfiguration,
    DisabledMetricsConfiguration,
    KafkaMetricsConfiguration,
    MetricsConfiguration,
    MockMetricsConfiguration,
    metrics_configuration_factory,
)
from .otel._log_destinations import LogExportStats

__all__ = [
    "ANY",
    "NOT_NONE",
    "BaseAssertionError",
    "BaseMetricsConfiguration",
    "BrokerUnavailableError",
    "BufferOptions",
    "DeliveredEvent",
    "DeliveryFailure",
    "DeliveryStats",
    "DisabledMetricsConfiguration",
    "DuplicateEventError",
    "EventBufferFullError",
    "EventDecoder",
    "EventDeliveryAbortedError",
    "EventDeliveryError",
    "EventDeliveryTimeoutError",
    "EventDroppedError",
    "EventManager",
    "EventManagerClosedError",
    "EventManagerError",
    "EventManagerUninitializedError",
    "EventManagerUnintializedError",
    "EventManagerUsageError",
    "EventMetadata",
    "EventPayload",
    "EventPayloadError",
    "EventPublisher",
    "EventRejectedError",
    "EventTooLargeError",
    "IdempotenceUnsupportedError",
    "IncompatibleSchemaError",
    "InvalidEventNameError",
    "KafkaEventManager",
    "KafkaEventPublisher",
    "KafkaMetricsConfiguration",
    "KafkaTopicError",
    "LogExport",
    "LogExportStats",
    "MetricsConfiguration",
    "MockEventManager",
    "MockEventPublisher",
    "MockMetricsConfiguration",
    "NoopEventManager",
    "NoopEventPublisher",
    "NotAcknowledgedError",
    "NotPublishedConsecutivelyError",
    "NotPublishedError",
    "OverflowPolicy",
    "PublishedCountError",
    "PublishedList",
    "PublishedTooFewError",
    "SchemaRegistryError",
    "TelemetryOptions",
    "TracedEventMetadata",
    "UnsupportedAvroSchemaError",
    "__version__",
    "decode",
    "metrics_configuration_factory",
]
