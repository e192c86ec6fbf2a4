"""``otel-kafka-events stack``: a local broker and registry in the foreground.

For developing a service: starts a broker (Tansu by default), the schema
registry and, with ``--otlp``, an OTLP/HTTP receiver, all on 127.0.0.1;
creates the service's topics; prints the environment lines the service
needs (to stdout, and to ``--env-file``); then waits, echoing what reaches
the OTLP receiver, until Ctrl-C or SIGTERM stops everything it started.

With ``--broker kafka --nodes 3`` the broker is a `KafkaCluster`, and lines
typed on stdin (``kill 2``, ``stop 2``, ``start 2``, ``restart 2``,
``nodes``) crash, stop and start its nodes and show where the partitions'
leaders are, to try failover by hand.
"""

from __future__ import annotations

import asyncio
import os
import queue
import signal
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from otel_kafka_events._cli import CliError, EventSettings, err, out

from ._environment import stack_environment
from ._stack import BROKER_KINDS, LocalKafkaStack

if TYPE_CHECKING:
    from ._kafka_cluster import KafkaCluster

__all__ = ["stack"]


@contextmanager
def _stop_on_signals() -> Iterator[threading.Event]:
    """An event set by SIGINT or SIGTERM while the block runs.

    Lets a start in progress finish (so nothing is left half-started) and
    then stop in order, instead of `KeyboardInterrupt` landing anywhere.
    """
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop  # signals only reach the main thread
        return
    previous = {
        sig: signal.signal(sig, lambda *_: stop.set())
        for sig in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _write_env_file(path: Path, environment: dict[str, str]) -> None:
    """Write ``NAME=value`` lines atomically: readers never see half a file."""
    text = "".join(f"{name}={value}\n" for name, value in environment.items())
    directory = path.parent if str(path.parent) else Path(".")
    with tempfile.NamedTemporaryFile(
        "w", dir=directory, prefix=f".{path.name}.", delete=False
    ) as file:
        file.write(text)
    os.replace(file.name, path)


class _OtlpEcho:
    """Prints each log record and span the OTLP receiver gets, once."""

    def __init__(self, receiver: Any) -> None:
        self._receiver = receiver
        self._logs = 0
        self._spans = 0

    def poll(self) -> None:
        logs = self._receiver.logs
        for record in logs[self._logs :]:
            err.print(
                f"OTLP log  {record.event_name or record.body!s}"
                f" trace={record.trace_id or '-'}",
                highlight=False,
                markup=False,
            )
        self._logs = len(logs)
        spans = self._receiver.spans
        for span in spans[self._spans :]:
            err.print(
                f"OTLP span {span.name} trace={span.trace_id}",
                highlight=False,
                markup=False,
            )
        self._spans = len(spans)


def _topics(
    topics: tuple[str, ...], applications: tuple[str, ...], settings: EventSettings
) -> list[str]:
    wanted = [*topics, *(settings.topic(app) for app in applications)]
    return list(dict.fromkeys(wanted))


@click.command()
@click.option(
    "--broker",
    type=click.Choice(BROKER_KINDS),
    default="tansu",
    show_default=True,
    help="Broker to run (kafka needs Java 17 and Maven).",
)
@click.option(
    "--topic", "topics", multiple=True, metavar="NAME", help="Create this topic."
)
@click.option(
    "--application",
    "applications",
    multiple=True,
    metavar="NAME",
    help="Create the events topic of this application (default: METRICS_APPLICATION).",
)
@click.option(
    "--partitions",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Partitions of each topic created.",
)
@click.option(
    "--nodes",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="With --broker kafka: run a cluster of this many nodes (3 replicas"
    " per topic, 2 in sync for a write), whose nodes you can kill and start"
    " by typing commands.",
)
@click.option("--otlp", is_flag=True, help="Also run an OTLP/HTTP receiver.")
@click.option(
    "--env-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write the environment lines to this file (removed on exit).",
)
def stack(
    broker: str,
    topics: tuple[str, ...],
    applications: tuple[str, ...],
    partitions: int,
    nodes: int,
    otlp: bool,
    env_file: Path | None,
) -> None:
    """Run a local broker and schema registry until Ctrl-C.

    Creates the topics given with --topic and --application (or
    METRICS_APPLICATION), prints the environment lines a service needs to
    publish to them, and stops everything on Ctrl-C or SIGTERM.

    With --nodes 3 (Apache Kafka only), type `kill N`, `stop N`, `start N`,
    `restart N` or `nodes` and Enter to crash, stop or start node N, or to
    see the nodes and the partitions' leaders.
    """
    if nodes > 1 and broker != "kafka":
        raise CliError(
            f"--nodes {nodes} needs --broker kafka: only Apache Kafka runs as a"
            " cluster here",
            "add --broker kafka, or leave out --nodes",
            exit_code=2,
        )
    settings = EventSettings()
    if not applications and (from_env := os.environ.get("METRICS_APPLICATION")):
        applications = (from_env,)
    wanted_topics = _topics(topics, applications, settings)
    with _stop_on_signals() as stop:
        cluster = _make_cluster(nodes)
        local = LocalKafkaStack(cluster or broker)
        with err.status(f"Starting the {broker} broker and the schema registry..."):
            try:
                local.start()
            except Exception as exc:
                raise CliError(
                    f"the {broker} broker or the schema registry did not start"
                    f" ({type(exc).__name__}: {exc})",
                    "try another --broker; the kafka broker needs Java 17 and Maven",
                ) from exc
        receiver: Any = None
        try:
            if otlp:
                receiver = _start_receiver()
            _create_topics(local, wanted_topics, partitions)
            environment = stack_environment(
                local.bootstrap_servers,
                local.registry_url,
                idempotent_producer=local.broker.capabilities.idempotent_producer,
                application=applications[0] if len(applications) == 1 else None,
                topic_prefix=settings.topic_prefix
                if "METRICS_EVENTS_TOPIC_PREFIX" in os.environ
                else None,
                otlp_endpoint=receiver.endpoint if receiver is not None else None,
            )
            _announce(local, wanted_topics, environment, env_file)
            echo = _OtlpEcho(receiver) if receiver is not None else None
            commands = _NodeCommands(cluster, wanted_topics) if cluster else None
            while not stop.wait(0.25):
                if echo is not None:
                    echo.poll()
                if commands is not None:
                    commands.run_pending()
        finally:
            with err.status("Stopping..."):
                if env_file is not None:
                    env_file.unlink(missing_ok=True)
                if receiver is not None:
                    receiver.stop()
                local.stop()
            err.print("Stopped.")


def _make_cluster(nodes: int) -> KafkaCluster | None:
    if nodes == 1:
        return None
    # Imported here: it needs the Apache Kafka launcher, as --broker kafka.
    from ._kafka_cluster import KafkaCluster

    return KafkaCluster(nodes)


class _NodeCommands:
    """Node commands typed on stdin, run between the stack's other chores.

    A daemon thread reads the lines (it may block in ``readline`` until the
    process exits); the main thread runs them, so a node's start never
    overlaps the stack's stop.
    """

    _HELP = (
        "Commands: kill N (SIGKILL, as a crash), stop N (graceful), start N,"
        " restart N, nodes (each node, and the partitions' leaders and"
        " in-sync replicas)."
    )

    def __init__(self, cluster: KafkaCluster, topics: list[str]) -> None:
        self._cluster = cluster
        self._topics = topics
        self._lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True, name="node-commands").start()
        self._show()
        err.print(self._HELP, highlight=False, markup=False)

    def _read(self) -> None:
        for line in sys.stdin:
            self._lines.put(line)

    def run_pending(self) -> None:
        while True:
            try:
                line = self._lines.get_nowait()
            except queue.Empty:
                return
            self._run(line.split())

    def _run(self, words: list[str]) -> None:
        actions = {
            "kill": self._cluster.kill_node,
            "stop": self._cluster.stop_node,
            "start": self._cluster.start_node,
            "restart": self._cluster.restart_node,
        }
        if words == ["nodes"]:
            self._show()
            return
        if len(words) != 2 or words[0] not in actions or not words[1].isdigit():
            if words:
                err.print(
                    f"? {' '.join(words)}. {self._HELP}", highlight=False, markup=False
                )
            return
        verb, node_id = words[0], int(words[1])
        if node_id not in self._cluster.node_ids:
            err.print(
                f"No node {node_id}: the nodes are {self._cluster.node_ids}.",
                highlight=False,
                markup=False,
            )
            return
        with err.status(f"{verb} node {node_id}..."):
            try:
                actions[verb](node_id)
            except RuntimeError as exc:
                err.print(
                    f"{verb} node {node_id} failed: {exc}",
                    highlight=False,
                    markup=False,
                )
                return
        err.print(f"Node {node_id}: {verb} done.", highlight=False, markup=False)

    def _show(self) -> None:
        running = self._cluster.running_nodes()
        for node_id in self._cluster.node_ids:
            node = self._cluster.node(node_id)
            process = node.process
            state = (
                f"running, pid {process.pid}"
                if node_id in running and process
                else "down"
            )
            err.print(
                f"Node {node_id} at {node.bootstrap_servers}: {state}",
                highlight=False,
                markup=False,
            )
        for topic in self._topics:
            try:
                partitions = asyncio.run(self._cluster.partitions(topic))
            except Exception as exc:
                err.print(
                    f"Topic {topic}: no metadata ({exc})", highlight=False, markup=False
                )
                continue
            for part in partitions.values():
                leader = part.leader if part.leader is not None else "none"
                err.print(
                    f"Topic {topic} partition {part.partition}: leader {leader},"
                    f" in sync {list(part.in_sync)} of {list(part.replicas)}",
                    highlight=False,
                    markup=False,
                )


def _start_receiver() -> Any:
    try:
        from ._otlp import OtlpReceiver
    except ImportError as exc:
        raise CliError(
            f"--otlp needs the otel extra ({exc})",
            "pip install 'otel-kafka-events[testing,otel]'",
        ) from exc
    receiver = OtlpReceiver()
    receiver.start()
    return receiver


def _create_topics(local: Any, topics: list[str], partitions: int) -> None:
    async def create() -> None:
        for topic in topics:
            await local.create_topic(topic, partitions, exist_ok=True)

    if topics:
        with err.status(f"Creating {len(topics)} topics..."):
            asyncio.run(create())


def _announce(
    local: Any, topics: list[str], environment: dict[str, str], env_file: Path | None
) -> None:
    broker = local.broker
    err.print(
        f"[bold]{broker.name}[/] broker at {local.bootstrap_servers}, schema"
        f" registry at {local.registry_url}",
        highlight=False,
    )
    if broker.replication_factor > 1:
        err.print(
            f"Topics have {broker.replication_factor} replicas; a write needs"
            " 2 in sync.",
            highlight=False,
        )
    for topic in topics:
        err.print(f"Topic {topic}", highlight=False, markup=False)
    if not topics:
        err.print(
            "No topics created (give --topic or --application, or set"
            " METRICS_APPLICATION).",
            highlight=False,
        )
    err.print("Environment for a service:", highlight=False)
    for name, value in environment.items():
        out.print(f"{name}={value}", highlight=False, markup=False)
    if env_file is not None:
        _write_env_file(env_file, environment)
        err.print(
            f"(also in {env_file}: `set -a; . {env_file}; set +a`)",
            highlight=False,
            markup=False,
        )
    err.print("Press Ctrl-C to stop.", highlight=False)
