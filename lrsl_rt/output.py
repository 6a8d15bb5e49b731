"""Where ``predict`` writes: an ``--output`` file replaced atomically, or stdout as a stream.

``--output FILE`` is written to a new file beside it (``.FILE.<pid>.<random>.tmp``, same directory,
so the same file system) and renamed onto ``FILE`` when the run ends -- ``os.replace``, atomic on
POSIX and Windows. So:

- an earlier ``FILE`` stays as it was until the new one is complete, and survives a run that fails
  (a broken bundle, a full disk, a signal): the new file is removed instead;
- a run stopped by a bad input record (``--on-error stop``) still renames its file into place: it
  holds every record before the bad one, as the record contract promises, and the exit code is 1;
- a killed run (``SIGKILL``, a power cut) leaves at most a ``.tmp`` file, never a ``FILE`` that
  looks complete;
- two runs writing the same ``FILE`` each write their own temporary file: the last rename wins and
  the file is whole, never an interleaving of the two.

Stdout is a stream (records appear as chunks finish, ``| head`` works). A closed stdout (``>&-``) or
a failing one (``>/dev/full``) is an :class:`~lrsl_rt.errors.OutputError` naming ``<stdout>``; a
terminal encoding that cannot show every character gets backslash escapes instead of an error
(JSON output then escapes non-ASCII characters as ``\\uXXXX``, which stays valid JSON).

The input and the output must not be the same file: that is checked by identity (device and inode,
``os.stat``), so a hard link, a symlink or another spelling of the path is caught, and so is an
output file that stdin reads from (``< out.jsonl --output out.jsonl``).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import sys
from collections.abc import Iterator

from .errors import OutputError, RecordStop, UsageError


def check_not_input(output: str, input_path: str | None) -> None:
    """UsageError when ``output`` is the same file as the input (a path, or stdin for ``-``/None)."""
    try:
        out = os.stat(output)
    except OSError:
        return  # does not exist yet (or cannot be read): it cannot be the input
    if input_path and input_path != "-":
        with contextlib.suppress(OSError):
            if _same(out, os.stat(input_path)):
                raise UsageError(
                    f"--output {output} is the input file {input_path} (the same file on disk); "
                    "write the predictions elsewhere"
                )
        return
    with contextlib.suppress(OSError, ValueError, AttributeError):
        if _same(out, os.fstat(sys.stdin.fileno())):
            raise UsageError(
                f"--output {output} is the file stdin reads from; write the predictions elsewhere"
            )


def _same(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


@contextlib.contextmanager
def atomic_output(path: str) -> Iterator:
    """A text file that becomes ``path`` when the block ends, or stops at a bad input record.

    Any other exception (KeyboardInterrupt included) removes it and leaves ``path`` untouched.
    """
    if os.path.isdir(path):
        raise UsageError(f"--output {path} is a directory; name a file")
    directory, name = os.path.split(os.path.abspath(path))
    tmp = os.path.join(directory, f".{name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except OSError as e:
        raise UsageError(f"cannot write {path}: {e.strerror}") from e
    f = os.fdopen(fd, "w", encoding="utf-8", newline="")
    try:
        try:
            yield f
        except RecordStop:  # a stop at a bad record: keep the records before it
            _commit(f, tmp, path)
            raise
        _commit(f, tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            f.close()
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(e, OSError):
            raise OutputError(
                f"{path}: cannot write: {e.strerror or e}; the earlier file, if any, is unchanged"
            ) from e
        raise


def _commit(f, tmp: str, path: str) -> None:
    f.flush()
    os.fsync(f.fileno())
    f.close()
    with contextlib.suppress(OSError):
        os.chmod(tmp, os.stat(path).st_mode & 0o7777)  # replacing a file: keep its permissions
    os.replace(tmp, path)


@contextlib.contextmanager
def stdout_output() -> Iterator:
    """A :class:`RecordStream` over stdout, drained at the end; its failures become an OutputError."""
    if sys.stdout is None:
        raise OutputError("<stdout>: standard output is closed; redirect it to a file or use --output FILE")
    fit_encoding(sys.stdout)
    stream = RecordStream(sys.stdout)
    try:
        try:
            yield stream
        finally:
            # the whole records made so far, also before a bad record's stop or a signal (a second
            # signal while a stalled reader blocks this write gives up)
            stream.flush()
    except BrokenPipeError:
        raise  # the reader went away (`| head`): the CLI stops quietly
    except OSError as e:
        _silence_stdout()
        raise OutputError(f"<stdout>: cannot write: {e.strerror or e}") from e


class RecordStream:
    """Text written in whole records: buffered, and written out only at line ends with ``os.write``.

    Python's buffered stdout can lose or split bytes when a signal interrupts a write to a full pipe;
    here a signal that arrives during a write first lets the record in progress finish (up to its
    newline), then propagates. A second signal while that write still blocks stops at once.
    Streams without a file descriptor (a test's capture) are written to directly.
    """

    def __init__(self, target, drain_at: int = 1 << 16) -> None:
        self.target, self.drain_at = target, drain_at
        self.encoding = getattr(target, "encoding", None) or "utf-8"
        self.errors = "backslashreplace"  # a character the encoding lacks, or a lone surrogate in a label
        self._parts: list[str] = []
        self._size = 0
        try:
            target.flush()
            self._fd = target.fileno()
        except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is an OSError
            self._fd = None

    def write(self, text: str) -> int:
        self._parts.append(text)
        self._size += len(text)
        if self._size >= self.drain_at and text.endswith("\n"):
            self.flush()
        return len(text)

    def flush(self) -> None:
        text, self._parts, self._size = "".join(self._parts), [], 0
        if not text:
            return
        if self._fd is None:
            self.target.write(text)
            self.target.flush()
            return
        data = memoryview(text.encode(self.encoding, self.errors))
        pos = 0
        try:
            while pos < len(data):
                pos += os.write(self._fd, data[pos:])
        except KeyboardInterrupt:
            end = bytes(data[pos:]).find(b"\n")
            if pos and data[pos - 1 : pos] != b"\n" and end >= 0:
                stop = pos + end + 1
                while pos < stop:  # finish the record in progress, then stop
                    pos += os.write(self._fd, data[pos:stop])
            raise

    def isatty(self) -> bool:
        return False


def fit_encoding(stream) -> None:
    """Characters the stream's encoding lacks are written as backslash escapes, not an error."""
    encoding = (getattr(stream, "encoding", None) or "utf-8").lower().replace("_", "-")
    if not encoding.startswith("utf") and hasattr(stream, "reconfigure"):
        with contextlib.suppress(ValueError, OSError):
            stream.reconfigure(errors="backslashreplace")


def _silence_stdout() -> None:
    """Point fd 1 at /dev/null, so the interpreter's final flush of what is buffered cannot fail."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def require_stdout() -> None:
    """OutputError now, before a bundle loads, when there is no stdout to write to (``>&-``)."""
    if sys.stdout is None:
        raise OutputError("<stdout>: standard output is closed; redirect it to a file or use --output FILE")
