"""Apicurio Registry: a Confluent-compatible schema registry we did not write.

`LocalSchemaRegistry` is our own reading of the Confluent REST API; a
misreading shared by it and the library would pass every test. Apicurio
Registry, an independent implementation with a Confluent compatibility API,
judges the same tests. Its ready-made Quarkus distribution is fetched from
Maven Central once (`resolve_apicurio`) into a cache outside the source tree
and run with a Java 21+ runtime found on the machine (`find_java_at_least`).

Fetch it ahead of the tests (as ``.ci/run`` does) with::

    python -m otel_kafka_events_devstack._apicurio fetch
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tarfile
import time
from collections.abc import Sequence
from pathlib import Path

from otel_kafka_events.testing._schema_store import COMPATIBILITY_LEVELS

from ._java import JavaRuntime, describe_java_search, find_java_at_least
from ._maven import DEPENDENCY_PLUGIN, locked, output_tail, run_maven
from ._process import find_free_port
from ._server_process import ServerProcess

__all__ = [
    "APICURIO_JAVA_RELEASE",
    "APICURIO_VERSION",
    "CCOMPAT_PATH",
    "ApicurioRegistry",
    "apicurio_cache_dir",
    "resolve_apicurio",
]

APICURIO_VERSION = "3.3.3"
"""The Apicurio Registry release the tests run against."""

APICURIO_JAVA_RELEASE = 21
"""The oldest Java feature release Apicurio Registry 3 runs on."""

CCOMPAT_PATH = "/apis/ccompat/v7"
"""Where Apicurio Registry 3 serves the Confluent Schema Registry API."""

CACHE_ENV_VAR = "OTEL_KAFKA_EVENTS_APICURIO_CACHE"
"""Environment variable naming the folder that holds ``apicurio-<version>/``."""

_ARTIFACT = "io.apicurio:apicurio-registry-app:{version}:tar.gz:all"
_MARKER = "complete.json"
# A short-lived test server: C1 only and the serial collector start fastest.
_JVM_FLAGS = (
    "-Xmx512m",
    "-XX:+UseSerialGC",
    "-XX:TieredStopAtLevel=1",
    "-XX:-UsePerfData",
    "-XX:+ExitOnOutOfMemoryError",
    "-Djava.net.preferIPv4Stack=true",
)


def apicurio_cache_dir(version: str = APICURIO_VERSION) -> Path:
    """Return the folder that caches the unpacked Apicurio ``version``.

    ``$OTEL_KAFKA_EVENTS_APICURIO_CACHE/apicurio-<version>`` when that
    variable is set, else ``$XDG_CACHE_HOME/otel-kafka-events/...`` (by
    default under ``~/.cache``): nothing downloaded lands in a source tree.
    """
    base = os.environ.get(CACHE_ENV_VAR)
    if base:
        return Path(base).expanduser() / f"apicurio-{version}"
    xdg = os.environ.get("XDG_CACHE_HOME")
    root = Path(xdg) if xdg else Path.home() / ".cache"
    return root / "otel-kafka-events" / f"apicurio-{version}"


def _cached(cache_dir: Path, version: str) -> Path | None:
    """The ``quarkus-run.jar`` of a complete earlier unpacking, if any."""
    try:
        marker = json.loads((cache_dir / _MARKER).read_text())
    except (OSError, ValueError):
        return None
    jar = cache_dir / "app" / "quarkus-run.jar"
    if marker.get("version") != version or not jar.is_file():
        return None
    return jar


def resolve_apicurio(
    version: str = APICURIO_VERSION, cache_dir: Path | None = None
) -> Path:
    """Return Apicurio's ``quarkus-run.jar``, fetching and unpacking if needed.

    Maven copies the ``all`` distribution (a tarball of about 160 MB) from
    Maven Central, through the local Maven repository, into ``cache_dir``;
    it is unpacked into ``cache_dir/app`` and the tarball deleted. A marker
    written last makes later calls return at once.

    Raises
    ------
    RuntimeError
        If ``mvn`` is missing or fails; the message ends with Maven's output.
    """
    cache_dir = (cache_dir or apicurio_cache_dir(version)).expanduser().resolve()
    jar = _cached(cache_dir, version)
    if jar is not None:
        return jar
    mvn = shutil.which("mvn")
    if mvn is None:
        raise RuntimeError(
            f"Apicurio Registry {version} is not cached in {cache_dir} and Maven "
            "('mvn') is not on PATH to fetch it"
        )
    cache_dir.mkdir(parents=True, exist_ok=True)
    with locked(cache_dir / ".lock"):
        jar = _cached(cache_dir, version)
        if jar is not None:
            return jar
        (cache_dir / _MARKER).unlink(missing_ok=True)
        shutil.rmtree(cache_dir / "app", ignore_errors=True)
        download = cache_dir / "download"
        shutil.rmtree(download, ignore_errors=True)
        argv = [
            mvn,
            "-q",
            "-B",
            "-Dstyle.color=never",
            f"{DEPENDENCY_PLUGIN}:copy",
            f"-Dartifact={_ARTIFACT.format(version=version)}",
            f"-DoutputDirectory={download}",
        ]
        result = run_maven(argv, cache_dir, f"fetch Apicurio Registry {version}")
        tarballs = sorted(download.glob("*.tar.gz")) if download.is_dir() else []
        if result.returncode != 0 or len(tarballs) != 1:
            raise RuntimeError(
                f"Maven could not fetch Apicurio Registry {version} "
                f"(exit code {result.returncode}; {' '.join(argv)}):\n"
                f"{output_tail(result.stdout)}"
            )
        with tarfile.open(tarballs[0]) as archive:
            archive.extractall(cache_dir / "app", filter="data")
        shutil.rmtree(download, ignore_errors=True)
        jar = cache_dir / "app" / "quarkus-run.jar"
        if not jar.is_file():
            raise RuntimeError(f"the Apicurio Registry {version} tarball has no {jar}")
        (cache_dir / _MARKER).write_text(json.dumps({"version": version}) + "\n")
        return jar


def find_apicurio_java() -> JavaRuntime:
    """The Java runtime that runs Apicurio Registry.

    Raises
    ------
    RuntimeError
        If no Java 21+ is found; the message lists what was found and where.
    """
    java = find_java_at_least(APICURIO_JAVA_RELEASE)
    if java is None:
        raise RuntimeError(
            f"Apicurio Registry {describe_java_search(APICURIO_JAVA_RELEASE)}"
        )
    return java


class ApicurioRegistry(ServerProcess):
    """Apicurio Registry on 127.0.0.1, for tests, with in-memory storage.

    Both of its ports (the API and the management interface, which would
    otherwise listen on every interface) are free ports of 127.0.0.1. Data
    lives in an in-memory database and is gone after `stop`. Starting takes
    5 to 30 s, so a test session starts one and shares it; tests keep apart
    by using subjects of their own.

    Parameters
    ----------
    version
        The Apicurio Registry release to fetch and run.
    global_compatibility
        The global compatibility rule set at start. ``"BACKWARD"`` (the
        default) is what a Confluent registry starts with; ``None`` runs
        Apicurio without a global rule, its own default.
    start_timeout, stop_timeout
        Seconds to wait for readiness, and for exit before ``SIGKILL``.

    Examples
    --------
    >>> with ApicurioRegistry() as registry:  # doctest: +SKIP
    ...     client = AsyncSchemaRegistryClient(url=registry.url)
    """

    name = "apicurio-registry"

    def __init__(
        self,
        *,
        version: str = APICURIO_VERSION,
        global_compatibility: str | None = "BACKWARD",
        start_timeout: float = 180.0,
        stop_timeout: float = 20.0,
    ) -> None:
        if (
            global_compatibility is not None
            and global_compatibility not in COMPATIBILITY_LEVELS
        ):
            raise ValueError(
                f"unknown compatibility level {global_compatibility!r}; expected "
                f"one of {', '.join(COMPATIBILITY_LEVELS)}"
            )
        super().__init__(start_timeout=start_timeout, stop_timeout=stop_timeout)
        self.version = version
        self.global_compatibility = global_compatibility
        self._port = 0
        self._management_port = 0

    @property
    def port(self) -> int:
        """The API port on 127.0.0.1; 0 before the first `start`."""
        return self._port

    @property
    def management_port(self) -> int:
        """The management (health, metrics) port; 0 before `start`."""
        return self._management_port

    @property
    def base_url(self) -> str:
        """The server's root, such as ``http://127.0.0.1:8080``."""
        if self._port == 0:
            raise RuntimeError("ApicurioRegistry has no port until start()")
        return f"http://127.0.0.1:{self._port}"

    @property
    def url(self) -> str:
        """The Confluent-compatible API, as a user sets
        ``SCHEMA_MANAGER_REGISTRY_URL``: ``<base_url>/apis/ccompat/v7``."""
        return self.base_url + CCOMPAT_PATH

    def start(self) -> None:
        """Fetch Apicurio if needed, find Java 21+, start and wait until ready.

        Raises
        ------
        RuntimeError
            If Java 21+ or Maven is missing, or the server does not come up;
            the message says which, and ends with the log's tail.
        """
        # Fail before the first attempt, with the reason, rather than after
        # three attempts that cannot succeed.
        self._java_and_jar()
        super().start()

    # -- ServerProcess ------------------------------------------------------------

    def _java_and_jar(self) -> tuple[JavaRuntime, Path]:
        return find_apicurio_java(), resolve_apicurio(self.version)

    def _choose_ports(self) -> None:
        self._port = find_free_port()
        self._management_port = find_free_port()
        while self._management_port == self._port:
            self._management_port = find_free_port()

    def _command(self, workdir: Path) -> list[str]:
        java, jar = self._java_and_jar()
        properties = {
            "quarkus.http.host": "127.0.0.1",
            "quarkus.http.port": self._port,
            "quarkus.management.host": "127.0.0.1",
            "quarkus.management.port": self._management_port,
        }
        if self.global_compatibility is not None:
            properties["apicurio.rules.global.compatibility"] = (
                self.global_compatibility
            )
        return [
            java.executable,
            *_JVM_FLAGS,
            *(f"-D{key}={value}" for key, value in properties.items()),
            "-jar",
            str(jar),
        ]

    def _environment(self) -> dict[str, str]:
        env = dict(os.environ)
        # Read by the JVM itself and would override the flags given here.
        for name in ("JAVA_TOOL_OPTIONS", "JDK_JAVA_OPTIONS", "_JAVA_OPTIONS"):
            env.pop(name, None)
        return env

    def _is_ready(self, log: str) -> bool:
        # Quarkus logs this once the HTTP server accepts requests.
        return f"Listening on: http://127.0.0.1:{self._port}" in log


# --- Command line ----------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m otel_kafka_events_devstack._apicurio fetch``.

    Resolves the distribution into the cache and prints the cache folder;
    with ``--check-java`` also fails (exit code 2) when no Java 21+ is found.
    """
    parser = argparse.ArgumentParser(
        prog="python -m otel_kafka_events_devstack._apicurio",
        description="Manage the Apicurio Registry used by the tests.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    fetch = commands.add_parser("fetch", help="fetch and unpack it with Maven")
    fetch.add_argument("--version", default=APICURIO_VERSION)
    fetch.add_argument(
        "--check-java", action="store_true", help="also require Java 21+"
    )
    args = parser.parse_args(argv)
    started = time.monotonic()
    try:
        jar = resolve_apicurio(args.version)
    except RuntimeError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(jar.parent.parent, flush=True)
    print(
        f"Apicurio Registry {args.version} ({time.monotonic() - started:.1f} s)",
        file=sys.stderr,
    )
    if args.check_java:
        try:
            java = find_apicurio_java()
        except RuntimeError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        print(f"Java {java.release}: {java.executable}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
