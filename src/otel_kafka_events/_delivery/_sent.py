"""The errors a Kafka transport ends a send with when the broker's own
answer cannot say what happened: given up before it was sent, or after."""

from __future__ import annotations

from aiokafka.errors import KafkaError

__all__ = ["MaybeSentError", "NotSentError", "SequenceBrokenError"]


class _OwnKafkaError(KafkaError):  # type: ignore[misc]
    """A `KafkaError` of ours, shown as its message alone (aiokafka's
    ``__str__`` repeats the class name, which `describe` already gives)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class NotSentError(_OwnKafkaError):
    """Given up before it was ever sent: safe to send again."""

    retriable = True


class MaybeSentError(_OwnKafkaError):
    """Given up after it was sent: the broker may have it."""


class SequenceBrokenError(_OwnKafkaError):
    """Not written, and the producer can write nothing more to the
    partition: a batch before it was refused, so the broker waits for a
    sequence number that will never come. A new producer id mends it."""
