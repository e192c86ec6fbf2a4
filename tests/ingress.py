"""An ingress in front of a server, for the Kubernetes-reality tests.

It forwards ``127.0.0.1:<port>`` to the server like the devstack's
`TcpProxy`, and also plays what an ingress does while the pod behind it is
away. Off, it closes the connections it carries and answers new ones by closing
them, as a crashed server's host would; on again, it forwards as before.
Paused, it accepts connections and carries nothing either way, as a server
that hangs (or a network that drops every packet) does; resumed, it
forwards what it held. Told to answer, it reads each request and answers
it with fixed bytes itself, as an ingress in front of a restarting pod
answers ``502 Bad Gateway`` with an HTML page.
"""

from __future__ import annotations

import asyncio
import contextlib


def http_response(status: int, reason: str, body: bytes, kind: str) -> bytes:
    """A complete HTTP/1.1 response that closes its connection."""
    head = (
        f"HTTP/1.1 {status} {reason}\r\n"
        f"Content-Type: {kind}\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode() + body


BAD_GATEWAY = http_response(
    502,
    "Bad Gateway",
    b"<html><head><title>502 Bad Gateway</title></head><body>"
    b"<center><h1>502 Bad Gateway</h1></center><hr><center>nginx</center>"
    b"</body></html>\r\n",
    "text/html",
)
"""What an ingress-nginx answers while the pod behind it is away."""

SERVICE_UNAVAILABLE = http_response(
    503,
    "Service Temporarily Unavailable",
    b"<html><body><h1>503 Service Temporarily Unavailable</h1></body></html>",
    "text/html",
)


class Ingress:
    """Forwards ``127.0.0.1:<port>`` to ``127.0.0.1:<target_port>``.

    Parameters
    ----------
    target_port
        Where connections go.
    """

    def __init__(self, target_port: int) -> None:
        self._target_port = target_port
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._answer: bytes | None = None
        self.enabled = True
        self.port = 0
        self.answered = 0
        """How many requests the proxy answered itself."""

    async def __aenter__(self) -> Ingress:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.resume()
        self.switch_off()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``."""
        return f"http://127.0.0.1:{self.port}"

    def switch_off(self) -> None:
        """Close every carried connection and refuse new ones."""
        self.enabled = False
        for writer in list(self._writers):
            writer.close()

    def switch_on(self) -> None:
        """Forward new connections again."""
        self.enabled = True

    def pause(self) -> None:
        """Accept connections, and carry nothing either way until `resume`."""
        self._flowing.clear()

    def resume(self) -> None:
        """Carry what was held, and everything after it."""
        self._flowing.set()

    def answer_with(self, response: bytes | None) -> None:
        """Answer each new request with ``response`` (None: forward again)."""
        self._answer = response

    async def _handle(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        if not self.enabled:
            writer.close()
            return
        answer = self._answer
        if answer is not None:
            await self._answer_request(reader, writer, answer)
            return
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(
                "127.0.0.1", self._target_port
            )
        except OSError:
            writer.close()
            return
        self._writers.update((writer, upstream_writer))
        try:
            await asyncio.gather(
                self._pipe(reader, upstream_writer), self._pipe(upstream_reader, writer)
            )
        finally:
            self._writers.difference_update((writer, upstream_writer))
            for end in (writer, upstream_writer):
                end.close()

    async def _answer_request(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, answer: bytes
    ) -> None:
        self._writers.add(writer)
        try:
            with contextlib.suppress(
                ConnectionError, OSError, asyncio.IncompleteReadError
            ):
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                if length:
                    await reader.readexactly(length)
                await self._flowing.wait()
                writer.write(answer)
                await writer.drain()
                self.answered += 1
        finally:
            self._writers.discard(writer)
            writer.close()

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await reader.read(65536):
                await self._flowing.wait()
                writer.write(data)
                await writer.drain()
        writer.close()
