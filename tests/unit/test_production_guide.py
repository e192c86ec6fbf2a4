"""What `docs/production.md` tells an operator, checked without a network.

The page's configuration blocks are read as a reader would use them: each
``# NAME.env`` block goes into the environment and through
`KafkaMetricsConfiguration`, and must give the settings the page describes;
each ``# NAME_settings.py`` block is run and must give the same settings;
``sizing.py`` must give what ``sizing.env`` gives. The log lines the page
tells an SRE to alert on are produced here by the real manager on the
in-memory transport, and quoted on the page as logged. The SASL_SSL blocks
also publish to Apache Kafka's secure listeners, in
``tests/integration/test_kafka_security.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import io
import ssl
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from aiokafka.partitioner import murmur2
from fastavro import parse_schema, schemaless_reader
from pydantic import SecretStr
from structlog.testing import capture_logs

from otel_kafka_events import (
    BufferOptions,
    DeliveryFailure,
    DeliveryOptions,
    EventPayload,
    KafkaEventManager,
    KafkaMetricsConfiguration,
    OverflowPolicy,
)
from otel_kafka_events._encoding._codec import split_confluent_frame
from otel_kafka_events.errors import NotAcknowledgedError
from otel_kafka_events.testing import (
    MemorySchemaRegistry,
    MemoryTransport,
    SendOutcome,
)

from ..config_support import clean_environment
from ..markdown_programs import blocks, environment_files, python_files

__all__ = ["clean_environment"]  # the autouse fixture

PAGE = Path(__file__).resolve().parents[2] / "docs" / "production.md"


def env_blocks() -> dict[str, dict[str, str]]:
    """The page's ``# NAME.env`` blocks: name -> their variables."""
    return environment_files(blocks(PAGE))


def page_files() -> dict[str, str]:
    """The page's whole-file Python blocks, by file name."""
    return python_files(blocks(PAGE))


def run_file(name: str) -> dict[str, Any]:
    """Run the page's file ``name`` as a module; its namespace."""
    namespace: dict[str, Any] = {"__name__": name.removesuffix(".py")}
    with contextlib.redirect_stdout(io.StringIO()):
        exec(compile(page_files()[name], name, "exec", dont_inherit=True), namespace)
    return namespace


def from_environment(
    monkeypatch: pytest.MonkeyPatch, variables: dict[str, str]
) -> KafkaMetricsConfiguration:
    """The configuration a service reads from ``variables`` alone; they are
    unset again afterwards."""
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    try:
        return KafkaMetricsConfiguration()
    finally:
        for name in variables:
            monkeypatch.delenv(name)


def assert_same_settings(
    one: KafkaMetricsConfiguration, other: KafkaMetricsConfiguration
) -> None:
    """Two configurations that describe the same manager."""
    assert one.application == other.application
    assert one.events.topic_prefix == other.events.topic_prefix
    # model_dump keeps the SecretStr objects, which compare by value.
    assert one.kafka.model_dump() == other.kafka.model_dump()
    assert one.schema_manager.model_dump() == other.schema_manager.model_dump()
    assert one.delivery.model_dump() == other.delivery.model_dump()
    assert one.telemetry.model_dump() == other.telemetry.model_dump()


def test_the_page_has_the_blocks_these_tests_read() -> None:
    assert set(env_blocks()) == {"sizing", "scram", "plain", "mtls"}
    assert set(page_files()) == {
        "event_size.py",
        "sizing.py",
        "scram_settings.py",
        "plain_settings.py",
        "mtls_settings.py",
    }


# -- Sizing ---------------------------------------------------------------------


def test_sizing_env_gives_the_settings_of_sizing_py(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    delivery = run_file("sizing.py")["delivery"]
    assert isinstance(delivery, DeliveryOptions)
    # The arithmetic the page shows.
    assert delivery.delivery_timeout == 320
    assert delivery.close_timeout == 20
    assert delivery.buffer.max_events == 160_000
    assert delivery.buffer.max_bytes == 160_000_000
    assert delivery.buffer.overflow is OverflowPolicy.DROP_NEWEST
    # Above both defaults, as the page says.
    assert delivery.buffer.max_events > BufferOptions().max_events
    assert delivery.buffer.max_bytes > BufferOptions().max_bytes

    config = from_environment(
        monkeypatch,
        {
            "METRICS_APPLICATION": "myapp",
            "KAFKA_BOOTSTRAP_SERVERS": "kafka:9092",
            "SCHEMA_MANAGER_REGISTRY_URL": "http://registry:8081",
            **env_blocks()["sizing"],
        },
    )
    assert config.delivery.model_dump() == delivery.model_dump()


async def test_event_size_py_measures_what_the_buffer_counts() -> None:
    # The program's way (a stalled transport holds the sent event) gives the
    # bytes the buffer counts for that event.
    namespace = run_file_definitions("event_size.py")
    payload_model = namespace["QueryCompleted"]
    transport = MemoryTransport()
    transport.stalled = True
    manager = KafkaEventManager(
        application="myapp",
        topic_prefix="events",
        transport=transport,
        registry=MemorySchemaRegistry(),
    )
    await manager.initialize()
    publisher = await manager.create_publisher("query_completed", payload_model)
    await publisher.publish(
        payload_model(
            username="someone",
            query="SELECT 1",
            rows=1,
            elapsed=datetime.timedelta(seconds=1),
        )
    )
    held = manager.stats.buffered_bytes
    transport.release()
    assert await manager.aclose() == 0
    [record] = transport.records
    # Published outside a span, it has no trace headers: its value alone.
    assert record.headers == ()
    assert held == len(record.value) > 0


def run_file_definitions(name: str) -> dict[str, Any]:
    """The definitions of the page's program ``name``, without running it
    (``asyncio.run`` is left out)."""
    source = page_files()[name]
    kept = "\n".join(
        line for line in source.splitlines() if not line.startswith("asyncio.run(")
    )
    namespace: dict[str, Any] = {"__name__": name.removesuffix(".py")}
    exec(compile(kept, name, "exec", dont_inherit=True), namespace)
    return namespace


# -- Security -------------------------------------------------------------------


def test_scram_env_reads_as_the_page_says(monkeypatch: pytest.MonkeyPatch) -> None:
    variables = env_blocks()["scram"]
    config = from_environment(monkeypatch, variables)
    kafka = config.kafka
    assert kafka.security_protocol == "SASL_SSL"
    assert kafka.sasl_mechanism == "SCRAM-SHA-512"
    assert kafka.sasl_username == "myapp"
    assert kafka.sasl_password == SecretStr("kafka-secret")
    assert kafka.cluster_ca_path == Path("/etc/kafka-ca/ca.crt")
    assert kafka.client_cert_path is None
    registry = config.schema_manager
    assert registry.registry_username == "myapp"
    assert registry.registry_password == SecretStr("registry-secret")
    assert config.delivery.enable_idempotence is True

    python = run_file("scram_settings.py")["events_configuration"](
        variables["KAFKA_SASL_PASSWORD"], variables["SCHEMA_MANAGER_REGISTRY_PASSWORD"]
    )
    assert_same_settings(python, config)


def test_plain_env_reads_as_the_page_says(monkeypatch: pytest.MonkeyPatch) -> None:
    variables = env_blocks()["plain"]
    config = from_environment(monkeypatch, variables)
    kafka = config.kafka
    assert kafka.security_protocol == "SASL_SSL"
    assert kafka.sasl_mechanism == "PLAIN"
    assert kafka.sasl_password == SecretStr("kafka-secret")
    assert kafka.cluster_ca_path is None
    assert config.schema_manager.registry_password == SecretStr("registry-secret")
    # Idempotence is left to the default: used unless the broker refuses it.
    assert config.delivery.enable_idempotence is None

    python = run_file("plain_settings.py")["events_configuration"](
        variables["KAFKA_SASL_PASSWORD"], variables["SCHEMA_MANAGER_REGISTRY_PASSWORD"]
    )
    assert_same_settings(python, config)


def test_mtls_env_reads_as_the_page_says(monkeypatch: pytest.MonkeyPatch) -> None:
    config = from_environment(monkeypatch, env_blocks()["mtls"])
    kafka = config.kafka
    assert kafka.security_protocol == "SSL"
    assert kafka.cluster_ca_path == Path("/etc/kafka-ca/ca.crt")
    assert kafka.client_cert_path == Path("/etc/kafka-user/user.crt")
    assert kafka.client_key_path == Path("/etc/kafka-user/user.key")
    assert kafka.sasl_username is None

    python = run_file("mtls_settings.py")["events_configuration"]()
    assert_same_settings(python, config)


class _Tls:
    """A throwaway CA, a server certificate for ``localhost`` and a client
    certificate, as PEM files."""

    def __init__(self, directory: Path) -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

        now = datetime.datetime.now(datetime.UTC)

        def name(text: str) -> x509.Name:
            return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, text)])

        def write(path: Path, data: bytes) -> Path:
            path.write_bytes(data)
            return path

        pem = serialization.Encoding.PEM
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca = (
            x509.CertificateBuilder()
            .subject_name(name("guide CA"))
            .issuer_name(name("guide CA"))
            .public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), True)
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False
            )
            .sign(ca_key, hashes.SHA256())
        )
        self.ca = write(directory / "ca.crt", ca.public_bytes(pem))

        def issue(
            common_name: str, usage: x509.ObjectIdentifier, stem: str
        ) -> tuple[Path, Path]:
            key = ec.generate_private_key(ec.SECP256R1())
            cert = (
                x509.CertificateBuilder()
                .subject_name(name(common_name))
                .issuer_name(ca.subject)
                .public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(days=1))
                .not_valid_after(now + datetime.timedelta(days=1))
                .add_extension(
                    x509.SubjectAlternativeName([x509.DNSName(common_name)]), False
                )
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), True)
                .add_extension(x509.ExtendedKeyUsage([usage]), False)
                .add_extension(
                    x509.AuthorityKeyIdentifier.from_issuer_public_key(
                        ca_key.public_key()
                    ),
                    False,
                )
                .sign(ca_key, hashes.SHA256())
            )
            private = key.private_bytes(
                pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
            return (
                write(directory / f"{stem}.crt", cert.public_bytes(pem)),
                write(directory / f"{stem}.key", private),
            )

        self.server_cert, self.server_key = issue(
            "localhost", ExtendedKeyUsageOID.SERVER_AUTH, "server"
        )
        self.client_cert, self.client_key = issue(
            "myapp", ExtendedKeyUsageOID.CLIENT_AUTH, "user"
        )


@pytest.fixture
def tls(tmp_path: Path) -> _Tls:
    # cryptography comes with the devstack's dependencies, which the
    # version legs of CI (scripts/test-versions) do not install.
    pytest.importorskip("cryptography")
    return _Tls(tmp_path)


def handshake(client: ssl.SSLContext, server: ssl.SSLContext) -> ssl.SSLObject:
    """A TLS handshake between two contexts, in memory (no socket), as a
    broker at ``localhost`` would make it; the server's end.

    Raises
    ------
    ssl.SSLError
        If either end refuses the other.
    """
    # Each end reads from one BIO and writes to another; the loop carries
    # what one wrote to the other.
    client_in, client_out = ssl.MemoryBIO(), ssl.MemoryBIO()
    server_in, server_out = ssl.MemoryBIO(), ssl.MemoryBIO()
    client_end = client.wrap_bio(client_in, client_out, server_hostname="localhost")
    server_end = server.wrap_bio(server_in, server_out, server_side=True)
    done = {"client": False, "server": False}
    for _ in range(20):
        for side, end in (("client", client_end), ("server", server_end)):
            if not done[side]:
                with contextlib.suppress(ssl.SSLWantReadError):
                    end.do_handshake()
                    done[side] = True
        server_in.write(client_out.read())
        client_in.write(server_out.read())
        if all(done.values()):
            return server_end
    raise AssertionError("the handshake did not finish")


def broker_context(tls: _Tls, *, client_certificate: bool) -> ssl.SSLContext:
    """A broker's TLS context: its certificate, and if asked, a client
    certificate signed by the CA required."""
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(tls.server_cert, tls.server_key)
    if client_certificate:
        server.verify_mode = ssl.CERT_REQUIRED
        server.load_verify_locations(tls.ca)
    return server


def test_the_client_certificate_is_presented(
    monkeypatch: pytest.MonkeyPatch, tls: _Tls
) -> None:
    # mtls.env, with the files of a throwaway CA in place of the mounted ones.
    variables = env_blocks()["mtls"] | {
        "KAFKA_CLUSTER_CA_PATH": str(tls.ca),
        "KAFKA_CLIENT_CERT_PATH": str(tls.client_cert),
        "KAFKA_CLIENT_KEY_PATH": str(tls.client_key),
    }
    config = from_environment(monkeypatch, variables)
    client = config.kafka.to_client_options()["ssl_context"]

    server_end = handshake(client, broker_context(tls, client_certificate=True))

    peer = server_end.getpeercert()
    assert peer
    assert (("commonName", "myapp"),) in peer["subject"]
    # The manager is built from these settings, without connecting.
    manager = config.make_manager()
    assert manager.topic == "lsst.square.metrics.events.myapp"


def test_without_a_ca_path_the_system_trust_store_verifies(
    monkeypatch: pytest.MonkeyPatch, tls: _Tls
) -> None:
    # plain.env names no CA file: the brokers are verified against
    # OpenSSL's default store, which SSL_CERT_FILE points at here.
    config = from_environment(monkeypatch, env_blocks()["plain"])
    broker = broker_context(tls, client_certificate=False)
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(config.kafka.to_client_options()["ssl_context"], broker)

    monkeypatch.setenv("SSL_CERT_FILE", str(tls.ca))
    handshake(config.kafka.to_client_options()["ssl_context"], broker)


# -- The log lines to alert on ----------------------------------------------------


class Ping(EventPayload):
    """A small payload."""

    n: int


# The messages the page quotes, as logged.
MESSAGES = {
    "failed": "Events not delivered to Kafka (failed)",
    "dropped": "Events not delivered to Kafka (dropped)",
    "shutdown": "Events not delivered to Kafka (shutdown)",
    "closed": "Events not delivered before the event manager closed",
    "unreachable": (
        "Cannot connect to Kafka yet; events are buffered while the connection"
        " is retried in the background"
    ),
    "still": "Still cannot connect to Kafka",
    "connected": "Connected to Kafka",
    "retry": "Kafka send failed, will retry",
    "restart": "Kafka producer unusable, starting a new one",
    "registration": "Event registration failed, retrying in the background",
    "registration still": "Event registration still failing",
}


def manager_on(
    transport: MemoryTransport,
    registry: MemorySchemaRegistry | None = None,
    **options: Any,
) -> KafkaEventManager:
    options.setdefault("retry_backoff", 0.01)
    options.setdefault("backoff_interval", 0.05)
    return KafkaEventManager(
        application="shop",
        topic_prefix="events",
        transport=transport,
        registry=registry or MemorySchemaRegistry(),
        **options,
    )


async def until(condition: Callable[[], object], timeout: float = 5.0) -> None:
    """Poll ``condition``; fail the test if it stays false for ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"condition still false after {timeout} s")
        await asyncio.sleep(0.01)


def lines(logs: list[dict[str, Any]], message: str) -> list[dict[str, Any]]:
    return [entry for entry in logs if entry["event"] == message]


@pytest.fixture
def logs() -> Iterator[list[dict[str, Any]]]:
    """What the manager logs during the test, one dict per line."""
    with capture_logs() as captured:
        yield cast(list[dict[str, Any]], captured)


def test_the_page_quotes_each_message_as_logged() -> None:
    text = PAGE.read_text()
    for message in MESSAGES.values():
        shown = message.removeprefix("Events not delivered to Kafka ")
        assert f"`{message}`" in text or f"`{shown}`" in text, message


async def test_a_timeout_before_sending_is_one_error_line(
    logs: list[dict[str, Any]],
) -> None:
    transport = MemoryTransport()
    failures: list[DeliveryFailure] = []
    manager = manager_on(
        transport, delivery_timeout=0.3, on_delivery_error=failures.append
    )
    await manager.initialize()
    publisher = await manager.create_publisher("ping", Ping)
    for _ in range(1000):  # every send fails, retriably, until the deadline
        transport.fail_next(SendOutcome.RETRIABLE)
    event = await publisher.publish(Ping(n=1))
    await until(lambda: manager.stats.failed == 1)
    await manager.aclose(timeout=1)

    [line] = lines(logs, MESSAGES["failed"])
    assert line["log_level"] == "error"
    assert line["cause"] == "timed out waiting for Kafka"
    assert (line["first_event_id"], line["event_name"]) == (str(event.id), "ping")
    assert (line["topic"], line["count"]) == ("events.shop", 1)
    assert [(f.reason, type(f.error)) for f in failures] == [("failed", TimeoutError)]
    assert transport.records == []


async def test_a_send_without_an_answer_is_one_error_line(
    logs: list[dict[str, Any]],
) -> None:
    transport = MemoryTransport()
    transport.stalled = True  # sent, never answered
    failures: list[DeliveryFailure] = []
    manager = manager_on(
        transport, delivery_timeout=0.2, on_delivery_error=failures.append
    )
    await manager.initialize()
    publisher = await manager.create_publisher("ping", Ping)
    await publisher.publish(Ping(n=1))
    await until(lambda: manager.stats.failed == 1)
    await manager.aclose(timeout=1)

    [line] = lines(logs, MESSAGES["failed"])
    assert line["cause"] == "sent but not acknowledged in time"
    assert [f.reason for f in failures] == ["failed"]
    assert isinstance(failures[0].error, NotAcknowledgedError)


async def test_a_full_buffer_is_one_error_line(logs: list[dict[str, Any]]) -> None:
    transport = MemoryTransport()
    transport.stalled = True
    manager = manager_on(
        transport,
        buffer=BufferOptions(max_events=1, overflow=OverflowPolicy.DROP_NEWEST),
    )
    await manager.initialize()
    publisher = await manager.create_publisher("ping", Ping)
    await publisher.publish(Ping(n=1))
    dropped = await publisher.publish(Ping(n=2))
    assert manager.stats.dropped == 1
    transport.release()
    assert await manager.aclose(timeout=1) == 0

    [line] = lines(logs, MESSAGES["dropped"])
    assert line["cause"] == "dropped"
    assert line["first_event_id"] == str(dropped.id)


async def test_what_a_close_gives_up_is_logged_and_counted(
    logs: list[dict[str, Any]],
) -> None:
    transport = MemoryTransport()
    transport.stalled = True
    manager = manager_on(transport)
    await manager.initialize()
    publisher = await manager.create_publisher("ping", Ping)
    await publisher.publish(Ping(n=1))
    await publisher.publish(Ping(n=2))

    assert await manager.aclose(timeout=0.2) == 2

    assert manager.stats.failed == 2
    shutdown = lines(logs, MESSAGES["shutdown"])
    assert shutdown
    assert {line["cause"] for line in shutdown} == {"closed"}
    assert sum(line["count"] for line in shutdown) == 2
    [closed] = lines(logs, MESSAGES["closed"])
    assert (closed["log_level"], closed["count"]) == ("error", 2)


async def test_an_unreachable_broker_is_logged_until_it_answers(
    logs: list[dict[str, Any]],
) -> None:
    transport = MemoryTransport()
    transport.reachable = False
    manager = manager_on(transport)
    await manager.initialize()
    assert lines(logs, MESSAGES["unreachable"])
    await until(lambda: lines(logs, MESSAGES["still"]))
    transport.reachable = True
    await until(lambda: lines(logs, MESSAGES["connected"]))
    assert await manager.aclose(timeout=1) == 0
    [still] = lines(logs, MESSAGES["still"])[:1]
    assert still["log_level"] == "error"
    assert "suppressed_since_last" in still


async def test_a_retried_send_is_one_error_line(logs: list[dict[str, Any]]) -> None:
    transport = MemoryTransport()
    manager = manager_on(transport)
    await manager.initialize()
    publisher = await manager.create_publisher("ping", Ping)
    transport.fail_next(SendOutcome.RETRIABLE)
    event = await publisher.publish(Ping(n=1), wait=True)
    await manager.aclose(timeout=1)

    [line] = lines(logs, MESSAGES["retry"])
    assert (line["count"], line["first_event_id"]) == (1, str(event.id))
    assert manager.stats.delivered == 1


async def test_a_lost_producer_identity_is_logged(logs: list[dict[str, Any]]) -> None:
    transport = MemoryTransport()
    manager = manager_on(transport)
    await manager.initialize()
    publisher = await manager.create_publisher("ping", Ping)
    transport.fail_next(SendOutcome.RESTART)
    await publisher.publish(Ping(n=1), wait=True)
    await manager.aclose(timeout=1)

    assert [line["log_level"] for line in lines(logs, MESSAGES["restart"])] == ["error"]
    assert transport.starts == 2
    assert len(transport.records) == 1


async def test_an_unreachable_registry_is_logged_until_it_answers(
    logs: list[dict[str, Any]],
) -> None:
    registry = MemorySchemaRegistry()
    registry.available = False
    transport = MemoryTransport()
    manager = manager_on(transport, registry)
    await manager.initialize()
    publisher = await manager.create_publisher("ping", Ping)
    waiting = asyncio.ensure_future(publisher.publish(Ping(n=1), wait=True))
    [first] = lines(logs, MESSAGES["registration"])
    assert first["event_name"] == "ping"
    await until(lambda: lines(logs, MESSAGES["registration still"]))
    registry.available = True
    await asyncio.wait_for(waiting, 5)
    await manager.aclose(timeout=1)
    assert len(transport.records) == 1


# -- Keys, partitions and ordering ----------------------------------------------


class Numbered(EventPayload):
    """An event that says its type and its place in that type's sequence."""

    kind: str
    n: int


async def test_each_event_type_goes_to_one_partition_without_a_key() -> None:
    transport = MemoryTransport(partitions=6)
    registry = MemorySchemaRegistry()
    manager = manager_on(transport, registry)
    await manager.initialize()
    kinds = [f"type_{index}" for index in range(8)]
    publishers = {k: await manager.create_publisher(k, Numbered) for k in kinds}
    for n in range(40):
        for kind, publisher in publishers.items():
            await publisher.publish(Numbered(kind=kind, n=n))
    assert await manager.aclose(timeout=2) == 0

    records = transport.records_for(manager.topic)
    assert len(records) == 40 * len(kinds)
    sequences: dict[str, list[int]] = {kind: [] for kind in kinds}
    partitions: dict[str, set[int]] = {kind: set() for kind in kinds}
    for record in records:  # in offset order, partition by partition
        assert record.key is None
        schema_id, body = split_confluent_frame(record.value)
        schema = await registry.schema_by_id(schema_id)
        assert schema is not None
        value = schemaless_reader(io.BytesIO(body), parse_schema(schema), None)
        assert isinstance(value, dict)
        sequences[value["kind"]].append(value["n"])
        partitions[value["kind"]].add(record.partition)
    for kind in kinds:
        # Kafka's default partitioner of the type's full name, computed
        # with aiokafka's own murmur2 rather than the library's.
        name = f"{manager.topic}.{kind}".encode()
        assert partitions[kind] == {(murmur2(name) & 0x7FFFFFFF) % 6}, kind
        assert sequences[kind] == list(range(40)), kind
    # Eight types over six partitions: more than one partition is used.
    assert len(set().union(*partitions.values())) > 1
