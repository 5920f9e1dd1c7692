"""The copy count a store reports is true: real node processes, copies checked on disk."""

from __future__ import annotations

from pathlib import Path

from netutil import (
    Cluster,
    MiB,
    NodeProcess,
    blob_path,
    good_copies,
    quarantined,
    read_manifest,
    wait_for_mesh,
    wire_client,
    write_random_file,
)

MESH_TIMEOUT = 20.0


def test_a_reused_chunk_counts_only_confirmed_copies(cluster: Cluster, tmp_path: Path) -> None:
    """A holder's copies of some chunks are damaged and quarantined; the same content is
    then stored again under another name. The storer reuses its blobs for the chunks it
    already stored, but must confirm each copy and put it again where it is missing: every
    blob of the second file ends with 3 good copies, and the store reports 3."""
    s = cluster.agent("s")
    r = cluster.agent("r", peers=[s.address])
    h = cluster.holder("h", peers=[s.address])
    everyone: list[NodeProcess] = [s, r, h]
    wait_for_mesh([s, r], everyone, MESH_TIMEOUT)

    source = tmp_path / "file.bin"
    write_random_file(source, 12 * MiB, b"dedup")
    first = s.call("store", name="first.bin", path=str(source))
    assert first["replicas"] == 3
    _, chunks = read_manifest(first["capability"], [s.data_dir])
    damaged = [c.address for c in chunks[::2]]
    for address in damaged:
        path = blob_path(h.data_dir, address)
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0x01
        path.write_bytes(bytes(data))
        with wire_client(h.address, cluster.network) as client:
            response = client.request("bad_blob", {"addr": address})
        assert response.meta == {"bad": True}  # h found the damage and moved the copy aside
        assert quarantined(h.data_dir, address)

    second = s.call("store", name="second.bin", path=str(source))
    manifest_address, again = read_manifest(second["capability"], [s.data_dir])
    assert {c.address for c in again} == {c.address for c in chunks}, "the chunks are reused"
    counts = {c.address.hex()[:12]: good_copies(c.address, everyone) for c in again}
    counts["manifest"] = good_copies(manifest_address, everyone)
    assert min(counts.values()) == second["replicas"] == 3, counts


def test_a_busy_holder_is_asked_again_not_counted_as_failed(
    cluster: Cluster, tmp_path: Path
) -> None:
    """A holder whose request rate is tight answers some puts ``busy`` while a file of
    many chunks is stored: the storer asks it again after a pause instead of failing the
    store, and every blob ends with its 3 copies."""
    s = cluster.agent("s")
    tight = {"FSTORE_REQUEST_RATE": "40", "FSTORE_REQUEST_BURST": "3"}
    h1 = cluster.holder("h1", peers=[s.address], env=tight)
    h2 = cluster.holder("h2", peers=[s.address])
    everyone: list[NodeProcess] = [s, h1, h2]
    wait_for_mesh([s], everyone, MESH_TIMEOUT)

    source = tmp_path / "file.bin"
    write_random_file(source, 48 * MiB, b"busy holder")
    stored = s.call("store", name="file.bin", path=str(source))
    manifest_address, chunks = read_manifest(stored["capability"], [s.data_dir])
    assert len(chunks) >= 24
    counts = [good_copies(a, everyone) for a in [manifest_address, *(c.address for c in chunks)]]
    assert min(counts) == stored["replicas"] == 3
