"""`gen s6-overlay add-version`: a release's .sha256 files, from a directory or a loopback mirror."""

from __future__ import annotations

import functools
import json
import subprocess
import sys
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from generator.errors import GenError
from generator.rebuild.release_sums import fetch_sha256_files

NOARCH_SUM, X86_SUM, ARM_SUM = "1" * 64, "2" * 64, "3" * 64


def release_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "v3.9.0.1"
    directory.mkdir()
    for name, digest in (
        ("s6-overlay-noarch.tar.xz", NOARCH_SUM),
        ("s6-overlay-x86_64.tar.xz", X86_SUM),
        ("s6-overlay-aarch64.tar.xz", ARM_SUM),
    ):
        (directory / f"{name}.sha256").write_text(f"{digest}  {name}\n")
    return directory


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


def test_reads_what_the_release_publishes_from_a_loopback_mirror(tmp_path):
    directory = release_dir(tmp_path)
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(directory)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        found = fetch_sha256_files("3.9.0.1", f"http://127.0.0.1:{server.server_address[1]}")
    finally:
        server.shutdown()
        server.server_close()
    assert set(found) == {"s6-overlay-noarch.tar.xz", "s6-overlay-x86_64.tar.xz", "s6-overlay-aarch64.tar.xz"}


def test_missing_noarch_is_an_error(tmp_path):
    directory = release_dir(tmp_path)
    (directory / "s6-overlay-noarch.tar.xz.sha256").unlink()
    with pytest.raises(GenError, match="no s6-overlay-noarch.tar.xz.sha256"):
        fetch_sha256_files("3.9.0.1", str(directory))


def test_add_version_command_updates_a_table_and_refuses_changed_sums(tmp_path):
    directory = release_dir(tmp_path)
    table = tmp_path / "table.json"
    table.write_text("{}\n")
    before = table.stat().st_ino
    run = [
        sys.executable,
        "-m",
        "generator",
        "s6-overlay",
        "add-version",
        "3.9.0.1",
        "--sums-from",
        str(directory),
        "--table",
        str(table),
    ]
    got = subprocess.run(run, capture_output=True, text=True, timeout=60)
    assert got.returncode == 0, got.stderr
    assert table.stat().st_ino != before  # replaced in one rename: a reader never sees half a table
    assert json.loads(table.read_text()) == {
        "3.9.0.1": {
            "s6-overlay-aarch64.tar.xz": ARM_SUM,
            "s6-overlay-noarch.tar.xz": NOARCH_SUM,
            "s6-overlay-x86_64.tar.xz": X86_SUM,
        }
    }
    (directory / "s6-overlay-x86_64.tar.xz.sha256").write_text(f"{'4' * 64}  s6-overlay-x86_64.tar.xz\n")
    again = subprocess.run(run, capture_output=True, text=True, timeout=60)
    assert again.returncode == 1 and "never changes" in again.stderr


def test_add_version_records_the_release_in_the_project_and_specs_use_it(tmp_path):
    """The sums go into the project's s6-overlay-checksums.json, never into gen's installed
    package; a spec then names the version alone, and the build verifies those sums."""
    from generator.plan.init_layer import table_path

    shipped = table_path().read_bytes()
    directory = release_dir(tmp_path)
    project = tmp_path / "project"
    (project / "specs").mkdir(parents=True)
    (project / "specs" / "o.yaml").write_text(
        'name: o\ntags: ["1"]\nbase: {distro: debian, release: bookworm, bootstrap: {variant: minbase}}\n'
        'init: {kind: s6-overlay, version: 3.9.0.1}\ncmd: ["true"]\n'
    )
    gen = [sys.executable, "-m", "generator"]
    refused = subprocess.run([*gen, "render", "-C", str(project)], capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and "gen s6-overlay add-version 3.9.0.1" in refused.stderr
    added = subprocess.run(
        [*gen, "s6-overlay", "add-version", "3.9.0.1", "--sums-from", str(directory), "-C", str(project)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert added.returncode == 0, added.stderr
    assert "3.9.0.1" in json.loads((project / "s6-overlay-checksums.json").read_text())
    assert table_path().read_bytes() == shipped
    rendered = subprocess.run([*gen, "render", "-C", str(project)], capture_output=True, text=True, timeout=60)
    assert rendered.returncode == 0, rendered.stderr
    assert f"{X86_SUM}  s6-overlay-x86_64.tar.xz" in (project / "output" / "o" / "Dockerfile").read_text()


def test_a_broken_project_table_is_one_clear_error(tmp_path):
    project = tmp_path / "project"
    (project / "specs").mkdir(parents=True)
    (project / "specs" / "o.yaml").write_text(
        'name: o\ntags: ["1"]\nbase: {distro: debian, release: bookworm, bootstrap: {variant: minbase}}\n'
    )
    (project / "s6-overlay-checksums.json").write_text('{"3.1.6.2": {"s6-overlay-noarch.tar.xz": "nope"}}')
    got = subprocess.run(
        [sys.executable, "-m", "generator", "render", "-C", str(project)], capture_output=True, text=True, timeout=60
    )
    assert got.returncode == 2 and "Traceback" not in got.stderr
    assert "s6-overlay-checksums.json" in got.stderr and "add-version" in got.stderr


@pytest.mark.parametrize("text", ["{", '{"3.9.0.1": []}', '["not", "a", "table"]'])
def test_add_version_into_a_damaged_table_is_one_line_and_leaves_it(tmp_path, text):
    directory = release_dir(tmp_path)
    table = tmp_path / "table.json"
    table.write_text(text)
    got = subprocess.run(
        [sys.executable, "-m", "generator", "s6-overlay", "add-version", "3.9.0.1"]
        + ["--sums-from", str(directory), "--table", str(table)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert got.returncode == 2 and "Traceback" not in got.stderr, got.stderr[-2000:]
    assert len(got.stderr.strip().splitlines()) == 1 and str(table) in got.stderr
    assert table.read_text() == text
