"""Run the README top to bottom, as a reader would, from a fresh clone.

    python3 scripts/readme_walkthrough.py          # CI runs this (.ci/run)
    python3 scripts/readme_walkthrough.py --full   # the second command in full
    python3 scripts/readme_walkthrough.py --keep   # keep the clone afterwards

Every command comes from the README (or, for installing the package
elsewhere, from docs/quickstart.md) and runs as written, in bash, in a
fresh copy of this repository's tracked files (with their uncommitted
changes, as ``git stash create`` records them) and an environment without
this checkout's virtual environment or any ``METRICS_``, ``KAFKA_``,
``SCHEMA_MANAGER_`` or ``OTEL_`` variable:

1. the quick start's first command (venv, install, ``demo``);
2. its second command, ``bash scripts/test``: as written, but with
   ``PYTEST_ADDOPTS`` selecting a few tests (a unit test file, an
   integration test, which still runs on every broker, and a test of the
   cluster leg), since CI runs the full suite itself; ``--full`` runs all
   of it;
3. the documentation site's build command;
4. "Trying it locally": ``publish.py`` saved from the README's block, the
   stack in terminal 1, the example service in terminal 2, and terminal 3's
   ``python publish.py``, ``curl`` and ``tail`` lines; it checks that
   ``tail`` read back the event ``publish.py`` printed and the checkout
   ``curl`` got, that the stack's OTLP receiver echoed the checkout's log
   record, that ``.env.local`` was ignored by git, and that Ctrl-C stops
   everything;
5. docs/quickstart.md's two ways to install from the repository, each into
   a venv of its own: the git URL (``git+file://`` of the clone in place of
   the example URL) and ``pip install ".[testing]"`` in the clone.

Exits 0 when every step did what the README says, 1 otherwise; each step
is bounded in time. Only the standard library: it runs before any venv.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.markdown_programs import blocks, python_files, terminals  # noqa: E402

# One test for each leg of scripts/test: a unit test file (first leg), an
# integration test (every broker's leg) and a test of the cluster leg.
SELECTION = (
    "tests/unit/test_config.py"
    " tests/integration/test_config.py::test_manager_from_environment_publishes"
    " tests/devstack/test_kafka_cluster.py::test_a_cluster_needs_a_node"
)
EXAMPLE_GIT_URL = re.compile(r"git\+https://example\.org/\S+?\.git")
SERVICE_PORT = 8000  # uvicorn's default, which the README's curl line uses


class WalkthroughError(Exception):
    """A step did not do what the README says."""


def log(message: str) -> None:
    print(f"[walkthrough {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr)


def reader_environment() -> dict[str, str]:
    """This process's environment, minus what a reader's shell would not
    have: this checkout's venv, the library's variables, the test suite's."""
    environment = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(
            ("METRICS_", "KAFKA_", "SCHEMA_MANAGER_", "OTEL_", "PYTEST_")
        )
        and name not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")
    }
    path = [
        entry
        for entry in environment.get("PATH", "").split(os.pathsep)
        if not entry.endswith(f"{os.sep}.venv{os.sep}bin")
    ]
    environment["PATH"] = os.pathsep.join(path)
    return environment


def fresh_clone(directory: Path) -> None:
    """The tracked files, with their uncommitted changes, in a new repository."""
    stashed = subprocess.run(
        ["git", "stash", "create"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    tree = stashed or "HEAD"
    archive = subprocess.run(
        ["git", "archive", "--format=tar", tree],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(directory)], input=archive, check=True)
    for command in (
        ["git", "init", "-q"],
        ["git", "add", "-A"],
        ["git", "-c", "user.name=walkthrough", "-c", "user.email=walkthrough@localhost",
         "commit", "-q", "-m", "the tree under test"],
    ):  # fmt: skip
        subprocess.run(command, cwd=directory, check=True)


def run_bash(
    script: str,
    cwd: Path,
    environment: dict[str, str],
    timeout: float,
    what: str,
) -> str:
    """Run lines as a reader types them (stopping at the first that fails);
    return what they printed."""
    log(f"{what}: {script.strip().splitlines()[-1][:100]}")
    started = time.monotonic()
    done = subprocess.run(
        ["bash", "-e", "-c", script],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    took = time.monotonic() - started
    log(f"{what}: exit status {done.returncode} after {took:.0f} s")
    if done.returncode != 0:
        raise WalkthroughError(
            f"{what} failed ({done.returncode}):\n{done.stdout[-4000:]}\n"
            f"{done.stderr[-4000:]}"
        )
    return done.stdout + done.stderr


def commands(block: str) -> list[str]:
    """The command lines of a shell block (comments and blank lines aside)."""
    return [
        line
        for line in block.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]


def json_objects(text: str) -> Iterator[dict[str, Any]]:
    """Every JSON object in ``text`` (curl prints no newline after its)."""
    decoder = json.JSONDecoder()
    position = text.find("{")
    while position != -1:
        try:
            found, end = decoder.raw_decode(text, position)
        except ValueError:
            position = text.find("{", position + 1)
            continue
        if isinstance(found, dict):
            yield found
        position = text.find("{", end)


@contextmanager
def background(
    name: str, script: str, cwd: Path, environment: dict[str, str], log_dir: Path
) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    """A terminal running ``script``; Ctrl-C (SIGINT to its process group)
    when done with it."""
    output = log_dir / f"{name}.log"
    with output.open("wb") as sink:
        process = subprocess.Popen(
            ["bash", "-c", script],
            cwd=cwd,
            env=environment,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield process, output
    finally:
        stop(process, name)


def stop(process: subprocess.Popen[bytes], name: str) -> None:
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGINT)
    try:
        process.wait(60)
    except subprocess.TimeoutExpired:
        log(f"{name} did not stop on Ctrl-C within 60 s: killing it")
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def wait_for(
    condition: Callable[[], bool],
    what: str,
    timeout: float,
    process: subprocess.Popen[bytes],
    output: Path,
) -> None:
    """Wait until ``condition`` holds, while ``process`` runs."""
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None:
            raise WalkthroughError(f"{what}: it exited:\n{output.read_text()[-4000:]}")
        if time.monotonic() > deadline:
            raise WalkthroughError(f"{what}: not within {timeout} s")
        time.sleep(0.2)


def port_answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/docs", timeout=1):
            return True
    except OSError:
        return False


def port_is_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def quick_start(clone: Path, environment: dict[str, str], full: bool) -> None:
    readme = blocks(clone / "README.md")
    first, second = commands(next(b.text for b in readme if b.language == "bash"))
    output = run_bash(first, clone, environment, 1200, "quick start, first command")
    if "Demo finished" not in output or "Read back 3 events" not in output:
        raise WalkthroughError(f"the demo did not read its events back:\n{output}")
    tests_environment = dict(environment)
    if not full:
        tests_environment["PYTEST_ADDOPTS"] = SELECTION
    output = run_bash(
        second, clone, tests_environment, 3600, "quick start, second command"
    )
    if " passed" not in output:
        raise WalkthroughError(f"no test ran:\n{output[-4000:]}")
    [docs] = [
        b.text for b in readme if b.language == "bash" and "mkdocs build" in b.text
    ]
    run_bash(docs, clone, environment, 600, "documentation site")
    if not (clone / "site" / "index.html").exists():
        raise WalkthroughError("mkdocs build wrote no site/index.html")


def trying_it_locally(clone: Path, environment: dict[str, str], log_dir: Path) -> None:
    readme = blocks(clone / "README.md")
    (clone / "publish.py").write_text(python_files(readme)["publish.py"])
    terminal = terminals(readme)
    if not port_is_free(SERVICE_PORT):
        raise WalkthroughError(f"port {SERVICE_PORT} is taken: the service needs it")
    env_file = clone / ".env.local"
    with background("terminal-1", terminal[1], clone, environment, log_dir) as (
        stack,
        stack_output,
    ):
        wait_for(env_file.exists, "the stack's .env.local", 300, stack, stack_output)
        log("terminal 1: the stack is up")
        ignored = subprocess.run(["git", "check-ignore", "-q", ".env.local"], cwd=clone)
        if ignored.returncode != 0:
            raise WalkthroughError(".env.local is not ignored by git")
        with background("terminal-2", terminal[2], clone, environment, log_dir) as (
            service,
            service_output,
        ):
            wait_for(
                lambda: port_answers(SERVICE_PORT),
                "the example service",
                120,
                service,
                service_output,
            )
            log("terminal 2: the service answers")
            output = run_bash(terminal[3], clone, environment, 300, "terminal 3")
        stop(service, "terminal 2")
        if service.returncode != 0:
            raise WalkthroughError(f"the service failed:\n{service_output.read_text()}")
        check_terminal_3(output)
        echoed = "OTLP log  lsst.square.metrics.events.shop.checkout_completed"
        wait_for(
            lambda: echoed in stack_output.read_text(),
            "the checkout's log record at the stack's OTLP receiver",
            30,
            stack,
            stack_output,
        )
        stop(stack, "terminal 1")
        if "Stopped." not in stack_output.read_text() or env_file.exists():
            raise WalkthroughError(
                f"the stack did not stop cleanly:\n{stack_output.read_text()[-4000:]}"
            )
    log("terminal 1: stopped, .env.local removed")


def check_terminal_3(output: str) -> None:
    """``tail`` read back what ``publish.py`` printed and ``curl`` got."""
    published = re.search(r"^([0-9a-f-]{36}) ", output, re.M)
    objects = list(json_objects(output))
    checkouts = [o for o in objects if "order_id" in o and "topic" not in o]
    records = [o for o in objects if "topic" in o]
    if published is None or len(checkouts) != 1:
        raise WalkthroughError(f"publish.py or curl printed nothing usable:\n{output}")
    checkout = checkouts[0]
    values = {
        (record["topic"], record["value"].get("id")): record for record in records
    }
    mine = values.get(("lsst.square.metrics.events.tapservice", published[1]))
    theirs = values.get(("lsst.square.metrics.events.shop", checkout["event_id"]))
    if mine is None or theirs is None:
        raise WalkthroughError(f"tail did not read the events back:\n{output}")
    if theirs["value"]["order_id"] != checkout["order_id"]:
        raise WalkthroughError(f"the checkout event is not curl's order:\n{output}")
    log(
        f"terminal 3: read back event {published[1]} and checkout"
        f" {checkout['order_id']} (trace {checkout['trace_id']})"
    )


def installs(clone: Path, environment: dict[str, str], work: Path) -> None:
    """docs/quickstart.md's installs from the repository, each in a new venv."""
    quickstart = [b.text for b in blocks(clone / "docs" / "quickstart.md")]
    [git_url] = [
        line for text in quickstart for line in commands(text) if "git+" in line
    ]
    [local] = [
        line for text in quickstart for line in commands(text) if '".[testing]"' in line
    ]
    variants = {
        "git URL": (EXAMPLE_GIT_URL.sub(f"git+file://{clone}", git_url), work),
        "clone": (local, clone),
    }
    for name, (command, cwd) in variants.items():
        venv = work / f"venv-{name.replace(' ', '-')}"
        # pip before 23.3 refuses git+file:// URLs; git+https ones work.
        script = (
            f"python3 -m venv {venv} && . {venv}/bin/activate"
            f" && python -m pip install -q --upgrade pip && {command}"
            " && otel-kafka-events --version"
            " && python -c 'import otel_kafka_events_devstack, otel_kafka_events'"
        )
        output = run_bash(script, cwd, environment, 900, f"install from the {name}")
        if "otel-kafka-events, version" not in output:
            raise WalkthroughError(f"install from the {name}:\n{output}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--full", action="store_true", help="run every test")
    parser.add_argument("--keep", action="store_true", help="keep the clone")
    arguments = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="readme-walkthrough-"))
    clone = work / "otel-kafka-events"
    clone.mkdir()
    started = time.monotonic()
    try:
        fresh_clone(clone)
        log(f"fresh clone in {clone}")
        environment = reader_environment()
        quick_start(clone, environment, arguments.full)
        trying_it_locally(clone, environment, work)
        installs(clone, environment, work)
    except (WalkthroughError, subprocess.TimeoutExpired) as failure:
        log(f"FAILED after {time.monotonic() - started:.0f} s: {failure}")
        log(f"the clone is kept in {clone}")
        return 1
    log(f"the README works from a fresh clone ({time.monotonic() - started:.0f} s)")
    if arguments.keep:
        log(f"the clone is kept in {clone}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
