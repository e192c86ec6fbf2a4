"""The transport seam: what carries events to Kafka.

A `KafkaEventManager` sends through a `Transport`. `AiokafkaTransport` is
the real one (made from ``bootstrap_servers`` unless you pass your own);
`otel_kafka_events.testing.MemoryTransport` keeps records in memory for
tests. Implement the protocol to send events somewhere else.
"""

from ._delivery._aiokafka import AiokafkaTransport
from ._delivery._transport import (
    Headers,
    RecordBatch,
    SendDone,
    SendFailure,
    TopicInfo,
    Transport,
)

__all__ = [
    "AiokafkaTransport",
    "Headers",
    "RecordBatch",
    "SendDone",
    "SendFailure",
    "TopicInfo",
    "Transport",
]
