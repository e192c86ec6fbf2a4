"""A structlog processor that puts the active trace ids on every log line."""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

from opentelemetry import trace

__all__ = ["add_trace_context"]


def add_trace_context(
    logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Add ``trace_id``, ``span_id`` and ``trace_flags`` of the active span.

    Uses the same formats as the event metadata (32 and 16 lowercase hex
    digits, flags as an int), so a service's log lines and its events can be
    joined on the ids. Any valid span context counts, recording or not. Keys
    already in the event dict are left alone.

    Examples
    --------
    >>> import structlog
    >>> structlog.configure(
    ...     processors=[add_trace_context, structlog.processors.JSONRenderer()]
    ... )
    """
    span_context = trace.get_current_span().get_span_context()
    if span_context.is_valid:
        event_dict.setdefault("trace_id", format(span_context.trace_id, "032x"))
        event_dict.setdefault("span_id", format(span_context.span_id, "016x"))
        event_dict.setdefault("trace_flags", int(span_context.trace_flags))
    return event_dict
