"""Every bundled Dockerfile passes hadolint and every generated shell script passes shellcheck.

Rules ignored in the templates carry their reason beside the ignore comment."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from generator.builder.host import find_tool

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILES = sorted((ROOT / "output").glob("*/Dockerfile"))


def _tool(name: str) -> str:
    path = find_tool(name)
    if path is None:
        pytest.fail(f"{name} is not installed: ./tests/run installs it (pip install -e '.[test]')")
    return path


def test_there_are_rendered_dockerfiles():
    assert len(DOCKERFILES) >= 3


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_hadolint_clean(dockerfile):
    result = subprocess.run(
        [_tool("hadolint"), "--no-color", str(dockerfile)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _shell_scripts() -> list[Path]:
    """Scripts in the rendered output, and the init templates no bundled image renders (s6-overlay's)."""
    scripts = []
    places = [ROOT / "output", ROOT / "templates" / "init" / "s6-overlay", ROOT / "templates" / "init" / "s6-rc"]
    for path in sorted(p for place in places for p in place.rglob("*")):
        if path.is_file() and not path.is_symlink():
            head = path.read_bytes()[:64]
            if head.startswith(b"#!") and (b"/sh" in head.split(b"\n")[0] or b"bash" in head.split(b"\n")[0]):
                scripts.append(path)
    return scripts


def test_there_are_generated_scripts():
    assert _shell_scripts(), "the init layer's scripts should be in output/"


@pytest.mark.parametrize("script", _shell_scripts(), ids=lambda p: str(p.relative_to(ROOT)))
def test_shellcheck_clean(script):
    result = subprocess.run(
        [_tool("shellcheck"), "--severity=style", str(script)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


# trivy findings accepted in rendered Dockerfiles, each with its reason. Nothing else may appear.
ACCEPTED_TRIVY = {
    # HEALTHCHECK comes from the spec's `healthcheck`; base images have no service to probe.
    "DS-0026": lambda dockerfile: "HEALTHCHECK" not in dockerfile.read_text(),
}


def _trivy_findings(directory: Path, cache: Path) -> list[tuple[str, str, str]]:
    import json

    result = subprocess.run(
        [
            _tool("trivy"),
            "config",
            "--skip-check-update",
            "--quiet",
            "--format",
            "json",
            "--cache-dir",
            str(cache),
            str(directory),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    return [
        (m["ID"], m["Severity"], m["Title"])
        for r in json.loads(result.stdout).get("Results", [])
        for m in r.get("Misconfigurations") or []
        if m["Status"] == "FAIL"
    ]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_trivy_config_has_only_accepted_findings(dockerfile, tmp_path):
    findings = _trivy_findings(dockerfile.parent, tmp_path)
    unexpected = [f for f in findings if f[0] not in ACCEPTED_TRIVY or not ACCEPTED_TRIVY[f[0]](dockerfile)]
    assert not unexpected, unexpected


def test_trivy_sees_a_root_image(tmp_path):
    """The scan above is live: the same Dockerfile without its non-root USER is a HIGH finding."""
    source = (ROOT / "output" / "debian-s6" / "Dockerfile").read_text()
    assert "\nUSER 65532\n" in source
    (tmp_path / "scan").mkdir()
    (tmp_path / "scan" / "Dockerfile").write_text(source.replace("\nUSER 65532\n", "\n"))
    assert ("DS-0002", "HIGH") in {f[:2] for f in _trivy_findings(tmp_path / "scan", tmp_path / "cache")}


@pytest.mark.parametrize("check", [["check"], ["format", "--check"]])
def test_ruff_passes_with_the_projects_config(check):
    """pyproject's [tool.ruff]: `ruff check` and `ruff format --check` over the code, tests and bench."""
    result = subprocess.run(
        [_tool("ruff"), *check, "generator", "tests", "bench"], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]


def test_mypy_passes_with_the_projects_config(tmp_path):
    """pyproject's [tool.mypy] over generator/ (a cache of the test's own: always a full check)."""
    result = subprocess.run(
        [_tool("mypy"), "--cache-dir", str(tmp_path / "cache")], capture_output=True, text=True, timeout=600, cwd=ROOT
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
