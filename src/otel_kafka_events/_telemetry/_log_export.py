"""A Kafka event manager's own export of its events' log records.

Built from `LogExportOptions` by `LogExportPipeline`, in one of two ways:

- **SDK** (``direct=False``): a LoggerProvider of the manager's own, with a
  batch processor per destination (`KafkaLogRecordExporter`, the SDK's
  OTLP/HTTP exporter); records are emitted at ``publish`` as with
  `TelemetryOptions.logs` alone.
- **Direct** (``direct=True``): `DirectLogRecords` writes each accepted
  event's record at ``publish`` and keeps it until Kafka settles the event;
  the records of each batch Kafka acknowledged go to the destinations
  (`_log_destinations`), and events that fail get none.

The destinations' successes and failures are counted (`LogExportStats`)
and failures logged; nothing they do touches Kafka delivery of the events.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from .._delivery._ratelimit import RateLimitedLog
from .._delivery._transport import Transport
from .._options import LogExportOptions
from .._secrets import basic_auth, split_credentials
from ._direct_logs import DirectLogRecords
from ._log_destinations import (
    Counts,
    LogExportStats,
    counting,
    http_destination,
    kafka_thread_destination,
    transport_destination,
)
from ._logs import EventLogEmitter

__all__ = ["LogExportPipeline", "LogExportStats"]


def _resource_of(logger_provider: Any) -> Any:
    """The resource of the configured LoggerProvider, or one of our own."""
    from opentelemetry.sdk.resources import Resource

    provider = logger_provider
    if provider is None:
        from opentelemetry._logs import get_logger_provider

        provider = get_logger_provider()
    resource = getattr(provider, "resource", None)
    return resource if isinstance(resource, Resource) else Resource.create()


class LogExportPipeline:
    """The log export of one Kafka event manager (`LogExportOptions`).

    Parameters
    ----------
    export
        What to export where.
    log_mode
        `TelemetryOptions.log_mode`.
    logger_provider
        The application's LoggerProvider (or None: the global one), whose
        resource the records carry.
    bootstrap_servers, kafka_options
        The event manager's Kafka connection: the SDK path's exporter makes
        a client of its own with them.
    transport
        The event manager's transport: the direct path's Kafka records go
        through it.
    log
        Where export failures are reported.
    """

    def __init__(
        self,
        export: LogExportOptions,
        *,
        log_mode: str,
        logger_provider: Any,
        bootstrap_servers: str | list[str] | None,
        kafka_options: Mapping[str, Any],
        transport: Transport | None = None,
        log: RateLimitedLog | None = None,
    ) -> None:
        self.export = export
        resource = _resource_of(logger_provider)
        options = {k: v for k, v in kafka_options.items() if k != "enable_idempotence"}
        self.direct: DirectLogRecords | None = None
        self._provider: Any = None
        self._counts: list[Counts] = []
        if export.direct:
            destinations = []
            if export.kafka and transport is not None:
                destinations.append(transport_destination(export, transport))
            elif export.kafka:
                if bootstrap_servers is None:
                    raise ValueError(
                        "LogExportOptions(kafka=True) needs bootstrap_servers"
                    )
                destinations.append(
                    kafka_thread_destination(export, bootstrap_servers, options)
                )
            if export.otlp_endpoint:
                destinations.append(http_destination(export))
            self._destinations = destinations
            self._counts = [d.counts for d in destinations]
            # Half the producer's request limit leaves room for the request's
            # own framing.
            limit = int(kafka_options.get("max_request_size", 1024 * 1024)) // 2
            self.direct = DirectLogRecords(
                export,
                destinations,
                resource,
                body_mode=log_mode == "body",
                log=log,
                max_message_bytes=min(limit, 512 * 1024),
            )
            self.emitter: Any = self.direct
        else:
            if export.kafka and bootstrap_servers is None:
                raise ValueError(
                    "LogExportOptions(kafka=True, direct=False) needs the manager's"
                    " bootstrap_servers (it connects a client of its own)"
                )
            self._destinations = []
            self._provider = self._sdk_provider(
                export, resource, bootstrap_servers, options
            )
            self.emitter = EventLogEmitter(self._provider, log_mode)

    def _sdk_provider(
        self,
        export: LogExportOptions,
        resource: Any,
        bootstrap_servers: str | list[str] | None,
        options: Mapping[str, Any],
    ) -> Any:
        from opentelemetry.sdk._logs import LoggerProvider
        from opentelemetry.sdk._logs.export import BatchLogRecordProcessor

        from ._otlp_kafka import KafkaLogRecordExporter

        provider = LoggerProvider(resource=resource, shutdown_on_exit=False)
        exporters: list[tuple[str, Any]] = []
        if export.kafka:
            assert bootstrap_servers is not None
            exporters.append(
                (
                    "kafka",
                    KafkaLogRecordExporter(
                        bootstrap_servers,
                        topic=export.topic,
                        encoding=export.encoding,
                        partition_by_trace_id=export.partition_by_trace_id,
                        timeout=export.timeout,
                        kafka_options=options,
                    ),
                )
            )
        if export.otlp_endpoint:
            from opentelemetry.exporter.otlp.proto.http._log_exporter import (
                OTLPLogExporter,
            )

            # Credentials in the URL are sent as a header, never in the URL.
            endpoint, credentials = split_credentials(export.otlp_endpoint)
            headers = (
                {"Authorization": basic_auth(credentials)}
                if credentials is not None
                else None
            )
            exporters.append(
                (
                    "otlp",
                    OTLPLogExporter(
                        endpoint=endpoint, timeout=export.timeout, headers=headers
                    ),
                )
            )
        for name, exporter in exporters:
            counts = Counts(name)
            self._counts.append(counts)
            provider.add_log_record_processor(
                BatchLogRecordProcessor(counting(exporter, counts))
            )
        return provider

    @property
    def stats(self) -> dict[str, LogExportStats]:
        """Counters by destination."""
        return {counts.name: counts.snapshot() for counts in self._counts}

    def close(self, timeout: float) -> None:
        """Export what is pending and stop, within ``timeout`` seconds
        (blocking: call it from a thread of its own)."""
        deadline = time.monotonic() + timeout
        if self._provider is not None:
            # Flushes the batch processors, then shuts the exporters down.
            self._provider.shutdown()
            return
        if self.direct is not None:
            self.direct.wait(deadline - time.monotonic())
        for destination in self._destinations:
            destination.close(max(deadline - time.monotonic(), 0.1))
