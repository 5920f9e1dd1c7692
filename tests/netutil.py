"""Helpers for the process-level tests: real node processes on loopback, and ways to watch them.

Two kinds of node process are started:

- ``fstore-node``, the installed console script, for nodes that only hold blobs;
- ``node_agent.py``, a real ``fstore.node.Node`` driven by JSON lines on stdin, for
  nodes the test stores through, reads through or asks questions.

Nothing here sleeps to synchronise: every wait reads a line with a deadline or
polls a condition with a deadline (:func:`wait_until`).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import queue
import shutil
import signal
import socket
import sqlite3
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO, Any, TypedDict, TypeVar, Unpack

import blake3
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fstore.formats.capability import Capability
from fstore.formats.manifest import ChunkRef, Manifest
from fstore.net import placement, wire
from fstore.net.trust import LinkCredentials, NetworkKey
from fstore.storage.catalog import CATALOG_NAME

KiB = 1024
MiB = 1024 * KiB

AGENT_SCRIPT = Path(__file__).with_name("node_agent.py")
READY_TIMEOUT = 30.0  # a node process prints its ready line well within a second or two
CALL_TIMEOUT = 60.0
POLL_INTERVAL = 0.03

T = TypeVar("T")


class NodeProcessError(Exception):
    """A node process misbehaved: it exited, or did not answer in time."""


class AgentError(Exception):
    """An agent answered a command with ``{"ok": false, ...}``."""

    def __init__(self, answer: dict[str, Any]) -> None:
        super().__init__(f"{answer.get('error')}: {answer.get('message')}")
        self.answer = answer
        self.error = str(answer.get("error"))


# --- small helpers ------------------------------------------------------------------


def fstore_node_command() -> str:
    """The installed ``fstore-node`` console script of this virtualenv."""
    path = shutil.which("fstore-node", path=os.path.dirname(sys.executable))
    if path is None:
        raise RuntimeError(f"no fstore-node script beside {sys.executable}")
    return path


def fstore_command() -> str:
    """The installed ``fstore`` console script of this virtualenv."""
    path = shutil.which("fstore", path=os.path.dirname(sys.executable))
    if path is None:
        raise RuntimeError(f"no fstore script beside {sys.executable}")
    return path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (the kernel's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_until(
    predicate: Callable[[], T | None],
    timeout: float,
    what: str,
    interval: float = POLL_INTERVAL,
) -> T:
    """Poll ``predicate`` until it returns something truthy, which is returned.

    Raises TimeoutError naming ``what`` after ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


@contextlib.contextmanager
def http_server_in_thread(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """The URL of an HTTP server of ``handler`` on loopback, serving in a thread until the
    block ends."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def proc_status(pid: int, field: str, table: str = "status") -> int:
    """A ``kB`` field of ``/proc/PID/status`` (``VmHWM``, ``VmRSS``) or of another table
    of the same form (``smaps_rollup``), in bytes."""
    with open(f"/proc/{pid}/{table}") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key == field:
                return int(value.split()[0]) * 1024
    raise KeyError(f"no {field} in /proc/{pid}/{table}")


def peak_rss(pid: int) -> int:
    """The peak resident set size (``VmHWM``) of a live process, in bytes."""
    return proc_status(pid, "VmHWM")


def proportional_set_size(pid: int) -> int:
    """A live process's ``Pss`` (``/proc/PID/smaps_rollup``) in bytes: its resident
    pages, each page it shares with N processes counted as 1/N."""
    return proc_status(pid, "Pss", "smaps_rollup")


def write_random_file(path: Path, size: int, seed: bytes) -> str:
    """Write ``size`` incompressible bytes (BLAKE3 XOF of ``seed``) in pieces; their BLAKE3.

    The file is never held in memory whole, and the hash is computed by the
    independent ``blake3`` package, not by fstore.
    """
    stream = blake3.blake3(seed)
    digest = blake3.blake3(max_threads=blake3.blake3.AUTO)
    piece = 8 * MiB
    with open(path, "wb") as f:
        for offset in range(0, size, piece):
            data = stream.digest(length=min(piece, size - offset), seek=offset)
            digest.update(data)
            f.write(data)
    return digest.hexdigest()


def blake3_file(path: Path) -> str:
    """BLAKE3 of a file by the independent ``blake3`` package (memory-mapped)."""
    digest = blake3.blake3(max_threads=blake3.blake3.AUTO)
    if os.path.getsize(path):
        digest.update_mmap(path)
    return digest.hexdigest()


def blob_path(data_dir: Path, address: bytes) -> Path:
    """Where a node stores a blob: ``blobs/ab/cd/<address>``."""
    name = address.hex()
    return data_dir / "blobs" / name[0:2] / name[2:4] / name


# A node keeps a blob of at most SMALL_BLOB_MAX bytes as a row of its catalog, a larger
# one as a file (fstore.storage.smallblobs). These read and change either, as they lie
# on disk, with no checks: what a disk fault or another program could do.


def _catalog(data_dir: Path) -> sqlite3.Connection:
    return sqlite3.connect(data_dir / CATALOG_NAME, timeout=30.0, isolation_level=None)


def stored_copy(data_dir: Path, address: bytes) -> bytes | None:
    """A node's copy of a blob (its row or its file), unchecked; None if it has none."""
    with contextlib.closing(_catalog(data_dir)) as db:
        row = db.execute("SELECT data FROM small_blobs WHERE address = ?", (address,)).fetchone()
    if row is not None:
        return bytes(row[0])
    path = blob_path(data_dir, address)
    return path.read_bytes() if path.is_file() else None


def replace_copy(data_dir: Path, address: bytes, data: bytes) -> None:
    """Overwrite a node's copy of a blob (row or file) with ``data``: damage."""
    with contextlib.closing(_catalog(data_dir)) as db:
        sql = "UPDATE small_blobs SET data = ? WHERE address = ?"
        changed = db.execute(sql, (data, address)).rowcount
    if not changed:
        path = blob_path(data_dir, address)
        assert path.is_file(), f"no copy of {address.hex()} in {data_dir}"
        path.write_bytes(data)


def stored_blobs(data_dir: Path) -> dict[bytes, int]:
    """Every blob a node holds (rows and files): address → size."""
    sizes = {
        bytes.fromhex(p.name): p.stat().st_size
        for p in (data_dir / "blobs").glob("??/??/*")
        if p.is_file()
    }
    if (data_dir / CATALOG_NAME).exists():
        with contextlib.closing(_catalog(data_dir)) as db:
            for address, size in db.execute("SELECT address, length(data) FROM small_blobs"):
                sizes[bytes(address)] = size
    return sizes


def good_copies(address: bytes, nodes: Iterable[NodeProcess]) -> int:
    """How many of ``nodes`` hold a copy of ``address`` whose bytes match it."""
    count = 0
    for node in nodes:
        copy = stored_copy(node.data_dir, address)
        if copy is not None and blake3.blake3(copy).digest() == address:
            count += 1
    return count


def quarantined(data_dir: Path, address: bytes) -> list[Path]:
    """The copies of a blob that a node moved to ``blobs/corrupt/``."""
    corrupt = data_dir / "blobs" / "corrupt"
    return sorted(corrupt.glob(address.hex() + ".*"))


def read_manifest(capability: str, data_dirs: Iterable[Path]) -> tuple[bytes, list[ChunkRef]]:
    """(manifest address, chunk list) of a file, its manifest read from any node's disk."""
    cap = Capability.parse(capability)
    for data_dir in data_dirs:
        copy = stored_copy(data_dir, cap.manifest_address)
        if copy is not None:
            manifest = Manifest.open(cap.file_key, copy)
            return cap.manifest_address, list(manifest.chunks)
    raise FileNotFoundError(f"no node holds the manifest {cap.manifest_address.hex()}")


def closest(target: bytes, node_ids: Iterable[bytes], count: int) -> list[bytes]:
    """The ``count`` node ids XOR-closest to ``target``, nearest first."""
    return placement.closest(target, node_ids, count)


# --- node processes ------------------------------------------------------------------


class NodeProcess:
    """One node process: started, its ready line awaited, killed for sure at the end.

    stderr goes to ``log_path`` (the node's log); stdout is read by a thread.
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        data_dir: Path,
        log_path: Path,
        *,
        stdin: bool,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.data_dir = data_dir
        self.log_path = log_path
        self.node_id = b""
        self.address = ""
        self.http_address = ""  # fstore-node only: HOST:PORT of its HTTP API
        self.join_token = ""  # printed by a node that made a new network
        env = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
        self._log: IO[bytes] = open(log_path, "ab")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen(
            self.argv,
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._log,
            env=env,
        )
        self._ready: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(
            target=self._read_stdout, name=f"{name}-stdout", daemon=True
        )
        self._reader.start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def port(self) -> int:
        return int(self.address.rpartition(":")[2])

    def alive(self) -> bool:
        return self.proc.poll() is None

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            self._on_line(raw.decode("utf-8", "replace").rstrip("\n"))
        self._on_eof()

    def _on_line(self, line: str) -> None:
        self._ready.put(line)

    def _on_eof(self) -> None:
        self._ready.put(None)

    def _parse_ready(self, line: str) -> None:
        # fstore-node <id> listening on <addr>
        words = line.split()
        if len(words) != 5 or words[0] != "fstore-node" or words[2:4] != ["listening", "on"]:
            raise NodeProcessError(f"{self.name}: unexpected first line {line!r}")
        self.node_id = bytes.fromhex(words[1])
        self.address = words[4]

    def _next_line(self, timeout: float, what: str) -> str:
        try:
            line = self._ready.get(timeout=timeout)
        except queue.Empty:
            raise NodeProcessError(
                f"{self.name} printed no {what} within {timeout:g}s\n{self.log_tail()}"
            ) from None
        if line is None:
            code = self.proc.wait(timeout=10)
            raise NodeProcessError(
                f"{self.name} exited ({code}) before it printed its {what}\n{self.log_tail()}"
            )
        return line

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        """Read the ready line; a first start that made a new network prints its token first."""
        line = self._next_line(timeout, "ready line")
        if line.startswith("made a new network"):
            self.join_token = self._next_line(timeout, "join command").split()[2]
            line = self._next_line(timeout, "ready line")
        self._parse_ready(line)

    def wait_http(self, timeout: float = READY_TIMEOUT) -> None:
        """Read the ``http on HOST:PORT`` line fstore-node prints after its ready line."""
        line = self._next_line(timeout, "http line")
        words = line.split()
        if len(words) != 3 or words[:2] != ["http", "on"]:
            raise NodeProcessError(f"{self.name}: unexpected second line {line!r}")
        self.http_address = words[2]

    def http_get(self, path: str) -> bytes:
        """The body of a GET of ``path`` on the node's HTTP API (fstore-node only)."""
        with urllib.request.urlopen(f"http://{self.http_address}{path}", timeout=5) as answer:
            body: bytes = answer.read()
            return body

    def http_peers(self) -> set[bytes]:
        """The ids of the peers the node is linked with, as its HTTP API lists them."""
        return {
            bytes.fromhex(p["node_id"]) for p in json.loads(self.http_get("/v1/peers"))["peers"]
        }

    def http_member_list(self) -> list[dict[str, Any]]:
        """Its gossiped member list as its HTTP API lists it (``GET /v1/members``)."""
        members: list[dict[str, Any]] = json.loads(self.http_get("/v1/members"))["members"]
        return members

    def http_members(self) -> dict[bytes, str]:
        """Its gossiped member list: node id → state."""
        return {bytes.fromhex(m["node_id"]): m["state"] for m in self.http_member_list()}

    def cpu_seconds(self) -> float:
        """User and system CPU time the process has used so far."""
        with open(f"/proc/{self.pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def metric(self, name: str) -> float:
        """The value of an unlabelled metric in the node's ``/metrics``."""
        for line in self.http_get("/metrics").decode().splitlines():
            key, _, value = line.partition(" ")
            if key == name:
                return float(value)
        raise KeyError(f"no metric {name} on {self.name}")

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def has_blob(self, address: bytes) -> bool:
        return stored_copy(self.data_dir, address) is not None

    def peak_rss(self) -> int:
        return peak_rss(self.pid)

    def kill(self) -> None:
        """SIGKILL, and reap."""
        if self.alive():
            self.proc.kill()
        self.proc.wait(timeout=30)

    def terminate(self, timeout: float) -> int:
        """SIGTERM; the exit code, once it exits within ``timeout``."""
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    def stop(self) -> None:
        """Teardown: kill if still running, close everything. Never raises."""
        with contextlib.suppress(Exception):
            self.kill()
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                with contextlib.suppress(Exception):
                    stream.close()
        self._reader.join(timeout=5)
        self._log.close()

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text("utf-8", "replace").splitlines()
        except OSError:
            return ""
        return "\n".join(f"    {self.name}| {line}" for line in text[-lines:])


class Agent(NodeProcess):
    """A ``node_agent.py`` process: commands as JSON lines, answers matched by request id.

    Answers come back in any order; messages of one request are queued for it, the
    ``"event"`` messages (progress of a get) before the final one (``"ok"``).
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        data_dir: Path,
        log_path: Path,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._answers: dict[int, queue.Queue[dict[str, Any] | None]] = {}
        self._eof = False
        self._got_ready = False
        super().__init__(name, argv, data_dir, log_path, stdin=True, env=env)

    def _on_line(self, line: str) -> None:
        if not self._got_ready:
            self._got_ready = True
            self._ready.put(line)
            return
        try:
            message = json.loads(line)
            request_id = int(message["id"])
        except (ValueError, KeyError, TypeError):
            return  # not an answer (nothing else should print on stdout)
        self._queue(request_id).put(message)

    def _on_eof(self) -> None:
        with self._lock:
            self._eof = True
            for answers in self._answers.values():
                answers.put(None)
        self._ready.put(None)

    def _queue(self, request_id: int) -> queue.Queue[dict[str, Any] | None]:
        with self._lock:
            answers = self._answers.get(request_id)
            if answers is None:
                answers = self._answers[request_id] = queue.Queue()
                if self._eof:
                    answers.put(None)
            return answers

    def _parse_ready(self, line: str) -> None:
        try:
            ready = json.loads(line)
            self.node_id = bytes.fromhex(ready["node_id"])
            self.address = str(ready["address"])
        except (ValueError, KeyError, TypeError) as e:
            raise NodeProcessError(f"{self.name}: unexpected first line {line!r}") from e

    def send(self, op: str, **fields: Any) -> int:
        """Send a command; its request id (answers are awaited with :meth:`wait`)."""
        request_id = next(self._ids)
        self._queue(request_id)
        line = json.dumps({"id": request_id, "op": op, **fields}) + "\n"
        stdin = self.proc.stdin
        assert stdin is not None
        try:
            stdin.write(line.encode())
            stdin.flush()
        except (BrokenPipeError, ValueError) as e:
            raise NodeProcessError(f"{self.name} is not running\n{self.log_tail()}") from e
        return request_id

    def next_message(self, request_id: int, timeout: float) -> dict[str, Any]:
        """The next message (event or final answer) for ``request_id``."""
        try:
            message = self._queue(request_id).get(timeout=timeout)
        except queue.Empty:
            raise NodeProcessError(
                f"{self.name} did not answer request {request_id} within {timeout:g}s\n"
                f"{self.log_tail()}"
            ) from None
        if message is None:
            self._queue(request_id).put(None)  # for the next reader too
            raise NodeProcessError(
                f"{self.name} exited ({self.proc.poll()}) before answering request "
                f"{request_id}\n{self.log_tail()}"
            )
        return message

    def wait(self, request_id: int, timeout: float = CALL_TIMEOUT) -> dict[str, Any]:
        """The final answer to ``request_id`` (skipping its events); ``ok`` may be false."""
        deadline = time.monotonic() + timeout
        while True:
            message = self.next_message(request_id, max(0.0, deadline - time.monotonic()))
            if "ok" in message:
                with self._lock:
                    self._answers.pop(request_id, None)
                return message

    def result(self, request_id: int, timeout: float = CALL_TIMEOUT) -> dict[str, Any]:
        """The successful answer to ``request_id``; raises AgentError for an error answer."""
        answer = self.wait(request_id, timeout)
        if not answer["ok"]:
            raise AgentError(answer)
        return answer

    def metric(self, name: str) -> float:
        """The value of an unlabelled metric of the agent's node (asked over its stdin)."""
        return float(self.call("metric", name=name)["value"])

    def call(self, op: str, timeout: float = CALL_TIMEOUT, **fields: Any) -> dict[str, Any]:
        """Send a command and return its successful answer (AgentError otherwise)."""
        return self.result(self.send(op, **fields), timeout)

    def peer_ids(self) -> set[bytes]:
        """The nodes it has a link open to now."""
        return {bytes.fromhex(p["node_id"]) for p in self.call("peers", timeout=10)["peers"]}

    def member_ids(self, states: Collection[str] = ("alive", "suspect")) -> set[bytes]:
        """The members its gossiped list holds in ``states``, itself included."""
        members = self.call("members", timeout=10)["members"]
        return {bytes.fromhex(m["node_id"]) for m in members if m["state"] in states}


class NodeOptions(TypedDict, total=False):
    """What both kinds of node process take (the defaults are in ``Cluster._node_args``)."""

    peers: Iterable[str]
    replicas: int
    durable: bool
    addr: str
    namespace_file: Path | None
    data_dir: Path | None
    join: str | None  # default: the cluster's network; None: no --join (a new network)
    env: Mapping[str, str]  # extra environment, e.g. FSTORE_FRAME_TIMEOUT (net.LinkLimits)
    options: Sequence[str]  # more fstore-node options, e.g. ["--repair-after", "2"]


class Cluster:
    """Every node process a test starts; :meth:`close` kills them all, whatever happened."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.processes: list[NodeProcess] = []
        self.network = NetworkKey.generate()  # every node joins it unless told otherwise

    def _node_args(self, name: str, options: NodeOptions) -> tuple[Path, list[str]]:
        """The data directory and the command-line options both kinds of node take."""
        directory = options.get("data_dir") or self.root / name
        args = ["--data-dir", str(directory), "--addr", options.get("addr", "127.0.0.1:0")]
        args += ["--replicas", str(options.get("replicas", 3))]
        for peer in options.get("peers", ()):
            args += ["--peer", peer]
        if not options.get("durable", True):
            args.append("--no-fsync")
        namespace_file = options.get("namespace_file")
        if namespace_file is not None:
            args += ["--namespace-file", str(namespace_file)]
        join = options.get("join", self.network.token)
        if join is not None:
            args += ["--join", join]
        args += options.get("options", ())
        return directory, args

    def agent(self, name: str, **options: Unpack[NodeOptions]) -> Agent:
        """Start a ``node_agent.py`` process and wait until it listens."""
        directory, args = self._node_args(name, options)
        argv = [sys.executable, str(AGENT_SCRIPT), *args]
        agent = Agent(name, argv, directory, self.root / f"{name}.log", options.get("env"))
        self.processes.append(agent)
        agent.wait_ready()
        return agent

    def holder(
        self, name: str, *, http: str | None = "127.0.0.1:0", **options: Unpack[NodeOptions]
    ) -> NodeProcess:
        """Start a plain ``fstore-node`` process and wait for its ready and http lines.

        ``http`` is its ``--http`` (default an ephemeral loopback port); None leaves
        the flag out, for the node's default.
        """
        directory, args = self._node_args(name, options)
        argv = [fstore_node_command(), *args, *(["--http", http] if http is not None else [])]
        node = NodeProcess(
            name, argv, directory, self.root / f"{name}.log", stdin=False, env=options.get("env")
        )
        self.processes.append(node)
        node.wait_ready()
        node.wait_http()
        return node

    def holders(self, names: Sequence[str], **options: Unpack[NodeOptions]) -> list[NodeProcess]:
        """Start many ``fstore-node`` processes at once (HTTP on ephemeral ports), then
        wait for each: quicker than one by one."""
        started = []
        for name in names:
            directory, args = self._node_args(name, options)
            argv = [fstore_node_command(), *args, "--http", "127.0.0.1:0"]
            node = NodeProcess(
                name,
                argv,
                directory,
                self.root / f"{name}.log",
                stdin=False,
                env=options.get("env"),
            )
            self.processes.append(node)
            started.append(node)
        # They start together, so the last waits for the imports of all of them.
        timeout = READY_TIMEOUT * max(1, len(started) // 10)
        for node in started:
            node.wait_ready(timeout)
            node.wait_http(timeout)
        return started

    def close(self) -> None:
        """Kill every process still running; print the end of each log (shown on failure).

        Idempotent: a test may close early, the fixture closes again.
        """
        processes, self.processes = self.processes, []
        for process in processes:
            process.stop()
        for process in processes:
            tail = process.log_tail(25)
            if tail:
                print(f"--- {process.name} (pid {process.pid}, exit {process.proc.returncode})")
                print(tail)


def wait_for_mesh(agents: Sequence[Agent], everyone: Sequence[NodeProcess], timeout: float) -> None:
    """Wait until each agent holds every other node of ``everyone`` alive, and is linked
    with each (a small network is a full mesh: below ``--max-links``)."""
    for agent in agents:
        others = {p.node_id for p in everyone if p is not agent}

        def linked(agent: Agent = agent, others: set[bytes] = others) -> bool:
            return others <= agent.member_ids(("alive",)) and others <= agent.peer_ids()

        wait_until(linked, timeout, f"{agent.name} to link with all {len(others)} other nodes")


# --- raw protocol ------------------------------------------------------------------------


def read_until_closed(sock: socket.socket, timeout: float) -> tuple[bytes, bool]:
    """Everything received until the peer closes: (bytes, closed in time).

    A reset counts as closed (the peer closed with our bytes unread), and so does a
    TLS alert or a TLS connection cut without a close_notify.
    """
    deadline = time.monotonic() + timeout
    received = bytearray()
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return bytes(received), False
        sock.settimeout(remaining)
        try:
            data = sock.recv(65536)
        except TimeoutError:
            return bytes(received), False
        except (ConnectionResetError, ssl.SSLError):
            return bytes(received), True
        if not data:
            return bytes(received), True
        received += data


def decode_frames(data: bytes) -> list[wire.Frame]:
    """The complete frames in ``data`` (what a node sent), by fstore's own decoder."""
    return wire.FrameDecoder().feed(data)


def encode(frames: wire.Writes) -> bytes:
    return b"".join(bytes(p) for p in frames)


def credentials(network: NetworkKey, identity: Ed25519PrivateKey | None = None) -> LinkCredentials:
    """A member's link credentials (a new identity unless one is given)."""
    with tempfile.TemporaryDirectory() as scratch:
        return LinkCredentials(identity or Ed25519PrivateKey.generate(), network, Path(scratch))


def connect(
    address: str, *, rcvbuf: int | None = None, timeout: float = 5.0, source: str | None = None
) -> socket.socket:
    """A plain TCP connection to ``address``: from the IP address ``source`` if given, with
    ``rcvbuf`` set before connecting if given."""
    host, _, port = address.rpartition(":")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:  # before connecting, so the window is small from the start
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    if source is not None:
        sock.bind((source, 0))
    sock.settimeout(timeout)
    sock.connect((host, int(port)))
    return sock


class MemberLink:
    """A blocking TLS link to a node, as a member with ``creds``; HELLO not sent yet.

    ``hello`` is this side's valid HELLO (node id and proof for this very link);
    a test may send it, send something else, or build a false one with ``conn``.
    """

    def __init__(
        self,
        address: str,
        creds: LinkCredentials,
        *,
        rcvbuf: int | None = None,
        timeout: float = 10.0,
        claim: bytes | None = None,
    ) -> None:
        self.creds = creds
        self.sock = creds.client_context.wrap_socket(
            connect(address, rcvbuf=rcvbuf, timeout=timeout)
        )
        self.peer_certificate = self.sock.getpeercert(binary_form=True) or b""
        self.conn = wire.Connection(claim or creds.node_id, None)
        self.timeout = timeout
        self._events: list[wire.Event] = []

    def proof(self) -> bytes:
        return self.creds.proof(outbound=True, peer_certificate=self.peer_certificate)

    def hello(self, proof: bytes | None = None) -> bytes:
        return encode(self.conn.hello(self.proof() if proof is None else proof))

    def next_event(self, deadline: float) -> wire.Event:
        while not self._events:
            self.sock.settimeout(max(0.001, deadline - time.monotonic()))
            data = self.sock.recv(1 << 20)
            if not data:
                raise ConnectionError("the node closed the connection")
            self._events += self.conn.feed(data)
        return self._events.pop(0)

    def send_request(self, op: str, meta: dict[str, Any], body: bytes = b"") -> int:
        stream, frames = self.conn.request(op, meta, body)
        self.sock.sendall(encode(frames))
        return stream

    def response(self, stream: int) -> wire.ResponseReceived:
        deadline = time.monotonic() + self.timeout
        while True:
            event = self.next_event(deadline)
            if isinstance(event, wire.ResponseReceived) and event.stream == stream:
                return event
            if isinstance(event, wire.GoAway):
                raise ConnectionError(f"GOAWAY {event.code}: {event.msg}")

    def request(self, op: str, meta: dict[str, Any], body: bytes = b"") -> wire.ResponseReceived:
        return self.response(self.send_request(op, meta, body))

    def close(self) -> None:
        self.sock.close()


@contextlib.contextmanager
def wire_client(address: str, network: NetworkKey, timeout: float = 10.0) -> Iterator[MemberLink]:
    """A member link that has said HELLO: ready for requests."""
    client = MemberLink(address, credentials(network), timeout=timeout)
    try:
        client.sock.sendall(client.hello())
        yield client
    finally:
        client.close()
