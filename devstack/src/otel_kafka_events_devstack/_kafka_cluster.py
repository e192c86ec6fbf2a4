"""An Apache Kafka cluster of several nodes on 127.0.0.1, for failover tests.

`KafkaCluster` starts N combined broker and controller nodes, each an
`ApacheKafkaBroker` (so a `ServerProcess`) with its own folder and ports,
sharing one KRaft cluster id and one static quorum of all N controllers.
Topics get three replicas and need two in sync to acknowledge a write
(``acks=all``), the settings of a production cluster. Single nodes can be
killed, stopped and started again while clients keep publishing, and the
partitions' leaders and in-sync replicas read back, to prove what a client
does while leadership moves or the write quorum is lost.

Measured on two loaded cores: three nodes start in 7-26 s; a graceful stop
takes 2-4 s; a SIGKILLed leader's partitions have a new leader after about
``broker.session.timeout.ms`` (4 s here).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import shutil
import tempfile
import time
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from aiokafka.conn import create_conn
from aiokafka.errors import KafkaConnectionError, KafkaError, for_code
from aiokafka.protocol.metadata import MetadataRequest

from ._apache_kafka import KAFKA_VERSION, ApacheKafkaBroker, _cluster_id
from ._broker_base import LocalBroker
from ._process import find_free_ports_below_ephemeral
from ._stack import create_topic

__all__ = ["KafkaCluster", "PartitionState"]

# About 320-420 MB resident each: three fit beside a test run. The C1-only
# JIT of every Apache Kafka node roughly halves the CPU a start takes.
_NODE_HEAP = ("-Xmx384m", "-Xms128m")
# A start that loses a port race fails with one of these in a node's log.
_PORT_TAKEN = ("Address already in use", "BindException")
_START_ATTEMPTS = 3
_POLL_SECONDS = 0.2


@dataclass(frozen=True)
class PartitionState:
    """One partition as the cluster's metadata describes it."""

    partition: int
    leader: int | None
    """The node id of the leader; `None` while the partition has none."""
    replicas: tuple[int, ...]
    """The node ids holding a replica, preferred leader first."""
    in_sync: tuple[int, ...]
    """The replicas caught up with the leader (the ISR)."""


class _ClusterNode(ApacheKafkaBroker):
    """One node of a `KafkaCluster`: ports and quorum given by the cluster."""

    def __init__(
        self,
        node_id: int,
        ports: tuple[int, int],
        cluster_id: str,
        *,
        network_delay: float,
        proxy_port: int,
        broker_properties: Mapping[str, str],
        heap: Sequence[str],
        version: str,
        workdir: Path,
        start_timeout: float,
        stop_timeout: float,
    ) -> None:
        super().__init__(
            port=ports[0],
            network_delay=network_delay,
            broker_properties=broker_properties,
            heap=heap,
            version=version,
            workdir=workdir,
            start_timeout=start_timeout,
            stop_timeout=stop_timeout,
        )
        self.name = f"kafka-{node_id}"
        self.node_id = node_id
        self._given_controller_port = ports[1]
        self._given_proxy_port = proxy_port
        self._kraft_cluster_id = cluster_id

    def _choose_ports(self) -> None:
        super()._choose_ports()
        # The quorum's addresses are in every node's configuration.
        self._controller_port = self._given_controller_port

    def _choose_proxy_port(self) -> None:
        # The proxies' addresses are advertised to every node's clients.
        self._front.choose_port(self._given_proxy_port)


class KafkaCluster(LocalBroker):
    """Apache Kafka nodes on 127.0.0.1 forming one KRaft cluster.

    Every node is both broker and controller; the quorum is all of them,
    fixed in their configuration. Topics default to
    `replication_factor` replicas (3, or fewer with fewer nodes) and
    `min_insync_replicas` (one less than that) for ``acks=all``; unclean
    leader election is off, so a replica that was not in sync never becomes
    leader and acknowledged writes survive; topics are never auto-created;
    Kafka's internal topics are replicated like the others; a consumer
    group's first rebalance does not wait.

    Client ports lie below the kernel's ephemeral range: clients keep
    reconnecting to a stopped node, and one of them could otherwise be given
    its port as a local port and keep it from starting again. Ports and data
    are kept for the object's lifetime, across `kill_node`, `stop_node` and
    `start_node`; `stop` stops every node and removes the data.

    Use as a context manager, or call `start` and `stop`. Node ids are
    Kafka's own, 1 to ``nodes``, as `PartitionState` reports them.

    Parameters
    ----------
    nodes
        How many nodes (each a JVM of up to 384 MB of heap).
    network_delay
        Seconds a `TcpProxy` in front of each node adds to each direction of
        its client connections (those between nodes included); see
        `ApacheKafkaBroker`.
    broker_properties
        Extra or overriding ``server.properties`` entries for every node.
    heap
        JVM heap flags of each node.
    version
        The Kafka release to run.
    workdir
        Folder for the nodes' folders (``node-1`` ...), kept after `stop`;
        by default a temporary folder, removed by `stop`.
    start_timeout, stop_timeout
        Seconds to wait for the nodes' readiness, and for a node's graceful
        exit before ``SIGKILL``.
    """

    name = "kafka-cluster"
    capabilities = ApacheKafkaBroker.capabilities

    def __init__(
        self,
        nodes: int = 3,
        *,
        network_delay: float = 0.0,
        broker_properties: Mapping[str, str] | None = None,
        heap: Sequence[str] = _NODE_HEAP,
        version: str = KAFKA_VERSION,
        workdir: str | os.PathLike[str] | None = None,
        start_timeout: float = 180.0,
        stop_timeout: float = 20.0,
    ) -> None:
        if nodes < 1:
            raise ValueError(f"a cluster needs at least one node, got nodes={nodes}")
        if network_delay < 0:
            raise ValueError(
                f"network_delay must be 0 or more seconds, got {network_delay}"
            )
        self._count = nodes
        self._network_delay = network_delay
        self._extra_properties = dict(broker_properties or {})
        self._heap = tuple(heap)
        self.version = version
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self._given_workdir = Path(workdir) if workdir is not None else None
        self._workdir: Path | None = None
        self._remove_workdir: weakref.finalize[..., object] | None = None
        self._nodes: dict[int, _ClusterNode] = {}

    # -- what clients need ---------------------------------------------------------

    @property
    def replication_factor(self) -> int:
        """Replicas of every topic created by default: 3, or fewer nodes."""
        return min(3, self._count)

    @property
    def min_insync_replicas(self) -> int:
        """In-sync replicas an ``acks=all`` write needs: one less than
        `replication_factor` (at least one)."""
        return max(1, self.replication_factor - 1)

    @property
    def node_ids(self) -> tuple[int, ...]:
        """Kafka's ids of the nodes: 1 to ``nodes``."""
        return tuple(range(1, self._count + 1))

    @property
    def bootstrap_servers(self) -> str:
        """``host:port`` of every node, comma-separated."""
        return ",".join(
            self.node(node_id).bootstrap_servers for node_id in self.node_ids
        )

    def node(self, node_id: int) -> ApacheKafkaBroker:
        """The node with this id: its address, process and log.

        Raises
        ------
        RuntimeError
            If the cluster was never started.
        KeyError
            If there is no such node.
        """
        if not self._nodes:
            raise RuntimeError("the Kafka cluster has not been started")
        if node_id not in self._nodes:
            raise KeyError(f"no node {node_id}: the node ids are {self.node_ids}")
        return self._nodes[node_id]

    @property
    def running(self) -> bool:
        """Whether every node's process is alive."""
        return bool(self._nodes) and all(n.running for n in self._nodes.values())

    def running_nodes(self) -> tuple[int, ...]:
        """The ids of the nodes whose process is alive."""
        return tuple(i for i, node in self._nodes.items() if node.running)

    # -- the whole cluster ---------------------------------------------------------

    def start(self) -> None:
        """Start every node that is not running, together, and return once
        all serve.

        The first start picks the ports (again, on a lost port race), fetches
        the jars if needed and formats each node's storage.

        Raises
        ------
        RuntimeError
            If a node does not start in time; the message ends with the tail
            of its log. Nodes this call started are killed again.
        """
        if self._nodes:
            self._start_nodes([i for i, n in self._nodes.items() if not n.running])
            return
        for attempt in range(_START_ATTEMPTS):
            self._create_nodes()
            try:
                self._start_nodes(self.node_ids)
            except RuntimeError:
                lost_race = any(
                    marker in node.log_text()
                    for node in self._nodes.values()
                    for marker in _PORT_TAKEN
                )
                self.stop()
                if not lost_race or attempt == _START_ATTEMPTS - 1:
                    raise
            except BaseException:
                # E.g. Ctrl-C or a test's timeout: no caller stops a cluster
                # whose start() did not return.
                self.stop()
                raise
            else:
                return

    def stop(self) -> None:
        """Stop every node (gracefully, then ``SIGKILL`` after
        `stop_timeout`) and remove the temporary folder. Idempotent."""
        try:
            self._each(self._nodes, lambda node: node.stop())
        finally:
            if self._remove_workdir is not None:
                self._remove_workdir()
                self._remove_workdir = None
            self._workdir = None
            self._nodes = {}

    def kill(self) -> None:
        """``SIGKILL`` every node, as a power cut would; data is kept."""
        self._each(self._nodes, lambda node: node.kill())

    def restart(self) -> None:
        """Stop every node gracefully, then start them all again."""
        self._each(self._nodes, lambda node: node.stop())
        self.start()

    # -- single nodes --------------------------------------------------------------

    def kill_node(self, node_id: int) -> None:
        """``SIGKILL`` one node, as a crash would; its data is kept."""
        self.node(node_id).kill()

    def stop_node(self, node_id: int) -> None:
        """Stop one node gracefully (a controlled shutdown: its partitions'
        leadership moves first); its data is kept."""
        # The node's folder was given to it, so stop() keeps it.
        self.node(node_id).stop()

    def start_node(self, node_id: int) -> None:
        """Start one stopped or killed node on its ports, with its data, and
        return once it serves; no-op if it runs.

        With the quorum lost (most nodes down), a node only serves once
        enough nodes run: start those together, with `start`.
        """
        self._start_nodes([node_id])

    def restart_node(self, node_id: int) -> None:
        """Stop one node gracefully and start it again."""
        self.stop_node(node_id)
        self.start_node(node_id)

    # -- what the cluster says -----------------------------------------------------

    async def create_topic(self, name: str, partitions: int = 1) -> None:
        """Create a topic with `replication_factor` replicas.

        Raises
        ------
        aiokafka.errors.KafkaError
            If the cluster refuses, e.g. with fewer nodes up than replicas.
        """
        await create_topic(
            self.bootstrap_servers,
            name,
            partitions,
            replication_factor=self.replication_factor,
        )

    async def partitions(self, topic: str) -> dict[int, PartitionState]:
        """The partitions of ``topic``, by id, as the metadata of the first
        running node that answers says: leader, replicas, in-sync replicas.

        Each node is asked directly: an admin client would send the request
        to a node picked at random from the metadata, which while a node is
        down (and, without a quorum, until it is back) still lists it.

        Raises
        ------
        aiokafka.errors.KafkaError
            If the topic is unknown, or no node answers.
        """
        failures: list[str] = []
        for node_id in self.running_nodes():
            try:
                description = await _describe(self.node(node_id), topic)
            except (KafkaError, OSError, TimeoutError) as error:
                failures.append(f"node {node_id}: {error!r}")
                continue
            if description["error_code"]:
                raise for_code(description["error_code"])(f"describing topic {topic!r}")
            states = [_partition_state(entry) for entry in description["partitions"]]
            return {state.partition: state for state in states}
        raise KafkaConnectionError(
            f"no node described topic {topic!r}: {'; '.join(failures) or 'none runs'}"
        )

    async def leader(self, topic: str, partition: int) -> int | None:
        """The node id leading one partition, or `None` while none does."""
        return (await self.partitions(topic))[partition].leader

    async def wait_for_partitions(
        self,
        topic: str,
        condition: Callable[[PartitionState], bool] | None = None,
        *,
        timeout: float = 60.0,
    ) -> dict[int, PartitionState]:
        """Wait until every partition of ``topic`` meets ``condition``.

        By default: every replica is in sync (and so there is a leader), as
        after a node came back and caught up, the moment a rolling restart
        may take down the next node.

        Raises
        ------
        TimeoutError
            After ``timeout`` seconds, with the partitions as last read.
        """
        wanted = condition or _fully_in_sync
        deadline = time.monotonic() + timeout
        while True:
            last: object
            try:
                last = states = await self.partitions(topic)
            except KafkaError as error:  # e.g. every running node just died
                last = error
            else:
                if states and all(wanted(state) for state in states.values()):
                    return states
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"the partitions of {topic!r} did not reach the wanted state"
                    f" within {timeout} s; last read: {last!r}"
                )
            await asyncio.sleep(_POLL_SECONDS)

    # -- internals -----------------------------------------------------------------

    def _node_properties(self) -> dict[str, str]:
        replicas = str(self.replication_factor)
        in_sync = str(self.min_insync_replicas)
        return {
            "default.replication.factor": replicas,
            "min.insync.replicas": in_sync,
            "unclean.leader.election.enable": "false",
            "auto.create.topics.enable": "false",
            "offsets.topic.replication.factor": replicas,
            "transaction.state.log.replication.factor": replicas,
            "transaction.state.log.min.isr": in_sync,
            "share.coordinator.state.topic.replication.factor": replicas,
            "share.coordinator.state.topic.min.isr": in_sync,
            "group.initial.rebalance.delay.ms": "0",
        }

    def _create_nodes(self) -> None:
        if self._given_workdir is not None:
            self._given_workdir.mkdir(parents=True, exist_ok=True)
            self._workdir = self._given_workdir
        else:
            self._workdir = Path(tempfile.mkdtemp(prefix="otel-kafka-events-cluster-"))
            # Also removed if the object is dropped without stop().
            self._remove_workdir = weakref.finalize(
                self, shutil.rmtree, self._workdir, ignore_errors=True
            )
        per_node = 3 if self._network_delay else 2
        ports = find_free_ports_below_ephemeral(per_node * self._count)
        client, controller, proxy = (
            ports[: self._count],
            ports[self._count : 2 * self._count],
            ports[2 * self._count :] or [0] * self._count,
        )
        voters = ",".join(
            f"{node_id}@127.0.0.1:{port}"
            for node_id, port in zip(self.node_ids, controller, strict=True)
        )
        cluster_id = _cluster_id()
        self._nodes = {}
        for index, node_id in enumerate(self.node_ids):
            properties = {
                **self._node_properties(),
                "node.id": str(node_id),
                "controller.quorum.voters": voters,
                **self._extra_properties,
            }
            workdir = self._workdir / f"node-{node_id}"
            # Data of an attempt that lost a port race was formatted for
            # other addresses.
            shutil.rmtree(workdir, ignore_errors=True)
            self._nodes[node_id] = _ClusterNode(
                node_id,
                (client[index], controller[index]),
                cluster_id,
                network_delay=self._network_delay,
                proxy_port=proxy[index],
                broker_properties=properties,
                heap=self._heap,
                version=self.version,
                workdir=workdir,
                start_timeout=self.start_timeout,
                stop_timeout=self.stop_timeout,
            )

    def _start_nodes(self, node_ids: Iterable[int]) -> None:
        """Start nodes together: a node of a quorum serves only once enough
        of the others run, so one at a time would wait for nothing."""
        nodes = {node_id: self.node(node_id) for node_id in node_ids}
        if not nodes:
            return

        def abort_others() -> None:
            # A failed node keeps the others from a quorum: end their wait
            # now rather than at their own timeout.
            for node in nodes.values():
                process = node.process
                if process is not None and process.poll() is None:
                    process.kill()

        self._each(nodes, lambda node: node.start(), on_error=abort_others)

    @staticmethod
    def _each(
        nodes: Mapping[int, ApacheKafkaBroker],
        action: Callable[[ApacheKafkaBroker], None],
        on_error: Callable[[], None] | None = None,
    ) -> None:
        """Run ``action`` on every node at once, in threads; raise the first
        error once all are done."""
        if not nodes:
            return
        with concurrent.futures.ThreadPoolExecutor(
            max_workers=len(nodes), thread_name_prefix="kafka-cluster"
        ) as pool:
            futures = [pool.submit(action, node) for node in nodes.values()]
            try:
                done, _ = concurrent.futures.wait(
                    futures, return_when=concurrent.futures.FIRST_EXCEPTION
                )
            except BaseException:
                # Interrupted: end the others' wait too before leaving.
                if on_error is not None:
                    on_error()
                raise
            if on_error is not None and any(f.exception() for f in done):
                on_error()
        errors = [error for f in futures if (error := f.exception()) is not None]
        if errors:
            raise errors[0]


async def _describe(node: ApacheKafkaBroker, topic: str) -> dict[str, Any]:
    """The metadata of ``topic`` as ``node`` knows it."""
    host, port = node.bootstrap_servers.rsplit(":", 1)
    connection = await create_conn(host, int(port), request_timeout_ms=5000)
    try:
        response = await connection.send(MetadataRequest([topic]))
    finally:
        connection.close()
    (description,) = response.to_object()["topics"]
    return cast(dict[str, Any], description)


def _fully_in_sync(state: PartitionState) -> bool:
    return state.leader is not None and set(state.in_sync) == set(state.replicas)


def _partition_state(entry: Mapping[str, Any]) -> PartitionState:
    leader = int(entry["leader"])
    return PartitionState(
        partition=int(entry["partition"]),
        leader=leader if leader >= 0 else None,
        replicas=tuple(int(r) for r in entry["replicas"]),
        in_sync=tuple(int(r) for r in entry["isr"]),
    )
