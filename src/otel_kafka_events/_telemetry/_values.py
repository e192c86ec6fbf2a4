"""Conversion of event values to what OTLP can carry.

The OTLP encoder accepts str, bool, int, float, bytes, sequences and maps of
those. One datetime, UUID, Enum or Decimal left in a log record makes the
exporter fail the whole batch, so every value goes through `otel_value`.
"""

from __future__ import annotations

import datetime as dt
import enum
import uuid
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from pydantic import BaseModel

__all__ = ["PLAIN_TYPES", "otel_value"]

PLAIN_TYPES = (str, bool, int, float, bytes)
"""Types OTLP carries as they are."""


def otel_value(value: Any) -> Any:
    """Return ``value`` as an OTLP ``AnyValue``-compatible Python value.

    Datetimes and dates become ISO 8601 strings, timedeltas seconds, UUIDs and
    Decimals strings, Enums their value, models and mappings dicts, other
    iterables lists. None stays None (the log emitter leaves None-valued
    fields out of the attributes).
    """
    if value is None or type(value) in PLAIN_TYPES:
        return value
    if isinstance(value, enum.Enum):
        return otel_value(value.value)
    if isinstance(value, PLAIN_TYPES):
        return value
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, uuid.UUID | Decimal):
        return str(value)
    if isinstance(value, BaseModel):
        return {k: otel_value(v) for k, v in value.__dict__.items()}
    if isinstance(value, Mapping):
        return {str(k): otel_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [otel_value(v) for v in value]
    return str(value)
