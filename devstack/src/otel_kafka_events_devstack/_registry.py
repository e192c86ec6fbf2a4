"""An in-memory stand-in for the Confluent Schema Registry, over HTTP.

`LocalSchemaRegistry` serves the subset of the Confluent Schema Registry REST
API that ``python-schema-registry-client`` uses, over a real HTTP socket on
127.0.0.1. What it stores and how it judges compatibility (Apache Avro's own
reader/writer checker) is the runtime's pure `SchemaStore`, from
``otel_kafka_events.testing``, so verdicts match what a real registry would
say for the usual schema evolutions; this module only maps requests onto the
store and its answers back to JSON."""

from __future__ import annotations

import base64
import ipaddress
import json
import socketserver
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self, cast
from urllib.parse import parse_qs, unquote, urlsplit

from otel_kafka_events.testing._schema_store import (
    SchemaStore,
    SchemaStoreError,
    SchemaVersion,
    compatibility_level,
)

from ._lifecycle import StartStop

__all__ = ["LocalSchemaRegistry"]


_CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"


@dataclass(frozen=True)
class _Reply:
    """An HTTP status and an already encoded response body."""

    status: int
    body: bytes


def _json_reply(payload: object, status: int = 200) -> _Reply:
    return _Reply(status, json.dumps(payload).encode())


def _flag(query: dict[str, list[str]], name: str) -> bool:
    return query.get(name, ["false"])[-1].lower() == "true"


def _schema_of(body: object) -> tuple[str, str | None]:
    """The schema text and type of a ``{"schema": ..., "schemaType": ...}`` body.

    Raises
    ------
    SchemaStoreError
        422 / 42201 if the body holds no schema string.
    """
    if not isinstance(body, dict) or not isinstance(body.get("schema"), str):
        raise SchemaStoreError(
            422, 42201, "Invalid schema: the body needs a 'schema' string"
        )
    schema_type = body.get("schemaType")
    return body["schema"], schema_type if isinstance(schema_type, str) else None


def _level_of(body: object) -> str:
    """The ``compatibility`` field of a config body, checked."""
    return compatibility_level(
        body.get("compatibility") if isinstance(body, dict) else None
    )


def _schema_id(raw: str) -> int:
    """A schema id path segment; anything but digits names no schema."""
    if not raw.isdigit():
        raise SchemaStoreError(404, 40403, "Schema not found")
    return int(raw)


def _version_json(found: SchemaVersion) -> dict[str, object]:
    return {
        "subject": found.subject,
        "version": found.version,
        "id": found.schema_id,
        "schema": found.schema,
    }


def _route(
    store: SchemaStore,
    method: str,
    path: str,
    query: dict[str, list[str]],
    body: object,
) -> _Reply:
    """Map one request onto the store; `SchemaStoreError` for error replies."""
    # Split before unquoting so that an encoded "/" stays inside its segment;
    # stripping slashes makes the client's "config/" (no subject) the global
    # config.
    segments = [unquote(part) for part in path.strip("/").split("/")]
    payload: object
    match method, segments:
        case "GET", [""]:
            payload = {}
        case "GET", ["subjects"]:
            payload = store.subjects()
        case "GET", ["subjects", subject, "versions"]:
            payload = store.versions(subject)
        case "POST", ["subjects", subject, "versions"]:
            schema, schema_type = _schema_of(body)
            schema_id, _ = store.register(subject, schema, schema_type=schema_type)
            payload = {"id": schema_id}
        case "GET", ["subjects", subject, "versions", version]:
            payload = _version_json(store.get_version(subject, version))
        case "GET", ["subjects", subject, "versions", version, "schema"]:
            # The raw schema is the response document itself.
            text = store.get_version(subject, version).schema
            return _Reply(200, text.encode())
        case "DELETE", ["subjects", subject, "versions", version]:
            payload = store.delete_version(subject, version)
        case "POST", ["subjects", subject]:
            # An unknown subject is reported before looking at the schema.
            store.versions(subject)
            schema, schema_type = _schema_of(body)
            found = store.lookup(subject, schema, schema_type=schema_type)
            payload = _version_json(found)
        case "DELETE", ["subjects", subject]:
            payload = store.delete_subject(subject)
        case "GET", ["schemas", "types"]:
            payload = ["AVRO"]
        case "GET", ["schemas", "ids", schema_id]:
            payload = {"schema": store.schema_by_id(_schema_id(schema_id))}
        case "GET", ["schemas", "ids", schema_id, "versions"]:
            uses = store.subject_versions_for_id(_schema_id(schema_id))
            payload = [{"subject": s, "version": v} for s, v in uses]
        case "POST", ["compatibility", "subjects", subject, "versions", *rest] if (
            len(rest) <= 1
        ):
            # No version: check against every version the level asks for.
            schema, schema_type = _schema_of(body)
            problems = store.test_compatibility(
                subject, schema, rest[0] if rest else None, schema_type=schema_type
            )
            reply: dict[str, object] = {"is_compatible": not problems}
            if _flag(query, "verbose"):
                reply["messages"] = problems
            payload = reply
        case "GET", ["config"]:
            payload = {"compatibilityLevel": store.global_compatibility()}
        case "PUT", ["config"]:
            payload = {"compatibility": store.set_global_compatibility(_level_of(body))}
        case "DELETE", ["config"]:
            payload = {"compatibilityLevel": store.delete_global_compatibility()}
        case "GET", ["config", subject]:
            level = store.subject_compatibility(
                subject, default_to_global=_flag(query, "defaultToGlobal")
            )
            payload = {"compatibilityLevel": level}
        case "PUT", ["config", subject]:
            level = store.set_subject_compatibility(subject, _level_of(body))
            payload = {"compatibility": level}
        case "DELETE", ["config", subject]:
            level = store.delete_subject_compatibility(subject)
            payload = {"compatibilityLevel": level}
        case _:
            raise SchemaStoreError(404, 404, f"HTTP 404 Not Found: {method} {path}")
    return _json_reply(payload)


class _RegistryHTTPServer(ThreadingHTTPServer):
    """A threading HTTP server that carries the store and its lock."""

    allow_reuse_address = True
    daemon_threads = True
    # socketserver's default listen backlog of 5 resets connections when a
    # client fires many requests at once (the registry client opens a new
    # connection per call).
    request_queue_size = 128

    def __init__(
        self,
        address: tuple[str, int],
        store: SchemaStore,
        lock: threading.Lock,
        authorization: str | None = None,
    ) -> None:
        self.store = store
        # The store is not thread-safe; requests are served one at a time.
        self.lock = lock
        # The Authorization header every request must carry, or None.
        self.authorization = authorization
        super().__init__(address, _RegistryRequestHandler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the host with socket.getfqdn, which
        # can stall for seconds on machines with slow reverse DNS.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def handle_error(self, request: object, client_address: object) -> None:
        # A client hanging up mid-reply is not worth a traceback on stderr;
        # the registry must stay silent in test output.
        pass


class _RegistryRequestHandler(BaseHTTPRequestHandler):
    """Decode a request, route it, and always answer with JSON."""

    # HTTP/1.0 closes the connection after each reply, so no keep-alive
    # connection can outlive stop() and keep answering during an "outage".
    protocol_version = "HTTP/1.0"
    server_version = "LocalSchemaRegistry"

    def log_message(self, format: str, *args: Any) -> None:
        # Silence the per-request access log that BaseHTTPRequestHandler
        # writes to stderr.
        pass

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _dispatch(self, method: str) -> None:
        server = cast(_RegistryHTTPServer, self.server)
        split = urlsplit(self.path)
        try:
            body = self._read_body()
            if (
                server.authorization is not None
                and self.headers.get("Authorization") != server.authorization
            ):
                raise SchemaStoreError(401, 40101, "Unauthorized")
            with server.lock:
                reply = _route(
                    server.store, method, split.path, parse_qs(split.query), body
                )
        except SchemaStoreError as error:
            reply = _json_reply(
                {"error_code": error.error_code, "message": error.message}, error.status
            )
        # Any bug must become a 500 reply rather than a dead request thread
        # and a client left waiting for an answer.
        except Exception as exc:
            reply = _json_reply(
                {
                    "error_code": 50001,
                    "message": f"Internal error in LocalSchemaRegistry: "
                    f"{type(exc).__name__}: {exc}",
                },
                500,
            )
        self.send_response(reply.status)
        self.send_header("Content-Type", _CONTENT_TYPE)
        self.send_header("Content-Length", str(len(reply.body)))
        self.end_headers()
        self.wfile.write(reply.body)

    def _read_body(self) -> object:
        length = int(self.headers.get("Content-Length") or 0)
        if length <= 0:
            return None
        raw = self.rfile.read(length)
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise SchemaStoreError(400, 400, f"Malformed JSON body: {exc}") from exc


class LocalSchemaRegistry(StartStop):
    """An in-memory Confluent-compatible Schema Registry for development.

    Serves the Confluent Schema Registry REST API (subjects, versions, schema
    ids, compatibility checks, compatibility config) on 127.0.0.1 from a
    daemon thread, so that code using ``python-schema-registry-client`` can
    be exercised over real sockets without a JVM. Only Avro schemas are
    supported; compatibility follows Apache Avro's reader/writer rules.

    This is not a production registry: state lives in memory only, there is
    no TLS, clustering, schema references, modes or contexts, authentication
    is HTTP basic with one user (to test clients against a registry that
    requires it), and deleting a subject or version is always permanent.

    Parameters
    ----------
    host
        The IPv4 loopback address to bind; anything else is refused, because
        the server has no authentication.
    port
        The TCP port; ``0`` picks a free one on the first `start`. Later
        starts reuse the port actually bound.
    default_compatibility
        The initial global compatibility level, and the one `reset` and
        ``DELETE /config`` restore.
    basic_auth
        A username and password that every request must present with HTTP
        basic authentication (401 otherwise); None accepts any request.

    Raises
    ------
    ValueError
        If ``host`` is not an IPv4 loopback address or
        ``default_compatibility`` is not a known level.

    Examples
    --------
    >>> with LocalSchemaRegistry() as registry:  # doctest: +SKIP
    ...     client = AsyncSchemaRegistryClient(url=registry.url)
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        default_compatibility: str = "BACKWARD",
        basic_auth: tuple[str, str] | None = None,
    ) -> None:
        self._authorization = None
        if basic_auth is not None:
            token = base64.b64encode(":".join(basic_auth).encode()).decode()
            self._authorization = f"Basic {token}"
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            address = None
        if address is None or address.version != 4 or not address.is_loopback:
            raise ValueError(
                f"LocalSchemaRegistry binds only to an IPv4 loopback address such "
                f"as 127.0.0.1, not {host!r}: it has no authentication"
            )
        self._host = host
        self._port = port
        # Raises ValueError for an unknown default level.
        self._store = SchemaStore(default_compatibility)
        # Guards the store, which request threads and reset() share.
        self._store_lock = threading.Lock()
        self._server: _RegistryHTTPServer | None = None
        self._thread: threading.Thread | None = None
        # Serializes start/stop.
        self._lifecycle_lock = threading.Lock()

    @property
    def port(self) -> int:
        """The TCP port; known once the registry has been started.

        Raises
        ------
        RuntimeError
            If the port was 0 and the registry has never been started.
        """
        if self._port == 0:
            raise RuntimeError("LocalSchemaRegistry has no port until start()")
        return self._port

    @property
    def url(self) -> str:
        """The base URL for clients, such as ``http://127.0.0.1:8081``."""
        return f"http://{self._host}:{self.port}"

    @property
    def running(self) -> bool:
        """Whether the server is currently accepting requests."""
        return self._server is not None

    def start(self) -> None:
        """Bind the socket and serve from a daemon thread; no-op if running.

        Raises
        ------
        OSError
            If the port cannot be bound, for instance because another process
            took it while this registry was stopped.
        """
        with self._lifecycle_lock:
            if self._server is not None:
                return
            server = _RegistryHTTPServer(
                (self._host, self._port),
                self._store,
                self._store_lock,
                self._authorization,
            )
            self._port = int(server.server_address[1])
            # A short poll interval keeps stop() fast; shutdown() waits for
            # the serving loop to notice the request.
            thread = threading.Thread(
                target=server.serve_forever,
                kwargs={"poll_interval": 0.05},
                name=f"LocalSchemaRegistry:{self._port}",
                daemon=True,
            )
            thread.start()
            self._server = server
            self._thread = thread

    def stop(self) -> None:
        """Stop serving and close the socket, keeping all stored state.

        Idempotent. A later `start` comes back on the same port with the same
        schemas, ids and configuration, which makes stop/start a simple way
        to simulate a registry outage.
        """
        with self._lifecycle_lock:
            server, thread = self._server, self._thread
            self._server = self._thread = None
            if server is None:
                return
            server.shutdown()
            server.server_close()
            if thread is not None:
                thread.join()

    def restart(self) -> None:
        """Stop, then start again on the same port with the same state."""
        self.stop()
        self.start()

    def reset(self) -> None:
        """Forget every schema, subject and compatibility setting.

        Schema ids start again from 1 and the global level returns to
        ``default_compatibility``. Works whether or not the server is running.
        """
        with self._store_lock:
            self._store.reset()

    async def __aenter__(self) -> Self:
        # Starting binds a socket and spawns a thread; it does not block long
        # enough to need an executor.
        self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
