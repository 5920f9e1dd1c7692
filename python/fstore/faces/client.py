"""``fstore``: store, fetch, list and delete files through a node's HTTP API.

The command is a client of one node's local HTTP API (docs/API.md). It speaks
HTTP with the standard library (``http.client``), streams every upload and
download in pieces, and imports rich (for progress bars) only when stderr is a
terminal, so ``fstore --help`` stays instant.

Which node, first match wins:

1. ``--node URL`` (``http://HOST:PORT``, ``HOST:PORT`` or ``:PORT``);
2. ``--data-dir DIR``: the address the node wrote to ``DIR/http.addr``;
3. the environment: ``FSTORE_NODE`` (a URL), else ``FSTORE_DATA_DIR`` (a directory);
4. ``http://127.0.0.1:13000``, the HTTP API of a node listening on ``:3000``.

With ``--json`` a command prints one JSON document on stdout (the API's own
JSON where the API answers with JSON) and nothing else; stdout is empty when
it fails. Errors are one line on stderr, ``fstore: <code>: <message>`` for an
error the node reported. Nothing printed for people carries a raw control
character: any (in a name stored by an older node, say) is written as an
escape, ``\\x1b``.

Names given on the command line (and a file's own name, for ``put``) are
checked against the name rules before any request (``fstore.formats.names``):
a bad one, or one that is not valid UTF-8, is a usage error.

Exit codes:

- 0: success;
- 1: the node reported an error (its code and message are printed), or
  ``get -r`` refused entries that would land outside its target
  (``unsafe_path``; the rest is restored);
- 2: usage error: bad arguments, or a local file that cannot be read or
  written (an existing output file without ``--force``);
- 3: no node answers at the chosen address, or the connection to it was lost;
- 4: integrity failure on the client side: the bytes received do not hash to
  the BLAKE3 the node announced (the ETag), fewer arrived than announced, or
  the node stored bytes other than those sent;
- 130: interrupted (Ctrl-C): a ``put`` cut short stores nothing, and a ``get``
  leaves no partial output file.

A reader that closes stdout early (``fstore ls | head -1``) ends the command
quietly, with exit code 0: what it did not read, it did not want.

Directory trees (``put -r``, ``get -r``, ``ls NAME/``) are ``fstore.faces.treecmd``.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import stat
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from fstore.errors import InvalidNameError
from fstore.formats.names import check_name, printable

if TYPE_CHECKING:
    from http.client import HTTPConnection, HTTPResponse

    from fstore._native import Hasher

EXIT_OK = 0
EXIT_NODE = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_INTEGRITY = 4
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports a process Ctrl-C ended

DEFAULT_NODE = "http://127.0.0.1:13000"
HTTP_ADDR_FILE = "http.addr"
CAPABILITY_PREFIXES = ("fs1:", "fsd1:")
DIR_CAPABILITY_PREFIX = "fsd1:"
TAR_TYPE = "application/x-tar"
PIECE = 1 << 20  # bytes per read and write of a transfer
CONNECT_TIMEOUT = 10.0
IO_TIMEOUT = 600.0  # a put is answered once its last chunks are replicated
MAX_ERROR_BODY = 64 << 10

EXIT_CODES = """\
exit codes:
  0  success
  1  the node reported an error (printed as "fstore: <code>: <message>"), or
     get -r refused entries that would land outside its target (unsafe_path)
  2  usage error (bad arguments; a local file that cannot be read or written)
  3  no node answers at the chosen address, or the connection was lost
  4  integrity failure: the bytes received do not match the file's BLAKE3
  130  interrupted (Ctrl-C): a put stores nothing, a get leaves no partial file
"""


class Failure(Exception):
    """A failed command: ``fstore: <message>`` on stderr, and ``exit_code``."""

    def __init__(self, exit_code: int, message: str) -> None:
        super().__init__(shown(" ".join(message.split())))  # always one plain line
        self.exit_code = exit_code


def shown(text: str) -> str:
    """``text`` safe to print: control characters and bytes that were not UTF-8 (in a file
    name from the command line) written as ``\\xNN``."""
    try:
        text = text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a lone surrogate that stands for no byte
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return printable(text)


def usage_error(message: str) -> Failure:
    return Failure(EXIT_USAGE, message)


def local_error(what: str, error: OSError) -> Failure:
    return usage_error(f"{what}: {error.strerror or error}")


def checked_name(name: str, hint: str = "") -> str:
    """``name`` if it follows the name rules; else a usage error saying why, then ``hint``."""
    try:
        return check_name(name)
    except InvalidNameError as e:
        raise usage_error(f"invalid name: {e}{hint}") from None


# --- which node ----------------------------------------------------------------------


@dataclass(frozen=True)
class NodeAddress:
    """The base URL of a node's HTTP API, and how it was chosen (for messages)."""

    url: str
    origin: str


def node_url(text: str) -> str:
    """``http://HOST:PORT[/PREFIX]`` from a URL, ``HOST:PORT`` or ``:PORT``."""
    from urllib.parse import urlsplit

    url = text.strip()
    if "://" not in url:
        url = "http://" + ("127.0.0.1" + url if url.startswith(":") else url)
    try:
        parts = urlsplit(url)  # .port raises ValueError for a bad port
        valid = parts.scheme in ("http", "https") and bool(parts.hostname) and parts.port != 0
    except ValueError:
        valid = False
    if not valid:
        raise usage_error(f"not a node address: {text!r} (expected http://HOST:PORT)")
    return url.rstrip("/")


def node_of_data_dir(data_dir: Path) -> NodeAddress:
    path = data_dir / HTTP_ADDR_FILE
    try:
        text = path.read_text("utf-8")
    except OSError as e:
        raise Failure(
            EXIT_UNREACHABLE,
            f"no node address in {path} ({e.strerror or e}): is a node running with "
            f"--data-dir {data_dir}? Or choose a node with --node URL",
        ) from None
    return NodeAddress(node_url(text), f"from {path}")


def choose_node(args: argparse.Namespace, environ: Mapping[str, str]) -> NodeAddress:
    """The node to talk to: flags first, then the environment, then the default."""
    if args.node:
        return NodeAddress(node_url(args.node), "given by --node")
    if args.data_dir:
        return node_of_data_dir(Path(args.data_dir))
    if environ.get("FSTORE_NODE"):
        return NodeAddress(node_url(environ["FSTORE_NODE"]), "from FSTORE_NODE")
    if environ.get("FSTORE_DATA_DIR"):
        return node_of_data_dir(Path(environ["FSTORE_DATA_DIR"]))
    return NodeAddress(DEFAULT_NODE, "the default")


# --- HTTP ----------------------------------------------------------------------------


def path_segment(text: str) -> str:
    """``text`` URL-encoded as one path segment (UTF-8; ``/`` becomes ``%2F``)."""
    from urllib.parse import quote

    return quote(text, safe="")


def reason(error: BaseException) -> str:
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return str(error) or type(error).__name__


class Api:
    """Requests to one node; each one on its own connection (a command makes one)."""

    def __init__(self, node: NodeAddress) -> None:
        from urllib.parse import urlsplit

        parts = urlsplit(node.url)
        self.node = node
        self._https = parts.scheme == "https"
        self._host = parts.hostname or ""
        self._port = parts.port
        self._prefix = parts.path

    def unreachable(self, error: BaseException) -> Failure:
        return Failure(
            EXIT_UNREACHABLE,
            f"no node answers at {self.node.url} ({self.node.origin}): {reason(error)}; "
            "start one with fstore-node, or choose another with --node URL, "
            "--data-dir DIR, FSTORE_NODE or FSTORE_DATA_DIR",
        )

    def lost(self, error: BaseException) -> Failure:
        return Failure(
            EXIT_UNREACHABLE, f"lost the connection to the node at {self.node.url}: {reason(error)}"
        )

    def _connect(self) -> HTTPConnection:
        import http.client

        kind = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
        connection = kind(self._host, self._port, timeout=CONNECT_TIMEOUT)
        try:
            connection.connect()
        except OSError as e:
            raise self.unreachable(e) from None
        assert connection.sock is not None
        connection.sock.settimeout(IO_TIMEOUT)
        return connection

    def request(
        self,
        method: str,
        path: str,
        body: Iterable[bytes] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> HTTPResponse:
        """Send a request (its body streamed); the response, whose status is below 400.

        An error status raises the node's error as a :class:`Failure`.
        """
        import http.client

        connection = self._connect()
        send_error: OSError | None = None
        try:
            all_headers = {"Connection": "close", **(headers or {})}
            connection.request(method, self._prefix + path, body=body, headers=all_headers)
        except OSError as e:
            send_error = e  # the node may have answered early (a refused upload) and closed
        try:
            response = connection.getresponse()
        except (OSError, http.client.HTTPException) as e:
            raise self.lost(send_error or e) from None
        if response.status >= 400:
            raise self._node_error(response)
        return response

    def _node_error(self, response: HTTPResponse) -> Failure:
        import http.client

        try:
            error = json.loads(response.read(MAX_ERROR_BODY))["error"]
            code, message = str(error["code"]), str(error["message"])
        except (OSError, http.client.HTTPException, ValueError, KeyError, TypeError):
            code, message = f"http_{response.status}", response.reason or "error"
        return Failure(EXIT_NODE, f"{code}: {message}")

    def read_json(self, response: HTTPResponse) -> Any:
        import http.client

        try:
            return json.loads(response.read())
        except (OSError, http.client.HTTPException) as e:
            raise self.lost(e) from None
        except ValueError as e:
            raise Failure(EXIT_NODE, f"bad_response: the node sent malformed JSON ({e})") from None

    def call(self, method: str, path: str) -> Any:
        """A request without a body whose answer is JSON; the parsed JSON."""
        return self.read_json(self.request(method, path))


# --- transfers: hashing, counting and progress ------------------------------------------


class Meter:
    """Hashes and counts the bytes of a transfer, and moves its progress bar."""

    def __init__(self, advance: Callable[[int], None]) -> None:
        from fstore._native import Hasher

        self._hasher: Hasher = Hasher()
        self._advance = advance
        self.size = 0

    def update(self, piece: bytes | memoryview) -> None:
        # One core: the transfer already overlaps hashing with receiving, and
        # rayon's workers spinning between pieces cost more than they save.
        self._hasher.update(piece, parallel=False)
        self.size += len(piece)
        self._advance(len(piece))

    def hexdigest(self) -> str:
        return self._hasher.hexdigest()

    def check(self, expected: str, what: str) -> str:
        """The BLAKE3 of the bytes seen; a Failure (exit 4) unless it is ``expected``."""
        digest = self.hexdigest()
        if digest != expected.lower():
            raise Failure(
                EXIT_INTEGRITY,
                f"integrity: {what} has BLAKE3 {digest}, but the node announced {expected}",
            )
        return digest


@contextlib.contextmanager
def progress_bar(
    label: str, total: int | None, files: str | None = None
) -> Iterator[Callable[..., None]]:
    """A function advancing a progress bar on stderr, drawn only if stderr is a terminal.

    It takes the bytes to advance by; with ``files`` (the first text of a files
    column, e.g. ``0 of 12``), also ``files=`` the column's next text.
    """
    if not sys.stderr.isatty():
        yield lambda _count, files=None: None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        ProgressColumn,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    files_column = [TextColumn("{task.fields[files]} files", markup=False)] if files else []
    columns: list[ProgressColumn] = [
        TextColumn("{task.description}", markup=False),
        BarColumn(),
        *files_column,
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    ]
    with Progress(*columns, console=Console(stderr=True)) as progress:
        task = progress.add_task(label, total=total, files=files or "")

        def advance(count: int, files: str | None = None) -> None:
            if files is None:
                progress.advance(task, count)
            else:
                progress.update(task, advance=count, files=files)

        yield advance


@contextlib.contextmanager
def metered(label: str, total: int | None) -> Iterator[Meter]:
    with progress_bar(label, total) as advance:
        yield Meter(advance)


# --- put -----------------------------------------------------------------------------


@contextlib.contextmanager
def open_input(file: str) -> Iterator[IO[bytes]]:
    if file == "-":
        yield sys.stdin.buffer
        return
    try:
        source = open(file, "rb")  # noqa: SIM115 (closed below)
    except OSError as e:
        raise local_error(file, e) from None
    with source:
        yield source


def remaining_size(source: IO[bytes]) -> int | None:
    """The bytes left in a regular file (sent with Content-Length); None for a stream."""
    try:
        st = os.fstat(source.fileno())
        return st.st_size - source.tell() if stat.S_ISREG(st.st_mode) else None
    except (OSError, ValueError):
        return None


def read_pieces(source: IO[bytes], size: int | None, meter: Meter, what: str) -> Iterator[bytes]:
    """The bytes of ``source`` (``size`` of them if known) in pieces, seen by ``meter``."""
    left = size
    while left is None or left > 0:
        try:
            piece = source.read(PIECE if left is None else min(PIECE, left))
        except OSError as e:
            raise local_error(what, e) from None
        if not piece:
            if left:
                raise usage_error(f"{what}: the file shrank while it was read")
            return
        meter.update(piece)
        yield piece
        if left is not None:
            left -= len(piece)


def put_name(args: argparse.Namespace) -> str:
    if args.name is not None:
        return checked_name(str(args.name))
    if args.file == "-":
        raise usage_error("stdin has no name: give it one with --name NAME")
    base = Path(args.file).name
    return checked_name(base, f" (the name of {args.file}; choose one with --name NAME)")


class Body:
    """The pieces of an upload; ``sent`` once the sender asked for more after the last."""

    def __init__(self, pieces: Iterator[bytes]) -> None:
        self._pieces = pieces
        self.sent = False

    def __iter__(self) -> Iterator[bytes]:
        yield from self._pieces
        self.sent = True


def put(api: Api, args: argparse.Namespace) -> None:
    if args.recursive:
        from fstore.faces.treecmd import put_tree

        put_tree(api, args)
        return
    if args.file != "-" and os.path.isdir(args.file):
        raise usage_error(f"{args.file} is a directory: store it with put -r")
    name = put_name(args)
    what = "stdin" if args.file == "-" else args.file
    body: Body | None = None
    try:
        with open_input(args.file) as source:
            size = remaining_size(source)
            headers = {"Content-Type": "application/octet-stream"}
            if size is not None:
                headers["Content-Length"] = str(size)
            with metered(f"put {name}", size) as meter:
                body = Body(read_pieces(source, size, meter, what))
                path = "/v1/files/" + path_segment(name)
                if args.allow_degraded:
                    path += "?allow_degraded=1"
                response = api.request("PUT", path, body, headers)
        entry = api.read_json(response)
    except KeyboardInterrupt:
        if body is not None and body.sent:
            message = f"interrupted once {name} was sent whole: the node may still store it"
        else:
            message = "interrupted: nothing stored"  # the node drops a body cut short
        raise Failure(EXIT_INTERRUPTED, message) from None
    meter.check(str(entry.get("blake3")), f"the file {name} stored by the node")
    emit(args, entry, put_lines)
    warn_if_few_copies(entry)


def put_lines(entry: Any) -> Iterator[str]:
    yield f"stored {entry['name']}: {entry['size']:,} bytes"
    yield f"  BLAKE3      {entry['blake3']}"
    yield f"  capability  {entry['capability']}"
    if "copies" in entry:  # a node older than the field says nothing of them
        yield f"  copies      {entry['copies']} of {entry['replicas']}"


def warn_if_few_copies(entry: Any) -> None:
    """A warning on stderr when the store made fewer durable copies than the node wants."""
    copies, wanted = entry.get("copies"), entry.get("replicas")
    if isinstance(copies, int) and isinstance(wanted, int) and copies < wanted:
        print(
            f"fstore: warning: {entry['name']} has {copies} durable "
            f"{'copy' if copies == 1 else 'copies'}, not the {wanted} the node wants: "
            "fewer nodes were live than its --replicas",
            file=sys.stderr,
        )


# --- get -----------------------------------------------------------------------------


def is_capability(target: str) -> bool:
    return target.startswith(CAPABILITY_PREFIXES)


def output_path(args: argparse.Namespace) -> Path | None:
    """Where ``get`` writes: a path, or None for stdout. Checked before any request."""
    if args.output == "-":
        if args.json:
            raise usage_error("--json and -o - would both write to stdout")
        return None
    if args.output is not None:
        path = Path(args.output)
    else:
        base = args.target.rpartition("/")[2]
        if is_capability(base) or base in ("", ".", ".."):
            raise usage_error(f"choose where to write {args.target} with -o FILE (- for stdout)")
        path = Path(base)
    if not args.force and os.path.lexists(path) and not is_stream(path):
        raise usage_error(f"{path} exists (--force overwrites it)")
    return path


def is_stream(path: Path) -> bool:
    """Whether ``path`` is a character device or a FIFO (``/dev/null``, a named pipe):
    written in place, and no file is overwritten by writing to it."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return stat.S_ISCHR(mode) or stat.S_ISFIFO(mode)


@contextlib.contextmanager
def stdout_sink() -> Iterator[IO[bytes]]:
    out = sys.stdout.buffer
    yield out
    out.flush()


def silence_stdout() -> None:
    """Point stdout at /dev/null: its reader has gone, and the flush at exit must be quiet."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


@contextlib.contextmanager
def file_sink(path: Path, force: bool) -> Iterator[IO[bytes]]:
    """A file whose bytes appear at ``path`` only if the block succeeds.

    They go to a temporary file beside ``path``, renamed into place at the end, so
    a failed get leaves nothing behind and never clobbers an existing file. A
    device or a FIFO (``/dev/null``, a named pipe) is written directly.
    """
    if is_stream(path):
        with open(path, "wb") as out:
            yield out
        return
    temporary = path.with_name(f".{path.name}.{os.urandom(4).hex()}.part")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as out:
            yield out
        if force:
            os.replace(temporary, path)
        else:
            os.link(temporary, path)  # fails if a file appeared there meanwhile
            os.unlink(temporary)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


@contextlib.contextmanager
def open_output(path: Path | None, force: bool) -> Iterator[IO[bytes]]:
    """The sink of a download, its local errors reported as usage errors."""
    what = "stdout" if path is None else str(path)
    try:
        with stdout_sink() if path is None else file_sink(path, force) as out:
            yield out
    except FileExistsError:
        raise usage_error(f"{what} exists (--force overwrites it)") from None
    except BrokenPipeError:
        raise  # the reader has gone: a quiet end (main)
    except OSError as e:
        raise local_error(what, e) from None


def expected_blake3(response: HTTPResponse) -> str:
    etag = (response.getheader("ETag") or "").removeprefix("W/").strip('"')
    if not etag:
        raise Failure(EXIT_INTEGRITY, "integrity: the node sent no ETag to check the file with")
    return etag


def receive(api: Api, response: HTTPResponse, out: IO[bytes], meter: Meter) -> None:
    """Copy the response body to ``out`` in pieces, every piece seen by ``meter``.

    Two buffers take turns: while one piece is hashed and written (on a worker
    thread; both release the GIL), the next is received into the other.
    """
    from concurrent.futures import Future, ThreadPoolExecutor

    buffers = [memoryview(bytearray(PIECE)) for _ in range(2)]

    def take(piece: memoryview) -> None:
        meter.update(piece)
        out.write(piece)

    with ThreadPoolExecutor(1, thread_name_prefix="fstore-get") as worker:
        taking: Future[None] | None = None
        received = 0
        for turn in itertools.count():
            # The piece last held in this buffer was taken before the one in flight began.
            n = read_piece(api, response, buffers[turn % 2], received)
            if taking is not None:
                taking.result()  # in order, and any error of writing raised here
            if not n:
                return
            received += n
            taking = worker.submit(take, buffers[turn % 2][:n])


def read_piece(api: Api, response: HTTPResponse, view: memoryview, received: int) -> int:
    """Fill ``view`` from the body (fewer bytes only at its end); 0 at the end."""
    import http.client

    try:
        return response.readinto(view)
    except http.client.IncompleteRead:
        announced = "?" if response.length is None else f"{response.length:,}"
        raise Failure(
            EXIT_INTEGRITY,
            f"integrity: the download ended after {received:,} of {announced} bytes "
            "(the node's log may say why)",
        ) from None
    except (OSError, http.client.HTTPException) as e:
        raise api.lost(e) from None


def checked_capability(text: str) -> str:
    """``text`` if it is a well-formed capability (``fs1:``, ``fsd1:``); else a usage error."""
    from fstore.errors import InvalidCapabilityError
    from fstore.formats.capability import Capability, DirCapability

    if not is_capability(text):
        raise usage_error(f"{shown(text)} is not a capability (fs1:…, fsd1:…)")
    kind = DirCapability if text.startswith(DIR_CAPABILITY_PREFIX) else Capability
    try:
        kind.parse(text)
    except InvalidCapabilityError as e:
        raise usage_error(f"invalid capability: {e}") from None
    return text


def file_path(target: str) -> str:
    """The API path of the file ``target`` names: a name (``/`` inside it as ``%2F``: the
    node finds where a tree's name ends), a capability, or a path below a directory's."""
    if not is_capability(target):
        return "/v1/files/" + path_segment(checked_name(target))
    capability, _, inside = target.partition("/")
    checked_capability(capability)
    segments = [path_segment(s) for s in inside.split("/")] if inside else []
    return "/v1/caps/" + "/".join([capability, *segments])


def get(api: Api, args: argparse.Namespace) -> None:
    if args.recursive:
        from fstore.faces.treecmd import get_tree

        get_tree(api, args)
        return
    url = file_path(args.target)
    path = output_path(args)
    try:
        try:
            response = api.request("GET", url)
        except Failure as e:
            if str(e).startswith("wrong_kind:") and "is a directory" in str(e):
                e.args = (f"{e}; fetch a directory with get -r",)
            raise
        expected = expected_blake3(response)
        with (
            open_output(path, args.force) as out,
            metered(f"get {args.target}", response.length) as meter,
        ):
            receive(api, response, out, meter)
            digest = meter.check(expected, f"the file received for {args.target}")
    except KeyboardInterrupt:
        where = "stdout has part of the file" if path is None else f"nothing written to {path}"
        raise Failure(EXIT_INTERRUPTED, f"interrupted: {where}") from None
    if path is not None:
        result = {"target": args.target, "path": str(path), "size": meter.size, "blake3": digest}
        emit(args, result, get_lines)


def get_lines(result: Any) -> Iterator[str]:
    yield f"got {result['target']} into {result['path']}: {result['size']:,} bytes, BLAKE3 matches"


# --- ls, rm, peers, status -----------------------------------------------------------------


def ls(api: Api, args: argparse.Namespace) -> None:
    if args.pins:
        if args.target is not None:
            raise usage_error("ls --pins lists the pins; it takes no NAME")
        emit(args, api.call("GET", "/v1/pins"), pins_lines)
        return
    if args.target is not None:
        from fstore.faces.treecmd import ls_tree

        ls_tree(api, args)
        return
    emit(args, api.call("GET", "/v1/files"), ls_lines)


def pins_lines(listing: Any) -> Iterator[str]:
    return ls_lines({"files": listing["pins"]})


def ls_lines(listing: Any) -> Iterator[str]:
    files = listing["files"]
    width = max((len(f"{f['size']:,}") for f in files), default=0)
    for f in files:
        stored = datetime.fromtimestamp(f["stored_at"]).strftime("%Y-%m-%d %H:%M:%S")
        tree = str(f.get("capability", "")).startswith(DIR_CAPABILITY_PREFIX)
        yield f"{f['size']:>{width},}  {stored}  {f['name']}{'/' if tree else ''}"


def rm(api: Api, args: argparse.Namespace) -> None:
    checked_name(args.name)
    api.request("DELETE", "/v1/files/" + path_segment(args.name)).close()
    emit(args, {"name": args.name, "deleted": True}, lambda r: [f"deleted {r['name']}"])


def pin(api: Api, args: argparse.Namespace) -> None:
    capability = checked_capability(args.capability)
    entry = api.read_json(api.request("PUT", "/v1/pins/" + path_segment(capability)))
    emit(args, entry, lambda e: [f"pinned {e['capability']} ({e['size']:,} bytes)"])


def unpin(api: Api, args: argparse.Namespace) -> None:
    capability = checked_capability(args.capability)
    api.request("DELETE", "/v1/pins/" + path_segment(capability)).close()
    emit(args, {"capability": capability, "unpinned": True}, lambda r: ["unpinned"])


def peers(api: Api, args: argparse.Namespace) -> None:
    emit(args, api.call("GET", "/v1/peers"), peers_lines)


def peers_lines(listing: Any) -> Iterator[str]:
    if not listing["peers"]:
        yield "no peers linked"
    for peer in listing["peers"]:
        direction = "outbound" if peer["outbound"] else "inbound"
        yield f"{peer['node_id']}  {peer['addr'] or '-'}  {direction}"


def status(api: Api, args: argparse.Namespace) -> None:
    emit(args, api.call("GET", "/v1/status"), status_lines)


def status_lines(node: Any) -> Iterator[str]:
    width = max((len(key) for key in node), default=0)
    for key, value in node.items():
        text = value if isinstance(value, str) else json.dumps(value)
        yield f"{key + ':':<{width + 1}} {text}"


def emit(args: argparse.Namespace, data: Any, lines: Callable[[Any], Iterable[str]]) -> None:
    """The result of a command on stdout: JSON with ``--json``, else lines for people."""
    if args.json:
        print(json.dumps(data))
    else:
        for line in lines(data):
            print(printable(line))


# --- demo ------------------------------------------------------------------------------


def demo(args: argparse.Namespace) -> int:
    import logging

    from fstore.faces.demo import run_demo

    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="    %(name)s: %(message)s",
    )
    return run_demo(args.size)


# --- the command line ------------------------------------------------------------------

Command = Callable[[Api, argparse.Namespace], None]


def common_options() -> argparse.ArgumentParser:
    """Options every node command takes, before or after its name.

    Their defaults are suppressed so that one given before the command name is not
    reset by the subcommand's parser; :func:`parse` fills them in.
    """
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("node selection")
    group.add_argument(
        "--node",
        metavar="URL",
        default=argparse.SUPPRESS,
        help="the node's HTTP API: http://HOST:PORT, HOST:PORT or :PORT "
        f"(else $FSTORE_NODE; default {DEFAULT_NODE})",
    )
    group.add_argument(
        "--data-dir",
        metavar="DIR",
        default=argparse.SUPPRESS,
        help=f"the node of this data directory (its DIR/{HTTP_ADDR_FILE}; else $FSTORE_DATA_DIR)",
    )
    common.add_argument(
        "--json",
        action="store_true",
        default=argparse.SUPPRESS,
        help="print the result as JSON on stdout, for scripts",
    )
    return common


def build_parser() -> argparse.ArgumentParser:
    common = common_options()
    parser = argparse.ArgumentParser(
        prog="fstore",
        description="fstore: an encrypted peer-to-peer file store. Talks to one node "
        "through its HTTP API.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[common],
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, run: Command, summary: str) -> argparse.ArgumentParser:
        p = sub.add_parser(
            name,
            help=summary,
            description=summary,
            epilog=EXIT_CODES,
            formatter_class=argparse.RawDescriptionHelpFormatter,
            parents=[common],
        )
        p.set_defaults(run=run)
        return p

    p = command("put", put, "store a file, or with -r a directory tree; prints its capability")
    p.add_argument(
        "file", metavar="FILE", help="the file (or with -r, directory) to store; - reads stdin"
    )
    p.add_argument("--name", help="the name to store it under (default: FILE's base name)")
    p.add_argument(
        "--allow-degraded",
        action="store_true",
        help="store even if fewer than a majority of the replicas can take a copy (one is "
        "enough); repair makes the rest when the members return",
    )
    p.add_argument(
        "-r",
        "--recursive",
        action="store_true",
        help="store the directory FILE and everything in it (links as links, never followed)",
    )

    p = command(
        "get", get, "fetch a file (or with -r a directory tree) by name or capability; checks it"
    )
    p.add_argument(
        "target",
        metavar="NAME|CAPABILITY",
        help="a stored name, NAME/path/inside a tree, or a capability (fs1:…, fsd1:…[/path])",
    )
    p.add_argument(
        "-o",
        "--output",
        metavar="FILE",
        help="where to write it; - writes to stdout (default: the name's base name, here); "
        "with -r the directory to restore into",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="overwrite an existing output file (with -r: restore into a non-empty directory)",
    )
    p.add_argument(
        "-r",
        "--recursive",
        action="store_true",
        help="restore the whole directory tree, with modes and mtimes",
    )

    p = command("ls", ls, "list the names of the namespace, or one level of a directory tree")
    p.add_argument(
        "target",
        nargs="?",
        metavar="NAME/|NAME/path/",
        help="a directory: a tree's name, a path inside it, or a fsd1: capability",
    )
    p.add_argument("--pins", action="store_true", help="list the pinned capabilities instead")
    p = command("pin", pin, "keep a file shared with you alive under your namespace")
    p.add_argument("capability", metavar="CAPABILITY", help="an fs1: capability")
    p = command("unpin", unpin, "stop keeping a pinned file; its space is reclaimed")
    p.add_argument("capability", metavar="CAPABILITY", help="an fs1: capability")
    p = command("rm", rm, "delete a name")
    p.add_argument("name", metavar="NAME")
    command("peers", peers, "list the node's linked peers")
    command("status", status, "show the node's identity, address and storage")

    p = sub.add_parser("demo", help="run three nodes in this process and show the story")
    p.add_argument("--size", type=int, default=6 << 20, help="picture size in bytes")
    p.add_argument("-v", "--verbose", action="store_true", help="show the nodes' logs")
    return parser


def parse(argv: list[str] | None) -> argparse.Namespace:
    args = build_parser().parse_args(argv)
    for option, default in (("node", None), ("data_dir", None), ("json", False)):
        if not hasattr(args, option):
            setattr(args, option, default)
    return args


def exit_status(code: str | int | None) -> int:
    """The exit status of a ``SystemExit`` raised by argparse (help: 0, errors: 2)."""
    return code if isinstance(code, int) else EXIT_OK if code is None else EXIT_USAGE


def main(argv: list[str] | None = None) -> int:
    """Run the ``fstore`` command; its exit status (see the module docstring)."""
    try:
        code = run_command(argv)
        sys.stdout.flush()
    except BrokenPipeError:
        silence_stdout()
        return EXIT_OK  # the reader of stdout has what it wanted (`fstore ls | head -1`)
    return code


def run_command(argv: list[str] | None) -> int:
    try:
        args = parse(argv)
    except SystemExit as e:
        return exit_status(e.code)
    try:
        if args.command == "demo":
            return demo(args)
        run: Command = args.run
        run(Api(choose_node(args, os.environ)), args)
    except Failure as e:
        print(f"fstore: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("fstore: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
