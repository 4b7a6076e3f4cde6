"""Every ```python block of README.md runs, as is, in a fresh folder: the README cannot drift from the API."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BLOCKS = re.findall(r"^```python\n(.*?)^```", (ROOT / "README.md").read_text(encoding="utf-8"), re.S | re.M)


def test_readme_has_python_snippets():
    assert len(BLOCKS) >= 3


@pytest.mark.parametrize("code", BLOCKS, ids=[f"block{i + 1}" for i in range(len(BLOCKS))])
def test_readme_snippet_runs(code, tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, f"README snippet failed:\n{code}\n--- stderr ---\n{r.stderr[-3000:]}"
    assert "Traceback" not in r.stderr
    assert all(len(line) < 2000 for line in r.stdout.splitlines()), "a snippet printed a URI-sized line"


README = (ROOT / "README.md").read_text(encoding="utf-8")


def _bash_lines(text: str) -> list[str]:
    return [line for block in re.findall(r"^```bash\n(.*?)^```", text, re.S | re.M) for line in block.splitlines()]


def test_quick_start_tests_without_the_gpu_wheels_and_says_how_long():
    """Two commands: the demo, and a test command a CPU-only user can run without the ~1.5 GB GPU
    stack, with the time it takes stated beside it."""
    quick = README[README.index("## Quick start") : README.index("## Using it")]
    lines = _bash_lines(quick)
    assert len(lines) == 2 and "gpupipe demo" in lines[0]
    test_cmd = lines[1]
    extras = re.search(r"-e '\.\[([a-z,]+)\]'", test_cmd)
    assert "pytest" in test_cmd and extras and extras.group(1).split(",") == ["test"], test_cmd
    prose = quick.split("```")[2]  # between the demo's block and the test command's
    assert re.search(r"\d+ (s|seconds|minutes?)\b", prose) and "GPU" in prose, prose


def test_ci_runs_every_readme_test_command_verbatim():
    """CI stays as complete as it was: it runs the quick start's command and the one with the gpu extra."""
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    commands = [line for line in _bash_lines(README) if "pytest" in line]
    assert any("'.[gpu,test]'" in c for c in commands) and any("'.[test]'" in c for c in commands)
    for c in commands:
        assert c in ci, f"CI does not run the README's command: {c}"
