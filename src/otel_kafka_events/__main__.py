"""``python -m otel_kafka_events`` and the ``otel-kafka-events`` command.

The commands live in `otel_kafka_events._cli`, which needs the ``cli``
extra (Click and Rich; the ``testing`` extra includes it). Without it this
entry point says what to install instead of failing with a traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``otel-kafka-events`` command; returns the status."""
    try:
        from ._cli import main as cli_main
    except ImportError as exc:
        print(
            f"otel-kafka-events: the command line needs Click and Rich ({exc});"
            " pip install 'otel-kafka-events[cli]'",
            file=sys.stderr,
        )
        return 2
    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main())
