"""The README's Python blocks run as a reader copies them, against the stack.

Each block is a whole file (`markdown_programs`): written to a directory as
it stands in the README, not a character changed, and run as the README
says: ``python publish.py``, ``uvicorn service:app`` with a request, and
``otel-kafka-events schema`` / ``check`` on ``tapservice_events.py``. What
they published is read back with ``otel-kafka-events tail``. The README's
shell blocks (its two commands, the stack, the example service, ``curl``,
``tail``) run from a fresh clone in ``scripts/readme_walkthrough.py``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import tomllib
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from otel_kafka_events_devstack import LocalKafkaStack

from ..markdown_programs import blocks, is_program, python_files, terminals

README = Path(__file__).resolve().parents[2] / "README.md"
TOPIC = "lsst.square.metrics.events.tapservice"

# Each file of the README, and the test below that runs it.
RUN_BY = {
    "publish.py": "test_publish_py_runs_as_written",
    "service.py": "test_service_py_serves_as_written",
    "tapservice_events.py": "test_tapservice_events_py_with_schema_and_check",
}


@pytest.fixture(scope="module")
def readme_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding every file the README shows, as written."""
    directory = tmp_path_factory.mktemp("readme")
    for name, text in python_files(blocks(README)).items():
        (directory / name).write_text(text)
    return directory


@pytest.fixture
async def tapservice_topic(
    local_kafka_env: dict[str, str], local_kafka_stack: LocalKafkaStack
) -> str:
    """The topic of the README's application, on the test session's stack
    (whose connection settings are in the environment)."""
    await local_kafka_stack.create_topic(TOPIC, exist_ok=True)
    for name in list(os.environ):
        if name.startswith("METRICS_") and name != "METRICS_ENABLE_IDEMPOTENCE":
            del os.environ[name]  # restored: local_kafka_env's monkeypatch
    return TOPIC


def run(*command: str, cwd: Path, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command,
        cwd=cwd,
        env={**os.environ, **extra},
        capture_output=True,
        text=True,
        timeout=120,
    )


def events_on(topic: str, cwd: Path) -> list[dict[str, Any]]:
    """What ``otel-kafka-events tail`` shows of the topic, decoded."""
    tail = run(
        sys.executable, "-m", "otel_kafka_events", "tail", topic, "--from-beginning",
        cwd=cwd,
    )  # fmt: skip
    assert tail.returncode == 0, tail.stderr
    return [json.loads(line) for line in tail.stdout.splitlines()]


def test_every_python_block_is_a_file_a_test_runs() -> None:
    found = [block for block in blocks(README) if block.language == "python"]
    assert found, "no Python blocks found: the pattern is broken"
    names = [block.file_name for block in found]
    assert None not in names, "a Python block does not start with # NAME.py"
    assert set(names) == set(RUN_BY)
    for test in RUN_BY.values():
        assert callable(globals()[test])


def test_publish_py_runs_as_written(readme_files: Path, tapservice_topic: str) -> None:
    assert is_program((readme_files / "publish.py").read_text())
    done = run(sys.executable, "publish.py", cwd=readme_files)
    assert done.returncode == 0, done.stderr
    # print(event.id, event.timestamp, event.trace_id)
    printed = done.stdout.split()
    event_id, trace_id = printed[0], printed[-1]
    uuid.UUID(event_id)
    [event] = [
        record
        for record in events_on(tapservice_topic, readme_files)
        if record["value"]["id"] == event_id
    ]
    assert event["event"] == "query_completed"
    assert event["value"]["username"] == "alice"
    assert event["value"]["rows"] == 42
    assert trace_id == "None"  # no span around it: no trace


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def test_service_py_serves_as_written(
    readme_files: Path, tapservice_topic: str
) -> None:
    port = free_port()
    server = subprocess.Popen(
        [
            *(sys.executable, "-m", "uvicorn", "service:app"),
            *("--host", "127.0.0.1", "--port", str(port)),
        ],
        cwd=readme_files,
        env={**os.environ, "METRICS_APPLICATION": "tapservice"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, server.communicate()[0]
            try:
                httpx.get(f"{base}/docs", timeout=1)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "the service did not start"
                time.sleep(0.1)
        answer = httpx.post(f"{base}/queries/carol", timeout=30)
    finally:
        # Ctrl-C: the lifespan closes the manager, delivering the event.
        server.send_signal(signal.SIGINT)
        output = server.communicate(timeout=60)[0]
    assert answer.status_code == 200, answer.text
    assert server.returncode == 0, output
    assert "Traceback" not in output, output
    event_id = answer.json()["event_id"]
    [event] = [
        record
        for record in events_on(tapservice_topic, readme_files)
        if record["value"]["id"] == event_id
    ]
    assert event["value"]["username"] == "carol"


def test_tapservice_events_py_with_schema_and_check(
    readme_files: Path, tapservice_topic: str
) -> None:
    # The README's commands, in the service's environment.
    os.environ["METRICS_APPLICATION"] = "tapservice"
    cli = (sys.executable, "-m", "otel_kafka_events")
    schema = run(*cli, "schema", "tapservice_events:QueryCompleted", cwd=readme_files)
    assert schema.returncode == 0, schema.stderr
    # The subject on stderr, the schema (data) on stdout.
    assert schema.stderr == f"Subject: {tapservice_topic}.query_completed\n"
    assert json.loads(schema.stdout)["namespace"] == tapservice_topic
    check = run(*cli, "check", "tapservice_events:EVENTS", cwd=readme_files)
    assert check.returncode == 0, check.stderr
    assert "The event schema can be registered." in check.stdout + check.stderr


# -- What scripts/readme_walkthrough.py runs from a fresh clone ---------------------


def load_walkthrough() -> Any:
    path = README.parent / "scripts" / "readme_walkthrough.py"
    spec = importlib.util.spec_from_file_location("readme_walkthrough", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_walkthrough_finds_every_step_it_runs() -> None:
    # The slow walkthrough runs in CI (.ci/run); this catches a README edit
    # that would leave it nothing to run, in seconds.
    walkthrough = load_walkthrough()
    readme = blocks(README)
    first_block = next(block.text for block in readme if block.language == "bash")
    assert walkthrough.commands(first_block) == [
        'python3 -m venv .venv && .venv/bin/pip install -q -e ".[examples]"'
        " && .venv/bin/otel-kafka-events demo",
        "bash scripts/test",
    ]
    assert [
        block
        for block in readme
        if block.language == "bash" and "mkdocs build" in block.text
    ]
    terminal = terminals(readme)
    assert sorted(terminal) == [1, 2, 3]
    assert "otel-kafka-events stack" in terminal[1]
    assert "--env-file .env.local" in terminal[1]
    assert "uvicorn" in terminal[2]
    assert walkthrough.commands(terminal[3])[1:] == [
        "python publish.py",
        "curl -X POST localhost:8000/checkout -H 'content-type: application/json' \\",
        """     -d '{"items": 2, "total": "19.90"}'""",
        "otel-kafka-events tail lsst.square.metrics.events.tapservice",
        "otel-kafka-events tail lsst.square.metrics.events.shop",
    ]
    quickstart = [
        block.text for block in blocks(README.parent / "docs" / "quickstart.md")
    ]
    assert any(walkthrough.EXAMPLE_GIT_URL.search(text) for text in quickstart)
    assert any('pip install ".[testing]"' in text for text in quickstart)


def test_the_stacks_env_file_is_ignored_by_git() -> None:
    # `otel-kafka-events stack --env-file .env.local` writes it in a clone.
    root = README.parent
    if not (root / ".git").exists():
        pytest.skip("not a git checkout")
    ignored = subprocess.run(["git", "check-ignore", "-q", ".env.local"], cwd=root)
    assert ignored.returncode == 0


def requirements_of(extras: set[str]) -> set[str]:
    """The distributions the package's ``extras`` install, through extras
    that name other extras of the package."""
    project = tomllib.loads((README.parent / "pyproject.toml").read_text())["project"]
    optional = project["optional-dependencies"]
    found: set[str] = set()
    pending = list(extras)
    while pending:
        for requirement in optional[pending.pop()]:
            name = re.split(r"[\s\[<>=!~;@]", requirement, maxsplit=1)[0]
            nested = re.match(r"otel-kafka-events\[(.*)\]", requirement)
            if nested:
                pending.extend(nested[1].split(","))
            else:
                found.add(name)
    return found


def test_the_quick_start_installs_what_the_examples_use() -> None:
    # uvicorn runs the example service; fastapi and the OTel SDK are what
    # examples/fastapi_service.py and service.py import.
    first_block = next(
        block.text for block in blocks(README) if block.language == "bash"
    )
    [extras] = re.findall(r'pip install -q -e "\.\[([\w,-]+)\]"', first_block)
    installed = requirements_of(set(extras.split(",")))
    assert {"uvicorn", "fastapi", "opentelemetry-sdk"} <= installed
    assert "otel-kafka-events-devstack" in installed  # the demo and the stack
