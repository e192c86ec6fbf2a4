"""The tests the documentation cites as evidence exist.

`docs/reliability.md` and other pages back each claim with the names of the
tests that hold it. A renamed or deleted test would leave a claim that
nothing checks any more; here every cited name must still be a test
function somewhere under ``tests/``.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CITED = re.compile(r"`(test_[a-z0-9_]+)`")
DEFINED = re.compile(r"^\s*(?:async\s+)?def\s+(test_[a-z0-9_]+)\s*\(", re.MULTILINE)


def _pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def _defined_tests() -> set[str]:
    names: set[str] = set()
    for path in (ROOT / "tests").rglob("*.py"):
        names.update(DEFINED.findall(path.read_text(encoding="utf-8")))
    return names


def test_the_pages_cite_tests() -> None:
    cited = {
        name for page in _pages() for name in CITED.findall(page.read_text("utf-8"))
    }
    # The check below means something only if the pages cite tests at all.
    assert len(cited) > 50


def test_every_cited_test_exists() -> None:
    defined = _defined_tests()
    missing = [
        f"{page.relative_to(ROOT)}: {name}"
        for page in _pages()
        for name in CITED.findall(page.read_text("utf-8"))
        if name not in defined
    ]
    assert not missing, "cited, but no such test:\n" + "\n".join(missing)
