"""Variables that look like settings and are not: most likely misspelt.

pydantic-settings reads the variables it knows and ignores the rest, so
``METRICS_ENABLD=false`` would pass in silence and events would go to Kafka.
Every variable with a prefix of the library's settings (``METRICS_``,
``KAFKA_``, ``SCHEMA_MANAGER_``, which covers ``METRICS_LOG_EXPORT_`` and
``METRICS_BUFFER_``) must be one that a setting reads; the set of those is
derived from the settings models themselves (`known_names`), so it cannot
fall behind them. An unknown one is reported with the closest real name.

Two kinds of variables share the prefixes without being settings, and are
never reported: the service links Kubernetes gives every pod for each
Service of its namespace (a Service named ``kafka`` brings
``KAFKA_SERVICE_HOST``, ``KAFKA_PORT``, ``KAFKA_PORT_9092_TCP_ADDR`` ...),
and the variables of Apache Kafka's own scripts (``KAFKA_HEAP_OPTS``,
``KAFKA_OPTS``, ``KAFKA_HOME`` ...).
"""

from __future__ import annotations

import difflib
import re
import sys
import sysconfig
import warnings
from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pydantic
import pydantic_settings
from pydantic import BaseModel, TypeAdapter, ValidationError

from ._config_errors import environment_names, nested_model
from ._options import _Options, env_fields
from .errors import UnknownSettingWarning

__all__ = [
    "PREFIXES",
    "STRICT_VARIABLE",
    "UnknownVariable",
    "known_names",
    "parse_bool",
    "strict_requested",
    "unknown_variables",
    "warn_about",
]

PREFIXES = ("METRICS_", "KAFKA_", "SCHEMA_MANAGER_")
"""What the names of the library's settings start with."""

STRICT_VARIABLE = "METRICS_STRICT_ENV"
"""``true``: an unknown variable is a configuration error, not a warning."""

_SERVICE_LINK = re.compile(
    r"_(SERVICE_HOST|SERVICE_PORT(_\w+)?|PORT(_\d+_(TCP|UDP|SCTP)(_(PROTO|PORT|ADDR))?)?)$"
)
_KAFKA_SCRIPTS = re.compile(r"^KAFKA_(\w+_OPTS|OPTS|HOME|DEBUG|DEBUG_SUSPEND_FLAG)$")


@dataclass(frozen=True)
class UnknownVariable:
    """A variable no setting reads.

    Attributes
    ----------
    name
        The variable.
    suggestion
        The closest name a setting reads, if one is close.
    """

    name: str
    suggestion: str | None

    def line(self) -> str:
        """The problem, in words (never the value: it may be a password)."""
        hint = f"; did you mean {self.suggestion}?" if self.suggestion else ""
        return f"{self.name} is set, but no setting reads it{hint}"


def known_names(models: Iterable[type[BaseModel]]) -> frozenset[str]:
    """Every variable a setting of ``models`` (and of the settings and
    options models nested in them) reads."""
    return frozenset(name for model in models for name in _names(model))


def _names(model: type[BaseModel]) -> Iterator[str]:
    if issubclass(model, _Options):
        yield from (env for env, _, _ in env_fields(model))
        return
    for name, info in model.model_fields.items():
        nested = nested_model(info)
        if nested is not None:
            yield from _names(nested)
        else:
            yield from environment_names(model, name, info)


def unknown_variables(
    environ: Mapping[str, str],
    prefixes: Collection[str],
    known: Collection[str],
) -> list[UnknownVariable]:
    """The variables of ``environ`` with one of ``prefixes`` that are not
    ``known``, each with the closest known name."""
    found = []
    for name in sorted(environ):
        upper = name.upper()
        if not upper.startswith(tuple(prefixes)) or upper in known:
            continue
        if _SERVICE_LINK.search(upper) or _KAFKA_SCRIPTS.match(upper):
            continue
        close = difflib.get_close_matches(upper, sorted(known), n=1, cutoff=0.75)
        found.append(UnknownVariable(name, close[0] if close else None))
    return found


_BOOL: TypeAdapter[bool] = TypeAdapter(bool)


def parse_bool(value: object) -> bool | None:
    """A boolean setting's value as pydantic reads it (``"false"``,
    ``"0"``, ``"no"`` ...), or None when unset or not a boolean."""
    if value is None:
        return None
    try:
        return _BOOL.validate_python(value)
    except ValidationError:
        return None


def strict_requested(environ: Mapping[str, str], given: object = None) -> bool:
    """Whether unknown variables are errors: a ``strict_env`` argument, else
    ``METRICS_STRICT_ENV`` (a value that is not a boolean counts as false
    here; the settings' own validation then reports it)."""
    value = given if given is not None else environ.get(STRICT_VARIABLE)
    return parse_bool(value) is True


def warn_about(unknown: Iterable[UnknownVariable]) -> None:
    """One `UnknownSettingWarning` per variable, attributed to the
    application's line that read the configuration.

    Python shows a warning once per message and place, so each variable is
    reported once per place that reads the configuration, however often.
    """
    level = _application_stacklevel()
    for variable in unknown:
        warnings.warn(
            f"{variable.line()} (set {STRICT_VARIABLE}=true to make this an error)",
            UnknownSettingWarning,
            stacklevel=level,
        )


_LIBRARIES = (
    *(
        str(Path(module.__file__ or "").parent)
        for module in (
            sys.modules[__name__.rpartition(".")[0]],
            pydantic,
            pydantic_settings,
        )
    ),
    sysconfig.get_paths()["stdlib"],
    "<frozen ",
)


def _application_stacklevel() -> int:
    """The ``stacklevel`` of the first caller outside this library, pydantic
    (which calls a nested configuration's ``__init__``) and the standard
    library (such as an event loop running the caller)."""
    frame = sys._getframe(1)
    level = 1
    while frame.f_back is not None and frame.f_code.co_filename.startswith(_LIBRARIES):
        frame = frame.f_back
        level += 1
    return level
