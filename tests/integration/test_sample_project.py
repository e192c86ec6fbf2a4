"""A service's own suite, using the pytest plugin, passes against the stack.

``tests/sample_project`` is laid out as a user's project: its own
``pyproject.toml`` (pytest configuration included), a package and a
``tests/conftest.py`` that enables the plugin. Its suite runs here in a
subprocess, from its own directory, as its CI would run it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SAMPLE = Path(__file__).resolve().parents[1] / "sample_project"


@pytest.mark.integration
def test_sample_project_suite_passes() -> None:
    environment = {**os.environ, "PYTHONPATH": str(SAMPLE / "src")}
    # The sample's suite must not see this suite's settings.
    for name in list(environment):
        if name.startswith(("KAFKA_", "SCHEMA_MANAGER_", "METRICS_")):
            del environment[name]
    completed = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=SAMPLE,
        env=environment,
        capture_output=True,
        text=True,
        timeout=240,
    )
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output
    assert "3 passed" in output, output
