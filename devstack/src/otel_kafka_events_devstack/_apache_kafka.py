"""A real Apache Kafka 4.x broker (KRaft, one combined node) for tests.

Kafka's jars are not shipped with this package: `resolve_kafka_classpath`
fetches them once from Maven Central with ``mvn`` into a cache folder outside
the source tree, and `ApacheKafkaBroker` runs ``kafka.Kafka`` from them with
the local ``java``. It is the reference broker: slower to start than the
single-binary ones, but with every feature the library's tests may need
(idempotent producer, consumer groups, message size limits, SASL/SCRAM, TLS).

Fetch the jars ahead of the tests (as ``.ci/run`` does) with::

    python -m otel_kafka_events_devstack._apache_kafka fetch
"""

from __future__ import annotations

import argparse
import base64
import datetime
import hashlib
import ipaddress
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path

from ._broker_base import BrokerCapabilities, SubprocessBroker
from ._maven import DEPENDENCY_PLUGIN, locked, output_tail, run_maven
from ._process import find_free_port
from ._tcp_proxy import DelayedFront

__all__ = [
    "KAFKA_VERSION",
    "PLAIN_MECHANISM",
    "SCRAM_MECHANISM",
    "ApacheKafkaBroker",
    "find_java",
    "kafka_cache_dir",
    "resolve_kafka_classpath",
]

KAFKA_VERSION = "4.4.0"
"""The Kafka release the tests run against: the newest 4.x on Maven Central
when this was written (4.0.0 to 4.4.0 all resolve)."""

SCRAM_MECHANISM = "SCRAM-SHA-512"
"""A SASL mechanism of the broker's ``SASL_PLAINTEXT`` and ``SASL_SSL``
listeners; its credentials are stored when the storage is formatted."""

PLAIN_MECHANISM = "PLAIN"
"""The other SASL mechanism of those listeners, for the same users."""

CACHE_ENV_VAR = "OTEL_KAFKA_EVENTS_KAFKA_CACHE"
"""Environment variable naming the folder that holds ``kafka-<version>/``."""

_SCALA_VERSION = "2.13"
# Kafka logs through SLF4J 1.7 but ships no binding as a dependency; the one
# for Log4j 2, which Kafka 4 configures, makes -Dlog4j2.configurationFile work.
# It also brings log4j-api and log4j-core, which not every 4.x declares at
# runtime; where Kafka does, its own version wins (declared first in the pom).
_LOG4J_SLF4J_BINDING = "org.apache.logging.log4j:log4j-slf4j-impl:2.25.5"
_MARKER = "complete.json"

# Startup is dominated by class loading and JIT on a small machine: C1 only
# and the serial collector start fastest, and a test broker never runs long
# enough to profit from C2 or a parallel GC.
_JVM_FLAGS = (
    "-XX:+UseSerialGC",
    "-XX:TieredStopAtLevel=1",
    "-Xshare:auto",
    "-XX:-UsePerfData",
    "-XX:+ExitOnOutOfMemoryError",
    "-Djava.net.preferIPv4Stack=true",
    "-Djava.awt.headless=true",
    # Dumping the class archive warns about every class it skips.
    "-Xlog:cds=error,cds+dynamic=error",
)
_DEFAULT_HEAP = ("-Xmx512m", "-Xms256m")

# Root at WARN keeps the log short; the few INFO loggers kept say when the
# node is up (the readiness marker) and why it stopped. Without Log4j's own
# shutdown hook, Kafka's shutdown messages still reach the log (the console
# appender flushes every line).
_LOG4J2_CONFIG = """\
<?xml version="1.0" encoding="UTF-8"?>
<Configuration status="WARN" shutdownHook="disable">
  <Appenders>
    <Console name="stdout" target="SYSTEM_OUT">
      <PatternLayout pattern="[%d{HH:mm:ss.SSS}] %-5p %m (%c)%n"/>
    </Console>
  </Appenders>
  <Loggers>
    <Root level="WARN"><AppenderRef ref="stdout"/></Root>
    <Logger name="kafka.server.KafkaRaftServer" level="INFO"/>
    <Logger name="kafka.server.BrokerServer" level="INFO"/>
    <Logger name="kafka.server.ControllerServer" level="INFO"/>
    <Logger name="kafka.Kafka" level="INFO"/>
  </Loggers>
</Configuration>
"""


# --- Resolving the jars ------------------------------------------------------


def kafka_cache_dir(version: str = KAFKA_VERSION) -> Path:
    """Return the folder that caches the jars of Kafka ``version``.

    ``$OTEL_KAFKA_EVENTS_KAFKA_CACHE/kafka-<version>`` when that variable is
    set, else ``$XDG_CACHE_HOME/otel-kafka-events/kafka-<version>`` (by default
    under ``~/.cache``), so that nothing downloaded lands in a source tree.
    """
    base = os.environ.get(CACHE_ENV_VAR)
    if base:
        return Path(base).expanduser() / f"kafka-{version}"
    xdg = os.environ.get("XDG_CACHE_HOME")
    root = Path(xdg) if xdg else Path.home() / ".cache"
    return root / "otel-kafka-events" / f"kafka-{version}"


def _pom_xml(version: str) -> str:
    """A throwaway project whose runtime dependencies are Kafka's server."""
    binding_group, binding_artifact, binding_version = _LOG4J_SLF4J_BINDING.split(":")
    # The text's hash keys the shared jar cache: any change to it, this
    # comment included (it names the module's first home), makes every
    # checkout on the machine with the older text delete and fetch the jars
    # again, under the other's running brokers.
    return f"""\
<?xml version="1.0" encoding="UTF-8"?>
<!-- Generated by otel_kafka_events.testing._apache_kafka; safe to delete. -->
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>otel-kafka-events.cache</groupId>
  <artifactId>kafka-server-classpath</artifactId>
  <version>{version}</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_{_SCALA_VERSION}</artifactId>
      <version>{version}</version>
    </dependency>
    <dependency>
      <groupId>{binding_group}</groupId>
      <artifactId>{binding_artifact}</artifactId>
      <version>{binding_version}</version>
    </dependency>
  </dependencies>
</project>
"""


def _cached_classpath(cache_dir: Path, pom: str) -> list[Path] | None:
    """The jars of a complete earlier resolution of the same pom, if any."""
    try:
        marker = json.loads((cache_dir / _MARKER).read_text())
    except (OSError, ValueError):
        return None
    if marker.get("pom_sha256") != hashlib.sha256(pom.encode()).hexdigest():
        return None
    jars = [cache_dir / "lib" / name for name in marker.get("jars", [])]
    if not jars or not all(jar.is_file() for jar in jars):
        return None
    return jars


def resolve_kafka_classpath(
    version: str = KAFKA_VERSION, cache_dir: Path | None = None
) -> list[Path]:
    """Return the jars that run a Kafka ``version`` broker, fetching if needed.

    Writes a generated ``pom.xml`` into ``cache_dir`` and has Maven copy the
    runtime dependencies of ``org.apache.kafka:kafka_2.13`` (the server, the
    storage tool, their libraries) plus an SLF4J binding for Log4j 2 into
    ``cache_dir/lib``. A marker file written after success makes later calls
    return at once without running Maven.

    Parameters
    ----------
    version
        The Kafka release, e.g. ``"4.4.0"``.
    cache_dir
        Where to keep the jars; `kafka_cache_dir` by default.

    Returns
    -------
    list of Path
        The jars, sorted by file name: a deterministic class path.

    Raises
    ------
    RuntimeError
        If ``mvn`` is missing or fails; the message ends with the tail of
        Maven's output.
    """
    cache_dir = (cache_dir or kafka_cache_dir(version)).expanduser().resolve()
    pom = _pom_xml(version)
    jars = _cached_classpath(cache_dir, pom)
    if jars is not None:
        return jars
    mvn = shutil.which("mvn")
    if mvn is None:
        raise RuntimeError(
            "Apache Kafka's jars are not cached in "
            f"{cache_dir} and Maven ('mvn') is not on PATH to fetch them"
        )
    cache_dir.mkdir(parents=True, exist_ok=True)
    with locked(cache_dir / ".lock"):
        # Another process may have finished while this one waited.
        jars = _cached_classpath(cache_dir, pom)
        if jars is not None:
            return jars
        (cache_dir / _MARKER).unlink(missing_ok=True)
        lib = cache_dir / "lib"
        # Jars of an interrupted or older resolution would join the class
        # path; class archives made for them are useless from now on.
        shutil.rmtree(lib, ignore_errors=True)
        for archive in cache_dir.glob("classes-*.jsa*"):
            archive.unlink(missing_ok=True)
        (cache_dir / "pom.xml").write_text(pom)
        argv = [
            mvn,
            "-q",
            "-B",
            "-Dstyle.color=never",
            "-f",
            str(cache_dir / "pom.xml"),
            f"{DEPENDENCY_PLUGIN}:copy-dependencies",
            f"-DoutputDirectory={lib}",
            "-DincludeScope=runtime",
        ]
        result = run_maven(argv, cache_dir, f"resolve Apache Kafka {version}")
        names = sorted(p.name for p in lib.glob("*.jar")) if lib.is_dir() else []
        wanted = f"kafka_{_SCALA_VERSION}-{version}.jar"
        if result.returncode != 0 or wanted not in names:
            raise RuntimeError(
                f"Maven could not resolve Apache Kafka {version} "
                f"(exit code {result.returncode}; {' '.join(argv)}):\n"
                f"{output_tail(result.stdout)}"
            )
        marker = {
            "version": version,
            "pom_sha256": hashlib.sha256(pom.encode()).hexdigest(),
            "jars": names,
        }
        (cache_dir / _MARKER).write_text(json.dumps(marker, indent=2) + "\n")
        return [lib / name for name in names]


def _class_archive_path(java: str, jars: Sequence[Path]) -> Path:
    """Where the AppCDS archive for this JVM and class path lives.

    The JVM refuses (and merely warns about) an archive made by another JDK
    build or for other jars; naming it after both avoids ever offering it
    one, and a stale one would otherwise never be replaced.
    """
    parts = [os.path.realpath(java)]
    for jar in jars:
        # The JVM also checks each jar's size and time stamp.
        stat = jar.stat()
        parts.append(f"{jar}:{stat.st_size}:{stat.st_mtime_ns}")
    key = "\0".join(parts)
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return jars[0].parent.parent / f"classes-{digest}.jsa"


def find_java() -> str | None:
    """Return the ``java`` executable: ``$JAVA_HOME/bin/java``, else ``PATH``."""
    java_home = os.environ.get("JAVA_HOME")
    if java_home:
        candidate = Path(java_home) / "bin" / "java"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return shutil.which("java")


# --- TLS material --------------------------------------------------------------


def _write_tls_files(directory: Path) -> tuple[Path, Path]:
    """Create a CA and a server certificate for ``127.0.0.1``/``localhost``.

    Returns the CA certificate (for clients) and the server's PEM key store:
    its unencrypted PKCS#8 key followed by its certificate chain, the layout
    that Kafka's ``ssl.keystore.type=PEM`` reads from a file.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    # EC keys: generated in microseconds, where RSA takes noticeable time.
    now = datetime.datetime.now(datetime.UTC)
    not_before = now - datetime.timedelta(days=1)
    not_after = now + datetime.timedelta(days=30)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, "otel-kafka-events test CA")]
    )
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.IPv4Address("127.0.0.1")),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )

    pem = serialization.Encoding.PEM
    ca_path = directory / "ca.pem"
    ca_path.write_bytes(ca_cert.public_bytes(pem))
    keystore_path = directory / "server-keystore.pem"
    keystore_path.write_bytes(
        key.private_bytes(
            pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        + cert.public_bytes(pem)
        + ca_cert.public_bytes(pem)
    )
    keystore_path.chmod(0o600)
    return ca_path, keystore_path


# --- The broker ----------------------------------------------------------------


# A user name becomes the option name ``user_<name>`` of the PLAIN login
# module's JAAS configuration, whose parser reads these characters as a word.
_USER_NAME = re.compile(r"[A-Za-z0-9_.$-]+")


def _check_sasl_users(users: Mapping[str, str]) -> None:
    # The storage tool parses --add-scram 'SCRAM-SHA-512=[name=..,password=..]'
    # by splitting on these characters, and a password is quoted in the JAAS
    # configuration; reject rather than mis-quote.
    for name, password in users.items():
        if not _USER_NAME.fullmatch(name):
            raise ValueError(
                f"SASL user name {name!r} must be letters, digits and _ . $ - only"
            )
        if (
            not password
            or any(c in password for c in ',[]="\\')
            or password != password.strip()
        ):
            raise ValueError(
                f"SASL password {password!r} must be non-empty, without surrounding "
                'spaces and without any of , [ ] = " \\'
            )


def _cluster_id() -> str:
    """A KRaft cluster id: a UUID as 22 characters of unpadded base64url.

    Never one starting with "-" (one in 64 would), which the storage tool's
    command line takes for an option, as Kafka's own ``Uuid.randomUuid``
    avoids.
    """
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not text.startswith("-"):
            return text


class ApacheKafkaBroker(SubprocessBroker):
    """Apache Kafka in KRaft mode, one node as both broker and controller.

    Listens on 127.0.0.1 only: ``PLAINTEXT`` (`bootstrap_servers`) always, a
    ``CONTROLLER`` listener for the quorum and, when asked:

    - ``SASL_PLAINTEXT`` (`sasl_bootstrap_servers`) for the users given,
      with SCRAM-SHA-512 or PLAIN;
    - ``SSL`` (`ssl_bootstrap_servers`): server-side TLS only, with a
      throwaway CA (`ca_path`) and a certificate for ``127.0.0.1`` and
      ``localhost``;
    - ``SASL_SSL`` (`sasl_ssl_bootstrap_servers`) when both are asked for:
      the listener managed Kafka services offer.

    Topics are never auto-created, internal topics have one partition and one
    replica, and data lives in the work dir, so it survives `restart` and
    `kill` followed by `start`; `stop` removes it.

    The first start resolves the jars (`resolve_kafka_classpath`) and formats
    the storage with Kafka's own storage tool, which also stores the SCRAM
    credentials.

    Parameters
    ----------
    sasl_scram_users
        User name to password; enables the ``SASL_PLAINTEXT`` listener (and,
        with ``ssl``, ``SASL_SSL``). Both SCRAM-SHA-512 and PLAIN accept
        these users.
    ssl
        Enables the ``SSL`` listener (and, with users, ``SASL_SSL``), with a
        fresh CA and certificate.
    network_delay
        Seconds added to each direction of every connection to the
        ``PLAINTEXT`` listener by a `TcpProxy`, whose address the broker
        advertises, so that clients reach it (and, in a cluster, the nodes
        reach each other) only through the proxy: ``0.001`` makes every round
        trip at least 2 ms longer, as on a network within a zone. 0 (the
        default) adds no proxy.
    broker_properties
        Extra or overriding ``server.properties`` entries, such as
        ``{"message.max.bytes": "100000"}``.
    heap
        JVM heap flags.
    version
        The Kafka release to run.
    class_data_sharing
        Start the JVM from a class archive kept next to the jars (AppCDS),
        which cuts the start time by about 40 %. The first start without an
        archive writes one when the broker stops gracefully.
    port, workdir, start_timeout, stop_timeout
        See `SubprocessBroker`; ``port`` is the ``PLAINTEXT`` listener's.
    """

    name = "kafka"
    capabilities = BrokerCapabilities(
        idempotent_producer=True,
        auto_creates_topics=False,
        enforces_message_size=True,
        keeps_data_across_restart=True,
        keeps_acknowledged_writes=True,
        consumer_groups=True,
    )
    # SIGTERM runs Kafka's shutdown hook (a controlled shutdown, well under a
    # second here) and lets the JVM write its class archive on exit.
    stop_signal = signal.SIGTERM
    # Logged by KafkaRaftServer once the broker is unfenced and serving.
    ready_marker = "Kafka Server started"

    def __init__(
        self,
        *,
        sasl_scram_users: Mapping[str, str] | None = None,
        ssl: bool = False,
        network_delay: float = 0.0,
        broker_properties: Mapping[str, str] | None = None,
        heap: Sequence[str] = _DEFAULT_HEAP,
        version: str = KAFKA_VERSION,
        class_data_sharing: bool = True,
        port: int = 0,
        workdir: str | os.PathLike[str] | None = None,
        start_timeout: float = 120.0,
        stop_timeout: float = 20.0,
    ) -> None:
        super().__init__(
            port=port,
            workdir=workdir,
            start_timeout=start_timeout,
            stop_timeout=stop_timeout,
        )
        users = dict(sasl_scram_users or {})
        _check_sasl_users(users)
        self._scram_users = users
        self._ssl = ssl
        self._front = DelayedFront(network_delay)
        self._broker_properties = dict(broker_properties or {})
        self._heap = tuple(heap)
        self.version = version
        # Formatted into the storage at the first start; the nodes of one
        # cluster share it.
        self._kraft_cluster_id = _cluster_id()
        # The other listeners' ports, picked together with the PLAINTEXT one
        # and kept with it (see _choose_ports).
        self._controller_port = 0
        self._sasl_port = 0
        self._ssl_port = 0
        self._sasl_ssl_port = 0
        self._ca_path: Path | None = None
        self.class_data_sharing = class_data_sharing
        self._pending_archive: tuple[Path, Path] | None = None

    # -- addresses ------------------------------------------------------------

    @property
    def controller_port(self) -> int:
        """The KRaft ``CONTROLLER`` listener's port; 0 until started."""
        return self._controller_port

    @property
    def bootstrap_servers(self) -> str:
        """``host:port`` of the ``PLAINTEXT`` listener, or of its proxy when
        there is a ``network_delay``."""
        return self._front.address or super().bootstrap_servers

    @property
    def sasl_bootstrap_servers(self) -> str:
        """``host:port`` of the ``SASL_PLAINTEXT`` listener."""
        if not self._scram_users:
            raise RuntimeError("this broker was created without sasl_scram_users")
        if self._sasl_port == 0:
            raise RuntimeError("kafka broker has not been started")
        return f"127.0.0.1:{self._sasl_port}"

    @property
    def sasl_ssl_bootstrap_servers(self) -> str:
        """``host:port`` of the ``SASL_SSL`` listener."""
        if not (self._scram_users and self._ssl):
            raise RuntimeError(
                "this broker was created without both sasl_scram_users and ssl=True"
            )
        if self._sasl_ssl_port == 0:
            raise RuntimeError("kafka broker has not been started")
        return f"127.0.0.1:{self._sasl_ssl_port}"

    @property
    def ssl_bootstrap_servers(self) -> str:
        """``host:port`` of the ``SSL`` listener."""
        if not self._ssl:
            raise RuntimeError("this broker was created without ssl=True")
        if self._ssl_port == 0:
            raise RuntimeError("kafka broker has not been started")
        return f"127.0.0.1:{self._ssl_port}"

    @property
    def ca_path(self) -> Path:
        """The PEM file of the CA that signed the ``SSL`` listener's
        certificate, for ``create_ssl_context(cafile=...)``."""
        if not self._ssl:
            raise RuntimeError("this broker was created without ssl=True")
        if self._ca_path is None:
            raise RuntimeError("kafka broker has not been started")
        return self._ca_path

    # -- SubprocessBroker -------------------------------------------------------

    def start(self) -> None:
        """Start the broker and wait until it serves; no-op if running.

        The first start also fetches the jars if they are not cached and
        formats the storage.

        Raises
        ------
        RuntimeError
            If ``java`` is missing, Maven fails, or the broker does not start
            in time; the message ends with the relevant output.
        """
        with self._lock:
            if not self.running:
                # Checked here, once, rather than in _command: the base class
                # retries a failed start on other ports, which cannot help.
                self._java_and_jars()
            super().start()

    def _java_and_jars(self) -> tuple[str, list[Path]]:
        java = find_java()
        if java is None:
            raise RuntimeError("the Apache Kafka broker needs 'java' (17+) on PATH")
        return java, resolve_kafka_classpath(self.version)

    def _choose_ports(self) -> None:
        super()._choose_ports()
        self._controller_port = find_free_port()
        self._sasl_port = find_free_port() if self._scram_users else 0
        self._ssl_port = find_free_port() if self._ssl else 0
        both = self._scram_users and self._ssl
        self._sasl_ssl_port = find_free_port() if both else 0
        self._choose_proxy_port()

    def _choose_proxy_port(self) -> None:
        """Pick the port the delaying proxy listens on (and is advertised)."""
        self._front.choose_port()

    def _command(self, workdir: Path) -> list[str]:
        java, jars = self._java_and_jars()
        classpath = os.pathsep.join(map(str, jars))
        if self._ssl and not (workdir / "ca.pem").is_file():
            _write_tls_files(workdir)
        self._ca_path = workdir / "ca.pem" if self._ssl else None
        (workdir / "log4j2.xml").write_text(_LOG4J2_CONFIG)
        self._front.start(self.port)
        config = workdir / "server.properties"
        # Rewritten on every start: the ports may differ after a retry, and
        # nothing in it is tied to the formatted data.
        config.write_text(self._server_properties(self.port, workdir))
        jvm = [
            java,
            *self._heap,
            *_JVM_FLAGS,
            f"-Dlog4j2.configurationFile={workdir / 'log4j2.xml'}",
            "-cp",
            classpath,
        ]
        # The previous process, if any, has exited: keep the archive it wrote.
        self._keep_class_archive()
        archive_flags: list[str] = []
        if self.class_data_sharing:
            archive = _class_archive_path(java, jars)
            if archive.is_file():
                jvm.append(f"-XX:SharedArchiveFile={archive}")
            else:
                # Unique name: brokers of parallel test runs may dump at once.
                pending = archive.with_name(f"{archive.name}.{uuid.uuid4().hex}.tmp")
                archive_flags.append(f"-XX:ArchiveClassesAtExit={pending}")
                self._pending_archive = (pending, archive)
        if not (workdir / "data" / "meta.properties").is_file():
            self._format_storage(jvm, config, workdir)
        return [*jvm, *archive_flags, "kafka.Kafka", str(config)]

    def _environment(self) -> dict[str, str]:
        env = dict(os.environ)
        # Read by the JVM itself and would override the flags given here.
        for name in ("JAVA_TOOL_OPTIONS", "JDK_JAVA_OPTIONS", "_JAVA_OPTIONS"):
            env.pop(name, None)
        return env

    def stop(self) -> None:
        """Stop gracefully (SIGTERM, then SIGKILL after `stop_timeout`) and
        remove the temporary work dir. Idempotent."""
        with self._lock:
            super().stop()
            self._keep_class_archive()
            self._front.stop()

    # -- internals ----------------------------------------------------------------

    def _keep_class_archive(self) -> None:
        """Publish the class archive dumped by the last process, if complete.

        The JVM writes it while exiting after SIGTERM; a process that was
        SIGKILLed (`kill`, or a stop that timed out) may have left half a
        file, which is dropped.
        """
        if self._pending_archive is None or self.running:
            return
        pending, archive = self._pending_archive
        self._pending_archive = None
        process = self.process
        exited_by_itself = process is not None and (process.returncode or 0) >= 0
        try:
            if exited_by_itself and pending.is_file() and pending.stat().st_size:
                os.replace(pending, archive)
        finally:
            pending.unlink(missing_ok=True)

    def _server_properties(self, port: int, workdir: Path) -> str:
        listeners = {
            "PLAINTEXT": port,
            "CONTROLLER": self._controller_port,
        }
        if self._scram_users:
            listeners["SASL_PLAINTEXT"] = self._sasl_port
        if self._ssl:
            listeners["SSL"] = self._ssl_port
        if self._sasl_ssl_port:
            listeners["SASL_SSL"] = self._sasl_ssl_port
        advertised = {k: v for k, v in listeners.items() if k != "CONTROLLER"}
        if self._front.port:
            advertised["PLAINTEXT"] = self._front.port
        props: dict[str, str] = {
            "process.roles": "broker,controller",
            "node.id": "1",
            # A static one-voter quorum: nothing to bootstrap at format time.
            "controller.quorum.voters": f"1@127.0.0.1:{self._controller_port}",
            "controller.listener.names": "CONTROLLER",
            # Each listener is named after its protocol, except the quorum's.
            "listener.security.protocol.map": ",".join(
                f"{name}:{'PLAINTEXT' if name == 'CONTROLLER' else name}"
                for name in listeners
            ),
            "inter.broker.listener.name": "PLAINTEXT",
            "listeners": ",".join(
                f"{name}://127.0.0.1:{p}" for name, p in listeners.items()
            ),
            "advertised.listeners": ",".join(
                f"{name}://127.0.0.1:{p}" for name, p in advertised.items()
            ),
            "log.dirs": str(workdir / "data"),
            "auto.create.topics.enable": "false",
            "num.partitions": "1",
            "default.replication.factor": "1",
            "min.insync.replicas": "1",
            # Internal topics: one replica (one node) and one partition, which
            # makes the first consumer group and transaction start quickly.
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "1",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "share.coordinator.state.topic.num.partitions": "1",
            "group.initial.rebalance.delay.ms": "0",
            # After a SIGKILL the restarted node cannot register again until
            # its previous registration's session expires: 9 s by default.
            "broker.heartbeat.interval.ms": "1000",
            "broker.session.timeout.ms": "4000",
            # Two cores: Kafka's defaults (3 network, 8 I/O, 10 background
            # threads) only add contention.
            "num.network.threads": "2",
            "num.io.threads": "2",
            "background.threads": "2",
            "num.recovery.threads.per.data.dir": "1",
            # The default 128 MiB dedupe buffer is allocated at start.
            "log.cleaner.dedupe.buffer.size": str(16 * 1024 * 1024),
        }
        if self._scram_users:
            props["sasl.enabled.mechanisms"] = f"{SCRAM_MECHANISM},{PLAIN_MECHANISM}"
            # The server side of SCRAM needs a login module but no user of
            # its own (credentials come from the cluster metadata); PLAIN's
            # lists each user's password.
            plain_users = " ".join(
                f'user_{name}="{password}"'
                for name, password in self._scram_users.items()
            )
            for listener in ("SASL_PLAINTEXT", "SASL_SSL"):
                if listener not in listeners:
                    continue
                prefix = f"listener.name.{listener.lower()}"
                props[f"{prefix}.{SCRAM_MECHANISM.lower()}.sasl.jaas.config"] = (
                    "org.apache.kafka.common.security.scram.ScramLoginModule required;"
                )
                props[f"{prefix}.{PLAIN_MECHANISM.lower()}.sasl.jaas.config"] = (
                    "org.apache.kafka.common.security.plain.PlainLoginModule"
                    f" required {plain_users};"
                )
        if self._ssl:
            props.update(
                {
                    "ssl.keystore.type": "PEM",
                    "ssl.keystore.location": str(workdir / "server-keystore.pem"),
                    "ssl.client.auth": "none",
                }
            )
        props.update(self._broker_properties)
        lines = ["# Generated by otel_kafka_events_devstack._apache_kafka"]
        lines += [f"{key}={value}" for key, value in props.items()]
        return "\n".join(lines) + "\n"

    def _format_storage(self, jvm: list[str], config: Path, workdir: Path) -> None:
        """Format the log dir once, storing the SCRAM users' credentials."""
        argv = [
            *jvm,
            "kafka.tools.StorageTool",
            "format",
            "--config",
            str(config),
            "--cluster-id",
            self._kraft_cluster_id,
        ]
        for name, password in self._scram_users.items():
            argv += [
                "--add-scram",
                f"{SCRAM_MECHANISM}=[name={name},password={password}]",
            ]
        started = time.monotonic()
        result = subprocess.run(
            argv,
            cwd=workdir,
            env=self._environment(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=self.start_timeout,
            check=False,
        )
        # The "Bootstrap metadata" line lists the SCRAM users' salted keys.
        output = "".join(
            line
            for line in result.stdout.splitlines(keepends=True)
            if not line.startswith("Bootstrap metadata")
        )
        with (workdir / f"{self.name}.log").open("a") as log:
            log.write(
                f"# storage format: exit code {result.returncode} after "
                f"{time.monotonic() - started:.1f} s\n{output}"
            )
        if result.returncode != 0:
            raise RuntimeError(
                f"Kafka's storage tool failed with exit code {result.returncode}:\n"
                f"{output_tail(output)}"
            )


# --- Command line ----------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m otel_kafka_events_devstack._apache_kafka fetch``.

    Resolves the jars into the cache and prints the cache folder; run before
    the tests so that the first broker start does not wait for Maven. Unless
    ``--no-class-archive`` is given, it also starts and stops a broker once
    (when ``java`` is found) to write the class archive that makes every later
    start faster.
    """
    parser = argparse.ArgumentParser(
        prog="python -m otel_kafka_events_devstack._apache_kafka",
        description="Manage the Apache Kafka jars used by the test broker.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    fetch = commands.add_parser("fetch", help="resolve the jars with Maven")
    fetch.add_argument("--version", default=KAFKA_VERSION, help="Kafka release")
    fetch.add_argument(
        "--no-class-archive",
        dest="class_archive",
        action="store_false",
        help="do not start a broker once to write the JVM class archive",
    )
    args = parser.parse_args(argv)
    started = time.monotonic()
    try:
        jars = resolve_kafka_classpath(args.version)
    except RuntimeError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    # Only the path on stdout, for CACHE=$(python -m ... fetch).
    print(jars[0].parent.parent, flush=True)
    print(
        f"Apache Kafka {args.version}: {len(jars)} jars "
        f"({time.monotonic() - started:.1f} s)",
        file=sys.stderr,
        flush=True,
    )
    java = find_java()
    if args.class_archive and java is not None:
        archive = _class_archive_path(java, jars)
        if not archive.is_file():
            started = time.monotonic()
            try:
                with ApacheKafkaBroker(version=args.version):
                    pass
            except RuntimeError as error:
                print(f"error: {error}", file=sys.stderr)
                return 1
            state = "written" if archive.is_file() else "NOT written"
            print(
                f"class archive {state}: {archive} "
                f"({time.monotonic() - started:.1f} s)",
                file=sys.stderr,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
