"""The context-manager protocol shared by every local test server."""

from __future__ import annotations

import abc
from types import TracebackType
from typing import Self

__all__ = ["StartStop"]


class StartStop(abc.ABC):
    """Something with `start` and `stop`, usable as ``with thing: ...``."""

    @abc.abstractmethod
    def start(self) -> None:
        """Start serving; return once ready."""

    @abc.abstractmethod
    def stop(self) -> None:
        """Stop serving and release what `start` took. Idempotent."""

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
