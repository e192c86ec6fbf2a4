"""The ``otel-kafka-events`` command group and its entry point.

Every command runs through `_Group.invoke`, which turns the failures a user
can fix (see `explain`) into one line on stderr and a non-zero exit status,
and Ctrl-C into a quiet exit.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import click

from .._version import __version__
from ._console import err
from ._errors import explain

__all__ = ["cli", "main"]


class _Group(click.Group):
    """A group that reports expected failures as one line, not a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        context: dict[str, Any] = ctx.ensure_object(dict)
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            err.print("Interrupted.")
            ctx.exit(130)
        except Exception as exc:
            failure = explain(exc, context)
            if failure is None:
                raise
            err.print(f"[bold red]error:[/] {failure.line()}", highlight=False)
            ctx.exit(failure.exit_code)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", "-V", prog_name="otel-kafka-events")
def cli() -> None:
    """Typed application events on Kafka: local stack, tailing, schemas.

    Settings come from the environment variables the library reads
    (KAFKA_*, SCHEMA_MANAGER_*, METRICS_*); see docs/configuration.md.
    """


def _register_commands() -> None:
    from ._demo import demo
    from ._registry import check, schema, subjects
    from ._stack import stack
    from ._tail import tail

    for command in (stack, tail, schema, subjects, check, demo):
        cli.add_command(command)


_register_commands()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return its exit status."""
    try:
        cli.main(args=list(argv) if argv is not None else None, standalone_mode=True)
    except SystemExit as exit_:
        code = exit_.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
