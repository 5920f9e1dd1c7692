"""The ``fstore`` commands for directory trees: ``put -r``, ``get -r`` and ``ls`` of a directory.

``put -r DIR`` sends the directory as a tar stream (``PUT /v1/files/{name}?format=tar``),
made as it is read: links are sent as links, never followed; special files and
names that break the name rules are skipped with a warning. ``get -r`` reads
``GET …/?format=tar`` and restores it with ``storage.localtree.extract_tar``,
which writes nothing outside the target directory. Both show the files and
bytes of the whole tree on a progress bar when stderr is a terminal.

This module is imported only when one of these commands runs.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import stat
import sys
import tarfile
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fstore.errors import InvalidArgumentError
from fstore.faces.client import (
    DIR_CAPABILITY_PREFIX,
    EXIT_INTEGRITY,
    EXIT_INTERRUPTED,
    EXIT_NODE,
    PIECE,
    TAR_TYPE,
    Api,
    Body,
    Failure,
    checked_capability,
    checked_name,
    emit,
    local_error,
    path_segment,
    progress_bar,
    shown,
    usage_error,
    warn_if_few_copies,
)
from fstore.formats import tar
from fstore.formats.directory import Skipped
from fstore.storage import localtree

MAX_REFUSALS_SHOWN = 10
FILE_CAPABILITY_PREFIX = "fs1:"


def warn(message: str) -> None:
    print(f"fstore: warning: {shown(message)}", file=sys.stderr)


# --- where ---------------------------------------------------------------------------------


def tree_path(target: str) -> str:
    """The API path of the directory ``target`` names, ending in ``/``.

    A name (``photos`` or ``photos/2024``, the node finds where the name ends) is
    one path segment; a directory capability may be followed by a path inside it.
    """
    if target.startswith(FILE_CAPABILITY_PREFIX):
        checked_capability(target.partition("/")[0])
        raise usage_error(f"{target} is a file capability: a file, not a directory")
    if target.startswith(DIR_CAPABILITY_PREFIX):
        capability, _, inside = target.partition("/")
        checked_capability(capability)
        segments = [quote(s, safe="") for s in inside.split("/") if s]
        return f"/v1/caps/{capability}/" + "".join(f"{s}/" for s in segments)
    name = target.rstrip("/") or target
    checked_name(name)
    return f"/v1/files/{path_segment(name)}/"


# --- progress ------------------------------------------------------------------------------


class TreeProgress:
    """Files and bytes of a tree transfer, drawn on stderr only if it is a terminal."""

    def __init__(self, update: Callable[[int, int], None]) -> None:
        self._update = update
        self.files = 0
        self.size = 0

    def file_done(self) -> None:
        self.files += 1
        self._update(0, self.files)

    def add_bytes(self, count: int) -> None:
        self.size += count
        self._update(count, self.files)


@contextlib.contextmanager
def tree_progress(label: str, files: int | None, size: int | None) -> Iterator[TreeProgress]:
    of = f" of {files:,}" if files is not None else ""
    with progress_bar(label, size, files=f"0{of}") as advance:
        yield TreeProgress(lambda count, done: advance(count, files=f"{done:,}{of}"))


def count_tree(root: Path) -> tuple[int, int]:
    """(files, bytes) of a local tree, for the progress bar."""
    files = size = 0
    for found in localtree.walk(root):
        if isinstance(found, localtree.LocalEntry) and found.kind == "file":
            files, size = files + 1, size + found.size
    return files, size


# --- put -r --------------------------------------------------------------------------------


def tree_name(args: argparse.Namespace) -> str:
    if args.name is not None:
        return checked_name(str(args.name))
    base = Path(os.path.abspath(args.file)).name
    return checked_name(base, f" (the name of {args.file}; choose one with --name NAME)")


def tar_of(root: Path, progress: TreeProgress) -> Iterator[bytes]:
    """The local tree at ``root`` as a tar stream, in pieces of about PIECE bytes."""
    out = bytearray()
    for found in localtree.walk(root):
        if isinstance(found, Skipped):
            warn(f"skipped {found.path}: {found.reason}")
            continue
        if found.kind == "file":
            yield from _file_members(found, out, progress)
        else:
            out += tar.header(found.path, found.kind, found.mode, found.mtime_ns, 0, found.target)
        if len(out) >= PIECE:
            yield bytes(out)
            out.clear()
    yield bytes(out) + tar.END


def _file_members(
    found: localtree.LocalEntry, out: bytearray, progress: TreeProgress
) -> Iterator[bytes]:
    """Append one file's member to ``out``, yielding whenever ``out`` holds PIECE bytes."""
    with os.fdopen(localtree.open_file(found), "rb", buffering=0) as source:
        size = os.fstat(source.fileno()).st_size
        out += tar.header(found.path, "file", found.mode, found.mtime_ns, size)
        left = size
        while left:
            try:
                piece = source.read(min(PIECE, left))
            except OSError as e:
                raise local_error(found.location, e) from None
            if not piece:
                raise usage_error(f"{found.location}: the file shrank while it was read")
            out += piece
            left -= len(piece)
            progress.add_bytes(len(piece))
            if len(out) >= PIECE:
                yield bytes(out)
                out.clear()
        out += tar.padding(size)
    progress.file_done()


def put_tree(api: Api, args: argparse.Namespace) -> None:
    if args.file == "-":
        raise usage_error("put -r stores a directory; - (stdin) is for one file")
    root = Path(args.file)
    if not root.is_dir():
        raise usage_error(f"{args.file}: not a directory")
    name = tree_name(args)
    body: Body | None = None
    try:
        files, size = count_tree(root) if sys.stderr.isatty() else (None, None)
        with tree_progress(f"put {name}/", files, size) as progress:
            body = Body(tar_of(root, progress))
            response = api.request(
                "PUT",
                f"/v1/files/{path_segment(name)}?format=tar",
                body,
                {"Content-Type": TAR_TYPE},
            )
        stored = api.read_json(response)
    except InvalidArgumentError as e:
        raise usage_error(str(e)) from None
    except KeyboardInterrupt:
        if body is not None and body.sent:
            message = f"interrupted once {name} was sent whole: the node may still store it"
        else:
            message = "interrupted: nothing stored"
        raise Failure(EXIT_INTERRUPTED, message) from None
    for skipped in stored.get("skipped", []):
        warn(f"the node skipped {skipped['path']}: {skipped['reason']}")
    emit(args, stored, put_tree_lines)
    warn_if_few_copies(stored)


def counted(count: int, what: str) -> str:
    """``1 file``, ``2 files``, ``1 directory``, ``10,000 directories``."""
    if count == 1:
        return f"1 {what}"
    return f"{count:,} {what[:-1] + 'ies' if what.endswith('y') else what + 's'}"


def tree_counts(result: Any) -> str:
    return (
        f"{counted(result['files'], 'file')}, {result['size']:,} bytes, "
        f"{counted(result['dirs'], 'directory')}, {counted(result['symlinks'], 'link')}"
    )


def put_tree_lines(stored: Any) -> Iterator[str]:
    yield f"stored {stored['name']}/: {tree_counts(stored)}"
    yield (
        f"  sent        {stored['new_bytes']:,} bytes of new blobs "
        f"({stored['reused_bytes']:,} bytes already stored)"
    )
    yield f"  capability  {stored['capability']}"
    yield f"  copies      {stored['copies']} of {stored['replicas']}"


# --- get -r --------------------------------------------------------------------------------


def output_dir(args: argparse.Namespace) -> Path:
    """Where ``get -r`` restores: empty or missing unless ``--force``; checked before asking."""
    if args.output == "-":
        raise usage_error("get -r restores into a directory; -o - is for one file")
    if args.output is not None:
        path = Path(args.output)
    else:
        base = args.target.rstrip("/").rpartition("/")[2]
        if args.target.startswith(DIR_CAPABILITY_PREFIX) and "/" not in args.target.rstrip("/"):
            raise usage_error(f"choose where to restore {args.target} with -o DIR")
        if base in ("", ".", ".."):
            raise usage_error(f"choose where to restore {args.target} with -o DIR")
        path = Path(base)
    if os.path.lexists(path) and not path.is_dir():
        raise usage_error(f"{path} exists and is not a directory")
    if not args.force and path.is_dir() and any(path.iterdir()):
        raise usage_error(f"{path} is not empty (--force restores into it, replacing files)")
    return path


def get_tree(api: Api, args: argparse.Namespace) -> None:
    target = args.target
    url = tree_path(target) + "?format=tar"
    path = output_dir(args)
    try:
        response = api.request("GET", url)
        files = _int_header(response.getheader("X-Fstore-Files"))
        size = _int_header(response.getheader("X-Fstore-Bytes"))
        with tree_progress(f"get {target}", files, size) as progress:
            done = _extract(api, response, path, progress)
    except KeyboardInterrupt:
        raise Failure(EXIT_INTERRUPTED, f"interrupted: {path} has part of the tree") from None
    for skipped in done.skipped:
        warn(f"skipped {skipped}")
    if done.refused:
        for refusal in done.refused[:MAX_REFUSALS_SHOWN]:
            print(f"fstore: {shown(refusal)}", file=sys.stderr)
        raise Failure(
            EXIT_NODE,
            f"unsafe_path: refused {len(done.refused)} entries that would land outside {path} "
            "or write through a link; the rest is restored",
        )
    result = {
        "target": target,
        "path": str(path),
        "files": done.files,
        "dirs": done.dirs,
        "symlinks": done.symlinks,
        "size": done.size,
    }
    emit(args, result, get_tree_lines)


def _extract(api: Api, response: Any, path: Path, progress: TreeProgress) -> localtree.Extracted:
    import http.client

    try:
        return localtree.extract_tar(response, path, progress.add_bytes, progress.file_done)
    except (http.client.IncompleteRead, tarfile.ReadError) as e:
        raise Failure(
            EXIT_INTEGRITY,
            f"integrity: the tree's download ended early after {progress.files:,} files "
            f"({e}; the node's log may say why); {path} has part of it",
        ) from None
    except (OSError, http.client.HTTPException) as e:
        if isinstance(e, OSError) and e.filename is not None:
            raise local_error(str(e.filename), e) from None
        raise api.lost(e) from None
    except InvalidArgumentError as e:  # WrongKindError: something local in the way
        raise usage_error(str(e)) from None


def _int_header(value: str | None) -> int | None:
    return int(value) if value is not None and value.isdigit() else None


def get_tree_lines(result: Any) -> Iterator[str]:
    yield f"got {result['target']} into {result['path']}/: {tree_counts(result)}"


# --- ls of a directory ---------------------------------------------------------------------


def ls_tree(api: Api, args: argparse.Namespace) -> None:
    emit(args, api.call("GET", tree_path(args.target)), listing_lines)


def listing_lines(listing: Any) -> Iterator[str]:
    entries = listing["entries"]
    width = max((len(f"{e.get('size', 0):,}") for e in entries), default=0)
    for e in entries:
        kind = {"dir": stat.S_IFDIR, "symlink": stat.S_IFLNK}.get(e["kind"], stat.S_IFREG)
        mode = stat.filemode(kind | e["mode"])
        when = datetime.fromtimestamp(e["mtime_ns"] / 1e9).strftime("%Y-%m-%d %H:%M")
        name = e["name"] + ("/" if e["kind"] == "dir" else "")
        if e["kind"] == "symlink":
            name += f" -> {e['target']}"
        yield f"{mode}  {e.get('size', 0):>{width},}  {when}  {name}"
    yield (
        f"{listing['count']:,} entries; {listing['files']:,} files, {listing['size']:,} bytes "
        "in all below"
    )
