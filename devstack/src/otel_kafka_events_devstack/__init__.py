"""The development stack of otel-kafka-events: local servers, no Docker.

Everything here runs on 127.0.0.1 as child processes or threads of the
process that starts it, and stops with it: a Kafka-protocol broker (Tansu or
noida-db from PyPI, or Apache Kafka itself from Maven Central's jars),
`LocalSchemaRegistry`, an HTTP server speaking the Confluent Schema Registry
REST API over the runtime's in-memory schema store, and `OtlpReceiver`, which
records what an OTLP/HTTP exporter sends. `KafkaCluster` runs several Apache
Kafka nodes as one cluster, for failover tests, and `TcpProxy` puts network
delay (or an outage) between a client and a server. Peers written by others judge the
same things: `ApicurioRegistry` (Apicurio Registry from Maven Central, on
Java 21+) and `OtelCollector` (an OpenTelemetry Collector built by
``scripts/build-collector``); `RedisServer` runs Debian's ``redis-server``
for arq workers. Every launcher of a child process builds on one base class,
`ServerProcess`. None of it is meant for production.

`LocalKafkaStack` starts a broker (`make_broker`) and a registry together;
the pytest plugin of ``otel_kafka_events.testing`` and the ``otel-kafka-events
stack`` and ``demo`` commands, which this distribution adds, are built on it.
It is installed by the ``testing`` extra of otel-kafka-events.
"""

from typing import TYPE_CHECKING

from ._broker_base import BrokerCapabilities, LocalBroker, SubprocessBroker
from ._environment import stack_environment
from ._noida import NoidaBroker
from ._redis import RedisServer
from ._registry import LocalSchemaRegistry
from ._server_process import ServerProcess
from ._stack import (
    BROKER_ENV_VAR,
    BROKER_KINDS,
    LocalKafkaStack,
    create_topic,
    make_broker,
)
from ._tansu import TansuBroker
from ._tcp_proxy import TcpProxy

if TYPE_CHECKING:
    from ._apache_kafka import ApacheKafkaBroker
    from ._apicurio import ApicurioRegistry
    from ._kafka_cluster import KafkaCluster, PartitionState
    from ._otelcol import KafkaLogsSource, OtelCollector
    from ._otlp import OtlpReceiver, ReceivedLog, ReceivedSpan

__all__ = [
    "BROKER_ENV_VAR",
    "BROKER_KINDS",
    "ApacheKafkaBroker",
    "ApicurioRegistry",
    "BrokerCapabilities",
    "KafkaCluster",
    "KafkaLogsSource",
    "LocalBroker",
    "LocalKafkaStack",
    "LocalSchemaRegistry",
    "NoidaBroker",
    "OtelCollector",
    "OtlpReceiver",
    "PartitionState",
    "ReceivedLog",
    "ReceivedSpan",
    "RedisServer",
    "ServerProcess",
    "SubprocessBroker",
    "TansuBroker",
    "TcpProxy",
    "create_topic",
    "make_broker",
    "stack_environment",
]


def __getattr__(name: str) -> object:
    # Imported lazily: the Apache Kafka and Apicurio launchers pull in Maven
    # resolution that most users of this package never need.
    if name == "ApacheKafkaBroker":
        from ._apache_kafka import ApacheKafkaBroker

        return ApacheKafkaBroker
    if name in ("KafkaCluster", "PartitionState"):
        from . import _kafka_cluster

        return getattr(_kafka_cluster, name)
    if name == "ApicurioRegistry":
        from ._apicurio import ApicurioRegistry

        return ApicurioRegistry
    # These need opentelemetry-proto (the ``otel`` extra of otel-kafka-events).
    if name in ("OtlpReceiver", "ReceivedLog", "ReceivedSpan"):
        from . import _otlp

        return getattr(_otlp, name)
    if name in ("OtelCollector", "KafkaLogsSource"):
        from . import _otelcol

        return getattr(_otelcol, name)
    raise AttributeError(name)
