"""The gpupipe CLI, run as a user would: through a subprocess."""

from __future__ import annotations

import base64
import json
import subprocess
import sys

import pytest


def run(*args: str, env=None, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gpupipe", *args], capture_output=True, text=True, timeout=timeout, env=env)


def test_encode_writes_json_lines(frame_files, tmp_path):
    p, j = frame_files
    out = tmp_path / "out.jsonl"
    r = run("encode", str(p), str(j), "--backend", "cpu", "--out", str(out))
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r_["source"] for r_ in rows] == [str(p), str(j)]
    assert rows[0]["mime"] == "image/png" and rows[1]["mime"] == "image/jpeg"
    assert base64.b64decode(rows[0]["uri"].split(",", 1)[1]) == p.read_bytes()
    assert rows[0]["bytes"] == len(rows[0]["uri"])
    assert "frames" in r.stderr and "hit ratio" in r.stderr


def test_encode_resize_to_stdout(frame_files):
    p, _ = frame_files
    r = run("encode", str(p), "--size", "160x90", "--quality", "70", "--backend", "cpu")
    assert r.returncode == 0, r.stderr
    row = json.loads(r.stdout.strip())
    assert row["mime"] == "image/jpeg"


def test_encode_failures_exit_1_and_name_frames(frame_files, tmp_path):
    p, _ = frame_files
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 10)
    r = run("encode", str(p), str(bad), str(tmp_path / "missing.jpg"), "--backend", "cpu")
    assert r.returncode == 1
    assert len(r.stdout.strip().splitlines()) == 1
    assert "bad.png" in r.stderr and "missing.jpg" in r.stderr and "no such file" in r.stderr


def test_encode_bad_config_exits_2(frame_files, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("defaults: {cache: {max_bytes: lots}}\n")
    r = run("encode", str(frame_files[0]), "--config", str(cfg))
    assert r.returncode == 2 and "defaults.cache.max_bytes" in r.stderr


def test_info_json():
    r = run("info", "--json")
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["backends"]["cpu"]["usable"] is True
    assert "reason" in rep["backends"]["gpu"] and rep["selected_backend"]["backend"] in ("cpu", "gpu")
    assert rep["config"]["cache"]["max_entries"] == 256
    assert "Pillow" in rep["versions"]["pillow"]


def test_info_table():
    r = run("info")
    assert r.returncode == 0, r.stderr
    assert "backends" in r.stdout and "resolved config" in r.stdout


@pytest.mark.slow
def test_demo_runs(tmp_path):
    r = run("demo", "--frames", "2", "--requests", "6", "--samples-dir", str(tmp_path), "--backend", "cpu")
    assert r.returncode == 0, r.stderr
    assert "render playback" in r.stdout and "hit ratio" in r.stdout and "4k png" in r.stdout
