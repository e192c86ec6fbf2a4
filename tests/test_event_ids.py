"""Event ids are valid, distinct UUID4s, also when threads publish at once."""

from __future__ import annotations

import threading
import uuid

from otel_kafka_events._event_type import _event_ids


def test_ids_are_uuid4_with_matching_text() -> None:
    for _ in range(1000):
        value, text = _event_ids.next()
        assert value.version == 4
        assert value.variant == uuid.RFC_4122
        assert str(value) == text
        assert uuid.UUID(text) == value
        assert hash(value) == hash(uuid.UUID(text))


def test_threads_never_share_an_id() -> None:
    seen: list[str] = []
    lock = threading.Lock()

    def take() -> None:
        mine = [_event_ids.next()[1] for _ in range(5000)]
        with lock:
            seen.extend(mine)

    threads = [threading.Thread(target=take) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(seen) == len(set(seen)) == 20000
