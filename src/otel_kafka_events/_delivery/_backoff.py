"""Exponential backoff, shared by every retry loop of the package."""

from __future__ import annotations

__all__ = ["Backoff"]


class Backoff:
    """Delays that double after each failure, up to a cap.

    Parameters
    ----------
    initial
        The first delay, in seconds.
    maximum
        The longest delay.
    """

    def __init__(self, initial: float, maximum: float = 5.0) -> None:
        if initial <= 0:
            raise ValueError(f"initial backoff must be positive, got {initial}")
        self.initial = initial
        self.maximum = max(maximum, initial)
        self._next = initial

    def next(self) -> float:
        """The delay before the next attempt; each call doubles the one after."""
        delay = self._next
        self._next = min(delay * 2, self.maximum)
        return delay

    def reset(self) -> None:
        """Start again from the initial delay (after a success)."""
        self._next = self.initial
