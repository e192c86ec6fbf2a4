"""An in-memory stand-in for the Confluent Schema Registry.

`LocalSchemaRegistry` serves the subset of the Confluent Schema Registry REST
API that ``python-schema-registry-client`` uses, over a real HTTP socket on
127.0.0.1. Avro compatibility is decided by Apache Avro's own
`avro.compatibility.ReaderWriterCompatibilityChecker`, so verdicts match what
a real registry would say for the usual schema evolutions.
"""

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

import avro.schema
from avro.compatibility import ReaderWriterCompatibilityChecker, SchemaCompatibilityType

from .._encoding._registry import COMPATIBILITY_LEVELS
from ._lifecycle import StartStop

__all__ = ["COMPATIBILITY_LEVELS", "LocalSchemaRegistry"]


_CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"

# Confluent limits version ids to a positive signed 32-bit integer.
_MAX_VERSION = 2**31 - 1


class _ApiError(Exception):
    """An error answered to the client as a Confluent-style JSON error body."""

    def __init__(self, status: int, error_code: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error_code = error_code
        self.message = message


@dataclass(frozen=True)
class _Reply:
    """An HTTP status and an already encoded response body."""

    status: int
    body: bytes


def _json_reply(payload: object, status: int = 200) -> _Reply:
    return _Reply(status, json.dumps(payload).encode())


@dataclass(frozen=True)
class _StoredSchema:
    """One distinct schema, shared by every subject that registered it."""

    schema_id: int
    text: str
    """The schema exactly as first registered; returned on every read."""
    parsed: Any
    """The `avro.schema.Schema`, kept to avoid reparsing on each check."""


@dataclass(frozen=True)
class _Candidate:
    """A schema from a request body, parsed and validated."""

    text: str
    parsed: Any
    key: str


def _parse_candidate(body: object) -> _Candidate:
    """Validate a ``{"schema": ..., "schemaType": ...}`` request body.

    Raises
    ------
    _ApiError
        422 / 42201 if the body holds no schema, a non-Avro schema type, or a
        schema Avro cannot parse.
    """
    if not isinstance(body, dict) or not isinstance(body.get("schema"), str):
        raise _ApiError(422, 42201, "Invalid schema: the body needs a 'schema' string")
    schema_type = body.get("schemaType") or "AVRO"
    if schema_type != "AVRO":
        raise _ApiError(
            422,
            42201,
            f"Invalid schema: schema type {schema_type!r} is not supported by "
            "LocalSchemaRegistry, only AVRO",
        )
    text: str = body["schema"]
    try:
        parsed = avro.schema.parse(text)
    # Avro raises assorted exception types (not only SchemaParseException)
    # for malformed input; all of them mean "invalid schema" to the client.
    except Exception as exc:
        raise _ApiError(422, 42201, f"Invalid schema {text}: {exc}") from exc
    return _Candidate(text=text, parsed=parsed, key=_identity_key(parsed))


def _identity_key(parsed: Any) -> str:
    """Return the string that decides whether two schemas are the same.

    The Avro Parsing Canonical Form is deliberately not used: it drops
    defaults, docs and aliases, so ``{"name": "b", "type": "int"}`` and the
    same field with ``"default": 0`` would collide, although they differ for
    compatibility. The full JSON form with sorted keys only normalizes
    whitespace and key order.
    """
    return json.dumps(parsed.to_json(), sort_keys=True, separators=(",", ":"))


def _parse_version(raw: str) -> int | None:
    """Parse a version path segment; `None` stands for the latest version.

    Raises
    ------
    _ApiError
        422 / 42202 if the segment is neither ``latest`` nor a valid id.
    """
    # Confluent accepts -1 as a synonym for "latest".
    if raw in ("latest", "-1"):
        return None
    try:
        version = int(raw)
    except ValueError:
        version = 0
    if not 1 <= version <= _MAX_VERSION:
        raise _ApiError(
            422,
            42202,
            f"The specified version '{raw}' is not a valid version id. Allowed "
            f'values are between [1, {_MAX_VERSION}] and the string "latest"',
        )
    return version


def _validate_level(body: object) -> str:
    """Extract and check the ``compatibility`` field of a config body.

    Raises
    ------
    _ApiError
        422 / 42203 if the level is missing or unknown.
    """
    level = body.get("compatibility") if isinstance(body, dict) else None
    # Confluent is case-insensitive here and answers with the upper-case name.
    if isinstance(level, str) and level.upper() in COMPATIBILITY_LEVELS:
        return level.upper()
    raise _ApiError(
        422,
        42203,
        f"Invalid compatibility level {level!r}. Valid values are "
        f"{', '.join(COMPATIBILITY_LEVELS)}",
    )


def _field_path(schema: Any, location: str) -> str | None:
    """Translate a checker location into dotted field names.

    The checker reports where a problem is as a JSON-pointer-like path through
    the *reader* schema, such as ``/fields/0/type/fields/2``. Users think in
    field names, so this returns e.g. ``"address.zip"``, or `None` when the
    path names no field (or cannot be followed).
    """
    names: list[str] = []
    node = schema
    tokens = [token for token in location.split("/") if token]
    try:
        index = 0
        while index < len(tokens):
            token = tokens[index]
            if token == "fields" and index + 1 < len(tokens):
                field = node.fields[int(tokens[index + 1])]
                names.append(field.name)
                node = field.type
                index += 2
                continue
            if token == "items":
                node = node.items
            elif token == "values":
                node = node.values
            elif token.isdigit():
                node = node.schemas[int(token)]
            elif token != "type":
                break
            index += 1
    except (AttributeError, IndexError, ValueError):
        pass
    return ".".join(names) or None


def _check_pair(
    reader: Any, writer: Any, level: str, version: int, new_is_reader: bool
) -> str | None:
    """Check one reader/writer pair; describe the problem, or return `None`."""
    # A fresh checker per pair: its memo is keyed on object ids, which Python
    # may reuse once earlier schemas are garbage collected. The cast is for
    # mypy: avro ships py.typed but leaves this constructor unannotated.
    checker = cast(Any, ReaderWriterCompatibilityChecker)()
    result = checker.get_compatibility(reader, writer)
    if result.compatibility is not SchemaCompatibilityType.incompatible:
        return None
    if new_is_reader:
        direction = f"the new schema cannot read data written with version {version}"
    else:
        direction = f"version {version} cannot read data written with the new schema"
    locations = sorted(result.locations)
    fields = sorted(
        {name for loc in locations if (name := _field_path(reader, loc)) is not None}
    )
    error_types = sorted({kind.value.upper() for kind in result.incompatibilities})
    return (
        f"{{compatibility: '{level}', oldSchemaVersion: {version}, "
        f"direction: '{direction}', errorTypes: {error_types}, "
        f"fields: {fields}, locations: {locations}, "
        f"messages: {sorted(result.messages)}}}"
    )


def _incompatibilities(
    level: str, new: Any, previous: list[tuple[int, _StoredSchema]]
) -> list[str]:
    """Check ``new`` against ``previous`` (oldest first) under ``level``.

    Non-transitive levels look only at the last entry of ``previous``, the
    transitive ones at all of them, as Confluent does.

    Returns
    -------
    list of str
        One description per failing (version, direction); empty if the new
        schema is compatible.
    """
    if level == "NONE" or not previous:
        return []
    targets = previous if level.endswith("_TRANSITIVE") else previous[-1:]
    base = level.removesuffix("_TRANSITIVE")
    problems: list[str] = []
    for version, old in targets:
        checks: list[str | None] = []
        # BACKWARD: consumers on the new schema read old data.
        if base in ("BACKWARD", "FULL"):
            checks.append(_check_pair(new, old.parsed, level, version, True))
        # FORWARD: consumers still on the old schema read new data.
        if base in ("FORWARD", "FULL"):
            checks.append(_check_pair(old.parsed, new, level, version, False))
        problems.extend(problem for problem in checks if problem is not None)
    return problems


class _RegistryState:
    """Everything the registry stores, guarded by one lock.

    Kept apart from the HTTP server so that it survives a stop and start.
    """

    def __init__(self, default_compatibility: str) -> None:
        self._lock = threading.Lock()
        self._default_compatibility = default_compatibility
        self._clear()

    def _clear(self) -> None:
        self._next_id = 1
        self._schemas: dict[int, _StoredSchema] = {}
        self._ids_by_key: dict[str, int] = {}
        # subject -> {version -> schema id}, in ascending version order.
        self._subjects: dict[str, dict[int, int]] = {}
        self._subject_levels: dict[str, str] = {}
        self._global_level = self._default_compatibility

    def reset(self) -> None:
        with self._lock:
            self._clear()

    # -- helpers; callers hold the lock ---------------------------------------

    def _versions(self, subject: str) -> dict[int, int]:
        versions = self._subjects.get(subject)
        if not versions:
            raise _ApiError(404, 40401, f"Subject '{subject}' not found.")
        return versions

    def _resolve_version(self, subject: str, raw: str) -> int:
        wanted = _parse_version(raw)
        versions = self._versions(subject)
        version = max(versions) if wanted is None else wanted
        if version not in versions:
            raise _ApiError(404, 40402, f"Version {raw} not found.")
        return version

    def _level_for(self, subject: str) -> str:
        return self._subject_levels.get(subject, self._global_level)

    def _history(self, subject: str) -> list[tuple[int, _StoredSchema]]:
        versions = self._subjects.get(subject, {})
        return [(v, self._schemas[i]) for v, i in versions.items()]

    def _describe(self, subject: str, version: int) -> dict[str, object]:
        stored = self._schemas[self._subjects[subject][version]]
        return {
            "subject": subject,
            "version": version,
            "id": stored.schema_id,
            "schema": stored.text,
        }

    # -- subjects and schemas ---------------------------------------------------

    def register(self, subject: str, body: object) -> object:
        candidate = _parse_candidate(body)
        with self._lock:
            versions = self._subjects.get(subject, {})
            existing_id = self._ids_by_key.get(candidate.key)
            if existing_id is not None and existing_id in versions.values():
                return {"id": existing_id}
            problems = _incompatibilities(
                self._level_for(subject), candidate.parsed, self._history(subject)
            )
            if problems:
                raise _ApiError(
                    409,
                    409,
                    "Schema being registered is incompatible with an earlier "
                    f'schema for subject "{subject}", details: [{", ".join(problems)}]',
                )
            if existing_id is None:
                existing_id = self._next_id
                self._next_id += 1
                self._ids_by_key[candidate.key] = existing_id
                self._schemas[existing_id] = _StoredSchema(
                    existing_id, candidate.text, candidate.parsed
                )
            # Numbering continues after the highest live version, so deleting
            # a middle version leaves a gap instead of being renumbered.
            next_version = max(versions, default=0) + 1
            self._subjects.setdefault(subject, {})[next_version] = existing_id
            return {"id": existing_id}

    def lookup(self, subject: str, body: object) -> object:
        with self._lock:
            # An unknown subject is reported before looking at the schema.
            versions = self._versions(subject)
            candidate = _parse_candidate(body)
            schema_id = self._ids_by_key.get(candidate.key)
            for version, version_id in versions.items():
                if version_id == schema_id:
                    return self._describe(subject, version)
        raise _ApiError(404, 40403, "Schema not found")

    def subjects(self) -> object:
        with self._lock:
            return sorted(s for s, versions in self._subjects.items() if versions)

    def versions(self, subject: str) -> object:
        with self._lock:
            return list(self._versions(subject))

    def version(self, subject: str, raw_version: str) -> dict[str, object]:
        with self._lock:
            return self._describe(subject, self._resolve_version(subject, raw_version))

    def schema_by_id(self, raw_id: str) -> _StoredSchema:
        with self._lock:
            stored = self._schemas.get(int(raw_id)) if raw_id.isdigit() else None
        if stored is None:
            raise _ApiError(404, 40403, "Schema not found")
        return stored

    def subject_versions_for_id(self, raw_id: str) -> object:
        schema_id = self.schema_by_id(raw_id).schema_id
        with self._lock:
            return [
                {"subject": subject, "version": version}
                for subject, versions in sorted(self._subjects.items())
                for version, version_id in versions.items()
                if version_id == schema_id
            ]

    def delete_subject(self, subject: str) -> object:
        with self._lock:
            deleted = list(self._versions(subject))
            del self._subjects[subject]
            # Confluent drops the subject's compatibility level with it.
            self._subject_levels.pop(subject, None)
            # Schema ids stay resolvable, as in Confluent: data already
            # written with them must remain readable.
            return deleted

    def delete_version(self, subject: str, raw_version: str) -> object:
        with self._lock:
            version = self._resolve_version(subject, raw_version)
            versions = self._subjects[subject]
            del versions[version]
            if not versions:
                del self._subjects[subject]
            return version

    # -- compatibility ----------------------------------------------------------

    def test_compatibility(
        self, subject: str, raw_version: str | None, body: object, verbose: bool
    ) -> object:
        candidate = _parse_candidate(body)
        with self._lock:
            history = self._history(subject)
            if not history:
                # Confluent 7.x: nothing to be incompatible with.
                problems: list[str] = []
            else:
                if raw_version is not None:
                    # A named version is checked alone, whatever the level.
                    version = self._resolve_version(subject, raw_version)
                    history = [
                        (version, self._schemas[self._subjects[subject][version]])
                    ]
                problems = _incompatibilities(
                    self._level_for(subject), candidate.parsed, history
                )
        reply: dict[str, object] = {"is_compatible": not problems}
        if verbose:
            reply["messages"] = problems
        return reply

    # -- configuration ----------------------------------------------------------

    def global_config(self) -> object:
        with self._lock:
            return {"compatibilityLevel": self._global_level}

    def set_global_config(self, body: object) -> object:
        level = _validate_level(body)
        with self._lock:
            self._global_level = level
        return {"compatibility": level}

    def delete_global_config(self) -> object:
        with self._lock:
            previous = self._global_level
            self._global_level = self._default_compatibility
        return {"compatibilityLevel": previous}

    def subject_config(self, subject: str, default_to_global: bool) -> object:
        with self._lock:
            level = self._subject_levels.get(subject)
            if level is None and default_to_global:
                level = self._global_level
        if level is None:
            raise _ApiError(
                404,
                40408,
                f"Subject '{subject}' does not have subject-level compatibility "
                "configured",
            )
        return {"compatibilityLevel": level}

    def set_subject_config(self, subject: str, body: object) -> object:
        level = _validate_level(body)
        with self._lock:
            self._subject_levels[subject] = level
        return {"compatibility": level}

    def delete_subject_config(self, subject: str) -> object:
        with self._lock:
            previous = self._subject_levels.pop(subject, None)
        if previous is None:
            raise _ApiError(
                404,
                40408,
                f"Subject '{subject}' does not have subject-level compatibility "
                "configured",
            )
        return {"compatibilityLevel": previous}


def _flag(query: dict[str, list[str]], name: str) -> bool:
    return query.get(name, ["false"])[-1].lower() == "true"


def _route(
    state: _RegistryState,
    method: str,
    path: str,
    query: dict[str, list[str]],
    body: object,
) -> _Reply:
    """Map one request onto the state; raise `_ApiError` for error replies."""
    # Split before unquoting so that an encoded "/" stays inside its segment;
    # stripping slashes makes the client's "config/" (no subject) the global
    # config.
    segments = [unquote(part) for part in path.strip("/").split("/")]
    payload: object
    match method, segments:
        case "GET", [""]:
            payload = {}
        case "GET", ["subjects"]:
            payload = state.subjects()
        case "GET", ["subjects", subject, "versions"]:
            payload = state.versions(subject)
        case "POST", ["subjects", subject, "versions"]:
            payload = state.register(subject, body)
        case "GET", ["subjects", subject, "versions", version]:
            payload = state.version(subject, version)
        case "GET", ["subjects", subject, "versions", version, "schema"]:
            # The raw schema is the response document itself.
            text = str(state.version(subject, version)["schema"])
            return _Reply(200, text.encode())
        case "DELETE", ["subjects", subject, "versions", version]:
            payload = state.delete_version(subject, version)
        case "POST", ["subjects", subject]:
            payload = state.lookup(subject, body)
        case "DELETE", ["subjects", subject]:
            payload = state.delete_subject(subject)
        case "GET", ["schemas", "types"]:
            payload = ["AVRO"]
        case "GET", ["schemas", "ids", schema_id]:
            payload = {"schema": state.schema_by_id(schema_id).text}
        case "GET", ["schemas", "ids", schema_id, "versions"]:
            payload = state.subject_versions_for_id(schema_id)
        case "POST", ["compatibility", "subjects", subject, "versions"]:
            # No version: check against every version the level asks for.
            verbose = _flag(query, "verbose")
            payload = state.test_compatibility(subject, None, body, verbose)
        case "POST", ["compatibility", "subjects", subject, "versions", version]:
            verbose = _flag(query, "verbose")
            payload = state.test_compatibility(subject, version, body, verbose)
        case "GET", ["config"]:
            payload = state.global_config()
        case "PUT", ["config"]:
            payload = state.set_global_config(body)
        case "DELETE", ["config"]:
            payload = state.delete_global_config()
        case "GET", ["config", subject]:
            default_to_global = _flag(query, "defaultToGlobal")
            payload = state.subject_config(subject, default_to_global)
        case "PUT", ["config", subject]:
            payload = state.set_subject_config(subject, body)
        case "DELETE", ["config", subject]:
            payload = state.delete_subject_config(subject)
        case _:
            raise _ApiError(404, 404, f"HTTP 404 Not Found: {method} {path}")
    return _json_reply(payload)


class _RegistryHTTPServer(ThreadingHTTPServer):
    """A threading HTTP server that carries the registry state."""

    allow_reuse_address = True
    daemon_threads = True
    # socketserver's default listen backlog of 5 resets connections when a
    # client fires many requests at once (the registry client opens a new
    # connection per call).
    request_queue_size = 128

    def __init__(
        self,
        address: tuple[str, int],
        state: _RegistryState,
        authorization: str | None = None,
    ) -> None:
        self.state = state
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
        state = server.state
        split = urlsplit(self.path)
        try:
            body = self._read_body()
            if (
                server.authorization is not None
                and self.headers.get("Authorization") != server.authorization
            ):
                raise _ApiError(401, 40101, "Unauthorized")
            reply = _route(state, method, split.path, parse_qs(split.query), body)
        except _ApiError as error:
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
            raise _ApiError(400, 400, f"Malformed JSON body: {exc}") from exc


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
        if default_compatibility not in COMPATIBILITY_LEVELS:
            raise ValueError(
                f"Unknown compatibility level {default_compatibility!r}; expected "
                f"one of {', '.join(COMPATIBILITY_LEVELS)}"
            )
        self._host = host
        self._port = port
        self._state = _RegistryState(default_compatibility)
        self._server: _RegistryHTTPServer | None = None
        self._thread: threading.Thread | None = None
        # Serializes start/stop; the state has its own lock.
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
                (self._host, self._port), self._state, self._authorization
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
        self._state.reset()

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
