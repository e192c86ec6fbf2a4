"""OTLP log records on a Kafka topic, for the Collector's Kafka receiver.

`KafkaLogRecordExporter` is an OpenTelemetry SDK ``LogRecordExporter``: the
SDK's batch processor hands it records on its export thread, and it writes
them to a topic as the Collector's ``kafka`` receiver reads them, one
``ExportLogsServiceRequest`` per Kafka record, in ``otlp_proto`` or
``otlp_json``. The Kafka client runs on a private event loop in a thread of
its own (`ProducerThread`), never on the application's loop.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, Protocol

from google.protobuf.json_format import MessageToDict

try:
    # The SDK's own OTLP exporters encode logs with this; it has no public
    # name yet, and the otlp-kafka extra pins the package exactly.
    from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
except ImportError as exc:
    raise ImportError(
        "KafkaLogRecordExporter needs encode_logs from"
        " opentelemetry-exporter-otlp-proto-common as the otlp-kafka extra"
        " pins it: pip install 'otel-kafka-events[otlp-kafka]'"
        f" ({type(exc).__name__}: {exc})"
    ) from exc
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
)
from opentelemetry.sdk._logs import ReadableLogRecord
from opentelemetry.sdk._logs.export import LogRecordExporter, LogRecordExportResult

from ._producer_thread import Message, ProducerThread


class ConnectionSettings(Protocol):
    """What `KafkaLogRecordExporter.from_settings` reads (as
    `otel_kafka_events.KafkaConnectionSettings` has it)."""

    @property
    def bootstrap_servers(self) -> str:
        """The bootstrap servers."""
        ...

    def to_client_options(self) -> dict[str, Any]:
        """Keyword arguments of an aiokafka client."""
        ...


__all__ = [
    "DEFAULT_LOGS_TOPIC",
    "KafkaLogRecordExporter",
    "OtlpEncoding",
    "encode_message",
]

DEFAULT_LOGS_TOPIC = "otlp_logs"
"""The topic the Collector's Kafka receiver reads logs from by default."""

OtlpEncoding = Literal["otlp_proto", "otlp_json"]

_ENCODINGS = ("otlp_proto", "otlp_json")
_log = logging.getLogger(__name__)


def check_encoding(encoding: str) -> None:
    """Raise ValueError unless ``encoding`` is one the receiver reads."""
    if encoding not in _ENCODINGS:
        raise ValueError(
            f"encoding must be 'otlp_proto' or 'otlp_json', got {encoding!r}"
        )


def _hex_ids(document: Any) -> None:
    """Rewrite protobuf JSON's base64 trace and span ids as hex, in place,
    as OTLP/JSON wants them (the receiver refuses base64 ids)."""
    for resource_logs in document.get("resourceLogs", ()):
        for scope_logs in resource_logs.get("scopeLogs", ()):
            for record in scope_logs.get("logRecords", ()):
                for key in ("traceId", "spanId"):
                    if key in record:
                        record[key] = base64.b64decode(record[key]).hex()


def encode_message(request: bytes, encoding: str) -> bytes:
    """A serialized ``ExportLogsServiceRequest`` in the topic's encoding.

    ``otlp_proto`` is the protobuf bytes as they are; ``otlp_json`` is
    OTLP/JSON: lower camel case names, enums as numbers, 64-bit integers as
    strings, and trace and span ids in hex.
    """
    if encoding == "otlp_proto":
        return request
    document = MessageToDict(
        ExportLogsServiceRequest.FromString(request), use_integers_for_enums=True
    )
    _hex_ids(document)
    return json.dumps(document, separators=(",", ":")).encode()


def encoder(encoding: str) -> Callable[[bytes], bytes] | None:
    """What turns protobuf requests into ``encoding`` (None: nothing to do)."""
    check_encoding(encoding)
    if encoding == "otlp_proto":
        return None
    return _to_json


def _to_json(request: bytes) -> bytes:
    return encode_message(request, "otlp_json")


def trace_key(trace_id: int) -> bytes | None:
    """The record key of a trace's records: its id in hex, as the Collector's
    own Kafka exporter keys them (``partition_logs_by_trace_id``)."""
    return f"{trace_id:032x}".encode() if trace_id else None


class KafkaLogRecordExporter(LogRecordExporter):
    """Exports SDK log records to a Kafka topic as OTLP.

    Records are grouped by resource and instrumentation scope, as the OTLP
    exporters group them, into one ``ExportLogsServiceRequest`` per Kafka
    record (split when it would exceed ``max_message_bytes``).

    Parameters
    ----------
    bootstrap_servers
        Kafka bootstrap servers.
    topic
        The topic; ``otlp_logs``, the Collector Kafka receiver's default.
    encoding
        ``"otlp_proto"`` (default) or ``"otlp_json"``: the receiver's
        ``encoding`` setting must match.
    partition_by_trace_id
        One Kafka record per trace, keyed by the trace id in hex, so that a
        trace's records share a partition (records without a trace have no
        key), as the Collector's ``partition_logs_by_trace_id`` does.
    timeout
        Seconds one `export` may take, connecting included; after that it
        returns ``FAILURE``.
    max_message_bytes
        Largest Kafka record value written (keep it below the broker's
        ``message.max.bytes`` and the producer's ``max_request_size``).
    kafka_options
        Extra keyword arguments for ``AIOKafkaProducer``: security protocol,
        SASL, SSL context..., as `KafkaEventManager` takes them.

    Examples
    --------
    >>> provider = LoggerProvider()  # doctest: +SKIP
    >>> provider.add_log_record_processor(
    ...     BatchLogRecordProcessor(KafkaLogRecordExporter("kafka:9092"))
    ... )
    """

    def __init__(
        self,
        bootstrap_servers: str | list[str],
        *,
        topic: str = DEFAULT_LOGS_TOPIC,
        encoding: OtlpEncoding = "otlp_proto",
        partition_by_trace_id: bool = False,
        timeout: float = 10.0,
        max_message_bytes: int = 512 * 1024,
        kafka_options: Mapping[str, Any] | None = None,
    ) -> None:
        check_encoding(encoding)
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self.topic = topic
        self.encoding = encoding
        self.partition_by_trace_id = partition_by_trace_id
        self.timeout = timeout
        self.max_message_bytes = max_message_bytes
        self._producer = ProducerThread(
            bootstrap_servers,
            topic,
            kafka_options,
            timeout=timeout,
            encode=encoder(encoding),
        )
        self._shutdown = False

    @classmethod
    def from_settings(
        cls, settings: ConnectionSettings, **kwargs: Any
    ) -> KafkaLogRecordExporter:
        """An exporter with the connection settings (``KAFKA_*``, security
        included) the event manager's configuration uses.

        Parameters
        ----------
        settings
            The `KafkaConnectionSettings`.
        **kwargs
            Other constructor arguments (``topic``, ``encoding``...).
        """
        options = settings.to_client_options()
        options.update(kwargs.pop("kafka_options", None) or {})
        return cls(settings.bootstrap_servers, kafka_options=options, **kwargs)

    def export(self, batch: Sequence[ReadableLogRecord]) -> LogRecordExportResult:
        """Write ``batch`` to the topic; ``FAILURE`` if Kafka did not
        acknowledge every record within ``timeout`` seconds."""
        if self._shutdown:
            return LogRecordExportResult.FAILURE
        if not batch:
            return LogRecordExportResult.SUCCESS
        try:
            messages = self._messages(batch)
            future = self._producer.send(messages)
        except Exception as exc:
            _log.error("Cannot export log records to Kafka: %s", exc)
            return LogRecordExportResult.FAILURE
        try:
            future.result(self.timeout)
        except Exception as exc:
            future.cancel()
            reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            _log.error(
                "Log records not acknowledged by Kafka (topic %s) within %s s: %s",
                self.topic,
                self.timeout,
                reason,
            )
            return LogRecordExportResult.FAILURE
        return LogRecordExportResult.SUCCESS

    def _messages(self, batch: Sequence[ReadableLogRecord]) -> list[Message]:
        """The Kafka records ``batch`` is written as (values in protobuf;
        the producer's thread converts them to the topic's encoding)."""
        groups: dict[bytes | None, list[ReadableLogRecord]]
        if self.partition_by_trace_id:
            groups = {}
            for record in batch:
                key = trace_key(record.log_record.trace_id or 0)
                groups.setdefault(key, []).append(record)
        else:
            groups = {None: list(batch)}
        messages: list[Message] = []
        for key, records in groups.items():
            for request in split_encoded(
                records,
                lambda part: encode_logs(part).SerializeToString(),
                self.max_message_bytes,
            ):
                messages.append((key, request))
        return messages

    def shutdown(self) -> None:
        """Stop the Kafka client and its thread (within ``timeout`` seconds)."""
        self._shutdown = True
        self._producer.close(self.timeout)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Nothing to flush: `export` returns once Kafka has answered."""
        return True


def split_encoded(
    records: Sequence[Any],
    encode: Callable[[Sequence[Any]], bytes],
    limit: int,
) -> list[bytes]:
    """Encode ``records``, halving any part whose encoding exceeds ``limit``
    bytes (a single record goes out whatever its size)."""
    encoded = encode(records)
    if len(encoded) <= limit or len(records) < 2:
        return [encoded]
    middle = len(records) // 2
    return split_encoded(records[:middle], encode, limit) + split_encoded(
        records[middle:], encode, limit
    )
