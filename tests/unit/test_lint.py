"""Every bundled Dockerfile passes hadolint and every generated shell script passes shellcheck.

Rules ignored in the templates carry their reason beside the ignore comment."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILES = sorted((ROOT / "output").glob("*/Dockerfile"))


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: ./tests/run installs it (pip install -e '.[test]')")
    return path


def test_there_are_rendered_dockerfiles():
    assert len(DOCKERFILES) >= 3


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_hadolint_clean(dockerfile):
    result = subprocess.run([_tool("hadolint"), "--no-color", str(dockerfile)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def _shell_scripts() -> list[Path]:
    scripts = []
    for path in sorted((ROOT / "output").rglob("*")):
        if path.is_file() and not path.is_symlink():
            head = path.read_bytes()[:64]
            if head.startswith(b"#!") and (b"/sh" in head.split(b"\n")[0] or b"bash" in head.split(b"\n")[0]):
                scripts.append(path)
    return scripts


def test_there_are_generated_scripts():
    assert _shell_scripts(), "the init layer's scripts should be in output/"


@pytest.mark.parametrize("script", _shell_scripts(), ids=lambda p: str(p.relative_to(ROOT / "output")))
def test_shellcheck_clean(script):
    result = subprocess.run([_tool("shellcheck"), "--severity=style", str(script)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
