"""Reading regular files safely: never blocking, never past a size cap, never a FIFO, device or socket.

The one place gpupipe opens a file it was named by a caller: frame files (:mod:`gpupipe.frames.read`)
and config files (:mod:`gpupipe.config`). The rules:

- only regular files are read (symlinks followed): a FIFO, device, socket or directory is refused
  from the path's own ``stat`` before it is opened, so a device node is never even opened; the
  open never blocks (``O_NONBLOCK``), so a FIFO swapped in after the ``stat`` cannot hang the
  caller, and the descriptor's ``fstat`` refuses it;
- a file larger than ``max_bytes`` is refused from its size, before any read; no read goes past
  the limit its caller gives (one byte more than it will accept shows a file that grew);
- :func:`read_regular` reads a file that changed while it was read (its :class:`FileIdentity`
  differs before and after, or it holds fewer or more bytes than its size said) once more, then
  refuses it.

Refusals are :class:`FileRefused`, which each caller turns into its own error (a frame's, a
config file's). The stat fields of a changing file are logged at debug level (logger
``gpupipe.frames``), never put into an error.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

from ..errors import GpupipeError
from .keys import FileIdentity

__all__ = ["FileRefused", "Problem", "file_kind", "open_regular", "read_regular", "read_upto"]

log = logging.getLogger("gpupipe.frames")

Problem = Literal["missing", "not_regular", "no_device", "too_large", "changed", "unreadable"]
"""Why a file was refused: no such file; not a regular file; an ``open`` refused with ``ENXIO`` (a
socket); larger than the cap; changed while read, twice; any other ``OSError`` (or a NUL in the path)."""


class FileRefused(GpupipeError):
    """A file was not read, and why (:data:`Problem`).

    ``what`` names a non-regular file's type (``"a FIFO"``); ``size`` is a file's size for
    ``too_large``; ``cause`` is the ``OSError`` (or ``ValueError``) behind ``missing``,
    ``no_device`` and ``unreadable``. Callers translate it into their own error; it carries no
    file content and no stat field but the size.
    """

    def __init__(self, problem: Problem, *, what: str = "", size: int = 0, cause: BaseException | None = None) -> None:
        self.problem: Problem = problem
        self.what = what
        self.size = size
        self.cause = cause
        super().__init__(problem if not what else f"{problem}: {what}")


# Non-blocking, so that a FIFO swapped in after the stat cannot block the open; no controlling tty.
_OPEN_FLAGS = (
    os.O_RDONLY
    | getattr(os, "O_NONBLOCK", 0)
    | getattr(os, "O_CLOEXEC", 0)
    | getattr(os, "O_NOCTTY", 0)
    | getattr(os, "O_BINARY", 0)
)


def file_kind(mode: int) -> str | None:
    """What a non-regular file is (``"a FIFO"``, ``"a directory"``, ...), or ``None`` for a regular file."""
    if stat.S_ISREG(mode):
        return None
    for test, what in (
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISDIR, "a directory"),
    ):
        if test(mode):
            return what
    return "not a regular file"


def _refuse_special(st: os.stat_result) -> None:
    what = file_kind(st.st_mode)
    if what is not None:
        raise FileRefused("not_regular", what=what)


def _refused(e: OSError | ValueError) -> FileRefused:
    if isinstance(e, FileNotFoundError):
        return FileRefused("missing", cause=e)
    if isinstance(e, OSError) and e.errno == errno.ENXIO:  # open() of a socket
        return FileRefused("no_device", cause=e)
    return FileRefused("unreadable", cause=e)


@contextmanager
def open_regular(path: str | os.PathLike[str], max_bytes: int | None = None) -> Iterator[tuple[int, os.stat_result]]:
    """Open a regular file for reading; yields its descriptor and its ``fstat``.

    Raises :class:`FileRefused` before reading a byte for anything but a regular file and for a
    file over ``max_bytes`` (``None``: no cap); an ``OSError`` raised by the ``with`` body is
    refused the same way (``unreadable``).
    """
    try:
        _refuse_special(os.stat(path))
        fd = os.open(path, _OPEN_FLAGS)
    except (OSError, ValueError) as e:  # ValueError: a NUL byte in the path
        raise _refused(e) from None
    try:
        st = os.fstat(fd)
        _refuse_special(st)
        if max_bytes is not None and st.st_size > max_bytes:
            raise FileRefused("too_large", size=st.st_size)
        yield fd, st
    except OSError as e:
        raise _refused(e) from None
    finally:
        os.close(fd)


def read_upto(fd: int, limit: int) -> bytes:
    """Up to ``limit`` bytes from ``fd``: fewer only at the end of the file."""
    chunks: list[bytes] = []
    got = 0
    while got < limit:
        b = os.read(fd, limit - got)
        if not b:
            break
        chunks.append(b)
        got += len(b)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _read_once(path: str | os.PathLike[str], max_bytes: int | None) -> tuple[bytes, FileIdentity, FileIdentity]:
    """One attempt: ``(data, identity before the read, identity after it)``."""
    with open_regular(path, max_bytes) as (fd, before):
        size = before.st_size
        # One byte past the size shows a file that grew; never more than max_bytes + 1 per attempt.
        data = read_upto(fd, (size if max_bytes is None else min(size, max_bytes)) + 1)
        after = os.fstat(fd)
    return data, FileIdentity.of(before), FileIdentity.of(after)


def read_regular(path: str | os.PathLike[str], max_bytes: int | None = None) -> tuple[bytes, FileIdentity]:
    """A regular file's bytes and the :class:`FileIdentity` they were read under.

    Refused (:class:`FileRefused`) as :func:`open_regular` refuses, and ``changed`` when the file
    changed while it was read (see the module docstring) twice in a row. At most
    ``max_bytes + 1`` bytes are read per attempt, even if the file grows meanwhile.
    """
    for _attempt in range(2):
        data, before, after = _read_once(path, max_bytes)
        if before == after and len(data) == before.size:
            return data, before
        log.debug(
            "%s changed while being read (stat before: %s, after: %s; read %d bytes of %d)",
            os.fspath(path),
            before,
            after,
            len(data),
            before.size,
        )
    raise FileRefused("changed")
