"""fstore's tar codec, ``fstore.formats.tar``, against GNU tar and Python's ``tarfile``.

What GNU tar writes (in each of its formats) fstore reads member for member as
``tarfile`` does; what fstore writes GNU tar and ``tarfile`` read back exactly,
nanosecond mtimes included; and a stream that is not a tar, or is cut, is a
:class:`MalformedTarError`, never anything else.
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import tarfile
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fstore.errors import UnsafePathError
from fstore.formats import tar
from fstore.formats.directory import Skipped

GNU_FORMATS = ("gnu", "oldgnu", "posix", "ustar", "v7")


def ours(data: bytes) -> list[tuple[Any, ...]]:
    """Every member as fstore reads it: (name, kind, mode, whole-second mtime, size, link, data)."""
    found = []
    reader = tar.TarReader(io.BytesIO(data).read)
    for header in reader:
        body = b""
        while piece := reader.read(1000):
            body += piece
        seconds = header.mtime_ns // 10**9
        name = header.name.rstrip("/")  # tarfile drops a directory's trailing "/"
        found.append((name, header.kind, header.mode, seconds, header.size, header.linkname, body))
    return found


def theirs(data: bytes) -> list[tuple[Any, ...]]:
    """The same, as tarfile reads it."""
    found = []
    with tarfile.open(fileobj=io.BytesIO(data), mode="r|") as archive:
        for m in archive:
            kind = (
                "file"
                if m.isreg()
                else "dir"
                if m.isdir()
                else "symlink"
                if m.issym()
                else "hardlink"
                if m.islnk()
                else "special"
            )
            source = archive.extractfile(m) if m.isreg() else None
            body = source.read() if source is not None else b""
            size = m.size if m.isreg() else 0
            found.append((m.name, kind, m.mode, int(m.mtime), size, m.linkname, body))
    return found


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tar") / "tree"
    deep = root / ("L" * 120) / ("M" * 90)
    deep.mkdir(parents=True)
    (deep / ("N" * 99)).write_bytes(os.urandom(5000))
    (root / "a" / "b").mkdir(parents=True)
    (root / "a" / "b" / "f").write_bytes(b"hello")
    (root / "ünï cødé").mkdir()
    (root / "ünï cødé" / "é").write_bytes(b"")
    (root / "exactly 512").write_bytes(os.urandom(512))
    os.symlink("b/f", root / "a" / "s")
    os.symlink("../" + "T" * 150, root / "a" / "long link")
    os.link(root / "a" / "b" / "f", root / "a" / "hard")
    os.mkfifo(root / "a" / "fifo")
    os.utime(root / "a" / "b" / "f", ns=(1, 1_700_000_000_123_456_789))
    return root


@pytest.mark.parametrize("form", GNU_FORMATS)
def test_reads_what_gnu_tar_writes_as_tarfile_does(tree: Path, form: str) -> None:
    made = subprocess.run(
        ["tar", f"--format={form}", "-cf", "-", "-C", str(tree), "."],
        capture_output=True,
        check=False,  # the old formats refuse some members (long names) and say so
    )
    assert made.stdout
    found = ours(made.stdout)
    assert found == theirs(made.stdout)
    assert len(found) >= 9


def test_gnu_tar_and_tarfile_read_what_fstore_writes(tmp_path: Path) -> None:
    members: list[tuple[tuple[str, ...], Literal["file", "dir", "symlink"], int, int, int, str]]
    members = [
        (("a",), "dir", 0o755, 1_700_000_000_000_000_000, 0, ""),
        (("a", "é ü.txt"), "file", 0o600, 1_700_000_000_123_456_789, 5, ""),
        (("a", "L" * 120, "M" * 90), "dir", 0o700, -1_500_000_000, 0, ""),
        (("a", "L" * 120, "M" * 90, "N" * 99), "file", 0o644, 5, 3, ""),
        (("a", "link"), "symlink", 0o777, 7, 0, "../" + "T" * 150),
        (("a", "s"), "symlink", 0o777, 7, 0, "ünï"),
        (("x" * 200,), "file", 0o644, 10**18, 600, ""),
    ]
    stream = b""
    for path, kind, mode, mtime, size, target in members:
        stream += tar.header(path, kind, mode, mtime, size, target)
        if kind == "file":
            stream += b"z" * size + tar.padding(size)
    stream += tar.END
    assert len(stream) % tar.BLOCK == 0
    with tarfile.open(fileobj=io.BytesIO(stream)) as archive:
        read = archive.getmembers()
    for member, (path, kind, mode, mtime, size, target) in zip(read, members, strict=True):
        assert member.name == "/".join(path)
        assert member.mode == mode and member.linkname == target
        assert member.size == (size if kind == "file" else 0)
        exact = member.pax_headers.get("mtime")
        assert (int(Decimal(exact) * 10**9) if exact else int(member.mtime) * 10**9) == mtime
    (tmp_path / "s.tar").write_bytes(stream)
    out = tmp_path / "x"
    out.mkdir()
    subprocess.run(["tar", "-xf", str(tmp_path / "s.tar"), "-C", str(out)], check=True)
    written = out / "a" / "é ü.txt"
    assert written.read_bytes() == b"zzzzz"
    assert written.stat().st_mtime_ns == 1_700_000_000_123_456_789
    assert (written.stat().st_mode & 0o7777) == 0o600
    assert os.readlink(out / "a" / "link") == "../" + "T" * 150
    # And fstore reads its own stream back exactly.
    reader = tar.TarReader(io.BytesIO(stream).read)
    for header, (path, kind, _, mtime, size, target) in zip(reader, members, strict=True):
        assert header.name == "/".join(path) + ("/" if kind == "dir" else "")
        assert (header.mtime_ns, header.size, header.linkname) == (mtime, size, target)


def test_members_become_entries_or_are_refused() -> None:
    def member(name: str, kind: tar.MemberKind = "file", link: str = "") -> tar.TarHeader:
        return tar.TarHeader(name, kind, 0o644, 0, 0, link)

    found = tar.classify(member("./a/b"))
    assert isinstance(found, tar.Member) and found.path == ("a", "b")
    for hostile in (member("../x"), member("/etc/x"), member("h", "hardlink", "../x")):
        with pytest.raises(UnsafePathError):
            tar.classify(hostile)
    fifo = tar.TarHeader("p", "special", 0o644, 0, 0, "", "a FIFO")
    assert tar.classify(fifo) == Skipped("p", "a FIFO, not stored")
    assert isinstance(tar.classify(member("bad\x1bname")), Skipped)
    assert isinstance(tar.classify(member("l", "symlink", "")), Skipped)


def test_a_base_256_size_and_a_sparse_member() -> None:
    block = bytearray(tar.header(("f",), "file", 0o644, 0, 0))
    block[124:136] = b"\x80" + (3).to_bytes(11, "big")  # GNU's base-256 number
    block[148:156] = b"        "
    block[148:156] = b"%06o\0 " % sum(block)
    assert ours(bytes(block) + b"abc" + tar.padding(3) + tar.END)[0][6] == b"abc"
    sparse = bytearray(block)
    sparse[156:157] = b"S"
    sparse[148:156] = b"        "
    sparse[148:156] = b"%06o\0 " % sum(sparse)
    with pytest.raises(tar.MalformedTarError, match="sparse"):
        ours(bytes(sparse) + bytes(512) + tar.END)


@pytest.mark.parametrize(
    "damage",
    ["checksum", "cut in a header", "cut in the data", "pax length", "huge pax", "octal"],
)
def test_a_damaged_stream_is_a_malformed_tar(damage: str) -> None:
    good = tar.header(("a", "é"), "file", 0o644, 1, 100) + bytes(100) + tar.padding(100) + tar.END
    stream = bytearray(good)
    if damage == "checksum":
        stream[1024 + 10] ^= 1  # the ustar header after the pax header and its records
    elif damage == "cut in a header":
        stream = stream[:700]
    elif damage == "cut in the data":
        stream = stream[: 1024 + 50]
    elif damage == "pax length":
        stream = bytearray(_with_pax(b"99 path=x\n"))
    elif damage == "huge pax":
        stream = bytearray(_with_pax(b"", size=tar.MAX_EXTENDED + 1))
    else:
        stream[1024 + 124 : 1024 + 136] = b"zzzzzzzzzzz\0"
    with pytest.raises(tar.MalformedTarError):
        ours(bytes(stream))


def _with_pax(records: bytes, size: int | None = None) -> bytes:
    block = bytearray(tar.header(("f",), "file", 0o644, 0, 0))
    block[0:100] = bytes(100)
    block[0:14] = b"././@PaxHeader"
    block[156:157] = b"x"
    block[124:136] = b"%011o\0" % (len(records) if size is None else size)
    block[148:156] = b"        "
    block[148:156] = b"%06o\0 " % sum(block)
    return bytes(block) + records + tar.padding(len(records)) + tar.END


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=3000), st.integers(min_value=0, max_value=3000))
def test_anything_at_all_is_members_or_a_malformed_tar(noise: bytes, cut: int) -> None:
    valid = tar.header(("d",), "dir", 0o755, 0) + tar.header(("d", "f"), "file", 0o644, 1, 3)
    for stream in (noise, valid[:cut] + noise, valid + b"abc" + noise):
        with contextlib.suppress(tar.MalformedTarError):
            ours(stream)
