"""What Kafka's errors, as aiokafka raises them, mean for a send and for a
connection: `classify` for the ledger's `SendFailure`, and the words for a
broker that cannot be reached or will not let the client in.

Pure functions of an error: no client, no I/O.
"""

from __future__ import annotations

import ssl

from aiokafka.errors import (
    AuthenticationFailedError,
    AuthenticationMethodNotSupported,
    IllegalSaslStateError,
    KafkaError,
    OutOfOrderSequenceNumber,
    ProducerFenced,
    SaslAuthenticationFailed,
    UnknownProducerId,
    UnsupportedSaslMechanismError,
)

from .._foreign import describe
from ._sent import MaybeSentError, NotSentError, SequenceBrokenError
from ._transport import SendFailure

__all__ = [
    "REFUSALS",
    "classify",
    "describe_kafka_error",
    "describe_refusal",
    "gave_up_retrying",
    "is_connection_error",
]


# After these the producer is unusable (aiokafka's sender stops, or the broker
# forgot the producer id, e.g. after a crash) while the batch was not written.
_PRODUCER_FATAL = (
    OutOfOrderSequenceNumber,
    ProducerFenced,
    UnknownProducerId,
    SequenceBrokenError,
)


# aiokafka raises these for a broker it cannot talk to; only some of them
# carry ``retriable = True``.
_CONNECTION_ERRORS = frozenset(
    {
        "KafkaConnectionError",
        "KafkaTimeoutError",
        "RequestTimedOutError",
        "NodeNotReadyError",
    }
)


# A broker that answers, and will not take this client's SASL handshake: a
# mechanism it does not enable, or a listener without SASL at all.
_HANDSHAKE_REFUSALS = (
    AuthenticationMethodNotSupported,
    UnsupportedSaslMechanismError,
    IllegalSaslStateError,
)


# A broker that answers, and will not let this client in.
REFUSALS = (
    SaslAuthenticationFailed,
    AuthenticationFailedError,
    *_HANDSHAKE_REFUSALS,
    ssl.SSLError,
)


# A produce request that got no answer in time: the broker may have written
# it. Only the idempotent producer can send it again without a duplicate.
_NO_ANSWER = frozenset({"RequestTimedOutError", "KafkaTimeoutError"})


def is_connection_error(error: BaseException) -> bool:
    """Whether ``error`` means the broker could not be reached or answer."""
    if isinstance(error, KafkaError):
        return type(error).__name__ in _CONNECTION_ERRORS
    return isinstance(error, ConnectionError | TimeoutError | OSError)


def describe_refusal(error: BaseException) -> str:
    """Say why a broker that answered would not let the client in."""
    if isinstance(error, ssl.SSLError):
        return f"the TLS handshake with Kafka failed: {describe(error)}"
    if isinstance(error, _HANDSHAKE_REFUSALS):
        return (
            "Kafka refused the SASL handshake (does the listener use the"
            " configured security protocol and SASL mechanism?):"
            f" {describe(error)}"
        )
    return f"Kafka refused the credentials (authentication failed): {describe(error)}"


def describe_kafka_error(error: BaseException) -> str:
    """Say what went wrong talking to Kafka, without calling a broker that
    answered "unreachable"."""
    kind = "unreachable" if is_connection_error(error) else "refused the request"
    return f"Kafka {kind}: {type(error).__name__}: {error}"


def classify(error: BaseException, *, idempotent: bool) -> SendFailure:
    """What a failed send means for its events (see `SendFailure`)."""
    if isinstance(error, MaybeSentError):
        return SendFailure.UNKNOWN
    if isinstance(error, _PRODUCER_FATAL):
        return SendFailure.RESTART
    if not idempotent and type(error).__name__ in _NO_ANSWER:
        return SendFailure.UNKNOWN
    if is_connection_error(error) or getattr(error, "retriable", False):
        return SendFailure.RETRY
    return SendFailure.REJECT


def gave_up_retrying(error: BaseException) -> bool:
    """Whether ``error`` is aiokafka giving up a batch it would retry."""
    return (
        isinstance(error, KafkaError)
        and not isinstance(error, (NotSentError, MaybeSentError, *_PRODUCER_FATAL))
        and (is_connection_error(error) or bool(getattr(error, "retriable", False)))
    )
