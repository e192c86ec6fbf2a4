"""The ``otel-kafka-events`` command group and its entry point.

Every command runs through `_Group.invoke`, which turns the failures a user
can fix (see `explain`) into one line on stderr and a non-zero exit status,
and Ctrl-C into a quiet exit.

Besides its own commands, the group runs those that installed distributions
register under the `COMMANDS_GROUP` entry-point group: the development stack
(``otel-kafka-events-devstack``) adds ``stack`` and ``demo`` there. They are
loaded on first use, so that ``import otel_kafka_events._cli`` stays cheap
and a command module may import this package.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable, Sequence
from importlib import metadata
from typing import Any

import click
from rich.markup import escape

from .._version import __version__
from ..errors import UnknownSettingWarning
from ._console import err
from ._errors import CliError, explain

__all__ = ["COMMANDS_GROUP", "cli", "main"]

COMMANDS_GROUP = "otel_kafka_events.commands"
"""The entry-point group whose entries are Click commands of this group."""

DEVSTACK = "otel-kafka-events-devstack"
"""The distribution that brings the ``stack`` and ``demo`` commands."""

_DEVSTACK_COMMANDS = ("stack", "demo")
_INSTALL_DEVSTACK = f"pip install 'otel-kafka-events[testing]' (or {DEVSTACK})"


def _unavailable(name: str, cause: str) -> click.Command:
    """A stand-in for a command that could not be loaded: running it says why.

    It takes any arguments, ``--help`` included, so that the one line
    naming what to install is what the user sees.
    """

    def fail() -> None:
        raise CliError(cause, _INSTALL_DEVSTACK, exit_code=2)

    return click.Command(
        name,
        callback=fail,
        help=f"(not installed: needs {DEVSTACK})",
        add_help_option=False,
        context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    )


class _Group(click.Group):
    """A group that reports expected failures as one line, not a traceback,
    and adds the commands of other distributions on first use."""

    _plugins_loaded = False

    def _load_plugins(self) -> None:
        if self._plugins_loaded:
            return
        self._plugins_loaded = True
        for entry in metadata.entry_points(group=COMMANDS_GROUP):
            if entry.name in self.commands:
                continue  # a built-in command is never replaced
            try:
                command = entry.load()
            except Exception as exc:
                # A broken plugin must not take the other commands down.
                self.add_command(
                    _unavailable(
                        entry.name,
                        f"the {entry.name} command of {entry.value} could not be"
                        f" loaded ({type(exc).__name__}: {exc})",
                    ),
                    entry.name,
                )
                continue
            self.add_command(command, entry.name)
        for name in _DEVSTACK_COMMANDS:
            if name not in self.commands:
                cause = f"the {name} command comes with {DEVSTACK}, not installed"
                self.add_command(_unavailable(name, cause))

    def list_commands(self, ctx: click.Context) -> list[str]:
        self._load_plugins()
        return super().list_commands(ctx)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        self._load_plugins()
        return super().get_command(ctx, cmd_name)

    def invoke(self, ctx: click.Context) -> Any:
        context: dict[str, Any] = ctx.ensure_object(dict)
        try:
            with warnings.catch_warnings():
                warnings.showwarning = _settings_warnings_as_lines(warnings.showwarning)
                return super().invoke(ctx)
        except KeyboardInterrupt:
            err.print("Interrupted.")
            ctx.exit(130)
        except Exception as exc:
            failure = explain(exc, context)
            if failure is None:
                raise
            # Escaped: "otel-kafka-events[testing]" is not Rich markup.
            err.print(f"[bold red]error:[/] {escape(failure.line())}", highlight=False)
            ctx.exit(failure.exit_code)


def _settings_warnings_as_lines(show: Callable[..., None]) -> Callable[..., None]:
    """``warnings.showwarning`` that prints a misspelt variable's warning as
    one line, like the errors (the line of code it points at would be the
    command line's own), and leaves other warnings to ``show``."""

    def show_warning(
        message: Warning | str, category: type[Warning], *args: Any, **kwargs: Any
    ) -> None:
        if issubclass(category, UnknownSettingWarning):
            line = f"[bold yellow]warning:[/] {escape(str(message))}"
            err.print(line, highlight=False)
        else:
            show(message, category, *args, **kwargs)

    return show_warning


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", "-V", prog_name="otel-kafka-events")
def cli() -> None:
    """Typed application events on Kafka: local stack, tailing, schemas.

    Settings come from the environment variables the library reads
    (KAFKA_*, SCHEMA_MANAGER_*, METRICS_*); see docs/configuration.md.
    """


def _register_commands() -> None:
    from ._registry import check, schema, subjects
    from ._tail import tail

    for command in (tail, schema, subjects, check):
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
