"""Error logs that repeat at most once per interval per kind of failure."""

from __future__ import annotations

import contextlib
import time
from typing import Any

from structlog.stdlib import BoundLogger

__all__ = ["RateLimitedLog"]


class RateLimitedLog:
    """Logs an error at most once per ``interval`` seconds per ``kind``.

    A broker outage fails every batch of every partition; one line per
    interval, counting what it held back, says the same without flooding.

    Parameters
    ----------
    logger
        Where the lines go.
    interval
        Seconds between two lines of one kind.
    """

    def __init__(self, logger: BoundLogger, interval: float) -> None:
        self.logger = logger
        self._interval = interval
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def error(self, kind: str, message: str, **fields: Any) -> None:
        """Log ``message`` at error level unless ``kind`` was logged lately."""
        now = time.monotonic()
        last = self._last.get(kind)
        if last is not None and now - last < self._interval:
            self._suppressed[kind] = self._suppressed.get(kind, 0) + 1
            return
        self._last[kind] = now
        suppressed = self._suppressed.pop(kind, 0)
        # The application's logging (its processors and handlers) must not
        # stop the retries that log through here.
        with contextlib.suppress(Exception):
            self.logger.error(message, suppressed_since_last=suppressed, **fields)
