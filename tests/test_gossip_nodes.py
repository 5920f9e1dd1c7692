"""Membership by gossip in real node processes: 40 ``fstore-node`` on loopback, few links each.

Every node keeps at most ``--max-links 8`` links, yet learns all 40 members,
stores and reads from anywhere in one hop, and sees a killed member declared
dead within the bound docs/SCALE.md gives. Gossip runs at its default pace (40
processes on a small machine are slow enough); only anti-entropy is made more
frequent (``FSTORE_GOSSIP_SYNC_INTERVAL``). Every wait polls a condition with a
deadline.
"""

from __future__ import annotations

import json
import statistics
import time
import urllib.request
from pathlib import Path

from netutil import (
    Cluster,
    KiB,
    NodeProcess,
    blake3_file,
    proc_status,
    proportional_set_size,
    wait_until,
    write_random_file,
)

from fstore.net.gossip import GossipConfig

NODES = 40
MAX_LINKS = 8
GOSSIP_ENV = {"FSTORE_GOSSIP_SYNC_INTERVAL": "10"}
CONFIG = GossipConfig(sync_interval=10)
CONVERGE_TIMEOUT = 120.0
IDLE_SECONDS = 10.0
# A lone idle node is about 58 MiB (Python, aiohttp, TLS, SQLite); links opened
# and closed leave more behind (docs/SCALE.md has the figures, 79 to 122 MiB).
# This bound catches growth, such as links or buffers that are never freed.
IDLE_RSS_LIMIT = 160 * 1024 * 1024
# Well under the time to find a member dead (a probe timeout, then suspicion: over 5 s).
RESTART_SEEN_WITHIN = 3.0


def members(node: NodeProcess) -> dict[bytes, str]:
    try:
        return node.http_members()
    except OSError:  # busy past the HTTP timeout: asked again at the next poll
        return {}


def converged(nodes: list[NodeProcess], alive: set[bytes]) -> list[str]:
    """The names of the nodes whose list does not yet hold exactly ``alive`` alive."""
    lagging = []
    for node in nodes:
        view = members(node)
        if {n for n, state in view.items() if state == "alive"} != alive:
            lagging.append(node.name)
    return lagging


def put_file(node: NodeProcess, name: str, path: Path) -> str:
    request = urllib.request.Request(
        f"http://{node.http_address}/v1/files/{name}", data=path.read_bytes(), method="PUT"
    )
    with urllib.request.urlopen(request, timeout=60) as answer:
        capability: str = json.loads(answer.read())["capability"]
        return capability


def read_capability(node: NodeProcess, capability: str, out: Path) -> str:
    url = f"http://{node.http_address}/v1/caps/{capability}"
    with urllib.request.urlopen(url, timeout=60) as answer:
        out.write_bytes(answer.read())
    return blake3_file(out)


def link_counts(nodes: list[NodeProcess]) -> list[int]:
    return [len(node.http_peers()) for node in nodes]


def test_forty_nodes_converge_store_read_and_detect_a_death(
    cluster: Cluster, tmp_path: Path
) -> None:
    options = ["--max-links", str(MAX_LINKS)]
    seed = cluster.holders(["n00"], durable=False, env=GOSSIP_ENV, options=options)[0]
    rest = cluster.holders(
        [f"n{i:02d}" for i in range(1, NODES)],
        peers=[seed.address],
        durable=False,
        env=GOSSIP_ENV,
        options=options,
    )
    nodes = [seed, *rest]
    everyone = {n.node_id for n in nodes}

    started = time.monotonic()
    wait_until(
        lambda: not converged(nodes, everyone),
        CONVERGE_TIMEOUT,
        f"every member list to hold all {NODES} alive",
        interval=2.0,
    )
    print(f"\n{NODES} member lists converged {time.monotonic() - started:.1f}s after start")

    # Idle: memory per node, CPU of the whole network, links per node.
    rss_before = [n.metric("process_resident_memory_bytes") for n in nodes]
    before = {n.name: n.cpu_seconds() for n in nodes}
    window_start = time.monotonic()
    wait_until(
        lambda: time.monotonic() - window_start >= IDLE_SECONDS,
        IDLE_SECONDS + 5,
        "the idle window",
    )
    cpu = sum(n.cpu_seconds() - before[n.name] for n in nodes)
    elapsed = time.monotonic() - window_start
    rss = [n.metric("process_resident_memory_bytes") for n in nodes]
    anon = [proc_status(n.pid, "RssAnon") for n in nodes]
    pss = [proportional_set_size(n.pid) for n in nodes]
    links = link_counts(nodes)
    print(
        f"idle, {NODES} nodes: CPU {cpu / elapsed:.3f} cores in all "
        f"({100 * cpu / elapsed / NODES:.2f}% of a core per node); "
        f"RSS per node median {statistics.median(rss) / 2**20:.1f} MiB, "
        f"max {max(rss) / 2**20:.1f} MiB (at the start of the window: median "
        f"{statistics.median(rss_before) / 2**20:.1f} MiB; of it, private to the node "
        f"(RssAnon) median {statistics.median(anon) / 2**20:.1f} MiB; PSS median "
        f"{statistics.median(pss) / 2**20:.1f} MiB); links per node median "
        f"{statistics.median(links)}, max {max(links)} (--max-links {MAX_LINKS})"
    )
    assert max(rss) < IDLE_RSS_LIMIT, rss
    # Far from a full mesh of 39: the cap, plus links opened for probes in the last seconds.
    assert statistics.median(links) <= 2 * MAX_LINKS, links

    # A file stored through one node is read through every other.
    source = tmp_path / "f.bin"
    digest = write_random_file(source, 200 * KiB, b"forty")
    capability = put_file(nodes[7], "f.bin", source)
    for node in nodes:
        if node is not nodes[7]:
            assert read_capability(node, capability, tmp_path / "out.bin") == digest, node.name

    # One killed: declared dead on every other node within the documented bound.
    victim = nodes[23]
    victim.kill()
    killed_at = time.monotonic()
    bound = CONFIG.detection_bound(NODES)
    survivors = [n for n in nodes if n is not victim]

    def everyone_holds_it_dead() -> bool:
        return all(members(n).get(victim.node_id) == "dead" for n in survivors)

    wait_until(everyone_holds_it_dead, bound, f"every node to hold {victim.name} dead", 1.0)
    print(
        f"a killed node was dead on all {len(survivors)} others after "
        f"{time.monotonic() - killed_at:.1f}s (bound {bound:.1f}s)"
    )


def member_addresses(node: NodeProcess) -> dict[bytes, str]:
    """Node id → address of the members ``node`` holds alive."""
    listed = node.http_member_list()
    return {bytes.fromhex(m["node_id"]): m["addr"] for m in listed if m["state"] == "alive"}


def test_a_node_restarted_on_another_port_is_found_there_at_once(cluster: Cluster) -> None:
    """A restart begins a new life at a higher incarnation, so the members take its new
    address when they hear of it, not only after finding the old one dead."""
    a = cluster.holder("a", durable=False)
    b, c = cluster.holders(["b", "c"], peers=[a.address], durable=False)
    everyone = {n.node_id for n in (a, b, c)}
    wait_until(lambda: not converged([a, b, c], everyone), 30, "three members everywhere")
    old_address = c.address
    c.stop()
    c = cluster.holder("c", data_dir=c.data_dir, peers=[a.address], durable=False)
    assert c.address != old_address
    started = time.monotonic()
    wait_until(
        lambda: all(member_addresses(n).get(c.node_id) == c.address for n in (a, b)),
        RESTART_SEEN_WITHIN,
        "a and b to list c at its new address",
        interval=0.1,
    )
    print(f"\nc's new address known to a and b {time.monotonic() - started:.1f}s after its start")
