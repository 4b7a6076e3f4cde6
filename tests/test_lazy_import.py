"""``import gpupipe`` is lazy (PEP 562), and the ffmpeg front's pass-through loads none of gpupipe's machinery.

The public names still import as before (``from gpupipe import FrameEncoder``, ``gpupipe.errors``);
the package module itself loads no submodule until a name is used. ``gpupipe-ffmpeg`` imports
only what parsing and ``exec`` need before it decides; the extraction machinery (numpy, PyAV,
Pillow, the cache...) is imported only for a recognised extraction. Checked in subprocesses, from
``sys.modules`` and ``-X importtime``'s list of what was imported (no timing is asserted).
"""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest

import gpupipe

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("numpy", "PIL", "av", "yaml", "aiohttp", "psutil", "cupy", "PyNvVideoCodec")
"""Third-party packages the pass-through must not import."""
FRONT_MODULES = {"gpupipe", "gpupipe.errors", "gpupipe.vocabulary", "gpupipe.env", "gpupipe.ffmpeg_front"}
"""All of gpupipe a pass-through may import."""
_IMPORTED = re.compile(r"^import time:\s*\d+\s*\|\s*\d+\s*\|\s*(\S+)\s*$")


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GPUPIPE_", "PYTHONPROFILEIMPORTTIME"))}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    env["FAKE_FFMPEG_RECORD"] = str(tmp_path / "record.jsonl")
    env.update(extra)
    return env


def _heavy(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if m.split(".")[0] in HEAVY)


def test_import_gpupipe_loads_no_submodule(tmp_path):
    code = "import json, sys, gpupipe; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], env=_env(tmp_path), cwd=tmp_path, check=True, capture_output=True, text=True, timeout=60
    )
    modules = set(json.loads(out.stdout))
    assert sorted(m for m in modules if m.startswith("gpupipe")) == ["gpupipe"]
    assert _heavy(modules) == []


def test_public_names_resolve_to_their_modules_and_are_listed():
    from gpupipe.cache import FrameCache
    from gpupipe.encoder import FrameEncoder
    from gpupipe.pipeline import open_pipeline

    assert gpupipe.FrameEncoder is FrameEncoder
    assert gpupipe.FrameCache is FrameCache
    assert gpupipe.open_pipeline is open_pipeline
    assert gpupipe.errors is sys.modules["gpupipe.errors"]
    for name in gpupipe.__all__:
        assert getattr(gpupipe, name) is not None, name
    assert set(gpupipe.__all__) <= set(dir(gpupipe))
    namespace: dict[str, object] = {}
    exec("from gpupipe import *", namespace)  # the star import follows __all__
    assert set(gpupipe.__all__) <= set(namespace)


def test_an_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'NoSuchThing'"):
        _ = gpupipe.NoSuchThing  # type: ignore[attr-defined]
    with pytest.raises(ImportError):
        exec("from gpupipe import NoSuchThing")


@pytest.fixture
def fake_ffmpeg(tmp_path) -> Path:
    """``bin/ffmpeg``: tests/fake_ffmpeg.py run by this Python (it fails as ffmpeg fails)."""
    path = tmp_path / "bin" / "ffmpeg"
    path.parent.mkdir()
    path.write_text(f"#!{sys.executable}\n" + (ROOT / "tests" / "fake_ffmpeg.py").read_text())
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def _front_imports(tmp_path: Path, fake: Path, argv: list[str]) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    """Run the front on ``argv`` with ``-X importtime``; its result and the modules it imported before it exec'd."""
    r = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "gpupipe.ffmpeg_front", *argv],
        env=_env(tmp_path, GPUPIPE_REAL_FFMPEG=str(fake)),
        cwd=tmp_path,
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    modules = {m[1] for line in r.stderr.splitlines() if (m := _IMPORTED.match(line))}
    assert "gpupipe.errors" in modules, r.stderr[-2000:]  # the listing was read
    return r, modules


@pytest.mark.parametrize(
    "argv",
    [["-version"], ["-hide_banner", "-filters"], ["-i", "nope.mp4", "-c:v", "libx264", "-y", "out.mp4"]],
    ids=["version", "filters", "encode"],
)
def test_a_pass_through_imports_nothing_heavy(tmp_path, fake_ffmpeg, argv):
    r, modules = _front_imports(tmp_path, fake_ffmpeg, argv)
    assert [json.loads(line)["argv"] for line in (tmp_path / "record.jsonl").read_text().splitlines()] == [argv]
    if argv == ["-version"]:
        assert r.returncode == 0 and r.stdout.startswith("ffmpeg version")
    assert {m for m in modules if m.startswith("gpupipe")} <= FRONT_MODULES
    assert _heavy(modules) == []


def test_a_recognised_extraction_imports_the_machinery(tmp_path, fake_ffmpeg):
    """The control for the test above: the same listing shows the extraction's imports when the front runs one
    (here it fails on a missing clip and hands the command to the fake ffmpeg, which fails as ffmpeg does)."""
    vf = (
        r"settb=intb/2,setpts=PTS-lte(TB\,0.001),fps=30:start_time=0:round=up,"
        "setparams=color_primaries=bt709:color_trc=iec61966-2-1"
    )
    argv = ["-noaccurate_seek", "-ss", "0", "-i", "missing.mp4", "-t", "1", "-vf", vf, "-y", "out/frame_%05d.png"]
    r, modules = _front_imports(tmp_path, fake_ffmpeg, argv)
    assert r.returncode == 254
    assert "gpupipe.extract" in modules
    assert _heavy(modules) != []
