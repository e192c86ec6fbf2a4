"""FastAPI dependencies for event publishers: `EventMaker`, `EventDependency`.

The equivalents of Safir's ``safir.dependencies.metrics``. A service
declares its publishers once, in an `EventMaker` subclass; the lifespan
creates them with the manager (`EventDependency.initialize`); handlers
receive them with ``Depends(dependency)``.

Examples
--------
>>> class Events(EventMaker):
...     async def initialize(self, manager: EventManager) -> None:
...         self.checkout = await manager.create_publisher("checkout", Checkout)
>>> events_dependency = EventDependency(Events())  # doctest: +SKIP
"""

from __future__ import annotations

import abc
from typing import Generic, TypeVar

from ._manager import EventManager

__all__ = ["EventDependency", "EventMaker"]


class EventMaker(abc.ABC):
    """Holds a service's event publishers, made in `initialize`."""

    @abc.abstractmethod
    async def initialize(self, manager: EventManager) -> None:
        """Create the publishers (``manager.create_publisher``) and keep them
        as attributes.

        Parameters
        ----------
        manager
            An initialized event manager.
        """


E = TypeVar("E", bound=EventMaker)


class EventDependency(Generic[E]):
    """A FastAPI dependency that hands out an initialized `EventMaker`.

    Parameters
    ----------
    event_maker
        The service's `EventMaker`; its publishers exist once `initialize`
        has run.
    """

    def __init__(self, event_maker: E) -> None:
        self._event_maker = event_maker
        self._initialized = False

    async def initialize(self, manager: EventManager) -> None:
        """Create the publishers; call in the application's lifespan, after
        ``manager.initialize()``."""
        await self._event_maker.initialize(manager)
        self._initialized = True

    @property
    def events(self) -> E:
        """The event maker with its publishers.

        Raises
        ------
        RuntimeError
            If `initialize` has not run (a request served before the
            lifespan started, or a missing call).
        """
        if not self._initialized:
            raise RuntimeError(
                "EventDependency used before initialize(manager) was awaited"
            )
        return self._event_maker

    async def __call__(self) -> E:
        """Return the event maker, for ``Depends(dependency)``."""
        return self.events
