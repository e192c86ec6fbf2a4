"""The code blocks of the README and the docs, as a reader copies them.

Conventions, so that a test can run each block exactly as written:

- A Python block whose first line is ``# NAME.py`` (optionally followed by
  ``:`` and a description) is a whole file: a reader saves it as ``NAME.py``.
  It is a program when it runs something at its top level (`is_program`:
  ``asyncio.run(main())``, a ``try``, an ``if __name__ == "__main__":``
  block); then ``python NAME.py`` runs it. Otherwise it is a module other
  files import, or a server's application (``uvicorn NAME:app``).
- A Python block whose first line is ``# excerpt of NAME.py`` repeats lines
  of the file ``NAME.py`` shown above it, to explain them: its other lines
  must be a run of that file's lines, as written (blank lines aside).
- A shell block whose first line is ``# Terminal N`` is what a reader types
  in terminal N, in the repository's root.
- A shell block whose first line is ``# NAME.env`` (optionally followed by
  ``:`` and a description) is a file of environment variables, one
  ``NAME=value`` a line (``#`` lines are comments): what a service's
  container is given.

Only the standard library: ``scripts/readme_walkthrough.py`` uses this
module before any virtual environment exists.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "Block",
    "blocks",
    "environment_files",
    "excerpt_problem",
    "is_program",
    "python_files",
    "terminals",
]

_FENCE = re.compile(r"^```(?P<language>\w*)\n(?P<text>.*?)^```$", re.M | re.S)
_FILE = re.compile(r"^# (?P<name>[\w.-]+\.py)(?::.*)?$")
_EXCERPT = re.compile(r"^# excerpt of (?P<name>[\w.-]+\.py)\b")
_TERMINAL = re.compile(r"^# Terminal (?P<number>\d+)\b")
_ENV_FILE = re.compile(r"^# (?P<name>[\w-]+)\.env\b")


@dataclass(frozen=True)
class Block:
    """One fenced code block.

    Attributes
    ----------
    language
        The fence's language (``python``, ``bash``, ``console`` ...).
    text
        The block's text, as written.
    """

    language: str
    text: str

    @property
    def first_line(self) -> str:
        return self.text.split("\n", 1)[0]

    @property
    def file_name(self) -> str | None:
        """``NAME.py`` of a whole-file block, else None."""
        found = _FILE.match(self.first_line) if self.language == "python" else None
        return found["name"] if found else None

    @property
    def excerpt_of(self) -> str | None:
        """The file an excerpt block repeats lines of, else None."""
        found = _EXCERPT.match(self.first_line) if self.language == "python" else None
        return found["name"] if found else None

    @property
    def env_file(self) -> str | None:
        """``NAME`` of a ``# NAME.env`` shell block, else None."""
        found = _ENV_FILE.match(self.first_line) if self.language == "bash" else None
        return found["name"] if found else None

    @property
    def terminal(self) -> int | None:
        """The terminal a shell block is typed in, else None."""
        found = _TERMINAL.match(self.first_line) if self.language == "bash" else None
        return int(found["number"]) if found else None


def blocks(path: Path) -> list[Block]:
    """The fenced code blocks of a Markdown file, in order."""
    return [
        Block(found["language"], found["text"])
        for found in _FENCE.finditer(path.read_text())
    ]


def python_files(found: list[Block]) -> dict[str, str]:
    """The whole-file Python blocks, by file name."""
    files: dict[str, str] = {}
    for block in found:
        name = block.file_name
        if name is not None:
            if name in files:
                raise ValueError(f"two blocks are the file {name}")
            files[name] = block.text
    return files


def environment_files(found: list[Block]) -> dict[str, dict[str, str]]:
    """The ``# NAME.env`` blocks, by name: each one's variables, in order.

    Raises
    ------
    ValueError
        If a line is neither a comment nor ``NAME=value``, or two blocks
        have one name.
    """
    files: dict[str, dict[str, str]] = {}
    for block in found:
        name = block.env_file
        if name is None:
            continue
        if name in files:
            raise ValueError(f"two blocks are the file {name}.env")
        variables: dict[str, str] = {}
        for line in block.text.splitlines():
            if not line.strip() or line.startswith("#"):
                continue
            variable, equals, value = line.partition("=")
            if not equals or not re.fullmatch(r"[A-Z][A-Z0-9_]*", variable):
                raise ValueError(f"{name}.env: not NAME=value: {line!r}")
            variables[variable] = value
        files[name] = variables
    return files


def terminals(found: list[Block]) -> dict[int, str]:
    """The ``# Terminal N`` shell blocks, by terminal."""
    return {block.terminal: block.text for block in found if block.terminal}


_DECLARATIONS = (
    ast.Import,
    ast.ImportFrom,
    ast.FunctionDef,
    ast.AsyncFunctionDef,
    ast.ClassDef,
    ast.Assign,
    ast.AnnAssign,
)


def is_program(source: str) -> bool:
    """Whether ``python FILE`` runs something: a top-level statement other
    than imports, definitions, assignments and a docstring (such as
    ``asyncio.run(main())``, a ``try``, or an ``if __name__ ==
    "__main__":`` block)."""
    for node in ast.parse(source).body:
        if isinstance(node, _DECLARATIONS):
            continue
        docstring = isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
        if not docstring:
            return True
    return False


def excerpt_problem(excerpt: Block, files: dict[str, str]) -> str | None:
    """Why an excerpt block does not repeat its file's lines, or None."""
    name = excerpt.excerpt_of
    if name is None or name not in files:
        return f"{excerpt.first_line!r} names no file shown before it"
    lines = [line for line in excerpt.text.splitlines()[1:] if line.strip()]
    source = [line for line in files[name].splitlines() if line.strip()]
    for start in range(len(source) - len(lines) + 1):
        if source[start : start + len(lines)] == lines:
            return None
    return f"the excerpt of {name} is not a run of its lines"
