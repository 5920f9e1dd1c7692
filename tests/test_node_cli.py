"""The installed commands: ``fstore-node`` (listening, errors, signals) and ``fstore demo``.

Every command runs as a real process of the console script this virtualenv
installed; each one has a deadline and is killed if it overstays it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import stat
import subprocess
import urllib.request
from pathlib import Path

import pytest
import uvloop
from netutil import (
    Cluster,
    free_port,
    fstore_command,
    fstore_node_command,
    wait_for_mesh,
    wait_until,
)

from fstore.faces import cli
from fstore.faces.cli import HTTP_ADDR_FILE, ListenError, _run_node, node_parser, parse_size
from fstore.net.trust import NetworkKey
from fstore.node import local

RUN_DEADLINE = 60.0  # for a command that should end on its own
STOP_DEADLINE = 10.0  # from SIGTERM to exit


def tcp_listeners(table: str, port: int) -> list[str]:
    """Local addresses (hex, as the kernel writes them) of sockets listening on ``port``."""
    found = []
    with open(f"/proc/net/{table}") as f:
        next(f)
        for line in f:
            fields = line.split()
            local, state = fields[1], fields[3]
            address, _, hex_port = local.rpartition(":")
            if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                found.append(address)
    return found


def outward_address() -> str | None:
    """A non-loopback IPv4 address of this machine, if it has one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # TEST-NET-1; a UDP connect sends nothing
        except OSError:
            return None
        address: str = s.getsockname()[0]
    return None if address.startswith("127.") else address


def test_colon_port_listens_on_loopback_only(cluster: Cluster) -> None:
    """``--addr :PORT`` binds 127.0.0.1 and nothing else."""
    port = free_port()
    node = cluster.holder("node", addr=f":{port}")
    assert node.address == f"127.0.0.1:{port}"
    assert tcp_listeners("tcp", port) == ["0100007F"]  # 127.0.0.1, little-endian hex
    assert tcp_listeners("tcp6", port) == []
    with socket.create_connection(("127.0.0.1", port), timeout=5):
        pass
    outward = outward_address()
    if outward is not None:
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((outward, port), timeout=5).close()


def test_port_in_use_is_one_line_and_a_failure(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [fstore_node_command(), "--addr", f":{port}", "--data-dir", str(tmp_path / "d")],
            capture_output=True,
            text=True,
            timeout=RUN_DEADLINE,
            check=False,
        )
    assert result.returncode != 0
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert str(port) in lines[0] and "in use" in lines[0], lines[0]


def test_bad_address_is_a_usage_error(tmp_path: Path) -> None:
    result = subprocess.run(
        [fstore_node_command(), "--addr", "nowhere", "--data-dir", str(tmp_path / "d")],
        capture_output=True,
        text=True,
        timeout=RUN_DEADLINE,
        check=False,
    )
    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_stops_the_node_cleanly(cluster: Cluster, signum: signal.Signals) -> None:
    """A node linked with a peer stops on the signal with exit code 0 and no traceback,
    and its peer sees the link go."""
    node = cluster.holder("node")
    peer = cluster.agent("peer", peers=[node.address])
    wait_for_mesh([peer], [node, peer], timeout=20)

    node.proc.send_signal(signum)
    assert node.proc.wait(timeout=STOP_DEADLINE) == 0
    log = node.log_path.read_text()
    assert "Traceback" not in log, log
    wait_until(lambda: node.node_id not in peer.peer_ids(), 20, "the peer to see the node go")


def test_demo_runs_and_matches(tmp_path: Path) -> None:
    result = subprocess.run(
        [fstore_command(), "demo"],
        capture_output=True,
        text=True,
        timeout=RUN_DEADLINE,
        check=False,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "matches" in result.stdout
    assert "DOES NOT MATCH" not in result.stdout


def run_node(*args: str, timeout: float = RUN_DEADLINE) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [fstore_node_command(), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def init_fields(output: str) -> dict[str, str]:
    """``fstore-node init``'s ``name  value`` lines, by name."""
    fields = {}
    for line in output.splitlines():
        for name in ("data directory", "node id", "network", "join token"):
            if line.startswith(name + " "):
                fields[name] = line[len(name) :].strip()
    return fields


def test_init_makes_a_network_prints_its_token_and_prints_the_same_again(tmp_path: Path) -> None:
    data_dir = tmp_path / "a"
    first = run_node("init", "--data-dir", str(data_dir))
    assert first.returncode == 0, first.stderr
    fields = init_fields(first.stdout)
    assert fields["network"].endswith("(a new network)")
    token = fields["join token"]
    assert NetworkKey.from_token(token).secret == (data_dir / "network.key").read_bytes()
    assert f"--join {token} --peer" in first.stdout
    for name in ("identity.key", "network.key"):
        assert stat.S_IMODE((data_dir / name).stat().st_mode) == 0o600

    again = run_node("init", "--data-dir", str(data_dir))
    assert again.returncode == 0, again.stderr
    assert init_fields(again.stdout)["join token"] == token
    assert init_fields(again.stdout)["node id"] == fields["node id"]
    assert init_fields(again.stdout)["network"].endswith("(its network)")

    joined = run_node("init", "--data-dir", str(tmp_path / "b"), "--join", token)
    assert joined.returncode == 0, joined.stderr
    assert init_fields(joined.stdout)["join token"] == token
    assert init_fields(joined.stdout)["network"].endswith("(joined)")
    assert init_fields(joined.stdout)["node id"] != fields["node id"]

    # "--join -" reads the token from standard input, out of sight of `ps`.
    piped = subprocess.run(
        [fstore_node_command(), "init", "--data-dir", str(tmp_path / "c"), "--join", "-"],
        input=token + "\n",
        capture_output=True,
        text=True,
        timeout=RUN_DEADLINE,
        check=False,
    )
    assert piped.returncode == 0, piped.stderr
    assert init_fields(piped.stdout)["join token"] == token


def test_join_mistakes_are_one_line_errors(tmp_path: Path) -> None:
    made = run_node("init", "--data-dir", str(tmp_path / "a"))
    token = init_fields(made.stdout)["join token"]
    altered = token[:-3] + ("b" if token[-3] != "b" else "c") + token[-2:]
    cases = {
        "a mistyped token": (["--join", altered], 2, "check digits"),
        "not a token": (["--join", "hello"], 2, "starts with 'fsn1:'"),
        "a peer without a network": (
            ["--peer", ":1", "--data-dir", str(tmp_path / "new")],
            2,
            "--peer needs --join TOKEN",
        ),
        "another network's token": (
            ["--join", NetworkKey.generate().token, "--data-dir", str(tmp_path / "a")],
            1,
            "belongs to network",
        ),
    }
    for case, (args, code, message) in cases.items():
        for command in (["init"], []):
            if "--peer" in args and command:
                continue  # init takes no --peer
            full = [*command, "--addr", "127.0.0.1:0", *args]
            if "--data-dir" not in full:
                full += ["--data-dir", str(tmp_path / "x")]
            result = run_node(*full)
            assert result.returncode == code, (case, command, result.stderr)
            assert len(result.stderr.splitlines()) == 1, (case, result.stderr)
            assert message in result.stderr, (case, result.stderr)
            assert "Traceback" not in result.stderr
    assert not (tmp_path / "new").exists()


# --- one node per data directory, and a failed start leaves nothing ------------------------------


REFUSE_DEADLINE = 20.0  # a refused node exits at once; a node that runs anyway is killed here


def directory_contents(root: Path) -> dict[str, bytes | None]:
    """Every path under ``root`` with its bytes (None for a directory)."""
    return {
        str(p.relative_to(root)): None if p.is_dir() else p.read_bytes()
        for p in sorted(root.rglob("*"))
    }


def test_second_node_on_a_live_data_directory_is_refused(cluster: Cluster) -> None:
    """A second node on the directory of a running one exits 1 with one line naming the
    directory and the holder's PID, on other ports or the same ones; the running node keeps
    serving, its http.addr intact, its links never flapping."""
    first = cluster.holder("first")
    addr_file = first.data_dir / HTTP_ADDR_FILE
    published = addr_file.read_text()
    for ports in (
        ["--addr", "127.0.0.1:0", "--http", "127.0.0.1:0"],
        ["--addr", first.address, "--http", first.http_address],
    ):
        result = run_node(
            *ports,
            "--data-dir",
            str(first.data_dir),
            "--join",
            cluster.network.token,
            timeout=REFUSE_DEADLINE,
        )
        assert result.returncode == 1, result.stderr
        assert result.stdout == ""
        (line,) = result.stderr.splitlines()
        assert line.startswith("fstore-node: ") and "in use" in line, line
        assert str(first.data_dir) in line and f"PID {first.pid}" in line, line
    assert first.alive()
    assert addr_file.read_text() == published
    status = json.loads(first.http_get("/v1/status"))
    assert status["node_id"] == first.node_id.hex()
    assert "Traceback" not in first.log_text()


def test_init_on_a_live_data_directory_only_reads_it(cluster: Cluster) -> None:
    """``fstore-node init`` on a running node's directory prints its id and token and
    changes nothing."""
    node = cluster.holder("node")
    before = directory_contents(node.data_dir)
    result = run_node("init", "--data-dir", str(node.data_dir))
    assert result.returncode == 0, result.stderr
    fields = init_fields(result.stdout)
    assert fields["node id"] == node.node_id.hex()
    assert fields["join token"] == cluster.network.token
    assert fields["network"].endswith("(its network)")
    after = directory_contents(node.data_dir)
    for name in ("identity.key", "network.key", "namespace.key", "lock", HTTP_ADDR_FILE):
        assert after[name] == before[name], name
    assert node.alive()


@pytest.mark.parametrize("taken", ["node", "http"])
def test_port_in_use_creates_nothing(tmp_path: Path, taken: str) -> None:
    """A port in use is found before a data directory, identity or network exists: nothing
    is printed on stdout (no "made a new network"), nothing is left on disk."""
    data_dir = tmp_path / "parent" / "node"
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        node_port, http_port = (port, 0) if taken == "node" else (0, port)
        result = run_node(
            "--addr", f":{node_port}", "--http", f":{http_port}", "--data-dir", str(data_dir)
        )
    assert result.returncode == 1
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert f"127.0.0.1:{port}" in line and "address in use" in line, line
    assert list(tmp_path.iterdir()) == []


def test_failed_start_leaves_an_existing_data_directory_as_it_was(
    cluster: Cluster, tmp_path: Path
) -> None:
    """A directory with a node's life in it, its node stopped: a start whose HTTP port is in
    use changes nothing in it, not even the lock file."""
    node = cluster.holder("node")
    assert node.terminate(timeout=STOP_DEADLINE) == 0
    before = directory_contents(node.data_dir)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        result = run_node(
            "--data-dir", str(node.data_dir), "--addr", "127.0.0.1:0", "--http", f":{taken}"
        )
    assert result.returncode == 1
    assert result.stdout == ""
    assert f"127.0.0.1:{taken} (HTTP): address in use" in result.stderr
    assert directory_contents(node.data_dir) == before


def test_a_start_that_fails_after_the_checks_removes_what_it_made(tmp_path: Path) -> None:
    """The port taken between the check and the bind: the directories made for this first
    start go again (the parent only if empty), and the error is the port's."""
    data_dir = tmp_path / "parent" / "node"
    args = node_parser().parse_args(["--data-dir", str(data_dir)])
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = f"127.0.0.1:{holder.getsockname()[1]}"
        with pytest.raises(ListenError, match="address in use"):
            uvloop.run(
                _run_node(args, taken, ("127.0.0.1", 0), data_dir, None, contextlib.ExitStack())
            )
    assert list(tmp_path.iterdir()) == []


def test_a_closed_stdout_is_no_failure(tmp_path: Path) -> None:
    """`fstore-node ... | head -1`: the node keeps running once its reader has gone, and
    `init` ends quietly."""
    reader, writer = os.pipe()
    os.close(reader)
    data_dir = tmp_path / "node"
    with (tmp_path / "node.log").open("wb") as log:
        node = subprocess.Popen(
            [fstore_node_command(), "--addr", ":0", "--http", ":0", "--data-dir", str(data_dir)],
            stdout=writer,
            stderr=log,
        )
    try:
        init = subprocess.run(
            [fstore_node_command(), "init", "--data-dir", str(tmp_path / "other")],
            stdout=writer,
            stderr=subprocess.PIPE,
            timeout=RUN_DEADLINE,
            check=False,
        )
        assert (init.returncode, init.stderr) == (0, b"")
        addr_file = data_dir / HTTP_ADDR_FILE
        wait_until(lambda: node.poll() is not None or addr_file.exists(), 30, "the node")
        with urllib.request.urlopen(f"http://{addr_file.read_text().strip()}/healthz") as answer:
            assert json.loads(answer.read()) == {"ok": True}
        node.send_signal(signal.SIGTERM)
        assert node.wait(timeout=STOP_DEADLINE) == 0
    finally:
        os.close(writer)
        node.kill()
        node.wait()
    assert "Traceback" not in (tmp_path / "node.log").read_text()


def test_space_option_defaults_are_the_nodes() -> None:
    assert (cli.GC_GRACE, cli.LEASE_PERIOD) == (local.GC_GRACE, local.LEASE_PERIOD)


def test_sizes_parse_with_binary_units() -> None:
    assert parse_size("50G") == 50 << 30
    assert parse_size("512m") == 512 << 20
    assert parse_size("1.5K") == 1536
    assert parse_size("1000000") == 1_000_000
    with pytest.raises(argparse.ArgumentTypeError, match="a size is"):
        parse_size("lots")
