"""The ``fstore`` command, end to end: real ``fstore-node`` processes serving their HTTP API.

The command runs as its own process (``python -m fstore.faces.client``, the module the
console script calls) with a deadline, its stdout and stderr captured. A few
tests talk to a small stand-in HTTP server instead of a node, for what a real
node never does: announce a wrong BLAKE3. The progress bar is checked on a
pseudo-terminal.
"""

from __future__ import annotations

import contextlib
import json
import os
import pty
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import IO, Any, ClassVar

import blake3
import pytest
from netutil import (
    Cluster,
    MiB,
    NodeProcess,
    blake3_file,
    free_port,
    http_server_in_thread,
    wait_until,
    write_random_file,
)

from fstore.faces import client
from fstore.formats.names import is_control

CLIENT = [sys.executable, "-m", "fstore.faces.client"]
RUN_DEADLINE = 120.0  # for one command
START_DEADLINE = 30.0  # for a node's HTTP address and its first peer
ESCAPES = (b"\x1b", b"\r")  # what a progress bar would leave in captured output


# --- running the command --------------------------------------------------------------


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without any FSTORE_* setting of the machine, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FSTORE_")}
    return {**env, **extra}


def fstore(
    *args: str,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    input: bytes | None = None,
    stdin: IO[bytes] | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Run the command to its end, its stdin ``input`` or ``stdin``; stdout and stderr captured."""
    return subprocess.run(
        [*CLIENT, *args],
        input=input,
        stdin=stdin,
        capture_output=True,
        env=clean_env() if env is None else dict(env),
        cwd=cwd,
        timeout=RUN_DEADLINE,
        check=False,
    )


def ok(result: subprocess.CompletedProcess[bytes]) -> bytes:
    """The stdout of a command that must succeed quietly (nothing on stderr)."""
    assert result.returncode == 0, result.stderr.decode()
    assert result.stderr == b""
    return result.stdout


def ok_json(*args: str, **kwargs: Any) -> Any:
    return json.loads(ok(fstore(*args, "--json", **kwargs)))


def one_line(stderr: bytes) -> str:
    """The single line a failing command printed on stderr."""
    lines = stderr.decode().splitlines()
    assert len(lines) == 1, stderr.decode()
    assert "Traceback" not in lines[0]
    return lines[0]


# --- real nodes ---------------------------------------------------------------------------


@dataclass
class HttpNode:
    process: NodeProcess
    url: str

    @property
    def node_id(self) -> str:
        return self.process.node_id.hex()

    @property
    def data_dir(self) -> Path:
        return self.process.data_dir


def start_http_node(cluster: Cluster, name: str, **kwargs: Any) -> HttpNode:
    process = cluster.holder(name, **kwargs)
    return HttpNode(process, "http://" + process.http_address)


def peer_ids(node: HttpNode) -> set[str]:
    return {p["node_id"] for p in ok_json("peers", "--node", node.url)["peers"]}


@dataclass
class Pair:
    """Two linked nodes sharing one namespace: a name stored through one reads from the other."""

    a: HttpNode
    b: HttpNode


@pytest.fixture
def pair(cluster: Cluster, tmp_path: Path) -> Pair:
    namespace = tmp_path / "namespace"
    namespace.write_bytes(os.urandom(32))
    a = start_http_node(cluster, "a", replicas=2, namespace_file=namespace)
    b = start_http_node(
        cluster, "b", replicas=2, namespace_file=namespace, peers=[a.process.address]
    )
    wait_until(lambda: b.node_id in peer_ids(a), START_DEADLINE, "a to link with b")
    wait_until(lambda: a.node_id in peer_ids(b), START_DEADLINE, "b to link with a")
    return Pair(a, b)


FILE_ENTRY_FIELDS = ("name", "size", "blake3", "stored_at", "capability")


@dataclass
class Stored:
    path: Path
    blake3: str
    answer: dict[str, Any]  # what `fstore put --json` printed

    @property
    def entry(self) -> dict[str, Any]:
        """The file entry in the answer, as `ls` lists it."""
        return {field: self.answer[field] for field in FILE_ENTRY_FIELDS}


@pytest.fixture
def stored(pair: Pair, tmp_path: Path) -> Stored:
    """A 5 MiB file (several chunks) stored through node a as ``photos/picture_1.png``."""
    path = tmp_path / "picture_1.png"
    digest = write_random_file(path, 5 * MiB, b"client")
    answer = ok_json("put", str(path), "--name", "photos/picture_1.png", "--node", pair.a.url)
    return Stored(path, digest, answer)


def hash_of(data: bytes) -> str:
    return blake3.blake3(data).hexdigest()


def test_put_json_is_the_file_entry_and_its_copies(stored: Stored) -> None:
    assert set(stored.answer) == {*FILE_ENTRY_FIELDS, "copies", "replicas"}
    assert (stored.answer["copies"], stored.answer["replicas"]) == (2, 2)
    entry = stored.entry
    assert entry["name"] == "photos/picture_1.png"
    assert entry["size"] == 5 * MiB
    assert entry["blake3"] == stored.blake3
    assert entry["capability"].startswith("fs1:")
    assert abs(entry["stored_at"] - time.time()) < 600


def test_round_trip_through_the_other_node(pair: Pair, stored: Stored, tmp_path: Path) -> None:
    """Stored through a, got by name through b: the base name, here, the same bytes."""
    here = tmp_path / "here"
    here.mkdir()
    out = ok(fstore("get", "photos/picture_1.png", "--node", pair.b.url, cwd=here))
    assert blake3_file(here / "picture_1.png") == stored.blake3
    assert b"picture_1.png" in out and not any(e in out for e in ESCAPES)
    assert [p.name for p in here.iterdir()] == ["picture_1.png"]  # no temporary left


def test_get_by_capability(pair: Pair, stored: Stored, tmp_path: Path) -> None:
    target = tmp_path / "by-capability"
    got = ok_json("get", stored.entry["capability"], "-o", str(target), "--node", pair.b.url)
    assert got == {
        "target": stored.entry["capability"],
        "path": str(target),
        "size": 5 * MiB,
        "blake3": stored.blake3,
    }
    assert blake3_file(target) == stored.blake3


def test_get_never_overwrites_unless_forced(pair: Pair, stored: Stored, tmp_path: Path) -> None:
    target = tmp_path / "existing"
    target.write_bytes(b"keep me")
    args = ("get", "photos/picture_1.png", "-o", str(target), "--node", pair.a.url)
    refused = fstore(*args)
    assert refused.returncode == client.EXIT_USAGE
    assert "exists" in one_line(refused.stderr) and refused.stdout == b""
    assert target.read_bytes() == b"keep me"
    ok(fstore(*args, "--force"))
    assert blake3_file(target) == stored.blake3


def test_get_into_dev_null_needs_no_force(pair: Pair, stored: Stored) -> None:
    """A device is written in place, not overwritten: ``-o /dev/null`` is not refused (the
    whole file is still received and checked), as it is not by ``curl`` or ``cp``."""
    got = ok_json("get", "photos/picture_1.png", "-o", os.devnull, "--node", pair.b.url)
    assert (got["path"], got["size"], got["blake3"]) == (os.devnull, 5 * MiB, stored.blake3)


def test_get_to_stdout_into_a_pipe(pair: Pair, stored: Stored) -> None:
    """``get -o -`` feeding another process through a pipe: the same bytes arrive."""
    hasher = "import sys, blake3; print(blake3.blake3(sys.stdin.buffer.read()).hexdigest())"
    get = subprocess.Popen(
        [*CLIENT, "get", "photos/picture_1.png", "-o", "-", "--node", pair.b.url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=clean_env(),
    )
    assert get.stdout is not None
    reader = subprocess.run(
        [sys.executable, "-c", hasher],
        stdin=get.stdout,
        capture_output=True,
        timeout=RUN_DEADLINE,
        check=True,
    )
    get.stdout.close()
    _, stderr = get.communicate(timeout=RUN_DEADLINE)
    assert get.returncode == 0, stderr.decode()
    assert stderr == b""
    assert reader.stdout.decode().strip() == stored.blake3


def test_put_from_stdin(pair: Pair, stored: Stored) -> None:
    """``put -`` from a redirected file (sent with its length) and from a pipe (chunked)."""
    args = ("put", "-", "--json", "--node", pair.a.url)
    with stored.path.open("rb") as source:
        redirected = json.loads(ok(fstore(*args, "--name", "redirected", stdin=source)))
    piped = json.loads(ok(fstore(*args, "--name", "piped", input=stored.path.read_bytes())))
    for name, entry in (("redirected", redirected), ("piped", piped)):
        assert (entry["name"], entry["size"], entry["blake3"]) == (name, 5 * MiB, stored.blake3)
        got = ok(fstore("get", name, "-o", "-", "--node", pair.b.url))
        assert hash_of(got) == stored.blake3


def test_ls_peers_status_json(pair: Pair, stored: Stored) -> None:
    listing = ok_json("ls", "--node", pair.b.url)
    assert stored.entry in listing["files"]
    peers = ok_json("peers", "--node", pair.a.url)["peers"]
    assert [p["node_id"] for p in peers] == [pair.b.node_id]
    assert isinstance(peers[0]["addr"], str | None) and isinstance(peers[0]["outbound"], bool)
    status = ok_json("status", "--node", pair.a.url)
    assert {
        "node_id",
        "address",
        "http",
        "replicas",
        "peers",
        "blobs",
        "blob_bytes",
        "version",
    } <= set(status)
    assert status["node_id"] == pair.a.node_id
    assert status["address"] == pair.a.process.address
    assert status["replicas"] == 2


def test_human_output_is_plain(pair: Pair, stored: Stored, tmp_path: Path) -> None:
    """Without --json and without a terminal: plain lines on stdout, nothing on stderr."""
    outputs = {
        command: ok(fstore(command, "--node", pair.a.url)) for command in ("ls", "peers", "status")
    }
    outputs["put"] = ok(fstore("put", str(stored.path), "--name", "again", "--node", pair.a.url))
    for command, out in outputs.items():
        assert not any(e in out for e in ESCAPES), (command, out)
    assert b"photos/picture_1.png" in outputs["ls"]
    assert pair.b.node_id.encode() in outputs["peers"]
    assert pair.a.node_id.encode() in outputs["status"]
    assert stored.entry["blake3"].encode() in outputs["put"]
    assert b"\n  copies      2 of 2\n" in outputs["put"]


def test_rm_then_get_is_not_found(pair: Pair, stored: Stored, tmp_path: Path) -> None:
    assert ok_json("rm", "photos/picture_1.png", "--node", pair.a.url) == {
        "name": "photos/picture_1.png",
        "deleted": True,
    }
    for node in (pair.a, pair.b):
        gone = fstore("get", "photos/picture_1.png", "-o", str(tmp_path / "x"), "--node", node.url)
        assert gone.returncode == client.EXIT_NODE
        assert one_line(gone.stderr).startswith("fstore: not_found: ")
        assert gone.stdout == b""
        assert not (tmp_path / "x").exists()
    names = [f["name"] for f in ok_json("ls", "--node", pair.b.url)["files"]]
    assert "photos/picture_1.png" not in names


def test_which_node(cluster: Cluster, tmp_path: Path) -> None:
    """--node, --data-dir, FSTORE_NODE, FSTORE_DATA_DIR and their order."""
    node = start_http_node(cluster, "solo", replicas=1)
    published = node.data_dir / client.HTTP_ADDR_FILE  # written just after the "http on" line
    wait_until(published.exists, START_DEADLINE, f"{published}")
    assert published.read_text().strip() == node.process.http_address
    dead = f"http://127.0.0.1:{free_port()}"
    hostport = node.url.removeprefix("http://")
    ways: list[tuple[list[str], dict[str, str]]] = [
        (["--node", node.url], {}),
        (["--node", hostport], {}),
        (["--node", ":" + hostport.rpartition(":")[2]], {}),
        (["--data-dir", str(node.data_dir)], {}),
        ([], {"FSTORE_NODE": node.url}),
        ([], {"FSTORE_DATA_DIR": str(node.data_dir)}),
        (["--node", node.url], {"FSTORE_NODE": dead}),  # a flag beats the environment
        (["--data-dir", str(node.data_dir)], {"FSTORE_NODE": dead}),
        ([], {"FSTORE_NODE": node.url, "FSTORE_DATA_DIR": str(tmp_path / "none")}),
    ]
    for flags, env in ways:
        status = json.loads(ok(fstore("status", "--json", *flags, env=clean_env(**env))))
        assert status["node_id"] == node.node_id, (flags, env)
    before = json.loads(ok(fstore("--json", "--node", node.url, "status")))  # flags before it too
    assert before["node_id"] == node.node_id


def test_unreachable_node_is_one_line_and_exit_3(tmp_path: Path) -> None:
    port = free_port()
    for flags, env, shown in [
        (["--node", f"127.0.0.1:{port}"], {}, f"http://127.0.0.1:{port}"),
        ([], {"FSTORE_NODE": f":{port}"}, "FSTORE_NODE"),
        (["--data-dir", str(tmp_path)], {}, str(tmp_path / "http.addr")),
    ]:
        result = fstore("ls", *flags, env=clean_env(**env))
        assert result.returncode == client.EXIT_UNREACHABLE, result.stderr.decode()
        line = one_line(result.stderr)
        assert line.startswith("fstore: ") and shown in line, line
        assert "--node" in line
        assert result.stdout == b""


# --- copies, closed pipes, Ctrl-C ----------------------------------------------------------------


def test_put_reports_its_copies_and_warns_when_fewer_than_wanted(
    cluster: Cluster, tmp_path: Path
) -> None:
    """Three nodes, three replicas wanted: 3 of 3, quietly. One node stopped: 2 of 3, stored
    all the same (exit 0), with one warning line on stderr, in --json too. Two stopped: one
    copy is below the write quorum, refused (503, exit 1) unless --allow-degraded: then 1."""
    a = start_http_node(cluster, "a")
    b, c = (start_http_node(cluster, name, peers=[a.process.address]) for name in ("b", "c"))
    nodes = [a, b, c]

    def meshed() -> bool:
        return all({n.node_id for n in nodes if n is not m} <= peer_ids(m) for m in nodes)

    wait_until(meshed, START_DEADLINE, "the three nodes to link")
    source = tmp_path / "picture_1.png"
    write_random_file(source, 3 * MiB, b"copies")

    def put(name: str, *flags: str) -> subprocess.CompletedProcess[bytes]:
        return fstore("put", str(source), "--name", name, "--node", a.url, *flags)

    assert b"\n  copies      3 of 3\n" in ok(put("three"))
    for stopped, copies in ((c, 2), (b, 1)):
        assert stopped.process.terminate(timeout=10) == 0
        wait_until(unlinked(a, stopped), START_DEADLINE, f"a to see {stopped.node_id} go")
        # One copy is below the write quorum (2 of 3): refused unless asked for.
        flags = ("--allow-degraded",) if copies == 1 else ()
        if copies == 1:
            refused = put("refused")
            assert refused.returncode == client.EXIT_NODE, refused.stderr.decode()
            assert "insufficient" in one_line(refused.stderr), refused.stderr.decode()
        human = put(f"with{copies}", *flags)
        as_json = put(f"with{copies}.json", "--json", *flags)
        for result in (human, as_json):
            assert result.returncode == 0, result.stderr.decode()
            warning = one_line(result.stderr)
            noun = "copy" if copies == 1 else "copies"
            assert warning.startswith(f"fstore: warning: with{copies}"), warning
            assert f" has {copies} durable {noun}, not the 3 the node wants" in warning, warning
        assert f"\n  copies      {copies} of 3\n".encode() in human.stdout
        answer = json.loads(as_json.stdout)
        assert (answer["copies"], answer["replicas"]) == (copies, 3)


def unlinked(node: HttpNode, peer: HttpNode) -> Callable[[], bool]:
    return lambda: peer.node_id not in peer_ids(node)


def test_peers_of_a_lone_node(cluster: Cluster) -> None:
    node = start_http_node(cluster, "solo", replicas=1)
    assert ok(fstore("peers", "--node", node.url)) == b"no peers linked\n"
    assert ok_json("peers", "--node", node.url) == {"peers": []}


def run_into_closed_pipe(args: list[str]) -> subprocess.CompletedProcess[bytes]:
    """Run the command with stdout a pipe whose reader has already gone."""
    reader, writer = os.pipe()
    os.close(reader)
    try:
        return subprocess.run(
            [*CLIENT, *args],
            stdout=writer,
            stderr=subprocess.PIPE,
            env=clean_env(),
            timeout=RUN_DEADLINE,
            check=False,
        )
    finally:
        os.close(writer)


def test_a_closed_stdout_ends_every_command_quietly(pair: Pair, stored: Stored) -> None:
    """`fstore status | head -1` and the like: exit 0, nothing on stderr, no traceback."""
    node = ["--node", pair.a.url]
    for args in (
        ["status", *node],
        ["ls", *node],
        ["peers", *node],
        ["--json", "status", *node],
        ["get", "photos/picture_1.png", "-o", "-", *node],
        ["put", str(stored.path), "--name", "again", *node],
        ["--help"],
    ):
        result = run_into_closed_pipe(args)
        assert (result.returncode, result.stderr.decode()) == (0, ""), args


def put_requests(node: HttpNode) -> dict[str, float]:
    """PUT requests of files the node has answered, by status."""
    answered: dict[str, float] = {}
    for line in node.process.http_get("/metrics").decode().splitlines():
        if line.startswith("fstore_http_request_duration_seconds_count{") and (
            'method="PUT"' in line
        ):
            status = line.partition('status="')[2].partition('"')[0]
            answered[status] = answered.get(status, 0.0) + float(line.rpartition(" ")[2])
    return answered


def uploading(put: subprocess.Popen[bytes], node: HttpNode) -> Callable[[], bool]:
    """Whether the node holds a first blob of the upload (or the put has already ended)."""
    return lambda: put.poll() is not None or node.process.metric("fstore_blobs") > 0


def interrupt(process: subprocess.Popen[bytes]) -> tuple[int, str]:
    """SIGINT, as Ctrl-C sends it; the exit code and stderr."""
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=RUN_DEADLINE)
    return process.returncode, stderr.decode()


def assert_nothing_stored(node: HttpNode, name: str) -> None:
    """Once the node has answered the cut-short PUT, the name is not there."""
    wait_until(lambda: put_requests(node), START_DEADLINE, "the node to answer the PUT")
    assert "201" not in put_requests(node)
    assert name not in [f["name"] for f in ok_json("ls", "--node", node.url)["files"]]


def interrupt_upload(put: subprocess.Popen[bytes], node: HttpNode, name: str) -> None:
    """Ctrl-C once the node holds a first blob: one line, exit 130, and no ``name``."""
    try:
        wait_until(uploading(put, node), RUN_DEADLINE, "a first blob")
        code, stderr = interrupt(put)
    finally:
        put.kill()
        put.wait()
    assert (code, stderr) == (client.EXIT_INTERRUPTED, "fstore: interrupted: nothing stored\n")
    assert_nothing_stored(node, name)


def test_ctrl_c_during_a_put_of_a_large_file_stores_nothing(
    cluster: Cluster, tmp_path: Path
) -> None:
    node = start_http_node(cluster, "node", replicas=1)
    source = tmp_path / "large.bin"
    write_random_file(source, 300 * MiB, b"interrupted put")
    put = subprocess.Popen(
        [*CLIENT, "put", str(source), "--node", node.url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=clean_env(),
    )
    interrupt_upload(put, node, "large.bin")


def test_ctrl_c_during_a_put_from_a_pipe_stores_nothing(cluster: Cluster) -> None:
    """The upload waits for more of stdin (a chunked body) when Ctrl-C comes."""
    node = start_http_node(cluster, "node", replicas=1)
    put = subprocess.Popen(
        [*CLIENT, "put", "-", "--name", "piped", "--node", node.url],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=clean_env(),
    )
    assert put.stdin is not None
    put.stdin.write(os.urandom(24 * MiB))  # past the node's first 8 MiB piece
    put.stdin.flush()
    interrupt_upload(put, node, "piped")


def test_ctrl_c_during_a_get_leaves_no_partial_file(cluster: Cluster, tmp_path: Path) -> None:
    node = start_http_node(cluster, "node", replicas=1, durable=False)
    source = tmp_path / "large.bin"
    write_random_file(source, 256 * MiB, b"interrupted get")
    ok(fstore("put", str(source), "--node", node.url))
    out = tmp_path / "out"
    out.mkdir()
    get = subprocess.Popen(
        [*CLIENT, "get", "large.bin", "-o", str(out / "large.bin"), "--node", node.url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=clean_env(),
    )

    def receiving() -> bool:
        if get.poll() is not None:
            return True  # too late to interrupt: the checks below fail
        with contextlib.suppress(FileNotFoundError):  # renamed into place just now
            return any(p.name.endswith(".part") and p.stat().st_size > 0 for p in out.iterdir())
        return True

    try:
        wait_until(receiving, RUN_DEADLINE, "a partial file to grow")
        code, stderr = interrupt(get)
    finally:
        get.kill()
        get.wait()
    expected = f"fstore: interrupted: nothing written to {out / 'large.bin'}\n"
    assert (code, stderr) == (client.EXIT_INTERRUPTED, expected)
    assert list(out.iterdir()) == []


# --- a stand-in server, for what a node never does ------------------------------------------------


class StandIn(BaseHTTPRequestHandler):
    """Serves ``files`` (path → (body, ETag)); a PUT answers with a file entry of what came."""

    files: ClassVar[dict[str, tuple[bytes, str]]] = {}

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        body, etag = self.files[self.path]
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("ETag", f'"{etag}"')
        self.end_headers()
        self.wfile.write(body)

    def do_PUT(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        entry = {"name": "f", "size": len(body), "blake3": hash_of(body), "stored_at": 0.0}
        answer = json.dumps({**entry, "capability": "fs1:x"}).encode()
        self.send_response(201)
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)


@pytest.fixture
def stand_in() -> Iterator[str]:
    """The URL of a stand-in server, serving in a thread until the test ends."""
    try:
        with http_server_in_thread(StandIn) as url:
            yield url
    finally:
        StandIn.files.clear()


def test_wrong_blake3_is_an_integrity_failure(stand_in: str, tmp_path: Path) -> None:
    body = os.urandom(3 * MiB)
    StandIn.files["/v1/files/f"] = (body, hash_of(body + b"!"))
    result = fstore("get", "f", "-o", str(tmp_path / "f"), "--node", stand_in)
    assert result.returncode == client.EXIT_INTEGRITY
    assert one_line(result.stderr).startswith("fstore: integrity: ")
    assert list(tmp_path.iterdir()) == []  # nothing left behind, not even a temporary


def run_on_terminal(args: list[str]) -> tuple[int, bytes]:
    """Run the command with stderr on a pseudo-terminal: (exit code, what the terminal got)."""
    controller, terminal = pty.openpty()
    env = clean_env(TERM="xterm-256color", COLUMNS="120")
    proc = subprocess.Popen(
        [*CLIENT, *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=terminal,
        env=env,
    )
    os.close(terminal)
    shown = bytearray()
    deadline = time.monotonic() + RUN_DEADLINE
    with contextlib.suppress(OSError):  # EIO: every end of the terminal is closed
        while time.monotonic() < deadline:
            if select.select([controller], [], [], deadline - time.monotonic())[0]:
                data = os.read(controller, 65536)
                if not data:
                    break
                shown += data
    os.close(controller)
    return proc.wait(timeout=RUN_DEADLINE), bytes(shown)


def test_progress_bars_on_a_terminal(stand_in: str, tmp_path: Path) -> None:
    body = os.urandom(3 * MiB)
    source = tmp_path / "source"
    source.write_bytes(body)
    StandIn.files["/v1/files/f"] = (body, hash_of(body))
    for args in (
        ["put", str(source), "--name", "f"],
        ["get", "f", "-o", str(tmp_path / "f")],
    ):
        code, shown = run_on_terminal([*args, "--node", stand_in])
        assert code == 0, shown.decode(errors="replace")
        assert b"\x1b[?25l" in shown  # the cursor hidden while the bar is live
        text = shown.decode()
        assert f"{args[0]} f" in text and "3.1/3.1 MB" in text, text
        assert "/s" in text  # the transfer rate
    assert (tmp_path / "f").read_bytes() == body


# --- usage errors, in process ------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["put", "-"],  # stdin has no name
        ["put", "/nonexistent/file"],
        ["get", "fs1:abc"],  # a capability names no file
        ["get", "dir/"],
        ["--json", "get", "f", "-o", "-"],
        ["--node", "http://host:port", "ls"],
        ["frobnicate"],
        [],
    ],
)
def test_usage_errors_exit_2(
    argv: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for variable in ("FSTORE_NODE", "FSTORE_DATA_DIR"):
        monkeypatch.delenv(variable, raising=False)
    assert client.main(argv) == client.EXIT_USAGE
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(("fstore: ", "usage: fstore")), captured.err


def test_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert client.main(["--help"]) == 0
    assert "exit codes:" in capsys.readouterr().out


def test_the_default_node() -> None:
    """Nothing chosen: the HTTP API of a node on :3000 (what answers there is not checked,
    as a node of this machine may well be running)."""
    args = client.parse(["ls"])
    assert client.choose_node(args, {}) == client.NodeAddress(
        "http://127.0.0.1:13000", "the default"
    )


# --- names --------------------------------------------------------------------------------------

CONTROL_NAMES = {"NUL": "a\x00b", "ESC": "a\x1b[2Jb", "newline": "a\nb", "DEL": "a\x7fb"}
CONTROL_NAMES["C1"] = "a\x9bb"


def raw_controls(text: str) -> list[str]:
    """The control characters in printed ``text``, but for its line ends."""
    return [c for c in text if is_control(c) and c != "\n"]


@pytest.mark.parametrize("command", ["put", "get", "rm"])
@pytest.mark.parametrize("kind", list(CONTROL_NAMES))
def test_names_with_control_characters_are_usage_errors(
    kind: str,
    command: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Checked before any request (the node given does not answer: that would be exit 3);
    one line saying which character and where, itself free of control characters."""
    name = CONTROL_NAMES[kind]
    source = tmp_path / "source"
    source.write_bytes(b"x")
    argv = {
        "put": ["put", str(source), "--name", name],
        "get": ["get", name, "-o", str(tmp_path / "out")],
        "rm": ["rm", name],
    }[command]
    assert client.main([*argv, "--node", f"127.0.0.1:{free_port()}"]) == client.EXIT_USAGE
    captured = capsys.readouterr()
    assert captured.out == ""
    line = one_line(captured.err.encode())
    assert line.startswith("fstore: invalid name: ")
    assert f"U+{ord(name[1]):04X} at character 2" in line
    assert raw_controls(captured.err) == []
    assert not (tmp_path / "out").exists()


def test_names_that_start_like_a_capability_are_usage_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "fsd1:tree"
    source.write_bytes(b"x")
    dead = f"127.0.0.1:{free_port()}"
    for argv in (["put", str(source)], ["get", "fsx1:tree", "-o", "-"], ["rm", "fs1:x"]):
        assert client.main([*argv, "--node", dead]) == client.EXIT_USAGE, argv
        assert "cannot start with" in one_line(capsys.readouterr().err.encode())
    # fsd1: starts a directory capability: a malformed one is refused as one, before any request.
    for argv in (["get", "fsd1:tree", "-o", "-"], ["get", "-r", "fs1:x", "-o", "out"]):
        assert client.main([*argv, "--node", dead]) == client.EXIT_USAGE, argv
        assert "invalid capability" in one_line(capsys.readouterr().err.encode())


def test_a_file_name_that_is_not_utf8(stand_in: str, tmp_path: Path) -> None:
    """Its own name cannot be stored: one line, exit 2, before any request. With --name it is
    stored; and a name argument that is not UTF-8 is refused the same way."""
    raw = os.fsencode(tmp_path) + b"/bad\xffname"
    Path(os.fsdecode(raw)).write_bytes(b"content")
    dead = f"127.0.0.1:{free_port()}"
    refused = fstore("put", os.fsdecode(raw), "--node", dead)
    assert refused.returncode == client.EXIT_USAGE
    line = one_line(refused.stderr)
    assert "character 4 is the byte 0xff" in line and "bad\\xffname" in line, line
    assert "--name" in line and refused.stdout == b""
    stored = json.loads(
        ok(fstore("put", os.fsdecode(raw), "--name", "good", "--json", "--node", stand_in))
    )
    assert stored["size"] == len(b"content")
    for argv in (["get", "x\udcff"], ["rm", "x\udcff"]):
        result = fstore(*argv, "--node", dead)
        assert result.returncode == client.EXIT_USAGE, result.stderr
        assert "valid UTF-8" in one_line(result.stderr)


def test_ls_never_prints_a_control_character(stand_in: str) -> None:
    """Names an older node may have stored: escaped for people, intact in --json."""
    names = ["plain", "evil\x1b[2J\x1b]0;title\x07", "c1\x9bx", "two\nlines", "nul\x00"]
    files = [
        {"name": n, "size": 1, "blake3": "00" * 32, "stored_at": 0.0, "capability": "fs1:x"}
        for n in names
    ]
    StandIn.files["/v1/files"] = (json.dumps({"files": files}).encode(), "listing")
    out = ok(fstore("ls", "--node", stand_in)).decode()
    assert raw_controls(out) == [] and out.count("\n") == len(names)
    for escaped in ("evil\\x1b[2J\\x1b]0;title\\x07", "c1\\x9bx", "two\\x0alines", "nul\\x00"):
        assert escaped in out
    listed = json.loads(ok(fstore("ls", "--json", "--node", stand_in)))
    assert [f["name"] for f in listed["files"]] == names


def test_pin_ls_pins_unpin(cluster: Cluster, pair: Pair, stored: Stored) -> None:
    """A node of another namespace pins a capability it was given, lists it, unpins it."""
    other = start_http_node(cluster, "c", replicas=2, peers=[pair.a.process.address])
    wait_until(lambda: pair.a.node_id in peer_ids(other), START_DEADLINE, "c to link with a")
    capability = stored.answer["capability"]
    pinned = ok_json("pin", capability, "--node", other.url)
    assert (pinned["capability"], pinned["size"]) == (capability, 5 * MiB)
    assert [p["capability"] for p in ok_json("ls", "--pins", "--node", other.url)["pins"]] == [
        capability
    ]
    assert ok_json("ls", "--node", other.url)["files"] == []
    assert capability.encode() in ok(fstore("ls", "--pins", "--node", other.url))
    assert ok_json("unpin", capability, "--node", other.url)["unpinned"] is True
    assert ok_json("ls", "--pins", "--node", other.url)["pins"] == []
    again = fstore("unpin", capability, "--node", other.url)
    assert again.returncode == client.EXIT_NODE
    assert one_line(again.stderr).startswith("fstore: not_found: ")
    bad = fstore("pin", "photos/picture_1.png", "--node", other.url)
    assert bad.returncode == client.EXIT_USAGE
    assert "is not a capability" in one_line(bad.stderr)
