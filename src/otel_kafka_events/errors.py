"""The exception hierarchy of otel-kafka-events.

Every error that a caller can fix by changing how they use the library is an
`EventManagerUsageError`; these are always raised, whatever ``raise_on_error``
says. Infrastructure failures (`BrokerUnavailableError`, `SchemaRegistryError`,
a full buffer) are raised only when the caller asked for it.
"""

from __future__ import annotations

from typing import Any

from aiokafka.errors import KafkaConnectionError
from pydantic import ValidationError

__all__ = [
    "BrokerUnavailableError",
    "ConfigurationError",
    "DuplicateEventError",
    "EventBufferFullError",
    "EventDeliveryAbortedError",
    "EventDeliveryError",
    "EventDeliveryTimeoutError",
    "EventDroppedError",
    "EventKeyError",
    "EventManagerClosedError",
    "EventManagerError",
    "EventManagerUninitializedError",
    "EventManagerUnintializedError",
    "EventManagerUsageError",
    "EventPayloadError",
    "EventRejectedError",
    "EventTooLargeError",
    "IdempotenceUnsupportedError",
    "IncompatibleSchemaError",
    "InvalidEventNameError",
    "KafkaTopicError",
    "NotAcknowledgedError",
    "SchemaRegistryError",
    "UnknownKeyFieldError",
    "UnknownSettingWarning",
    "UnsupportedAvroSchemaError",
    "kafka_error_name",
]


class EventManagerError(Exception):
    """Base class of every error raised by otel-kafka-events."""


class EventManagerUsageError(EventManagerError):
    """The library was used in a way that cannot work.

    Raised regardless of ``raise_on_error``: retrying will not help, the
    calling code or configuration has to change.
    """


class ConfigurationError(EventManagerUsageError, ValidationError):
    """The configuration cannot work: one line per problem.

    Each line names the environment variable (``METRICS_ENABLED``, not an
    internal alias), what is wrong with its value and what to set instead;
    a secret's value is never shown. Raised by the configuration classes of
    `otel_kafka_events.config` and by `metrics_configuration_factory`.

    It is also a ``ValueError`` and a `pydantic.ValidationError`, which
    Safir's settings classes raise, so ``except ValidationError`` clauses
    keep working; ``errors()`` gives pydantic's details (with the values of
    secrets, and passwords in URLs, replaced by ``**********``).

    Attributes
    ----------
    problems
        The lines, one per problem.
    """

    problems: list[str]

    @classmethod
    def from_problems(
        cls, title: str, problems: list[str], details: list[Any]
    ) -> ConfigurationError:
        """The error for ``problems``, carrying pydantic's ``details``.

        Parameters
        ----------
        title
            The name of the settings class.
        problems
            One line per problem.
        details
            pydantic's line errors (``InitErrorDetails``), inputs hidden
            where they hold secrets.
        """
        error = cls.from_exception_data(title, details, hide_input=True)
        error.problems = list(problems)
        return error

    def __str__(self) -> str:
        problems = getattr(self, "problems", [])
        count = len(problems)
        lines = [
            f"{count} problem{'' if count == 1 else 's'} in the otel-kafka-events"
            " configuration:",
            *(f"- {problem}" for problem in problems),
        ]
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({getattr(self, 'problems', [])!r})"


class UnknownSettingWarning(UserWarning):
    """An environment variable with a prefix of the library's settings
    (``METRICS_``, ``KAFKA_``, ``SCHEMA_MANAGER_``) that no setting reads:
    most likely a misspelt name. Given once per variable, naming the
    closest real setting; ``METRICS_STRICT_ENV=true`` makes it a
    `ConfigurationError` instead."""


class EventManagerUninitializedError(EventManagerUsageError):
    """A publisher was requested before `EventManager.initialize` ran."""


EventManagerUnintializedError = EventManagerUninitializedError
"""Safir's original spelling of `EventManagerUninitializedError` (the same
class), kept so that ``except`` clauses written against older Safir
releases keep working after switching imports."""


class EventManagerClosedError(EventManagerUninitializedError):
    """The manager was used after `EventManager.aclose`.

    A closed manager is uninitialized again (call `EventManager.initialize`
    to use it anew), so this is an `EventManagerUninitializedError`, the
    error Safir raises in that case.
    """


class DuplicateEventError(EventManagerUsageError):
    """A publisher with this event name already exists on the manager.

    Parameters
    ----------
    name
        The event name that was registered twice.
    """

    def __init__(self, name: str) -> None:
        super().__init__(f"An event publisher named {name!r} already exists")
        self.name = name


class InvalidEventNameError(EventManagerUsageError):
    """An event name or topic part is not a valid Avro name.

    Parameters
    ----------
    part
        Which part is wrong (``"event name"``, ``"topic part"``, ...).
    value
        The offending value.
    reason
        Why it is not acceptable.
    """

    def __init__(self, part: str, value: str, reason: str) -> None:
        super().__init__(f"Invalid {part} {value!r}: {reason}")
        self.part = part
        self.value = value


class UnsupportedAvroSchemaError(EventManagerUsageError):
    """A payload model cannot be represented as an Avro record.

    Parameters
    ----------
    event
        The event name being registered.
    problems
        One entry per offending field, ``"field.path: reason"``.
    """

    def __init__(self, event: str, problems: list[str]) -> None:
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(
            f"Payload model of event {event!r} cannot be encoded as Avro:\n{lines}"
        )
        self.event = event
        self.problems = problems


class KafkaTopicError(EventManagerUsageError):
    """The events topic does not exist or cannot be described.

    Parameters
    ----------
    topic
        The topic that was checked.
    detail
        What the broker said.
    error_code
        The broker's Kafka error code for the topic, when it gave one; the
        message then names it (``UNKNOWN_TOPIC_OR_PARTITION``) rather than
        showing a bare number, and says what to do about it.

    Attributes
    ----------
    topic
        The topic that was checked.
    error_code
        The broker's error code, or None.
    error_name
        The Kafka protocol name of ``error_code`` (such as
        ``UNKNOWN_TOPIC_OR_PARTITION``), or None.
    """

    def __init__(
        self, topic: str, detail: str, *, error_code: int | None = None
    ) -> None:
        self.topic = topic
        self.error_code = error_code
        self.error_name = None if error_code is None else kafka_error_name(error_code)
        super().__init__(f"Kafka topic {topic!r} is not usable: {detail}")

    @classmethod
    def from_error_code(cls, topic: str, error_code: int) -> KafkaTopicError:
        """The error for a broker's per-topic error code, with what to do."""
        name = kafka_error_name(error_code)
        answer = name or "an unknown error"
        detail = f"the broker answered {answer} (error code {error_code})"
        if name == _UNKNOWN_TOPIC:
            detail += f"; {_create_topic_hint(topic)}"
        elif name == "TOPIC_AUTHORIZATION_FAILED":
            detail += (
                "; grant this client's principal Describe and Write on the topic,"
                " or check KAFKA_SASL_USERNAME"
            )
        return cls(topic, detail, error_code=error_code)

    @classmethod
    def missing(cls, topic: str) -> KafkaTopicError:
        """The error for a topic absent from the broker's metadata."""
        code = 3  # UNKNOWN_TOPIC_OR_PARTITION: what the broker means here.
        return cls(
            topic,
            f"the broker does not know it ({_UNKNOWN_TOPIC}); "
            + _create_topic_hint(topic),
            error_code=code,
        )


_UNKNOWN_TOPIC = "UNKNOWN_TOPIC_OR_PARTITION"


def _create_topic_hint(topic: str) -> str:
    """How to get ``topic`` created, for error messages."""
    return (
        f"create it (kafka-topics.sh --create --topic {topic}, or your cluster's"
        " topic management, e.g. a Strimzi KafkaTopic), or check"
        " METRICS_EVENTS_TOPIC_PREFIX and METRICS_APPLICATION; for a local"
        f" broker: otel-kafka-events stack --topic {topic}"
    )


def kafka_error_name(code: int) -> str | None:
    """The Kafka protocol name of a broker error code.

    Parameters
    ----------
    code
        The error code from a Kafka response, such as 3.

    Returns
    -------
    str or None
        The name the Kafka protocol gives it (``UNKNOWN_TOPIC_OR_PARTITION``
        for 3), or None for a code aiokafka does not know.
    """
    from aiokafka.errors import UnknownError, for_code

    error_class = for_code(code)
    if error_class is UnknownError and code != -1:
        return None
    return str(getattr(error_class, "message", error_class.__name__))


class IncompatibleSchemaError(EventManagerUsageError):
    """The registry refused the schema under the subject's compatibility rule.

    Parameters
    ----------
    subject
        The registry subject.
    messages
        The registry's explanation, one entry per broken rule.
    """

    def __init__(self, subject: str, messages: list[str]) -> None:
        detail = "; ".join(messages) if messages else "no detail from the registry"
        super().__init__(
            f"Schema for subject {subject!r} is incompatible with the registered"
            f" versions: {detail}"
        )
        self.subject = subject
        self.messages = messages


class EventPayloadError(EventManagerUsageError):
    """A payload cannot be published as given.

    Parameters
    ----------
    event
        The event name.
    detail
        What is wrong, naming the field where known.
    """

    def __init__(self, event: str, detail: str) -> None:
        super().__init__(f"Cannot publish event {event!r}: {detail}")
        self.event = event
        self.detail = detail


class EventTooLargeError(EventPayloadError):
    """The encoded event exceeds the producer's maximum request size."""


class EventKeyError(EventPayloadError):
    """The record key of an event cannot be made, so it is not published.

    Raised by ``publish`` when the publisher's key function raises or
    returns something other than `str`, `bytes` or None, when its key field
    holds a value that cannot be a key (a list, a map, a nested model), or
    when the ``key`` given to ``publish`` is not `str` or `bytes`. Nothing
    is queued.
    """


class UnknownKeyFieldError(EventManagerUsageError):
    """The ``key`` given to ``create_publisher`` names no field of the
    payload model (or a field whose values cannot be keys).

    Parameters
    ----------
    field
        The name given as ``key``.
    model
        The payload model's class name.
    detail
        Why the field cannot be the key.
    """

    def __init__(self, field: str, model: str, detail: str) -> None:
        super().__init__(f"key={field!r} cannot be the key of {model} events: {detail}")
        self.field = field
        self.model = model


class EventBufferFullError(EventManagerError):
    """The pending-event buffer is full and the overflow policy is ``raise``.

    Also raised by the ``block`` policy when its wait times out, if
    ``raise_on_error`` is set (otherwise the event is dropped and reported).
    """


class EventDeliveryError(EventManagerError):
    """An event accepted by ``publish`` was not delivered.

    Raised by ``publish(..., wait=True)``, always as one of the subclasses
    below, which say why; ``__cause__`` is the underlying error (also the
    ``error`` of the `DeliveryFailure` given to failure callbacks).

    Parameters
    ----------
    event_id
        The id of the event in its metadata.
    event_name
        The event name.
    reason
        What happened, in words.
    """

    def __init__(self, event_id: str, event_name: str, reason: str) -> None:
        super().__init__(
            f"Event {event_name!r} ({event_id}) was not delivered: {reason}"
        )
        self.event_id = event_id
        self.event_name = event_name
        self.reason = reason


class EventDroppedError(EventDeliveryError):
    """The buffer was full and the overflow policy dropped the event."""


class EventDeliveryTimeoutError(EventDeliveryError, TimeoutError):
    """The event's delivery timeout ran out.

    Attributes
    ----------
    waiting_for
        What it was waiting for: ``"registry"`` (its schema was not
        registered yet), ``"kafka"`` (queued, the broker unreachable or the
        send being retried) or ``"acknowledgement"`` (sent, not acknowledged:
        the broker may have written it).
    """

    def __init__(
        self, event_id: str, event_name: str, reason: str, waiting_for: str
    ) -> None:
        super().__init__(event_id, event_name, reason)
        self.waiting_for = waiting_for


class EventRejectedError(EventDeliveryError):
    """The broker refused the event with an error that retrying cannot fix,
    or its event type could not be registered."""


class EventDeliveryAbortedError(EventDeliveryError):
    """The event manager was closed before the event was delivered."""


class NotAcknowledgedError(EventManagerError, TimeoutError):
    """A batch was sent, and no acknowledgement says it was written: none
    came within the delivery timeout, or the answer leaves it open.

    Its events are failed, not sent again: the broker may have written them.
    It is the only error of a `DeliveryFailure` whose event may be on the
    topic (once; at least once without idempotence).
    """


class IdempotenceUnsupportedError(EventManagerError):
    """``enable_idempotence=True`` was asked for, and the broker refuses
    idempotent producers.

    Parameters
    ----------
    detail
        The broker's answer.
    """

    def __init__(self, detail: str) -> None:
        super().__init__(
            "The Kafka broker refuses idempotent producers (InitProducerId"
            f" answered {detail}); set enable_idempotence=False"
            " (METRICS_ENABLE_IDEMPOTENCE=false), or leave it unset to fall"
            " back automatically"
        )
        self.detail = detail


class SchemaRegistryError(EventManagerError):
    """The schema registry could not be reached or answered with an error.

    Parameters
    ----------
    message
        What went wrong, naming the registry.
    url
        The registry's URL (any password hidden), when known.
    status
        The HTTP status of its answer; None when there was no answer.
    detail
        The registry's own explanation, when it gave one.
    """

    def __init__(
        self,
        message: str,
        *,
        url: str | None = None,
        status: int | None = None,
        detail: str | None = None,
    ) -> None:
        super().__init__(message)
        self.url = url
        self.status = status
        self.detail = detail


class BrokerUnavailableError(EventManagerError, KafkaConnectionError):  # type: ignore[misc]
    """The Kafka cluster could not be reached.

    Also an ``aiokafka.errors.KafkaConnectionError``, the error Safir lets
    through with ``raise_on_error``, so that ``except KafkaConnectionError``
    clauses written for Safir still catch it.
    """

    def __str__(self) -> str:
        # aiokafka's errors prefix their class name; ours read as sentences.
        return Exception.__str__(self)
