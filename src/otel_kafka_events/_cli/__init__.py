"""The ``otel-kafka-events`` command line (needs the ``cli`` extra).

One module per command group: `_stack` (the local stack), `_tail`
(reading a topic), `_registry` (``schema``, ``subjects``, ``check``) and
`_demo`; `_app` assembles them, `_errors` turns expected failures into one
line, `_settings` reads the library's environment variables and `_loading`
imports the payload models a command names.
"""

from ._app import cli, main

__all__ = ["cli", "main"]
