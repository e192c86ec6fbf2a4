"""Importing the payload models a command names as ``MODULE:ATTR``.

``ATTR`` may name one `EventPayload` subclass, or the events a service
declares: a mapping of event names to payload classes (``{"query_completed":
QueryCompleted}``) or a sequence of ``(name, class)`` pairs. Declaring the
events once and creating the publishers from that declaration lets
``otel-kafka-events check`` test exactly what the service will register.
"""

from __future__ import annotations

import importlib
import inspect
import os
import re
import sys
from collections.abc import Iterable, Mapping
from typing import Any

from .._encoding._models import EventPayload
from ._errors import CliError

__all__ = ["declared_events", "default_event_name", "import_target"]

_WORD_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
_FORM = "MODULE:ATTR, e.g. myservice.events:EVENTS"


def default_event_name(model: type[Any]) -> str:
    """The event name of a class given alone: its name in snake case.

    ``QueryCompleted`` gives ``query_completed``, ``HTTPRequestDone``
    ``http_request_done``.
    """
    return _WORD_BOUNDARY.sub("_", model.__name__).lower()


def import_target(spec: str) -> Any:
    """Import ``MODULE:ATTR`` (ATTR may be dotted) and return the attribute.

    The current directory is put first on ``sys.path``, as ``python -m``
    does, so a service's package is found when run from its project root.

    Raises
    ------
    CliError
        If the spec is malformed, the module cannot be imported or lacks the
        attribute; the message names which.
    """
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise CliError(f"{spec!r} is not of the form {_FORM}", exit_code=2)
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise CliError(
                f"cannot import module {module_name!r} ({exc})",
                "run from the project root, install the service in this"
                " environment, or add its directory to PYTHONPATH",
                exit_code=2,
            ) from exc
        raise CliError(
            f"importing module {module_name!r} failed: {exc}",
            "install the service's dependencies in this environment",
            exit_code=2,
        ) from exc
    except Exception as exc:
        raise CliError(
            f"importing module {module_name!r} raised {type(exc).__name__}: {exc}",
            "the module must import without connecting to anything",
            exit_code=2,
        ) from exc
    target: Any = module
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise CliError(
                f"module {module_name!r} has no attribute {attribute!r}",
                _candidates(module),
                exit_code=2,
            )
        target = getattr(target, part)
    return target


def _candidates(module: Any) -> str:
    """What the module offers: its payload classes and event declarations."""
    names = [
        name
        for name, value in vars(module).items()
        if not name.startswith("_") and (_is_payload(value) or bool(_pairs(value)))
    ]
    if not names:
        return "it defines no EventPayload class or event mapping"
    return "it defines " + ", ".join(sorted(names))


def declared_events(
    target: Any, spec: str, name: str | None = None
) -> list[tuple[str, type[EventPayload]]]:
    """The ``(event name, payload class)`` pairs ``target`` declares.

    Parameters
    ----------
    target
        What `import_target` returned.
    spec
        The ``MODULE:ATTR`` it came from, for messages.
    name
        The event name of a single class; by default `default_event_name`.

    Raises
    ------
    CliError
        If ``target`` is neither a payload class nor a declaration of them,
        or ``name`` is given with a declaration (which names its events).
    """
    if _is_payload(target):
        return [(name or default_event_name(target), target)]
    pairs = _pairs(target)
    if pairs is None:
        raise CliError(
            f"{spec} is a {type(target).__name__}, not an EventPayload subclass,"
            " a mapping of event names to EventPayload subclasses or a list of"
            " (name, class) pairs",
            exit_code=2,
        )
    if name is not None:
        raise CliError(
            f"--name applies to a single class, and {spec} already names its events",
            exit_code=2,
        )
    if not pairs:
        raise CliError(f"{spec} declares no events", exit_code=2)
    return pairs


def _is_payload(value: Any) -> bool:
    return (
        inspect.isclass(value)
        and issubclass(value, EventPayload)
        and value is not EventPayload
    )


def _pairs(value: Any) -> list[tuple[str, type[EventPayload]]] | None:
    """Name and class pairs of a mapping or sequence, or None if it is not."""
    items: Iterable[Any]
    if isinstance(value, Mapping):
        items = value.items()
    elif isinstance(value, list | tuple):
        items = value
    else:
        return None
    pairs: list[tuple[str, type[EventPayload]]] = []
    for item in items:
        if not (isinstance(item, tuple) and len(item) == 2):
            return None
        event, model = item
        if not (isinstance(event, str) and _is_payload(model)):
            return None
        pairs.append((event, model))
    return pairs
