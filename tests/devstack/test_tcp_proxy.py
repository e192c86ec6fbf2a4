"""`TcpProxy`: bytes pass intact, late by its delay, and it can be switched off.

An echo server on 127.0.0.1 stands behind the proxy; no broker is needed.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
import time
from collections.abc import AsyncIterator

import pytest

from otel_kafka_events_devstack import TcpProxy

DELAY = 0.05


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


@pytest.fixture
async def echo_port() -> AsyncIterator[int]:
    server = await asyncio.start_server(_echo, "127.0.0.1", 0)
    async with server:
        yield server.sockets[0].getsockname()[1]


async def round_trip(port: int, payload: bytes = b"ping") -> float:
    """Seconds from sending ``payload`` to reading it back, on a new
    connection (opened before the clock starts)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        started = time.monotonic()
        writer.write(payload)
        await writer.drain()
        assert await reader.readexactly(len(payload)) == payload
        return time.monotonic() - started
    finally:
        writer.close()


async def test_each_round_trip_takes_at_least_twice_the_delay(echo_port: int) -> None:
    async with TcpProxy(echo_port, delay=DELAY) as proxy:
        trips = [await round_trip(proxy.port) for _ in range(5)]
    # The delay is added once each way.
    assert min(trips) >= 2 * DELAY


async def test_data_passes_intact_and_in_order(echo_port: int) -> None:
    payload = os.urandom(4 * 1024 * 1024)
    async with TcpProxy(echo_port, delay=0.002) as proxy:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)

        async def send() -> None:
            for start in range(0, len(payload), 100_000):
                writer.write(payload[start : start + 100_000])
                await writer.drain()
            writer.write_eof()

        sending = asyncio.create_task(send())
        received = await reader.read(-1)  # to the echoed end of stream
        await sending
        writer.close()
    assert len(received) == len(payload)
    assert hashlib.sha256(received).digest() == hashlib.sha256(payload).digest()


async def test_a_delay_adds_latency_not_a_wait_per_message(echo_port: int) -> None:
    # 20 requests sent back to back on one connection, as a client with
    # several requests in flight does: all answers are late by the round
    # trip, not by 20 round trips.
    count = 20
    async with TcpProxy(echo_port, delay=DELAY) as proxy:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        started = time.monotonic()
        for index in range(count):
            writer.write(b"%04d" % index)
            await writer.drain()
            await asyncio.sleep(0.001)
        echoed = await reader.readexactly(4 * count)
        elapsed = time.monotonic() - started
        writer.close()
    assert echoed == b"".join(b"%04d" % index for index in range(count))
    assert 2 * DELAY <= elapsed < count * 2 * DELAY / 2


async def test_no_delay_by_default(echo_port: int) -> None:
    async with TcpProxy(echo_port) as proxy:
        assert proxy.delay == 0
        assert await round_trip(proxy.port) < 2 * DELAY


async def test_switched_off_it_closes_connections_and_refuses_new_ones(
    echo_port: int,
) -> None:
    async with TcpProxy(echo_port) as proxy:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.write(b"before")
        assert await reader.readexactly(6) == b"before"

        proxy.switch_off()

        # The carried connection ends; a new one is closed at once.
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()

        proxy.switch_on()
        assert await round_trip(proxy.port, b"after") >= 0


def test_stop_ends_its_threads_and_a_restart_keeps_the_port() -> None:
    def proxy_threads() -> list[threading.Thread]:
        return [t for t in threading.enumerate() if t.name.startswith("tcp-proxy")]

    before = proxy_threads()
    proxy = TcpProxy(9, delay=0.001)  # nothing needs to listen behind it
    proxy.start()
    port = proxy.port
    assert proxy.running
    assert proxy.address == f"127.0.0.1:{port}"
    proxy.stop()
    proxy.stop()  # idempotent
    assert not proxy.running
    # Its own threads are gone (another test's may still be ending).
    assert [t for t in proxy_threads() if t not in before] == []
    proxy.start()
    try:
        assert proxy.port == port
    finally:
        proxy.stop()


def test_a_negative_delay_is_refused() -> None:
    with pytest.raises(ValueError, match="delay"):
        TcpProxy(9, delay=-0.001)
