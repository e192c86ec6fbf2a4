"""Runs every example in ``examples/``, so the documentation cannot rot.

Convention for an example file ``examples/<name>.py`` (files starting with
``_`` are helpers and are skipped):

* it has a module docstring saying what it shows: examples are read first;
* importing it does no work (no connections, no servers): the end-to-end
  run sits behind ``if __name__ == "__main__":``;
* it defines ``main()``, sync or async, that runs the example end to end and
  raises (typically ``AssertionError``) when something did not happen;
* ``main`` may take a ``stack`` parameter: it then gets the test session's
  `LocalKafkaStack`, so examples run against every broker the suite covers,
  and must start its own stack when called without one (``python
  examples/<name>.py``). Other parameters must have defaults.

Each example is imported from its path under a private module name, and its
``main`` is called in this test's event loop.
"""

from __future__ import annotations

import importlib.util
import inspect
import sys
from pathlib import Path
from types import ModuleType

import pytest

from otel_kafka_events_devstack import LocalKafkaStack

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def example_files() -> list[Path]:
    return sorted(p for p in EXAMPLES.glob("*.py") if not p.name.startswith("_"))


def load(path: Path) -> ModuleType:
    """Import an example file as ``_example_<name>``."""
    name = f"_example_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # Registered before running so that dataclasses and pydantic can resolve
    # the module's annotations.
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def test_examples_exist() -> None:
    assert example_files(), f"no examples found in {EXAMPLES}"


@pytest.mark.parametrize("path", example_files(), ids=lambda p: p.stem)
async def test_example_runs(path: Path, local_kafka_stack: LocalKafkaStack) -> None:
    module = load(path)
    try:
        assert (module.__doc__ or "").strip(), f"{path.name} has no docstring"
        main = getattr(module, "main", None)
        assert callable(main), f"{path.name} defines no main()"
        parameters = inspect.signature(main).parameters
        kwargs = {"stack": local_kafka_stack} if "stack" in parameters else {}
        result = main(**kwargs)
        if inspect.isawaitable(result):
            await result
    finally:
        sys.modules.pop(module.__name__, None)
