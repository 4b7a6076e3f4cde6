"""Typed errors raised by gpupipe.

Every error names what failed (a frame's path or cache key, or a config key) and why.
``FrameError`` and its subclasses are also *returned*, one per failed frame, by
:meth:`gpupipe.FrameEncoder.encode_batch`, so that one bad frame never sinks a batch.

A ``FrameError``'s ``reason`` never quotes the frame's contents or its file's stat fields
(inode, device, times): it may reach a client of ``gpupipe serve`` that can name the file
but must not read what is not an image.

Events a user should know about but that raise nothing (a budget clamped up to its floor, a
frame encoded on the CPU path instead of the GPU, a lost device, allocator tuning that cannot
apply) are reported once each through :func:`warnings.warn` with one of the warning classes
below, and never also logged: ``logging.captureWarnings(True)`` routes them to logging (the
``gpupipe`` command does), and the usual warning filters silence or escalate them. Logging
carries the rest: progress and diagnostics at INFO and DEBUG.
"""

from __future__ import annotations

import re

__all__ = [
    "AllocatorTuningWarning",
    "BackendUnavailable",
    "BudgetTimeout",
    "CacheError",
    "ConfigError",
    "ConfigWarning",
    "DeviceLost",
    "DeviceOutOfMemory",
    "EncodeFailed",
    "ExtractError",
    "FfmpegFailed",
    "FfmpegUnavailable",
    "FrameChanged",
    "FrameDecodeError",
    "FrameError",
    "FrameNotFound",
    "FrameNotRegularFile",
    "FrameOutOfRange",
    "FrameTooLarge",
    "GpuDeviceLostWarning",
    "GpuFallbackWarning",
    "GpupipeError",
    "NothingToExtract",
    "SocketInUse",
    "SocketPathError",
    "codec_reason",
]


_BYTES_LITERAL = re.compile(r"(?<!\w)b'(?:[^'\\]|\\.)*'" + r'|(?<!\w)b"(?:[^"\\]|\\.)*"')


def codec_reason(e: BaseException | str) -> str:
    """A codec library's exception message (or a line of it) fit for a frame error's reason: the
    bytes it quotes from the frame (Pillow's ``broken PNG file (chunk b'...')``) are left out, and
    at most 200 characters are kept."""
    text = _BYTES_LITERAL.sub("(data left out)", str(e))
    return text if len(text) <= 200 else text[:197] + "..."


class GpupipeError(Exception):
    """Base class of every error gpupipe raises."""


class ConfigError(GpupipeError, ValueError):
    """A configuration file, key or environment variable is invalid.

    ``source`` is the file (or environment variable) and ``key`` the dotted key path,
    e.g. ``gpus.1.cache.max_bytes``.
    """

    def __init__(self, message: str, *, source: str | None = None, key: str | None = None):
        self.source = source
        self.key = key
        where = ", ".join(p for p in (source, f"key {key!r}" if key else None) if p)
        super().__init__(f"{where}: {message}" if where else message)


class FrameError(GpupipeError):
    """A frame could not be turned into a data URI.

    ``frame`` names the frame (its path, or a short ``bytes:`` label for in-memory data).
    """

    def __init__(self, frame: str, reason: str):
        self.frame = frame
        self.reason = reason
        super().__init__(f"{frame}: {reason}")

    def __reduce__(self) -> tuple[type[FrameError], tuple[str, str]]:  # keep picklable across process pools
        return (type(self), (self.frame, self.reason))

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, FrameError)
            and type(self) is type(other)
            and (self.frame, self.reason) == (other.frame, other.reason)
        )

    def __hash__(self) -> int:
        return hash((type(self), self.frame, self.reason))


class FrameNotFound(FrameError):
    """The frame's file does not exist or cannot be read."""


class FrameNotRegularFile(FrameNotFound):
    """The frame's path is not a regular file (a FIFO, device, socket or directory), so it is never read."""


class FrameDecodeError(FrameError):
    """The frame is empty, truncated, corrupt, or not a PNG/JPEG image."""


class FrameChanged(FrameDecodeError):
    """The frame's file changed while it was read: its stat identity differed before and after the
    read (twice in a row), fewer bytes were read than its size said, or it grew past the header its
    budget was estimated from. Not a property of the frame: asking again later may succeed."""


class FrameOutOfRange(FrameError):
    """A video frame asked for past the end of its clip: an index at or past its frame count, or a
    time past its duration (the reason names the count or the duration)."""


class FrameTooLarge(FrameError):
    """The frame declares more pixels than ``max_pixels`` allows (decompression-bomb guard), or its
    encoded data is larger than ``max_bytes``."""


class BudgetTimeout(FrameError):
    """The frame's work waited ``cache.admission_timeout`` seconds for room in the byte budget
    (held by other work in flight) and gave up; other frames are unaffected."""


class SocketInUse(GpupipeError, OSError):
    """``gpupipe serve --socket PATH`` cannot listen at ``PATH``: something that is not a socket is
    there, or a server answers on the socket there. Nothing at ``PATH`` is changed."""


class SocketPathError(GpupipeError, OSError):
    """``gpupipe serve --socket PATH`` cannot create a socket at ``PATH``: its folder is missing or
    not a folder, it may not be written, or the path is too long. The message names the path and why."""


class CacheError(GpupipeError, RuntimeError):
    """A cache was used in a way that cannot work: a loader that requests its own key (it would
    wait for itself forever), or a loader that returns ``None``."""


class BackendUnavailable(GpupipeError, RuntimeError):
    """The requested backend cannot run here; the message says why (no CUDA device, CuPy or DALI missing)."""


class DeviceOutOfMemory(GpupipeError, RuntimeError):
    """Device (or pinned host) memory ran out while processing a batch; the batch may be retried smaller."""


class DeviceLost(GpupipeError, RuntimeError):
    """The CUDA context hit a sticky error: no further device work can succeed in this process.

    ``cause`` is the library's exception; ``results``/``done`` hold what the staged run finished
    before it (one slot per job; ``done[i]`` says whether ``results[i]`` is a result).
    """

    def __init__(self, cause: BaseException, results: list | None = None, done: list[bool] | None = None) -> None:
        lines = [ln.strip() for ln in str(cause).splitlines() if ln.strip()]
        super().__init__(f"CUDA context lost: {(lines[0] if lines else type(cause).__name__)[:200]}")
        self.cause = cause
        self.results = results if results is not None else []
        self.done = done if done is not None else []


class EncodeFailed(GpupipeError, RuntimeError):
    """nvImageCodec could not encode an image (it returns ``None`` instead of raising)."""


class ConfigWarning(UserWarning):
    """A config value was accepted but changed: a cache byte budget below the floor was clamped up
    to it. The message names the file (or variable) and the key."""


class AllocatorTuningWarning(RuntimeWarning):
    """gpupipe's mmap-threshold tuning (:mod:`gpupipe.memory`) cannot work in this process: another
    ``malloc`` is interposed, the environment sets glibc's threshold, or the C library is not glibc.
    The message says which; evicted URIs may then stay resident, above the cache budget."""


class GpuFallbackWarning(RuntimeWarning):
    """A frame that should have run on the GPU was encoded on the CPU path instead."""


class GpuDeviceLostWarning(RuntimeWarning):
    """The GPU hit a sticky CUDA error; the rest of the process encodes on the CPU path."""


class FfmpegUnavailable(GpupipeError, RuntimeError):
    """No ffmpeg binary was found (neither imageio-ffmpeg's nor one on ``PATH``)."""


class FfmpegFailed(GpupipeError, RuntimeError):
    """ffmpeg ran but did not produce the expected frames; the message holds its stderr."""


class ExtractError(GpupipeError):
    """:func:`gpupipe.extract.extract_clip` could not write a clip's frames: a bad request (its
    pattern, sizes or times), an output folder that exists (or, for a non-atomic extraction, does
    not), a clip that cannot be read or decoded, or a file that cannot be written. ``clip`` names the
    clip and ``reason`` says why; nothing of the clip's contents is quoted."""

    def __init__(self, clip: str, reason: str):
        self.clip = clip
        self.reason = reason
        super().__init__(f"{clip}: {reason}")

    def __reduce__(self) -> tuple[type[ExtractError], tuple[str, str]]:
        return (type(self), (self.clip, self.reason))


class NothingToExtract(ExtractError):
    """The request selects no frame (it starts at or past the clip's end, or its duration ends
    before its first output slot). FFmpeg writes no file and exits 0 for such a command."""
