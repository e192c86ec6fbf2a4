"""``otel-kafka-events tail TOPIC``: read a topic's events, decoded.

Like Unix ``tail``: the last ``--lines`` records of each partition, or all
of them with ``--from-beginning``, then stop, or keep reading with
``--follow``. Each record is decoded through the schema registry and shown
with its partition, offset, headers and trace id, as one JSON object per
line (for ``jq``) or as a table (``--table``).

No consumer group is used: tailing commits no offsets and never disturbs a
real consumer.
"""

from __future__ import annotations

import json
import logging
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import click
from aiokafka import AIOKafkaConsumer, TopicPartition
from rich.markup import escape
from rich.table import Table

from .._encoding._models import METADATA_FIELDS, TRACE_FIELDS
from .._encoding._records import DecodedRecord, RecordDecoder
from ._console import err, out
from ._errors import CliError
from ._running import run
from ._settings import (
    bootstrap_option,
    kafka_client_options,
    registry_client,
    registry_option,
    remember,
    require,
)

__all__ = ["tail"]

_POLL_MS = 500
_METADATA = METADATA_FIELDS | TRACE_FIELDS


@dataclass(frozen=True)
class TailOptions:
    """What to read and what to show."""

    topic: str
    lines: int
    from_beginning: bool
    follow: bool
    events: frozenset[str]
    trace_id: str | None
    table: bool

    def wants(self, record: DecodedRecord) -> bool:
        """Whether a record passes the ``--event`` and ``--trace-id`` filters."""
        if self.events and record.event not in self.events:
            return False
        return self.trace_id is None or (record.trace_id or "") == self.trace_id


def all_metadata_of(consumer: AIOKafkaConsumer) -> Any:
    """The consumer's client's ``fetch_all_metadata``, or None where aiokafka
    keeps it elsewhere."""
    fetch_all = getattr(getattr(consumer, "_client", None), "fetch_all_metadata", None)
    return fetch_all if callable(fetch_all) else None


async def _topic_partitions(consumer: AIOKafkaConsumer, topic: str) -> list[int]:
    """The topic's partitions, read without asking for the topic by name.

    Asking for one topic's metadata makes Tansu and noida-db create it; all
    topics' metadata does not, so a typo is reported instead of created.

    Raises
    ------
    CliError
        If the broker does not have the topic, listing the ones it has.
    """
    # aiokafka's consumer asks for all topics' metadata only inside
    # ``topics()``, which keeps the partitions to itself: its client is
    # asked directly, where it is laid out as from aiokafka 0.11 to 0.14.
    fetch_all = all_metadata_of(consumer)
    if fetch_all is None:
        raise CliError(
            "this aiokafka release's consumer has no client to list topics with",
            "install an aiokafka release this package allows",
        )
    cluster = await fetch_all()
    partitions = cluster.partitions_for_topic(topic)
    if partitions:
        return sorted(partitions)
    known = sorted(t for t in cluster.topics() if not t.startswith("__"))
    shown = ", ".join(known[:10]) + (", ..." if len(known) > 10 else "")
    raise CliError(
        f"topic {topic!r} does not exist on the broker (UNKNOWN_TOPIC_OR_PARTITION)",
        f"check the name (existing topics: {shown})"
        if known
        else "the broker has no topics yet; create it, or publish with the"
        " service first",
    )


async def _start_offsets(
    consumer: AIOKafkaConsumer, assigned: list[TopicPartition], options: TailOptions
) -> tuple[dict[TopicPartition, int], dict[TopicPartition, int]]:
    """Where to start reading each partition, and where it ends now."""
    beginnings = await consumer.beginning_offsets(assigned)
    ends = await consumer.end_offsets(assigned)
    starts = {
        tp: beginnings[tp]
        if options.from_beginning
        else max(beginnings[tp], ends[tp] - options.lines)
        for tp in assigned
    }
    return starts, ends


async def run_tail(
    options: TailOptions, bootstrap_servers: str, registry_url: str
) -> int:
    """Read and print records; return how many were shown."""
    consumer = AIOKafkaConsumer(
        group_id=None,
        enable_auto_commit=False,
        request_timeout_ms=15_000,
        **kafka_client_options(bootstrap_servers),
    )
    # aiokafka logs each failed connection; the error line says it once.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    with err.status(f"Connecting to {bootstrap_servers}..."):
        try:
            await consumer.start()
        except BaseException:
            await consumer.stop()
            raise
    try:
        partitions = await _topic_partitions(consumer, options.topic)
        assigned = [TopicPartition(options.topic, p) for p in partitions]
        consumer.assign(assigned)
        starts, ends = await _start_offsets(consumer, assigned, options)
        for tp, offset in starts.items():
            consumer.seek(tp, offset)
        show = _Shower(options, RecordDecoder(registry_client(registry_url)))
        with err.status(f"Reading {options.topic} ({len(assigned)} partitions)..."):
            await _catch_up(consumer, assigned, ends, options, show)
        if options.follow:
            with err.status(f"Following {options.topic} (Ctrl-C to stop)..."):
                while True:
                    batches = await consumer.getmany(timeout_ms=_POLL_MS)
                    for records in batches.values():
                        await show.all(records)
        return show.count
    finally:
        await consumer.stop()


async def _catch_up(
    consumer: AIOKafkaConsumer,
    assigned: list[TopicPartition],
    ends: dict[TopicPartition, int],
    options: TailOptions,
    show: _Shower,
) -> None:
    """Show what the topic holds now: all of it, or each partition's last lines.

    Reads until a poll returns nothing with every partition at or past the
    end offset read at the start. That end is only a lower bound (Tansu
    answered 1 for a partition holding one batch of three records), so the
    last ``--lines`` records are kept as they arrive and shown at the end
    rather than located by offset.
    """
    kept: dict[TopicPartition, deque[Any]] = {
        tp: deque(maxlen=options.lines) for tp in assigned
    }
    while True:
        batches = await consumer.getmany(timeout_ms=_POLL_MS)
        for tp, records in batches.items():
            if options.from_beginning:
                await show.all(records)
            else:
                kept[tp].extend(records)
        if not batches:
            positions = [await consumer.position(tp) for tp in assigned]
            if all(
                pos >= ends[tp] for pos, tp in zip(positions, assigned, strict=True)
            ):
                break
    for tp in assigned:
        await show.all(kept[tp])
    show.flush()


class _Shower:
    """Decodes, filters and prints records, counting those shown."""

    def __init__(self, options: TailOptions, decoder: RecordDecoder) -> None:
        self._options = options
        self._decoder = decoder
        self._printer = _Printer(options.table)
        self.count = 0

    async def all(self, records: Iterable[Any]) -> None:
        for record in records:
            decoded = await self._decoder.decode(record)
            if self._options.wants(decoded):
                self._printer.add(decoded)
                self.count += 1
        self.flush()

    def flush(self) -> None:
        self._printer.flush()


class _Printer:
    """JSON lines as records arrive, or one table per batch of records."""

    def __init__(self, table: bool) -> None:
        self._table = table
        self._pending: list[DecodedRecord] = []

    def add(self, record: DecodedRecord) -> None:
        if self._table:
            self._pending.append(record)
        else:
            out.print(
                json.dumps(record.to_json(), ensure_ascii=False),
                markup=False,
                highlight=False,
                soft_wrap=True,
            )

    def flush(self) -> None:
        if self._pending:
            out.print(_table(self._pending))
            self._pending = []


def _table(records: Iterable[DecodedRecord]) -> Table:
    """Records as rows; the payload column shows the payload fields only.

    A record's key, when it has one, goes under its partition and offset.

    Header names go under the event name, so the trace id and the payload,
    the columns a reader scans, keep most of the width.
    """
    table = Table()
    table.add_column("partition:offset", no_wrap=True)
    table.add_column("time", no_wrap=True)
    table.add_column("event / headers", no_wrap=True)
    table.add_column("trace id", no_wrap=True)
    table.add_column("payload", overflow="fold", ratio=1, min_width=20)
    for record in records:
        value = record.to_json()["value"]
        payload = (
            {k: v for k, v in value.items() if k not in _METADATA}
            if isinstance(value, dict)
            else value
        )
        event = record.event or "?"
        if record.headers:
            event += f"\n[dim]{escape(' '.join(record.headers))}[/]"
        where = f"{record.partition}:{record.offset}"
        if record.key is not None:
            where += f"\n[dim]key {escape(record.key)}[/]"
        table.add_row(
            where,
            record.timestamp.strftime("%H:%M:%S.%f")[:-3],
            event,
            record.trace_id or "",
            escape(record.error or json.dumps(payload, ensure_ascii=False)),
        )
    return table


@click.command()
@click.argument("topic")
@click.option(
    "-n",
    "--lines",
    type=click.IntRange(min=0),
    default=10,
    show_default=True,
    help="Records to show from the end of each partition.",
)
@click.option("--from-beginning", is_flag=True, help="Show every record on the topic.")
@click.option(
    "-f", "--follow", is_flag=True, help="Keep reading new records until Ctrl-C."
)
@click.option(
    "--event",
    "events",
    multiple=True,
    metavar="NAME",
    help="Only events of this name (repeatable).",
)
@click.option("--trace-id", metavar="ID", help="Only events of this trace (32 hex).")
@click.option("--table", is_flag=True, help="A table instead of JSON lines.")
@bootstrap_option
@registry_option
def tail(
    topic: str,
    lines: int,
    from_beginning: bool,
    follow: bool,
    events: tuple[str, ...],
    trace_id: str | None,
    table: bool,
    bootstrap_servers: str | None,
    registry_url: str | None,
) -> None:
    """Print the events on TOPIC, decoded through the schema registry.

    Each record shows its partition, offset, key, timestamp, headers, event
    name and trace id next to its fields, as one JSON object per line (or a table
    with --table).
    """
    remember(bootstrap_servers=bootstrap_servers, registry_url=registry_url)
    servers = require(
        bootstrap_servers,
        "KAFKA_BOOTSTRAP_SERVERS",
        "--bootstrap-servers",
        "which Kafka to read from",
    )
    registry = require(
        registry_url,
        "SCHEMA_MANAGER_REGISTRY_URL",
        "--registry-url",
        "the schemas to decode with",
    )
    if trace_id is not None:
        trace_id = trace_id.strip().lower()
        if len(trace_id) != 32 or any(c not in "0123456789abcdef" for c in trace_id):
            raise click.BadParameter(
                "a trace id is 32 hex digits", param_hint="--trace-id"
            )
    options = TailOptions(
        topic, lines, from_beginning, follow, frozenset(events), trace_id, table
    )
    try:
        shown = run(run_tail(options, servers, registry))
    except KeyboardInterrupt:
        if not follow:
            raise
        return  # Ctrl-C is how --follow ends: not a failure.
    noun = "record" if shown == 1 else "records"
    err.print(f"{shown} {noun} shown from {topic}.", highlight=False)
