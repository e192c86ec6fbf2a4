"""Scenario 6 launcher: a Safir virtual environment and its subprocess.

Safir 15 needs Python >= 3.12, so ``safir_bench.py`` runs in its own virtual
environment, kept in a cache directory outside the tree
(``$XDG_CACHE_HOME/otel-kafka-events/safir-venv``, by default under
``~/.cache``) and created on first use with ``pip install "safir[kafka]"``.
"""

from __future__ import annotations

import asyncio
import glob
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from ._harness import TOPIC_PREFIX, Result, Settings
from ._publish import Target

__all__ = ["SAFIR_REQUIREMENT", "prepare_safir", "safir_result"]

SAFIR_REQUIREMENT = "safir[kafka]>=15.2,<16"
_SCRIPT = Path(__file__).with_name("safir_bench.py")


def venv_dir() -> Path:
    """Where the Safir virtual environment lives."""
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "otel-kafka-events" / "safir-venv"


def _venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def _is_recent_python(executable: str) -> bool:
    try:
        done = subprocess.run(
            [executable, "-c", "import sys; print(sys.version_info >= (3, 12))"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return done.returncode == 0 and done.stdout.strip() == "True"


def find_base_python() -> str | None:
    """A Python >= 3.12 interpreter to create the virtual environment with."""
    candidates = []
    if sys.version_info >= (3, 12):
        candidates.append(sys.executable)
    # Oldest first: the nearest to the main run's interpreter.
    for name in ("python3.12", "python3.13", "python3.14"):
        found = shutil.which(name)
        if found:
            candidates.append(found)
    pyenv = os.environ.get("PYENV_ROOT") or str(Path.home() / ".pyenv")
    candidates += sorted(glob.glob(f"{pyenv}/versions/3.1[2-9]*/bin/python3"))
    for candidate in candidates:
        if _is_recent_python(candidate):
            return candidate
    return None


def _has_safir(python: Path | str) -> bool:
    done = subprocess.run(
        [str(python), "-c", "import safir.metrics, faststream.kafka"],
        capture_output=True,
        timeout=120,
        check=False,
    )
    return done.returncode == 0


def prepare_safir(
    *, explicit: str | None, create: bool, log: bool = True
) -> tuple[str | None, str]:
    """Return ``(python, note)``: the interpreter to run Safir with, or None.

    Parameters
    ----------
    explicit
        An interpreter given on the command line, used as is.
    create
        Create the cached virtual environment if it is missing (not in
        smoke mode).
    """
    if explicit:
        if _has_safir(explicit):
            return explicit, f"Safir from {explicit}"
        return None, f"{explicit} cannot import safir.metrics"
    venv = venv_dir()
    python = _venv_python(venv)
    if python.exists() and _has_safir(python):
        return str(python), f"Safir venv {venv}"
    if not create:
        return None, f"no Safir venv at {venv} (not created in smoke mode)"
    base = find_base_python()
    if base is None:
        return None, "no Python >= 3.12 found for Safir 15"
    if log:
        print(
            f"Creating the Safir venv in {venv} with {base} (one time)...",
            file=sys.stderr,
        )
    try:
        shutil.rmtree(venv, ignore_errors=True)
        venv.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([base, "-m", "venv", str(venv)], check=True, capture_output=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", SAFIR_REQUIREMENT],
            check=True,
            capture_output=True,
            timeout=900,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        detail = getattr(exc, "stderr", b"") or b""
        shutil.rmtree(venv, ignore_errors=True)
        tail = detail.decode(errors="replace").strip().splitlines()[-3:]
        return None, f"installing {SAFIR_REQUIREMENT} failed: {exc} {' '.join(tail)}"
    if not _has_safir(python):
        return None, f"{venv} was created but cannot import safir.metrics"
    return str(python), f"Safir venv {venv} (created)"


def _best(runs: list[dict[str, float]]) -> dict[str, float]:
    return min(runs, key=lambda r: r["total_s"] / r["events"])


async def safir_result(
    target: Target, settings: Settings, python: str | None, note: str
) -> Result:
    """Run ``safir_bench.py`` in the Safir venv; a skipped row if impossible."""
    title = "safir.metrics publish() (own raw baseline)"
    if python is None:
        return Result(id="6", title=title, kind="throughput", skipped=note)
    application = target.new_application("safir")
    topic = f"{TOPIC_PREFIX}.{application}"
    raw_topic = f"{TOPIC_PREFIX}.{target.new_application('safirraw')}"
    await target.create_topic(topic)
    await target.create_topic(raw_topic)
    command = [
        python,
        str(_SCRIPT),
        "--bootstrap-servers",
        target.bootstrap_servers,
        "--registry-url",
        target.registry_url,
        "--topic-prefix",
        TOPIC_PREFIX,
        "--application",
        application,
        "--raw-topic",
        raw_topic,
        "--events",
        str(settings.events),
        "--repeats",
        str(settings.repeats),
        "--warmup",
        str(settings.warmup),
    ]
    try:
        process = await asyncio.create_subprocess_exec(
            *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        try:
            stdout, stderr = await asyncio.wait_for(process.communicate(), 900)
        except TimeoutError:
            process.kill()
            await process.wait()
            return Result(
                id="6", title=title, kind="throughput", skipped="Safir run timed out"
            )
    finally:
        await target.delete_topic(topic)
        await target.delete_topic(raw_topic)
    lines = stdout.decode().strip().splitlines()
    if process.returncode != 0 or not lines:
        tail = " | ".join(stderr.decode(errors="replace").strip().splitlines()[-5:])
        return Result(
            id="6",
            title=title,
            kind="throughput",
            skipped=f"Safir run failed ({process.returncode}): {tail}",
        )
    data = json.loads(lines[-1])
    safir = _best(data["safir_runs"])
    raw = _best(data["raw_runs"])
    versions = data["versions"]
    return Result(
        id="6",
        title=title,
        kind="throughput",
        events=int(safir["events"]),
        value=safir["rate"],
        baseline_id="6-raw",
        baseline_value=raw["rate"],
        ratio=safir["rate"] / raw["rate"],
        detail=(
            f"enqueue {safir['enqueue_rate']:,.0f}/s; Python {data['python']},"
            f" safir {versions['safir']}, faststream {versions['faststream']}"
        ),
        runs=data["safir_runs"],
        extra={**data, "note": note},
    )
