"""The README's FastAPI snippet runs as written against the local stack.

(The publishing snippet runs against ``otel-kafka-events stack`` in
``devstack/test_stack_command.py``.) The FastAPI snippet uses the publishing snippet's
payload class, as a reader who follows the README would.
"""

from __future__ import annotations

import ast
import asyncio
import importlib.util
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from otel_kafka_events.errors import EventManagerClosedError

README = Path(__file__).resolve().parents[2] / "README.md"


def python_block_under(heading: str) -> str:
    """The first Python block after ``heading`` in the README."""
    section = README.read_text().split(heading, 1)[1]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


def payload_classes() -> str:
    """The imports and classes of the publishing snippet (it also awaits)."""
    tree = ast.parse(python_block_under("## Publishing events"))
    kept: list[ast.stmt] = [
        node
        for node in tree.body
        if isinstance(node, ast.Import | ast.ImportFrom | ast.ClassDef)
    ]
    return ast.unparse(ast.Module(body=kept, type_ignores=[]))


async def _publish_after_close(publisher: Any, payload_class: Any) -> None:
    await publisher.publish(
        payload_class(username="alice", duration=timedelta(seconds=1), rows=1)
    )


def test_readme_fastapi_snippet_starts_and_stops_with_the_stack(
    metrics_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A module of its own, as the snippet would be in a service.
    path = tmp_path / "readme_fastapi.py"
    path.write_text(
        payload_classes() + "\n\n" + python_block_under("### In a FastAPI service")
    )
    spec = importlib.util.spec_from_file_location("readme_fastapi", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "readme_fastapi", module)
    spec.loader.exec_module(module)
    app = module.app
    with TestClient(app):  # runs the lifespan: initialize, create_publisher
        publisher = app.state.query_events
        assert publisher.name == "query_completed"
        assert publisher.event_class.__name__ == "query_completed"
    # The lifespan's aclose() ran: the manager refuses new events.
    with pytest.raises(EventManagerClosedError):
        asyncio.run(_publish_after_close(publisher, module.QueryCompleted))
