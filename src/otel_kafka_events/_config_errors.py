"""Configuration errors a person can act on: one line per problem.

pydantic locates a problem by the path of field names or aliases that led to
it (``('kafka', 'bootstrapServers')``) and says what the value should be. A
person configuring a service through its environment needs three things on
one line: the variable (``KAFKA_BOOTSTRAP_SERVERS``), what is wrong with its
value, and what to set instead. `explain` turns a `pydantic.ValidationError`
of a settings class into those lines, inside a `ConfigurationError` that
still carries pydantic's details for code that wants them, every secret
hidden (`hide_error_inputs`).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, get_args

from pydantic import (
    AliasChoices,
    BaseModel,
    BeforeValidator,
    SecretStr,
    ValidationError,
)
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails

from ._options import (
    DeliveryOptions,
    _Options,
    env_fields,
    normalize_safir_names,
    seconds,
)
from ._secrets import hide_error_inputs, is_secret_name, mask_url
from .errors import ConfigurationError

__all__ = [
    "Located",
    "environment_names",
    "explain",
    "locate",
    "nested_model",
    "problem_lines",
]


@dataclass(frozen=True)
class Located:
    """Where a validation error points.

    Attributes
    ----------
    names
        The environment variables that set the value (the first is the
        setting's own name); empty for a problem of a whole group (a model
        validator's) or a value no variable sets.
    path
        The field names from the settings class to the value.
    field
        The field, when the path ends at one.
    """

    names: tuple[str, ...]
    path: tuple[str, ...]
    field: FieldInfo | None


def _aliases(info: FieldInfo) -> list[str]:
    alias = info.validation_alias
    if isinstance(alias, AliasChoices):
        return [choice for choice in alias.choices if isinstance(choice, str)]
    if isinstance(alias, str):
        return [alias]
    return [info.alias] if info.alias else []


def _field(model: type[BaseModel], key: str) -> tuple[str, FieldInfo] | None:
    """The field ``key`` (its name or one of its aliases) names."""
    for name, info in model.model_fields.items():
        if key == name or key in _aliases(info):
            return name, info
    return None


def nested_model(info: FieldInfo) -> type[BaseModel] | None:
    """The model a field holds (``X`` or ``X | None``), if any."""
    annotation = info.annotation
    for candidate in get_args(annotation) or (annotation,):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def environment_names(
    model: type[BaseModel], name: str, info: FieldInfo
) -> tuple[str, ...]:
    """The variables a field of a Safir-style settings class is read from:
    its upper-case aliases (``KAFKA_BOOTSTRAP_SERVERS``), or the class's
    prefix and the field's name."""
    found = [alias for alias in _aliases(info) if alias.isupper()]
    if found:
        return tuple(found)
    prefix = model.model_config.get("env_prefix") or ""
    return (f"{prefix}{name}".upper(),) if prefix else ()


def locate(model: type[BaseModel], loc: Iterable[int | str]) -> Located:
    """The variables and field a validation error's ``loc`` points at.

    Walks the field names and aliases of ``loc`` through nested settings;
    inside an options model (`DeliveryOptions` ...) the variable is the one
    `env_fields` names. Whatever follows the field (a union member's tag,
    an index) is not part of the setting's name.
    """
    current: type[BaseModel] = model
    path: list[str] = []
    options: type[_Options] | None = model if issubclass(model, _Options) else None
    inside: list[str] = []
    for key in loc:
        if not isinstance(key, str):
            break
        found = _field(current, key)
        if found is None:
            break
        name, info = found
        path.append(name)
        nested = nested_model(info)
        if options is not None:
            inside.append(name)
        if nested is None:
            if options is not None:
                names = tuple(
                    env
                    for env, where, _ in env_fields(options)
                    if where == tuple(inside)
                )
            else:
                names = environment_names(current, name, info)
            return Located(names, tuple(path), info)
        if options is None and issubclass(nested, _Options):
            options, inside = nested, []
        current = nested
    return Located((), tuple(path), None)


def _is_secret(located: Located) -> bool:
    info = located.field
    if info is not None and (
        info.annotation is SecretStr or SecretStr in get_args(info.annotation)
    ):
        return True
    return any(is_secret_name(part) for part in (*located.names, *located.path))


def _takes_seconds(info: FieldInfo | None) -> bool:
    return info is not None and any(
        isinstance(item, BeforeValidator) and item.func is seconds
        for item in info.metadata
    )


# What to do about a value of the wrong kind, by pydantic's error type.
_FIXES = {
    "bool_parsing": "use true or false",
    "bool_type": "use true or false",
    "int_parsing": "use a whole number",
    "int_type": "use a whole number",
    "int_from_float": "use a whole number",
    "float_parsing": "use a number",
    "float_type": "use a number",
    "path_type": "use a file path",
    "string_too_short": "give a non-empty value",
}
_SECONDS_FIX = "use seconds (such as 2.5) or a duration such as 30s, 5m or 1h30m"


def _sentence(text: str) -> str:
    """pydantic's message as the middle of a sentence."""
    text = text.removeprefix("Value error, ").removeprefix("Assertion failed, ")
    return text[:1].lower() + text[1:] if text[1:2].islower() else text


def _shown(error: ErrorDetails, located: Located) -> str:
    """``=value`` for a value that may be shown, else nothing."""
    value = error.get("input")
    if _is_secret(located) or not isinstance(value, str | int | float | bool):
        return ""
    if isinstance(value, str):
        value = mask_url(value)
    return f"={value!r}" if isinstance(value, str) else f"={value}"


def _label(
    located: Located, loc: tuple[int | str, ...], environ: Mapping[str, str], given: Any
) -> str:
    """How a line names the setting: the variable that is set (or the
    setting's own), or the argument it was given as."""
    if _given(given, loc, located.path):
        return f"argument {'.'.join(str(part) for part in loc)}"
    for name in located.names:
        if name in environ:
            return name
    if located.names:
        return located.names[0]
    return ".".join(str(part) for part in loc) or "the settings"


def _given(given: Any, loc: tuple[int | str, ...], path: tuple[str, ...]) -> bool:
    """Whether the value at ``loc`` came from the keyword arguments (by the
    name or alias in ``loc``, or by a field name given flat, as Safir's
    ``raiseOnError``)."""
    if not isinstance(given, Mapping) or not loc:
        return False
    if loc[0] in given:
        return True
    node: Any = normalize_safir_names(dict(given))
    for key in path:
        if not isinstance(node, Mapping) or key not in node:
            return False
        node = node[key]
    return bool(path)


def _line(
    model: type[BaseModel],
    errors: list[ErrorDetails],
    located: Located,
    environ: Mapping[str, str],
    given: Any,
    missing_hints: Mapping[str, str] | None,
) -> str:
    first = errors[0]
    kind = first["type"]
    label = _label(located, tuple(first["loc"]), environ, given)
    description = (located.field.description or "") if located.field else ""
    if kind == "missing":
        what = f" ({description.rstrip('.')})" if description else ""
        hints = [
            hint
            for prefix, hint in (missing_hints or {}).items()
            if label.startswith(prefix)
        ]
        hint = f", or {hints[0]}" if hints else ""
        return f"{label} is not set; set it{what}{hint}"
    if kind in ("value_error", "assertion_error") and not located.names:
        # A check of several settings together: its message names them.
        return _sentence(first["msg"])
    if kind == "extra_forbidden":
        return (
            f"{label} is not a setting of {model.__name__}{_did_you_mean(model, first)}"
        )
    shown = _shown(first, located)
    if len(errors) > 1:
        # One value refused by each member of a union: say what is wanted.
        wanted = description.rstrip(".") or "see the configuration reference"
        return f"{label}{shown} is not valid; expected: {wanted}"
    fix = _SECONDS_FIX if _takes_seconds(located.field) else _FIXES.get(kind)
    return f"{label}{shown}: {_sentence(first['msg'])}{f'; {fix}' if fix else ''}"


def _did_you_mean(model: type[BaseModel], error: ErrorDetails) -> str:
    loc = error["loc"]
    if len(loc) != 1 or not isinstance(loc[0], str):
        return ""
    known = [
        name
        for field, info in model.model_fields.items()
        for name in (field, *_aliases(info))
    ]
    if "delivery" in model.model_fields:
        # The delivery options are accepted flat too (`normalize_safir_names`).
        known.extend(DeliveryOptions.model_fields)
    close = difflib.get_close_matches(loc[0], known, n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def problem_lines(
    model: type[BaseModel],
    errors: list[ErrorDetails],
    environ: Mapping[str, str],
    given: Any = None,
    missing_hints: Mapping[str, str] | None = None,
) -> list[str]:
    """One line per problem of ``errors`` (a `ValidationError`'s), naming
    the variable, the problem and the fix; errors about the same variable
    (one per member of a union) make one line."""
    groups: dict[tuple[str, ...], tuple[Located, list[ErrorDetails]]] = {}
    for error in errors:
        located = locate(model, error["loc"])
        key = located.path if located.names else tuple(map(str, error["loc"]))
        key = (*key, error["type"]) if not located.names else key
        groups.setdefault(key, (located, []))[1].append(error)
    lines = [
        _line(model, group, located, environ, given, missing_hints)
        for located, group in groups.values()
    ]
    return list(dict.fromkeys(lines))


def explain(
    exc: ValidationError,
    model: type[BaseModel],
    environ: Mapping[str, str],
    *,
    given: Any = None,
    missing_hints: Mapping[str, str] | None = None,
    extra: Iterable[str] = (),
) -> ConfigurationError:
    """The `ConfigurationError` for a settings class's validation error.

    Parameters
    ----------
    exc
        What pydantic raised.
    model
        The settings class that was validated.
    environ
        The environment it was read from (upper-case names).
    given
        The keyword arguments it was given, to tell them from variables.
    missing_hints
        Another way out for a missing setting, by the prefix of its variable
        (``set METRICS_ENABLED=false to publish no events``).
    extra
        Lines of problems found before validation (unknown variables).
    """
    errors = exc.errors()
    lines = [*extra, *problem_lines(model, errors, environ, given, missing_hints)]
    return ConfigurationError.from_problems(exc.title, lines, hide_error_inputs(errors))
