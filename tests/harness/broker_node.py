"""A private, disposable RabbitMQ node for tests that kill and restart the broker.

Tests that check "nothing is lost when the broker dies" must be able to SIGKILL a
broker and bring it back. They must never do that to the shared broker on
127.0.0.1:5672 (node ``rabbit@localhost``) that the rest of the suite uses, so
:class:`BrokerNode` starts a second, private node of the installed RabbitMQ
(Debian's 3.10 packaging; or the RabbitMQ 4.x of the Debian 13 root that
:data:`ROOT` names, for ``scripts/test-rabbitmq4``) with everything of its own:

* a unique node name ``awtest-<hex>@localhost``;
* free loopback ports for AMQP (``RABBITMQ_NODE_PORT``) and Erlang distribution
  (``RABBITMQ_DIST_PORT``), found by binding port 0 on 127.0.0.1;
* its own data, log, config, enabled-plugins, env-conf and pid files, all in one
  temporary directory owned by the ``rabbitmq`` user (the Debian wrapper scripts,
  run as root, ``su`` to that user before starting Erlang).

What it shares with the shared node, on purpose: the Erlang cookie
(``/var/lib/rabbitmq/.erlang.cookie``, found through the ``rabbitmq`` user's home
directory, so ``rabbitmqctl`` works for both nodes) and the epmd daemon on
127.0.0.1:4369. epmd is a name registry that holds any number of nodes; a node
registers its own unique name and is dropped from it when its process dies, so a
killed private node leaves the shared one's registration alone. Nothing here ever
runs ``epmd -kill`` or a ``rabbitmqctl`` command without ``-n`` naming the private
node.

Typical use::

    with BrokerNode() as node:
        ...  # connect to node.url, publish with confirms
        node.kill()  # SIGKILL, like a crash
        node.restart()  # same data dir, same ports: durable data is back

Each start or restart takes about 4-6 s on this machine, a graceful stop about 3.5 s,
a kill well under a second: use a private node only where a test needs to stop or
kill the broker.

``BrokerNode(management=True)`` also enables the management plugin, with its HTTP
API on a free loopback port of its own (:attr:`BrokerNode.management_url`), for tests
of what only that API tells (unacked counts, consumers, bindings)::

    with BrokerNode(management=True) as node:
        ...  # GET node.management_url + "api/queues" as guest:guest
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import os
import pwd
import re
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import NoReturn, Self

__all__ = [
    "NODE_BASE_DIR",
    "ROOT",
    "BrokerNode",
    "free_ports",
    "node_path",
    "rabbitmq_available",
]

HOST = "127.0.0.1"
RABBITMQ_USER = "rabbitmq"

# The rabbitmq-* commands live in /usr/sbin on Debian, which a non-login PATH may lack.
_SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])

# The CLI tools (rabbitmqctl) give their own short-lived Erlang nodes a
# distribution port in this range (RABBITMQ_CTL_DIST_PORT_MIN..MAX defaults);
# keeping our node off it leaves those ports for the CLI, ours and the shared node's.
_CLI_DIST_PORTS = range(35672, 35683)

# Loopback-only Erlang distribution, as /etc/rabbitmq/rabbitmq-env.conf sets for the
# shared node; that file is replaced by ours (it names the shared node), so restate it.
_DIST_ERL_ARGS = "-kernel inet_dist_use_interface {127,0,0,1}"

# A management node's statistics every second instead of every 5 s, so a test polling
# the API sees a change within about 2 s. Queues and channels emit them every
# collect_statistics_interval (ms); the management agent's collectors aggregate them
# (consumers included) every smallest "sample every N seconds" of its retention
# policies, whose defaults are 5 s: here each keeps 1 s samples for a minute, then 60 s
# samples for an hour.
_MANAGEMENT_CONFIG = """\
collect_statistics_interval = 1000
management.sample_retention_policies.global.minute = 1
management.sample_retention_policies.global.hour = 60
management.sample_retention_policies.basic.minute = 1
management.sample_retention_policies.basic.hour = 60
management.sample_retention_policies.detailed.minute = 1
"""


ROOT: Path | None = (
    Path(os.environ["AMQP_WORKER_TEST_RABBITMQ_ROOT"])
    if os.environ.get("AMQP_WORKER_TEST_RABBITMQ_ROOT")
    else None
)
"""Another system's root holding the RabbitMQ that private nodes run, or None: the host's.

``scripts/test-rabbitmq4`` sets it (``AMQP_WORKER_TEST_RABBITMQ_ROOT``) to the Debian 13
root that ``scripts/ensure-rabbitmq4`` builds. A node then runs that root's RabbitMQ 4.x
chrooted in it, as the root's ``rabbitmq`` user (whose Erlang cookie every such node
and ``rabbitmqctl`` call share), in a mount namespace of its own where the root's
``/proc`` is mounted (RabbitMQ reads its memory use there). Its files live in the
root's ``/tmp``; the node sees them by their path inside the root (:func:`node_path`).
It registers with the host's epmd, like a node of the host's RabbitMQ.
"""

KHEPRI = ROOT is not None and os.environ.get("AMQP_WORKER_TEST_RABBITMQ_KHEPRI", "1") != "0"
"""Whether private nodes of :data:`ROOT` keep their metadata in Khepri, like 4.3 and later.

RabbitMQ 4.0 has Khepri behind the experimental ``khepri_db`` feature flag, enabled
on each node's first boot; ``AMQP_WORKER_TEST_RABBITMQ_KHEPRI=0`` leaves Mnesia.
"""

NODE_BASE_DIR = ROOT / "tmp" if ROOT is not None else Path(tempfile.gettempdir())
"""Where private nodes' directories go by default; files a node must read go here too."""

#: Inside a root, the RabbitMQ scripts are run directly as its rabbitmq user (the
#: Debian wrappers in /usr/sbin would ``su``, which needs PAM in the root).
_ROOT_BIN = "/usr/lib/rabbitmq/bin"


def node_path(path: str | os.PathLike[str]) -> str:
    """``path`` (on this machine) as a private node sees it: the same, or inside :data:`ROOT`."""
    if ROOT is None:
        return str(path)
    return "/" + str(Path(path).resolve().relative_to(ROOT.resolve()))


def _rabbitmq_ids() -> tuple[int, int]:
    """uid and gid of the ``rabbitmq`` user that runs the nodes (the root's own, if any)."""
    if ROOT is None:
        user = pwd.getpwnam(RABBITMQ_USER)
        return user.pw_uid, user.pw_gid
    for line in (ROOT / "etc" / "passwd").read_text().splitlines():
        fields = line.split(":")
        if len(fields) > 3 and fields[0] == RABBITMQ_USER:
            return int(fields[2]), int(fields[3])
    raise KeyError(f"no {RABBITMQ_USER} user in {ROOT}/etc/passwd")


def _command(name: str, env: Mapping[str, str]) -> list[str]:
    """The argv that runs RabbitMQ's ``name`` (rabbitmq-server, rabbitmqctl), or RuntimeError."""
    if ROOT is None:
        found = _find(name)
        if found is None:
            raise RuntimeError(f"{name} is not installed")
        return [found]
    uid, gid = _rabbitmq_ids()
    chroot = [_find("chroot") or "chroot", f"--userspec={uid}:{gid}", str(ROOT)]
    if name != "rabbitmq-server":
        return [*chroot, f"{_ROOT_BIN}/{name}"]
    # A mount namespace of the node's own, where the root's /proc is mounted; it
    # lives as long as the (detached) VM does and is invisible on the host.
    return [
        _find("unshare") or "unshare",
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        'mount -t proc proc "$1/proc" || exit 97; shift; exec "$@"',
        "sh",
        str(ROOT),
        *chroot,
        f"{_ROOT_BIN}/{name}",
    ]


def _find(command: str) -> str | None:
    return shutil.which(command, path=_SEARCH_PATH)


def rabbitmq_available() -> bool:
    """Whether :class:`BrokerNode` can start a private node on this machine.

    True when ``rabbitmq-server`` and ``rabbitmqctl`` are installed, the ``rabbitmq``
    system user exists, and this process runs as root (the Debian wrappers only
    switch to the ``rabbitmq`` user, which owns the shared Erlang cookie, when started
    by root). It does not start anything and does not look at the shared broker.
    """
    if ROOT is not None:
        tools = ("chroot", "unshare", "mount")
        if not (ROOT / _ROOT_BIN[1:] / "rabbitmq-server").exists() or any(
            _find(tool) is None for tool in tools
        ):
            return False
    elif _find("rabbitmq-server") is None or _find("rabbitmqctl") is None:
        return False
    try:
        _rabbitmq_ids()
    except (KeyError, OSError):
        return False
    return os.geteuid() == 0


def free_ports(count: int) -> list[int]:
    """Return ``count`` distinct loopback TCP ports that were free a moment ago.

    All sockets stay bound until every port is chosen, so the ports differ from each
    other. Another process may still take one before the node binds it; start() then
    fails with the node's log, which names the port.
    """
    ports: list[int] = []
    with contextlib.ExitStack() as stack:
        while len(ports) < count:
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind((HOST, 0))
            port = int(sock.getsockname()[1])
            if port not in _CLI_DIST_PORTS:
                ports.append(port)
    return ports


def _port_open(port: int) -> bool:
    """Whether something accepts TCP connections on 127.0.0.1:``port`` right now."""
    try:
        with socket.create_connection((HOST, port), timeout=1.0):
            return True
    except OSError:
        return False


def _process_alive(pid: int) -> bool:
    """Whether ``pid`` is a live process; a zombie (killed, not yet reaped) counts as dead.

    The detached node is re-parented to init, so after SIGKILL it may sit as a zombie
    until init reaps it; os.kill(pid, 0) would still succeed for it.
    """
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return fields[0] not in ("Z", "X")


class BrokerNode:
    """One private RabbitMQ node on loopback, for tests that stop, kill and restart it.

    Nothing runs until :meth:`start` (or ``with BrokerNode() as node``). The node
    keeps its name, ports and data directory for the object's life, so
    :meth:`restart` after :meth:`kill` or :meth:`stop` brings back durable queues and
    persistent messages that the broker had confirmed. :meth:`close` (also run on
    leaving the ``with`` block, even on error) stops the node and deletes all its
    files; the object cannot be started again after that.

    Only AMQP 0-9-1 on ``127.0.0.1:port`` is served (no plugins); the ``guest`` user,
    whose default restriction to loopback connections is kept, logs in. With
    ``management=True`` the management plugin serves its HTTP API on
    :attr:`management_url` too (loopback only; ``guest`` logs in there as well).

    All methods block (each ``rabbitmqctl`` call takes about half a second); call them
    through ``asyncio.to_thread`` from async tests. The object is not thread-safe.
    """

    def __init__(
        self,
        *,
        startup_timeout: float = 60.0,
        stop_timeout: float = 30.0,
        base_dir: str | os.PathLike[str] | None = None,
        extra_config: str = "",
        name_prefix: str = "awtest",
        advanced_config: str = "[].\n",
        extra_env: Mapping[str, str] | None = None,
        management: bool = False,
    ) -> None:
        """Choose the node's name and ports; nothing is created or started yet.

        ``startup_timeout`` bounds each start (seconds), ``stop_timeout`` each graceful
        stop and each wait for a killed node to go. ``base_dir`` is where the temporary
        directory goes (default: the system temp dir); the ``rabbitmq`` user must be
        able to enter every directory above it, which rules out e.g. pytest's
        ``tmp_path`` (under a root-only ``/tmp/pytest-of-root``). ``extra_config``
        is appended to the node's ``rabbitmq.conf`` (a TLS listener, say); files it
        names must be readable by the ``rabbitmq`` user.

        ``name_prefix`` starts the node name (``<prefix>-<12 hex>@localhost``: still
        unique). ``advanced_config`` is the whole ``advanced.config`` (Erlang terms,
        e.g. ``[{rabbit, [{some_setting, 5000}]}].``). ``extra_env`` is added to (and
        may override) the environment the node and its ``rabbitmqctl`` calls run with,
        e.g. ``RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS``.

        ``management`` enables the ``rabbitmq_management`` plugin, listening on a
        free port of 127.0.0.1 of its own (:attr:`management_url`), with statistics
        collected every second instead of every 5 s; start() then also waits until
        the HTTP API answers. Booting with the plugin takes a few seconds longer.
        """
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self.node_name = f"{name_prefix}-{uuid.uuid4().hex[:12]}@localhost"
        self._management = management
        self._management_port: int | None = None
        if management:
            self._port, self._dist_port, self._management_port = free_ports(3)
        else:
            self._port, self._dist_port = free_ports(2)
        self._base_dir = Path(base_dir) if base_dir is not None else NODE_BASE_DIR
        self._dir: Path | None = None
        self._env: dict[str, str] = {}
        self._closed = False
        self._extra_config = extra_config
        self._advanced_config = advanced_config
        self._extra_env = dict(extra_env or {})
        self._khepri = False
        self.last_start_seconds: float | None = None
        """Wall-clock seconds the latest start() or restart() took to become usable."""

    # -- public API ----------------------------------------------------------------

    @property
    def port(self) -> int:
        """The AMQP port on 127.0.0.1; the same across restarts."""
        return self._port

    @property
    def dist_port(self) -> int:
        """The Erlang distribution port (what ``rabbitmqctl`` talks to)."""
        return self._dist_port

    @property
    def url(self) -> str:
        """AMQP URL for the default vhost as ``guest``, e.g. ``amqp://guest:guest@127.0.0.1:40123/``."""
        return f"amqp://guest:guest@{HOST}:{self._port}/"

    @property
    def management(self) -> bool:
        """Whether the management plugin is enabled (``BrokerNode(management=True)``)."""
        return self._management

    @property
    def management_port(self) -> int:
        """The management HTTP API's port on 127.0.0.1; the same across restarts."""
        if self._management_port is None:
            raise RuntimeError("BrokerNode(management=True) is needed for the management API")
        return self._management_port

    @property
    def management_url(self) -> str:
        """The management HTTP API's base URL, without credentials: ``http://127.0.0.1:PORT/``.

        ``guest:guest`` logs in (from loopback). Raises RuntimeError on a node made
        without ``management=True``.
        """
        return f"http://{HOST}:{self.management_port}/"

    @property
    def data_dir(self) -> Path:
        """The temporary directory holding the node's data, logs and config (after start)."""
        if self._dir is None:
            raise RuntimeError("BrokerNode has not been started")
        return self._dir

    @property
    def pid(self) -> int | None:
        """The OS pid of the node's Erlang VM if it is running, else None."""
        if self._dir is None:
            return None
        pid = self._pid_from_file()
        return pid if pid is not None and self._is_our_vm(pid) else None

    def is_running(self) -> bool:
        """Whether the node's Erlang VM process is alive (it may still be booting)."""
        return self.pid is not None

    def start(self) -> None:
        """Start the node and return once it accepts AMQP connections on :attr:`port`.

        With ``management=True`` it returns once the management API answers too
        (``GET /api/overview`` as ``guest`` gives 200).

        The first call creates the temporary directory; later calls (see
        :meth:`restart`) reuse it, so the data survives. Raises RuntimeError, with
        the tail of the node's log, if the node is already running, dies while
        booting, or is not accepting connections within ``startup_timeout``; the
        node is then killed so it cannot linger half-started.
        """
        if self._closed:
            raise RuntimeError("BrokerNode was closed; make a new one")
        if self.is_running():
            raise RuntimeError(f"{self.node_name} is already running")
        if self._dir is None:
            self._prepare_dir()
        assert self._dir is not None
        # A pid file left by a killed node names a dead (or, later, reused) pid;
        # the wait below must only ever see the new VM's pid.
        self._pid_file.unlink(missing_ok=True)
        # If the test process dies without cleaning up, at least do not leave a
        # detached Erlang VM behind (atexit does not run on SIGKILL, nothing does).
        atexit.unregister(self._kill_at_exit)
        atexit.register(self._kill_at_exit)

        started = time.monotonic()
        deadline = started + self.startup_timeout
        server = _command("rabbitmq-server", self._env)
        # -detached forks the VM off and returns at once. Its output goes to a file,
        # not a pipe: a detached child holding our pipe open would block reading it.
        with (self._dir / "server-start.out").open("ab") as out:
            result = subprocess.run(
                [*server, "-detached"],
                env=self._env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=self.startup_timeout,
                check=False,
            )
        if result.returncode != 0:
            self._fail_start(f"rabbitmq-server -detached exited with {result.returncode}")

        self._await_startup(deadline)
        if KHEPRI and not self._khepri:
            # Once, on the first boot: the data directory keeps it for restarts.
            self._ctl(
                "enable_feature_flag",
                "--experimental",
                "khepri_db",
                timeout=max(deadline - time.monotonic(), 1.0),
            )
            self._khepri = True
        while not _port_open(self._port):
            if time.monotonic() > deadline:
                self._fail_start(f"port {self._port} accepts no connections")
            time.sleep(0.1)
        if self._management:
            self._await_management(deadline)
        self.last_start_seconds = time.monotonic() - started

    def stop(self) -> None:
        """Stop the node gracefully (``rabbitmqctl -n NODE stop``) and wait for it to exit.

        RabbitMQ closes client connections and flushes queues to disk first. A no-op
        if the node is not running. If the graceful stop fails or takes longer than
        ``stop_timeout``, the VM is SIGKILLed so that stop() never leaves it running.
        """
        pid = self.pid
        if pid is None:
            return
        # Without a pid file argument rabbitmqctl returns once the node has begun its
        # shutdown (about 0.5 s). Watching the pid here then takes about 1.5 s in all,
        # against 3.5 s for `rabbitmqctl stop PIDFILE`, which polls the file slowly.
        result = self._ctl("stop", timeout=self.stop_timeout, check=False)
        accepted = result is not None and result.returncode == 0
        # A failed stop gets a short grace period only: the VM may be halting anyway.
        if not self._wait_gone(pid, self.stop_timeout if accepted else 5.0):
            self._sigkill(pid)

    def kill(self, *, flush_metadata: bool = True) -> None:
        """SIGKILL the node's Erlang VM, like a crash, and wait until it is gone.

        No shutdown runs: clients see their connections drop and whatever RabbitMQ had
        not yet written is lost, but what it had written (all it had confirmed for
        persistent messages on durable queues) is on disk for :meth:`restart`. Returns
        once the process is dead and :attr:`port` refuses connections. Raises
        RuntimeError if the node is not running.

        ``flush_metadata`` (default True) first forces RabbitMQ's metadata store to
        disk (see :meth:`flush_metadata`). Without it a queue, exchange or binding
        declared less than about 2 s before the kill can be rolled back on restart,
        taking its already-confirmed messages with it; pass False to test exactly that.
        """
        pid = self.pid
        if pid is None:
            pid = self._pid_from_eval()
        if pid is None:
            raise RuntimeError(f"{self.node_name} is not running; nothing to kill")
        if flush_metadata:
            self.flush_metadata()
        self._sigkill(pid)

    def flush_metadata(self) -> None:
        """Write RabbitMQ's buffered metadata (Mnesia transaction log) to disk now.

        RabbitMQ 3.x keeps queues, exchanges and bindings in Mnesia. A declaration is
        fsynced before declare-ok, but Mnesia then appends the transaction's
        "committed" decision through disk_log, which holds writes in the VM for up to
        2 s. A SIGKILL inside that window makes Mnesia presume the transaction aborted
        at the next boot, so the freshly declared queue vanishes with the messages the
        broker had confirmed into it. ``disk_log:sync(latest_log)`` empties that cache
        and fsyncs. Best effort: a node that does not answer in 15 s is left as is.
        A node in Khepri (:data:`KHEPRI`) has no such window (its Raft log is
        fsynced before declare-ok); the call then does nothing.
        """
        self._ctl("eval", "disk_log:sync(latest_log).", timeout=15, check=False)

    def ctl(self, *args: str, timeout: float = 30.0) -> str:
        """Run ``rabbitmqctl -n NODE ARGS`` and return its stdout.

        Raises RuntimeError (with the command's output) if it fails or takes longer
        than ``timeout`` seconds. Always addresses this node, never the shared one.
        """
        result = self._ctl(*args, timeout=timeout)
        if result is None:
            raise RuntimeError(f"rabbitmqctl {' '.join(args)} timed out after {timeout:.0f}s")
        return result.stdout

    def restart(self) -> None:
        """Start the node again on the same name, ports and data directory.

        After :meth:`kill` or :meth:`stop` this just starts it; if it is still
        running it is stopped gracefully first. Durable queues, exchanges and bindings,
        and persistent messages the broker had confirmed, are there afterwards.
        """
        if self.is_running():
            self.stop()
        self.start()

    def close(self) -> None:
        """Stop the node (killing it if a graceful stop fails) and delete its files.

        Safe to call more than once and on a node that never started.
        """
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self._kill_at_exit)
        try:
            self.stop()
        finally:
            if self._dir is not None:
                shutil.rmtree(self._dir, ignore_errors=True)

    def log_tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines of the node's log (and of the start command's output)."""
        if self._dir is None:
            return "(node never started: no log)"
        chunks: list[str] = []
        candidates = [self._dir / "server-start.out", *sorted((self._dir / "log").glob("*.log"))]
        for path in candidates:
            with contextlib.suppress(OSError):
                text = path.read_text(errors="replace").splitlines()
                if text:
                    chunks.append(f"--- {path} ---\n" + "\n".join(text[-lines:]))
        return "\n".join(chunks) if chunks else "(log is empty)"

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            # __exit__ does not run when __enter__ raises; clean up here instead.
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<BrokerNode {self.node_name} port={self._port} running={self.is_running()}>"

    # -- internals -----------------------------------------------------------------

    @property
    def _pid_file(self) -> Path:
        return self.data_dir / "node.pid"

    def _prepare_dir(self) -> None:
        """Create the node's directory and files, owned by ``rabbitmq``, and its environment."""
        uid, gid = _rabbitmq_ids()
        self._check_reachable(self._base_dir, uid)
        root = Path(tempfile.mkdtemp(prefix="awtest-rabbitmq-", dir=self._base_dir))
        self._dir = root
        (root / "mnesia").mkdir()
        (root / "log").mkdir()
        (root / "conf.d").mkdir()
        (root / "enabled_plugins").write_text(
            "[rabbitmq_management].\n" if self._management else "[].\n"
        )
        (root / "advanced.config").write_text(self._advanced_config)
        management_config = ""
        if self._management_port is not None:
            management_config = (
                f"management.tcp.ip = {HOST}\n"
                f"management.tcp.port = {self._management_port}\n" + _MANAGEMENT_CONFIG
            )
        (root / "rabbitmq.conf").write_text(
            f"listeners.tcp.1 = {HOST}:{self._port}\n"
            # Explicit default: guest may log in, but only over loopback.
            "loopback_users.guest = true\n"
            # The detached VM's stdout is /dev/null; the log file is what we read.
            "log.console = false\n"
            "log.file.level = info\n" + management_config + self._extra_config
        )
        # Replaces /etc/rabbitmq/rabbitmq-env.conf, which sets NODENAME=rabbit@localhost.
        (root / "rabbitmq-env.conf").write_text(
            "# Private test node: everything is set through RABBITMQ_* variables.\n"
        )
        for path in [root, *root.rglob("*")]:
            os.chown(path, uid, gid)
        root.chmod(0o755)

        # Inherited RABBITMQ_* variables (a developer's RABBITMQ_NODENAME, say) would
        # configure this node like the shared one, so none are passed on.
        env = {k: v for k, v in os.environ.items() if not k.startswith("RABBITMQ_")}
        env.update(
            RABBITMQ_NODENAME=self.node_name,
            RABBITMQ_NODE_IP_ADDRESS=HOST,
            RABBITMQ_NODE_PORT=str(self._port),
            # Without it the distribution port would be NODE_PORT + 20000.
            RABBITMQ_DIST_PORT=str(self._dist_port),
            RABBITMQ_MNESIA_BASE=node_path(root / "mnesia"),
            RABBITMQ_LOG_BASE=node_path(root / "log"),
            RABBITMQ_ENABLED_PLUGINS_FILE=node_path(root / "enabled_plugins"),
            # Each default below points into /etc/rabbitmq, i.e. at the shared node's
            # settings; its rabbitmq.conf in particular has a listener on 5672.
            RABBITMQ_CONFIG_FILE=node_path(root / "rabbitmq.conf"),
            RABBITMQ_CONFIG_FILES=node_path(root / "conf.d"),
            RABBITMQ_ADVANCED_CONFIG_FILE=node_path(root / "advanced.config"),
            RABBITMQ_CONF_ENV_FILE=node_path(root / "rabbitmq-env.conf"),
            RABBITMQ_PID_FILE=node_path(root / "node.pid"),
            RABBITMQ_SERVER_START_ARGS=_DIST_ERL_ARGS,
            # If epmd is not running the VM starts one; keep it on loopback like the
            # shared node's. A running epmd is simply shared.
            ERL_EPMD_ADDRESS=HOST,
            # The wrapper runs the VM in /var/lib/rabbitmq, where a crash dump would
            # land next to the shared node's data.
            ERL_CRASH_DUMP=node_path(root / "erl_crash.dump"),
        )
        if ROOT is not None:
            # Where the root's rabbitmq user keeps the Erlang cookie every node shares.
            env["HOME"] = "/var/lib/rabbitmq"
        env.update(self._extra_env)
        self._env = env

    @staticmethod
    def _check_reachable(base: Path, uid: int) -> None:
        """Fail early, and clearly, if ``rabbitmq`` could not enter ``base``."""
        for directory in [base.resolve(), *base.resolve().parents]:
            mode = directory.stat()
            if mode.st_uid != uid and not mode.st_mode & stat.S_IXOTH:
                raise RuntimeError(
                    f"the {RABBITMQ_USER} user cannot enter {directory}; "
                    "pass BrokerNode(base_dir=...) a directory it can reach, e.g. /tmp"
                )

    def _ctl(
        self, *args: str, timeout: float, check: bool = True
    ) -> subprocess.CompletedProcess[str] | None:
        """Run ``rabbitmqctl -n NODE ARGS``; None if it timed out.

        Always with ``-n``: without it rabbitmqctl would address rabbit@localhost.
        """
        ctl = _command("rabbitmqctl", self._env)
        try:
            result = subprocess.run(
                [*ctl, "-n", self.node_name, *args],
                env=self._env,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=max(timeout, 1.0),
                check=False,
            )
        except subprocess.TimeoutExpired:
            return None
        if check and result.returncode != 0:
            raise RuntimeError(
                f"rabbitmqctl {' '.join(args)} failed ({result.returncode}):\n"
                f"{result.stdout}{result.stderr}"
            )
        return result

    def _await_startup(self, deadline: float) -> None:
        """Block until ``rabbitmqctl await_startup`` succeeds, the VM dies, or ``deadline``."""
        seen_pid: int | None = None
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self._fail_start(f"not started within {self.startup_timeout:.0f}s")
            pid = self._pid_from_file()
            seen_pid = pid if pid is not None else seen_pid
            if seen_pid is not None and not _process_alive(seen_pid):
                self._fail_start(f"the Erlang VM (pid {seen_pid}) exited while booting")
            # await_startup fails at once while the VM is not yet registered with epmd
            # (it needs a second or two to get there), so it is retried; once the VM is
            # reachable it blocks until RabbitMQ has booted (or its --timeout).
            result = self._ctl(
                "await_startup",
                "--timeout",
                str(max(int(remaining), 1)),
                timeout=remaining + 5,
                check=False,
            )
            if result is not None and result.returncode == 0:
                return
            time.sleep(0.25)

    def _management_answers(self) -> bool:
        """Whether ``GET /api/overview`` as ``guest`` returns 200 right now."""
        request = urllib.request.Request(
            f"{self.management_url}api/overview",
            headers={"Authorization": "Basic " + base64.b64encode(b"guest:guest").decode()},
        )
        # No proxy: an http_proxy variable must not send a loopback request elsewhere.
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(request, timeout=2.0) as response:
                return bool(response.status == 200)
        except urllib.error.HTTPError as exc:  # 401 while users are loading, 503, ...
            exc.close()
            return False
        except OSError:  # refused, reset, timed out (URLError is an OSError)
            return False

    def _await_management(self, deadline: float) -> None:
        """Block until the management API answers, the VM dies, or ``deadline``.

        The plugin starts with the node, but its HTTP listener and the statistics
        database come up a moment after AMQP does.
        """
        while not self._management_answers():
            pid = self._pid_from_file()
            if pid is not None and not _process_alive(pid):
                self._fail_start(f"the Erlang VM (pid {pid}) exited while booting")
            if time.monotonic() > deadline:
                self._fail_start(
                    f"the management API on port {self._management_port} does not answer"
                )
            time.sleep(0.1)

    def _fail_start(self, reason: str) -> NoReturn:
        """Kill whatever half-started, then raise RuntimeError with the log tail."""
        pid = self._pid_from_file()
        if pid is not None and self._is_our_vm(pid):
            self._sigkill(pid)
        raise RuntimeError(
            f"private RabbitMQ node {self.node_name} (port {self._port}) failed to start: "
            f"{reason}\n{self._first_errors()}{self.log_tail()}"
        )

    def _first_errors(self, lines: int = 15) -> str:
        """The first ``[error]`` lines of the node's log: the cause, before the
        shutdown noise that fills the log's tail."""
        assert self._dir is not None
        errors: list[str] = []
        for path in sorted((self._dir / "log").glob("*.log")):
            with contextlib.suppress(OSError):
                errors += [
                    line
                    for line in path.read_text(errors="replace").splitlines()
                    if "[error]" in line
                ]
        if not errors:
            return ""
        return "--- first errors ---\n" + "\n".join(errors[:lines]) + "\n"

    def _pid_from_file(self) -> int | None:
        try:
            text = self._pid_file.read_text().strip()
        except OSError:
            return None
        return int(text) if text.isdigit() else None

    def _pid_from_eval(self) -> int | None:
        """Ask the node itself for its pid, for when the pid file is gone."""
        result = self._ctl("eval", "os:getpid().", timeout=15, check=False)
        if result is None or result.returncode != 0:
            return None
        match = re.search(r'"(\d+)"', result.stdout)
        if match is None:
            return None
        pid = int(match.group(1))
        return pid if self._is_our_vm(pid) else None

    def _is_our_vm(self, pid: int) -> bool:
        """Whether ``pid`` is a live Erlang VM started for this node.

        Checked through the process environment before anything signals a pid, so a
        stale pid file (or a reused pid) can never get the shared node killed.
        """
        if not _process_alive(pid):
            return False
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            return False
        return f"RABBITMQ_NODENAME={self.node_name}".encode() in environ

    def _sigkill(self, pid: int) -> None:
        """SIGKILL ``pid`` (already checked to be our VM), then wait for it and its port."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        if not self._wait_gone(pid):
            raise RuntimeError(f"{self.node_name} (pid {pid}) survived SIGKILL")

    def _wait_gone(self, pid: int, timeout: float | None = None) -> bool:
        """Wait up to ``timeout`` (default ``stop_timeout``) for ``pid`` to die and the port to close."""
        deadline = time.monotonic() + (self.stop_timeout if timeout is None else timeout)
        while _process_alive(pid) or _port_open(self._port):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    def _kill_at_exit(self) -> None:
        pid = self.pid
        if pid is not None:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
