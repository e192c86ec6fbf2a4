"""Where the command line writes: data to stdout, everything else to stderr.

Data (JSON lines, schemas, environment lines, tables asked for) goes to
stdout so that it can be piped; progress and status go to stderr, where a
spinner does not corrupt a pipe.
"""

from __future__ import annotations

import os
import sys

from rich.console import Console

__all__ = ["err", "out"]


def _output_width() -> int | None:
    """Rich's width on a terminal; wider when piped, so tables keep whole ids."""
    if sys.stdout.isatty():
        return None
    return int(os.environ.get("COLUMNS") or 160)


out = Console(soft_wrap=True, width=_output_width())
"""Console for the command's output."""

err = Console(stderr=True, soft_wrap=True)
"""Console for progress, status and errors."""
