"""Every Python sample of the documentation site runs, against a local stack.

The samples of a page run in order in one namespace, with top-level
``await``, in the environment a service gets from ``otel-kafka-events
stack`` (the ``metrics_env`` fixture). `NOT_EXECUTED` lists the fragments
that are not run yet; it may only shrink.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

import pytest
import structlog

DOCS = Path(__file__).resolve().parent.parent / "docs"
_BLOCK = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)

# (page, index of the block on the page): fragments that need a consumer
# loop, providers or peers (Apicurio, the collector) the harness does not
# set up.
NOT_EXECUTED = {
    ("index.md", 0),
    ("index.md", 1),
    ("opentelemetry.md", 0),
    ("opentelemetry.md", 1),
    ("opentelemetry.md", 2),
    ("schemas.md", 0),
    ("testing.md", 0),
    ("testing.md", 1),
    ("testing.md", 2),
    ("testing.md", 3),
    ("testing.md", 4),
    ("testing.md", 5),
}


def samples() -> dict[str, list[str]]:
    return {
        page.name: _BLOCK.findall(page.read_text())
        for page in sorted(DOCS.glob("*.md"))
    }


def test_not_executed_fragments_still_exist() -> None:
    found = {
        (page, i) for page, blocks in samples().items() for i in range(len(blocks))
    }
    assert found >= NOT_EXECUTED, "a listed fragment is gone: drop it from the list"


@pytest.mark.parametrize(
    "page",
    [
        page
        for page, blocks in samples().items()
        if any((page, i) not in NOT_EXECUTED for i in range(len(blocks)))
    ],
)
async def test_page_samples_run(
    page: str, metrics_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    namespace: dict[str, Any] = {"__name__": f"docs_{page[:-3]}"}
    ran = 0
    try:
        for index, code in enumerate(samples()[page]):
            if (page, index) in NOT_EXECUTED:
                continue
            # dont_inherit: this module's postponed annotations must not
            # leak into the samples (pydantic would see strings).
            compiled = compile(
                code,
                f"{page}[{index}]",
                "exec",
                flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT,
                dont_inherit=True,
            )
            result = eval(compiled, namespace)
            if result is not None:
                await result
            ran += 1
    finally:
        structlog.reset_defaults()
    assert ran > 0
