"""MkDocs hook: the configuration reference, generated from the settings
models, replaces ``<!-- settings-reference -->`` in a page.

Generated rather than written, so the documented variables, defaults and
descriptions are the ones the code reads.
"""

from __future__ import annotations

from typing import Any

from pydantic import AliasChoices
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from otel_kafka_events import config

PLACEHOLDER = "<!-- settings-reference -->"

MODELS = (
    ("Events topic", config.EventsConfiguration, "METRICS_"),
    ("Kafka connection", config.KafkaConnectionSettings, "KAFKA_"),
    ("Schema registry", config.SchemaManagerSettings, "SCHEMA_MANAGER_"),
    ("Kafka manager", config.KafkaMetricsConfiguration, ""),
    (
        "Log export of the Kafka manager",
        config.LogExportSettings,
        "METRICS_LOG_EXPORT_",
    ),
)


def _variables(name: str, field: FieldInfo, prefix: str) -> list[str]:
    alias = field.validation_alias
    choices = alias.choices if isinstance(alias, AliasChoices) else [alias]
    found = [c for c in choices if isinstance(c, str) and c.isupper()]
    return found or ([f"{prefix}{name}".upper()] if prefix else [])


def _default(field: FieldInfo) -> str:
    if field.default is PydanticUndefined:
        return "from a factory" if field.default_factory else "required"
    return f"`{field.default!r}`" if field.default is not None else "unset"


def _table(model: Any, prefix: str) -> str:
    rows = ["| setting | environment | default | meaning |", "|---|---|---|---|"]
    for name, field in model.model_fields.items():
        if isinstance(field.annotation, type) and issubclass(
            field.annotation, config.BaseSettings
        ):
            continue  # a nested group, documented in its own table
        variables = ", ".join(f"`{v}`" for v in _variables(name, field, prefix))
        meaning = (field.description or "").replace("|", "\\|")
        rows.append(f"| `{name}` | {variables} | {_default(field)} | {meaning} |")
    return "\n".join(rows)


def settings_reference() -> str:
    """Markdown tables of every setting, one per settings model."""
    parts = []
    for title, model, prefix in MODELS:
        parts.append(f"### {title}: `{model.__name__}`\n\n{_table(model, prefix)}\n")
    return "\n".join(parts)


def on_page_markdown(markdown: str, **_: Any) -> str:
    """Fill the placeholder of the configuration page."""
    if PLACEHOLDER in markdown:
        return markdown.replace(PLACEHOLDER, settings_reference())
    return markdown
