"""``otel-kafka-events stack`` in a subprocess, and a service run against it.

One stack process serves the module, as it would serve a developer: the
README's publishing snippet and ``examples/fastapi_service.py`` (under
uvicorn, from the repository root) run against the environment it prints,
``tail`` finds their events, and Ctrl-C stops every process it started.
Each test after the first needs the stack the first one checked, so the
module's tests run in file order.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from ..broker_support import BROKER_KIND, capabilities, only_in_leg

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
APPLICATIONS = ("tapservice", "shop")
TOPIC_PREFIX = "lsst.square.metrics.events"


@dataclass
class StackProcess:
    """The running ``stack`` command and what it printed."""

    process: subprocess.Popen[str]
    env_file: Path
    stdout: Path
    stderr: Path
    environment: dict[str, str]

    def service_env(self, **extra: str) -> dict[str, str]:
        """This process's environment plus the stack's lines."""
        base = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("KAFKA_", "SCHEMA_MANAGER_", "METRICS_", "OTEL_"))
        }
        return {**base, **self.environment, **extra}


def _children(pid: int) -> list[int]:
    """Child process ids of ``pid``, from every one of its threads."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        found.extend(int(child) for child in text)
    return found


def _alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status


@pytest.fixture(scope="module")
def stack_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackProcess]:
    directory = tmp_path_factory.mktemp("stack")
    env_file = directory / "stack.env"
    stdout, stderr = directory / "stdout", directory / "stderr"
    command = [sys.executable, "-m", "otel_kafka_events", "stack", "--otlp"]
    command += ["--broker", BROKER_KIND, "--env-file", str(env_file)]
    for application in APPLICATIONS:
        command += ["--application", application]
    environment = {
        k: v for k, v in os.environ.items() if not k.startswith(("METRICS_", "KAFKA_"))
    }
    with stdout.open("w") as out, stderr.open("w") as err:
        process = subprocess.Popen(
            command, stdout=out, stderr=err, text=True, env=environment, cwd=ROOT
        )
    try:
        deadline = time.monotonic() + 180
        while not env_file.exists():
            assert process.poll() is None, stderr.read_text()
            assert time.monotonic() < deadline, "stack did not start in 180 s"
            time.sleep(0.1)
        lines = env_file.read_text().splitlines()
        printed = dict(line.split("=", 1) for line in lines)
        yield StackProcess(process, env_file, stdout, stderr, printed)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def run_cli(stack: StackProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "otel_kafka_events", *args],
        env=stack.service_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_stack_prints_the_environment_a_service_needs(
    stack_process: StackProcess,
) -> None:
    printed = stack_process.environment
    assert re.fullmatch(r"127\.0\.0\.1:\d+", printed["KAFKA_BOOTSTRAP_SERVERS"])
    assert re.fullmatch(
        r"http://127\.0\.0\.1:\d+", printed["SCHEMA_MANAGER_REGISTRY_URL"]
    )
    assert re.fullmatch(
        r"http://127\.0\.0\.1:\d+", printed["OTEL_EXPORTER_OTLP_ENDPOINT"]
    )
    if capabilities().idempotent_producer:
        assert "METRICS_ENABLE_IDEMPOTENCE" not in printed
    else:
        assert printed["METRICS_ENABLE_IDEMPOTENCE"] == "false"
    # Two applications: no single METRICS_APPLICATION to print.
    assert "METRICS_APPLICATION" not in printed
    # stdout has the same lines as the file, so `... > .env` works too.
    assert stack_process.stdout.read_text().splitlines() == [
        f"{k}={v}" for k, v in printed.items()
    ]
    log = stack_process.stderr.read_text()
    for application in APPLICATIONS:
        assert f"Topic {TOPIC_PREFIX}.{application}" in log
    # The topics exist (and are empty): tail finds them.
    for application in APPLICATIONS:
        tail = run_cli(stack_process, "tail", f"{TOPIC_PREFIX}.{application}")
        assert tail.returncode == 0, tail.stderr
        assert "0 records shown" in tail.stderr


def readme_publishing_snippet() -> str:
    """The first Python block under "## Publishing events" in the README."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Publishing events", 1)[1]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


def test_readme_publishing_snippet_runs_against_the_stack(
    stack_process: StackProcess,
) -> None:
    snippet = readme_publishing_snippet()
    assert snippet.startswith("# publish.py")
    # A complete program, run as `python publish.py` runs it.
    completed = subprocess.run(
        [sys.executable, "-"],
        input=snippet,
        env=stack_process.service_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr
    event_id = completed.stdout.split()[0]
    uuid.UUID(event_id)
    tail = run_cli(
        stack_process,
        "tail",
        f"{TOPIC_PREFIX}.tapservice",
        "--event",
        "query_completed",
    )
    assert tail.returncode == 0, tail.stderr
    [record] = [json.loads(line) for line in tail.stdout.splitlines()]
    assert record["value"]["id"] == event_id
    assert record["value"]["username"] == "alice"
    assert record["value"]["duration"] == 2.5


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_example_service_runs_against_the_stack(stack_process: StackProcess) -> None:
    port = _free_port()
    # As its docstring says: from the repository root, under uvicorn.
    service = subprocess.Popen(
        [
            *(sys.executable, "-m", "uvicorn", "--app-dir", "examples"),
            *("fastapi_service:app", "--port", str(port), "--host", "127.0.0.1"),
        ],
        cwd=ROOT,
        env=stack_process.service_env(METRICS_APPLICATION="shop"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    trace_id = uuid.uuid4().hex
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            assert service.poll() is None, service.communicate()[0]
            try:
                httpx.get(f"{base}/docs", timeout=1)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "service did not start"
                time.sleep(0.1)
        created = httpx.post(
            f"{base}/checkout",
            json={"items": 2, "total": "19.90"},
            headers={"traceparent": f"00-{trace_id}-{uuid.uuid4().hex[:16]}-01"},
        )
        assert created.status_code == 201, created.text
        assert created.json()["trace_id"] == trace_id
        refused = httpx.post(f"{base}/checkout", json={"items": 1, "total": "1.999"})
        assert refused.status_code == 422, refused.text
        assert "decimal" in refused.text.lower()
    finally:
        # Ctrl-C: the lifespan delivers pending events and flushes telemetry.
        service.send_signal(signal.SIGINT)
        output = service.communicate(timeout=60)[0]
    assert service.returncode == 0, output
    assert "Traceback" not in output, output
    tail = run_cli(
        stack_process, "tail", f"{TOPIC_PREFIX}.shop", "--trace-id", trace_id
    )
    assert tail.returncode == 0, tail.stderr
    [record] = [json.loads(line) for line in tail.stdout.splitlines()]
    assert record["event"] == "checkout_completed"
    assert record["value"]["total"] == "19.90"
    assert record["value"]["order_id"] == created.json()["order_id"]
    # The stack's OTLP receiver got the event's log record, in the same trace.
    deadline = time.monotonic() + 10
    wanted = f"OTLP log  {TOPIC_PREFIX}.shop.checkout_completed trace={trace_id}"
    while wanted not in stack_process.stderr.read_text():
        assert time.monotonic() < deadline, stack_process.stderr.read_text()
        time.sleep(0.2)


def test_ctrl_c_stops_everything_the_stack_started(
    stack_process: StackProcess,
) -> None:
    children = _children(stack_process.process.pid)
    assert children, "the broker should be a child process"
    stack_process.process.send_signal(signal.SIGINT)
    assert stack_process.process.wait(60) == 0, stack_process.stderr.read_text()
    assert not [pid for pid in children if _alive(pid)]
    assert not stack_process.env_file.exists()
    assert "Stopped." in stack_process.stderr.read_text()
    assert "Traceback" not in stack_process.stderr.read_text()


# -- a cluster (the cluster leg) ------------------------------------------------------


def test_nodes_need_the_kafka_broker() -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "otel_kafka_events", "stack", "--nodes", "3"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert completed.returncode == 2
    assert "--nodes 3 needs --broker kafka" in completed.stderr
    assert "Traceback" not in completed.stderr


def _wait_for(path: Path, text: str, process: subprocess.Popen[str]) -> str:
    deadline = time.monotonic() + 120
    while text not in (log := path.read_text()):
        assert process.poll() is None, log
        assert time.monotonic() < deadline, f"{text!r} not in:\n{log}"
        time.sleep(0.1)
    return log


@pytest.mark.cluster
@only_in_leg("cluster")
def test_stack_runs_a_cluster_whose_nodes_can_be_killed_and_started(
    tmp_path: Path,
) -> None:
    env_file, stderr = tmp_path / "stack.env", tmp_path / "stderr"
    command = [sys.executable, "-m", "otel_kafka_events", "stack", "--broker"]
    command += ["kafka", "--nodes", "3", "--application", "shop"]
    command += ["--partitions", "3", "--env-file", str(env_file)]
    environment = {
        k: v for k, v in os.environ.items() if not k.startswith(("METRICS_", "KAFKA_"))
    }
    with stderr.open("w") as err:
        process = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=err,
            text=True,
            env=environment,
            cwd=ROOT,
        )
    assert process.stdin is not None
    children: list[int] = []

    def type_line(line: str) -> None:
        assert process.stdin is not None
        process.stdin.write(f"{line}\n")
        process.stdin.flush()

    try:
        log = _wait_for(stderr, "Commands: kill N", process)
        printed = dict(line.split("=", 1) for line in env_file.read_text().splitlines())
        servers = printed["KAFKA_BOOTSTRAP_SERVERS"].split(",")
        assert len(servers) == 3
        for node_id, address in enumerate(servers, start=1):
            assert f"Node {node_id} at {address}: running, pid" in log
        assert "Topics have 3 replicas; a write needs 2 in sync." in log
        assert re.search(r"partition 2: leader \d, in sync \[\d, \d, \d\]", log)

        type_line("kill 1")
        _wait_for(stderr, "Node 1: kill done.", process)
        type_line("nodes")
        _wait_for(stderr, f"Node 1 at {servers[0]}: down", process)
        type_line("start 1")
        _wait_for(stderr, "Node 1: start done.", process)
        children = _children(process.pid)
        assert len(children) == 3, "one JVM per node"
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    assert process.returncode == 0, stderr.read_text()
    assert not [pid for pid in children if _alive(pid)]
    assert "Stopped." in stderr.read_text()
    assert "Traceback" not in stderr.read_text()
