"""The installed commands: ``fstore-node`` (listening, errors, signals) and ``fstore demo``.

Every command runs as a real process of the console script this virtualenv
installed; each one has a deadline and is killed if it overstays it.
"""

from __future__ import annotations

import signal
import socket
import stat
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

from fstore.net.trust import NetworkKey

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


def run_node(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [fstore_node_command(), *args],
        capture_output=True,
        text=True,
        timeout=RUN_DEADLINE,
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
