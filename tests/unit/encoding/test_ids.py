"""Event ids are valid, distinct UUID4s, also when threads publish at once."""

from __future__ import annotations

import os
import signal
import threading
import uuid

from otel_kafka_events._encoding._ids import event_ids as _event_ids
from otel_kafka_events._encoding._ids import uuid_from_text


def test_ids_are_uuid4_texts() -> None:
    for _ in range(1000):
        text = _event_ids.next()
        value = uuid.UUID(text)
        assert value.version == 4
        assert value.variant == uuid.RFC_4122
        assert str(value) == text


def test_uuid_from_text_is_the_parsed_uuid() -> None:
    for _ in range(1000):
        text = _event_ids.next()
        value = uuid_from_text(text)
        assert value == uuid.UUID(text)
        assert str(value) == text
        assert hash(value) == hash(uuid.UUID(text))
        assert value.is_safe is uuid.SafeUUID.unknown


def test_threads_never_share_an_id() -> None:
    seen: list[str] = []
    lock = threading.Lock()

    def take() -> None:
        mine = [_event_ids.next() for _ in range(5000)]
        with lock:
            seen.extend(mine)

    threads = [threading.Thread(target=take) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(seen) == len(set(seen)) == 20000


def test_a_forked_child_makes_its_own_ids() -> None:
    _event_ids.next()  # the parent now holds a batch of ready ids
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its next id and leave at once
        os.write(write_end, _event_ids.next().encode())
        os._exit(0)
    os.close(write_end)
    child_id = os.read(read_end, 64).decode()
    os.close(read_end)
    os.waitpid(pid, 0)
    parent_ids = {_event_ids.next() for _ in range(300)}
    assert uuid.UUID(child_id).version == 4
    assert child_id not in parent_ids


def test_a_child_forked_during_a_refill_still_makes_ids() -> None:
    # A thread of the parent holding the refill lock at the fork must not
    # leave the child's lock held forever.
    read_end, write_end = os.pipe()
    with _event_ids._lock:
        pid = os.fork()
        if pid == 0:  # the child: its batch is empty, so it must refill
            signal.alarm(10)  # a hang ends the child instead of the test run
            os.write(write_end, _event_ids.next().encode())
            os._exit(0)
    os.close(write_end)
    child_id = os.read(read_end, 64).decode()
    os.close(read_end)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert uuid.UUID(child_id).version == 4
