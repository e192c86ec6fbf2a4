"""The ``otel-kafka-events`` command line (needs the ``cli`` extra).

One module per command group: `_tail` (reading a topic) and `_registry`
(``schema``, ``subjects``, ``check``); `_app` assembles them and adds the
commands other distributions register under the ``otel_kafka_events.commands``
entry-point group (``stack`` and ``demo`` come from
``otel-kafka-events-devstack``). `_errors` turns expected failures into one
line, `_settings` reads the library's environment variables and `_loading`
imports the payload models a command names.

The names below besides `cli` and `main` are what a command from another
distribution builds on: its expected failures raise `CliError`, it writes
through `out` and `err`, runs coroutines with `run` and reads topic settings
with `EventSettings`.
"""

from ._app import COMMANDS_GROUP, cli, main
from ._console import err, out
from ._errors import CliError
from ._running import run
from ._settings import EventSettings

__all__ = [
    "COMMANDS_GROUP",
    "CliError",
    "EventSettings",
    "cli",
    "err",
    "main",
    "out",
    "run",
]
