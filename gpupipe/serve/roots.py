"""Root confinement: which paths the frame service may read.

A request names a frame by ``src``: a path relative to a ``--root`` (tried against each root
in order) or an absolute path. It is served only when its real path, with every symlink
resolved, lies inside one of the roots' real paths: a symlink inside a root that points
outside is refused (403 whether or not its target exists, so that answers never tell what
exists outside the roots), and so is any ``src`` with a ``..`` component, whatever it would
resolve to. What the pipeline then opens is the resolved real path, not ``src``.

A file inside a root that is replaced by a symlink between this check and the read could still
be followed; only someone who can write inside a root can do that.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from ..errors import FrameNotFound
from .errors import BadParameter, PathRefused

__all__ = ["MAX_SRC_CHARS", "Roots"]

MAX_SRC_CHARS = 4096


class Roots:
    """The directories the service reads frames from.

    Raises ``ValueError`` naming the root when one is missing or not a directory.
    """

    def __init__(self, roots: Sequence[str | os.PathLike[str]]) -> None:
        if not roots:
            raise ValueError("at least one --root directory is needed")
        real: list[str] = []
        for r in roots:
            p = Path(r)
            if not p.is_dir():
                raise ValueError(f"--root {os.fspath(r)!r} is not a directory")
            rp = os.path.realpath(p)
            if rp not in real:
                real.append(rp)
        self.paths: tuple[str, ...] = tuple(real)

    def inside(self, real: str) -> bool:
        """Whether the resolved path ``real`` is one of the roots or lies below one."""
        return any(real == r or real.startswith(r.rstrip(os.sep) + os.sep) for r in self.paths)

    def resolve(self, src: str) -> str:
        """The real path of the frame ``src`` names, inside a root.

        Each root is tried in order; the first whose candidate resolves inside a root and exists
        wins. Raises :class:`~gpupipe.serve.errors.BadParameter` for an empty, over-long or
        NUL-holding ``src``; :class:`~gpupipe.serve.errors.PathRefused` for ``..``, or when no root
        holds it and a candidate resolves outside every root (through a symlink, whether or not
        anything exists at its target: the answer never tells what exists outside);
        :class:`~gpupipe.errors.FrameNotFound` when no root holds it.
        """
        if not isinstance(src, str) or not src:
            raise BadParameter("src is required: a frame path relative to a --root, or an absolute path inside one", src or None)
        if len(src) > MAX_SRC_CHARS:
            raise BadParameter(f"src is longer than {MAX_SRC_CHARS} characters", src[:200] + "...")
        if "\x00" in src:
            raise BadParameter("src contains a NUL character", src.replace("\x00", "\\x00"))
        parts = src.replace("\\", "/").split("/")
        if ".." in parts:
            raise PathRefused("src may not contain '..'", src)
        candidates = [src] if os.path.isabs(src) else [os.path.join(r, src) for r in self.paths]
        outside = False
        for cand in candidates:
            real = os.path.realpath(cand)
            if not self.inside(real):
                outside = True  # whether or not anything exists there: the answer must not tell
                continue
            if os.path.lexists(real):
                return real
        if outside:
            raise PathRefused("src resolves outside every --root", src)
        raise FrameNotFound(src, "no such file under any --root")
