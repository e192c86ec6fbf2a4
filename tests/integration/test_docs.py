"""Every Python sample of the documentation site runs, against a local stack.

The samples of a page run in order, in the environment a service gets from
``otel-kafka-events stack --otlp --application shop --application myapp``
(the ``metrics_env`` fixture, `OTLP_ENDPOINT_VAR` pointing at an
`OtlpReceiver`, and the topics of `SAMPLE_TOPICS`).

A sample that is a whole file (first line ``# NAME.py``, see
`markdown_programs`) is run as a reader runs it: saved in a directory of
the page's own, as written, and run with ``python NAME.py`` when it is a
program; an excerpt (``# excerpt of NAME.py``) must repeat that file's
lines. The pages of `PROGRAM_PAGES` have only such samples. Other samples
run in one namespace per page, with top-level ``await``; a page whose
samples define ``test_*`` coroutine functions has them called afterwards
with the pytest fixtures they name, as pytest would. Pages that start a
peer (Apicurio Registry, the Collector) need it installed, as the peers'
own tests do.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import inspect
import os
import re
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from otel_kafka_events_devstack import LocalKafkaStack, OtlpReceiver
from otel_kafka_events_devstack._apicurio import (
    APICURIO_VERSION,
    _cached,
    apicurio_cache_dir,
    find_apicurio_java,
)

from ..markdown_programs import Block, blocks, excerpt_problem, is_program
from ..peer_support import missing_peer, require_collector
from ..public_api import ROOT, public_names, public_paths

PROJECT = Path(__file__).resolve().parents[2]
DOCS = PROJECT / "docs"

# Pages whose every sample is a whole program (or an excerpt of one).
PROGRAM_PAGES = ("quickstart.md", "configuration.md", "production.md")

OTLP_ENDPOINT_VAR = "OTEL_EXPORTER_OTLP_ENDPOINT"

# The fixed topics the samples publish to, as `otel-kafka-events stack
# --application shop --application myapp` would create them.
SAMPLE_TOPICS = ("lsst.square.metrics.events.shop", "lsst.square.metrics.events.myapp")


def samples() -> dict[str, list[Block]]:
    """The Python samples of every page, by its path under docs/."""
    return {
        page.relative_to(DOCS).as_posix(): [
            block for block in blocks(page) if block.language == "python"
        ]
        for page in sorted(DOCS.rglob("*.md"))
    }


def require_apicurio() -> None:
    """Skip (fail under CI) unless Apicurio Registry can start here."""
    try:
        find_apicurio_java()
    except RuntimeError as error:
        missing_peer(str(error))
    if _cached(apicurio_cache_dir(), APICURIO_VERSION) is None and not shutil.which(
        "mvn"
    ):
        missing_peer("Apicurio Registry is not fetched and there is no mvn")


def _check_otel_page(receiver: OtlpReceiver) -> None:
    """The log record of the Options sample reached the OTLP endpoint."""
    [record] = [
        log
        for log in receiver.wait_for_logs(1)
        if log.event_name == "lsst.square.metrics.events.shop.payment_failed"
    ]
    assert record.severity_text == "WARN"
    assert record.attributes["reason"] == "card declined"
    assert len(record.trace_id) == 32


# What a page needs before it runs, and what must hold after it ran.
REQUIREMENTS: dict[str, list[Callable[[], None]]] = {
    "contributing/testing.md": [require_apicurio, require_collector],
}
AFTERWARDS: dict[str, Callable[[OtlpReceiver], None]] = {
    "opentelemetry.md": _check_otel_page,
}


def test_samples_are_found() -> None:
    # Pages known to have samples, so that a broken pattern cannot make the
    # parametrized test below run nothing.
    found = {page: len(found) for page, found in samples().items()}
    for page in (
        "concepts.md",
        "opentelemetry.md",
        "schemas.md",
        "testing-your-service.md",
        "contributing/testing.md",
    ):
        assert found[page] > 0, page
    for page in PROGRAM_PAGES:
        assert found[page] > 0, page


@pytest.mark.parametrize("page", PROGRAM_PAGES)
def test_samples_are_programs_a_reader_can_run(page: str) -> None:
    for block in samples()[page]:
        assert block.file_name or block.excerpt_of, (
            f"{page}: a sample is neither a file (# NAME.py) nor an excerpt"
            f" (# excerpt of NAME.py): {block.first_line!r}"
        )


def run_file_sample(
    block: Block, directory: Path, files: dict[str, str], where: str
) -> None:
    """Save a whole-file sample as a reader would; run it if it is a
    program. An excerpt must repeat its file's lines."""
    if block.excerpt_of is not None:
        problem = excerpt_problem(block, files)
        assert problem is None, f"{where}: {problem}"
        return
    assert block.file_name is not None
    files[block.file_name] = block.text
    (directory / block.file_name).write_text(block.text)
    compile(block.text, where, "exec", dont_inherit=True)
    if is_program(block.text):
        done = subprocess.run(
            [sys.executable, block.file_name],
            cwd=directory,
            env=dict(os.environ),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, f"{where}: {done.stdout}\n{done.stderr}"


@pytest.fixture
def otlp_receiver(monkeypatch: pytest.MonkeyPatch) -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as receiver:
        monkeypatch.setenv(OTLP_ENDPOINT_VAR, receiver.endpoint)
        yield receiver


@pytest.fixture
async def sample_topics(
    local_kafka_stack: LocalKafkaStack,
) -> AsyncIterator[tuple[str, ...]]:
    for topic in SAMPLE_TOPICS:
        await local_kafka_stack.create_topic(topic, partitions=1)
    yield SAMPLE_TOPICS
    for topic in SAMPLE_TOPICS:
        with contextlib.suppress(Exception):
            await local_kafka_stack.delete_topic(topic)


_PAGES = [page for page, found in samples().items() if found]


@pytest.mark.parametrize("page", _PAGES)
async def test_page_samples_run(
    page: str,
    request: pytest.FixtureRequest,
    metrics_env: dict[str, str],
    otlp_receiver: OtlpReceiver,
    sample_topics: tuple[str, ...],
    tmp_path: Path,
) -> None:
    for requirement in REQUIREMENTS.get(page, []):
        requirement()
    namespace: dict[str, Any] = {"__name__": "docs_" + re.sub(r"\W", "_", page[:-3])}
    page_samples = samples()[page]
    files: dict[str, str] = {}
    ran = 0
    try:
        for index, block in enumerate(page_samples):
            if block.file_name or block.excerpt_of:
                await asyncio.to_thread(
                    run_file_sample, block, tmp_path, files, f"{page}[{index}]"
                )
                ran += 1
                continue
            # dont_inherit: this module's postponed annotations must not
            # leak into the samples (pydantic would see strings).
            compiled = compile(
                block.text,
                f"{page}[{index}]",
                "exec",
                flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT,
                dont_inherit=True,
            )
            result = eval(compiled, namespace)
            if result is not None:
                await result
            ran += 1
        for name, function in list(namespace.items()):
            if name.startswith("test_") and inspect.iscoroutinefunction(function):
                fixtures = {
                    argument: request.getfixturevalue(argument)
                    for argument in inspect.signature(function).parameters
                }
                await asyncio.wait_for(function(**fixtures), timeout=60)
    finally:
        structlog.reset_defaults()
    assert ran == len(page_samples)
    check = AFTERWARDS.get(page)
    if check is not None:
        check(otlp_receiver)


def test_every_public_name_is_in_the_built_api_reference(tmp_path: Path) -> None:
    # What mkdocstrings really renders: a name it finds no docstring for, or
    # that a filter hides, has no anchor on the page.
    site = tmp_path / "site"
    command = ["mkdocs", "build", "--strict", "--quiet", "--site-dir", str(site)]
    built = subprocess.run(
        [sys.executable, "-m", *command],
        cwd=PROJECT,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert built.returncode == 0, built.stderr
    page = (site / "api" / "index.html").read_text()
    anchors = set(re.findall(rf'id="({ROOT}[\w.]*)"', page))
    missing = [
        f"{m}.{n}" for m, n in public_names() if not public_paths(m, n) & anchors
    ]
    assert missing == []
