"""Event ids: random UUID4 texts, made a few hundred at a time.

``str(uuid.uuid4())`` reads system randomness once per id and formats each
id in Python. Here one ``os.urandom`` read serves a batch of 256 ids and
their texts are laid out all at once, with a strided copy per hex digit.
The publish path needs only the text (it is what the Avro value holds);
the `uuid.UUID` an event's ``id`` field shows is made from it when the
event's fields are first read (see ``_lazy_event``).
"""

from __future__ import annotations

import os
import threading
import uuid

__all__ = ["EventIds", "event_ids", "uuid_from_text"]

_BATCH = 256
# Where each of the 32 hex digits of a UUID sits in its 8-4-4-4-12 text form.
_TEXT_PLACES = tuple(
    d + (d >= 8) + (d >= 12) + (d >= 16) + (d >= 20) for d in range(32)
)
# RFC 9562 version 4: byte 6 starts with the version nibble 4, byte 8 with
# the variant bits 10. One translation table each, applied in C.
_VERSION_4 = bytes((b & 0x0F) | 0x40 for b in range(256))
_VARIANT_RFC = bytes((b & 0x3F) | 0x80 for b in range(256))


class EventIds:
    """A source of UUID4 texts that is safe to share between threads.

    ``list.pop`` is atomic, so two threads never take the same id; the lock
    only keeps them from refilling at once. A batch is a list of ``str``,
    which the garbage collector does not track.
    """

    def __init__(self) -> None:
        self._ready: list[str] = []
        self._lock = threading.Lock()

    def discard(self) -> None:
        """Forget the ids made so far (a forked child must not reuse them).

        The lock is replaced too: a thread of the parent may have held it at
        the fork, and in the child nothing would ever release it.
        """
        self._ready = []
        self._lock = threading.Lock()

    def next(self) -> str:
        """Return a new id in its canonical 36-character text form."""
        while True:
            try:
                return self._ready.pop()
            except IndexError:
                with self._lock:
                    if not self._ready:
                        self._ready = _make_batch()


def _make_batch() -> list[str]:
    random = bytearray(os.urandom(16 * _BATCH))
    random[6::16] = random[6::16].translate(_VERSION_4)
    random[8::16] = random[8::16].translate(_VARIANT_RFC)
    digits = random.hex().encode()
    texts = bytearray(b"-" * (36 * _BATCH))
    for digit, place in enumerate(_TEXT_PLACES):
        texts[place::36] = digits[digit::32]
    text = texts.decode()
    return [text[start : start + 36] for start in range(0, 36 * _BATCH, 36)]


_new_uuid = object.__new__
_set_slot = object.__setattr__
_SAFE_UNKNOWN = uuid.SafeUUID.unknown


def uuid_from_text(text: str) -> uuid.UUID:
    """The `uuid.UUID` of an id made here (no validation: we wrote it)."""
    value = _new_uuid(uuid.UUID)
    # The two slots uuid.UUID.__init__ sets, minus its argument parsing.
    _set_slot(value, "int", int(text.replace("-", ""), 16))
    _set_slot(value, "is_safe", _SAFE_UNKNOWN)
    return value


event_ids = EventIds()
"""The process's id source."""
# A child process starts with a copy of the parent's ready ids; without this,
# parent and child would publish events with the same ids.
os.register_at_fork(after_in_child=event_ids.discard)
