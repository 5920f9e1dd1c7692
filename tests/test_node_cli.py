"""The installed commands: ``fstore-node`` (listening, errors, signals) and ``fstore demo``.

Every command runs as a real process of the console script this virtualenv
installed; each one has a deadline and is killed if it overstays it.
"""

from __future__ import annotations

import signal
import socket
import subprocess
from pathlib import Path

import pytest
from netutil import (
    Cluster,
    free_port,
    fstore_command,
    fstore_node_command,
    wait_for_mesh,
    wait_until,
)

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
