"""The typed options of the event managers: every setting declared once.

Each setting is one field of one model here, with its type, default, bounds
and description. The event manager's keyword arguments are validated by
these models; the environment configuration (`otel_kafka_events.config`)
reads the same fields from the variables named by `env_name`; the command
line and the documentation's reference table are made from them too.

Environment names: a model's ``env_prefix`` followed by the field name in
capitals (``METRICS_`` + ``delivery_timeout``), a nested model's fields under
its own prefix (``METRICS_BUFFER_MAX_EVENTS``), unless a field names its
variable itself (``logs`` is ``METRICS_OTEL_LOGS``) or has none (the OTel
providers, which are objects).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterator
from datetime import timedelta
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_serializer,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_core.core_schema import ValidatorFunctionWrapHandler

from ._secrets import hide_error_inputs, mask_url

__all__ = [
    "MAX_IN_FLIGHT",
    "BufferOptions",
    "DeliveryOptions",
    "LogExportOptions",
    "OverflowPolicy",
    "TelemetryOptions",
    "delivery_options",
    "env_fields",
    "normalize_safir_names",
    "seconds",
]


MAX_IN_FLIGHT = 5
"""Most batches in flight per partition: Kafka's idempotent producer keeps
the order of at most five requests per partition."""


def _env(name: str | None) -> dict[str, Any]:
    """Field metadata naming a field's environment variable (None: none)."""
    return {"env": name}


def _env_also(*names: str) -> dict[str, Any]:
    """Field metadata naming variables read too, after the field's own (the
    unprefixed names Safir's configuration reads)."""
    return {"env_also": names}


_HUMAN_INTERVAL = re.compile(r"^\s*(?:\d+\s*[wdhms]\s*)+$", re.IGNORECASE)
_UNIT_SECONDS = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1}


def seconds(value: Any) -> Any:
    """Read a duration as seconds: a number, a `timedelta`, or text such as
    ``"5m"`` or ``"1h30m"`` (as Safir's ``HumanTimedelta`` reads it)."""
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, str) and _HUMAN_INTERVAL.match(value):
        return float(
            sum(
                int(number) * _UNIT_SECONDS[unit.lower()]
                for number, unit in re.findall(r"(\d+)\s*([wdhms])", value, re.I)
            )
        )
    return value


Seconds = Annotated[float, BeforeValidator(seconds)]


class _Options(BaseModel):
    """Frozen, strict about unknown names, and named in the environment."""

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    env_prefix: ClassVar[str] = ""
    """What the environment names of this model's fields start with."""

    @model_validator(mode="wrap")
    @classmethod
    def _hide_secret_inputs(
        cls, data: Any, handler: ValidatorFunctionWrapHandler
    ) -> Any:
        # A validation error quotes the values it refused, and for a
        # missing or contradictory setting all the values given: no
        # secret among them may be shown (an OTLP endpoint's password).
        try:
            return handler(data)
        except ValidationError as exc:
            error = ValidationError.from_exception_data(
                exc.title, hide_error_inputs(exc.errors())
            )
        raise error


class OverflowPolicy(enum.StrEnum):
    """What ``publish`` does when the pending-event buffer is full."""

    BLOCK = "block"
    """Wait for room up to ``BufferOptions.block_timeout``, then drop the event
    (reported as dropped) or, with ``raise_on_error``, raise."""

    DROP_NEWEST = "drop_newest"
    """Drop the event being published; it is counted and reported."""

    RAISE = "raise"
    """Raise `EventBufferFullError` to the caller."""


class BufferOptions(_Options):
    """Bounds on events accepted by ``publish`` but not yet acknowledged.

    Environment: ``METRICS_BUFFER_MAX_EVENTS``, ``METRICS_BUFFER_MAX_BYTES``,
    ``METRICS_BUFFER_OVERFLOW``, ``METRICS_BUFFER_BLOCK_TIMEOUT``.
    """

    env_prefix: ClassVar[str] = "METRICS_BUFFER_"

    max_events: int = Field(100_000, ge=1, description="Most events held at once.")
    max_bytes: int = Field(
        64 * 1024 * 1024,
        ge=1024,
        description="Most encoded bytes (values and headers) held at once.",
    )
    overflow: OverflowPolicy = Field(
        OverflowPolicy.BLOCK,
        description=(
            "What publish does when either bound would be exceeded: block,"
            " drop_newest or raise."
        ),
    )
    block_timeout: Seconds = Field(
        5.0, ge=0, description="Seconds the block policy waits for room."
    )


class DeliveryOptions(_Options):
    """How a Kafka event manager delivers events.

    Environment: ``METRICS_`` and the field name in capitals
    (``METRICS_DELIVERY_TIMEOUT``), ``METRICS_BUFFER_*`` for `buffer`.
    """

    env_prefix: ClassVar[str] = "METRICS_"

    delivery_timeout: Seconds = Field(
        120.0,
        gt=0,
        description=(
            "Seconds from publish to an event's reported outcome: delivered"
            " within it, or reported failed at its end, never earlier (a"
            " broker that stops answering included)."
        ),
    )
    close_timeout: Seconds = Field(
        15.0,
        gt=0,
        description=(
            "Seconds aclose() takes at most (plus 0.1 s): delivering pending"
            " events, stopping the clients and flushing telemetry (half of"
            " Kubernetes' default 30 s grace period)."
        ),
    )
    retry_backoff: Seconds = Field(
        0.1,
        gt=0,
        description=(
            "First delay between retries of a send, a connection or a"
            " registration; it doubles up to backoff_interval."
        ),
    )
    backoff_interval: Seconds = Field(
        5.0,
        gt=0,
        description=(
            "Longest delay between two retries (Safir's setting of this name"
            " pauses publishing instead). Accepts seconds or text like 5m."
        ),
        json_schema_extra=_env_also("BACKOFF_INTERVAL"),
    )
    raise_on_error: bool = Field(
        False,
        description=(
            "Raise broker and registry errors from initialize(),"
            " create_publisher() and a full buffer, instead of logging them"
            " and retrying in the background (without it, initialize() and"
            " create_publisher() return within 3 s whatever Kafka and the"
            " registry do)."
        ),
        json_schema_extra=_env_also("RAISE_ON_ERROR"),
    )
    enable_idempotence: bool | None = Field(
        None,
        description=(
            "Kafka's idempotent producer: true requires it, false never uses"
            " it; unset uses it unless the broker refuses it (such as Tansu),"
            " then warns once and goes on without it."
        ),
    )
    max_in_flight: int | None = Field(
        None,
        ge=1,
        le=MAX_IN_FLIGHT,
        description=(
            "Most batches in flight per partition, 1 to 5; unset: as many as"
            " the transport keeps in order (5 with Kafka's idempotent"
            " producer, else 1: without it a retried batch could land after"
            " later ones). Capped by the transport, with one warning."
        ),
    )
    buffer: BufferOptions = Field(
        default_factory=BufferOptions, description="The pending-event buffer."
    )

    @model_validator(mode="after")
    def _backoff_in_order(self) -> DeliveryOptions:
        if self.retry_backoff > self.backoff_interval:
            raise ValueError(
                f"retry_backoff (METRICS_RETRY_BACKOFF, {self.retry_backoff} s)"
                " must not exceed backoff_interval (METRICS_BACKOFF_INTERVAL,"
                f" {self.backoff_interval} s); lower the first or raise the second"
            )
        return self

    @model_validator(mode="after")
    def _in_flight_keeps_order(self) -> DeliveryOptions:
        if self.enable_idempotence is False and (self.max_in_flight or 1) > 1:
            raise ValueError(
                f"max_in_flight (METRICS_MAX_IN_FLIGHT, {self.max_in_flight})"
                " above 1 needs Kafka's idempotent producer, which"
                " enable_idempotence=False (METRICS_ENABLE_IDEMPOTENCE) turns"
                " off: without it a retried batch could be written after the"
                " batches sent behind it; set max_in_flight to 1 or leave"
                " enable_idempotence unset"
            )
        return self


class LogExportOptions(_Options):
    """Where a Kafka event manager sends its events' log records itself.

    With `TelemetryOptions.log_export` set, the manager exports the log
    records of its events (`TelemetryOptions.logs`) to OTLP on a Kafka
    topic of its own broker, to an OTLP/HTTP endpoint, or both, instead of
    handing them to an application's LoggerProvider. Give ``kafka=True``,
    an ``otlp_endpoint``, or both.

    Environment: ``METRICS_LOG_EXPORT_*``; setting any of them turns the
    export on.
    """

    env_prefix: ClassVar[str] = "METRICS_LOG_EXPORT_"

    kafka: bool = Field(
        False,
        description=(
            "Write the records as OTLP to `topic` on the event manager's broker,"
            " for the Collector's kafka receiver (needs the otlp-kafka extra)."
        ),
    )
    topic: str = Field(
        "otlp_logs", min_length=1, description="That topic (the receiver's default)."
    )
    encoding: Literal["otlp_proto", "otlp_json"] = Field(
        "otlp_proto", description="otlp_proto or otlp_json, as the receiver's."
    )
    partition_by_trace_id: bool = Field(
        False, description="Key each record by its trace id, in hex."
    )
    otlp_endpoint: str | None = Field(
        None,
        description=(
            "Also (or only, without kafka) send them to this OTLP/HTTP logs"
            " URL, e.g. http://collector:4318/v1/logs. Credentials in it"
            " (https://user:password@collector/v1/logs) are sent as HTTP basic"
            " authentication; the password is never shown."
        ),
    )
    direct: bool = Field(
        False,
        description=(
            "Write a record for each event Kafka acknowledged, without the"
            " OpenTelemetry SDK's per-record objects (several times cheaper"
            " per event)."
        ),
    )
    timeout: Seconds = Field(
        10.0, gt=0, description="Seconds one export may take before it fails."
    )
    max_pending: int = Field(
        100_000,
        ge=1,
        description=(
            "With direct: most records exported but not yet acknowledged;"
            " records beyond it are dropped and counted."
        ),
    )

    @model_validator(mode="after")
    def _has_a_destination(self) -> LogExportOptions:
        if not self.kafka and not self.otlp_endpoint:
            raise ValueError(
                "a log export needs kafka=True, an otlp_endpoint, or both"
                " (METRICS_LOG_EXPORT_KAFKA=true, METRICS_LOG_EXPORT_OTLP_ENDPOINT);"
                " set one, or unset every METRICS_LOG_EXPORT_* variable for no"
                " export"
            )
        return self

    @field_serializer("otlp_endpoint")
    def _hide_password(self, url: str | None) -> str | None:
        return None if url is None else mask_url(url)

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        for name, value in super().__repr_args__():
            if name == "otlp_endpoint" and isinstance(value, str):
                value = mask_url(value)
            yield name, value


class TelemetryOptions(_Options):
    """How published events connect to OpenTelemetry.

    Environment: ``METRICS_TRACE_CONTEXT``, ``METRICS_PROPAGATION_HEADERS``,
    ``METRICS_BAGGAGE``, ``METRICS_PRODUCER_SPANS``, ``METRICS_OTEL_LOGS``,
    ``METRICS_LOG_MODE`` and ``METRICS_LOG_EXPORT_*``; the providers are
    objects, given in code only.
    """

    env_prefix: ClassVar[str] = "METRICS_"

    trace_context: bool = Field(
        True,
        description=(
            "Add trace_id, span_id and trace_flags of the caller's span to"
            " every event's metadata; without it the schema has no trace"
            " fields."
        ),
    )
    propagation_headers: bool = Field(
        True,
        description=(
            "Inject the trace context into Kafka record headers (traceparent,"
            " tracestate) through the global propagator."
        ),
    )
    baggage: bool | frozenset[str] = Field(
        False,
        description=(
            "Also propagate W3C baggage: false (the default, since baggage may"
            " carry personal data), true for every entry, or the keys allowed"
            " through (comma-separated in the environment)."
        ),
    )
    producer_spans: bool | Literal["event", "batch"] = Field(
        False,
        description=(
            "PRODUCER spans 'send {topic}': event (or true) for one per event,"
            " a child of the caller's span; batch for one per batch sent,"
            " linked to its events' spans."
        ),
    )
    logs: bool = Field(
        False,
        description="Emit every event as an OpenTelemetry log record.",
        json_schema_extra=_env("METRICS_OTEL_LOGS"),
    )
    log_mode: Literal["attributes", "body"] = Field(
        "attributes",
        description=(
            "attributes: payload and metadata in the record's attributes; body:"
            " all of it as a map in the body, for backends that ignore"
            " complex attributes."
        ),
    )
    log_export: LogExportOptions | None = Field(
        None,
        description=(
            "With logs: a Kafka manager exports the records itself (see"
            " LogExportOptions) instead of through logger_provider."
        ),
    )
    logger_provider: Any = Field(
        None,
        description=(
            "The LoggerProvider for logs (the global one when None); with"
            " log_export only its resource is used."
        ),
        json_schema_extra=_env(None),
    )
    tracer_provider: Any = Field(
        None,
        description="The TracerProvider for producer spans (the global one when None).",
        json_schema_extra=_env(None),
    )
    meter_provider: Any = Field(
        None,
        description=(
            "The MeterProvider for the delivery counters of a Kafka manager"
            " (the global one when None)."
        ),
        json_schema_extra=_env(None),
    )

    @field_validator("baggage", mode="before")
    @classmethod
    def _baggage_keys_from_text(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip().lower() not in (
            "true",
            "false",
            "1",
            "0",
            "yes",
            "no",
            "on",
            "off",
        ):
            return frozenset(key.strip() for key in value.split(",") if key.strip())
        if isinstance(value, list | tuple | set):
            return frozenset(value)
        return value

    @field_validator("producer_spans", mode="before")
    @classmethod
    def _span_shape(cls, value: Any) -> Any:
        if isinstance(value, str) and value.lower() in ("event", "batch"):
            return value.lower()
        return value

    @model_validator(mode="after")
    def _export_needs_logs(self) -> TelemetryOptions:
        if self.log_export is not None and not self.logs:
            raise ValueError(
                "log_export (METRICS_LOG_EXPORT_*) needs logs=True: it exports"
                " the events' log records; set METRICS_OTEL_LOGS=true, or unset"
                " every METRICS_LOG_EXPORT_* variable"
            )
        return self

    @property
    def baggage_keys(self) -> frozenset[str] | None:
        """The baggage keys let through, or None for all (or none, when
        `baggage` is False)."""
        return None if isinstance(self.baggage, bool) else self.baggage


def env_fields(
    model: type[_Options], prefix: str | None = None
) -> Iterator[tuple[str, tuple[str, ...], FieldInfo]]:
    """Every setting of ``model`` that the environment can set.

    Yields
    ------
    tuple
        The variable's name, the path of field names to the setting (nested
        option models included), and the field. A setting read from more
        than one variable comes once per name, its own name first.
    """
    prefix = model.env_prefix if prefix is None else prefix
    for name, info in model.model_fields.items():
        extra = (
            info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        )
        if "env" in extra:
            if extra["env"] is None:
                continue
            yield str(extra["env"]), (name,), info
        else:
            nested = _nested_model(info)
            if nested is not None:
                for env, path, inner in env_fields(nested):
                    yield env, (name, *path), inner
                continue
            yield f"{prefix}{name.upper()}", (name,), info
        for also in extra.get("env_also", ()):  # type: ignore[union-attr]
            yield str(also), (name,), info


def _nested_model(info: FieldInfo) -> type[_Options] | None:
    """The options model a field holds (``X`` or ``X | None``), if any."""
    annotation = info.annotation
    candidates = getattr(annotation, "__args__", None) or (annotation,)
    for candidate in candidates:
        if isinstance(candidate, type) and issubclass(candidate, _Options):
            return candidate
    return None


# Safir's camel-case configuration names of our settings (its YAML keys),
# and keyword arguments that moved to the transport.
_SAFIR_NAMES = {"backoffInterval": "backoff_interval", "raiseOnError": "raise_on_error"}
_TRANSPORT_NAMES = ("producer", "admin_client", "manage_clients")


def normalize_safir_names(data: dict[str, Any]) -> dict[str, Any]:
    """Move the delivery settings of a configuration given flat (Safir's
    ``raiseOnError`` and ``backoffInterval``, or any `DeliveryOptions`
    field) into its ``delivery`` mapping.

    The one place where Safir's names meet ours: `delivery_options` maps
    the keyword arguments of `KafkaEventManager` with the same table.
    """
    fields = DeliveryOptions.model_fields
    moved: dict[str, Any] = {}
    rest: dict[str, Any] = {}
    for key, value in data.items():
        field = _SAFIR_NAMES.get(key, key)
        if field in fields and key != "delivery":
            if not (field == "backoff_interval" and value is None):
                moved[field] = value
        else:
            rest[key] = value
    if not moved:
        return data
    delivery = rest.get("delivery")
    if isinstance(delivery, DeliveryOptions):
        delivery = delivery.model_dump(exclude_unset=True)
    rest["delivery"] = {**(delivery or {}), **moved}
    return rest


def delivery_options(
    base: DeliveryOptions | None, settings: dict[str, Any]
) -> DeliveryOptions:
    """The `DeliveryOptions` of a Kafka event manager's keyword arguments.

    The one place where the names a Safir service passes are normalised:
    `timedelta` values are read as seconds (`seconds`), camel-case names
    mapped, and a name no option has is refused with the closest one.

    Raises
    ------
    EventManagerUsageError
        Naming the keyword argument that is unknown or invalid.
    """
    import difflib

    from pydantic import ValidationError

    from .errors import EventManagerUsageError

    values = dict(base.model_dump(exclude_unset=True)) if base is not None else {}
    known = set(DeliveryOptions.model_fields)
    for name, value in settings.items():
        field = _SAFIR_NAMES.get(name, name)
        if field not in known:
            if name in _TRANSPORT_NAMES:
                hint = (
                    f"; pass transport=AiokafkaTransport({name}=...) to use"
                    " clients of your own"
                )
            else:
                close = difflib.get_close_matches(name, sorted(known), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
            raise EventManagerUsageError(
                f"KafkaEventManager got an unknown keyword argument {name!r}{hint}"
            )
        if value is None and field == "backoff_interval":
            continue  # Safir's "not set"
        values[field] = value
    try:
        return DeliveryOptions.model_validate(values)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error['loc']) or 'options'}: {error['msg']}"
            for error in exc.errors()
        )
        raise EventManagerUsageError(
            f"Invalid KafkaEventManager options: {problems}"
        ) from exc
