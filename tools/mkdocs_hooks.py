"""MkDocs hook: the configuration reference, generated from the settings
models, replaces ``<!-- settings-reference -->`` in a page.

Generated rather than written, so the documented variables, defaults and
descriptions are the ones the code reads: Safir's settings classes for
their variables, and our option models (`env_fields`) for ours.
"""

from __future__ import annotations

from typing import Any

from pydantic import AliasChoices, BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from otel_kafka_events import (
    BufferOptions,
    DeliveryOptions,
    LogExportOptions,
    TelemetryOptions,
    config,
)
from otel_kafka_events._options import env_fields

PLACEHOLDER = "<!-- settings-reference -->"

SAFIR_MODELS = (
    ("Events topic", config.EventsConfiguration, "METRICS_"),
    ("Kafka connection", config.KafkaConnectionSettings, "KAFKA_"),
    ("Schema registry", config.SchemaManagerSettings, "SCHEMA_MANAGER_"),
)

OPTION_MODELS = (
    ("Delivery", DeliveryOptions),
    ("Buffer", BufferOptions),
    ("OpenTelemetry", TelemetryOptions),
    ("Log export", LogExportOptions),
)


def _variables(name: str, field: FieldInfo, prefix: str) -> list[str]:
    alias = field.validation_alias
    choices = alias.choices if isinstance(alias, AliasChoices) else [alias]
    found = [c for c in choices if isinstance(c, str) and c.isupper()]
    return found or ([f"{prefix}{name}".upper()] if prefix else [])


def _default(field: FieldInfo) -> str:
    if field.default is PydanticUndefined:
        if field.default_factory is None:
            return "required"
        return "see below"
    return f"`{field.default!r}`" if field.default is not None else "unset"


def _row(name: str, variables: list[str], field: FieldInfo) -> str:
    shown = ", ".join(f"`{v}`" for v in variables) or "(in code only)"
    meaning = (field.description or "").replace("|", "\\|")
    return f"| `{name}` | {shown} | {_default(field)} | {meaning} |"


_HEADER = ["| setting | environment | default | meaning |", "|---|---|---|---|"]


def _safir_table(model: Any, prefix: str) -> str:
    rows = list(_HEADER)
    for name, field in model.model_fields.items():
        if isinstance(field.annotation, type) and issubclass(
            field.annotation, config.BaseSettings
        ):
            continue  # a nested group, documented in its own table
        rows.append(_row(name, _variables(name, field, prefix), field))
    return "\n".join(rows)


def _options_table(model: type[BaseModel]) -> str:
    names: dict[str, list[str]] = {}
    for env, path, _ in env_fields(model):  # type: ignore[arg-type]
        if len(path) == 1:
            names.setdefault(path[0], []).append(env)
    rows = list(_HEADER)
    for name, field in model.model_fields.items():
        annotation = field.annotation
        nested = getattr(annotation, "__args__", None) or (annotation,)
        if any(isinstance(a, type) and issubclass(a, BaseModel) for a in nested):
            rows.append(_row(name, [], field).replace("(in code only)", "below"))
            continue
        rows.append(_row(name, names.get(name, []), field))
    return "\n".join(rows)


def settings_reference() -> str:
    """Markdown tables of every setting, one per model."""
    parts = [
        f"### {title}: `{model.__name__}`\n\n{_safir_table(model, prefix)}\n"
        for title, model, prefix in SAFIR_MODELS
    ]
    parts.extend(
        f"### {title}: `{model.__name__}`\n\n{_options_table(model)}\n"
        for title, model in OPTION_MODELS
    )
    return "\n".join(parts)


def on_page_markdown(markdown: str, **_: Any) -> str:
    """Fill the placeholder of the configuration page."""
    if PLACEHOLDER in markdown:
        return markdown.replace(PLACEHOLDER, settings_reference())
    return markdown
