"""Errors of the frame service's HTTP layer, each with the status it is answered with.

Frame errors from the library (:mod:`gpupipe.errors`) keep their own types; :func:`status_of`
maps them to statuses. Every error reaches the client as a JSON body
``{"error": message, "type": name, "src": the frame's path or null}``, never a stack trace.
Statuses that are worth asking again (503: the queue or byte budget was full, or
:class:`~gpupipe.errors.FrameChanged`, a frame file changed while it was read) come with
``Retry-After`` (:func:`retry_after_of`).

A video's frame or time past the clip's end (:class:`~gpupipe.errors.FrameOutOfRange`) is 404,
not 416: 416 answers a ``Range`` header, which these requests never send, and HTTP clients and
caches read it that way; 404 is what a renderer's client already handles as "no such frame"
(the Python client raises ``FrameOutOfRange``), and the message names the clip's frame count
or duration, so the caller can tell how far the clip goes.
"""

from __future__ import annotations

from ..errors import BudgetTimeout, FrameChanged, FrameDecodeError, FrameError, FrameNotFound, FrameOutOfRange, FrameTooLarge

__all__ = [
    "BadParameter",
    "PathRefused",
    "QueueFull",
    "RequestError",
    "RequestTimeout",
    "ScheduleNotFound",
    "ServiceStopping",
    "TooManySchedules",
    "retry_after_of",
    "status_of",
]


class RequestError(Exception):
    """A request the service answers with ``status`` and a JSON error naming ``src`` (when there is one)."""

    status = 400
    retry_after: int | None = None

    def __init__(self, message: str, src: str | None = None):
        self.message = message
        self.src = src
        super().__init__(message)


class BadParameter(RequestError):
    """A missing, malformed or out-of-range query parameter or body field (400)."""

    status = 400


class PathRefused(RequestError):
    """``src`` lies outside every ``--root`` once symlinks are resolved, or contains ``..`` (403)."""

    status = 403


class ScheduleNotFound(RequestError):
    """No open schedule has this id (404)."""

    status = 404


class TooManySchedules(RequestError):
    """The service holds as many open schedules as it allows; close one first (429)."""

    status = 429


class QueueFull(RequestError):
    """``serve.max_queue`` requests already wait for a batch (503, with ``Retry-After``)."""

    status = 503

    def __init__(self, message: str, src: str | None = None, retry_after: int = 1):
        super().__init__(message, src)
        self.retry_after = retry_after


class ServiceStopping(RequestError):
    """The service is stopping (SIGTERM): it opens no more schedules (503, with ``Retry-After``)."""

    status = 503
    retry_after = 1


class RequestTimeout(RequestError):
    """The request had no answer within ``serve.request_timeout`` seconds (504)."""

    status = 504


def status_of(err: BaseException) -> int:
    """The HTTP status for ``err``: a :class:`RequestError`'s own, 404/422/413 for frame errors,
    404 for :class:`~gpupipe.errors.FrameOutOfRange` too (a video's frame or time past the clip's
    end: its message names the frame count or duration), 503 for :class:`~gpupipe.errors.BudgetTimeout` (the byte budget stayed full) and
    :class:`~gpupipe.errors.FrameChanged` (the file changed while read: asking again may
    succeed), 500 otherwise."""
    if isinstance(err, RequestError):
        return err.status
    if isinstance(err, (FrameNotFound, FrameOutOfRange)):
        return 404
    if isinstance(err, FrameTooLarge):
        return 413
    if isinstance(err, (BudgetTimeout, FrameChanged)):
        return 503
    if isinstance(err, (FrameDecodeError, FrameError)):
        return 422
    return 500


def retry_after_of(err: BaseException) -> int:
    """The ``Retry-After`` seconds of a 503 answer for ``err``: a :class:`RequestError`'s own, else 1."""
    if isinstance(err, RequestError) and err.retry_after is not None:
        return err.retry_after
    return 1
