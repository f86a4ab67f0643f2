"""A local, disposable RabbitMQ cluster for tests that kill and restart cluster nodes.

:class:`Cluster` starts ``size`` private nodes of the installed RabbitMQ (Debian's
3.10), each a :class:`tests.harness.broker_node.BrokerNode` with its own name, ports and
data directory, and joins nodes 2..N to node 1. It never touches the shared broker
on 127.0.0.1:5672 (node ``rabbit@localhost``): every ``rabbitmqctl`` call names one
of the cluster's own nodes with ``-n``, and nothing is ever signalled unless its
environment carries one of the cluster's unique node names.

API::

    with Cluster() as cluster:          # Cluster(size=3, advanced_config=..., ...)
        cluster.nodes                   # [BrokerNode, ...]; node 1 is nodes[0]
        cluster.urls                    # ["amqp://guest:guest@127.0.0.1:PORT/", ...]
        cluster.url_list                # the same, comma-joined
        cluster.boot_seconds            # how long start() took
        leader = cluster.leader_of("q")  # the BrokerNode leading quorum queue "q"
        cluster.kill(leader)            # SIGKILL its Erlang VM, like a crash
        cluster.wait_for_leader("q", not_on=leader)  # re-elected on a survivor
        cluster.restart(leader)         # boots again; rejoins (verified) by itself
        cluster.running_nodes()         # node names cluster_status calls running
        cluster.ctl("list_queues")      # rabbitmqctl -n <first running node> ...

Nodes may be given as a :class:`BrokerNode` of this cluster or as an index into
:attr:`Cluster.nodes` (0-based: ``0`` is node 1). All methods block; call them through
``asyncio.to_thread`` from async tests.

Times on this machine (2 cores): :meth:`Cluster.start` takes 12-15 s for three
nodes (they boot in parallel, about 10-12 s, then join: about 5 s), :meth:`Cluster.kill`
under half a second, :meth:`Cluster.restart` about 5 s, :meth:`Cluster.close` well
under a second (the nodes are SIGKILLed, not stopped: their data is deleted anyway).
A quorum queue whose leader is killed is consumable through a survivor within a
second.

Settings every node gets:

* ``RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="+S 1:1 +sbwt none"`` (``erl_args``): one
  scheduler that does not busy-wait, so three nodes stay usable on two shared cores;
* ``advanced.config`` (``advanced_config``), by default
  :data:`DEFAULT_ADVANCED_CONFIG`, which lowers the ``rabbit`` app's
  ``dead_letter_worker_publisher_confirm_timeout`` from 180000 ms to 5000 ms: after
  a node is lost, a quorum queue's at-least-once dead-letter worker can keep
  addressing a target queue through the dead node, and retries only after this
  timeout (measured stalls: :data:`DEFAULT_ADVANCED_CONFIG`);
* ``extra_config`` is appended to each node's ``rabbitmq.conf``.

Safety net: besides the per-node ``atexit`` hook of :class:`BrokerNode`, start()
launches a small reaper process that holds a pipe from the test process. If the
pipe closes without close() having said so first, i.e. the test process died in any
way, SIGKILL or ``os._exit`` (pytest-timeout's thread method) included, the reaper
kills every process whose environment names one of this cluster's nodes and deletes
the cluster's directory. No orphan ``beam.smp`` survives a crashed test run.

A module-scoped fixture looks like this (see tests/harness/test_cluster_harness.py)::

    @pytest.fixture(scope="module")
    def cluster() -> Iterator[Cluster]:
        if not rabbitmq_available():
            pytest.skip("needs rabbitmq-server installed and root")
        with Cluster() as started:
            yield started
"""

from __future__ import annotations

import atexit
import concurrent.futures
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self, TypeVar

from tests.harness.broker_node import NODE_BASE_DIR, BrokerNode, rabbitmq_available

__all__ = [
    "DEFAULT_ADVANCED_CONFIG",
    "SMALL_MACHINE_ERL_ARGS",
    "Cluster",
    "rabbitmq_available",
]

DEFAULT_ADVANCED_CONFIG = "[{rabbit, [{dead_letter_worker_publisher_confirm_timeout, 5000}]}].\n"
"""``advanced.config`` for every node unless ``Cluster(advanced_config=...)`` says otherwise.

Measured here (3.10.8, three nodes; ``test_dlx_stall_after_leader_kill``): a quorum
source queue (x-message-ttl 2 s, at-least-once dead-lettering, reject-publish) feeds a
quorum target queue; node 1 is SIGKILLed while messages expire.

* Only one of the two leaders on node 1: no stall with 5000 or 180000 ms; every
  message reached the target as its TTL ran out (14 of 14 trials).
* Both leaders on node 1: in about half the trials (5 of 11 at 5000 ms, 3 of 4 at
  180000 ms) dead-lettering stopped (~26 of 120 arrived) for as long as node 1 stayed
  down (up to 60 s and 240 s watched), whatever the timeout: the new leader's
  dead-letter worker retried every timeout, but addressed the target queue through
  the dead node each time and each retry was rejected. Once node 1 was back, the
  rest arrived 5.8 s later with 5000 ms and 120 s later with 180000 ms (the next
  retry tick, about 360 s after the kill).

So 5000 ms does not bound the stall while a node is down; it bounds the wait after
the node returns to seconds instead of up to three minutes.
"""

SMALL_MACHINE_ERL_ARGS = "+S 1:1 +sbwt none"
"""Erlang VM flags for each node: one scheduler, no busy waiting."""

_T = TypeVar("_T")

_REPO_ROOT = Path(__file__).resolve().parents[2]

# What close() writes to the reaper before closing its stdin: "nothing left to do".
_CLOSED = b"closed"


class Cluster:
    """A local RabbitMQ cluster of ``size`` private nodes; see the module docstring.

    Nothing runs until :meth:`start` (or ``with Cluster() as cluster``). :meth:`close`
    (also on leaving the ``with`` block) kills every node and deletes all files; the
    object cannot be started again after that. Not thread-safe.
    """

    def __init__(
        self,
        size: int = 3,
        *,
        advanced_config: str = DEFAULT_ADVANCED_CONFIG,
        extra_config: str = "",
        erl_args: str = SMALL_MACHINE_ERL_ARGS,
        startup_timeout: float = 120.0,
        stop_timeout: float = 30.0,
        base_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        """Choose names and ports for ``size`` nodes; nothing is created or started yet.

        ``startup_timeout`` bounds each node's boot, and separately the join and the
        wait for all nodes to be reported running (seconds). ``base_dir`` is where the
        cluster's directory goes (default: the system temp dir); the ``rabbitmq``
        user must be able to enter every directory above it.
        """
        if size < 1:
            raise ValueError("a cluster needs at least one node")
        self.cluster_id = uuid.uuid4().hex[:8]
        self.startup_timeout = startup_timeout
        base = Path(base_dir) if base_dir is not None else NODE_BASE_DIR
        self._root = base / f"awcluster-{self.cluster_id}"
        env = {"RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": erl_args} if erl_args else {}
        self.nodes: list[BrokerNode] = [
            BrokerNode(
                name_prefix=f"awcluster-{self.cluster_id}-{number}",
                base_dir=self._root,
                startup_timeout=startup_timeout,
                stop_timeout=stop_timeout,
                extra_config=extra_config,
                advanced_config=advanced_config,
                extra_env=env,
            )
            for number in range(1, size + 1)
        ]
        self._reaper: subprocess.Popen[bytes] | None = None
        self._root_created = False
        self._started = False
        self._closed = False
        self.boot_seconds: float | None = None
        """Wall-clock seconds the latest start() took (boot, join, verify)."""

    # -- public API ----------------------------------------------------------------

    @property
    def urls(self) -> list[str]:
        """One AMQP URL per node, in node order, as ``guest`` (loopback only)."""
        return [node.url for node in self.nodes]

    @property
    def url_list(self) -> str:
        """All node URLs, comma-joined."""
        return ",".join(self.urls)

    @property
    def directory(self) -> Path:
        """The directory holding every node's files (exists between start and close)."""
        return self._root

    @property
    def node_names(self) -> list[str]:
        """Erlang node names, in node order."""
        return [node.node_name for node in self.nodes]

    def node(self, node: BrokerNode | int) -> BrokerNode:
        """The cluster's node given as itself or as an index into :attr:`nodes`."""
        if isinstance(node, int):
            return self.nodes[node]
        if node not in self.nodes:
            raise ValueError(f"{node!r} is not a node of this cluster")
        return node

    def start(self) -> None:
        """Boot all nodes in parallel, join nodes 2..N to node 1, verify all run.

        Returns once every node's ``cluster_status`` lists all nodes as running and
        every node accepts AMQP connections. On any failure everything is killed and
        deleted (the object is closed) and RuntimeError is raised.
        """
        if self._closed:
            raise RuntimeError("Cluster was closed; make a new one")
        if self._started:
            raise RuntimeError("Cluster is already started")
        self._started = True
        started = time.monotonic()
        try:
            self._root.mkdir(parents=False)
            self._root_created = True
            self._root.chmod(0o755)
            self._start_reaper()
            atexit.register(self._kill_at_exit)
            _parallel(lambda node: node.start(), self.nodes)
            seed, *others = self.nodes
            if others:
                _parallel(lambda node: node.ctl("stop_app"), others)
                # One join at a time: each changes the membership of node 1's Mnesia.
                for node in others:
                    node.ctl("join_cluster", seed.node_name, timeout=self.startup_timeout)
                _parallel(lambda node: node.ctl("start_app", timeout=self.startup_timeout), others)
            self.await_running(self.nodes)
        except BaseException:
            self.close()
            raise
        self.boot_seconds = time.monotonic() - started

    def kill(self, node: BrokerNode | int, *, flush_metadata: bool = True) -> None:
        """SIGKILL ``node``'s Erlang VM and wait until it is gone (see BrokerNode.kill)."""
        self.node(node).kill(flush_metadata=flush_metadata)

    def stop(self, node: BrokerNode | int) -> None:
        """Stop ``node`` gracefully (``rabbitmqctl stop``); it stays a cluster member."""
        self.node(node).stop()

    def restart(self, node: BrokerNode | int) -> float:
        """Start a killed or stopped ``node`` again and verify it is back in the cluster.

        The node's data directory remembers the cluster, so it rejoins by itself;
        this waits until every running node's ``cluster_status`` lists it as
        running. A node still running is stopped gracefully first. Returns the
        seconds it took.
        """
        target = self.node(node)
        started = time.monotonic()
        target.restart()
        self.await_running([n for n in self.nodes if n.is_running()])
        return time.monotonic() - started

    def ctl(self, *args: str, via: BrokerNode | int | None = None, timeout: float = 30.0) -> str:
        """``rabbitmqctl -n NODE ARGS`` on ``via`` (default: the first running node); stdout."""
        return self._via(via).ctl(*args, timeout=timeout)

    def running_nodes(self, via: BrokerNode | int | None = None) -> set[str]:
        """The node names ``via``'s ``cluster_status`` reports as running.

        ``via`` defaults to the first node whose VM is running.
        """
        status = json.loads(self._via(via).ctl("cluster_status", "--formatter", "json"))
        return set(status["running_nodes"])

    def await_running(self, nodes: Sequence[BrokerNode], timeout: float | None = None) -> None:
        """Wait until each of ``nodes`` sees exactly ``nodes`` running and accepts AMQP.

        Raises RuntimeError after ``timeout`` (default ``startup_timeout``) seconds.
        """
        expected = {node.node_name for node in nodes}
        deadline = time.monotonic() + (self.startup_timeout if timeout is None else timeout)
        views: list[set[str] | str] = []
        while True:
            views = _parallel(self._view, nodes)
            if all(view == expected for view in views) and all(
                _port_open(node.port) for node in nodes
            ):
                return
            if time.monotonic() > deadline:
                report = "\n".join(
                    f"  {node.node_name}: {view}" for node, view in zip(nodes, views, strict=True)
                )
                raise RuntimeError(
                    f"cluster nodes do not all report {sorted(expected)} running:\n{report}"
                )
            time.sleep(0.5)

    def leader_of(
        self, queue: str, *, vhost: str = "/", via: BrokerNode | int | None = None
    ) -> BrokerNode | None:
        """The node leading quorum queue ``queue``, per ``rabbitmqctl list_queues``.

        None if no leader is known right now (an election is under way) or the
        leader named is not one of this cluster's nodes. Raises LookupError if
        ``via`` (default: the first running node) does not list the queue at all.
        """
        output = self._via(via).ctl(
            "list_queues", "-p", vhost, "name", "leader", "--formatter", "json"
        )
        for row in json.loads(output):
            if row.get("name") == queue:
                leader = row.get("leader")
                return next((n for n in self.nodes if n.node_name == leader), None)
        raise LookupError(f"queue {queue!r} is not listed in vhost {vhost!r}")

    def wait_for_leader(
        self,
        queue: str,
        *,
        not_on: BrokerNode | int | None = None,
        vhost: str = "/",
        timeout: float = 30.0,
    ) -> BrokerNode:
        """Wait until ``queue`` has a leader on a running node other than ``not_on``."""
        excluded = self.node(not_on) if not_on is not None else None
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(RuntimeError, LookupError):
                leader = self.leader_of(queue, vhost=vhost)
                if leader is not None and leader is not excluded and leader.is_running():
                    return leader
            if time.monotonic() > deadline:
                raise RuntimeError(f"no leader for {queue!r} on a running node in {timeout}s")
            time.sleep(0.25)

    def close(self) -> None:
        """Kill every node and delete all files. Safe to call more than once."""
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self._kill_at_exit)
        try:
            # The data is about to be deleted: a graceful stop would only cost time
            # (and may hang while quorum queues lose their majority).
            _parallel(_kill_quietly, self.nodes)
            for node in self.nodes:
                node.close()
            _reap(self.node_names, settle=0.0)
        finally:
            if self._root_created:
                shutil.rmtree(self._root, ignore_errors=True)
            self._stop_reaper()

    def log_tails(self, lines: int = 20) -> str:
        """The last ``lines`` log lines of every node, for failure messages."""
        return "\n".join(node.log_tail(lines) for node in self.nodes)

    def __enter__(self) -> Self:
        self.start()  # closes the cluster itself if it fails
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        states = ", ".join(
            f"{n.node_name}:{n.port}{'' if n.is_running() else ' (down)'}" for n in self.nodes
        )
        return f"<Cluster {states}>"

    # -- internals -----------------------------------------------------------------

    def _via(self, via: BrokerNode | int | None) -> BrokerNode:
        if via is not None:
            return self.node(via)
        for node in self.nodes:
            if node.is_running():
                return node
        raise RuntimeError("no cluster node is running")

    def _view(self, node: BrokerNode) -> set[str] | str:
        """``node``'s running nodes, or why it could not say."""
        try:
            return self.running_nodes(via=node)
        except (RuntimeError, ValueError, KeyError) as exc:
            return f"error: {str(exc).strip()[:300]}"

    def _start_reaper(self) -> None:
        """Launch the process that cleans up after this one if it dies (module docstring)."""
        code = (
            f"import sys; sys.path.insert(0, {str(_REPO_ROOT)!r}); "
            "from tests.harness.cluster import _reaper_main; _reaper_main()"
        )
        self._reaper = subprocess.Popen(
            [sys.executable, "-c", code, str(self._root), *self.node_names],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            # Its own session: a Ctrl-C to the test run's process group leaves it be.
            start_new_session=True,
        )

    def _stop_reaper(self) -> None:
        reaper, self._reaper = self._reaper, None
        if reaper is None:
            return
        assert reaper.stdin is not None
        with contextlib.suppress(OSError):
            # Cleaned up already: tells the reaper to exit without its sweep.
            reaper.stdin.write(_CLOSED)
        with contextlib.suppress(OSError):
            reaper.stdin.close()
        try:
            reaper.wait(timeout=30)
        except subprocess.TimeoutExpired:
            reaper.kill()
            reaper.wait()

    def _kill_at_exit(self) -> None:
        _reap(self.node_names)
        if self._root_created:
            shutil.rmtree(self._root, ignore_errors=True)


def _kill_quietly(node: BrokerNode) -> None:
    if node.is_running():
        with contextlib.suppress(RuntimeError):
            node.kill(flush_metadata=False)


def _parallel(function: Callable[[BrokerNode], _T], nodes: Iterable[BrokerNode]) -> list[_T]:
    """``function`` on every node in threads; results in order; the first error re-raised."""
    nodes = list(nodes)
    if len(nodes) <= 1:
        return [function(node) for node in nodes]
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(nodes)) as pool:
        futures = [pool.submit(function, node) for node in nodes]
        concurrent.futures.wait(futures)
    return [future.result() for future in futures]


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0):
            return True
    except OSError:
        return False


def _our_pids(node_names: Sequence[str]) -> list[int]:
    """Live processes whose environment sets RABBITMQ_NODENAME to one of ``node_names``.

    That covers each node's Erlang VM, the wrapper scripts starting it and the
    rabbitmqctl runs addressing it; the names are unique to one Cluster, so the
    shared broker and other test runs' nodes never match.
    """
    markers = {f"RABBITMQ_NODENAME={name}".encode() for name in node_names}
    pids: list[int] = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            environ = Path(f"/proc/{entry}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if markers.intersection(environ):
            pids.append(int(entry))
    return pids


def _reap(node_names: Sequence[str], settle: float = 1.0, limit: float = 15.0) -> None:
    """SIGKILL every process of ``node_names`` until none has shown up for ``settle`` s.

    Repeated because a wrapper script caught mid-start may still exec the VM.
    """
    deadline = time.monotonic() + limit
    quiet_since = time.monotonic()
    while time.monotonic() < deadline:
        pids = _our_pids(node_names)
        for pid in pids:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        if pids:
            quiet_since = time.monotonic()
        elif time.monotonic() - quiet_since >= settle:
            return
        time.sleep(0.1)


def _reaper_main() -> None:
    """The reaper process: ``argv`` is the cluster directory, then the node names.

    Waits for EOF on stdin. Unless :data:`_CLOSED` came first (close() cleaned up),
    the test process died: kill the nodes' processes and delete the directory.
    """
    for signum in (signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)
    root, *names = sys.argv[1:]
    if sys.stdin.buffer.read() == _CLOSED:
        return
    _reap(names)
    shutil.rmtree(root, ignore_errors=True)
